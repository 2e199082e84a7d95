//! The README's settings table and `--help` name the same flags, with the same environment
//! variables.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

const SORI: &str = env!("CARGO_BIN_EXE_sori");

/// The commands whose settings the table lists.
const COMMANDS: [&str; 3] = ["serve", "media", "signal"];

/// Each flag `sori COMMAND --help` lists, with its environment variable when it has one.
fn help_flags(command: &str) -> BTreeMap<String, Option<String>> {
    let out = Command::new(SORI)
        .args([command, "--help"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{command} --help");
    let help = String::from_utf8(out.stdout).unwrap();
    let mut flags = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help.lines() {
        let trimmed = line.trim_start();
        let option = trimmed.strip_prefix("-h, ").unwrap_or(trimmed);
        if line.starts_with("  ") && option.starts_with("--") {
            let name = option.split([' ', '<']).next().unwrap().to_string();
            flags.insert(name.clone(), None);
            current = Some(name);
        } else if let (Some(name), Some(env)) = (&current, trimmed.strip_prefix("[env: ")) {
            let env = env.split('=').next().unwrap().to_string();
            flags.insert(name.clone(), Some(env));
        }
    }
    flags.remove("--help");
    flags
}

/// Each row of the README's settings table: the flags of its first cell, the text of its
/// environment cell.
fn table_rows() -> Vec<(Vec<String>, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let section = readme
        .split("\n### Settings\n")
        .nth(1)
        .expect("README has a Settings section");
    let section = section.split("\n#").next().unwrap();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|row| {
            let cells: Vec<&str> = row.split(" | ").collect();
            let flags = cells[0]
                .split('`')
                .filter_map(|code| code.split(' ').next())
                .filter(|word| word.starts_with("--"))
                .map(str::to_string)
                .collect();
            (flags, cells.get(1).unwrap_or(&"").to_string())
        })
        .collect()
}

#[test]
fn every_flag_of_help_is_in_the_readme_table_and_back() {
    let rows = table_rows();
    assert!(rows.len() > 30, "the table was found: {} rows", rows.len());
    let in_table: BTreeSet<String> = rows.iter().flat_map(|(f, _)| f.clone()).collect();
    let mut in_help = BTreeMap::new();
    for command in COMMANDS {
        for (flag, env) in help_flags(command) {
            assert!(
                in_table.contains(&flag),
                "`sori {command} --help` lists {flag}, the README's settings table does not"
            );
            in_help.insert(flag, env);
        }
    }
    for (flags, env_cell) in &rows {
        for flag in flags {
            let Some(env) = in_help.get(flag) else {
                panic!("the README's settings table lists {flag}, which no command has");
            };
            if let Some(env) = env {
                assert!(
                    env_cell.contains(&format!("`{env}`")),
                    "{flag} reads {env}; the table says {env_cell:?}"
                );
            }
        }
    }
}
