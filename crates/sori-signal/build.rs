//! Embeds the web client: every file under `web/` becomes an entry of a static table
//! `(URL path, content type, bytes)`, so adding a file there needs no Rust change.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let web = manifest.join("../../web");
    println!("cargo:rerun-if-changed={}", web.display());
    let mut files = Vec::new();
    collect(&web, &web, &mut files);
    files.sort();
    let mut table = String::from("/// The web client's files: URL path, content type, bytes.\n");
    table += "pub(crate) static FILES: &[(&str, &str, &[u8])] = &[\n";
    for (path, file) in &files {
        let file = file.canonicalize().expect("a listed file exists");
        writeln!(
            table,
            "    ({path:?}, {:?}, include_bytes!({:?})),",
            content_type(&file),
            file.display().to_string()
        )
        .expect("writing to a String");
    }
    table += "];\n";
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("set by cargo"));
    std::fs::write(out.join("web_files.rs"), table).expect("OUT_DIR is writable");
}

/// Files under `dir` (hidden ones left out), with their URL paths relative to `root`.
fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("a readable directory entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or(".");
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).expect("under the web root");
            let url: Vec<&str> = rel
                .iter()
                .map(|c| c.to_str().expect("UTF-8 file names"))
                .collect();
            out.push((format!("/{}", url.join("/")), path));
        }
    }
}

fn content_type(file: &Path) -> &'static str {
    match file.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "json" => "application/json",
        "webmanifest" => "application/manifest+json",
        "txt" => "text/plain; charset=utf-8",
        "woff2" => "font/woff2",
        _ => "application/octet-stream",
    }
}
