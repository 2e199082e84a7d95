//! Access tokens: API keys, signed join tokens in LiveKit's claim layout, and the permissions
//! they grant.
//!
//! A token is a JWT signed HS256 with the secret of an API key: `iss` names the key, `sub` is
//! the participant's identity, `name` and `metadata` describe it, `nbf`/`exp` bound it, and the
//! `video` grant says what it may do (`room`, `roomJoin`, `canPublish`, `canPublishSources`,
//! `canSubscribe`, `canPublishData`, `roomAdmin`, `roomRecord`, `roomList`, `roomCreate`). The
//! libraries applications already use for LiveKit (npm `livekit-server-sdk`'s `AccessToken`,
//! its Python and Go twins) mint them unchanged. As in LiveKit, an absent `canPublish`,
//! `canSubscribe` or `canPublishData` means allowed, an absent or empty `canPublishSources` means
//! every source, and the administrative grants are off unless set.
//!
//! Verification is a pure function of the token, the keys and the current time, so every path
//! is tested without a clock.

use std::collections::HashMap;
use std::fmt;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Clock difference tolerated on `nbf` and `exp`, in seconds.
pub const LEEWAY_SECS: u64 = 10;

/// The API keys a server accepts: key → secret.
#[derive(Clone, Default)]
pub struct Keys(HashMap<String, String>);

impl fmt::Debug for Keys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Secrets never reach a log.
        f.debug_list().entries(self.0.keys()).finish()
    }
}

impl Keys {
    /// Keys from `(key, secret)` pairs.
    pub fn new(pairs: impl IntoIterator<Item = (String, String)>) -> Self {
        Self(pairs.into_iter().collect())
    }

    /// Whether no key is configured (anonymous mode).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys' names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.0.keys().cloned().collect();
        names.sort();
        names
    }

    /// The secret of `key`.
    pub fn secret(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
}

/// The `video` grant of a token, field for field as LiveKit spells it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VideoGrant {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_join: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_admin: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_record: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_list: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub room_create: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish_sources: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_subscribe: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub can_publish_data: Option<bool>,
}

/// The claims of an access token. Claims Sori does not use (LiveKit's `kind`, `attributes`,
/// `roomConfig`, …) are accepted and ignored.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    /// The API key that signed it.
    pub iss: String,
    /// The participant's identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub video: Option<VideoGrant>,
}

/// Why a token was not accepted. Each is answered with `error` `unauthorized` and this text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("this server needs an access token")]
    Missing,
    #[error("the access token is not a well-formed JWT: {0}")]
    Malformed(String),
    #[error("the access token is signed with an unknown API key")]
    UnknownKey,
    #[error("the access token's signature does not verify")]
    BadSignature,
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid yet")]
    NotYetValid,
    #[error("the access token has no expiry (exp)")]
    NoExpiry,
    #[error("the access token names no identity (sub)")]
    NoIdentity,
}

/// Media a participant may publish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sources {
    pub camera: bool,
    pub microphone: bool,
    pub screen_share: bool,
    pub screen_share_audio: bool,
}

impl Sources {
    /// Everything.
    pub const ALL: Sources = Sources {
        camera: true,
        microphone: true,
        screen_share: true,
        screen_share_audio: true,
    };
    /// Nothing.
    pub const NONE: Sources = Sources {
        camera: false,
        microphone: false,
        screen_share: false,
        screen_share_audio: false,
    };

    /// Whether any video may be published (camera or screen share).
    pub fn video(&self) -> bool {
        self.camera || self.screen_share
    }

    /// Whether any audio may be published (microphone or a screen share's audio).
    pub fn audio(&self) -> bool {
        self.microphone || self.screen_share_audio
    }

    /// The names LiveKit uses, in its order.
    pub fn names(&self) -> Vec<&'static str> {
        [
            (self.camera, "camera"),
            (self.microphone, "microphone"),
            (self.screen_share, "screen_share"),
            (self.screen_share_audio, "screen_share_audio"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect()
    }
}

/// What a participant may do: from its token, or the anonymous defaults of an open server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grants {
    /// The identity the token names (`None`: anonymous).
    pub identity: Option<String>,
    /// The display name the token gives.
    pub name: Option<String>,
    /// Application data the token carries, shown to the others as it is.
    pub metadata: Option<String>,
    /// The room the token is for (`None`: any room; only anonymous grants).
    pub room: Option<String>,
    pub room_join: bool,
    pub publish: Sources,
    pub subscribe: bool,
    pub chat: bool,
    pub admin: bool,
    pub record: bool,
    pub list: bool,
    pub create: bool,
    /// Unix seconds after which the token is no longer valid.
    pub expires: Option<u64>,
}

impl Grants {
    /// What anyone may do on a server without keys: join any room, publish, receive, chat and
    /// record, but not moderate.
    pub fn anonymous() -> Self {
        Grants {
            identity: None,
            name: None,
            metadata: None,
            room: None,
            room_join: true,
            publish: Sources::ALL,
            subscribe: true,
            chat: true,
            admin: false,
            record: true,
            list: false,
            create: false,
            expires: None,
        }
    }

    fn from_claims(c: Claims) -> Self {
        let v = c.video.unwrap_or_default();
        let can_publish = v.can_publish.unwrap_or(true);
        let publish = match (&v.can_publish_sources, can_publish) {
            (_, false) => Sources::NONE,
            (Some(list), true) if !list.is_empty() => {
                let has = |s: &str| list.iter().any(|x| x.eq_ignore_ascii_case(s));
                Sources {
                    camera: has("camera"),
                    microphone: has("microphone"),
                    screen_share: has("screen_share"),
                    screen_share_audio: has("screen_share_audio"),
                }
            }
            _ => Sources::ALL,
        };
        Grants {
            identity: c.sub,
            name: c.name.filter(|n| !n.is_empty()),
            metadata: c.metadata.filter(|m| !m.is_empty()),
            room: v.room.filter(|r| !r.is_empty()),
            room_join: v.room_join.unwrap_or(false),
            publish,
            subscribe: v.can_subscribe.unwrap_or(true),
            chat: v.can_publish_data.unwrap_or(true),
            admin: v.room_admin.unwrap_or(false),
            record: v.room_record.unwrap_or(false),
            list: v.room_list.unwrap_or(false),
            create: v.room_create.unwrap_or(false),
            expires: c.exp,
        }
    }

    /// Whether these grants let their holder join `room`; `Err` says why not.
    pub fn may_join(&self, room: &str) -> Result<(), &'static str> {
        if !self.room_join {
            return Err("the access token does not grant roomJoin");
        }
        match &self.room {
            Some(r) if r != room => Err("the access token is for another room"),
            _ => Ok(()),
        }
    }

    /// Whether these grants let their holder start, stop, list and download recordings of
    /// `room` (`roomRecord` or `roomAdmin` for that room).
    pub fn may_record(&self, room: &str) -> bool {
        (self.record || self.admin) && self.room.as_deref().is_none_or(|r| r == room)
    }
}

/// Verifies `token` against `keys` at `now` (Unix seconds) and returns what it grants.
pub fn verify(keys: &Keys, token: &str, now: u64) -> Result<Grants, TokenError> {
    let claims = verified_claims(keys, token, now)?;
    if claims.sub.as_deref().is_none_or(|s| s.trim().is_empty()) {
        return Err(TokenError::NoIdentity);
    }
    Ok(Grants::from_claims(claims))
}

/// The claims of `token` once its key, signature and validity period are checked.
fn verified_claims(keys: &Keys, token: &str, now: u64) -> Result<Claims, TokenError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(TokenError::Missing);
    }
    // The key is named inside the token; its signature is checked with that key's secret
    // before anything the token says is used.
    let unverified: Claims = jsonwebtoken::dangerous::insecure_decode_claims(token)
        .map_err(|e| TokenError::Malformed(e.to_string()))?;
    let secret = keys.secret(&unverified.iss).ok_or(TokenError::UnknownKey)?;
    let key = DecodingKey::from_secret(secret.as_bytes())
        .map_err(|e| TokenError::Malformed(e.to_string()))?;
    let mut validation = Validation::new(Algorithm::HS256);
    // Time is checked below against `now`, not the library's clock.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.required_spec_claims.clear();
    let claims = jsonwebtoken::decode::<Claims>(token, &key, &validation)
        .map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature
            | jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => TokenError::BadSignature,
            _ => TokenError::Malformed(e.to_string()),
        })?
        .claims;
    let exp = claims.exp.ok_or(TokenError::NoExpiry)?;
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(TokenError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS))
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

/// As [`verify`], for a call of the server API: the token need not name an identity (the
/// server SDKs mint theirs without one).
pub fn verify_api(keys: &Keys, token: &str, now: u64) -> Result<Grants, TokenError> {
    let claims = verified_claims(keys, token, now)?;
    Ok(Grants::from_claims(claims))
}

/// Signs `claims` with `secret` (HS256): `sori token create` and tests.
pub fn sign(claims: &Claims, secret: &str) -> Result<String, String> {
    let key = EncodingKey::from_secret(secret.as_bytes()).map_err(|e| e.to_string())?;
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &key).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn keys() -> Keys {
        Keys::new([("APIkey1".into(), "secret-one-0123456789".into())])
    }

    fn claims() -> Claims {
        Claims {
            iss: "APIkey1".into(),
            sub: Some("ada".into()),
            name: Some("Ada".into()),
            nbf: Some(NOW - 5),
            exp: Some(NOW + 3600),
            video: Some(VideoGrant {
                room: Some("r1".into()),
                room_join: Some(true),
                ..VideoGrant::default()
            }),
            ..Claims::default()
        }
    }

    fn token(c: &Claims) -> String {
        sign(c, "secret-one-0123456789").unwrap()
    }

    #[test]
    fn a_good_token_grants_what_livekit_would() {
        let g = verify(&keys(), &token(&claims()), NOW).unwrap();
        assert_eq!(g.identity.as_deref(), Some("ada"));
        assert_eq!(g.name.as_deref(), Some("Ada"));
        assert_eq!(g.may_join("r1"), Ok(()));
        // Absent publish/subscribe/data grants mean allowed; the admin grants mean not.
        assert_eq!(g.publish, Sources::ALL);
        assert!(g.subscribe && g.chat);
        assert!(!g.admin && !g.record && !g.list && !g.create);
        assert!(!g.may_record("r1"));
    }

    #[test]
    fn every_refusal_has_its_reason() {
        let k = keys();
        assert_eq!(verify(&k, "", NOW), Err(TokenError::Missing));
        assert!(matches!(
            verify(&k, "not.a.jwt", NOW),
            Err(TokenError::Malformed(_))
        ));
        let mut c = claims();
        c.iss = "APIother".into();
        assert_eq!(verify(&k, &token(&c), NOW), Err(TokenError::UnknownKey));
        let wrong = sign(&claims(), "another-secret").unwrap();
        assert_eq!(verify(&k, &wrong, NOW), Err(TokenError::BadSignature));
        assert_eq!(
            verify(&k, &token(&claims()), NOW + 3600 + LEEWAY_SECS + 1),
            Err(TokenError::Expired)
        );
        assert!(verify(&k, &token(&claims()), NOW + 3600 + LEEWAY_SECS).is_ok());
        let mut c = claims();
        c.nbf = Some(NOW + 60);
        assert_eq!(verify(&k, &token(&c), NOW), Err(TokenError::NotYetValid));
        let mut c = claims();
        c.exp = None;
        assert_eq!(verify(&k, &token(&c), NOW), Err(TokenError::NoExpiry));
        let mut c = claims();
        c.sub = None;
        assert_eq!(verify(&k, &token(&c), NOW), Err(TokenError::NoIdentity));
    }

    #[test]
    fn a_token_whose_claims_were_edited_does_not_verify() {
        let t = token(&claims());
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        let mut c = claims();
        c.video.as_mut().unwrap().room_admin = Some(true);
        let forged = sign(&c, "x").unwrap();
        parts[1] = forged.split('.').nth(1).unwrap().to_string();
        assert_eq!(
            verify(&keys(), &parts.join("."), NOW),
            Err(TokenError::BadSignature)
        );
        // "alg": "none" is not HS256.
        let none = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{}.", parts[1]);
        assert!(verify(&keys(), &none, NOW).is_err());
    }

    #[test]
    fn room_and_join_grants_are_checked() {
        let g = verify(&keys(), &token(&claims()), NOW).unwrap();
        assert!(g.may_join("r2").is_err());
        let mut c = claims();
        c.video.as_mut().unwrap().room_join = None;
        let g = verify(&keys(), &token(&c), NOW).unwrap();
        assert!(g.may_join("r1").is_err());
    }

    #[test]
    fn publish_grants_narrow_the_sources() {
        let mut c = claims();
        let v = c.video.as_mut().unwrap();
        v.can_publish = Some(false);
        v.can_subscribe = Some(false);
        v.can_publish_data = Some(false);
        let g = verify(&keys(), &token(&c), NOW).unwrap();
        assert_eq!(g.publish, Sources::NONE);
        assert!(!g.subscribe && !g.chat);
        let mut c = claims();
        c.video.as_mut().unwrap().can_publish_sources = Some(vec!["microphone".into()]);
        let g = verify(&keys(), &token(&c), NOW).unwrap();
        assert!(g.publish.audio() && !g.publish.video());
        let mut c = claims();
        c.video.as_mut().unwrap().room_record = Some(true);
        assert!(verify(&keys(), &token(&c), NOW).unwrap().may_record("r1"));
    }

    #[test]
    fn livekit_claims_we_do_not_use_are_accepted() {
        // The shape livekit-server-sdk's AccessToken produces (kind, attributes, jti…).
        let payload = serde_json::json!({
            "iss": "APIkey1", "sub": "bo", "name": "Bo", "nbf": NOW - 1, "exp": NOW + 60,
            "jti": "bo", "kind": "standard", "attributes": {}, "metadata": "",
            "video": {"room": "r1", "roomJoin": true, "canPublish": true, "hidden": false,
                      "canPublishSources": ["camera", "microphone"]}
        });
        let key = EncodingKey::from_secret(b"secret-one-0123456789").unwrap();
        let t = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &payload, &key).unwrap();
        let g = verify(&keys(), &t, NOW).unwrap();
        assert!(g.publish.camera && g.publish.microphone && !g.publish.screen_share);
        assert_eq!(g.metadata, None);
    }

    #[test]
    fn mutated_tokens_never_verify_and_never_panic() {
        let good = token(&claims());
        let mut rng = sori_testkit::Rng::new(0x2545_f491_4f6c_dd1d);
        let mut verified = 0;
        for _ in 0..20_000 {
            // The bits of one draw pick the count, the places and the characters below.
            let seed = rng.next_u64();
            let mut bytes = good.as_bytes().to_vec();
            for k in 0..1 + (seed % 3) as usize {
                let at = (seed >> (8 + 8 * k)) as usize % bytes.len();
                const ALPHABET: &[u8] = b"AZaz09-_.=+/ \x00";
                bytes[at] = ALPHABET[(seed >> (40 + k)) as usize % ALPHABET.len()];
            }
            let cut = (seed >> 50) as usize % (bytes.len() + 1);
            let text = String::from_utf8_lossy(&bytes[..cut.max(bytes.len() / 2)]);
            if text == good {
                continue;
            }
            // A changed token may still decode to the same claims (base64 padding bits), but
            // never to different ones.
            if let Ok(g) = verify(&keys(), &text, NOW) {
                verified += 1;
                assert_eq!(g, verify(&keys(), &good, NOW).unwrap(), "{text}");
            }
        }
        assert!(verified < 200, "{verified} mutations verified");
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        assert!(!format!("{:?}", keys()).contains("secret"));
    }
}
