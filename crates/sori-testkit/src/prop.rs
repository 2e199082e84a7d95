//! Proptest settings: a bounded number of cases by default, more on request.

use proptest::test_runner::Config;

/// The environment variable that sets the number of cases of every property test (for a long
/// run: `SORI_PROPTEST_CASES=100000 cargo test -p sori-sfu stun`).
pub const CASES_VAR: &str = "SORI_PROPTEST_CASES";

/// A proptest configuration running `cases` cases, or as many as `SORI_PROPTEST_CASES` says.
/// Choose `cases` so the test takes well under 15 s in a debug build. Failures are not
/// persisted to files: a failing case is printed, and its minimal input belongs in a
/// regression test next to the property.
pub fn config(cases: u32) -> Config {
    let cases = std::env::var(CASES_VAR)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}
