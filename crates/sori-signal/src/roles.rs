//! Which of a publisher's videos is its camera and which its screen share, in SFU rooms.
//!
//! The browser names the role of each m-line by mid in its offer; the media server publishes a
//! track per sending m-line and forwards it under a track id of its own. Both follow the order
//! of the m-lines, so the n-th video the media server publishes is the n-th video m-line that
//! started sending. An offer without roles (an older client) gets what the web client always
//! assumed: the first video is the camera, any later one a screen share.

use std::collections::BTreeMap;

use crate::protocol::TrackRole;

/// One publisher's video m-lines, in the order they started sending, and how many of them the
/// media server has published.
#[derive(Debug, Default)]
pub(crate) struct Publications {
    videos: Vec<(String, TrackRole)>,
    published: usize,
}

impl Publications {
    /// Notes the sending video m-lines of an offer (after the server restricted it) with their
    /// roles; at most `max` m-lines are remembered.
    pub(crate) fn offered(
        &mut self,
        sdp: &str,
        roles: Option<&BTreeMap<String, TrackRole>>,
        max: usize,
    ) {
        for mid in sending_videos(sdp) {
            let stated = roles.and_then(|r| r.get(&mid)).copied();
            if let Some((_, role)) = self.videos.iter_mut().find(|(m, _)| *m == mid) {
                if let Some(stated) = stated {
                    *role = stated;
                }
                continue;
            }
            if self.videos.len() >= max {
                return;
            }
            let default = if self.videos.is_empty() {
                TrackRole::Camera
            } else {
                TrackRole::Screen
            };
            self.videos.push((mid, stated.unwrap_or(default)));
        }
    }

    /// The role of the next video track the media server published.
    pub(crate) fn published_video(&mut self) -> TrackRole {
        let role = match self.videos.get(self.published) {
            Some((_, role)) => *role,
            None if self.published == 0 => TrackRole::Camera,
            None => TrackRole::Screen,
        };
        self.published += 1;
        role
    }
}

/// The mids of the video m-lines of `sdp` that send (`sendrecv`, `sendonly`, or no direction).
fn sending_videos(sdp: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut section: Option<(Option<String>, bool)> = None;
    let mut finish = |s: Option<(Option<String>, bool)>| {
        if let Some((Some(mid), true)) = s {
            out.push(mid);
        }
    };
    for line in sdp.lines().map(str::trim_end) {
        if let Some(media) = line.strip_prefix("m=") {
            finish(section.take());
            if media.starts_with("video ") {
                section = Some((None, true));
            }
        } else if let Some((mid, sends)) = section.as_mut() {
            if let Some(m) = line.strip_prefix("a=mid:") {
                *mid = Some(m.to_string());
            } else if matches!(line, "a=recvonly" | "a=inactive") {
                *sends = false;
            }
        }
    }
    finish(section);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sdp(lines: &[(&str, &str, &str)]) -> String {
        let mut s = String::from("v=0\r\ns=-\r\n");
        for (kind, mid, dir) in lines {
            s += &format!("m={kind} 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:{mid}\r\na={dir}\r\n");
        }
        s
    }

    #[test]
    fn stated_roles_follow_the_order_of_publication() {
        let mut p = Publications::default();
        let roles = BTreeMap::from([("1".into(), TrackRole::Camera)]);
        p.offered(
            &sdp(&[("audio", "0", "sendonly"), ("video", "1", "sendonly")]),
            Some(&roles),
            16,
        );
        assert_eq!(p.published_video(), TrackRole::Camera);
        let roles = BTreeMap::from([
            ("1".into(), TrackRole::Camera),
            ("2".into(), TrackRole::Screen),
        ]);
        p.offered(
            &sdp(&[
                ("audio", "0", "sendonly"),
                ("video", "1", "sendonly"),
                ("video", "2", "sendonly"),
            ]),
            Some(&roles),
            16,
        );
        assert_eq!(p.published_video(), TrackRole::Screen);
    }

    #[test]
    fn a_screen_first_is_a_screen() {
        let mut p = Publications::default();
        let roles = BTreeMap::from([("0".into(), TrackRole::Screen)]);
        p.offered(&sdp(&[("video", "0", "sendrecv")]), Some(&roles), 16);
        assert_eq!(p.published_video(), TrackRole::Screen);
    }

    #[test]
    fn without_roles_the_first_video_is_the_camera() {
        let mut p = Publications::default();
        p.offered(
            &sdp(&[
                ("video", "0", "recvonly"),
                ("video", "1", "sendrecv"),
                ("video", "2", "sendonly"),
            ]),
            None,
            16,
        );
        assert_eq!(p.published_video(), TrackRole::Camera);
        assert_eq!(p.published_video(), TrackRole::Screen);
        // More published than offered: still not a camera.
        assert_eq!(p.published_video(), TrackRole::Screen);
    }

    #[test]
    fn inactive_lines_are_not_counted_and_memory_is_bounded() {
        let mut p = Publications::default();
        let lines: Vec<(&str, &str, &str)> = vec![
            ("video", "a", "inactive"),
            ("video", "b", "sendonly"),
            ("video", "c", "sendonly"),
            ("video", "d", "sendonly"),
        ];
        p.offered(&sdp(&lines), None, 2);
        assert_eq!(p.videos.len(), 2);
        assert_eq!(p.videos[0].0, "b");
    }
}
