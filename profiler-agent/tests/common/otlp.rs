//! The independent OTLP receiver (Python, official generated code) and helpers to read what it got.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::workspace_root;

pub fn python() -> PathBuf {
    let p = workspace_root().join("target/test-tools/venv/bin/python");
    assert!(
        p.exists(),
        "test venv missing: run `cargo xtask setup --test-tools`"
    );
    p
}

/// A free TCP port on loopback (bound and released; good enough for tests run one at a time).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Receiver {
    pub child: Child,
    pub port: u16,
    pub out: PathBuf,
}

impl Receiver {
    /// Starts the receiver on `port` (0 = any), writing requests to `out`.
    pub fn start(port: u16, out: &Path, extra: &[&str]) -> Receiver {
        let mut child = Command::new(python())
            .arg(workspace_root().join("tests/readers/otlp_receiver.py"))
            .args(["--port", &port.to_string(), "--out"])
            .arg(out)
            .args(extra)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python runs");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("receiver did not start: {line:?}"));
        Receiver {
            child,
            port,
            out: out.to_path_buf(),
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn requests(&self) -> Vec<Value> {
        read_requests(&self.out)
    }

    pub fn stop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read_requests(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("receiver writes JSON lines"))
        .collect()
}

/// Runs the structural checker (zero values at index 0, every index in range, …) on a file.
pub fn check_invariants(path: &Path) {
    let out = Command::new(python())
        .arg(workspace_root().join("tests/readers/otlp_check.py"))
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "OTLP invariants violated:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Applies Pyroscope 2.2.1's ingest rules (label count and names, samples per profile, ingestion
/// window, required fields, attribute indices) to a file of requests, after the collector
/// pipeline of the chart's values with a simulated pod for container processes.
pub fn check_pyroscope_rules(path: &Path) {
    let root = workspace_root();
    let out = Command::new(python())
        .arg(root.join("tests/readers/pyroscope_rules.py"))
        .arg(path)
        .arg("--chart-values")
        .arg(root.join("charts/kalypso-pyroscope/values.yaml"))
        .arg("--simulate-pod")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Pyroscope would reject or drop:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// With `KALYPSO_KEEP_REQUESTS=FILE`, copies the recorded requests there (docs/deploy.md's labels
/// table is printed from such a file).
pub fn keep_requests(path: &Path) {
    if let Some(keep) = std::env::var_os("KALYPSO_KEEP_REQUESTS") {
        std::fs::copy(path, &keep).expect("copying the recorded requests");
    }
}

/// Waits until `f` holds, polling; panics with `what` after `limit`.
pub fn wait_for(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// GET on the agent's metrics server.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics server listens");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// The value of one Prometheus sample line (`name{labels} value`), 0 when absent.
pub fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0.0)
}

/// One process's profiles across requests, decoded into names: (stack leaf first, count).
pub fn stacks_of(requests: &[Value], pid: u32) -> Vec<(Vec<String>, u64)> {
    let mut out = Vec::new();
    for req in requests {
        let d = &req["dictionary"];
        let strings = d["string_table"].as_array().unwrap();
        let s = |v: &Value| {
            strings[v.as_u64().unwrap_or(0) as usize]
                .as_str()
                .unwrap()
                .to_string()
        };
        for rp in req["resource_profiles"].as_array().unwrap() {
            if attr(&rp["resource"], "process.pid").as_deref() != Some(&pid.to_string()) {
                continue;
            }
            for p in rp["scope_profiles"][0]["profiles"].as_array().unwrap() {
                for sample in p["samples"].as_array().unwrap() {
                    let stack =
                        &d["stack_table"][sample["stack_index"].as_u64().unwrap_or(0) as usize];
                    let mut names = Vec::new();
                    for li in stack["location_indices"].as_array().unwrap() {
                        let loc = &d["location_table"][li.as_u64().unwrap() as usize];
                        for line in loc["lines"].as_array().into_iter().flatten() {
                            let f = &d["function_table"]
                                [line["function_index"].as_u64().unwrap_or(0) as usize];
                            names.push(s(&f["name_strindex"]));
                        }
                    }
                    let count: u64 = sample["values"][0].as_str().unwrap().parse().unwrap();
                    out.push((names, count));
                }
            }
        }
    }
    out
}

/// A resource attribute as a string (ints come as strings from MessageToDict).
pub fn attr(resource: &Value, key: &str) -> Option<String> {
    resource["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| {
            let v = &a["value"];
            v["string_value"]
                .as_str()
                .or_else(|| v["int_value"].as_str())
                .unwrap_or_default()
                .to_string()
        })
}

/// Every resource in the requests.
pub fn resources(requests: &[Value]) -> Vec<Value> {
    resource_profiles(requests)
        .map(|rp| rp["resource"].clone())
        .collect()
}

/// The count of every sample in the requests, whatever its process.
pub fn all_sample_counts(requests: &[Value]) -> impl Iterator<Item = u64> + '_ {
    resource_profiles(requests)
        .flat_map(|rp| {
            rp["scope_profiles"][0]["profiles"][0]["samples"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .map(|s| s["values"][0].as_str().unwrap().parse::<u64>().unwrap())
}

fn resource_profiles(requests: &[Value]) -> impl Iterator<Item = Value> + '_ {
    requests.iter().flat_map(|r| {
        r["resource_profiles"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    })
}

/// Flags for continuous export over OTLP to `endpoint` every `interval`.
pub fn otlp_export_args(endpoint: &str, interval: &str) -> Vec<String> {
    [
        "--exporter",
        "otlp",
        "--otlp-endpoint",
        endpoint,
        "--export-interval",
        interval,
        // The exit summary as data (`daemon_summary`).
        "--summary",
        "json",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// A kernel-side counter from the agent's `/metrics` text.
pub fn kernel_event(metrics: &str, event: &str) -> f64 {
    metric(
        metrics,
        &format!("kalypso_bpf_events_total{{event=\"{event}\"}}"),
    )
}

/// The requests the receiver got after `t`.
pub fn received_after(requests: &[Value], t: std::time::SystemTime) -> Vec<Value> {
    let t = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64;
    requests
        .iter()
        .filter(|r| r["_received_unix_nano"].as_u64().is_some_and(|n| n > t))
        .cloned()
        .collect()
}
