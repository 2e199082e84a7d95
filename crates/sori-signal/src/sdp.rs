//! What a participant may send, enforced in its SDP before the media server sees it: m-lines
//! of a kind it may not publish lose their sending direction (`sendrecv` → `recvonly`,
//! `sendonly` → `inactive`), so the media server's answer says so and forwards nothing on them
//! whatever the browser does. Sources are counted by kind, in the order the m-lines appear: a
//! camera or a screen share is one video track, a microphone or a screen share's audio one audio
//! track — which also caps the tracks one participant publishes.

use crate::auth::Sources;

/// An SDP with more m-lines than allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TooManyLines(pub usize);

/// `sdp` with the sending direction taken from m-lines beyond what `sources` allows, or an
/// error when it has more than `max_lines` m-lines. Every other line is kept byte for byte,
/// line endings included.
pub(crate) fn restrict(
    sdp: &str,
    sources: Sources,
    max_lines: usize,
) -> Result<String, TooManyLines> {
    let mut sections: Vec<Vec<&str>> = vec![Vec::new()];
    for line in sdp.split_inclusive('\n') {
        if line.starts_with("m=") {
            sections.push(Vec::new());
        }
        // The vector starts with one section and only grows.
        sections.last_mut().expect("one section").push(line);
    }
    let m_lines = sections.len() - 1;
    if m_lines > max_lines {
        return Err(TooManyLines(m_lines));
    }
    let mut audio_left = usize::from(sources.microphone) + usize::from(sources.screen_share_audio);
    let mut video_left = usize::from(sources.camera) + usize::from(sources.screen_share);
    let mut out = String::with_capacity(sdp.len() + 16);
    for (i, section) in sections.iter().enumerate() {
        let media = (i > 0).then(|| section[0]);
        let left = match media {
            Some(m) if m.starts_with("m=audio ") => Some(&mut audio_left),
            Some(m) if m.starts_with("m=video ") => Some(&mut video_left),
            _ => None,
        };
        let Some(left) = left else {
            section.iter().for_each(|l| out.push_str(l));
            continue;
        };
        // A port of 0 is a rejected m-line: it sends nothing.
        let rejected = media.is_some_and(|m| m.split(' ').nth(1) == Some("0"));
        let direction = section.iter().position(|l| is_direction(l));
        let sends = !rejected
            && direction.is_none_or(|d| matches!(trimmed(section[d]), "a=sendrecv" | "a=sendonly"));
        if !sends || *left > 0 {
            if sends {
                *left -= 1;
            }
            section.iter().for_each(|l| out.push_str(l));
            continue;
        }
        let eol = line_ending(section[0]);
        match direction {
            Some(d) => {
                for (j, l) in section.iter().enumerate() {
                    if j == d {
                        let replaced = match trimmed(l) {
                            "a=sendrecv" => "a=recvonly",
                            _ => "a=inactive",
                        };
                        out.push_str(replaced);
                        out.push_str(line_ending(l));
                    } else {
                        out.push_str(l);
                    }
                }
            }
            None => {
                // No direction attribute means sendrecv.
                section.iter().for_each(|l| out.push_str(l));
                if !out.ends_with('\n') {
                    out.push_str(eol);
                }
                out.push_str("a=recvonly");
                out.push_str(eol);
            }
        }
    }
    Ok(out)
}

fn trimmed(line: &str) -> &str {
    line.trim_end_matches(['\r', '\n'])
}

fn is_direction(line: &str) -> bool {
    matches!(
        trimmed(line),
        "a=sendrecv" | "a=sendonly" | "a=recvonly" | "a=inactive"
    )
}

fn line_ending(line: &str) -> &'static str {
    if line.ends_with("\r\n") {
        "\r\n"
    } else {
        "\n"
    }
}

/// The directions of the audio and video m-lines of `sdp`, in order (for tests).
#[cfg(test)]
fn directions(sdp: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in sdp.lines() {
        if let Some(rest) = line.strip_prefix("m=") {
            out.push((
                rest.split(' ').next().unwrap().to_string(),
                "sendrecv".into(),
            ));
        } else if is_direction(line) {
            if let Some(last) = out.last_mut() {
                last.1 = line[2..].to_string();
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0 1 2\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:1\r\na=sendrecv\r\na=rtpmap:96 VP8/90000\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\na=sendonly\r\na=rtpmap:96 VP8/90000\r\n";

    fn dirs(sdp: &str) -> Vec<(&'static str, &'static str)> {
        directions(sdp)
            .into_iter()
            .map(|(k, d)| {
                (
                    if k == "audio" { "audio" } else { "video" },
                    match d.as_str() {
                        "sendrecv" => "sendrecv",
                        "sendonly" => "sendonly",
                        "recvonly" => "recvonly",
                        _ => "inactive",
                    },
                )
            })
            .collect()
    }

    #[test]
    fn everything_allowed_changes_nothing() {
        assert_eq!(restrict(OFFER, Sources::ALL, 16).unwrap(), OFFER);
    }

    #[test]
    fn nothing_allowed_sends_nothing() {
        let out = restrict(OFFER, Sources::NONE, 16).unwrap();
        assert_eq!(
            dirs(&out),
            [
                ("audio", "inactive"),
                ("video", "recvonly"),
                ("video", "inactive")
            ]
        );
        // Only the direction words changed, and they have the same length.
        assert_eq!(out.len(), OFFER.len());
    }

    #[test]
    fn sources_are_counted_by_kind_in_order() {
        let camera_only = Sources {
            camera: true,
            ..Sources::NONE
        };
        let out = restrict(OFFER, camera_only, 16).unwrap();
        assert_eq!(
            dirs(&out),
            [
                ("audio", "inactive"),
                ("video", "sendrecv"),
                ("video", "inactive")
            ]
        );
    }

    #[test]
    fn a_missing_direction_is_sendrecv() {
        let sdp = "v=0\nm=audio 9 RTP/AVP 0\na=mid:0\n";
        let out = restrict(sdp, Sources::NONE, 16).unwrap();
        assert_eq!(out, "v=0\nm=audio 9 RTP/AVP 0\na=mid:0\na=recvonly\n");
        // A rejected m-line (port 0) sends nothing and is left alone.
        let sdp = "v=0\nm=video 0 RTP/AVP 96\n";
        assert_eq!(restrict(sdp, Sources::NONE, 16).unwrap(), sdp);
    }

    #[test]
    fn too_many_lines_are_refused() {
        assert_eq!(restrict(OFFER, Sources::ALL, 2), Err(TooManyLines(3)));
    }

    /// The m-lines of `kind` in `sdp` that still send: port not 0, and a first direction line
    /// of sendrecv or sendonly, or none at all.
    fn sending(sdp: &str, kind: &str) -> usize {
        // The current section, if of `kind`: rejected or not, and its first direction line.
        let mut section: Option<(bool, Option<&str>)> = None;
        let sends = |s: Option<(bool, Option<&str>)>| {
            s.is_some_and(|(rejected, dir)| {
                !rejected && matches!(dir, None | Some("a=sendrecv" | "a=sendonly"))
            })
        };
        let mut n = 0;
        for line in sdp.split_inclusive('\n') {
            if let Some(m) = line.strip_prefix("m=") {
                n += usize::from(sends(section));
                section = m
                    .starts_with(&format!("{kind} "))
                    .then(|| (m.split(' ').nth(1) == Some("0"), None));
            } else if is_direction(line) {
                if let Some((_, dir @ None)) = &mut section {
                    *dir = Some(trimmed(line));
                }
            }
        }
        n + usize::from(sends(section))
    }

    fn sources() -> impl Strategy<Value = Sources> {
        any::<[bool; 4]>().prop_map(|[camera, microphone, screen_share, screen_share_audio]| {
            Sources {
                camera,
                microphone,
                screen_share,
                screen_share_audio,
            }
        })
    }

    /// SDP-like text: lines that matter to the scan, and noise, with mixed line endings.
    fn sdp_text() -> impl Strategy<Value = String> {
        let line = prop_oneof![
            Just("m=audio 9 UDP/TLS/RTP/SAVPF 111".to_string()),
            Just("m=video 9 UDP/TLS/RTP/SAVPF 96".to_string()),
            Just("m=video 0 UDP/TLS/RTP/SAVPF 96".to_string()),
            Just("m=application 9 UDP/DTLS/SCTP webrtc-datachannel".to_string()),
            Just("a=sendrecv".to_string()),
            Just("a=sendonly".to_string()),
            Just("a=recvonly".to_string()),
            Just("a=inactive".to_string()),
            "[ -~]{0,24}",
            any::<String>(),
        ];
        let eol = prop_oneof![Just("\r\n"), Just("\n"), Just("\r"), Just("")];
        proptest::collection::vec((line, eol), 0..24)
            .prop_map(|ls| ls.into_iter().map(|(l, e)| l + e).collect())
    }

    fn allowed(s: Sources, kind: &str) -> usize {
        match kind {
            "audio" => usize::from(s.microphone) + usize::from(s.screen_share_audio),
            _ => usize::from(s.camera) + usize::from(s.screen_share),
        }
    }

    /// What every result of `restrict` satisfies, whatever its input.
    fn check(sdp: &str, s: Sources, max: usize) -> Result<(), TestCaseError> {
        let m_lines = sdp
            .split_inclusive('\n')
            .filter(|l| l.starts_with("m="))
            .count();
        match restrict(sdp, s, max) {
            Err(TooManyLines(n)) => prop_assert!(n == m_lines && n > max),
            Ok(out) => {
                prop_assert!(m_lines <= max);
                for kind in ["audio", "video"] {
                    prop_assert!(sending(&out, kind) <= allowed(s, kind), "{kind}: {out:?}");
                }
                // At most a direction line added per m-line, and nothing else grows.
                prop_assert!(out.len() <= sdp.len() + m_lines * "\r\na=recvonly\r\n".len());
                // An SDP that asks for no more than allowed passes byte for byte.
                if ["audio", "video"]
                    .iter()
                    .all(|k| sending(sdp, k) <= allowed(s, k))
                {
                    prop_assert_eq!(&out, sdp);
                }
            }
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(sori_testkit::prop::config(3000))]

        #[test]
        fn arbitrary_text_never_gains_a_sending_line(
            sdp in sdp_text(),
            s in sources(),
            max in 0usize..12,
        ) {
            check(&sdp, s, max)?;
        }

        #[test]
        fn mutated_offers_never_gain_a_sending_line(seed in any::<u64>(), s in sources()) {
            let mut rng = sori_testkit::Rng::new(seed);
            let mut sdp = OFFER.to_string();
            for _ in 0..1 + rng.below(3) {
                sdp = if rng.chance(0.5) {
                    sori_testkit::mutate::lines(&sdp, "\r\n", &mut rng)
                } else {
                    String::from_utf8_lossy(&sori_testkit::mutate::bytes(sdp.as_bytes(), &mut rng))
                        .into_owned()
                };
            }
            check(&sdp, s, 64)?;
        }
    }
}
