//! What the agent costs the machine it runs on: P1 (slowdown of a CPU-bound workload, against
//! `perf record`), P2 (the agent's own CPU, userspace and BPF) and P3 (its memory under process
//! churn).
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::harness::{Bench, BpfStatsEnabled, Guard, fmt, start_workload};
use super::parse::{self, Spread};
use super::{Section, Verdict};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Profiler {
    None,
    Agent,
    Perf,
}

impl Profiler {
    fn label(self) -> &'static str {
        match self {
            Profiler::None => "no profiler",
            Profiler::Agent => "agent, node-wide, 99 Hz",
            Profiler::Perf => "perf record -F 99 -g -a",
        }
    }
}

/// Runs `fixed_work ROUNDS` and returns (wall, CPU) seconds as it measured them.
fn fixed_work(b: &mut Bench, program: &Path, rounds: u64) -> Result<(f64, f64)> {
    let mut cmd = Command::new(program);
    cmd.arg(rounds.to_string());
    b.record(&cmd);
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("{} failed: {}", b.show(&cmd), out.status);
    }
    parse::fixed_work_line(&String::from_utf8_lossy(&out.stdout))
}

/// One run of the workload under `profiler`, which is started before and stopped after it.
fn one_run(
    b: &mut Bench,
    profiler: Profiler,
    program: &Path,
    rounds: u64,
    settle: Duration,
) -> Result<(f64, f64)> {
    match profiler {
        Profiler::None => {
            std::thread::sleep(settle);
            fixed_work(b, program, rounds)
        }
        Profiler::Agent => {
            let agent = b.start_daemon("p1-agent", &["--exporter", "none", "-F", "99"])?;
            std::thread::sleep(settle);
            let result = fixed_work(b, program, rounds);
            agent.stop()?;
            result
        }
        Profiler::Perf => {
            let data = b.tmp("p1-perf.data");
            let mut cmd = Command::new("perf");
            cmd.args([
                "record",
                "-q",
                "-F",
                "99",
                "-g",
                "-e",
                "cpu-clock",
                "-a",
                "-o",
            ])
            .arg(&data);
            b.record(&cmd);
            let mut perf = Guard(
                cmd.stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .context("starting perf (apt-get install linux-perf)")?,
            );
            std::thread::sleep(settle);
            let result = fixed_work(b, program, rounds);
            let status = perf.stop("INT", Duration::from_secs(60))?;
            // perf record ends on SIGINT by raising it again once perf.data is complete.
            if !status.success() && status.signal() != Some(2) {
                bail!("perf record exited with {status}");
            }
            if std::fs::metadata(&data).map_or(0, |m| m.len()) == 0 {
                bail!("perf record wrote no {}", data.display());
            }
            let _ = std::fs::remove_file(&data);
            result
        }
    }
}

/// P1: the same fixed amount of CPU work, run alternately with no profiler, with the agent
/// node-wide at 99 Hz, and with `perf record -F 99 -g -a`; the order rotates every round so
/// that drifting background load hits every condition alike.
pub fn p1_slowdown(b: &mut Bench) -> Result<Section> {
    let program = b.gcc(
        "fixed_work.c",
        "fixed_work",
        &["-O2", "-g", "-fno-omit-frame-pointer"],
    )?;
    let target = b.pick(3.0, 1.0);
    let rounds_total = b.pick(15, 3);
    let settle = Duration::from_millis(b.pick(1000, 500));
    // Calibrate the work to about `target` seconds on this machine now.
    let (wall, _) = fixed_work(b, &program, 200)?;
    let rounds = ((200.0 * target / wall).round() as u64).max(20);
    let order = [Profiler::None, Profiler::Agent, Profiler::Perf];
    let mut runs: BTreeMap<Profiler, Vec<(f64, f64)>> = BTreeMap::new();
    for round in 0..rounds_total {
        for k in 0..order.len() {
            let p = order[(round + k) % order.len()];
            let m = one_run(b, p, &program, rounds, settle)?;
            eprintln!("bench: P1 round {round} {}: {:.3} s", p.label(), m.0);
            runs.entry(p).or_default().push(m);
        }
    }
    let wall = |p: Profiler| -> Vec<f64> { runs[&p].iter().map(|m| m.0).collect() };
    let cpu = |p: Profiler| -> Vec<f64> { runs[&p].iter().map(|m| m.1).collect() };
    // Ratios of runs in the same round: background load drifts more between rounds than within.
    let paired = |p: Profiler| -> Vec<f64> {
        wall(p)
            .iter()
            .zip(wall(Profiler::None))
            .map(|(x, base)| x / base)
            .collect()
    };
    let spread = |v: &[f64]| Spread::of(v).expect("at least one run");
    let base = spread(&wall(Profiler::None));
    let base_cpu = spread(&cpu(Profiler::None));
    let mut md = format!(
        "`fixed_work {rounds}` (tests/workloads/fixed_work.c, `-O2 -fno-omit-frame-pointer`; about {target} s of one CPU), \
         {rounds_total} rounds, each running the three conditions in rotating order. The workload times itself \
         (wall: CLOCK_MONOTONIC; CPU: getrusage user+system), so start-up of the workload and of the profiler is not counted; \
         each profiler is started, given {:.1} s to settle, and stopped after the workload.\n\n\
         | condition | runs | wall median s | wall IQR s | wall min–max s | CPU median s | ratio of medians (wall) | paired ratio median (min–max) | ratio of medians (CPU) |\n|---|---|---|---|---|---|---|---|---|\n",
        settle.as_secs_f64()
    );
    let mut results = json!({ "rounds_of_work": rounds, "rounds": rounds_total });
    let mut ratios = BTreeMap::new();
    let mut cpu_ratios = BTreeMap::new();
    for p in order {
        let w = spread(&wall(p));
        let c = spread(&cpu(p));
        let pr = spread(&paired(p));
        let ratio = w.median / base.median;
        let cpu_ratio = c.median / base_cpu.median;
        ratios.insert(p, (ratio, pr));
        cpu_ratios.insert(p, cpu_ratio);
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {:.3}–{:.3} | {:.3}–{:.3} | {:.3} | {} | {} | {} |",
            p.label(),
            w.n,
            w.median,
            w.p25,
            w.p75,
            w.min,
            w.max,
            c.median,
            if p == Profiler::None {
                "1".into()
            } else {
                format!("{ratio:.4}")
            },
            if p == Profiler::None {
                "1".into()
            } else {
                format!("{:.4} ({:.3}–{:.3})", pr.median, pr.min, pr.max)
            },
            if p == Profiler::None {
                "1".into()
            } else {
                format!("{cpu_ratio:.4}")
            },
        );
        results[format!("{p:?}").to_lowercase()] = json!({
            "wall_s": wall(p), "cpu_s": cpu(p),
            "wall_median_s": w.median, "cpu_median_s": c.median,
            "ratio_of_medians": ratio, "paired_ratio_median": pr.median,
            "paired_ratio_min": pr.min, "paired_ratio_max": pr.max,
        });
    }
    let noise = 100.0 * (base.p75 - base.p25) / base.median;
    let _ = writeln!(
        md,
        "\nRun-to-run noise without any profiler: IQR {noise:.2} % of the median, range {:.2} %. \
         A ratio inside that noise is not a measured slowdown either way; the target is then marked n/a. \
         CPU time (what the workload was charged) is steadier than wall time on a shared machine, but it leaves \
         out time spent in interrupt context where the kernel accounts IRQ time separately.",
        100.0 * (base.max - base.min) / base.median
    );
    let (agent, agent_pr) = ratios[&Profiler::Agent];
    let (perf, _) = ratios[&Profiler::Perf];
    results["noise_iqr_percent"] = json!(noise);
    Ok(Section {
        title: "P1: slowdown of a CPU-bound workload".into(),
        markdown: md,
        json: results,
        commands: b.take_commands(),
        verdicts: vec![Verdict {
            id: "P1",
            what: "slowdown, agent node-wide 99 Hz vs none vs perf",
            target: "≤ 1.005× and no worse than perf",
            measured: format!(
                "agent {agent:.4}× (paired median {:.4}, {:.3}–{:.3}), perf {perf:.4}×; CPU time agent {:.4}×, perf {:.4}×; noise IQR {noise:.2} %{}",
                agent_pr.median,
                agent_pr.min,
                agent_pr.max,
                cpu_ratios[&Profiler::Agent],
                cpu_ratios[&Profiler::Perf],
                if noise > 0.5 {
                    " (too noisy to decide)"
                } else {
                    ""
                }
            ),
            // A slowdown of half a percent cannot be seen through noise many times that size:
            // then the run decides nothing, either way.
            met: (noise <= 0.5).then_some(agent <= 1.005 && agent <= perf),
        }],
    })
}

/// P2: the agent node-wide, exporting OTLP to the independent receiver, with one busy process;
/// CPU = utime+stime of the agent + the BPF programs' run time, over a steady window, divided by
/// wall time × CPUs.
pub fn p2_agent_cpu(b: &mut Bench) -> Result<Section> {
    let calltree = b.fp_workload("calltree")?;
    let _busy = start_workload(&calltree, &[])?;
    let _stats = BpfStatsEnabled::new()?;
    // Past the first export (10 s after start), whose cold symbolizer reads kallsyms and parses
    // files once: the window measures the steady state; start-up is the "incl. start-up" column.
    let warmup = Duration::from_secs(b.pick(15, 12));
    let window = Duration::from_secs(b.pick(60, 10));
    let mut md = format!(
        "Continuous mode, node-wide, exporting OTLP every 10 s to tests/readers/otlp_receiver.py, with one busy process \
         (calltree) and whatever else the machine runs. After {} s of warm-up (past the first export, whose cold \
         symbolizer reads kallsyms and parses files once), a {} s window: agent CPU is utime+stime \
         from /proc/PID/stat (all threads), BPF time is the run_time_ns delta of the agent's programs \
         (/proc/PID/fdinfo, kernel.bpf_stats_enabled=1); both divided by wall time × {} CPUs.\n\n\
         | frequency | userspace % | BPF % | total % | BPF runs/s | ns per run | CPU incl. start-up (s) | addresses symbolized in the window (cache misses) | processes tracked | requests / bytes received |\n|---|---|---|---|---|---|---|---|---|---|\n",
        warmup.as_secs(),
        window.as_secs(),
        b.cpus
    );
    let mut results = json!({});
    let mut verdicts = Vec::new();
    for (freq, target, limit) in [
        (19, "≤ 0.1 % at 19 Hz", 0.1),
        (99, "≤ 0.15 % at 99 Hz", 0.15),
    ] {
        let receiver = b.start_receiver(&format!("p2-{freq}hz"))?;
        let agent = b.start_daemon(
            &format!("p2-{freq}hz"),
            &[
                "-F",
                &freq.to_string(),
                "--otlp-endpoint",
                &receiver.endpoint(),
            ],
        )?;
        std::thread::sleep(warmup);
        let misses = || agent.metric(MISSES).unwrap_or(f64::NAN);
        let (cpu0, bpf0, miss0, t0) = (
            agent.cpu_seconds(b.clk_tck)?,
            agent.bpf_run_stats()?,
            misses(),
            Instant::now(),
        );
        std::thread::sleep(window);
        let (cpu1, bpf1, miss1) = (
            agent.cpu_seconds(b.clk_tck)?,
            agent.bpf_run_stats()?,
            misses(),
        );
        let wall = t0.elapsed().as_secs_f64();
        let tracked = agent
            .metric("kalypso_processes_tracked")
            .unwrap_or(f64::NAN);
        let total_cpu = cpu1;
        agent.stop()?;
        let (requests, bytes) = receiver.stop()?;
        let user = cpu1 - cpu0;
        let bpf_ns = (bpf1.run_time_ns - bpf0.run_time_ns) as f64;
        let runs = (bpf1.run_cnt - bpf0.run_cnt) as f64;
        let denom = wall * b.cpus as f64;
        let (user_pct, bpf_pct) = (100.0 * user / denom, 100.0 * bpf_ns / 1e9 / denom);
        let total = user_pct + bpf_pct;
        let _ = writeln!(
            md,
            "| {freq} Hz | {user_pct:.3} | {bpf_pct:.3} | **{total:.3}** | {:.0} | {:.0} | {total_cpu:.2} | {} | {} | {requests} / {bytes} |",
            runs / wall,
            bpf_ns / runs.max(1.0),
            fmt(miss1 - miss0),
            fmt(tracked),
        );
        results[format!("{freq}hz")] = json!({
            "window_s": wall, "user_s": user, "bpf_ns": bpf_ns, "bpf_runs": runs,
            "user_percent": user_pct, "bpf_percent": bpf_pct, "total_percent": total,
            "cpu_including_startup_s": total_cpu, "requests": requests, "request_bytes": bytes,
            "symbolizer_misses_in_window": miss1 - miss0, "processes_tracked": tracked,
        });
        verdicts.push(Verdict {
            id: "P2",
            what: "agent CPU (userspace + BPF) / (wall × CPUs), node-wide, OTLP",
            target,
            measured: format!("{total:.3} % ({user_pct:.3} user + {bpf_pct:.3} BPF)"),
            met: Some(total <= limit),
        });
    }
    let _ = writeln!(
        md,
        "\nThe userspace share does not fall in proportion to the frequency: the agent drains every second and \
         symbolizes and encodes every 10 s whatever the rate (between drains it sleeps until the kernel announces a \
         new process). Node-wide it also symbolizes whatever else runs on the machine: on a machine where compilers \
         come and go, the cache misses column shows how much of that work was new addresses."
    );
    Ok(Section {
        title: "P2: agent CPU, node-wide, exporting OTLP".into(),
        markdown: md,
        json: results,
        commands: b.take_commands(),
        verdicts,
    })
}

/// Symbolizer lookups that missed the agent's result cache (new addresses symbolized).
const MISSES: &str = "kalypso_symbolizer_lookups_total{result=\"miss\"}";

/// Spawns short-lived processes until stopped: about 50 `/bin/true` a second plus, every tenth
/// spawn, one of a few distinct programs (some busy for 0.2 s, so they are sampled).
struct Churn {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<u64>,
}

impl Churn {
    fn start(distinct: Vec<(PathBuf, Vec<String>)>) -> Churn {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut children: Vec<Child> = Vec::new();
            let mut spawned = 0u64;
            let mut next = Instant::now();
            while !flag.load(Ordering::Relaxed) {
                let (program, args) = if spawned % 10 == 9 {
                    let (p, a) = &distinct[(spawned as usize / 10) % distinct.len()];
                    (p.clone(), a.clone())
                } else {
                    (PathBuf::from("/bin/true"), Vec::new())
                };
                if let Ok(child) = Command::new(&program)
                    .args(&args)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                {
                    children.push(child);
                    spawned += 1;
                }
                children.retain_mut(|c| matches!(c.try_wait(), Ok(None)));
                next += Duration::from_millis(20);
                std::thread::sleep(next.saturating_duration_since(Instant::now()));
            }
            for mut c in children {
                let _ = c.wait();
            }
            spawned
        });
        Churn { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

/// P3: the agent node-wide with OTLP export for a long run while processes come and go; VmRSS
/// sampled every second, VmHWM at the end.
pub fn p3_memory(b: &mut Bench) -> Result<Section> {
    let duration = Duration::from_secs(b.pick(600, 30));
    let calltree = b.fp_workload("calltree")?;
    let syscalls = b.fp_workload("syscalls")?;
    let threads = b.fp_workload("threads")?;
    let nofp = b.nofp_workload("nofp")?;
    let _busy = start_workload(&calltree, &[])?;
    let short = |p: &Path| (p.to_path_buf(), vec!["0.2".to_string()]);
    let tool = |p: &str, args: &[&str]| {
        (
            PathBuf::from(p),
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        )
    };
    let distinct = vec![
        short(&calltree),
        tool("/bin/ls", &["/usr/lib"]),
        short(&syscalls),
        tool("/usr/bin/env", &[]),
        short(&nofp),
        tool("/bin/sh", &["-c", "echo $$"]),
        short(&threads),
        tool("/bin/date", &[]),
        tool("/usr/bin/id", &[]),
        tool("/usr/bin/sort", &["/proc/cpuinfo"]),
    ];
    let receiver = b.start_receiver("p3")?;
    let agent = b.start_daemon("p3", &["-F", "99", "--otlp-endpoint", &receiver.endpoint()])?;
    b.record_text(format!(
        "# meanwhile: calltree busy; ~50 /bin/true per second, and every tenth spawn one of: {}",
        distinct
            .iter()
            .map(|(p, a)| format!(
                "{} {}",
                p.file_name().unwrap_or_default().to_string_lossy(),
                a.join(" ")
            ))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let churn = Churn::start(distinct);
    let started = Instant::now();
    let mib =
        |field: &str| -> Result<f64> { Ok(agent.status_bytes(field)? as f64 / (1 << 20) as f64) };
    let (mut rss, mut anon, mut file) = (Vec::new(), Vec::new(), Vec::new());
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(1));
        rss.push(mib("VmRSS")?);
        anon.push(mib("RssAnon")?);
        file.push(mib("RssFile")?);
    }
    let spawned = churn.stop();
    let elapsed = started.elapsed().as_secs_f64();
    let peak = agent.status_bytes("VmHWM")? as f64 / (1 << 20) as f64;
    let gauge = |name: &str| agent.metric(name).unwrap_or(f64::NAN);
    let (tracked, open) = (
        gauge("kalypso_processes_tracked"),
        gauge("kalypso_open_objects"),
    );
    agent.stop()?;
    let (requests, bytes) = receiver.stop()?;
    let half = rss.len() / 2;
    let first = Spread::of(&rss[..half.max(1)]).context("no RSS samples")?;
    let second = Spread::of(&rss[half..]).context("no RSS samples")?;
    let anon2 = Spread::of(&anon[half..]).context("no RSS samples")?;
    let file2 = Spread::of(&file[half..]).context("no RSS samples")?;
    let md = format!(
        "Continuous mode, node-wide, 99 Hz, exporting OTLP to the receiver, for {:.0} s; calltree busy throughout; \
         {spawned} processes spawned ({:.0}/s), nine in ten `/bin/true`, the rest ten distinct programs in turn. \
         VmRSS read every second from /proc/PID/status; steady = median of the second half; peak = VmHWM at the end. \
         VmRSS is RssAnon (heap) + RssFile (pages of mapped files, such as the ELF and DWARF data the symbolizer maps; \
         shared with the page cache and reclaimable) + RssShmem; both parts are shown, as medians of the second half.\n\n\
         | steady RSS (MiB) | second half min–max | of which anon / file | first half median | peak (VmHWM) | processes tracked / files open at the end | requests / bytes received |\n|---|---|---|---|---|---|---|\n\
         | **{}** | {}–{} | {} / {} | {} | {} | {} / {} | {requests} / {bytes} |\n",
        elapsed,
        spawned as f64 / elapsed,
        fmt(second.median),
        fmt(second.min),
        fmt(second.max),
        fmt(anon2.median),
        fmt(file2.median),
        fmt(first.median),
        fmt(peak),
        fmt(tracked),
        fmt(open),
    );
    Ok(Section {
        title: "P3: agent memory with process churn".into(),
        markdown: md,
        json: json!({
            "seconds": elapsed, "spawned": spawned, "rss_mib_each_second": rss,
            "rss_anon_mib_each_second": anon, "rss_file_mib_each_second": file,
            "steady_anon_mib": anon2.median, "steady_file_mib": file2.median,
            "steady_mib": second.median, "peak_mib": peak, "first_half_median_mib": first.median,
            "processes_tracked": tracked, "open_objects": open,
            "requests": requests, "request_bytes": bytes,
        }),
        commands: b.take_commands(),
        verdicts: vec![Verdict {
            id: "P3",
            what: "agent RSS, node-wide with process churn",
            target: "≤ 40 MiB steady",
            measured: format!(
                "steady {} MiB ({} anon + {} file), peak {} MiB",
                fmt(second.median),
                fmt(anon2.median),
                fmt(file2.median),
                fmt(peak)
            ),
            met: Some(second.median <= 40.0),
        }],
    })
}
