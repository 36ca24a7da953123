//! What the agent produces: P5 (symbolization throughput against addr2line), P6 (leaf shares
//! against perf on the same process at the same time) and P7 (OTLP size against gzip'd pprof).
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::harness::{Bench, Guard, fmt, start_workload};
use super::parse;
use super::{Section, Verdict};
use crate::setup;

/// The C library this machine's programs load (found in our own mappings).
fn libc_path() -> Result<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps")?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.contains("/libc.so") || p.contains("/libc-"))
        .map(PathBuf::from)
        .context("no libc in /proc/self/maps")
}

/// P5: `profiler-agent/examples/symbolize_bench.rs` on libc and on the agent binary itself.
pub fn p5_symbolization(b: &mut Bench) -> Result<Section> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(cargo);
    build.current_dir(&b.root).args([
        "build",
        "--release",
        "-p",
        "profiler-agent",
        "--example",
        "symbolize_bench",
    ]);
    b.record(&build);
    setup::run_checked(&mut build)?;
    let harness = b.root.join("target/release/examples/symbolize_bench");
    let targets = [
        (libc_path()?, b.pick(5000, 1000)),
        (b.agent.clone(), b.pick(2000, 300)),
    ];
    let mut md = String::from(
        "`symbolize_bench BINARY COUNT` picks COUNT addresses spread over the binary's functions (and COUNT more for \
         warming up), maps the binary into itself and opens it the way the agent opens a profiled process's files. \
         addr2line: one `addr2line -f -i -C -a -e BINARY` process per run, addresses on stdin, page cache warm. \
         Ours: the agent's `Symbolizer` (blazesym, inlined frames and lines, demangling): *cold* = a new instance; \
         *first touch* = an instance that has already symbolized the other COUNT addresses of the same file, so \
         the file is parsed, but blazesym still parses the compilation units only the timed addresses reach \
         (it does so lazily, unit by unit); *warm* = the same instance after dropping its per-address results: \
         everything the timed addresses need is parsed and none is a result-cache hit (lookup throughput, the \
         target's case); *cached* = the same addresses again, all result-cache hits. Medians of 3 runs. \
         Agreement: outermost function name and frame count (inlined depth) compared with addr2line's.\n\n\
         | binary | MiB | functions | addresses | addr2line s | cold s | first touch s | warm s | cached s | warm speed-up | first-touch speed-up | cold speed-up | name / depth agreement |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut results = Vec::new();
    let mut speedups = Vec::new();
    for (binary, count) in targets {
        let mut cmd = Command::new(&harness);
        cmd.arg(&binary).arg(count.to_string());
        b.record(&cmd);
        let out = cmd.stderr(Stdio::inherit()).output()?;
        if !out.status.success() {
            bail!("{} failed ({})", b.show(&cmd), out.status);
        }
        let r: Value = serde_json::from_slice(&out.stdout).context("symbolize_bench output")?;
        let n = |k: &str| r[k].as_f64().unwrap_or(f64::NAN);
        let name = binary
            .file_name()
            .map_or_else(String::new, |f| f.to_string_lossy().into_owned());
        let warm = n("addr2line_s") / n("warm_s");
        let first = n("addr2line_s") / n("first_touch_s");
        let cold = n("addr2line_s") / n("cold_s");
        speedups.push((name.clone(), warm, first, cold));
        let _ = writeln!(
            md,
            "| {name} | {} | {} | {} | {} | {} | {} | {} | {} | **{}×** | {}× | {}× | {:.1} % / {:.1} % |",
            fmt(n("binary_bytes") / (1 << 20) as f64),
            r["functions"],
            r["addresses"],
            fmt(n("addr2line_s")),
            fmt(n("cold_s")),
            fmt(n("first_touch_s")),
            fmt(n("warm_s")),
            fmt(n("cached_s")),
            fmt(warm),
            fmt(first),
            fmt(cold),
            100.0 * n("name_agreement"),
            100.0 * n("depth_agreement"),
        );
        results.push(r);
    }
    let worst = speedups.iter().map(|s| s.1).fold(f64::INFINITY, f64::min);
    Ok(Section {
        title: "P5: symbolization throughput".into(),
        markdown: md,
        json: json!(results),
        commands: b.take_commands(),
        verdicts: vec![Verdict {
            id: "P5",
            what: "symbolization throughput, warm, vs addr2line -f -i",
            target: "≥ 20× addr2line",
            measured: speedups
                .iter()
                .map(|(n, w, f, c)| {
                    format!(
                        "{n}: {}× warm ({}× first touch, {}× cold)",
                        fmt(*w),
                        fmt(*f),
                        fmt(*c)
                    )
                })
                .collect::<Vec<_>>()
                .join("; "),
            met: Some(worst >= 20.0),
        }],
    })
}

/// P6: calltree sampled by `perf record -F 99 -g -p` and by the agent `--pid` over the same
/// seconds; leaf (self) shares per function compared.
pub fn p6_accuracy(b: &mut Bench) -> Result<Section> {
    let calltree = b.fp_workload("calltree")?;
    let workload = start_workload(&calltree, &[])?;
    let pid = workload.pid().to_string();
    let seconds = b.pick(30, 8);
    let data = b.tmp("p6-perf.data");
    let folded = b.tmp("p6.folded");
    let mut perf_cmd = Command::new("perf");
    perf_cmd
        .args([
            "record",
            "-q",
            "-F",
            "99",
            "-g",
            "-e",
            "cpu-clock",
            "-p",
            &pid,
            "-o",
        ])
        .arg(&data)
        .args(["--", "sleep", &seconds.to_string()]);
    b.record(&perf_cmd);
    let mut perf = Guard(
        perf_cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting perf (apt-get install linux-perf)")?,
    );
    let (summary, _) = b.run_local(&[
        "--pid",
        &pid,
        "--duration",
        &format!("{seconds}s"),
        "--output",
        folded.to_str().context("path")?,
    ])?;
    let status = super::harness::wait_timeout(&mut perf.0, Duration::from_secs(60))?
        .context("perf record did not finish")?;
    if !status.success() {
        bail!("perf record exited with {status}");
    }
    drop(workload);
    let mut script = Command::new("perf");
    script.args(["script", "-F", "ip,sym", "-i"]).arg(&data);
    b.record(&script);
    let out = script.output()?;
    if !out.status.success() {
        bail!("perf script: {}", String::from_utf8_lossy(&out.stderr));
    }
    // What lies below main() differs with how far each unwinder gets through libc's start-up code
    // (perf with frame pointers stops in libc; the agent may unwind libc with its tables): cut there.
    let below_main = |mut stacks: parse::Stacks| {
        for (frames, _) in &mut stacks {
            if let Some(main) = frames.iter().position(|f| f == "main") {
                frames.truncate(main + 1);
            }
        }
        stacks
    };
    let theirs = below_main(parse::perf_script_stacks(&String::from_utf8_lossy(
        &out.stdout,
    )));
    let ours = below_main(parse::folded_stacks(&std::fs::read_to_string(&folded)?));
    let total = |s: &parse::Stacks| s.iter().map(|(_, n)| n).sum::<u64>();
    let (perf_total, our_total) = (total(&theirs), total(&ours));
    let (perf_self, perf_incl) = parse::shares(&theirs);
    let (our_self, our_incl) = parse::shares(&ours);
    // Every function with at least 1 % in either profile, by perf's inclusive share.
    let mut functions: Vec<&String> = [&perf_self, &our_self, &perf_incl, &our_incl]
        .into_iter()
        .flatten()
        .filter(|(_, s)| **s >= 1.0)
        .map(|(f, _)| f)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let get =
        |m: &std::collections::BTreeMap<String, f64>, f: &String| m.get(f).copied().unwrap_or(0.0);
    functions.sort_by(|a, b| get(&perf_incl, b).total_cmp(&get(&perf_incl, a)));
    let noise = |p: f64, o: f64| {
        let share = ((p + o) / 200.0).clamp(0.0, 1.0);
        300.0
            * (share
                * (1.0 - share)
                * (1.0 / perf_total.max(1) as f64 + 1.0 / our_total.max(1) as f64))
                .sqrt()
    };
    let mut md = format!(
        "calltree (`-O0 -fno-omit-frame-pointer`; work() under hot_a ×3 and hot_b ×1), sampled for {seconds} s at once by \
         `perf record -F 99 -g -e cpu-clock -p` and by the agent `--pid` (99 Hz). Per function: share of samples with it \
         at the leaf (self, the target) and anywhere on the stack (inclusive, which shows whether the call paths agree: \
         here nearly every sample's leaf is work()); frames below main() are cut, since how far into libc's start-up \
         code each unwinder gets is not the question. Every function with ≥ 1 % in either profile. The two samplers are \
         independent timers, so shares differ by binomial noise alone; 3σ of that noise is shown.\n\n\
         perf: {perf_total} samples; agent: {our_total} samples ({} expected for one busy thread).\n\n\
         | function | self: perf % | agent % | difference | 3σ | inclusive: perf % | agent % | difference | 3σ |\n|---|---|---|---|---|---|---|---|---|\n",
        (summary.seconds * 99.0).round()
    );
    let (mut worst_self, mut worst_incl) = (0.0f64, 0.0f64);
    let mut rows = Vec::new();
    for f in functions {
        let (ps, os) = (get(&perf_self, f), get(&our_self, f));
        let (pi, oi) = (get(&perf_incl, f), get(&our_incl, f));
        worst_self = worst_self.max((ps - os).abs());
        worst_incl = worst_incl.max((pi - oi).abs());
        let _ = writeln!(
            md,
            "| {f} | {ps:.1} | {os:.1} | {:+.1} | ±{:.1} | {pi:.1} | {oi:.1} | {:+.1} | ±{:.1} |",
            os - ps,
            noise(ps, os),
            oi - pi,
            noise(pi, oi),
        );
        rows.push(json!({
            "function": f, "self_perf": ps, "self_agent": os, "inclusive_perf": pi, "inclusive_agent": oi,
        }));
    }
    Ok(Section {
        title: "P6: accuracy against perf".into(),
        markdown: md,
        json: json!({
            "perf_samples": perf_total, "agent_samples": our_total, "functions": rows,
            "max_self_difference": worst_self, "max_inclusive_difference": worst_incl,
        }),
        commands: b.take_commands(),
        verdicts: vec![
            Verdict {
                id: "P6",
                what: "leaf shares vs perf record, same workload, same time",
                target: "within ±2 points",
                measured: format!(
                    "largest difference {worst_self:.1} points ({perf_total} vs {our_total} samples)"
                ),
                met: Some(worst_self <= 2.0),
            },
            Verdict {
                id: "P6",
                what: "inclusive shares vs perf record (call paths)",
                target: "(measured, no target)",
                measured: format!("largest difference {worst_incl:.1} points"),
                met: None,
            },
        ],
    })
}

/// P7: one node-wide profile taken twice at the same time: by the agent in continuous mode
/// (OTLP to the receiver, one window covering the whole run) and by the agent in local mode
/// (gzip'd pprof), with several different workloads running; bytes per distinct stack compared.
/// Both P7 agents leave agents out: each would otherwise profile the other (the local one
/// symbolizing its whole run at the end, say), and the two profiles would hold different work.
const AGENT_COMM: &str = "^profiler-agent$";

pub fn p7_export_size(b: &mut Bench) -> Result<Section> {
    let seconds = b.pick(30, 8);
    let mut busy = Vec::new();
    for name in ["calltree", "syscalls", "threads"] {
        busy.push(start_workload(&b.fp_workload(name)?, &[])?);
    }
    busy.push(start_workload(&b.nofp_workload("nofp")?, &[])?);
    let receiver = b.start_receiver("p7")?;
    let daemon = b.start_daemon(
        "p7",
        &[
            "--otlp-endpoint",
            &receiver.endpoint(),
            "--export-interval",
            "1h",
            "--exclude-comm",
            AGENT_COMM,
        ],
    )?;
    let pprof = b.tmp("p7.pb.gz");
    let (summary, _) = b.run_local(&[
        "--exclude-comm",
        AGENT_COMM,
        "--duration",
        &format!("{seconds}s"),
        "--output",
        pprof.to_str().context("path")?,
    ])?;
    // SIGTERM exports the window that began when the daemon started.
    daemon.stop()?;
    let recorded = receiver.out.clone();
    receiver.stop()?;
    drop(busy);
    let mut cmd = Command::new(setup::test_tools_dir().join("venv/bin/python"));
    cmd.arg(b.root.join("tests/readers/profile_bytes.py"))
        .arg("--otlp")
        .arg(&recorded)
        .arg("--pprof")
        .arg(&pprof);
    b.record(&cmd);
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("profile_bytes.py: {}", String::from_utf8_lossy(&out.stderr));
    }
    let r: Value = serde_json::from_slice(&out.stdout)?;
    let n = |side: &str, k: &str| r[side][k].as_f64().unwrap_or(f64::NAN);
    let per = |side: &str, k: &str| n(side, k) / n(side, "samples").max(1.0);
    let ratio_gz = per("otlp", "gzip_bytes") / per("pprof", "gzip_bytes");
    let ratio_raw = per("otlp", "raw_bytes") / per("pprof", "raw_bytes");
    let md = format!(
        "Node-wide, {seconds} s, calltree, syscalls, threads and nofp busy. Two agents at the same time: continuous mode \
         exporting OTLP (`--export-interval 1h`, so SIGTERM exports the whole run as one window, split into requests of \
         at most 4 MiB), and local mode writing gzip'd pprof. Both leave out the agents (`--exclude-comm '^profiler-agent$'`), \
         which would otherwise profile each other, so both profiles hold the same processes. OTLP sizes are those of the requests the independent \
         receiver got (re-serialized with the official Python classes; gzip'd at the default level per request, as \
         gRPC's gzip sends them). A distinct stack is one OTLP `Sample` (per process) or one pprof `Sample`.\n\n\
         | format | requests | distinct stacks | bytes | gzip'd bytes | bytes per stack | gzip'd bytes per stack |\n|---|---|---|---|---|---|---|\n\
         | OTLP | {} | {} | {} | {} | {} | **{}** |\n| pprof (.pb.gz) | 1 | {} | {} | {} | {} | **{}** |\n\n\
         OTLP / pprof per distinct stack: {} gzip'd, {} uncompressed. (The local run's own count: {} distinct stacks, {} samples.)\n",
        r["otlp"]["requests"],
        r["otlp"]["samples"],
        r["otlp"]["raw_bytes"],
        r["otlp"]["gzip_bytes"],
        fmt(per("otlp", "raw_bytes")),
        fmt(per("otlp", "gzip_bytes")),
        r["pprof"]["samples"],
        r["pprof"]["raw_bytes"],
        r["pprof"]["gzip_bytes"],
        fmt(per("pprof", "raw_bytes")),
        fmt(per("pprof", "gzip_bytes")),
        fmt(ratio_gz),
        fmt(ratio_raw),
        summary.distinct_stacks,
        summary.samples,
    );
    if r["otlp"]["size_mismatches"].as_u64().unwrap_or(0) > 0 {
        bail!("re-serialized OTLP requests differ in size from what the receiver got: {r}");
    }
    Ok(Section {
        title: "P7: OTLP size against pprof".into(),
        markdown: md,
        json: r.clone(),
        commands: b.take_commands(),
        verdicts: vec![Verdict {
            id: "P7",
            what: "OTLP bytes per distinct stack vs gzip'd pprof",
            target: "≤ pprof",
            measured: format!(
                "{} vs {} gzip'd bytes per stack ({}×; {}× uncompressed)",
                fmt(per("otlp", "gzip_bytes")),
                fmt(per("pprof", "gzip_bytes")),
                fmt(ratio_gz),
                fmt(ratio_raw)
            ),
            met: Some(ratio_gz <= 1.0),
        }],
    })
}
