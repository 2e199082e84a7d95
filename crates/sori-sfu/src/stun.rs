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

    #[test]
    fn never_panics_on_mutated_requests() {
        let base = request(b"server:client", &[(0x8029, &[1; 8])]);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut m = base.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % m.len();
                m[at] = (seed >> 32) as u8;
            }
            let cut = (seed >> 40) as usize % (m.len() + 1);
            let _ = binding_request_ufrag(&m[..cut]);
            let _ = binding_request_ufrag(&m);
        }
    }
}
