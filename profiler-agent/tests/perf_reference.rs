//! `perf record` is the reference for what a profile should contain: the same workload, sampled
//! by perf and by the agent at the same time, must give the same function shares.
mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};

use common::*;

type Stacks = Vec<(Vec<String>, u64)>;

/// Stacks from `perf script`, leaf first.
fn perf_stacks(data: &std::path::Path) -> Stacks {
    perf_script_stacks(data, &[])
        .into_iter()
        .map(|frames| (frames, 1))
        .collect()
}

/// Our folded stacks turned leaf first, kernel suffix removed, like perf's.
fn our_stacks(folded: &BTreeMap<Vec<String>, u64>) -> Stacks {
    folded
        .iter()
        .map(|(stack, n)| {
            let frames = stack
                .iter()
                .rev()
                .map(|f| f.strip_suffix("_[k]").unwrap_or(f).to_string())
                .collect();
            (frames, *n)
        })
        .collect()
}

/// Share of samples (0–100) in which each function is on the stack (inclusive) and at the leaf (self).
fn shares(stacks: &Stacks) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let total: u64 = stacks.iter().map(|(_, n)| n).sum();
    let mut inclusive: BTreeMap<String, f64> = BTreeMap::new();
    let mut leaf: BTreeMap<String, f64> = BTreeMap::new();
    for (stack, n) in stacks {
        let pct = 100.0 * *n as f64 / total as f64;
        let mut seen = std::collections::BTreeSet::new();
        for f in stack {
            if seen.insert(f) {
                *inclusive.entry(f.clone()).or_default() += pct;
            }
        }
        if let Some(f) = stack.first() {
            *leaf.entry(f.clone()).or_default() += pct;
        }
    }
    (inclusive, leaf)
}

/// Profiles one workload with perf and the agent at once, and compares the shares of perf's top
/// functions (inclusive and self). The two samplers are independent timers over the same process,
/// so each share differs by binomial noise alone: a share may differ by `tolerance` points, or by
/// three standard deviations of that noise where that is more (about 6.5 points for a 75 % share
/// at ~800 samples each).
fn compare_with_perf(workload: &std::path::Path, functions: &[&str], tolerance: f64) {
    let w = Workload::start(workload, &[]);
    let dir = temp_dir();
    let perf_data = dir.path().join("perf.data");
    let folded = dir.path().join("cpu.folded");
    let pid = w.pid().to_string();
    let perf = Command::new("perf")
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
        .arg(&perf_data)
        .args(["--", "sleep", "8"])
        .stdout(Stdio::null())
        .spawn()
        .expect("perf runs (apt-get install linux-perf)");
    let ours = run_agent(&[
        "--pid",
        &pid,
        "--duration",
        "8s",
        "--output",
        folded.to_str().unwrap(),
    ]);
    assert!(ours.status.success());
    assert!(perf.wait_with_output().unwrap().status.success());

    let theirs = perf_stacks(&perf_data);
    let mine = our_stacks(&read_folded(&folded));
    let (perf_incl, perf_self) = shares(&theirs);
    let (our_incl, our_self) = shares(&mine);
    let perf_total: u64 = theirs.iter().map(|(_, n)| n).sum();
    let our_total: u64 = mine.iter().map(|(_, n)| n).sum();
    eprintln!("samples: perf {perf_total}, agent {our_total}");
    assert!(perf_total > 300 && our_total > 300);
    let sample_ratio = our_total as f64 / perf_total as f64;
    assert!(
        (0.9..=1.1).contains(&sample_ratio),
        "sample counts differ: ours {our_total}, perf {perf_total}"
    );

    let mut top_self: Vec<(&String, &f64)> = perf_self.iter().collect();
    top_self.sort_by(|a, b| b.1.total_cmp(a.1));
    let mut failures = Vec::new();
    eprintln!("{:<40} {:>8} {:>8}", "function", "perf %", "agent %");
    for (kind, f, p, o) in functions
        .iter()
        .map(|f| {
            (
                "total",
                f.to_string(),
                perf_incl.get(*f).copied().unwrap_or(0.0),
                our_incl.get(*f).copied().unwrap_or(0.0),
            )
        })
        .chain(top_self.iter().take(5).map(|(f, p)| {
            (
                "self",
                f.to_string(),
                **p,
                our_self.get(*f).copied().unwrap_or(0.0),
            )
        }))
    {
        let share = (p + o) / 200.0;
        let noise = 100.0
            * (share * (1.0 - share) * (1.0 / perf_total as f64 + 1.0 / our_total as f64)).sqrt();
        let allowed = tolerance.max(3.0 * noise);
        eprintln!(
            "{:<40} {p:>8.1} {o:>8.1}   (±{allowed:.1})",
            format!("{f} ({kind})")
        );
        if (p - o).abs() > allowed {
            failures.push(format!("{f} ({kind}): perf {p:.1} %, agent {o:.1} %"));
        }
    }
    assert!(
        failures.is_empty(),
        "shares differ from perf by more than sampling noise allows: {failures:#?}"
    );
}

#[test]
fn call_tree_shares_agree_with_perf() {
    if !require_root() {
        return;
    }
    compare_with_perf(
        &build_c("calltree"),
        &["main", "outer", "hot_a", "hot_b", "work"],
        2.0,
    );
}

#[test]
fn kernel_heavy_shares_agree_with_perf() {
    if !require_root() {
        return;
    }
    let entry = if cfg!(target_arch = "aarch64") {
        "el0_svc"
    } else {
        "do_syscall_64"
    };
    compare_with_perf(
        &build_c("syscalls"),
        &["main", "read_zeroes", "raw_read", entry],
        2.0,
    );
}
