//! Faults and abuse, end to end: a collector that stalls, SIGTERM under load, process churn, a
//! huge binary, thousands of mappings, malformed and deleted files, missing capabilities and
//! kernel interfaces, a closed stderr and an empty profile. Through all of it the agent keeps
//! sampling, stays within a memory bound, counts what it loses, says what went wrong, and never
//! panics. (A collector that is down or flapping, and an agent with no capability at all, are
//! in `daemon.rs` and `bad_input.rs`.)
//!
//! Each test started as a pin on a bug the suite found (marked ignored until it was fixed);
//! all of them pass now.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime};

use common::otlp::*;
use common::*;

/// Bound on the agent's resident memory when it profiles one process (the debug build meets it;
/// the release build CI runs needs less).
const PID_RSS_BOUND_MIB: f64 = 150.0;

/// Bound when it profiles and symbolizes the whole machine, whatever else runs there: the
/// DaemonSet's memory limit (`charts/kalypso-profiler/values.yaml`).
const NODE_RSS_BOUND_MIB: f64 = 512.0;

/// Runs the agent in local mode to completion; returns its output and summary.
fn run_local(args: &[&str]) -> (Output, String) {
    let out = run_agent(args);
    let summary = stderr_of(&out);
    (out, summary)
}

/// A local run with `--summary json`: its output and the summary as data.
fn run_local_json(args: &[&str]) -> (Output, serde_json::Value) {
    let out = run_agent(&[args, &["--summary", "json"]].concat());
    let summary = summary_json(&stderr_of(&out));
    (out, summary)
}

fn assert_rss_within(what: &str, mib: f64, bound: f64) {
    eprintln!("{what}: peak RSS {mib:.1} MiB (bound {bound} MiB)");
    assert!(
        mib < bound,
        "{what}: peak RSS {mib:.1} MiB, over {bound} MiB"
    );
}

// ---------------------------------------------------------------------------------------------
// A slow collector, and SIGTERM.

/// The collector accepts every call and never answers it (until SIGUSR1), so each export waits
/// out the agent's 10 s request timeout. Meanwhile the kernel keeps counting, the small export
/// queue drops its oldest requests and counts them, and memory stays flat; once the collector
/// answers again, data flows without restarting the agent.
#[test]
fn a_stalled_collector_costs_no_sampling_nor_memory_and_recovers_without_a_restart() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let receiver = Receiver::start(
        0,
        &dir.path().join("requests.jsonl"),
        &["--stall-seconds", "600"],
    );
    let w = Workload::start(&build_c("calltree"), &[]);
    let queue_bound = 30_000;
    let mut args = otlp_export_args(&receiver.endpoint(), "1s");
    args.extend([
        "--export-queue-bytes".into(),
        queue_bound.to_string(),
        // Only the workload: what other processes on the machine do must not move the
        // memory figures this test watches.
        "--include-comm".into(),
        "^calltree$".into(),
    ]);
    let agent = DaemonAgent::start(&strs(&args));
    let counted_before = kernel_event(&agent.metrics(), "counted");

    // RSS every poll while two exports time out (~25 s).
    let stall_began = Instant::now();
    let mut rss = RssTrace::new(agent.pid());
    wait_for(Duration::from_secs(60), "two timed-out exports", || {
        rss.sample();
        metric(
            &agent.metrics(),
            "kalypso_export_requests_total{result=\"failure\"}",
        ) >= 2.0
    });
    wait_for(Duration::from_secs(30), "the queue bound to drop", || {
        metric(
            &agent.metrics(),
            "kalypso_samples_dropped_total{reason=\"queue_full\"}",
        ) > 0.0
    });
    let m = agent.metrics();
    let stalled_for = stall_began.elapsed().as_secs_f64();
    let counted = kernel_event(&m, "counted") - counted_before;
    eprintln!(
        "after {stalled_for:.0} s of stall: {counted} samples counted; failures {}, queue {} bytes, {} batches and {} samples dropped",
        metric(&m, "kalypso_export_requests_total{result=\"failure\"}"),
        metric(&m, "kalypso_export_queue_bytes"),
        metric(&m, "kalypso_export_batches_dropped_total"),
        metric(&m, "kalypso_samples_dropped_total{reason=\"queue_full\"}"),
    );
    // One busy thread at 99 Hz: ~99 a second, however slow the collector (a quarter of that
    // leaves room for a loaded machine).
    assert!(
        counted >= 25.0 * stalled_for,
        "sampling slowed down: {counted} samples in {stalled_for:.0} s\n{m}"
    );
    assert!(
        metric(&m, "kalypso_export_queue_bytes") <= queue_bound as f64,
        "{m}"
    );
    assert!(
        metric(&m, "kalypso_export_batches_dropped_total") >= 1.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "kalypso_export_requests_total{result=\"success\"}"),
        0.0,
        "{m}"
    );
    assert!(receiver.requests().is_empty());

    assert_rss_within("stalled collector", rss.peak(), PID_RSS_BOUND_MIB);
    rss.assert_flat("stalled collector", 16.0);

    // The collector answers again: the agent's next attempt gets through.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(receiver.child.id() as i32, libc::SIGUSR1) };
    wait_for(
        Duration::from_secs(60),
        "the workload's data after the stall",
        || !stacks_of(&receiver.requests(), w.pid()).is_empty(),
    );
    let m = agent.metrics();
    assert!(
        metric(&m, "kalypso_export_requests_total{result=\"success\"}") >= 1.0,
        "{m}"
    );
    let (out, _) = agent.terminate();
    assert_clean_exit(&out);
    check_invariants(&receiver.out);
}

/// SIGTERM while the collector holds every call: the agent tries until `--shutdown-timeout`,
/// then exits 0 and counts everything it could not send as dropped.
#[test]
fn sigterm_with_a_stalled_collector_exits_0_at_the_deadline_and_counts_the_unsent() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let receiver = Receiver::start(
        0,
        &dir.path().join("requests.jsonl"),
        &["--stall-seconds", "600"],
    );
    let _w = Workload::start(&build_c("calltree"), &[]);
    let mut args = otlp_export_args(&receiver.endpoint(), "10m");
    args.extend([
        "--shutdown-timeout".into(),
        "2s".into(),
        // Little to symbolize at the end, whatever else runs on the machine.
        "--include-comm".into(),
        "^calltree$".into(),
    ]);
    let agent = DaemonAgent::start(&strs(&args));
    std::thread::sleep(Duration::from_secs(3));
    let (out, took) = agent.terminate();
    assert_clean_exit(&out);
    assert!(
        took >= Duration::from_secs(2),
        "gave up before the deadline: {took:?}"
    );
    assert!(
        took < Duration::from_secs(2 + 5),
        "still running {took:?} after SIGTERM with a 2 s shutdown timeout"
    );
    let stderr = stderr_of(&out);
    let (collected, sent, dropped) = daemon_summary(&stderr);
    assert!(collected > 50, "{stderr}");
    assert_eq!((sent, dropped), (0, collected), "{stderr}");
    assert!(
        stderr.contains("not sent before the shutdown deadline"),
        "the loss is not reported:\n{stderr}"
    );
    // The abandoned call was never acknowledged, so the receiver keeps nothing of it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(receiver.requests().is_empty());
}

/// SIGTERM in the middle of an interval while four busy threads keep both CPUs full: the agent
/// exits 0 within the shutdown timeout, and everything it collected, the last partial interval
/// included, reached the collector.
#[test]
fn sigterm_under_load_exports_the_last_interval_within_the_deadline() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let receiver = Receiver::start(0, &dir.path().join("requests.jsonl"), &[]);
    let workloads = [
        Workload::start(&build_c("calltree"), &[]),
        Workload::start(&build_c("threads"), &[]),
        Workload::start(&build_c("syscalls"), &[]),
    ];
    let mut args = otlp_export_args(&receiver.endpoint(), "3s");
    args.extend([
        "--shutdown-timeout".into(),
        "5s".into(),
        // The load stays; what is symbolized at the end is these three, not whatever else
        // happens to run on the machine.
        "--include-comm".into(),
        "^(calltree|threads|syscalls)$".into(),
    ]);
    let agent = DaemonAgent::start(&strs(&args));
    // Two full intervals, then half of the third.
    std::thread::sleep(Duration::from_millis(7_500));
    let signalled = SystemTime::now();
    let (out, took) = agent.terminate();
    assert_clean_exit(&out);
    // Symbolizing the last window comes before the shutdown timeout starts (see
    // `sigterm_to_an_agent_starved_of_cpu_exits_within_the_shutdown_timeout`); the hard limit is
    // the DaemonSet's 30 s grace period, after which the kubelet kills the agent.
    eprintln!(
        "exit {:.1} s after SIGTERM (--shutdown-timeout 5s)",
        took.as_secs_f64()
    );
    assert!(
        took < Duration::from_secs(30),
        "still running {took:?} after SIGTERM: past the pod's grace period"
    );
    let (collected, sent, dropped) = daemon_summary(&stderr_of(&out));
    assert_eq!(
        (sent, dropped),
        (collected, 0),
        "samples not sent at shutdown"
    );
    let requests = receiver.requests();
    let received: u64 = all_sample_counts(&requests).sum();
    assert_eq!(received, sent, "samples lost in the shutdown flush");
    // The last interval's samples of every workload arrived after the signal.
    let last = received_after(&requests, signalled);
    assert!(!last.is_empty(), "nothing arrived after SIGTERM");
    for w in &workloads {
        let n: u64 = stacks_of(&last, w.pid()).iter().map(|(_, c)| c).sum();
        eprintln!("pid {}: {n} samples in the final flush", w.pid());
        assert!(n > 0, "the final flush lacks pid {}", w.pid());
    }
}

/// SIGTERM to an agent starved of CPU, as a DaemonSet pod with a 50m CPU request is on a busy
/// node (here: pinned to one CPU beside a busy thread, at nice 10). It must still exit within
/// `--shutdown-timeout`, counting what it could not send: past the pod's grace period the
/// kubelet's SIGKILL loses everything, and the summary too.
#[test]
fn sigterm_to_an_agent_starved_of_cpu_exits_within_the_shutdown_timeout() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let receiver = Receiver::start(0, &dir.path().join("requests.jsonl"), &[]);
    let calltree = build_c("calltree");
    let _busy = Workload::start(
        Path::new("taskset"),
        &["-c", "0", calltree.to_str().unwrap()],
    );
    let mut args = otlp_export_args(&receiver.endpoint(), "2s");
    args.extend(["--shutdown-timeout".into(), "2s".into()]);
    let agent =
        DaemonAgent::start_wrapped(&["taskset", "-c", "0", "nice", "-n", "10"], &strs(&args));
    wait_for(Duration::from_secs(120), "sampling to start", || {
        kernel_event(&agent.metrics(), "ticks") > 0.0
    });
    std::thread::sleep(Duration::from_secs(3));
    let (out, took) = agent.terminate();
    assert_clean_exit(&out);
    assert!(
        took <= Duration::from_secs(2 + 2),
        "exited {:.1} s after SIGTERM with a 2 s shutdown timeout",
        took.as_secs_f64()
    );
}

/// SIGTERM while the agent starts (its metrics server is up, its BPF programs are loading): it
/// has collected nothing, and should exit 0 like any other time.
#[test]
fn sigterm_while_the_agent_starts_exits_0() {
    if !require_root() {
        return;
    }
    let port = free_port();
    let child = Command::new(agent_binary())
        .args(["--exporter", "none", "--metrics-addr"])
        .arg(format!("127.0.0.1:{port}"))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no metrics server"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    eprintln!("{}\n{}", out.status, stderr_of(&out));
    assert_clean_exit(&out);
}

// ---------------------------------------------------------------------------------------------
// Process churn.

/// ≥ 200 short-lived processes a second for a minute, beside a steady call tree, with a local
/// node-wide run and a continuous one at once: both exit 0, the call tree keeps its 75/25
/// shares, memory stays bounded and flat, and the processes the agent holds stay a small
/// fraction of those that went by. The kernel's loss counters are printed.
#[test]
fn a_minute_of_200_new_processes_a_second_keeps_state_bounded_and_steady_profiles_right() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let receiver = Receiver::start(0, &dir.path().join("requests.jsonl"), &[]);
    let churn = build_c("churn");
    let calltree = Workload::start(&build_c("calltree"), &[]);
    // The daemon exports only the workloads, so that its memory is what the churn costs and not
    // what symbolizing the rest of the machine does; it still reads every sampled process.
    let mut args = otlp_export_args(&receiver.endpoint(), "5s");
    args.extend(["--include-comm".into(), "^(calltree|churn)$".into()]);
    let daemon = DaemonAgent::start(&strs(&args));
    let folded = dir.path().join("node.folded");
    let local = Command::new(agent_binary())
        .args([
            "--duration",
            "62s",
            "--quiet",
            "--summary",
            "json",
            "--output",
        ])
        .arg(&folded)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut local_rss = RssTrace::new(local.id());
    let local = std::thread::spawn(move || local.wait_with_output().unwrap());
    // Let the local agent attach before the churn starts.
    std::thread::sleep(Duration::from_secs(2));
    let report = dir.path().join("churn.txt");
    let mut churner = Workload::start(&churn, &["250", "60", report.to_str().unwrap()]);

    let gauges = [
        "kalypso_processes_tracked",
        "kalypso_open_objects",
        "kalypso_unwind_processes",
        "kalypso_unwind_table_bytes",
    ];
    let mut peak: BTreeMap<&str, f64> = BTreeMap::new();
    let mut rss = RssTrace::new(daemon.pid());
    while churner.child.try_wait().unwrap().is_none() {
        let m = daemon.metrics();
        for g in gauges {
            let v = metric(&m, g);
            let p = peak.entry(g).or_default();
            *p = p.max(v);
        }
        rss.sample();
        local_rss.sample();
        std::thread::sleep(Duration::from_secs(2));
    }
    let rate = std::fs::read_to_string(&report).unwrap();
    eprintln!("churn: {}", rate.trim());
    let per_second: f64 = rate
        .split(": ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|r| r.parse().ok())
        .unwrap_or_else(|| panic!("no rate in {rate:?}"));
    assert!(per_second >= 200.0, "only {per_second} processes a second");

    // Exited processes are let go of at each export.
    wait_for(
        Duration::from_secs(30),
        "the daemon to forget exited processes",
        || metric(&daemon.metrics(), "kalypso_processes_tracked") < 1_000.0,
    );
    let m = daemon.metrics();
    let peak_hwm = proc_status_kib(daemon.pid(), "VmHWM").map_or(0.0, mib);
    eprintln!("daemon peaks during the churn: {peak:?}");
    eprintln!(
        "daemon kernel counters: {}",
        [
            "new_process",
            "new_process_lost",
            "count_map_full",
            "user_stack_collision",
            "kernel_stack_collision",
            "unwound_stack_map_full",
        ]
        .iter()
        .map(|e| format!("{e} {}", kernel_event(&m, e)))
        .collect::<Vec<_>>()
        .join(", ")
    );
    let (out, _) = daemon.terminate();
    assert_clean_exit(&out);
    // Tens of thousands of processes went by; the agent holds a few hundred at most.
    assert!(
        peak["kalypso_processes_tracked"] < 2_000.0,
        "the process table grows with the churn: {peak:?}"
    );
    assert!(
        peak["kalypso_open_objects"] < 2_000.0,
        "open files grow with the churn: {peak:?}"
    );
    assert!(
        peak["kalypso_unwind_processes"] <= 1_024.0,
        "unwinder's process map over its bound: {peak:?}"
    );
    assert_rss_within("daemon under churn", peak_hwm, PID_RSS_BOUND_MIB);
    rss.assert_flat("daemon under churn", 16.0);
    assert_calltree_shares(
        "daemon under churn",
        calltree_split_leaf_first(&stacks_of(&receiver.requests(), calltree.pid())),
        1_000,
    );

    let out = local.join().unwrap();
    let summary = stderr_of(&out);
    eprintln!("local node-wide run under churn:\n{summary}");
    assert_clean_exit(&out);
    // The local run keeps every process it sampled until the end, and then symbolizes all of
    // them, whatever else ran on the machine meanwhile: only its memory while the churn lasts
    // says what the churn costs (the daemon above shows the same with the rest filtered out).
    assert_rss_within(
        "local node-wide run while the churn lasts",
        local_rss.peak(),
        NODE_RSS_BOUND_MIB,
    );
    local_rss.assert_flat("local node-wide run while the churn lasts", 64.0);
    eprintln!(
        "local node-wide run: peak RSS {:.1} MiB, the final symbolization of the whole machine included",
        summary_max_rss_mib(&summary_json(&summary))
    );
    let folded = read_folded(&folded);
    let steady: BTreeMap<Vec<String>, u64> = folded
        .into_iter()
        .filter(|(s, _)| s[0] == "calltree")
        .collect();
    assert_calltree_shares("local run under churn", calltree_split(&steady), 1_000);
}

/// Processes with 5,000 mappings each that live a few milliseconds: the agent often reads
/// their maps while they exit, and gets half a file or none. No panic and a clean exit; how
/// many samples fell in them and how many lost their libraries to a cut-short read is printed.
#[test]
fn processes_exiting_while_their_maps_are_read_cause_no_panic() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let report = dir.path().join("churn.txt");
    let churn = build_c("churn");
    let _churner = Workload::start(&churn, &["40", "12", report.to_str().unwrap(), "5000"]);
    let out_path = dir.path().join("node.folded");
    let (out, summary) = run_local(&["--duration", "10s", "--output", out_path.to_str().unwrap()]);
    assert_clean_exit(&out);
    let folded = read_folded(&out_path);
    let churned: Vec<(&Vec<String>, u64)> = folded
        .iter()
        .filter(|(s, _)| s[0] == "churn")
        .map(|(s, c)| (s, *c))
        .collect();
    let all: u64 = churned.iter().map(|(_, c)| c).sum();
    let own_code: u64 = churned
        .iter()
        .filter(|(s, _)| s.iter().any(|f| f == "child_spin"))
        .map(|(_, c)| c)
        .sum();
    // The signature of a maps file cut short: the binary's frames resolve, the libc frame
    // below them has no mapping at all.
    let cut_short: u64 = churned
        .iter()
        .filter(|(s, _)| {
            s.iter().any(|f| f == "child_spin") && s.iter().any(|f| f.starts_with("[unknown] 0x"))
        })
        .map(|(_, c)| c)
        .sum();
    eprintln!(
        "short-lived processes with 5,000 mappings: {all} samples, {own_code} in child_spin, {cut_short} of those with an unmapped libc frame; {}",
        summary
            .lines()
            .find(|l| l.starts_with("kernel:"))
            .unwrap_or("")
    );
    // How often the race is hit depends on how the machine schedules the churn; what must
    // hold every time is the clean exit above. (On a busy machine the churned processes may
    // not be sampled at all: the counts above say so.)
}

// ---------------------------------------------------------------------------------------------
// A huge binary, many mappings.

/// Text in front of calltree's code in the huge binary.
const HUGE_PAD_BYTES: u64 = 300 << 20;

/// calltree.c linked after 300 MiB of text in 20,000 functions: a binary of ~315 MiB whose hot
/// code sits 300 MiB into `.text`. Generated assembly (`.fill`) keeps the build to seconds, and
/// the binary is kept in `target/test-workloads/huge/` until its inputs change.
fn build_huge_calltree() -> PathBuf {
    const PAD_FUNCTIONS: u64 = 20_000;
    let dir = workspace_root().join("target/test-workloads/huge");
    std::fs::create_dir_all(&dir).unwrap();
    let size = HUGE_PAD_BYTES.div_ceil(PAD_FUNCTIONS);
    let mut asm = String::from("\t.text\n");
    for i in 0..PAD_FUNCTIONS {
        asm.push_str(&format!(
            "\t.globl kalypso_pad_{i}\n\t.type kalypso_pad_{i}, %function\nkalypso_pad_{i}:\n\t.fill {size}, 1, 0\n\t.size kalypso_pad_{i}, {size}\n"
        ));
    }
    asm.push_str("\t.section .note.GNU-stack,\"\",%progbits\n");
    let pad = dir.join("pad.s");
    if std::fs::read_to_string(&pad).ok().as_deref() != Some(asm.as_str()) {
        std::fs::write(&pad, &asm).unwrap();
    }
    let src = workspace_root().join("tests/workloads/calltree.c");
    let out = dir.join("huge_calltree");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    if modified(&out).is_some_and(|t| Some(t) >= modified(&pad) && Some(t) >= modified(&src)) {
        return out;
    }
    // The pad comes first on the command line, so calltree's code follows it in `.text`.
    let status = Command::new("gcc")
        .args(["-O0", "-g", "-fno-omit-frame-pointer", "-o"])
        .arg(&out)
        .arg(&pad)
        .arg(&src)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "building the huge binary failed");
    out
}

/// The size of a section, from `readelf -SW`.
fn section_size(binary: &Path, section: &str) -> u64 {
    let out = Command::new("readelf")
        .arg("-SW")
        .arg(binary)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.split_whitespace().any(|w| w == section))
        .unwrap_or_else(|| panic!("no {section} in {}", binary.display()));
    // [Nr] Name Type Address Off Size ...: the size is the field after the offset.
    let fields: Vec<&str> = line.split(']').nth(1).unwrap().split_whitespace().collect();
    u64::from_str_radix(fields[4], 16).unwrap()
}

/// Both with `--pid` and node-wide (continuous mode, only this process exported), the hot
/// functions 300 MiB into the text symbolize, in the right shares, and the agent's memory stays
/// far below the size of the text.
#[test]
fn a_binary_with_300_mib_of_text_symbolizes_within_a_memory_bound() {
    if !require_root() {
        return;
    }
    let binary = build_huge_calltree();
    let text = section_size(&binary, ".text");
    assert!(text >= HUGE_PAD_BYTES, ".text is only {text} bytes");
    let w = Workload::start(&binary, &[]);
    let dir = temp_dir();
    let folded = dir.path().join("cpu.folded");
    let cache = dir.path().join("tables");
    let (out, summary) = run_local_json(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        "5s",
        "--unwind-cache-dir",
        cache.to_str().unwrap(),
        "--output",
        folded.to_str().unwrap(),
    ]);
    assert_clean_exit(&out);
    assert_calltree_shares("--pid", calltree_split(&read_folded(&folded)), 100);
    assert_rss_within(
        "--pid on the huge binary",
        summary_max_rss_mib(&summary),
        PID_RSS_BOUND_MIB,
    );

    let receiver = Receiver::start(0, &dir.path().join("requests.jsonl"), &[]);
    let mut args = otlp_export_args(&receiver.endpoint(), "2s");
    args.extend([
        "--include-comm".into(),
        "^huge_calltree$".into(),
        "--unwind-cache-dir".into(),
        dir.path().join("tables-node").to_str().unwrap().into(),
    ]);
    let agent = DaemonAgent::start(&strs(&args));
    // However busy the machine: enough samples for the shares to mean something.
    wait_for(Duration::from_secs(90), "300 samples exported", || {
        let (a, b) = calltree_split_leaf_first(&stacks_of(&receiver.requests(), w.pid()));
        a + b >= 300
    });
    let hwm = proc_status_kib(agent.pid(), "VmHWM").map(mib).unwrap();
    let (out, _) = agent.terminate();
    assert_clean_exit(&out);
    assert_calltree_shares(
        "node-wide",
        calltree_split_leaf_first(&stacks_of(&receiver.requests(), w.pid())),
        300,
    );
    // Only this process is exported: the bound of one process applies.
    assert_rss_within("node-wide with the huge binary", hwm, PID_RSS_BOUND_MIB);
}

/// 5,000 executable mappings (file pages and anonymous ones) in one busy process: the agent
/// completes, the call tree is right, memory is bounded.
#[test]
fn a_process_with_5000_executable_mappings_is_profiled_within_a_memory_bound() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("mappings"), &["5000"]);
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", w.pid())).unwrap();
    let executable = maps
        .lines()
        .filter(|l| l.split_whitespace().nth(1).is_some_and(|p| p.contains('x')))
        .count();
    assert!(executable >= 5_000, "only {executable} executable mappings");
    let dir = temp_dir();
    let folded = dir.path().join("cpu.folded");
    let (out, summary) = run_local_json(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        "4s",
        "--output",
        folded.to_str().unwrap(),
    ]);
    assert_clean_exit(&out);
    assert_calltree_shares("5,000 mappings", calltree_split(&read_folded(&folded)), 100);
    assert_rss_within(
        "5,000 mappings",
        summary_max_rss_mib(&summary),
        PID_RSS_BOUND_MIB,
    );
}

// ---------------------------------------------------------------------------------------------
// Malformed and deleted files.

/// Runs `badelf` (code in a truncated ELF, in one with a garbage header, and in anonymous
/// memory) under `--pid` for 4 s: the folded stacks and the summary.
fn profile_badelf(dir: &Path) -> (BTreeMap<Vec<String>, u64>, serde_json::Value) {
    let truncated = dir.join("truncated.so");
    let garbage = dir.join("garbage.so");
    let w = Workload::start(
        &build_c("badelf"),
        &[truncated.to_str().unwrap(), garbage.to_str().unwrap()],
    );
    let folded = dir.join("cpu.folded");
    let cache = dir.join("tables");
    let (out, summary) = run_local_json(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        "4s",
        "--unwind-cache-dir",
        cache.to_str().unwrap(),
        "--output",
        folded.to_str().unwrap(),
    ]);
    assert_clean_exit(&out);
    (read_folded(&folded), summary)
}

/// Distinct `[unknown] <prefix>…` frames and their samples.
fn unknown_frames(folded: &BTreeMap<Vec<String>, u64>, prefix: &str) -> (usize, u64) {
    let mut frames = std::collections::BTreeSet::new();
    let mut samples = 0;
    for (stack, count) in folded {
        let hits: Vec<&String> = stack
            .iter()
            .filter(|f| f.starts_with(&format!("[unknown] {prefix}")))
            .collect();
        if !hits.is_empty() {
            samples += count;
        }
        frames.extend(hits);
    }
    (frames.len(), samples)
}

/// Code mapped from a truncated ELF file and from one with a garbage header: each frame shows
/// as `[unknown] <file>+0x<offset>` right under `main` (the stack is still unwound past it),
/// every such address is counted as unresolved, and the files as without unwind tables.
#[test]
fn code_in_truncated_or_corrupt_elf_files_shows_as_unknown_and_is_counted() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let (folded, summary) = profile_badelf(dir.path());
    let mut distinct = 0;
    for file in ["truncated.so", "garbage.so"] {
        let prefix = format!("[unknown] {file}+0x");
        let (frames, samples) = unknown_frames(&folded, &format!("{file}+0x"));
        let under_main: u64 = folded
            .iter()
            .filter(|(s, _)| {
                s.windows(2)
                    .any(|w| w[0] == "main" && w[1].starts_with(&prefix))
            })
            .map(|(_, c)| c)
            .sum();
        eprintln!("{file}: {samples} samples at {frames} addresses, {under_main} under main");
        assert!(samples > 20, "{file}: only {samples} samples:\n{folded:?}");
        assert!(under_main > 0, "{file}: not unwound to main:\n{folded:?}");
        distinct += frames;
    }
    let unresolved = summary_u64(&summary, &["symbolizer", "unresolved"]);
    assert!(
        unresolved >= distinct as u64,
        "{distinct} unknown addresses in the files, {unresolved} counted:\n{summary}"
    );
    let no_tables = summary_u64(&summary, &["tables", "without_cfi_or_unreadable"]);
    assert!(
        no_tables >= 2,
        "the two files are not counted as lacking tables:\n{summary}"
    );
}

/// Code in anonymous memory (JIT code) shows as `[unknown] [anon]+0x…`, and the summary's
/// "addresses unresolved" counts it, as it counts addresses outside any known mapping.
#[test]
fn code_in_anonymous_memory_is_counted_as_unresolved() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let (folded, summary) = profile_badelf(dir.path());
    let (anon, samples) = unknown_frames(&folded, "[anon]+0x");
    let (all, _) = unknown_frames(&folded, "");
    eprintln!("anonymous code: {samples} samples at {anon} addresses; {all} unknown in all");
    assert!(samples > 20, "only {samples} samples in anonymous code");
    let unresolved = summary_u64(&summary, &["symbolizer", "unresolved"]);
    assert!(
        unresolved >= all as u64,
        "{all} distinct [unknown] frames, {unresolved} counted as unresolved:\n{summary}"
    );
}

/// A binary deleted after it started: its samples symbolize and its tables are built from the
/// open file (no cached tables to fall back on), so stacks without frame pointers reach `main`.
#[test]
fn a_binary_deleted_after_start_still_symbolizes_and_unwinds() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let copy = dir.path().join("nofp-deleted");
    std::fs::copy(build_c_nofp("nofp"), &copy).unwrap();
    let w = Workload::start(&copy, &[]);
    std::fs::remove_file(&copy).unwrap();
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", w.pid())).unwrap();
    assert!(maps.contains("nofp-deleted (deleted)"), "{maps}");
    let folded = dir.path().join("cpu.folded");
    let cache = dir.path().join("tables");
    let (out, summary) = run_local(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        "4s",
        "--unwind",
        "dwarf",
        "--unwind-cache-dir",
        cache.to_str().unwrap(),
        "--output",
        folded.to_str().unwrap(),
    ]);
    assert_clean_exit(&out);
    let folded = read_folded(&folded);
    let all = total(&folded);
    let to_main = count_with(&folded, &["__libc_start_call_main", "main", "run"]);
    let unknown: u64 = folded
        .iter()
        .filter(|(s, _)| {
            s.iter()
                .any(|f| f.starts_with("[unknown]") && f.contains("nofp"))
        })
        .map(|(_, c)| c)
        .sum();
    eprintln!("deleted binary: {to_main} of {all} samples reach main;run, {unknown} unknown");
    assert!(all > 100, "only {all} samples:\n{summary}");
    assert_eq!(unknown, 0, "frames of the deleted binary unresolved");
    assert!(
        to_main * 100 >= all * 95,
        "only {to_main} of {all} stacks reach main;run:\n{summary}"
    );
}

// ---------------------------------------------------------------------------------------------
// Privileges, and a closed stderr.

/// Runs the agent as root without the capabilities in `drop` (setpriv's names, e.g.
/// `-perfmon,-sys_admin`): they leave the bounding set, so the exec'd agent does not get them.
fn run_agent_as_root_without(drop: &str, args: &[&str]) -> Output {
    run_agent_via(
        &["setpriv", "--inh-caps=-all", "--bounding-set", drop, "--"],
        args,
    )
}

/// Root with CAP_BPF but not CAP_PERFMON, or the other way round (and without CAP_SYS_ADMIN,
/// which stands in for both): one clear line, as with neither (`bad_input.rs`).
#[test]
fn missing_cap_bpf_or_cap_perfmon_alone_is_one_clear_line() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("calltree"), &[]);
    let dir = temp_dir();
    let folded = dir.path().join("cpu.folded");
    for drop in ["-perfmon,-sys_admin", "-bpf,-sys_admin"] {
        let out = run_agent_as_root_without(
            drop,
            &[
                "--pid",
                &w.pid().to_string(),
                "-d",
                "1s",
                "-o",
                folded.to_str().unwrap(),
            ],
        );
        assert_one_line_error(&out, "CAP_BPF and CAP_PERFMON");
        assert_eq!(stderr_of(&out).lines().count(), 1, "exactly one line");
    }
}

/// Root without CAP_SYS_PTRACE may not open the files other root processes map (nor read
/// their `map_files`): every user frame comes out `[unknown] <path>+0x…`, no table is built,
/// and the agent exits 0. It should say so in one line naming the capability, not leave it to
/// a `files unreadable` count in the summary.
#[test]
fn without_cap_sys_ptrace_the_agent_says_why_frames_are_unknown() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("calltree"), &[]);
    let dir = temp_dir();
    let folded = dir.path().join("cpu.folded");
    let out = run_agent_as_root_without(
        "-sys_ptrace",
        &[
            "--pid",
            &w.pid().to_string(),
            "-d",
            "2s",
            "-o",
            folded.to_str().unwrap(),
        ],
    );
    assert_clean_exit(&out);
    let folded = read_folded(&folded);
    let (unknown, samples) = unknown_frames(&folded, "/");
    eprintln!(
        "{samples} of {} samples with unknown frames at {unknown} addresses",
        total(&folded)
    );
    let stderr = stderr_of(&out);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("warning:") && l.contains("CAP_SYS_PTRACE")),
        "no warning naming CAP_SYS_PTRACE:\n{stderr}"
    );
}

/// `profiler-agent … 2>&1 | head -1`: the profile is written, then the summary meets a closed
/// pipe. That is no reason to panic (exit 101) after a successful run.
#[test]
fn a_closed_stderr_is_not_a_panic() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("calltree"), &[]);
    let dir = temp_dir();
    let folded = dir.path().join("cpu.folded");
    let mut child = Command::new(agent_binary())
        .args(["--pid", &w.pid().to_string(), "-d", "1s", "-o"])
        .arg(&folded)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Nobody reads stderr: its read end is closed at once.
    drop(child.stderr.take());
    let status = child.wait().unwrap();
    assert!(folded.exists(), "no profile written");
    assert!(status.success(), "exit status {status} with stderr closed");
}

// ---------------------------------------------------------------------------------------------
// Missing kernel interfaces; an empty profile.

/// Hides, in a private mount namespace for the agent alone, every optional kernel interface:
/// `/proc/kallsyms` reads empty, `/sys/kernel/btf` is an empty directory (as on a kernel built
/// without BTF), `/proc/kcore` and `/proc/modules` read empty where they exist, and nothing is
/// mounted at `/sys/kernel/debug` or `/sys/kernel/tracing`. Then runs the agent with `args`.
fn run_agent_without_optional_interfaces(args: &[&str]) -> Output {
    let script = r#"set -e
mount --bind /dev/null /proc/kallsyms
for f in /proc/kcore /proc/modules; do
    if [ -e "$f" ]; then mount --bind /dev/null "$f"; fi
done
for d in /sys/kernel/btf /sys/kernel/debug /sys/kernel/tracing; do
    if [ -d "$d" ]; then mount -t tmpfs none "$d"; fi
done
test ! -s /proc/kallsyms && test ! -e /sys/kernel/btf/vmlinux
exec "$@""#;
    run_agent_via(
        &[
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ],
        args,
    )
}

/// Without kallsyms, BTF, kcore, modules, debugfs or tracefs the agent still profiles: exit 0,
/// user stacks whole, kernel frames shown as `[unknown] [kernel]+0x…` and counted.
#[test]
fn missing_optional_kernel_interfaces_leave_user_stacks_whole() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("syscalls"), &[]);
    let dir = temp_dir();
    let folded = dir.path().join("cpu.folded");
    let out = run_agent_without_optional_interfaces(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        "4s",
        "--summary",
        "json",
        "--output",
        folded.to_str().unwrap(),
    ]);
    assert_clean_exit(&out);
    let summary = summary_json(&stderr_of(&out));
    let folded = read_folded(&folded);
    let all = total(&folded);
    let user = count_with(&folded, &["main", "read_zeroes", "raw_read"]);
    let kernel_frames: Vec<&String> = folded
        .keys()
        .flatten()
        .filter(|f| f.ends_with("_[k]"))
        .collect();
    eprintln!(
        "{user} of {all} samples in main;read_zeroes;raw_read; {} kernel frames",
        kernel_frames.len()
    );
    assert!(all > 100, "only {all} samples");
    assert!(
        user * 10 >= all * 9,
        "user stacks broken: {user} of {all}:\n{folded:?}"
    );
    assert!(!kernel_frames.is_empty(), "no kernel frames at all");
    assert!(
        kernel_frames
            .iter()
            .all(|f| f.starts_with("[unknown] [kernel]+0x")),
        "kernel frames resolved without kallsyms: {kernel_frames:?}"
    );
    assert!(
        summary_u64(&summary, &["symbolizer", "unresolved"]) > 0,
        "unresolved kernel frames not counted:\n{summary}"
    );
}

/// A target that never runs gives an empty profile. Exiting 0 with an empty file and a summary
/// that reads like success is what must not happen: either fail with one `error:` line, or
/// succeed with a `warning:` line that says the profile is empty, and why.
#[test]
fn an_empty_profile_is_never_a_silent_success() {
    if !require_root() {
        return;
    }
    let mut sleeper = Command::new("sleep").arg("60").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let dir = temp_dir();
    let folded = dir.path().join("cpu.folded");
    let (out, stderr) = run_local(&[
        "--pid",
        &pid,
        "--duration",
        "2s",
        "--output",
        folded.to_str().unwrap(),
    ]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(!stderr.contains("panicked"), "{stderr}");
    let (prefix, what) = if out.status.success() {
        ("warning:", "a warning")
    } else {
        ("error:", "an error")
    };
    let said = stderr.lines().any(|l| {
        l.starts_with(prefix)
            && l.contains(&pid)
            && (l.contains("empty") || l.contains("no samples"))
    });
    assert!(
        said,
        "exit status {} without {what} line naming pid {pid} and the empty profile:\n{stderr}",
        out.status
    );
}
