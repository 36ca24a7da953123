//! The OTLP resource attributes of each exported process: what identifies it (from
//! [`crate::resource`]) and what every resource carries (host, `OTEL_RESOURCE_ATTRIBUTES`).
use opentelemetry_proto::tonic::common::v1::KeyValue;

use crate::AgentError;
use crate::config::Config;
use crate::export::otlp::{int_kv, string_kv};
use crate::profile::ProcessMeta;
use crate::resource::{self, ProcessResource};

/// Attributes every resource carries: host and user-supplied ones.
pub fn common_attributes(cfg: &Config) -> Result<Vec<KeyValue>, AgentError> {
    let host = cfg.host_name.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map_or_else(|_| "unknown".into(), |h| h.trim().to_string())
    });
    let mut attrs = vec![
        string_kv("host.name", host),
        string_kv("host.arch", resource::host_arch()),
    ];
    if let Some(text) = &cfg.resource_attributes {
        let extra = resource::parse_otel_resource_attributes(text)
            .map_err(|e| AgentError::Config(format!("OTEL_RESOURCE_ATTRIBUTES: {e}")))?;
        for (k, v) in extra {
            attrs.retain(|a| a.key != k);
            attrs.push(string_kv(&k, v));
        }
    }
    Ok(attrs)
}

pub fn process_attributes(r: &ProcessResource, common: &[KeyValue]) -> Vec<KeyValue> {
    // No service.name for an undeclared container process: the collector names it from the pod
    // (see `resource::service_name`).
    let mut attrs: Vec<KeyValue> = r
        .service_name
        .iter()
        .map(|name| string_kv("service.name", name.clone()))
        .collect();
    attrs.push(int_kv("process.pid", i64::from(r.pid)));
    if let Some(name) = &r.executable_name {
        attrs.push(string_kv("process.executable.name", name.clone()));
    }
    if let Some(path) = &r.executable_path {
        attrs.push(string_kv("process.executable.path", path.clone()));
    }
    if let Some(id) = &r.container_id {
        attrs.push(string_kv("container.id", id.clone()));
    }
    if let Some(uid) = &r.pod_uid {
        attrs.push(string_kv("k8s.pod.uid", uid.clone()));
    }
    // User-supplied attributes must not override what identifies the process.
    attrs.extend(
        common
            .iter()
            .filter(|c| !attrs.iter().any(|a| a.key == c.key))
            .cloned()
            .collect::<Vec<_>>(),
    );
    attrs
}

/// The resource of a process whose attributes were not read while it lived (it exited before
/// the agent saw it): what the process table kept, named after its executable.
pub fn fallback_resource(p: &ProcessMeta) -> ProcessResource {
    ProcessResource {
        pid: p.pid.0,
        service_name: Some(p.name.clone()),
        executable_name: p
            .exe
            .as_deref()
            .and_then(|e| e.rsplit('/').next())
            .map(str::to_owned),
        executable_path: p.exe.clone(),
        container_id: None,
        pod_uid: None,
    }
}
