//! The recordings directory on disk: folder and file names, the listing's order, opening a file
//! without following symbolic links, and the directory's size.
//!
//! A recording's folder is `<room>-<UTC second>` (`standup-20261118T110640Z`), with `-2`, `-3`…
//! when that name is taken: it is made with `create_dir`, which fails on an existing folder, so
//! two recordings never share one. The listing orders folders by the time in their names, so a
//! page of it reads only that page's manifests, however many recordings there are.

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// Longest room or participant part of a name, in bytes: file names stay far below 255.
const NAME_PART: usize = 48;

/// `s` as part of a file name: ASCII letters, digits, `-` and `_` as they are, other ASCII as
/// `_`, and other characters as `_` and their code point in hex (`회의` → `_d68c_c758`), so that
/// names in any script stay recognisable and distinct.
pub(super) fn name_part(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let piece = if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c.to_string()
        } else if c.is_ascii() {
            "_".to_string()
        } else {
            format!("_{:x}", u32::from(c))
        };
        if out.len() + piece.len() > NAME_PART {
            break;
        }
        out.push_str(&piece);
    }
    if out.is_empty() {
        "x".into()
    } else {
        out
    }
}

/// Whether `s` is a name this module could have made: one plain path component.
pub(super) fn plain(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

pub(super) fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Most folders one room may start in one second before giving up (a clock stuck in the past).
const SAME_SECOND: u32 = 1000;

/// Makes a new folder for a recording of `room` started at `started`; returns its name.
pub(super) fn create(dir: &Path, room: &str, started: SystemTime) -> io::Result<String> {
    std::fs::create_dir_all(dir)?;
    let base = format!("{}-{}", name_part(room), utc_stamp(started));
    for n in 1..=SAME_SECOND {
        let name = if n == 1 {
            base.clone()
        } else {
            format!("{base}-{n}")
        };
        match std::fs::create_dir(dir.join(&name)) {
            Ok(()) => return Ok(name),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AlreadyExists,
        format!("{base}: {SAME_SECOND} recordings in one second"),
    ))
}

/// Where a folder comes in the listing: by the UTC second in its name, then by the counter of
/// recordings started in that second, then by name. Names without a time sort first (oldest).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Order<'a> {
    stamp: &'a str,
    n: u32,
    name: &'a str,
}

fn is_stamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 16
        && b[8] == b'T'
        && b[15] == b'Z'
        && b[..8].iter().chain(&b[9..15]).all(u8::is_ascii_digit)
}

fn order(name: &str) -> Order<'_> {
    let mut parts = name.rsplit('-');
    let (last, before) = (parts.next().unwrap_or_default(), parts.next());
    let (stamp, n) = match (last.parse::<u32>(), before) {
        (Ok(n), Some(stamp)) if is_stamp(stamp) => (stamp, n),
        _ if is_stamp(last) => (last, 1),
        _ => ("", 0),
    };
    Order { stamp, n, name }
}

/// One page of the listing.
pub(super) struct Page {
    /// The manifests, newest first, each with `href`s.
    pub manifests: Vec<Value>,
    /// The last recording of a full page: the cursor of the next one.
    pub next: Option<String>,
}

/// Finished recordings (those with a manifest) older than `after`, newest first, at most
/// `limit`, whose room `visible` accepts. `room` (when the reader may see only one room) skips
/// other rooms' folders by name before their manifests are read. Reads the disk: call off the
/// runtime's threads.
pub(super) fn page(
    dir: &Path,
    after: Option<&str>,
    limit: usize,
    room: Option<&str>,
    visible: impl Fn(&str) -> bool,
) -> Page {
    let mut page = Page {
        manifests: Vec::new(),
        next: None,
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return page;
    };
    let prefix = room.map(|r| format!("{}-", name_part(r)));
    let names: Vec<String> = entries
        .flatten()
        // The entry's own type: a symbolic link to a folder is not a recording.
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| plain(n) && prefix.as_ref().is_none_or(|p| n.starts_with(p)))
        .collect();
    let after = after.map(order);
    let mut older: Vec<Order<'_>> = names
        .iter()
        .map(|n| order(n))
        .filter(|o| after.as_ref().is_none_or(|a| o < a))
        .collect();
    older.sort_unstable_by(|a, b| b.cmp(a));
    for (i, Order { name, .. }) in older.iter().enumerate() {
        if page.manifests.len() == limit {
            // `limit` is at least one, so a full page has a last name.
            page.next = Some(older[i - 1].name.to_string());
            break;
        }
        let Some(mut manifest) = read_manifest(dir, name) else {
            continue; // still running, or not a recording
        };
        if !manifest["room"].as_str().is_some_and(&visible) {
            continue;
        }
        if let Some(files) = manifest["files"].as_array_mut() {
            for f in files {
                let file = f["file"].as_str().unwrap_or_default().to_string();
                f["href"] = json!(format!("/recordings/{name}/{file}"));
            }
        }
        manifest["href"] = json!(format!("/recordings/{name}/manifest.json"));
        page.manifests.push(manifest);
    }
    page
}

/// The manifest of recording `name`, when it is finished.
pub(super) fn read_manifest(dir: &Path, name: &str) -> Option<Value> {
    let (file, _) = open(dir, name, "manifest.json").ok()?;
    serde_json::from_reader(io::BufReader::new(file)).ok()
}

/// Opens `recording/file` in `dir` and gives its length, when both are plain names of a real
/// folder and a regular file: a symbolic link, where either should be, is "not found". The file
/// opened is checked to be the one examined, so a link put in its place meanwhile is refused too.
pub(super) fn open(dir: &Path, recording: &str, file: &str) -> io::Result<(File, u64)> {
    let not_found = || io::Error::from(io::ErrorKind::NotFound);
    if !plain(recording) || !plain(file) {
        return Err(not_found());
    }
    let folder = dir.join(recording);
    if !std::fs::symlink_metadata(&folder)?.is_dir() {
        return Err(not_found());
    }
    let path = folder.join(file);
    let seen = std::fs::symlink_metadata(&path)?;
    if !seen.is_file() {
        return Err(not_found());
    }
    let f = File::open(&path)?;
    let opened = f.metadata()?;
    if (opened.dev(), opened.ino()) != (seen.dev(), seen.ino()) {
        return Err(not_found());
    }
    Ok((f, opened.len()))
}

/// Bytes in the recordings directory: its files and those of its folders (links not followed).
pub(super) fn usage(dir: &Path) -> u64 {
    let size = |path: &Path| -> u64 {
        let Ok(entries) = std::fs::read_dir(path) else {
            return 0;
        };
        entries
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    };
    let folders: u64 = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| size(&e.path()))
        .sum();
    folders + size(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn names_and_stamps() {
        assert_eq!(name_part("team standup/../x"), "team_standup____x");
        assert_eq!(name_part(""), "x");
        assert_eq!(name_part("회의"), "_d68c_c758");
        assert_eq!(name_part("회의 2"), "_d68c_c758_2");
        assert_eq!(
            name_part(&"회".repeat(64)).len(),
            45,
            "whole characters, at most 48"
        );
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(utc_stamp(t), "20261118T110640Z");
    }

    #[test]
    fn order_follows_the_time_in_the_name() {
        let names = [
            "zzz-20261118T110639Z",
            "a-20261118T110640Z",
            "b-20261118T110640Z",
            "a-20261118T110640Z-2",
            "a-20261118T110640Z-10",
            "a-1-20261118T110641Z",
        ];
        for w in names.windows(2) {
            assert!(order(w[0]) < order(w[1]), "{} before {}", w[0], w[1]);
        }
        assert!(order("notes") < order(names[0]), "no time: oldest");
    }

    fn temp(what: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("sori-folders-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn recordings_started_in_one_second_get_folders_of_their_own() {
        let dir = temp("create");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        let made: Vec<String> = ["회의", "대화", "회의", "회의", "a b", "a_b"]
            .iter()
            .map(|room| create(&dir, room, t).unwrap())
            .collect();
        assert_eq!(
            made,
            [
                "_d68c_c758-20261118T110640Z",
                "_b300_d654-20261118T110640Z",
                "_d68c_c758-20261118T110640Z-2",
                "_d68c_c758-20261118T110640Z-3",
                "a_b-20261118T110640Z",
                "a_b-20261118T110640Z-2",
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn opening_refuses_links_and_odd_names() {
        let dir = temp("open");
        std::fs::create_dir_all(dir.join("r-1")).unwrap();
        std::fs::write(dir.join("r-1/a.webm"), b"abc").unwrap();
        std::os::unix::fs::symlink(dir.join("r-1/a.webm"), dir.join("r-1/b.webm")).unwrap();
        std::os::unix::fs::symlink(dir.join("r-1"), dir.join("r-2")).unwrap();
        assert_eq!(open(&dir, "r-1", "a.webm").unwrap().1, 3);
        for (a, b) in [
            ("r-1", "b.webm"),
            ("r-2", "a.webm"),
            ("..", "x"),
            ("r-1", "../r-1/a.webm"),
            (".hidden", "x"),
            ("r-1/..", "a.webm"),
            ("r-1", ""),
        ] {
            let e = open(&dir, a, b).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::NotFound, "{a}/{b}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
