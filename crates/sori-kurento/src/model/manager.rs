//! The `ServerManager`: what the server is, its pipelines, its load.

use std::time::Instant;

use serde_json::{json, Value};

use super::registry::Kind;
pub(super) use super::request::ManagerOp;
use super::Kms;
use crate::rpc::RpcError;

/// The `ServerManager`'s object id.
pub(super) const MANAGER: &str = "manager_ServerManager";
/// The Kurento version Sori answers as.
const VERSION: &str = "7.3.0";

impl Kms {
    pub(super) fn invoke_manager(&self, session: &str, op: ManagerOp) -> Result<Value, RpcError> {
        let v = match op {
            ManagerOp::GetInfo => {
                let module = |name: &str, factories: &[&str]| {
                    json!({"__module__":"kurento","__type__":"ModuleInfo","name":name,
                           "version":VERSION,"generationTime":"sori","factories":factories})
                };
                json!({"__module__":"kurento","__type__":"ServerInfo","version":VERSION,
                       "type":"KMS","capabilities":["transactions"],
                       "modules":[module("core", &["MediaPipeline","PassThrough"]),
                                  module("elements", &["WebRtcEndpoint","RecorderEndpoint"]),
                                  module("filters", &[])]})
            }
            ManagerOp::GetPipelines => json!(self
                .objects
                .iter()
                .filter(|(_, o)| matches!(o.kind, Kind::Pipeline))
                .map(|(k, _)| k.clone())
                .collect::<Vec<_>>()),
            // Only the caller's own: a session id is all it takes to act as that session (a
            // reconnecting client names its old one), so other sessions' ids are not handed out.
            ManagerOp::GetSessions => json!([session]),
            ManagerOp::GetUsedCpu => json!(used_cpu_percent(self.started)),
            ManagerOp::GetUsedMemory => json!(used_memory_kib()),
            ManagerOp::GetCpuCount => json!(std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)),
            ManagerOp::GetMetadata => json!(""),
            ManagerOp::GetName => json!(MANAGER),
            ManagerOp::GetKmd => {
                return Err(RpcError::not_implemented(
                    "module descriptors are not served by Sori",
                ))
            }
        };
        Ok(super::value(v))
    }
}

/// Process CPU use since start, in percent of one core.
fn used_cpu_percent(started: Instant) -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|u| u.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    let elapsed = started.elapsed().as_secs_f64().max(0.001);
    ticks / 100.0 / elapsed * 100.0
}

/// Resident memory of the process in KiB.
fn used_memory_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
