//! The little SDP reading the core does itself, before str0m parses the whole offer: which
//! video codecs an offer can use, so a room can keep to one.

use crate::keyframe::VideoCodec;

/// What an offer says about video.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct VideoOffer {
    /// Whether the offer has at least one active video m-line.
    pub has_video: bool,
    /// Codecs offered on every active video m-line.
    pub codecs: Vec<VideoCodec>,
}

/// Reads the video m-lines of an SDP offer. Unknown codec names are ignored; a codec counts
/// only when every active video m-line offers it.
pub(crate) fn video_offer(sdp: &str) -> VideoOffer {
    let mut sections: Vec<Vec<VideoCodec>> = Vec::new();
    let mut in_video = false;
    for line in sdp.lines() {
        let line = line.trim_end();
        if let Some(m) = line.strip_prefix("m=") {
            let mut parts = m.split_ascii_whitespace();
            let kind = parts.next();
            let port = parts.next();
            in_video = kind == Some("video") && port != Some("0");
            if in_video {
                sections.push(Vec::new());
            }
        } else if in_video {
            if let Some(rest) = line.strip_prefix("a=rtpmap:") {
                let name = rest
                    .split_ascii_whitespace()
                    .nth(1)
                    .and_then(|enc| enc.split('/').next());
                if let Some(codec) = name.and_then(VideoCodec::from_name) {
                    // Pushed when the m-line began; the unwrap cannot fail.
                    let section = sections.last_mut().expect("video section open");
                    if !section.contains(&codec) {
                        section.push(codec);
                    }
                }
            }
        }
    }
    let has_video = !sections.is_empty();
    let mut codecs: Vec<VideoCodec> = sections.first().cloned().unwrap_or_default();
    codecs.retain(|c| sections.iter().all(|s| s.contains(c)));
    VideoOffer { has_video, codecs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_codecs_of_active_video_sections() {
        let sdp = "v=0\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n\
            a=rtpmap:111 opus/48000/2\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 96 97 98\r\n\
            a=rtpmap:96 VP8/90000\r\n\
            a=rtpmap:97 rtx/90000\r\n\
            a=rtpmap:98 H264/90000\r\n\
            m=video 9 UDP/TLS/RTP/SAVPF 98\r\n\
            a=rtpmap:98 H264/90000\r\n\
            m=video 0 UDP/TLS/RTP/SAVPF 96\r\n\
            a=rtpmap:96 VP9/90000\r\n";
        let v = video_offer(sdp);
        assert!(v.has_video);
        assert_eq!(v.codecs, vec![VideoCodec::H264]);
    }

    #[test]
    fn audio_only_and_garbage() {
        assert_eq!(
            video_offer("m=audio 9 x 111\r\na=rtpmap:111 opus/48000"),
            VideoOffer::default()
        );
        assert_eq!(
            video_offer("\u{0}\u{ffff}\nm=video\na=rtpmap:96"),
            VideoOffer {
                has_video: true,
                codecs: vec![]
            }
        );
        assert_eq!(video_offer(""), VideoOffer::default());
    }
}
