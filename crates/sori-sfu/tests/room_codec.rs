//! A room keeps to one video codec: the first video sender settles it from the configured
//! preference, and a client that cannot use it is refused with a clear error.

mod common;

use std::time::Instant;

use common::{client_with, try_join};
use sori_sfu::{SfuConfig, SfuError, VideoCodec};
use str0m::RtcConfig;

fn config(vp8: bool, h264: bool) -> RtcConfig {
    RtcConfig::new()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(vp8)
        .enable_h264(h264)
}

#[test]
fn the_first_sender_settles_the_codec_and_an_incompatible_client_is_refused() {
    let now = Instant::now();
    let mut sfu = common::sfu_with(SfuConfig {
        video_codecs: vec![VideoCodec::H264, VideoCodec::Vp8],
        ..SfuConfig::default()
    });
    // Offers VP8 and H.264: the server prefers H.264.
    let mut a = client_with(0, config(true, true), now);
    try_join(&mut sfu, &mut a, "codec", now).unwrap();
    let video_pts: Vec<_> = a
        .send
        .iter()
        .filter_map(|(k, mid)| k.is_video().then_some(*mid))
        .collect();
    let media = a.rtc.media(video_pts[0]).unwrap();
    let negotiated: Vec<_> = a
        .rtc
        .codec_config()
        .params()
        .iter()
        .filter(|p| media.remote_pts().contains(&p.pt()))
        .map(|p| p.spec().codec)
        .collect();
    assert!(
        !negotiated.is_empty() && negotiated.iter().all(|c| *c == str0m::format::Codec::H264),
        "{negotiated:?}"
    );

    // VP8 only: refused, and the core is unchanged.
    let before = sfu.state();
    let mut b = client_with(1, config(true, false), now);
    let err = try_join(&mut sfu, &mut b, "codec", now).unwrap_err();
    assert_eq!(
        err,
        SfuError::VideoCodecUnsupported {
            room: "h264".into(),
            offered: "vp8".into()
        }
    );
    assert!(err.to_string().contains("uses h264 video"), "{err}");
    assert_eq!(sfu.state(), before);

    // Another room is free to use VP8.
    let mut c = client_with(2, config(true, false), now);
    try_join(&mut sfu, &mut c, "other", now).unwrap();
}
