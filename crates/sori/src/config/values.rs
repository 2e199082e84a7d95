//! Typed setting values and the serde readers that parse them from the file's text: a port
//! range, a secret that never prints, durations in whole units, "empty means none".

use std::fmt;
use std::ops::RangeInclusive;
use std::str::FromStr;
use std::time::Duration;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sori_sfu::VideoCodec;

/// A range of ports written `LOW-HIGH`, e.g. `49152-65535`; never empty, never port 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRange(RangeInclusive<u16>);

impl PortRange {
    pub fn range(&self) -> RangeInclusive<u16> {
        self.0.clone()
    }
}

impl FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        s.split_once('-')
            .and_then(|(a, b)| Some(a.trim().parse::<u16>().ok()?..=b.trim().parse::<u16>().ok()?))
            .filter(|r| *r.start() > 0 && !r.is_empty())
            .map(PortRange)
            .ok_or_else(|| format!("{s:?} must be LOW-HIGH, e.g. 49152-65535"))
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.0.start(), self.0.end())
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A secret (API secret, token, shared key): its `Debug` shows `<set>`, so neither
/// `--print-config` nor a log ever shows it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<set>")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// A string setting where empty (or blank) means "none"; otherwise parsed as `T`.
pub fn optional<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    let s = String::deserialize(d)?;
    let s = s.trim();
    if s.is_empty() {
        return Ok(None);
    }
    s.parse().map(Some).map_err(D::Error::custom)
}

/// A port where 0 means "none given".
pub fn nonzero_port<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    Ok(Some(u16::deserialize(d)?).filter(|p| *p != 0))
}

/// A duration given in whole seconds (keys ending in `_secs`).
pub fn secs<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// A duration given in whole milliseconds (keys ending in `_ms`).
pub fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// A size in GiB (fractions allowed), as bytes; 0 means no limit.
pub fn gib<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let gib = f64::deserialize(d)?;
    if !gib.is_finite() || gib < 0.0 {
        return Err(D::Error::custom(format!(
            "{gib} must be a number of GiB, or 0 for no quota"
        )));
    }
    Ok((gib > 0.0).then(|| (gib * f64::from(1u32 << 30)) as u64))
}

/// A list of values parsed from strings, e.g. IP prefixes.
pub fn parsed_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr,
    T::Err: fmt::Display,
{
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(D::Error::custom))
        .collect()
}

/// IP addresses: one string, several comma-separated, or a list; empty: none.
pub fn ip_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<std::net::IpAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(str::to_string).collect(),
        OneOrMany::Many(v) => v,
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().map_err(D::Error::custom))
        .collect()
}

/// Video codec names (vp8, vp9, h264).
pub fn codecs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<VideoCodec>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|name| {
            VideoCodec::from_name(name).ok_or_else(|| {
                D::Error::custom(format!("unknown codec {name:?} (use vp8, vp9, h264)"))
            })
        })
        .collect()
}

/// A WebSocket path: starts with `/`, holds no query.
pub fn ws_path<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let s = String::deserialize(d)?;
    let path = s.trim();
    if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
        return Err(D::Error::custom(format!(
            "{path:?} must start with / and hold no query"
        )));
    }
    Ok(path.to_string())
}

/// A media node's id: letters, digits, `.`, `_` and `-` (it is part of Redis keys and of peer
/// names `<node>/<endpoint>`); empty for the default.
pub fn node_id<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let id = String::deserialize(d)?;
    if id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(serde::de::Error::custom(format!(
            "{id:?}: a node id is up to 64 letters, digits, '.', '_' or '-'"
        )));
    }
    Ok(id)
}
