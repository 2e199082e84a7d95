//! SFU rooms: a participant's offers and answers go to the media server, whose answers, offers
//! and news of published tracks come back here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use sori_media::sori_sfu::{MediaKind, RemoveReason};
use sori_media::PeerSignal;
use tokio::sync::mpsc;

use super::Connection;
use crate::hub::{Hub, Me};
use crate::outbox::Outbox;
use crate::protocol::{ErrorCode, RoomMode, ServerMessage, TrackRole};
use crate::{recording, BackendError};

impl Connection {
    pub(super) async fn media_offer(
        &mut self,
        me: &Me,
        sdp: &str,
        roles: Option<&BTreeMap<String, TrackRole>>,
    ) {
        if !self.signal.hub().uses_sfu(me) {
            self.error(
                ErrorCode::BadTarget,
                "this room is peer-to-peer: address offers to a participant with \"to\"",
            );
            return;
        }
        let media = self.signal.media.clone();
        let mut reply = None;
        if let Some(peer) = &self.media_peer {
            self.signal.hub().offered(me, sdp, roles, false);
            match media.offer(peer, sdp).await {
                // The media server dropped this peer (see forward_media_signals): start anew.
                Err(BackendError::UnknownPeer) => self.media_peer = None,
                other => reply = Some(other),
            }
        }
        if reply.is_none() {
            // A new media connection: its tracks are all new.
            self.signal.hub().offered(me, sdp, roles, true);
        }
        let reply = match reply {
            Some(r) => r,
            None => match media.join(&me.room, sdp, self.grants.subscribe).await {
                Ok(joined) => {
                    let muted = self.signal.hub().set_media(
                        me,
                        joined.stream_id.clone(),
                        joined.peer.clone(),
                    );
                    for (kind, on) in [
                        (MediaKind::Audio, muted.audio),
                        (MediaKind::Video, muted.video),
                    ] {
                        if on {
                            if let Err(e) = media.set_muted(&joined.peer, kind, true).await {
                                tracing::warn!("server mute not applied: {e}");
                            }
                        }
                    }
                    self.media_peer = Some(joined.peer);
                    self.send(ServerMessage::Answer {
                        sdp: joined.answer,
                        from: None,
                        roles: None,
                    });
                    let name = self.signal.hub().name_of(me).unwrap_or_default();
                    tokio::spawn(forward_media_signals(
                        joined.signals,
                        self.signal.hub.clone(),
                        self.out.clone(),
                        self.signal.recordings.clone(),
                        me.clone(),
                        name,
                    ));
                    return;
                }
                Err(e) => Err(e),
            },
        };
        match reply {
            Ok(answer) => self.send(ServerMessage::Answer {
                sdp: answer,
                from: None,
                roles: None,
            }),
            Err(e) => self.media_error(e),
        }
    }

    pub(super) async fn media_answer(&mut self, sdp: &str) {
        let Some(peer) = &self.media_peer else {
            self.error(
                ErrorCode::BadTarget,
                "no offer from the media server is waiting for an answer",
            );
            return;
        };
        if let Err(e) = self.signal.media.answer(peer, sdp).await {
            self.media_error(e);
        }
    }

    fn media_error(&self, e: BackendError) {
        self.error(ErrorCode::MediaError, &e.to_string());
    }
}

/// Passes the media server's offers for this participant to its socket.
async fn forward_media_signals(
    mut signals: mpsc::UnboundedReceiver<PeerSignal>,
    hub: Arc<Mutex<Hub>>,
    out: Outbox,
    recordings: Arc<recording::Recordings>,
    me: Me,
    name: String,
) {
    while let Some(signal) = signals.recv().await {
        match signal {
            PeerSignal::Offer(sdp) => {
                if !out.send(&ServerMessage::Offer {
                    sdp,
                    from: None,
                    roles: None,
                }) {
                    break;
                }
            }
            PeerSignal::Published { track, kind } => {
                if kind == MediaKind::Video {
                    hub.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .published_video(&me, track.to_string());
                }
                recordings
                    .published(&me.room, &me.id, &name, track, kind)
                    .await;
            }
            PeerSignal::Connected | PeerSignal::Layers { .. } => {}
            PeerSignal::Removed(reason) => {
                tracing::info!("media connection removed: {reason}");
                if reason != RemoveReason::Left {
                    // The socket is still up: have the browser connect its media again.
                    out.send(&ServerMessage::Mode {
                        mode: RoomMode::Sfu,
                    });
                }
                break;
            }
        }
    }
}
