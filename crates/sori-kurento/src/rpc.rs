//! JSON-RPC 2.0 framing and the protocol's error codes.

use serde_json::{json, Map, Value};

/// An error answer: code, message and the symbolic `data.type`.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// JSON-RPC or Kurento error code.
    pub code: i64,
    /// Human-readable message.
    pub message: String,
    /// The symbolic name put in `data.type` (none for plain JSON-RPC errors).
    pub kind: Option<&'static str>,
}

/// `data.type` of an offer refused for its video codecs.
pub const NO_COMMON_VIDEO_CODEC: &str = "SORI_NO_COMMON_VIDEO_CODEC";

impl RpcError {
    fn new(code: i64, kind: Option<&'static str>, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            kind,
        }
    }

    pub fn parse() -> Self {
        Self::new(-32700, None, "Parse error.")
    }
    pub fn invalid_request() -> Self {
        Self::new(-32600, None, "Invalid JSON-RPC request.")
    }
    pub fn method_not_found() -> Self {
        Self::new(-32601, None, "Method not found.")
    }
    pub fn params_required() -> Self {
        Self::new(-32602, Some("INVALID_PARAMS"), "'params' is required")
    }
    /// A required member is missing or has the wrong type (-32000).
    pub fn member(message: impl Into<String>) -> Self {
        Self::new(-32000, None, message)
    }
    pub fn marshall(message: impl Into<String>) -> Self {
        Self::new(40001, Some("MARSHALL_ERROR"), message)
    }
    pub fn unexpected(message: impl Into<String>) -> Self {
        Self::new(40003, Some("UNEXPECTED_ERROR"), message)
    }
    pub fn connect(message: impl Into<String>) -> Self {
        Self::new(40004, Some("CONNECT_ERROR"), message)
    }
    pub fn not_implemented(message: impl Into<String>) -> Self {
        Self::new(40006, Some("NOT_IMPLEMENTED"), message)
    }
    pub fn invalid_session(message: impl Into<String>) -> Self {
        Self::new(40007, Some("INVALID_SESSION"), message)
    }
    pub fn not_enough_resources(message: impl Into<String>) -> Self {
        Self::new(40009, Some("NOT_ENOUGH_RESOURCES"), message)
    }
    pub fn malformed_transaction(message: impl Into<String>) -> Self {
        Self::new(40008, Some("MALFORMED_TRANSACTION"), message)
    }
    pub fn object_not_found(id: &str) -> Self {
        Self::new(
            40101,
            Some("MEDIA_OBJECT_NOT_FOUND"),
            format!("Object '{id}' not found"),
        )
    }
    pub fn event_not_supported(event: &str) -> Self {
        Self::new(
            40106,
            Some("MEDIA_OBJECT_EVENT_NOT_SUPPORTED"),
            format!("Event '{event}' not supported"),
        )
    }
    pub fn illegal_param(message: impl Into<String>) -> Self {
        Self::new(40107, Some("MEDIA_OBJECT_ILLEGAL_PARAM_ERROR"), message)
    }
    pub fn factory_not_found(ty: &str) -> Self {
        Self::new(
            40108,
            Some("MEDIA_OBJECT_NOT_AVAILABLE"),
            format!("Factory '{ty}' not found"),
        )
    }
    pub fn newref_outside_transaction(r: &str) -> Self {
        Self::new(
            40109,
            Some("MEDIA_OBJECT_NOT_FOUND_TRANSACTION_NO_COMMIT"),
            format!("Object '{r}' not found: 'newref:' is only valid inside a transaction"),
        )
    }
    /// A session asked to release an object of another session.
    pub fn not_owner(id: &str) -> Self {
        Self::new(
            40111,
            Some("MEDIA_OBJECT_OPERATION_NOT_SUPPORTED"),
            format!("Object '{id}' belongs to another session: only its session may release it"),
        )
    }
    pub fn tag_not_found(key: &str) -> Self {
        Self::new(
            40110,
            Some("MEDIA_OBJECT_TAG_KEY_NOT_FOUND"),
            format!("Tag key '{key}' not found"),
        )
    }
    pub fn sdp_parse(message: impl Into<String>) -> Self {
        Self::new(40201, Some("SDP_PARSE_ERROR"), message)
    }
    pub fn process_offer(message: impl Into<String>) -> Self {
        Self::new(40205, Some("SDP_END_POINT_PROCESS_OFFER_ERROR"), message)
    }
    /// An offer refused for its video codecs: Kurento's code, and a type of Sori's own
    /// (`SORI_NO_COMMON_VIDEO_CODEC`) so that a session server can tell it apart.
    pub fn no_common_codec(message: impl Into<String>) -> Self {
        Self::new(40205, Some(NO_COMMON_VIDEO_CODEC), message)
    }
    pub fn process_answer(message: impl Into<String>) -> Self {
        Self::new(40206, Some("SDP_END_POINT_PROCESS_ANSWER_ERROR"), message)
    }
    pub fn already_negotiated() -> Self {
        Self::new(
            40208,
            Some("SDP_END_POINT_ALREADY_NEGOTIATED"),
            "Endpoint already negotiated",
        )
    }
    pub fn not_offer_generated() -> Self {
        Self::new(
            40209,
            Some("SDP_END_POINT_NOT_OFFER_GENERATED"),
            "Offer not generated. It is not possible to process an answer.",
        )
    }
    pub fn answer_already_processed() -> Self {
        Self::new(
            40210,
            Some("SDP_END_POINT_ANSWER_ALREADY_PROCCESED"),
            "Sdp Answer already processed",
        )
    }
    pub fn generate_offer(message: impl Into<String>) -> Self {
        Self::new(40204, Some("SDP_END_POINT_GENERATE_OFFER_ERROR"), message)
    }
    pub fn unknown_operation(op: &str, n: usize) -> Self {
        Self::new(
            40008,
            Some("MALFORMED_TRANSACTION"),
            format!("Method '{op}' with {n} parameters not found"),
        )
    }

    /// The `error` member of a response.
    pub fn to_json(&self) -> Value {
        let mut e = json!({"code": self.code, "message": self.message});
        if let Some(kind) = self.kind {
            e["data"] = json!({"type": kind});
        }
        e
    }
}

/// A successful response.
pub fn response(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// An error response.
pub fn error_response(id: &Value, error: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": error.to_json()})
}

/// One parsed request (or notification, when `id` is `None`).
#[derive(Debug, Clone)]
pub struct Request {
    pub id: Option<Value>,
    pub method: String,
    pub params: Option<Map<String, Value>>,
}

/// Parses one text frame. A frame that is JSON but not a valid request gives the request's id
/// (if any could be read) with the error.
pub fn parse_request(text: &str) -> Result<Request, (Value, RpcError)> {
    let value: Value = serde_json::from_str(text).map_err(|_| (Value::Null, RpcError::parse()))?;
    request_from_value(value)
}

/// Reads a request out of a JSON value (frames and transaction operations alike).
pub fn request_from_value(value: Value) -> Result<Request, (Value, RpcError)> {
    let Value::Object(mut obj) = value else {
        return Err((Value::Null, RpcError::invalid_request()));
    };
    let id = obj.remove("id");
    let err_id = id.clone().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err((err_id, RpcError::invalid_request()));
    }
    let Some(Value::String(method)) = obj.remove("method") else {
        return Err((err_id, RpcError::invalid_request()));
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(m),
        Some(_) => return Err((err_id, RpcError::invalid_request())),
    };
    Ok(Request { id, method, params })
}

/// A required string member of `params`.
pub fn string_param<'a>(params: &'a Map<String, Value>, name: &str) -> Result<&'a str, RpcError> {
    match params.get(name) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(RpcError::member(format!(
            "'{name}' parameter should be a string"
        ))),
        None => Err(RpcError::member(format!("'{name}' parameter is required"))),
    }
}

/// An optional string member of `params`.
pub fn opt_string_param<'a>(
    params: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, RpcError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(RpcError::marshall(format!(
            "'{name}' parameter should be a string"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_that_are_not_requests_are_refused_with_their_id() {
        assert_eq!(parse_request("{").unwrap_err().1.code, -32700);
        assert_eq!(parse_request("[1,2]").unwrap_err().1.code, -32600);
        let (id, e) = parse_request(r#"{"id":7,"method":"ping"}"#).unwrap_err();
        assert_eq!((id, e.code), (json!(7), -32600));
        let (id, e) = parse_request(r#"{"jsonrpc":"2.0","id":"x","method":3}"#).unwrap_err();
        assert_eq!((id, e.code), (json!("x"), -32600));
        let r = parse_request(r#"{"jsonrpc":"2.0","method":"ping"}"#).unwrap();
        assert!(r.id.is_none() && r.params.is_none());
    }

    #[test]
    fn errors_carry_their_symbolic_type() {
        let e = RpcError::object_not_found("x").to_json();
        assert_eq!(e["code"], 40101);
        assert_eq!(e["data"]["type"], "MEDIA_OBJECT_NOT_FOUND");
        assert!(RpcError::parse().to_json().get("data").is_none());
    }
}
