//! The `Range` header of a download (RFC 9110, section 14): browsers seek in a video by asking
//! for the bytes from where the viewer jumped to.

/// What to send of a file of `len` bytes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Ranged {
    /// The whole file (`200`): no `Range`, or one this server ignores, as RFC 9110 allows —
    /// several ranges, another unit, or one it cannot parse.
    Whole,
    /// Bytes `start..=end` (`206`).
    Part { start: u64, end: u64 },
    /// No byte of the file is in the range (`416`).
    Unsatisfiable,
}

/// Reads one `bytes=a-b`, `bytes=a-` or `bytes=-n` range.
pub(super) fn parse(header: Option<&str>, len: u64) -> Ranged {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ranged::Whole;
    };
    if spec.contains(',') {
        return Ranged::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Ranged::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (number(first), number(last)) {
        // The last n bytes.
        (None, Some(n)) if first.is_empty() => {
            if n == 0 || len == 0 {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part {
                    start: len.saturating_sub(n),
                    end: len - 1,
                }
            }
        }
        (Some(start), None) if last.is_empty() => from(start, u64::MAX, len),
        (Some(start), Some(end)) if start <= end => from(start, end, len),
        _ => Ranged::Whole,
    }
}

/// Bytes `start..=end`, the end cut to the file's.
fn from(start: u64, end: u64, len: u64) -> Ranged {
    if start >= len {
        Ranged::Unsatisfiable
    } else {
        Ranged::Part {
            start,
            end: end.min(len - 1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        let part = |start, end| Ranged::Part { start, end };
        for (header, expected) in [
            (None, Ranged::Whole),
            (Some("bytes=0-0"), part(0, 0)),
            (Some("bytes=10-19"), part(10, 19)),
            (Some(" bytes=10-19 "), part(10, 19)),
            (Some("bytes=90-"), part(90, 99)),
            (Some("bytes=90-1000"), part(90, 99)),
            (Some("bytes=-10"), part(90, 99)),
            (Some("bytes=-1000"), part(0, 99)),
            (Some("bytes=100-"), Ranged::Unsatisfiable),
            (Some("bytes=100-200"), Ranged::Unsatisfiable),
            (Some("bytes=-0"), Ranged::Unsatisfiable),
            (Some("bytes=0-1,4-5"), Ranged::Whole),
            (Some("bytes=5-2"), Ranged::Whole),
            (Some("bytes=+1-2"), Ranged::Whole),
            (Some("bytes=-"), Ranged::Whole),
            (Some("bytes=99999999999999999999-"), Ranged::Whole),
            (Some("items=0-1"), Ranged::Whole),
        ] {
            assert_eq!(parse(header, 100), expected, "{header:?}");
        }
        assert_eq!(parse(Some("bytes=0-"), 0), Ranged::Unsatisfiable);
        assert_eq!(parse(Some("bytes=-5"), 0), Ranged::Unsatisfiable);
        assert_eq!(parse(Some("bytes=0-5"), 0), Ranged::Unsatisfiable);
    }
}
