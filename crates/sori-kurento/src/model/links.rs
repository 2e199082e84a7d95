//! Connections between media elements (`connect`, `disconnect`, their listings) and how
//! they become the media core's forwarding: what feeds each WebRtcEndpoint's m-lines, what
//! each recorder taps.

use serde_json::{json, Value};
use sori_sfu::{MediaKind, MediaLine, PeerId, TrackId};

use super::registry::Kind;
use super::request::ElementOp;
use super::webrtc::Flow;
use super::Kms;
use crate::rpc::RpcError;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum MediaType {
    Audio,
    Video,
    Data,
}

impl MediaType {
    pub(super) fn parse(s: &str) -> Result<Self, RpcError> {
        match s {
            "AUDIO" => Ok(Self::Audio),
            "VIDEO" => Ok(Self::Video),
            "DATA" => Ok(Self::Data),
            other => Err(RpcError::marshall(format!(
                "'mediaType' parameter should be AUDIO, VIDEO or DATA, not {other}"
            ))),
        }
    }
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Audio => "AUDIO",
            Self::Video => "VIDEO",
            Self::Data => "DATA",
        }
    }
    pub(super) fn kind(self) -> Option<MediaKind> {
        match self {
            Self::Audio => Some(MediaKind::Audio),
            Self::Video => Some(MediaKind::Video),
            Self::Data => None,
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct Link {
    pub(super) source: String,
    pub(super) sink: String,
    pub(super) ty: MediaType,
    pub(super) source_desc: String,
    pub(super) sink_desc: String,
}

impl Link {
    fn to_json(&self) -> Value {
        json!({"__module__":"kurento","__type__":"ElementConnectionData","source":self.source,
               "sink":self.sink,"type":self.ty.name(),"sourceDescription":self.source_desc,
               "sinkDescription":self.sink_desc})
    }
}

impl Kms {
    /// MediaElement operations: connections and flow state.
    pub(super) async fn invoke_element(
        &mut self,
        id: &str,
        op: ElementOp,
    ) -> Result<Value, RpcError> {
        Ok(match op {
            ElementOp::Connect {
                on,
                sink,
                media_type,
                source_desc,
                sink_desc,
            } => {
                let sink_obj = self.object(&sink)?;
                if matches!(sink_obj.kind, Kind::Pipeline) {
                    return Err(RpcError::illegal_param("the sink must be a media element"));
                }
                let pipeline = self.object(id)?.pipeline.clone();
                if sink_obj.pipeline != pipeline {
                    return Err(RpcError::connect("Media elements do not share pipeline"));
                }
                let types = match media_type? {
                    Some(t) => vec![t],
                    None => vec![MediaType::Audio, MediaType::Video, MediaType::Data],
                };
                let (source_desc, sink_desc) = (source_desc?, sink_desc?);
                for ty in types {
                    if on {
                        self.connect(id, &sink, ty, &source_desc, &sink_desc);
                    } else {
                        self.disconnect(id, &sink, ty, &sink_desc);
                    }
                }
                if let Some(p) = pipeline {
                    self.sync_pipeline(&p).await;
                }
                Value::Null
            }
            ElementOp::Connections {
                sources,
                media_type,
                description,
            } => json!(self.connections(id, sources, media_type, description.as_deref())),
            ElementOp::IsFlowing {
                into_element,
                media_type,
            } => {
                let flowing = match (&self.object(id)?.kind, media_type.kind()) {
                    (Kind::WebRtc(w), Some(k)) => {
                        let i = k as usize;
                        let t = if into_element {
                            w.flow_in[i]
                        } else {
                            w.flow_out[i]
                        };
                        t.state == Flow::Flowing
                    }
                    _ => false,
                };
                json!(flowing)
            }
            ElementOp::IsTranscoding => json!(false),
            ElementOp::SetFormat => {
                return Err(RpcError::not_implemented(
                    "Sori forwards media without transcoding; formats cannot be forced",
                ))
            }
        })
    }

    /// The links into (`sources`) or out of `id`, as `ElementConnectionData`.
    fn connections(
        &self,
        id: &str,
        sources: bool,
        ty: Option<MediaType>,
        description: Option<&str>,
    ) -> Vec<Value> {
        self.links
            .iter()
            .filter(|l| {
                if sources {
                    l.sink == id
                } else {
                    l.source == id
                }
            })
            .filter(|l| ty.is_none_or(|t| t == l.ty))
            .filter(|l| {
                description.is_none_or(|d| {
                    d == if sources {
                        &l.sink_desc
                    } else {
                        &l.source_desc
                    }
                })
            })
            .map(Link::to_json)
            .collect()
    }

    fn connect(&mut self, source: &str, sink: &str, ty: MediaType, sd: &str, kd: &str) {
        let same = |l: &Link| l.sink == sink && l.ty == ty && l.sink_desc == kd;
        if let Some(l) = self.links.iter().find(|l| same(l)) {
            if l.source == source && l.source_desc == sd {
                return; // A repeated connect changes nothing.
            }
        }
        let replaced: Vec<Link> = self.links.iter().filter(|l| same(l)).cloned().collect();
        self.links.retain(|l| !same(l));
        for old in replaced {
            self.emit(
                &old.source,
                "ElementDisconnected",
                json!({"sink": old.sink, "mediaType": old.ty.name(),
                       "sourceMediaDescription": old.source_desc,
                       "sinkMediaDescription": old.sink_desc}),
            );
        }
        self.links.push(Link {
            source: source.to_string(),
            sink: sink.to_string(),
            ty,
            source_desc: sd.to_string(),
            sink_desc: kd.to_string(),
        });
        self.emit(
            source,
            "ElementConnected",
            json!({"sink": sink, "mediaType": ty.name(), "sourceMediaDescription": sd,
                   "sinkMediaDescription": kd}),
        );
    }

    fn disconnect(&mut self, source: &str, sink: &str, ty: MediaType, kd: &str) {
        let matches =
            |l: &Link| l.source == source && l.sink == sink && l.ty == ty && l.sink_desc == kd;
        let gone: Vec<Link> = self.links.iter().filter(|l| matches(l)).cloned().collect();
        self.links.retain(|l| !matches(l));
        for old in gone {
            self.emit(
                source,
                "ElementDisconnected",
                json!({"sink": old.sink, "mediaType": old.ty.name(),
                       "sourceMediaDescription": old.source_desc,
                       "sinkMediaDescription": old.sink_desc}),
            );
        }
    }

    /// The track that reaches `element` for `kind`, following the links upstream.
    pub(super) fn effective_source(&self, element: &str, kind: MediaKind) -> Option<TrackId> {
        let ty = match kind {
            MediaKind::Audio => MediaType::Audio,
            MediaKind::Video => MediaType::Video,
        };
        let mut at = element.to_string();
        for _ in 0..16 {
            let link = self
                .links
                .iter()
                .find(|l| l.sink == at && l.ty == ty && l.sink_desc == "default")?;
            match &self.objects.get(&link.source)?.kind {
                Kind::WebRtc(w) => {
                    return w
                        .lines
                        .iter()
                        .find(|l| l.kind == kind && l.published.is_some())
                        .and_then(|l| l.published)
                }
                Kind::PassThrough => at = link.source.clone(),
                Kind::Pipeline | Kind::Recorder(_) | Kind::Relay(_) => return None,
            }
        }
        None
    }

    /// Every track published by `source` (or reaching it, through pass-throughs) of `kind`.
    pub(super) fn tracks_of(&self, source: &str, kind: MediaKind) -> Vec<TrackId> {
        match self.objects.get(source).map(|o| &o.kind) {
            Some(Kind::WebRtc(w)) => w
                .lines
                .iter()
                .filter(|l| l.kind == kind)
                .filter_map(|l| l.published)
                .collect(),
            Some(Kind::PassThrough) => self.effective_source(source, kind).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    /// Brings the media core's forwarding in line with the pipeline's links.
    pub(super) async fn sync_pipeline(&mut self, pipeline: &str) {
        let sinks: Vec<(String, PeerId)> = self
            .objects
            .iter()
            .filter(|(_, o)| o.pipeline.as_deref() == Some(pipeline))
            .filter_map(|(id, o)| match &o.kind {
                Kind::WebRtc(w) => w.peer.map(|p| (id.clone(), p)),
                _ => None,
            })
            .collect();
        let recorders: Vec<String> = self
            .objects
            .iter()
            .filter(|(_, o)| o.pipeline.as_deref() == Some(pipeline))
            .filter(|(_, o)| matches!(o.kind, Kind::Recorder(_)))
            .map(|(id, _)| id.clone())
            .collect();
        for id in recorders {
            self.sync_recorder(&id).await;
        }
        for (id, peer) in sinks {
            self.sync_described(&id, peer).await;
            for kind in [MediaKind::Audio, MediaKind::Video] {
                let wanted = self.effective_source(&id, kind);
                let Some(w) = self.webrtc_mut(&id) else {
                    continue;
                };
                let own = |l: &&mut MediaLine| l.kind == kind && l.sends && !l.managed;
                let Some(line) = w.lines.iter_mut().find(own) else {
                    continue;
                };
                if line.fed_by == wanted {
                    continue;
                }
                let mid = line.mid.clone();
                match self.media.feed(peer, &mid, wanted).await {
                    Ok(()) => {
                        if let Some(w) = self.webrtc_mut(&id) {
                            if let Some(l) = w.lines.iter_mut().find(|l| l.mid == mid) {
                                l.fed_by = wanted;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(object = id, mid, "cannot forward: {e}"),
                }
            }
        }
    }
}
