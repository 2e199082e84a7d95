//! Puts the git revision the binary is built from into `sori --version` (`unknown` outside a
//! git checkout, as in a source tarball).

use std::path::Path;
use std::process::Command;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    // A build without .git (a container build, a tarball) may name it in SORI_GIT_REVISION.
    println!("cargo:rerun-if-env-changed=SORI_GIT_REVISION");
    let given = std::env::var("SORI_GIT_REVISION")
        .ok()
        .filter(|r| !r.is_empty() && r != "unknown");
    let revision = given
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=SORI_GIT_REVISION={revision}");
    // Built again when HEAD moves: HEAD itself, the branch it names, and packed refs (only
    // files that exist: cargo runs the script every time for a missing one).
    if let Some(dir) = git(&["rev-parse", "--git-dir"]) {
        let dir = Path::new(&dir);
        let mut watched = vec![dir.join("HEAD"), dir.join("packed-refs")];
        if let Ok(head) = std::fs::read_to_string(dir.join("HEAD")) {
            if let Some(r) = head.trim().strip_prefix("ref: ") {
                watched.push(dir.join(r));
            }
        }
        for path in watched.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
