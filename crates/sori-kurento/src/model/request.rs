//! Requests parsed into typed values once: the method, then the parameters of the methods on
//! media objects, then (once the object's kind is known) the operation and its parameters.
//! Every method and operation name of the protocol appears here, once.
//!
//! Parsing follows the order in which Kurento reports errors: a request's session is bound
//! before its parameters are read, and the few parameters Kurento checks only after looking
//! at the objects involved are kept as [`Deferred`] results.

use serde_json::{Map, Value};

use super::{Kind, MediaType};
use crate::recorder::{self, Profile};
use crate::rpc::{opt_string_param, string_param, RpcError};

/// A parameter whose error is reported only after the objects it concerns are checked.
pub(super) type Deferred<T> = Result<T, RpcError>;

/// A JSON-RPC method of the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Method {
    Ping,
    Connect,
    CloseSession,
    Transaction,
    /// A method on media objects: it needs parameters and a session.
    On(ObjectMethod),
}

/// The methods on media objects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ObjectMethod {
    Create,
    Describe,
    Invoke,
    Subscribe,
    Unsubscribe,
    Release,
    KeepAlive,
    Ref,
    Unref,
}

impl Method {
    pub(super) fn parse(name: &str) -> Option<Method> {
        use ObjectMethod as O;
        Some(match name {
            "ping" => Method::Ping,
            "connect" => Method::Connect,
            "closeSession" => Method::CloseSession,
            "transaction" => Method::Transaction,
            "create" => Method::On(O::Create),
            "describe" => Method::On(O::Describe),
            "invoke" => Method::On(O::Invoke),
            "subscribe" => Method::On(O::Subscribe),
            "unsubscribe" => Method::On(O::Unsubscribe),
            "release" => Method::On(O::Release),
            "keepAlive" => Method::On(O::KeepAlive),
            "ref" => Method::On(O::Ref),
            "unref" => Method::On(O::Unref),
            _ => return None,
        })
    }
}

/// A method on media objects with its parameters.
pub(super) enum Call {
    Create(Create),
    Describe { object: String },
    Invoke(Invoke),
    Subscribe { object: String, event: String },
    Unsubscribe { subscription: Option<String> },
    Release { object: String },
    KeepAlive,
    Ref { object: String },
    Unref { object: String },
}

impl Call {
    pub(super) fn parse(
        method: ObjectMethod,
        params: &Map<String, Value>,
    ) -> Result<Call, RpcError> {
        let object = || string_param(params, "object").map(str::to_string);
        Ok(match method {
            ObjectMethod::Create => Call::Create(Create::parse(params)?),
            ObjectMethod::Describe => Call::Describe { object: object()? },
            ObjectMethod::Invoke => Call::Invoke(Invoke::parse(params)?),
            ObjectMethod::Subscribe => Call::Subscribe {
                object: object()?,
                event: string_param(params, "type")?.to_string(),
            },
            ObjectMethod::Unsubscribe => Call::Unsubscribe {
                subscription: match params.get("subscription") {
                    Some(Value::String(s)) => Some(s.clone()),
                    _ => None,
                },
            },
            ObjectMethod::Release => Call::Release { object: object()? },
            ObjectMethod::KeepAlive => Call::KeepAlive,
            ObjectMethod::Ref => Call::Ref { object: object()? },
            ObjectMethod::Unref => Call::Unref { object: object()? },
        })
    }
}

/// `create`: what to build, and in which pipeline.
pub(super) struct Create {
    pub(super) factory: Factory,
    /// The `mediaPipeline` constructor parameter (elements only), checked after the caps.
    pub(super) pipeline: Deferred<String>,
}

/// The media object types Sori builds, with their constructor parameters.
pub(super) enum Factory {
    MediaPipeline,
    WebRtcEndpoint {
        renegotiation: bool,
        recvonly: bool,
        sendonly: bool,
    },
    PassThrough,
    /// The Sori extension linking two pipelines on two media nodes: `uri` to dial, or none
    /// to wait for the other node.
    RelayEndpoint {
        uri: Option<String>,
    },
    RecorderEndpoint {
        uri: String,
        profile: Profile,
    },
}

impl Create {
    fn parse(params: &Map<String, Value>) -> Result<Create, RpcError> {
        let ty = string_param(params, "type")?;
        let ty = ty
            .strip_prefix("kurento.")
            .or_else(|| ty.strip_prefix("sori."))
            .unwrap_or(ty);
        let ctor = match params.get("constructorParams") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(RpcError::member(
                    "'constructorParams' parameter should be an object",
                ))
            }
        };
        let renegotiation = [
            ctor.get("renegotiation"),
            params
                .get("properties")
                .and_then(|p| p.get("renegotiation")),
        ]
        .into_iter()
        .flatten()
        .any(|v| v.as_bool() == Some(true));
        let mut flags = [false; 2];
        for (i, flag) in ["recvonly", "sendonly"].iter().enumerate() {
            match ctor.get(*flag) {
                None | Some(Value::Null) => {}
                Some(Value::Bool(b)) => flags[i] = *b,
                Some(_) => {
                    return Err(RpcError::marshall(format!(
                        "'{flag}' parameter should be a boolean"
                    )))
                }
            }
        }
        let factory = match ty {
            "MediaPipeline" => Factory::MediaPipeline,
            "WebRtcEndpoint" => Factory::WebRtcEndpoint {
                renegotiation,
                recvonly: flags[0],
                sendonly: flags[1],
            },
            "PassThrough" => Factory::PassThrough,
            "RelayEndpoint" => Factory::RelayEndpoint {
                uri: opt_string_param(&ctor, "uri")?.map(str::to_string),
            },
            "RecorderEndpoint" => Factory::RecorderEndpoint {
                uri: string_param(&ctor, "uri")?.to_string(),
                profile: recorder::parse_profile(opt_string_param(&ctor, "mediaProfile")?)?,
            },
            other => return Err(RpcError::factory_not_found(other)),
        };
        let pipeline = string_param(&ctor, "mediaPipeline").map(str::to_string);
        Ok(Create { factory, pipeline })
    }
}

/// `invoke`: the object, and the operation as named (its parameters are read once the
/// object's kind is known).
pub(super) struct Invoke {
    pub(super) object: String,
    pub(super) operation: String,
    pub(super) args: Map<String, Value>,
}

impl Invoke {
    fn parse(params: &Map<String, Value>) -> Result<Invoke, RpcError> {
        let object = string_param(params, "object")?.to_string();
        let operation = string_param(params, "operation")?.to_string();
        let args = match params.get("operationParams") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(m)) => m.clone(),
            Some(_) => {
                return Err(RpcError::member(
                    "'operationParams' parameter should be an object",
                ))
            }
        };
        Ok(Invoke {
            object,
            operation,
            args,
        })
    }

    /// The operation is not one the object has.
    pub(super) fn unknown(&self) -> RpcError {
        RpcError::unknown_operation(&self.operation, self.args.len())
    }
}

/// Operations of the `ServerManager`.
// The variants are named after the ServerManager operations of the protocol (`getInfo`, …).
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ManagerOp {
    GetInfo,
    GetPipelines,
    GetSessions,
    GetUsedCpu,
    GetUsedMemory,
    GetCpuCount,
    GetMetadata,
    GetName,
    GetKmd,
}

impl ManagerOp {
    pub(super) fn parse(invoke: &Invoke) -> Result<ManagerOp, RpcError> {
        Ok(match invoke.operation.as_str() {
            "getInfo" => ManagerOp::GetInfo,
            "getPipelines" => ManagerOp::GetPipelines,
            "getSessions" => ManagerOp::GetSessions,
            "getUsedCpu" => ManagerOp::GetUsedCpu,
            "getUsedMemory" => ManagerOp::GetUsedMemory,
            "getCpuCount" => ManagerOp::GetCpuCount,
            "getMetadata" => ManagerOp::GetMetadata,
            "getName" => ManagerOp::GetName,
            "getKmd" => ManagerOp::GetKmd,
            _ => return Err(invoke.unknown()),
        })
    }
}

/// An operation of a media object, by the part of its type that defines it.
#[derive(Debug)]
pub(super) enum Operation {
    Recorder(RecorderOp),
    WebRtc(WebRtcOp),
    Element(ElementOp),
    Object(ObjectOp),
    /// A getter or setter of the object's property table (`getMtu`, `setMaxVideoRecvBandwidth`).
    Property(PropertyOp),
}

impl Operation {
    /// Reads `invoke`'s operation as one of an object of `kind`: the most specific type's
    /// operations first, as Kurento's class hierarchy does.
    pub(super) fn parse(kind: &Kind, invoke: &Invoke) -> Result<Operation, RpcError> {
        let (op, args) = (invoke.operation.as_str(), &invoke.args);
        if matches!(kind, Kind::Recorder(_)) {
            if let Some(r) = RecorderOp::parse(op) {
                return Ok(Operation::Recorder(r));
            }
        }
        if matches!(kind, Kind::WebRtc(_)) {
            if let Some(w) = WebRtcOp::parse(op, args)? {
                return Ok(Operation::WebRtc(w));
            }
        }
        if !matches!(kind, Kind::Pipeline) {
            if let Some(e) = ElementOp::parse(op, args)? {
                return Ok(Operation::Element(e));
            }
        }
        if let Some(o) = ObjectOp::parse(op, args)? {
            return Ok(Operation::Object(o));
        }
        Ok(Operation::Property(PropertyOp::parse(invoke)))
    }
}

/// Operations of a RecorderEndpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RecorderOp {
    Record,
    Pause,
    /// `stop` and `stopAndWait` (both reply once the file is final).
    Stop,
    GetUri,
    GetState,
}

impl RecorderOp {
    fn parse(op: &str) -> Option<RecorderOp> {
        Some(match op {
            "record" => RecorderOp::Record,
            "pause" => RecorderOp::Pause,
            "stop" | "stopAndWait" => RecorderOp::Stop,
            "getUri" => RecorderOp::GetUri,
            "getState" => RecorderOp::GetState,
            _ => return None,
        })
    }
}

/// Operations of a WebRtcEndpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum WebRtcOp {
    ProcessOffer {
        offer: String,
    },
    GenerateOffer {
        /// `offerToReceiveAudio`, `offerToReceiveVideo` (default true).
        send: [bool; 2],
    },
    ProcessAnswer {
        answer: String,
    },
    GatherCandidates,
    /// The candidate line (empty: end of candidates).
    AddIceCandidate {
        candidate: String,
    },
    /// Extension: the stream id (`a=msid`) under which other endpoints receive this one's
    /// tracks on renegotiated m-lines.
    GetStreamId,
    GetLocalSessionDescriptor,
    GetRemoteSessionDescriptor,
    RequestKeyframe,
    GetStats,
    GetMediaState,
    GetConnectionState,
    /// ICE and DTLS details Sori does not report: an empty list.
    GetIceDetails,
    /// Data channels (not supported).
    DataChannel,
}

impl WebRtcOp {
    fn parse(op: &str, args: &Map<String, Value>) -> Result<Option<WebRtcOp>, RpcError> {
        Ok(Some(match op {
            "processOffer" => WebRtcOp::ProcessOffer {
                offer: string_param(args, "offer")?.to_string(),
            },
            "generateOffer" => {
                let options = args.get("options").and_then(Value::as_object);
                let wants = |name: &str| {
                    options
                        .and_then(|o| o.get(name))
                        .and_then(Value::as_bool)
                        .unwrap_or(true)
                };
                WebRtcOp::GenerateOffer {
                    send: [wants("offerToReceiveAudio"), wants("offerToReceiveVideo")],
                }
            }
            "processAnswer" => WebRtcOp::ProcessAnswer {
                answer: string_param(args, "answer")?.to_string(),
            },
            "gatherCandidates" => WebRtcOp::GatherCandidates,
            "addIceCandidate" => WebRtcOp::AddIceCandidate {
                candidate: ice_candidate(args)?,
            },
            "getStreamId" => WebRtcOp::GetStreamId,
            "getLocalSessionDescriptor" => WebRtcOp::GetLocalSessionDescriptor,
            "getRemoteSessionDescriptor" => WebRtcOp::GetRemoteSessionDescriptor,
            "requestKeyframe" => WebRtcOp::RequestKeyframe,
            "getStats" => WebRtcOp::GetStats,
            "getMediaState" => WebRtcOp::GetMediaState,
            "getConnectionState" => WebRtcOp::GetConnectionState,
            "getIceConnectionState" | "getICECandidatePairs" | "getDtlsConnectionState" => {
                WebRtcOp::GetIceDetails
            }
            "createDataChannel" | "closeDataChannel" => WebRtcOp::DataChannel,
            _ => return Ok(None),
        }))
    }
}

/// The `candidate` line of an `IceCandidate` parameter.
fn ice_candidate(args: &Map<String, Value>) -> Result<String, RpcError> {
    let Some(c) = args.get("candidate") else {
        return Err(RpcError::member("'candidate' parameter is required"));
    };
    match c {
        Value::Object(m) => match m.get("candidate") {
            Some(Value::String(s)) => Ok(s.clone()),
            _ => Err(RpcError::marshall("'candidate' should be an IceCandidate")),
        },
        _ => Err(RpcError::marshall("'candidate' should be an IceCandidate")),
    }
}

/// Operations of every MediaElement.
#[derive(Clone, Debug)]
pub(super) enum ElementOp {
    /// `connect` (`on`) or `disconnect`.
    Connect {
        on: bool,
        sink: String,
        /// One type, or all three.
        media_type: Deferred<Option<MediaType>>,
        source_desc: Deferred<String>,
        sink_desc: Deferred<String>,
    },
    /// `getSourceConnections` (`sources`) or `getSinkConnections`.
    Connections {
        sources: bool,
        media_type: Option<MediaType>,
        description: Option<String>,
    },
    /// `isMediaFlowingIn` (`into_element`) or `isMediaFlowingOut`.
    IsFlowing {
        into_element: bool,
        media_type: MediaType,
    },
    IsTranscoding,
    /// `setAudioFormat`, `setVideoFormat` (not supported: Sori does not transcode).
    SetFormat,
}

impl ElementOp {
    fn parse(op: &str, args: &Map<String, Value>) -> Result<Option<ElementOp>, RpcError> {
        let media_type = || -> Result<Option<MediaType>, RpcError> {
            opt_string_param(args, "mediaType")?
                .map(MediaType::parse)
                .transpose()
        };
        let desc = |name: &str| -> Result<String, RpcError> {
            Ok(opt_string_param(args, name)?
                .unwrap_or("default")
                .to_string())
        };
        Ok(Some(match op {
            "connect" | "disconnect" => ElementOp::Connect {
                on: op == "connect",
                sink: string_param(args, "sink")?.to_string(),
                media_type: media_type(),
                source_desc: desc("sourceMediaDescription"),
                sink_desc: desc("sinkMediaDescription"),
            },
            "getSourceConnections" | "getSinkConnections" => ElementOp::Connections {
                sources: op == "getSourceConnections",
                media_type: media_type()?,
                description: opt_string_param(args, "description")?.map(str::to_string),
            },
            "isMediaFlowingIn" | "isMediaFlowingOut" => {
                let Some(media_type) = media_type()? else {
                    return Err(RpcError::member("'mediaType' parameter is required"));
                };
                ElementOp::IsFlowing {
                    into_element: op == "isMediaFlowingIn",
                    media_type,
                }
            }
            "isMediaTranscoding" => ElementOp::IsTranscoding,
            "setAudioFormat" | "setVideoFormat" => ElementOp::SetFormat,
            _ => return Ok(None),
        }))
    }
}

/// Operations every media object has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ObjectOp {
    GetId,
    GetName,
    GetCreationTime,
    GetSendTagsInEvents,
    GetMediaPipeline,
    GetParent,
    /// `getChildren`, and the older `getChilds`.
    GetChildren,
    GetTags,
    GetTag {
        key: String,
    },
    GetGstreamerDot,
    SetName {
        name: String,
    },
    SetSendTagsInEvents {
        on: bool,
    },
    AddTag {
        key: String,
        value: String,
    },
    RemoveTag {
        key: String,
    },
}

impl ObjectOp {
    fn parse(op: &str, args: &Map<String, Value>) -> Result<Option<ObjectOp>, RpcError> {
        let key = || string_param(args, "key").map(str::to_string);
        Ok(Some(match op {
            "getId" => ObjectOp::GetId,
            "getName" => ObjectOp::GetName,
            "getCreationTime" => ObjectOp::GetCreationTime,
            "getSendTagsInEvents" => ObjectOp::GetSendTagsInEvents,
            "getMediaPipeline" => ObjectOp::GetMediaPipeline,
            "getParent" => ObjectOp::GetParent,
            "getChildren" | "getChilds" => ObjectOp::GetChildren,
            "getTags" => ObjectOp::GetTags,
            "getTag" => ObjectOp::GetTag { key: key()? },
            "getGstreamerDot" => ObjectOp::GetGstreamerDot,
            "setName" => ObjectOp::SetName {
                name: string_param(args, "name")?.to_string(),
            },
            "setSendTagsInEvents" => {
                let Some(on) = args.get("sendTagsInEvents").and_then(Value::as_bool) else {
                    return Err(RpcError::marshall(
                        "'sendTagsInEvents' parameter should be a boolean",
                    ));
                };
                ObjectOp::SetSendTagsInEvents { on }
            }
            "addTag" => ObjectOp::AddTag {
                key: key()?,
                value: string_param(args, "value")?.to_string(),
            },
            "removeTag" => ObjectOp::RemoveTag { key: key()? },
            _ => return Ok(None),
        }))
    }
}

/// A getter or setter of the property table, as named; unknown names are refused by the
/// object, whose table decides.
#[derive(Clone, Debug)]
pub(super) enum PropertyOp {
    /// `get` + the property name.
    Get { name: String },
    /// `set` + the property name; the value is the parameter of that name, or else the only
    /// one given.
    Set {
        name: String,
        args: Map<String, Value>,
    },
    /// Neither: no such operation.
    Neither,
}

impl PropertyOp {
    fn parse(invoke: &Invoke) -> PropertyOp {
        let op = invoke.operation.as_str();
        if let Some(name) = op.strip_prefix("get") {
            PropertyOp::Get {
                name: name.to_string(),
            }
        } else if let Some(name) = op.strip_prefix("set") {
            PropertyOp::Set {
                name: name.to_string(),
                args: invoke.args.clone(),
            }
        } else {
            PropertyOp::Neither
        }
    }
}

/// Replaces every `"newref:K"` string in `v` by the value created by operation K.
pub(super) fn substitute_newrefs(v: &mut Value, created: &[Option<Value>]) -> Result<(), RpcError> {
    match v {
        Value::String(s) => {
            if let Some(k) = s.strip_prefix("newref:") {
                let found = k
                    .parse::<usize>()
                    .ok()
                    .and_then(|k| created.get(k).cloned().flatten());
                match found {
                    Some(value) => *v = value,
                    None => {
                        return Err(RpcError::malformed_transaction(format!(
                            "'{s}' does not name an earlier operation's result"
                        )))
                    }
                }
            }
        }
        Value::Array(a) => {
            for x in a {
                substitute_newrefs(x, created)?;
            }
        }
        Value::Object(m) => {
            for x in m.values_mut() {
                substitute_newrefs(x, created)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The first `"newref:K"` string in `v` (they are valid only inside a transaction).
pub(super) fn find_newref(v: &Value) -> Option<&str> {
    match v {
        Value::String(s) if s.starts_with("newref:") => Some(s),
        Value::Array(a) => a.iter().find_map(find_newref),
        Value::Object(m) => m.values().find_map(find_newref),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn newrefs_are_replaced_by_earlier_results() {
        let mut v = json!({"constructorParams": {"mediaPipeline": "newref:0"}, "x": ["newref:1"]});
        let created = vec![Some(json!("P")), Some(json!("W"))];
        substitute_newrefs(&mut v, &created).unwrap();
        assert_eq!(
            v,
            json!({"constructorParams": {"mediaPipeline": "P"}, "x": ["W"]})
        );
        let mut bad = json!({"a": "newref:5"});
        assert_eq!(
            substitute_newrefs(&mut bad, &created).unwrap_err().code,
            40008
        );
    }

    fn invoke(op: &str, args: Value) -> Invoke {
        let Value::Object(args) = args else {
            panic!("args are an object")
        };
        Invoke {
            object: "x".into(),
            operation: op.into(),
            args,
        }
    }

    #[test]
    fn operations_are_read_by_the_most_specific_type_that_has_them() {
        let pass = Kind::PassThrough;
        let pipeline = Kind::Pipeline;
        let op = Operation::parse(&pass, &invoke("getName", json!({}))).unwrap();
        assert!(matches!(op, Operation::Object(ObjectOp::GetName)));
        // A pipeline is no element: `connect` is no operation of it.
        let op = Operation::parse(&pipeline, &invoke("connect", json!({"sink": "s"}))).unwrap();
        assert!(matches!(op, Operation::Property(PropertyOp::Neither)));
        let op = Operation::parse(&pass, &invoke("connect", json!({"sink": "s"}))).unwrap();
        assert!(matches!(
            op,
            Operation::Element(ElementOp::Connect { on: true, .. })
        ));
        // WebRtcEndpoint operations are not a pass-through's.
        let op = Operation::parse(&pass, &invoke("processOffer", json!({}))).unwrap();
        assert!(matches!(op, Operation::Property(PropertyOp::Neither)));
    }

    #[test]
    fn parameters_are_checked_when_the_operation_is_read() {
        let pass = Kind::PassThrough;
        let e = Operation::parse(&pass, &invoke("getTag", json!({}))).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (-32000, "'key' parameter is required")
        );
        let e = Operation::parse(&pass, &invoke("isMediaFlowingIn", json!({}))).unwrap_err();
        assert_eq!(e.code, -32000);
        let e = Operation::parse(
            &pass,
            &invoke("isMediaFlowingIn", json!({"mediaType": "X"})),
        )
        .unwrap_err();
        assert_eq!(e.code, 40001);
        // Checked only after the sink is looked at, as Kurento does.
        let op = Operation::parse(
            &pass,
            &invoke("connect", json!({"sink": "s", "mediaType": 3})),
        )
        .unwrap();
        let Operation::Element(ElementOp::Connect { media_type, .. }) = op else {
            panic!("connect is an element operation")
        };
        assert_eq!(media_type.unwrap_err().code, 40001);
    }

    #[test]
    fn method_names_are_the_protocols() {
        assert_eq!(
            Method::parse("keepAlive"),
            Some(Method::On(ObjectMethod::KeepAlive))
        );
        assert_eq!(Method::parse("closeSession"), Some(Method::CloseSession));
        assert_eq!(Method::parse("KeepAlive"), None);
    }
}
