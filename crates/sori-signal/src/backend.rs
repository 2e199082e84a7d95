//! The media server the session server drives, through the one interface both kinds
//! implement: the core in this process (`sori-net`), or a remote media server over the control
//! API (`sori signal --media ws://…`, `sori-kurento-client`). Both behave the same towards
//! browsers: one peer connection per participant that receives everyone else, with the media
//! server's offers for new tracks.

pub use sori_media::{BackendError, BackendJoined, MediaBackend, PeerRef};
