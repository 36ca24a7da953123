//! `cargo xtask bench`: the performance and accuracy benchmarks (P1–P7 and the unwinding ones),
//! run against the real agent, real BPF, `perf` and `addr2line` on this machine.
//!
//! Every number in the report is measured in the same run and, where a comparison is the point,
//! given as a ratio of measurements taken side by side or alternately, since the machines are
//! shared and noisy. The report (markdown) and the raw measurements (JSON) go to `target/bench/`;
//! a full run (no `--quick`, no `--only`) also rewrites the section of `docs/benchmarks.md` between
//! `<!-- bench:begin -->` and `<!-- bench:end -->`. `docs/benchmarks.md` explains each method.
//!
//! Modules: [`overhead`] (P1 slowdown, P2 agent CPU, P3 memory), [`bpf_cost`] (P4 and the
//! unwinding benchmarks), [`quality`] (P5 symbolization, P6 accuracy, P7 export size),
//! [`harness`] (processes, `/proc`, the agent in both modes), [`parse`] (pure parsers).
mod bpf_cost;
mod harness;
mod overhead;
mod parse;
mod quality;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::{build, setup};
use harness::Bench;

/// The benchmarks, by the ids the issues give them.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Id {
    /// Slowdown of a CPU-bound workload: no profiler vs the agent vs `perf record`.
    P1,
    /// Agent CPU (userspace + BPF) node-wide, exporting OTLP, at 19 and 99 Hz.
    P2,
    /// Agent RSS, steady and peak, node-wide with process churn.
    P3,
    /// BPF cost per sample (`kernel.bpf_stats_enabled`), frame pointers and DWARF tables.
    P4,
    /// Symbolization throughput against `addr2line -f -i`.
    P5,
    /// Leaf shares against `perf record` on the same process at the same time.
    P6,
    /// OTLP bytes per distinct stack against the same profile as gzip'd pprof.
    P7,
    /// Unwind tables: build time and size per MiB of `.eh_frame`; agent RSS with 200 binaries.
    Unwind,
}

impl Id {
    const ALL: [Id; 8] = [
        Id::P1,
        Id::P2,
        Id::P3,
        Id::P4,
        Id::P5,
        Id::P6,
        Id::P7,
        Id::Unwind,
    ];
}

#[derive(clap::Args, Debug, Default)]
pub struct Options {
    /// Short runs for a smoke test: the numbers are not fit for the docs, and the docs are left alone.
    #[arg(long)]
    pub quick: bool,
    /// Only these benchmarks, comma-separated (p1,…,p7,unwind). Default: all.
    #[arg(long, value_enum, value_delimiter = ',', ignore_case = true)]
    pub only: Vec<Id>,
    /// Rewrite the results section of docs/benchmarks.md even for --quick or --only runs
    /// (a full run of everything always does).
    #[arg(long, conflicts_with = "no_docs")]
    pub update_docs: bool,
    /// Never touch docs/benchmarks.md.
    #[arg(long)]
    pub no_docs: bool,
    /// Use this agent binary instead of building target/release/profiler-agent.
    #[arg(long)]
    pub agent: Option<PathBuf>,
}

/// A target from the issue and how a run did against it.
pub struct Verdict {
    pub id: &'static str,
    pub what: &'static str,
    pub target: &'static str,
    pub measured: String,
    /// `None` where the run could not decide (e.g. a measurement is missing).
    pub met: Option<bool>,
}

/// One benchmark's results: markdown for the report, raw numbers for the JSON.
pub struct Section {
    pub title: String,
    pub markdown: String,
    pub json: Value,
    pub commands: Vec<String>,
    pub verdicts: Vec<Verdict>,
}

pub fn run(opts: &Options) -> Result<()> {
    if !setup::is_root() {
        bail!("the benchmarks load BPF programs and run perf: run them as root");
    }
    // perf, addr2line's binutils, gcc, the OTLP receiver's Python packages.
    setup::run(&setup::Options {
        target: None,
        test_tools: true,
    })?;
    let agent = match &opts.agent {
        Some(path) => path.clone(),
        None => build::build(&build::Options {
            release: true,
            target: None,
        })?,
    };
    let selected: Vec<Id> = if opts.only.is_empty() {
        Id::ALL.to_vec()
    } else {
        let mut ids = opts.only.clone();
        ids.sort();
        ids.dedup();
        ids
    };
    let mut bench = Bench::new(agent, opts.quick)?;
    let machine_before = harness::machine_facts();
    let cpu_before = harness::cpu_times()?;
    let started = Instant::now();
    let mut sections = Vec::new();
    for id in &selected {
        eprintln!("bench: {id:?}");
        let mut section = run_one(&mut bench, *id);
        // A failure is reported, and the benchmark run once more: on a shared machine a failure
        // can come from something transient (another test's process, a crash of the agent on
        // what it found), and the report should say so without losing the numbers.
        if let Err(e) = &section {
            let first = format!("{e:#}");
            let first_commands = bench.take_commands();
            eprintln!("bench: {id:?} failed: {first}; running it once more");
            section = run_one(&mut bench, *id).map(|mut s| {
                s.markdown.push_str(&format!(
                    "\n**A first attempt failed** and this benchmark was run again: `{}`\n",
                    parse::error_gist(&first)
                ));
                s.json = json!({ "results": s.json, "first_attempt_error": first });
                s
            });
            if section.is_err() {
                bench.record_text(first_commands.join("\n"));
            }
        }
        match section {
            Ok(s) => sections.push(s),
            // One benchmark failing must not throw away the others' numbers; the report says so.
            Err(e) => {
                eprintln!("bench: {id:?} failed again: {e:#}");
                sections.push(Section {
                    title: format!("{id:?} (failed)"),
                    markdown: format!(
                        "The benchmark failed twice; the second time: `{}`\n",
                        parse::error_gist(&format!("{e:#}"))
                    ),
                    json: json!({ "error": format!("{e:#}") }),
                    commands: bench.take_commands(),
                    verdicts: Vec::new(),
                });
            }
        }
    }
    let busy = harness::cpu_times()?.busy_since(&cpu_before);
    let machine = json!({
        "before": machine_before,
        "after": harness::machine_facts(),
        "busy_percent_all_cpus": busy,
        "seconds": started.elapsed().as_secs_f64(),
        "quick": opts.quick,
    });
    let markdown = render(&machine, &sections, opts, &selected);
    let out = bench.out_dir().to_path_buf();
    std::fs::write(out.join("results.md"), &markdown)?;
    let raw = json!({
        "machine": machine,
        "sections": sections.iter().map(|s| json!({
            "title": s.title,
            "commands": s.commands,
            "results": s.json,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&raw)?,
    )?;
    eprintln!(
        "bench: report in {}, raw numbers in {}",
        out.join("results.md").display(),
        out.join("results.json").display()
    );
    let full = !opts.quick && opts.only.is_empty();
    if !opts.no_docs && (full || opts.update_docs) {
        update_docs(
            &setup::workspace_root().join("docs/benchmarks.md"),
            &markdown,
        )?;
    }
    println!("{markdown}");
    Ok(())
}

fn run_one(bench: &mut Bench, id: Id) -> Result<Section> {
    match id {
        Id::P1 => overhead::p1_slowdown(bench),
        Id::P2 => overhead::p2_agent_cpu(bench),
        Id::P3 => overhead::p3_memory(bench),
        Id::P4 => bpf_cost::p4_bpf_cost(bench),
        Id::P5 => quality::p5_symbolization(bench),
        Id::P6 => quality::p6_accuracy(bench),
        Id::P7 => quality::p7_export_size(bench),
        Id::Unwind => bpf_cost::unwind(bench),
    }
}

const BEGIN: &str = "<!-- bench:begin -->";
const END: &str = "<!-- bench:end -->";

fn update_docs(path: &Path, markdown: &str) -> Result<()> {
    let doc =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let body = format!(
        "<!-- Written by `cargo xtask bench`; edits between these markers are overwritten. -->\n{markdown}"
    );
    std::fs::write(path, parse::replace_marked(&doc, BEGIN, END, &body)?)?;
    eprintln!("bench: rewrote the results in {}", path.display());
    Ok(())
}

/// The report: machine and run facts, the targets at a glance, then each benchmark.
fn render(machine: &Value, sections: &[Section], opts: &Options, selected: &[Id]) -> String {
    let mut md = String::new();
    let before = &machine["before"];
    let after = &machine["after"];
    let _ = writeln!(md, "### Run\n");
    let only: Vec<String> = selected.iter().map(|i| format!("{i:?}")).collect();
    let command = format!(
        "cargo xtask bench{}{}",
        if opts.quick { " --quick" } else { "" },
        if opts.only.is_empty() {
            String::new()
        } else {
            format!(" --only {}", only.join(",").to_lowercase())
        }
    );
    let _ = writeln!(md, "- command: `{command}` (as root)");
    let _ = writeln!(md, "- date: {}", before["date"].as_str().unwrap_or("?"));
    let _ = writeln!(
        md,
        "- machine: {} × {}, {} GiB RAM; kernel {}",
        before["cpus"],
        before["cpu_model"].as_str().unwrap_or("?"),
        before["mem_gib"],
        before["kernel"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        md,
        "- source: {}; {}; {}",
        before["git"].as_str().unwrap_or("?"),
        before["perf"].as_str().unwrap_or("?"),
        before["addr2line"].as_str().unwrap_or("?")
    );
    let _ = writeln!(
        md,
        "- load: loadavg {} before, {} after; all CPUs {:.0} % busy over the {:.0} s run (the benchmarks' own workloads included)",
        before["loadavg"].as_str().unwrap_or("?"),
        after["loadavg"].as_str().unwrap_or("?"),
        machine["busy_percent_all_cpus"]
            .as_f64()
            .unwrap_or(f64::NAN),
        machine["seconds"].as_f64().unwrap_or(f64::NAN),
    );
    let others = |facts: &Value| facts["other_profilers"].as_u64().unwrap_or(0);
    if others(before) + others(after) > 0 {
        let _ = writeln!(
            md,
            "- **other profiler processes** (`profiler-agent` or `perf`, not the bench's): {} at the start, {} at the end; \
             their BPF programs and sampling share the CPUs with the measurements",
            others(before),
            others(after)
        );
    }
    if opts.quick {
        let _ = writeln!(
            md,
            "- **--quick**: short smoke-test durations; these numbers are noisy and not the reference."
        );
    }
    let _ = writeln!(
        md,
        "\n### Targets\n\n| id | what | target | measured | met |\n|---|---|---|---|---|"
    );
    for v in sections.iter().flat_map(|s| &s.verdicts) {
        let met = match v.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "n/a",
        };
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {met} |",
            v.id, v.what, v.target, v.measured
        );
    }
    for s in sections {
        let _ = writeln!(md, "\n### {}\n\n{}", s.title, s.markdown.trim_end());
        if !s.commands.is_empty() {
            let _ = writeln!(md, "\nCommands:\n```sh");
            for c in &s.commands {
                let _ = writeln!(md, "{c}");
            }
            let _ = writeln!(md, "```");
        }
    }
    md
}
