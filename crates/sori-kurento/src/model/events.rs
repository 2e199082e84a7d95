//! Events and subscriptions: which events each type raises, subscribing (legacy Kurento 6
//! names included), and delivery to each subscribing session's current socket.

use serde_json::{json, Value};

use super::manager::MANAGER;
use super::registry::Kind;
use super::{now_millis, uuid, value, Kms};
use crate::rpc::RpcError;

pub(super) struct Sub {
    pub(super) session: String,
    pub(super) object: String,
    /// The event name as subscribed (legacy names are delivered under it).
    pub(super) name: String,
}

/// Kurento 6 event names, still accepted; events go out under the name subscribed.
pub(super) fn canonical_event(name: &str) -> &str {
    match name {
        "OnIceCandidate" => "IceCandidateFound",
        "OnIceGatheringDone" => "IceGatheringDone",
        "OnIceComponentStateChanged" | "IceComponentStateChange" => "IceComponentStateChanged",
        "OnDataChannelOpened" | "DataChannelOpen" => "DataChannelOpened",
        "OnDataChannelClosed" | "DataChannelClose" => "DataChannelClosed",
        "MediaFlowInStateChange" => "MediaFlowInStateChanged",
        "MediaFlowOutStateChange" => "MediaFlowOutStateChanged",
        "MediaTranscodingStateChange" => "MediaTranscodingStateChanged",
        other => other,
    }
}

impl Kind {
    /// Whether objects of this kind raise `event`.
    fn supports_event(&self, event: &str) -> bool {
        const OBJECT: &[&str] = &["Error"];
        const ELEMENT: &[&str] = &[
            "ElementConnected",
            "ElementDisconnected",
            "MediaFlowInStateChanged",
            "MediaFlowOutStateChanged",
            "MediaTranscodingStateChanged",
        ];
        const WEBRTC: &[&str] = &[
            "MediaSessionStarted",
            "MediaSessionTerminated",
            "ConnectionStateChanged",
            "MediaStateChanged",
            "IceCandidateFound",
            "IceGatheringDone",
            "IceComponentStateChanged",
            "NewCandidatePairSelected",
            "DtlsConnectionStateChange",
            "DataChannelOpened",
            "DataChannelClosed",
            "RenegotiationNeeded",
            // Sori's extension: which of the browser's tracks arrive, and how loud its audio
            // is (docs/kurento-compat.md).
            "TrackPublished",
            "TrackUnpublished",
            "AudioLevels",
        ];
        OBJECT.contains(&event)
            || match self {
                Kind::Pipeline => false,
                Kind::PassThrough => ELEMENT.contains(&event),
                Kind::Relay(_) => ELEMENT.contains(&event) || event == "ConnectionStateChanged",
                Kind::Recorder(_) => {
                    ELEMENT.contains(&event)
                        || ["Recording", "Paused", "Stopped", "UriEndpointStateChanged"]
                            .contains(&event)
                }
                Kind::WebRtc(_) => ELEMENT.contains(&event) || WEBRTC.contains(&event),
            }
    }
}

impl Kms {
    pub(super) fn subscribe(
        &mut self,
        session: &str,
        object: String,
        name: String,
    ) -> Result<Value, RpcError> {
        let event = canonical_event(&name);
        let supported = if object == MANAGER {
            ["ObjectCreated", "ObjectDestroyed", "Error"].contains(&event)
        } else {
            let o = self
                .objects
                .get(&object)
                .ok_or_else(|| RpcError::object_not_found(&object))?;
            o.kind.supports_event(event)
        };
        if !supported {
            return Err(RpcError::event_not_supported(&name));
        }
        self.touch(session, &object);
        let id = uuid();
        self.subs.insert(
            id.clone(),
            Sub {
                session: session.to_string(),
                object,
                name,
            },
        );
        Ok(value(json!(id)))
    }

    /// Raises `event` on `object`: delivered once to each subscribing session's socket.
    pub(super) fn emit(&self, object: &str, event: &str, extra: Value) {
        let mut targets: Vec<(&str, &str)> = self
            .subs
            .values()
            .filter(|s| s.object == object && canonical_event(&s.name) == event)
            .map(|s| (s.session.as_str(), s.name.as_str()))
            .collect();
        targets.sort();
        targets.dedup_by(|a, b| a.0 == b.0);
        if targets.is_empty() {
            return;
        }
        let millis = now_millis();
        let tags: Vec<Value> = self
            .objects
            .get(object)
            .filter(|o| o.send_tags)
            .map(|o| {
                o.tags
                    .iter()
                    .map(
                        |(k, v)| json!({"__module__":"kurento","__type__":"Tag","key":k,"value":v}),
                    )
                    .collect()
            })
            .unwrap_or_default();
        for (session, name) in targets {
            let Some(Some((_, sink))) = self.sessions.get(session).map(|s| s.sinks.last()) else {
                continue;
            };
            let mut data = json!({"source": object, "tags": tags,
                                  "timestampMillis": millis.to_string(),
                                  "timestamp": (millis / 1000).to_string(), "type": name});
            if let (Value::Object(d), Value::Object(e)) = (&mut data, &extra) {
                for (k, v) in e {
                    d.insert(k.clone(), v.clone());
                }
            }
            let msg = json!({"jsonrpc":"2.0","method":"onEvent",
                             "params":{"value":{"data":data,"object":object,"type":name}}});
            let _ = sink.send(msg.to_string());
        }
    }

    pub(super) fn error_event(&self, object: &str, code: i64, kind: &str, description: &str) {
        self.emit(
            object,
            "Error",
            json!({"description": description, "errorCode": code, "type": kind}),
        );
    }
}
