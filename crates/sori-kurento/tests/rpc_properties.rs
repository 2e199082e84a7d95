//! Properties of the JSON-RPC frame parser the control API reads every frame with: it never
//! panics, refuses what is not a request with the JSON-RPC codes (and the request's id when it
//! has one), and reads a well-formed request back as it was built.
//!
//! Bounded runs; `SORI_PROPTEST_CASES=100000 cargo test -p sori-kurento --test rpc_properties`
//! runs longer.

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use sori_kurento::rpc::parse_request;
use sori_testkit::{mutate, prop, Rng};

/// Requests of the kinds a Kurento client sends.
const VALID: [&str; 4] = [
    r#"{"jsonrpc":"2.0","id":1,"method":"ping","params":{"interval":5000}}"#,
    r#"{"jsonrpc":"2.0","id":"a","method":"create","params":{"type":"MediaPipeline","properties":{}}}"#,
    r#"{"jsonrpc":"2.0","id":3,"method":"transaction","params":{"operations":[{"jsonrpc":"2.0","id":0,"method":"describe","params":{"object":"p"}}]}}"#,
    r#"{"jsonrpc":"2.0","method":"onEvent","params":{"value":{"type":"x"}}}"#,
];

/// What every answer of the parser satisfies.
fn check(text: &str) -> Result<(), TestCaseError> {
    let json: Option<Value> = serde_json::from_str(text).ok();
    match parse_request(text) {
        Ok(r) => {
            let obj = json.as_ref().and_then(Value::as_object);
            prop_assert!(obj.is_some(), "a request is a JSON object: {text:?}");
            let obj = obj.unwrap();
            prop_assert_eq!(obj.get("jsonrpc"), Some(&json!("2.0")));
            prop_assert_eq!(obj.get("method"), Some(&json!(r.method)));
            prop_assert_eq!(obj.get("id"), r.id.as_ref());
        }
        Err((id, e)) => {
            let Some(value) = json else {
                prop_assert_eq!(e.code, -32700);
                prop_assert_eq!(id, Value::Null);
                return Ok(());
            };
            prop_assert_eq!(e.code, -32600);
            let expected_id = value.get("id").cloned().unwrap_or(Value::Null);
            prop_assert_eq!(id, expected_id);
            // The error says what is wrong in a line, whatever the frame held.
            prop_assert!(e.to_json().to_string().len() < 300);
        }
    }
    Ok(())
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ]
}

fn params() -> impl Strategy<Value = Map<String, Value>> {
    proptest::collection::btree_map(any::<String>(), json_leaf(), 0..5)
        .prop_map(|m| m.into_iter().collect())
}

proptest! {
    #![proptest_config(prop::config(3000))]

    #[test]
    fn arbitrary_frames_are_answered_cleanly(text in any::<String>()) {
        check(&text)?;
    }

    #[test]
    fn json_that_is_almost_a_request_is_refused_with_its_id(
        id in json_leaf(),
        jsonrpc in prop_oneof![Just(json!("2.0")), Just(json!("1.0")), json_leaf()],
        method in json_leaf(),
        params in prop_oneof![json_leaf(), params().prop_map(Value::Object)],
    ) {
        let frame = json!({"jsonrpc": jsonrpc, "id": id, "method": method, "params": params});
        check(&frame.to_string())?;
    }

    #[test]
    fn mutated_requests_are_answered_cleanly(which in 0..VALID.len(), seed in any::<u64>()) {
        let mut rng = Rng::new(seed);
        let mut bytes = VALID[which].as_bytes().to_vec();
        for _ in 0..1 + rng.below(3) {
            bytes = mutate::bytes(&bytes, &mut rng);
        }
        check(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn a_built_request_reads_back_as_built(
        id in proptest::option::of(prop_oneof![
            any::<i64>().prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ]),
        method in any::<String>(),
        params in proptest::option::of(params()),
    ) {
        let mut frame = json!({"jsonrpc": "2.0", "method": method});
        if let Some(id) = &id {
            frame["id"] = id.clone();
        }
        if let Some(p) = &params {
            frame["params"] = Value::Object(p.clone());
        }
        let r = parse_request(&frame.to_string()).unwrap();
        prop_assert_eq!(r.id, id);
        prop_assert_eq!(r.method, method);
        prop_assert_eq!(r.params, params);
    }
}
