//! The registry of media objects: what each is, who owns it, its tags and properties;
//! creating, describing, releasing, and routing `invoke` to the operations of the object's
//! type.

use std::collections::BTreeSet;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::manager::{ManagerOp, MANAGER};
use super::relay::Relay;
use super::request::{Create, Factory, Invoke, ObjectOp, Operation, PropertyOp};
use super::webrtc::WebRtc;
use super::{uuid, value, Kms};
use crate::recorder::{self, Rec};
use crate::rpc::RpcError;

pub(super) enum Kind {
    Pipeline,
    WebRtc(Box<WebRtc>),
    PassThrough,
    Recorder(Box<Rec>),
    Relay(Box<Relay>),
}

impl Kind {
    pub(super) fn type_name(&self) -> &'static str {
        match self {
            Kind::Pipeline => "MediaPipeline",
            Kind::WebRtc(_) => "WebRtcEndpoint",
            Kind::PassThrough => "PassThrough",
            Kind::Recorder(_) => "RecorderEndpoint",
            Kind::Relay(_) => "RelayEndpoint",
        }
    }
    pub(super) fn hierarchy(&self) -> Vec<&'static str> {
        match self {
            Kind::Pipeline => vec!["kurento.MediaObject"],
            Kind::WebRtc(_) => vec![
                "kurento.BaseRtpEndpoint",
                "kurento.SdpEndpoint",
                "kurento.SessionEndpoint",
                "kurento.Endpoint",
                "kurento.MediaElement",
                "kurento.MediaObject",
            ],
            Kind::Recorder(_) => vec![
                "kurento.UriEndpoint",
                "kurento.Endpoint",
                "kurento.MediaElement",
                "kurento.MediaObject",
            ],
            Kind::Relay(_) => vec![
                "kurento.Endpoint",
                "kurento.MediaElement",
                "kurento.MediaObject",
            ],
            Kind::PassThrough => vec![
                "kurento.Filter",
                "kurento.MediaElement",
                "kurento.MediaObject",
            ],
        }
    }
}

pub(super) struct Object {
    pub(super) kind: Kind,
    pub(super) pipeline: Option<String>,
    /// The session that created it. Only it, or the owner of its pipeline, may release it:
    /// any session may use an object, but one application must not tear down another's.
    pub(super) owner: String,
    pub(super) name: String,
    pub(super) tags: Vec<(String, String)>,
    pub(super) send_tags: bool,
    pub(super) created: u64,
    pub(super) refs: BTreeSet<String>,
    pub(super) props: Map<String, Value>,
}

fn webrtc_props() -> Map<String, Value> {
    let v = json!({
        "stunServerAddress": "", "stunServerPort": 3478, "turnUrl": "",
        "externalIPv4": "", "externalIPv6": "", "networkInterfaces": "", "iceTcp": true,
        "minVideoRecvBandwidth": 0, "maxVideoRecvBandwidth": 0, "maxAudioRecvBandwidth": 0,
        "minVideoSendBandwidth": 100, "maxVideoSendBandwidth": 500, "mtu": 1200,
        "encoderBitrate": 0, "minEncoderBitrate": 0, "maxEncoderBitrate": 0,
        "minOutputBitrate": 0, "maxOutputBitrate": 0,
    });
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn element_props() -> Map<String, Value> {
    let v = json!({"encoderBitrate": 0, "minEncoderBitrate": 0, "maxEncoderBitrate": 0,
                   "minOutputBitrate": 0, "maxOutputBitrate": 0});
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl Kms {
    pub(super) fn touch(&mut self, session: &str, object: &str) {
        if let Some(o) = self.objects.get_mut(object) {
            o.refs.insert(session.to_string());
        }
    }

    pub(super) async fn create(
        &mut self,
        session: &str,
        create: Create,
    ) -> Result<Value, RpcError> {
        let mut relay_uri = None;
        let kind = match create.factory {
            Factory::MediaPipeline => Kind::Pipeline,
            // Its link is made below, once its pipeline and id are known.
            Factory::RelayEndpoint { uri } => {
                relay_uri = Some(uri);
                Kind::PassThrough
            }
            Factory::WebRtcEndpoint {
                renegotiation,
                recvonly,
                sendonly,
            } => Kind::WebRtc(Box::new(WebRtc {
                renegotiation,
                recvonly,
                sendonly,
                ..WebRtc::default()
            })),
            Factory::PassThrough => Kind::PassThrough,
            Factory::RecorderEndpoint { uri, profile } => {
                let path = recorder::resolve_uri(&uri, self.recordings_dir.as_deref())?;
                Kind::Recorder(Box::new(Rec::new(uri, path, profile)))
            }
        };
        self.within_caps(session, &kind)?;
        let (id, pipeline) = if matches!(kind, Kind::Pipeline) {
            (format!("{}_kurento.MediaPipeline", uuid()), None)
        } else {
            let pipeline = self.pipeline_of_new(create.pipeline)?;
            (
                format!("{pipeline}/{}_kurento.{}", uuid(), kind.type_name()),
                Some(pipeline),
            )
        };
        let (id, kind) = match (relay_uri, &pipeline) {
            (Some(uri), Some(p)) => {
                let id = id.replace("_kurento.PassThrough", "_sori.RelayEndpoint");
                let link = self.media.link(p).ok_or_else(|| {
                    RpcError::not_enough_resources(
                        "this media server has no free relay link (is it a media node of a cluster?)",
                    )
                })?;
                let relay = Relay::new(self.this.clone(), id.clone(), link, uri);
                (id, Kind::Relay(Box::new(relay)))
            }
            _ => (id, kind),
        };
        self.insert(session, id.clone(), kind, pipeline);
        tracing::debug!(object = id, "created");
        self.emit(MANAGER, "ObjectCreated", json!({"object": id}));
        Ok(value(json!(id)))
    }

    /// The pipeline a new element goes into: it must be one.
    fn pipeline_of_new(&self, pipeline: Result<String, RpcError>) -> Result<String, RpcError> {
        let pipeline = pipeline?;
        match self.objects.get(&pipeline) {
            Some(o) if matches!(o.kind, Kind::Pipeline) => Ok(pipeline),
            Some(_) => Err(RpcError::illegal_param(format!(
                "'{pipeline}' is not a MediaPipeline"
            ))),
            None => Err(RpcError::object_not_found(&pipeline)),
        }
    }

    fn insert(&mut self, session: &str, id: String, kind: Kind, pipeline: Option<String>) {
        let props = match kind {
            Kind::WebRtc(_) => webrtc_props(),
            Kind::PassThrough | Kind::Recorder(_) | Kind::Relay(_) => element_props(),
            Kind::Pipeline => match json!({"latencyStats": false}) {
                Value::Object(m) => m,
                _ => Map::new(),
            },
        };
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.objects.insert(
            id.clone(),
            Object {
                kind,
                pipeline,
                name: id,
                tags: Vec::new(),
                send_tags: false,
                created,
                owner: session.to_string(),
                refs: BTreeSet::from([session.to_string()]),
                props,
            },
        );
    }

    /// Refuses a new object that would take `session` past its caps.
    fn within_caps(&self, session: &str, kind: &Kind) -> Result<(), RpcError> {
        let owned = || self.objects.values().filter(|o| o.owner == session);
        if owned().count() >= self.caps.objects {
            return Err(RpcError::not_enough_resources(format!(
                "this session already has {} media objects, the most one session may have",
                self.caps.objects
            )));
        }
        let recorders = || owned().filter(|o| matches!(o.kind, Kind::Recorder(_)));
        if matches!(kind, Kind::Recorder(_)) && recorders().count() >= self.caps.recorders {
            return Err(RpcError::not_enough_resources(format!(
                "this session already has {} RecorderEndpoints, the most one session may have",
                self.caps.recorders
            )));
        }
        Ok(())
    }

    pub(super) fn describe(&mut self, session: &str, object: &str) -> Result<Value, RpcError> {
        if object == MANAGER {
            return Ok(
                json!({"type":"ServerManager","qualifiedType":"kurento.ServerManager",
                             "hierarchy":["kurento.MediaObject"]}),
            );
        }
        let o = self
            .objects
            .get(object)
            .ok_or_else(|| RpcError::object_not_found(object))?;
        let ty = o.kind.type_name();
        let v = json!({"type": ty, "qualifiedType": format!("kurento.{ty}"),
                       "hierarchy": o.kind.hierarchy()});
        self.touch(session, object);
        Ok(v)
    }

    /// Whether `session` may release `id`: it created it or its pipeline (unknown ids are
    /// fine, as release is idempotent).
    pub(super) fn may_release(&self, session: &str, id: &str) -> bool {
        let Some(o) = self.objects.get(id) else {
            return true;
        };
        o.owner == session
            || o.pipeline
                .as_ref()
                .and_then(|p| self.objects.get(p))
                .is_some_and(|p| p.owner == session)
    }

    /// Releases an object (and a pipeline's children); unknown ids are fine.
    pub(super) async fn release(&mut self, id: &str) {
        let Some(o) = self.objects.get(id) else {
            return;
        };
        let mut doomed = vec![id.to_string()];
        if matches!(o.kind, Kind::Pipeline) {
            doomed.extend(
                self.objects
                    .iter()
                    .filter(|(_, c)| c.pipeline.as_deref() == Some(id))
                    .map(|(k, _)| k.clone()),
            );
        }
        let pipeline = o.pipeline.clone();
        for d in doomed.iter().rev() {
            let Some(o) = self.objects.remove(d) else {
                continue;
            };
            match o.kind {
                Kind::WebRtc(w) => {
                    if let Some(peer) = w.peer {
                        let _ = self.media.leave(peer).await;
                    }
                }
                // A recorder released without stop still finishes its file.
                Kind::Recorder(mut r) => {
                    for (_, _, tap) in r.taps.drain(..) {
                        self.media.untap(tap);
                    }
                    if let Some(recording) = r.recording.take() {
                        let _ = tokio::task::spawn_blocking(move || recording.stop()).await;
                    }
                }
                _ => {}
            }
            self.links.retain(|l| l.source != *d && l.sink != *d);
            self.subs.retain(|_, s| s.object != *d);
            tracing::debug!(object = d, "released");
            self.emit(MANAGER, "ObjectDestroyed", json!({"objectId": d}));
        }
        if let Some(p) = pipeline {
            self.sync_pipeline(&p).await;
        }
    }

    /// `unref`: the object goes with its last reference.
    pub(super) async fn unref(&mut self, session: &str, object: &str) {
        if let Some(o) = self.objects.get_mut(object) {
            o.refs.remove(session);
            if o.refs.is_empty() {
                self.release(object).await;
            }
        }
    }

    pub(super) fn object(&self, id: &str) -> Result<&Object, RpcError> {
        self.objects
            .get(id)
            .ok_or_else(|| RpcError::object_not_found(id))
    }

    pub(super) async fn invoke(
        &mut self,
        session: &str,
        invoke: Invoke,
    ) -> Result<Value, RpcError> {
        let id = invoke.object.as_str();
        if id == MANAGER {
            return self.invoke_manager(session, ManagerOp::parse(&invoke)?);
        }
        self.object(id)?;
        self.touch(session, id);
        let op = Operation::parse(&self.object(id)?.kind, &invoke)?;
        let v = match op {
            Operation::Recorder(op) => self.invoke_recorder(id, op).await,
            Operation::WebRtc(op) => self.invoke_webrtc(id, op).await?,
            Operation::Element(op) => self.invoke_element(id, op).await?,
            Operation::Object(op) => self.invoke_object(id, op)?,
            Operation::Property(op) => self.property(id, op)?.ok_or_else(|| invoke.unknown())?,
        };
        Ok(value(v))
    }

    /// Operations every media object has.
    fn invoke_object(&mut self, id: &str, op: ObjectOp) -> Result<Value, RpcError> {
        let children = || -> Vec<String> {
            self.objects
                .iter()
                .filter(|(_, c)| c.pipeline.as_deref() == Some(id))
                .map(|(k, _)| k.clone())
                .collect()
        };
        let o = self.object(id)?;
        Ok(match op {
            ObjectOp::GetId => json!(id),
            ObjectOp::GetName => json!(o.name),
            ObjectOp::GetCreationTime => json!(o.created),
            ObjectOp::GetSendTagsInEvents => json!(o.send_tags),
            ObjectOp::GetMediaPipeline => {
                json!(o.pipeline.clone().unwrap_or_else(|| id.to_string()))
            }
            ObjectOp::GetParent => json!(o.pipeline),
            ObjectOp::GetChildren => json!(children()),
            ObjectOp::GetTags => json!(o
                .tags
                .iter()
                .map(|(k, v)| json!({"__module__":"kurento","__type__":"Tag","key":k,"value":v}))
                .collect::<Vec<_>>()),
            ObjectOp::GetTag { key } => {
                let found = o.tags.iter().find(|(k, _)| *k == key);
                json!(found.ok_or_else(|| RpcError::tag_not_found(&key))?.1)
            }
            ObjectOp::GetGstreamerDot => json!(format!("digraph \"{id}\" {{}}")),
            ObjectOp::SetName { name } => {
                self.object_mut(id).name = name;
                Value::Null
            }
            ObjectOp::SetSendTagsInEvents { on } => {
                self.object_mut(id).send_tags = on;
                Value::Null
            }
            ObjectOp::AddTag { key, value } => {
                let o = self.object_mut(id);
                o.tags.retain(|(k, _)| *k != key);
                o.tags.push((key, value));
                Value::Null
            }
            ObjectOp::RemoveTag { key } => {
                self.object_mut(id).tags.retain(|(k, _)| *k != key);
                Value::Null
            }
        })
    }

    /// An object `invoke` has found.
    fn object_mut(&mut self, id: &str) -> &mut Object {
        // invoke looked the object up under the same lock.
        self.objects.get_mut(id).expect("checked by invoke")
    }

    /// Generic property getters and setters of the object's property table; `None` when it
    /// has no such property.
    fn property(&mut self, id: &str, op: PropertyOp) -> Result<Option<Value>, RpcError> {
        let o = self.object_mut(id);
        let lookup = |rest: &str| -> Option<String> {
            let mut lower = rest.to_string();
            if let Some(first) = lower.get_mut(0..1) {
                first.make_ascii_lowercase();
            }
            [lower, rest.to_string()]
                .into_iter()
                .find(|k| o.props.contains_key(k))
        };
        match op {
            PropertyOp::Get { name } => Ok(lookup(&name).map(|key| o.props[&key].clone())),
            PropertyOp::Set { name, args } => {
                let Some(key) = lookup(&name) else {
                    return Ok(None);
                };
                let Some(new) = args.get(&key).or_else(|| args.values().next()) else {
                    return Err(RpcError::member(format!("'{key}' parameter is required")));
                };
                check_same_type(&key, &o.props[&key], new)?;
                o.props.insert(key, new.clone());
                Ok(Some(Value::Null))
            }
            PropertyOp::Neither => Ok(None),
        }
    }
}

/// A property keeps its type: string, boolean or integer.
fn check_same_type(key: &str, old: &Value, new: &Value) -> Result<(), RpcError> {
    let same_type = (old.is_string() && new.is_string())
        || (old.is_boolean() && new.is_boolean())
        || (old.is_i64() && new.is_i64());
    if same_type {
        return Ok(());
    }
    let expected = if old.is_string() {
        "a string"
    } else if old.is_boolean() {
        "a boolean"
    } else {
        "an integer"
    };
    Err(RpcError::marshall(format!(
        "'{key}' parameter should be {expected}"
    )))
}
