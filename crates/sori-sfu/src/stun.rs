//! Just enough STUN to route a datagram from an unknown address: the ICE ufrag a binding
//! request is addressed to. Authentication stays with the peer's ICE agent.

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xa4, 0x42];
const BINDING_REQUEST: u16 = 0x0001;
const ATTR_USERNAME: u16 = 0x0006;
const HEADER_LEN: usize = 20;

/// The local ufrag a STUN binding request is for (the part of USERNAME before the colon), or
/// `None` for anything that is not a well-formed binding request carrying a USERNAME.
pub fn binding_request_ufrag(buf: &[u8]) -> Option<&str> {
    if buf.len() < HEADER_LEN || buf[4..8] != MAGIC_COOKIE {
        return None;
    }
    let msg_type = u16::from_be_bytes([buf[0], buf[1]]);
    let body_len = u16::from_be_bytes([buf[2], buf[3]]) as usize;
    if msg_type != BINDING_REQUEST || HEADER_LEN + body_len > buf.len() {
        return None;
    }
    let body = &buf[HEADER_LEN..HEADER_LEN + body_len];
    let mut i = 0;
    while i + 4 <= body.len() {
        let attr = u16::from_be_bytes([body[i], body[i + 1]]);
        let len = u16::from_be_bytes([body[i + 2], body[i + 3]]) as usize;
        let value = body.get(i + 4..i + 4 + len)?;
        if attr == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            let (local, _remote) = username.split_once(':')?;
            return (!local.is_empty()).then_some(local);
        }
        // Attributes are padded to a multiple of four bytes.
        i += 4 + len.div_ceil(4) * 4;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn request(username: &[u8], extra_before: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        let mut push = |t: u16, v: &[u8]| {
            body.extend_from_slice(&t.to_be_bytes());
            body.extend_from_slice(&(v.len() as u16).to_be_bytes());
            body.extend_from_slice(v);
            while body.len() % 4 != 0 {
                body.push(0);
            }
        };
        for (t, v) in extra_before {
            push(*t, v);
        }
        push(ATTR_USERNAME, username);
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(body.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&body);
        m
    }

    #[test]
    fn finds_the_local_ufrag() {
        let m = request(b"srvUfrag:cli", &[(0x8029, &[1; 8]), (0x0024, &[0; 3])]);
        assert_eq!(binding_request_ufrag(&m), Some("srvUfrag"));
    }

    #[test]
    fn rejects_what_is_not_a_binding_request_with_username() {
        assert_eq!(binding_request_ufrag(&request(b"nocolon", &[])), None);
        assert_eq!(binding_request_ufrag(&request(b":x", &[])), None);
        let mut response = request(b"a:b", &[]);
        response[1] = 0x01;
        response[0] = 0x01;
        assert_eq!(binding_request_ufrag(&response), None);
        let mut bad_cookie = request(b"a:b", &[]);
        bad_cookie[5] = 0;
        assert_eq!(binding_request_ufrag(&bad_cookie), None);
        let truncated = request(b"abcdef:b", &[]);
        assert_eq!(
            binding_request_ufrag(&truncated[..truncated.len() - 4]),
            None
        );
        assert_eq!(binding_request_ufrag(&[]), None);
    }

    /// A regular attribute type other than USERNAME, with a value.
    fn other_attribute() -> impl Strategy<Value = (u16, Vec<u8>)> {
        (
            any::<u16>().prop_filter("not USERNAME", |t| *t != ATTR_USERNAME),
            proptest::collection::vec(any::<u8>(), 0..40),
        )
    }

    proptest! {
        #![proptest_config(sori_testkit::prop::config(4000))]

        #[test]
        fn arbitrary_bytes_never_panic_and_the_ufrag_lies_inside(
            buf in proptest::collection::vec(any::<u8>(), 0..200),
            binding in any::<bool>(),
        ) {
            let mut buf = buf;
            // Half the inputs pass the header checks, so the attribute walk gets exercised.
            if binding && buf.len() >= HEADER_LEN {
                buf[..2].copy_from_slice(&BINDING_REQUEST.to_be_bytes());
                buf[4..8].copy_from_slice(&MAGIC_COOKIE);
            }
            if let Some(ufrag) = binding_request_ufrag(&buf) {
                prop_assert!(!ufrag.is_empty() && !ufrag.contains(':'));
                prop_assert!(ufrag.len() + HEADER_LEN + 5 <= buf.len());
            }
        }

        #[test]
        fn a_built_request_gives_back_its_ufrag(
            local in "[^:]{1,40}",
            remote in "[^:]{0,40}",
            extra in proptest::collection::vec(other_attribute(), 0..4),
        ) {
            let username = format!("{local}:{remote}");
            let extra: Vec<(u16, &[u8])> = extra.iter().map(|(t, v)| (*t, v.as_slice())).collect();
            let m = request(username.as_bytes(), &extra);
            prop_assert_eq!(binding_request_ufrag(&m), Some(local.as_str()));
        }

        #[test]
        fn mutated_requests_never_panic(seed in any::<u64>()) {
            let base = request(b"server:client", &[(0x8029, &[1; 8])]);
            let mut rng = sori_testkit::Rng::new(seed);
            let mut m = base;
            for _ in 0..1 + rng.below(3) {
                m = sori_testkit::mutate::bytes(&m, &mut rng);
            }
            if let Some(ufrag) = binding_request_ufrag(&m) {
                prop_assert!(ufrag.len() <= m.len());
            }
        }
    }
}
