//! Continuous mode end to end: the real agent, real workloads, and an independent OTLP receiver
//! built on the official Python `opentelemetry-proto` package.
mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::otlp::*;
use common::*;

/// A cgroup the test makes, shaped like kubelet's with the cgroupfs driver
/// (`/kubepods/besteffort/pod<uid>/<64 hex id>`), holding a workload.
struct FakeContainer {
    dir: std::path::PathBuf,
    id: String,
    pod_uid: String,
}

impl FakeContainer {
    fn new() -> FakeContainer {
        let id: String = (0..64)
            .map(|i| b"0123456789abcdef"[(i * 7 + std::process::id() as usize) % 16] as char)
            .collect();
        // cgroup v2 when it is the only hierarchy, else the v1 pids controller.
        let root = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            "/sys/fs/cgroup"
        } else {
            "/sys/fs/cgroup/pids"
        };
        let pod_uid = format!("5c5b1e3e-2a3c-4d56-8f3a-{:012x}", std::process::id());
        let dir = std::path::Path::new(root)
            .join("kubepods/besteffort")
            .join(format!("pod{pod_uid}"))
            .join(&id);
        std::fs::create_dir_all(&dir).expect("creating a cgroup (needs root)");
        FakeContainer { dir, id, pod_uid }
    }

    fn adopt(&self, pid: u32) {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
            .expect("moving the workload into the cgroup");
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        // Only empty cgroups can be removed; the workload is killed before this runs.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // The pod's, then the QoS class's and kubepods' own (each only once empty).
        for parent in self.dir.ancestors().skip(1).take(3) {
            let _ = std::fs::remove_dir(parent);
        }
    }
}

struct Agent {
    child: Child,
    metrics_port: u16,
}

impl Agent {
    fn start(args: &[&str]) -> Agent {
        let metrics_port = free_port();
        let child = Command::new(agent_binary())
            .args(args)
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .env("PROFILER_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let agent = Agent {
            child,
            metrics_port,
        };
        wait_for(Duration::from_secs(20), "the metrics server", || {
            std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_ok()
        });
        agent
    }

    fn metrics(&self) -> String {
        let (status, body) = http_get(self.metrics_port, "/metrics");
        assert_eq!(status, 200);
        body
    }

    /// SIGTERM, then the exit status and output.
    fn terminate(self) -> std::process::Output {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let out = self.child.wait_with_output().unwrap();
        eprintln!(
            "agent: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}

/// While exports fail, the kernel keeps counting samples (the count rises by a second's worth).
fn sampling_goes_on(agent: &Agent) {
    let counted = || {
        metric(
            &agent.metrics(),
            "kalypso_bpf_events_total{event=\"counted\"}",
        )
    };
    let before = counted();
    wait_for(
        Duration::from_secs(20),
        "samples counted while the collector is away",
        || counted() >= before + 50.0,
    );
}

#[test]
fn node_wide_profiles_reach_an_independent_receiver_intact() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let receiver = Receiver::start(0, &dir.path().join("requests.jsonl"), &[]);
    let container = FakeContainer::new();
    let binary = build_c("calltree");
    let w = Workload::start(&binary, &[]);
    container.adopt(w.pid());
    // Two host processes: one names itself as the OTel SDKs read it, one does not.
    let declared = Workload::start_with_env(
        &binary,
        &[],
        &[(
            "OTEL_RESOURCE_ATTRIBUTES",
            "team=a,service.name=checkout%20api",
        )],
    );
    // The plain one has two named threads, each busy 30% of the time (light on 2 cores).
    let threads = build_c("threads");
    let plain = Workload::start(&threads, &["0", "30"]);
    let agent = Agent::start(&strs(&otlp_export_args(&receiver.endpoint(), "2s")));
    wait_for(
        Duration::from_secs(30),
        "two exports with the workload",
        || {
            receiver
                .requests()
                .iter()
                .filter(|r| !stacks_of(std::slice::from_ref(r), w.pid()).is_empty())
                .count()
                >= 2
        },
    );
    let agent_pid = agent.child.id();
    let out = agent.terminate();
    assert!(out.status.success());
    let workload_pid = w.pid();
    let (declared_pid, plain_pid) = (declared.pid(), plain.pid());
    drop((w, declared, plain));

    let requests = receiver.requests();
    check_invariants(&receiver.out);
    // What Pyroscope would make of it after the chart's collector pipeline: nothing rejected.
    check_pyroscope_rules(&receiver.out);
    keep_requests(&receiver.out);
    // Resource attributes of the workload, by semantic conventions.
    let all = resources(&requests);
    // By pid: the other tests' agents and workloads run beside this one, the same binary too.
    let workload = all
        .iter()
        .find(|r| attr(r, "process.pid") == Some(workload_pid.to_string()))
        .expect("a resource for the workload");
    assert_eq!(
        attr(workload, "process.executable.path").as_deref(),
        binary.to_str()
    );
    // In a container and unnamed: the collector names it from its pod, where it is absent.
    assert_eq!(attr(workload, "service.name"), None);
    assert_eq!(
        attr(workload, "k8s.pod.uid").as_deref(),
        Some(container.pod_uid.as_str())
    );
    let host = |pid: u32| {
        all.iter()
            .find(|r| attr(r, "process.pid") == Some(pid.to_string()))
            .unwrap_or_else(|| panic!("a resource for host process {pid}"))
    };
    assert_eq!(
        attr(host(declared_pid), "service.name").as_deref(),
        Some("checkout api")
    );
    assert_eq!(
        attr(host(plain_pid), "service.name").as_deref(),
        Some("threads")
    );
    every_sample_names_its_thread(&requests, plain_pid);
    for pid in [declared_pid, plain_pid] {
        assert_eq!(attr(host(pid), "container.id"), None);
        assert_eq!(attr(host(pid), "k8s.pod.uid"), None);
    }
    assert_eq!(
        attr(workload, "process.executable.name").as_deref(),
        Some("calltree")
    );
    assert_eq!(
        attr(workload, "container.id").as_deref(),
        Some(container.id.as_str())
    );
    assert_eq!(
        attr(workload, "host.arch").as_deref(),
        Some(if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "amd64"
        })
    );
    assert!(attr(workload, "host.name").is_some_and(|h| !h.is_empty()));
    // The agent never profiles itself.
    assert!(
        all.iter()
            .all(|r| attr(r, "process.pid") != Some(agent_pid.to_string()))
    );

    // The call tree, leaf first, with the expected shares.
    let pid: u32 = attr(workload, "process.pid").unwrap().parse().unwrap();
    let stacks = stacks_of(&requests, pid);
    let count = |path: &[&str]| -> u64 {
        stacks
            .iter()
            .filter(|(s, _)| s.windows(path.len()).any(|w| w == path))
            .map(|(_, c)| c)
            .sum()
    };
    let a = count(&["work", "hot_a", "outer", "main"]);
    let b = count(&["work", "hot_b", "outer", "main"]);
    assert!(a + b > 150, "{a} + {b} samples of the call tree");
    let share = a as f64 / (a + b) as f64;
    assert!((0.68..=0.82).contains(&share), "hot_a share {share:.3}");

    // Profile fields, and a build id on the workload's mapping.
    let req = requests
        .iter()
        .find(|r| !stacks_of(std::slice::from_ref(r), pid).is_empty())
        .unwrap();
    let d = &req["dictionary"];
    let st = |i: &serde_json::Value| {
        d["string_table"][i.as_u64().unwrap_or(0) as usize]
            .as_str()
            .unwrap()
            .to_string()
    };
    let rp = req["resource_profiles"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rp| attr(&rp["resource"], "process.pid") == Some(pid.to_string()))
        .unwrap();
    let p = &rp["scope_profiles"][0]["profiles"][0];
    assert_eq!(
        (
            st(&p["sample_type"]["type_strindex"]),
            st(&p["sample_type"]["unit_strindex"])
        ),
        ("samples".into(), "count".into())
    );
    assert_eq!(
        (
            st(&p["period_type"]["type_strindex"]),
            st(&p["period_type"]["unit_strindex"])
        ),
        ("cpu".into(), "nanoseconds".into())
    );
    assert_eq!(p["period"].as_str(), Some("10101010"));
    assert!(
        p["time_unix_nano"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 1_600_000_000_000_000_000
    );
    assert!(p["duration_nano"].as_str().unwrap().parse::<u64>().unwrap() > 1_000_000_000);
    let mapping = d["mapping_table"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| st(&m["filename_strindex"]) == binary.to_str().unwrap())
        .expect("a mapping for the workload binary");
    let build_id_attr =
        &d["attribute_table"][mapping["attribute_indices"][0].as_u64().unwrap() as usize];
    assert_eq!(
        st(&build_id_attr["key_strindex"]),
        "process.executable.build_id.gnu"
    );
    assert!(
        build_id_attr["value"]["string_value"]
            .as_str()
            .unwrap()
            .len()
            >= 16
    );
}

#[test]
fn collector_down_at_start_then_up_delivers_later_data_and_counts_failures() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let port = free_port();
    let w = Workload::start(&build_c("calltree"), &[]);
    let agent = Agent::start(&strs(&otlp_export_args(
        &format!("http://127.0.0.1:{port}"),
        "1s",
    )));
    wait_for(Duration::from_secs(30), "failed exports", || {
        metric(
            &agent.metrics(),
            "kalypso_export_requests_total{result=\"failure\"}",
        ) >= 2.0
    });
    sampling_goes_on(&agent);
    let receiver = Receiver::start(port, &dir.path().join("requests.jsonl"), &[]);
    wait_for(Duration::from_secs(60), "data after recovery", || {
        !stacks_of(&receiver.requests(), w.pid()).is_empty()
    });
    let m = agent.metrics();
    assert!(
        metric(&m, "kalypso_export_requests_total{result=\"success\"}") >= 1.0,
        "{m}"
    );
    assert!(agent.terminate().status.success());
    check_invariants(&receiver.out);
}

#[test]
fn collector_flapping_loses_only_what_the_queue_bound_drops_and_counts_it() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let out = dir.path().join("requests.jsonl");
    let mut receiver = Receiver::start(0, &out, &[]);
    let port = receiver.port;
    let w = Workload::start(&build_c("calltree"), &[]);
    let queue_bound = 30_000;
    let mut args = otlp_export_args(&receiver.endpoint(), "1s");
    args.extend(["--export-queue-bytes".into(), queue_bound.to_string()]);
    let agent = Agent::start(&strs(&args));
    wait_for(Duration::from_secs(30), "first data", || {
        !stacks_of(&receiver.requests(), w.pid()).is_empty()
    });
    // Down long enough to overflow the small queue.
    receiver.stop();
    wait_for(Duration::from_secs(60), "queue overflow", || {
        metric(
            &agent.metrics(),
            "kalypso_samples_dropped_total{reason=\"queue_full\"}",
        ) > 0.0
    });
    let m = agent.metrics();
    assert!(
        metric(&m, "kalypso_export_queue_bytes") <= queue_bound as f64,
        "{m}"
    );
    assert!(
        metric(&m, "kalypso_export_batches_dropped_total") >= 1.0,
        "{m}"
    );
    // Back up on the same port: new data arrives without restarting the agent.
    let before = receiver.requests().len();
    let receiver = Receiver::start(port, &out, &[]);
    wait_for(Duration::from_secs(60), "data after the restart", || {
        receiver.requests().len() > before
            && !stacks_of(&receiver.requests()[before..], w.pid()).is_empty()
    });
    assert!(agent.terminate().status.success());
}

#[test]
fn sigterm_flushes_samples_of_the_last_interval() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let receiver = Receiver::start(0, &dir.path().join("requests.jsonl"), &[]);
    let w = Workload::start(&build_c("calltree"), &[]);
    // An interval far longer than the run: only the shutdown flush can deliver anything.
    let agent = Agent::start(&strs(&otlp_export_args(&receiver.endpoint(), "10m")));
    std::thread::sleep(Duration::from_secs(4));
    assert!(receiver.requests().is_empty());
    let out = agent.terminate();
    assert!(out.status.success());
    // Everything the agent collected reached the receiver: its own counts equal what arrived.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let (collected, sent, _) = daemon_summary(&stderr);
    assert_eq!(sent, collected, "{stderr}");
    let received: u64 = all_sample_counts(&receiver.requests()).sum();
    assert_eq!(received, sent, "samples lost in the shutdown flush");
    let workload: u64 = stacks_of(&receiver.requests(), w.pid())
        .iter()
        .map(|(_, c)| c)
        .sum();
    assert!(
        workload > 100,
        "only {workload} samples of a ~4 s busy workload reached the receiver"
    );
}

/// `thread.name` of every sample of `pid`, with the sample's leaf function.
fn threads_and_leaves(
    requests: &[serde_json::Value],
    pid: u32,
) -> Vec<(Option<String>, String, u64)> {
    let mut out = Vec::new();
    for req in requests {
        let d = &req["dictionary"];
        let index = |v: &serde_json::Value| v.as_u64().unwrap_or(0) as usize;
        let string =
            |v: &serde_json::Value| d["string_table"][index(v)].as_str().unwrap().to_owned();
        for rp in req["resource_profiles"].as_array().unwrap() {
            if attr(&rp["resource"], "process.pid") != Some(pid.to_string()) {
                continue;
            }
            for p in rp["scope_profiles"][0]["profiles"].as_array().unwrap() {
                for sample in p["samples"].as_array().unwrap() {
                    let thread = sample["attribute_indices"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|i| &d["attribute_table"][index(i)])
                        .find(|a| string(&a["key_strindex"]) == "thread.name")
                        .map(|a| a["value"]["string_value"].as_str().unwrap().to_owned());
                    let stack = &d["stack_table"][index(&sample["stack_index"])];
                    let leaf = stack["location_indices"][0].clone();
                    let location = &d["location_table"][index(&leaf)];
                    let function = location["lines"]
                        .as_array()
                        .and_then(|lines| lines.first())
                        .map(|line| {
                            string(&d["function_table"][index(&line["function_index"])]["name_strindex"])
                        })
                        .unwrap_or_default();
                    let count = sample["values"][0].as_str().unwrap().parse().unwrap();
                    out.push((thread, function, count));
                }
            }
        }
    }
    out
}

/// Each thread's samples carry its name (`thread.name`), and only its own leaf function.
fn every_sample_names_its_thread(requests: &[serde_json::Value], pid: u32) {
    let samples = threads_and_leaves(requests, pid);
    let count = |thread: &str, leaf: &str| -> u64 {
        samples
            .iter()
            .filter(|(t, l, _)| t.as_deref() == Some(thread) && l == leaf)
            .map(|(_, _, c)| c)
            .sum()
    };
    let total: u64 = samples.iter().map(|(_, _, c)| c).sum();
    let (a, b) = (count("spin-a", "spin_a"), count("spin-b", "spin_b"));
    assert!(total >= 50, "only {total} samples of the threads workload");
    // Each thread's samples are its own: spin_a only on spin-a, spin_b only on spin-b.
    assert_eq!(count("spin-a", "spin_b") + count("spin-b", "spin_a"), 0);
    assert!(
        a + b >= total * 90 / 100,
        "{a} + {b} of {total} samples on the named threads: {samples:?}"
    );
    assert!(a > total / 4 && b > total / 4, "{a} / {b} of {total}");
    assert!(
        samples.iter().all(|(t, _, _)| t.is_some()),
        "a sample without a thread name"
    );
}

#[test]
fn headers_reach_the_collector() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let receiver = Receiver::start(
        0,
        &dir.path().join("r.jsonl"),
        &["--require-header", "x-scope-orgid=tenant-a"],
    );
    let w = Workload::start(&build_c("calltree"), &[]);
    let mut args = otlp_export_args(&receiver.endpoint(), "1s");
    args.extend(["--otlp-header".into(), "X-Scope-OrgID=tenant-a".into()]);
    let agent = Agent::start(&strs(&args));
    wait_for(Duration::from_secs(30), "accepted data", || {
        !stacks_of(&receiver.requests(), w.pid()).is_empty()
    });
    assert_eq!(
        metric(
            &agent.metrics(),
            "kalypso_export_requests_total{result=\"rejected\"}"
        ),
        0.0
    );
    assert!(agent.terminate().status.success());
}

#[test]
fn stdout_exporter_prints_one_json_request_per_line() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("calltree"), &[]);
    let agent = Agent::start(&[
        "--pid",
        &w.pid().to_string(),
        "--exporter",
        "stdout",
        "--export-interval",
        "1s",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    let out = agent.terminate();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(lines.len() >= 2, "{text}");
    for req in &lines {
        let rps = req["resourceProfiles"].as_array().unwrap();
        assert_eq!(rps.len(), 1, "--pid exports one process");
        assert!(
            req["dictionary"]["stringTable"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s == "hot_a")
        );
    }
}

#[test]
fn metrics_and_healthz_are_served() {
    if !require_root() {
        return;
    }
    let agent = Agent::start(&["--exporter", "none", "--export-interval", "1s"]);
    std::thread::sleep(Duration::from_secs(3));
    let (status, body) = http_get(agent.metrics_port, "/healthz");
    assert_eq!((status, body.trim()), (200, "ok"));
    let m = agent.metrics();
    for series in [
        "kalypso_bpf_events_total{event=\"ticks\"}",
        "kalypso_bpf_events_total{event=\"user_stack_collision\"}",
        "kalypso_bpf_events_total{event=\"count_map_full\"}",
        "kalypso_processes_tracked",
        "kalypso_export_queue_bytes",
        "kalypso_symbolizer_lookups_total{result=\"miss\"}",
    ] {
        assert!(
            m.lines().any(|l| l.starts_with(series)),
            "{series} missing from:\n{m}"
        );
    }
    assert!(metric(&m, "kalypso_bpf_events_total{event=\"ticks\"}") > 0.0);
    assert!(agent.terminate().status.success());
}

#[test]
fn an_unreachable_collector_name_does_not_stop_sampling() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("calltree"), &[]);
    let agent = Agent::start(&strs(&otlp_export_args(
        "http://collector.invalid:4317",
        "1s",
    )));
    wait_for(Duration::from_secs(30), "failed exports", || {
        metric(
            &agent.metrics(),
            "kalypso_export_requests_total{result=\"failure\"}",
        ) >= 1.0
    });
    assert_eq!(http_get(agent.metrics_port, "/healthz").0, 200);
    sampling_goes_on(&agent);
    drop(w);
    assert!(agent.terminate().status.success());
}

fn assert_config_error(args: &[&str], needle: &str) {
    let out = Command::new(agent_binary()).args(args).output().unwrap();
    assert_one_line_error(&out, needle);
}

#[test]
fn bad_export_settings_are_one_clear_line() {
    assert_config_error(
        &["--exporter", "otlp", "--otlp-endpoint", "ftp://x:1"],
        "invalid OTLP endpoint `ftp://x:1`",
    );
    assert_config_error(
        &["--exporter", "otlp", "--otlp-endpoint", "http://"],
        "invalid OTLP endpoint",
    );
    assert_config_error(
        &[
            "--exporter",
            "otlp",
            "--otlp-endpoint",
            "https://c:4317",
            "--otlp-ca-file",
            "/nonexistent/ca.pem",
        ],
        "cannot read the OTLP CA certificate /nonexistent/ca.pem",
    );
    assert_config_error(
        &["--exporter", "otlp", "--otlp-header", "bad key=v"],
        "invalid OTLP header",
    );
}

#[test]
fn short_lived_processes_still_symbolize() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let receiver = Receiver::start(0, &dir.path().join("r.jsonl"), &[]);
    let binary = build_c("calltree");
    let mut args = otlp_export_args(&receiver.endpoint(), "2s");
    args.extend(["--include-comm".into(), "^calltree$".into()]);
    let agent = Agent::start(&strs(&args));
    // Processes that each live ~150 ms: far shorter than one 1 s drain.
    let mut pids = Vec::new();
    for _ in 0..25 {
        let mut child = Command::new(&binary)
            .arg("0.15")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        pids.push(child.id());
        child.wait().unwrap();
    }
    std::thread::sleep(Duration::from_secs(1));
    assert!(agent.terminate().status.success());
    let requests = receiver.requests();
    let (mut symbolized, mut total) = (0, 0);
    for pid in &pids {
        for (stack, count) in stacks_of(&requests, *pid) {
            total += count;
            if stack.windows(3).any(|w| {
                w == ["outer", "main", "__libc_start_call_main"] || w[..2] == ["outer", "main"]
            }) {
                symbolized += count;
            }
        }
    }
    eprintln!("short-lived processes: {symbolized} of {total} samples symbolized");
    assert!(
        total > 100,
        "only {total} samples of the short-lived processes"
    );
    assert!(
        symbolized as f64 >= 0.9 * total as f64,
        "{symbolized} of {total} samples symbolized"
    );
    assert!(requests.iter().all(|r| {
        resources(std::slice::from_ref(r))
            .iter()
            .all(|res| attr(res, "process.executable.name").as_deref() == Some("calltree"))
    }));
}

/// Waits for a child to exit on its own; kills it and fails after `limit` (a hang).
fn wait_or_kill(mut child: Child, limit: Duration, what: &str) -> std::process::Output {
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what}: still running after {limit:?}, killed\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = child.wait_with_output().unwrap();
    eprintln!(
        "agent: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn duration_ends_a_continuous_export_and_flushes_the_last_window() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("calltree"), &[]);
    let child = Command::new(agent_binary())
        .args(["--pid", &w.pid().to_string(), "--duration", "3s"])
        .args([
            "--exporter",
            "stdout",
            "--export-interval",
            "60s",
            "--summary",
            "json",
        ])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_or_kill(
        child,
        Duration::from_secs(30),
        "--duration 3s --exporter stdout",
    );
    assert_clean_exit(&out);
    // The one window (the interval is longer than the run) is exported at the end.
    let text = String::from_utf8(out.stdout.clone()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert!(!lines.is_empty(), "nothing exported:\n{}", stderr_of(&out));
    let (samples, sent, _) = daemon_summary(&stderr_of(&out));
    assert!(samples > 0 && sent == samples, "{}", stderr_of(&out));
}

/// `… --exporter stdout | head -c 100`: once the reader is gone the agent says so once and exits
/// non-zero, rather than retrying a closed pipe forever.
#[test]
fn a_closed_stdout_ends_the_agent_with_one_error_line() {
    if !require_root() {
        return;
    }
    use std::io::Read;
    let w = Workload::start(&build_c("calltree"), &[]);
    let mut child = Command::new(agent_binary())
        .args(["--pid", &w.pid().to_string()])
        .args(["--exporter", "stdout", "--export-interval", "1s"])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // What `head -c 100` does: read 100 bytes, close the pipe.
    let mut first = [0u8; 100];
    child.stdout.take().unwrap().read_exact(&mut first).unwrap();
    let out = wait_or_kill(child, Duration::from_secs(30), "a closed stdout");
    let stderr = stderr_of(&out);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        !stderr.contains("will retry"),
        "retried a closed pipe:\n{stderr}"
    );
    let said: Vec<&str> = stderr
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("broken pipe"))
        .collect();
    assert_eq!(said.len(), 1, "said once:\n{stderr}");
    assert!(said[0].starts_with("error: "), "{stderr}");
}
