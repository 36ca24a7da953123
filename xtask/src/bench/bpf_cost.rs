//! The kernel side and the unwinder: P4 (BPF cost per sample with frame pointers and with DWARF
//! tables) and the unwinding issue's numbers (table build time and size, agent memory with
//! many distinct binaries mapped).
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::harness::{Bench, BpfStatsEnabled, Guard, fmt, start_workload};
use super::parse::{self, AgentSummary};
use super::{Section, Verdict};
use crate::setup;

/// One P4 measurement: the agent's own summary of a local-mode run.
struct CostRun {
    scope: String,
    unwind: &'static str,
    summary: AgentSummary,
}

impl CostRun {
    fn ns_per_run(&self) -> f64 {
        self.summary.bpf_ns_per_run.unwrap_or(f64::NAN)
    }

    fn ns_per_counted(&self) -> f64 {
        self.summary.bpf_run_time_ns().unwrap_or(f64::NAN) / self.summary.counted.max(1) as f64
    }
}

/// A fresh directory for unwind tables, so every run builds its own.
fn fresh_cache(b: &Bench, name: &str) -> Result<PathBuf> {
    let dir = b.tmp(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// P4: local-mode runs with `kernel.bpf_stats_enabled=1`, node-wide and `--pid`, with
/// `--unwind fp` and `--unwind dwarf`, while a no-frame-pointer workload (nofp: libc's qsort
/// calling back into the program) and a frame-pointer one (calltree) keep both CPUs busy.
pub fn p4_bpf_cost(b: &mut Bench) -> Result<Section> {
    let nofp = b.nofp_workload("nofp")?;
    let calltree = b.fp_workload("calltree")?;
    let target = start_workload(&nofp, &[])?;
    let _other = start_workload(&calltree, &[])?;
    let _stats = BpfStatsEnabled::new()?;
    let duration = format!("{}s", b.pick(20, 5));
    let pid = target.pid().to_string();
    let mut runs = Vec::new();
    for (scope, pid_arg) in [("node-wide", None), ("--pid nofp", Some(pid.as_str()))] {
        for unwind in ["fp", "dwarf"] {
            let cache = fresh_cache(b, "p4-unwind-cache")?;
            let output = b.tmp(&format!("p4-{unwind}.folded"));
            let mut args = vec![
                "--duration",
                &duration,
                "--unwind",
                unwind,
                "--output",
                output.to_str().context("path")?,
                "--unwind-cache-dir",
                cache.to_str().context("path")?,
            ];
            if let Some(p) = pid_arg {
                args.extend(["--pid", p]);
            }
            let (summary, _) = b.run_local(&args)?;
            if summary.bpf_runs.is_none() {
                bail!("the agent printed no `bpf:` line although kernel.bpf_stats_enabled=1");
            }
            runs.push(CostRun {
                scope: scope.to_string(),
                unwind,
                summary,
            });
        }
    }
    let mut md = format!(
        "Local mode for {duration} each, `kernel.bpf_stats_enabled=1`, with nofp (`-O2 -fomit-frame-pointer`, \
         qsort in libc calling back) and calltree (`-O0 -fno-omit-frame-pointer`) busy. Numbers from the agent's \
         summary (`bpf:` = run_time_ns / run_cnt of its perf_event program, which includes the tail-called unwinder \
         programs; `kernel:` counters).\n\n\
         | scope | unwind | program runs | idle | other processes | counted | ns per run | ns per counted sample | user stacks by tables |\n|---|---|---|---|---|---|---|---|---|\n"
    );
    let mut results = Vec::new();
    for r in &runs {
        let s = &r.summary;
        let by_tables = s.unwind.map_or("–".to_string(), |u| u.stacks.to_string());
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | **{}** | {by_tables} |",
            r.scope,
            r.unwind,
            s.bpf_runs.unwrap_or(0),
            s.idle,
            s.other_processes,
            s.counted,
            fmt(r.ns_per_run()),
            fmt(r.ns_per_counted()),
        );
        results.push(json!({
            "scope": r.scope, "unwind": r.unwind, "bpf_runs": s.bpf_runs,
            "ns_per_run": r.ns_per_run(), "ns_per_counted_sample": r.ns_per_counted(),
            "ticks": s.ticks, "idle": s.idle, "other_processes": s.other_processes,
            "counted": s.counted, "unwind": s.unwind.map(|u| u.json()),
        }));
    }
    let _ = writeln!(
        md,
        "\nA program run is every tick of every CPU: idle ticks and (with --pid) other processes' ticks return after \
         a few comparisons, so ns per run is the mean over cheap and full runs alike, while ns per counted sample \
         charges all program time to the samples that were kept (the cost of one useful sample, an upper bound). \
         Node-wide on a busy machine the two are close; with --pid they differ by the share of ticks that were not \
         the target's."
    );
    let find = |scope: &str, unwind: &str| {
        runs.iter()
            .find(|r| r.scope == scope && r.unwind == unwind)
            .expect("every combination ran")
    };
    let fp = find("node-wide", "fp");
    let dwarf = find("node-wide", "dwarf");
    let pid_fp = find("--pid nofp", "fp");
    let pid_dwarf = find("--pid nofp", "dwarf");
    Ok(Section {
        title: "P4: BPF cost per sample".into(),
        markdown: md,
        json: json!(results),
        commands: b.take_commands(),
        verdicts: vec![
            Verdict {
                id: "P4",
                what: "BPF ns per program run, FP user + kernel stacks, node-wide",
                target: "≤ 6 µs mean",
                measured: format!(
                    "{} µs per run ({} µs per counted sample)",
                    fmt(fp.ns_per_run() / 1e3),
                    fmt(fp.ns_per_counted() / 1e3)
                ),
                met: Some(fp.ns_per_run() <= 6000.0),
            },
            Verdict {
                id: "unwind",
                what: "BPF cost per counted sample, DWARF vs FP",
                target: "(measured, no target)",
                measured: format!(
                    "node-wide {} vs {} µs ({}×); --pid nofp {} vs {} µs ({}×)",
                    fmt(dwarf.ns_per_counted() / 1e3),
                    fmt(fp.ns_per_counted() / 1e3),
                    fmt(dwarf.ns_per_counted() / fp.ns_per_counted()),
                    fmt(pid_dwarf.ns_per_counted() / 1e3),
                    fmt(pid_fp.ns_per_counted() / 1e3),
                    fmt(pid_dwarf.ns_per_counted() / pid_fp.ns_per_counted()),
                ),
                met: None,
            },
        ],
    })
}

/// The unwinding issue's numbers: the table builder's own measurement (an ignored test in
/// profiler-agent, run here), and agent memory node-wide with `--unwind dwarf` while many
/// distinct small binaries run, against the same run without them.
pub fn unwind(b: &mut Bench) -> Result<Section> {
    let builds = table_builds(b)?;
    let mut md = String::from(
        "**Table build**, from the table builder's measurement (`measure_table_builds`, an ignored test that builds the \
         tables of libc, of its own test binary and of the largest objects it finds): rows are 12 bytes each.\n\n\
         | object | .eh_frame bytes | FDEs | rows | table bytes | table bytes per MiB of .eh_frame | build ms | peak RSS growth KiB |\n|---|---|---|---|---|---|---|---|\n",
    );
    for t in &builds {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            t.object,
            t.eh_frame_bytes,
            t.fdes,
            t.rows,
            t.row_bytes,
            fmt(t.bytes_per_mib),
            fmt(t.build_ms),
            t.peak_kib
        );
    }
    let count = b.pick(200, 20);
    let variants = build_variants(b, count)?;
    let duration = format!("{}s", b.pick(20, 8));
    let run = |b: &mut Bench, name: &str| -> Result<AgentSummary> {
        let cache = fresh_cache(b, &format!("{name}-cache"))?;
        let output = b.tmp(&format!("{name}.folded"));
        let (summary, _) = b.run_local(&[
            "--duration",
            &duration,
            "--unwind",
            "dwarf",
            "--output",
            output.to_str().context("path")?,
            "--unwind-cache-dir",
            cache.to_str().context("path")?,
        ])?;
        Ok(summary)
    };
    let baseline = run(b, "unwind-baseline")?;
    let filtered_baseline = filtered_run(b, "unwind-filtered-baseline", &duration)?;
    let mut running: Vec<Guard> = Vec::with_capacity(variants.len());
    for v in &variants {
        running.push(start_workload(v, &[])?);
    }
    b.record_text(format!(
        "# meanwhile: {count} copies of tests/workloads/variant.c, each built with its own -DVARIANT=n \
         (-O2 -g -fomit-frame-pointer), each busy about 0.5 ms every 200 ms"
    ));
    let many = run(b, "unwind-many")?;
    let filtered = filtered_run(b, "unwind-filtered-many", &duration)?;
    drop(running);
    let folded = std::fs::read_to_string(b.tmp("unwind-many.folded"))?;
    let sampled: std::collections::BTreeSet<&str> = folded
        .lines()
        .filter_map(|l| l.split(';').next())
        .filter(|comm| comm.starts_with("variant-"))
        .collect();
    let rss = |s: &AgentSummary| s.max_rss_mib.unwrap_or(f64::NAN);
    let _ = writeln!(
        md,
        "\n**Agent memory with {count} distinct binaries mapped**: local mode, node-wide, `--unwind dwarf`, {duration}, \
         fresh table cache; once with only the usual processes, once with {count} copies of tests/workloads/variant.c \
         running (distinct code and build ids, each lightly busy).\n\n\
         | run | max RSS (MiB) | samples | variants sampled | unwind |\n|---|---|---|---|---|\n\
         | baseline | {} | {} | – | {} |\n| {count} binaries | **{}** | {} | {} | {} |",
        fmt(rss(&baseline)),
        baseline.samples,
        short_unwind(&baseline),
        fmt(rss(&many)),
        many.samples,
        sampled.len(),
        short_unwind(&many),
    );
    let _ = writeln!(
        md,
        "\nThe runs above profile everything on the machine, so their memory depends on what else runs (on a build \
         machine: compilers, whose symbols and tables are large). To isolate the {count} binaries: continuous mode, \
         `--unwind dwarf --exporter none --include-comm '^variant-'` (only those processes are symbolized and get \
         tables; the kernel side still samples everything), {duration}, VmRSS each second, VmHWM and the table \
         counters from /metrics at the end; before the copies start, and while they run.\n\n\
         | run | RSS at the end (MiB) | anon / file | peak (VmHWM) | tables loaded / evicted / too big or no room | processes with tables |\n|---|---|---|---|---|---|\n\
         | filter matches nothing yet | {} | {} | {} |\n| {count} binaries | {} | **{}** | {} |",
        filtered_baseline.row(),
        filtered_baseline.tables(),
        fmt(filtered_baseline.unwind_processes),
        filtered.row(),
        filtered.tables(),
        fmt(filtered.unwind_processes),
    );
    let libc = builds.iter().find(|t| t.object.starts_with("libc"));
    let largest = builds.iter().max_by_key(|t| t.eh_frame_bytes);
    let describe = |t: Option<&parse::TableBuild>| {
        t.map_or("–".to_string(), |t| {
            format!(
                "{}: {} B/MiB, {} ms",
                t.object,
                fmt(t.bytes_per_mib),
                fmt(t.build_ms)
            )
        })
    };
    Ok(Section {
        title: "Unwinding: table builds, memory with many binaries".into(),
        markdown: md,
        json: json!({
            "table_builds": builds.iter().map(|t| json!({
                "object": t.object, "eh_frame_bytes": t.eh_frame_bytes, "fdes": t.fdes,
                "rows": t.rows, "row_bytes": t.row_bytes, "bytes_per_mib": t.bytes_per_mib,
                "build_ms": t.build_ms, "peak_kib": t.peak_kib,
            })).collect::<Vec<_>>(),
            "variants": count, "variants_sampled": sampled.len(),
            "baseline_max_rss_mib": baseline.max_rss_mib, "many_max_rss_mib": many.max_rss_mib,
            "baseline_unwind": baseline.unwind.map(|u| u.json()),
            "many_unwind": many.unwind.map(|u| u.json()),
            "many_tables_loaded": many.tables_loaded(),
            "filtered_baseline": filtered_baseline.json(), "filtered_many": filtered.json(),
        }),
        commands: b.take_commands(),
        verdicts: vec![
            Verdict {
                id: "unwind",
                what: "table bytes per MiB of .eh_frame, build time",
                target: "(measured, no target)",
                measured: format!("{}; {}", describe(libc), describe(largest)),
                met: None,
            },
            Verdict {
                id: "unwind",
                what: "agent RSS with many distinct binaries mapped (--unwind dwarf)",
                target: "(measured, no target)",
                measured: format!(
                    "only the {count}: peak {} MiB ({} MiB before they started); node-wide: {} MiB with them ({} sampled), {} MiB without",
                    fmt(filtered.peak_mib),
                    fmt(filtered_baseline.peak_mib),
                    fmt(rss(&many)),
                    sampled.len(),
                    fmt(rss(&baseline))
                ),
                met: None,
            },
        ],
    })
}

/// Memory and unwind-table counters of a continuous-mode run limited to the variant copies.
struct FilteredRun {
    rss_mib: f64,
    anon_mib: f64,
    file_mib: f64,
    peak_mib: f64,
    loaded: f64,
    evicted: f64,
    too_big: f64,
    unwind_processes: f64,
}

impl FilteredRun {
    fn row(&self) -> String {
        format!(
            "{} | {} / {} | {}",
            fmt(self.rss_mib),
            fmt(self.anon_mib),
            fmt(self.file_mib),
            fmt(self.peak_mib)
        )
    }

    fn tables(&self) -> String {
        format!(
            "{} / {} / {}",
            fmt(self.loaded),
            fmt(self.evicted),
            fmt(self.too_big)
        )
    }

    fn json(&self) -> serde_json::Value {
        json!({
            "rss_mib": self.rss_mib, "anon_mib": self.anon_mib, "file_mib": self.file_mib,
            "peak_mib": self.peak_mib, "tables_loaded": self.loaded, "tables_evicted": self.evicted,
            "tables_too_big": self.too_big, "unwind_processes": self.unwind_processes,
        })
    }
}

/// Continuous mode, tables, only processes named `variant-*`, for `duration` (e.g. `20s`).
fn filtered_run(b: &mut Bench, name: &str, duration: &str) -> Result<FilteredRun> {
    let seconds: u64 = duration.trim_end_matches('s').parse()?;
    let cache = fresh_cache(b, &format!("{name}-cache"))?;
    let agent = b.start_daemon(
        name,
        &[
            "--unwind",
            "dwarf",
            "--exporter",
            "none",
            "--export-interval",
            "5s",
            "--include-comm",
            "^variant-",
            "--unwind-cache-dir",
            cache.to_str().context("path")?,
        ],
    )?;
    std::thread::sleep(std::time::Duration::from_secs(seconds));
    let mib =
        |field: &str| -> Result<f64> { Ok(agent.status_bytes(field)? as f64 / (1 << 20) as f64) };
    let tables = |event: &str| {
        agent
            .metric(&format!("kalypso_unwind_tables_total{{event=\"{event}\"}}"))
            .unwrap_or(f64::NAN)
    };
    let run = FilteredRun {
        rss_mib: mib("VmRSS")?,
        anon_mib: mib("RssAnon")?,
        file_mib: mib("RssFile")?,
        peak_mib: mib("VmHWM")?,
        loaded: tables("loaded"),
        evicted: tables("evicted"),
        too_big: tables("too_big"),
        unwind_processes: agent.metric("kalypso_unwind_processes").unwrap_or(f64::NAN),
    };
    agent.stop()?;
    Ok(run)
}

/// What the table needs of the unwinder's counters: stacks by tables and the table counters.
fn short_unwind(s: &AgentSummary) -> String {
    let Some(u) = s.unwind else {
        return "–".into();
    };
    format!(
        "{} stacks by tables; tables: {} loaded, {} evicted, {} without CFI or unreadable, {} too big",
        u.stacks, u.tables_loaded, u.tables_evicted, u.tables_without_cfi, u.tables_too_big
    )
}

/// Runs the table builder's ignored measurement test and parses its table.
fn table_builds(b: &mut Bench) -> Result<Vec<parse::TableBuild>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&b.root).args([
        "test",
        "--release",
        "-p",
        "profiler-agent",
        "--lib",
        "measure_table_builds",
        "--",
        "--ignored",
        "--nocapture",
    ]);
    b.record(&cmd);
    let out = cmd.output().context("running cargo test")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "the table-builder measurement failed: {}{}",
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse::table_builds(&stdout)
}

/// Compiles `count` copies of tests/workloads/variant.c, each with its own `-DVARIANT=n` (and so
/// its own code and build id), reusing copies newer than the source.
fn build_variants(b: &mut Bench, count: usize) -> Result<Vec<PathBuf>> {
    let src = b.root.join("tests/workloads/variant.c");
    let src_time = std::fs::metadata(&src)?.modified()?;
    let dir = b.out_dir().join("bin/variants");
    std::fs::create_dir_all(&dir)?;
    let mut out = Vec::with_capacity(count);
    for n in 0..count {
        let bin = dir.join(format!("variant-{n:03}"));
        let fresh = std::fs::metadata(&bin)
            .and_then(|m| m.modified())
            .is_ok_and(|t| t > src_time);
        if !fresh {
            setup::run_checked(
                Command::new("gcc")
                    .args([
                        "-O2",
                        "-g",
                        "-fomit-frame-pointer",
                        "-fno-optimize-sibling-calls",
                        "-Wl,--build-id",
                        &format!("-DVARIANT={n}"),
                        "-o",
                    ])
                    .arg(&bin)
                    .arg(&src),
            )?;
        }
        out.push(bin);
    }
    Ok(out)
}
