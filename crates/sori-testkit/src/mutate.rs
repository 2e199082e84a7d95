//! Manglings of a valid input: what a hostile or broken peer sends.

use crate::Rng;

/// One random byte-level mutation of `input`: flipped bytes, a cut, a duplicated or removed
/// span, or a splice of two places.
pub fn bytes(input: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut out = input.to_vec();
    if out.is_empty() {
        return vec![rng.next_u64() as u8];
    }
    match rng.below(5) {
        0 => {
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(out.len());
                out[at] = rng.next_u64() as u8;
            }
        }
        1 => out.truncate(rng.below(out.len())),
        2 => {
            let at = rng.below(out.len());
            let len = 1 + rng.below((out.len() - at).min(64));
            let span: Vec<u8> = out[at..at + len].to_vec();
            out.splice(at..at, span);
        }
        3 => {
            let at = rng.below(out.len());
            let len = 1 + rng.below((out.len() - at).min(64));
            out.drain(at..at + len);
        }
        _ => {
            let (a, b) = (rng.below(out.len()), rng.below(out.len()));
            let (a, b) = (a.min(b), a.max(b));
            let tail: Vec<u8> = out[b..].to_vec();
            out.truncate(a);
            out.extend(tail);
        }
    }
    out
}

/// A frame for a hostile-socket test: one of `seeds` (valid messages), mutated `mutations`
/// times — a byte flipped, a cut, a splice of another seed's tail, or JSON punctuation inserted.
pub fn json_frame(seeds: &[Vec<u8>], mutations: usize, rng: &mut Rng) -> Vec<u8> {
    let mut frame = seeds[rng.below(seeds.len())].clone();
    for _ in 0..mutations {
        match rng.below(4) {
            0 if !frame.is_empty() => {
                let i = rng.below(frame.len());
                frame[i] = rng.next_u64() as u8;
            }
            0 | 1 => frame.truncate(rng.below(frame.len() + 1)),
            2 => {
                let i = rng.below(frame.len() + 1);
                let other = &seeds[rng.below(seeds.len())];
                let j = rng.below(other.len());
                frame.splice(i..i, other[j..].iter().copied());
            }
            _ => {
                let i = rng.below(frame.len() + 1);
                frame.insert(i, b"{}[]\",:0\\"[rng.below(9)]);
            }
        }
    }
    frame
}

/// One random line-level mangling of a text whose lines end in `sep` (`"\r\n"` for SDP):
/// flipped bytes, a dropped, duplicated or swapped line, or a cut.
pub fn lines(text: &str, sep: &str, rng: &mut Rng) -> String {
    let mut lines: Vec<String> = text.split(sep).map(str::to_string).collect();
    match rng.below(5) {
        0 => {
            let mut b = text.as_bytes().to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(b.len());
                if let Some(x) = b.get_mut(at) {
                    *x = rng.next_u64() as u8;
                }
            }
            return String::from_utf8_lossy(&b).into_owned();
        }
        1 => {
            let at = rng.below(lines.len());
            lines.remove(at);
        }
        2 => {
            let at = rng.below(lines.len());
            let line = lines[at].clone();
            lines.insert(at, line);
        }
        3 => return text.chars().take(rng.below(text.len())).collect(),
        _ => {
            let (a, b) = (rng.below(lines.len()), rng.below(lines.len()));
            lines.swap(a, b);
        }
    }
    lines.join(sep)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manglings_change_the_input_and_never_panic() {
        let mut rng = Rng::new(42);
        let sdp = "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
        let mut changed = 0;
        for _ in 0..5000 {
            if bytes(sdp.as_bytes(), &mut rng) != sdp.as_bytes() {
                changed += 1;
            }
            let _ = lines(sdp, "\r\n", &mut rng);
            let _ = bytes(b"", &mut rng);
            let _ = lines("", "\r\n", &mut rng);
            let seeds = [b"{\"a\":1}".to_vec(), Vec::new()];
            assert!(json_frame(&seeds, 4, &mut rng).len() <= 4 * 7 + 7);
        }
        assert!(
            changed > 4000,
            "only {changed} of 5000 byte manglings changed the input"
        );
    }
}
