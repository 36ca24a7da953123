//! The kernel-side table unwinder on programs built without frame pointers: stacks must reach
//! `main` and libc's start code in the right order, where frame pointers alone do not, and the
//! leaf-to-main paths must match `perf record --call-graph dwarf` on the same process.
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;

/// Folded stacks root first; kernel frames dropped (the user side is what is unwound here).
fn user_stacks(folded: &BTreeMap<Vec<String>, u64>) -> Vec<(Vec<String>, u64)> {
    folded
        .iter()
        .map(|(stack, n)| {
            let frames: Vec<String> = stack
                .iter()
                .filter(|f| !f.ends_with("_[k]"))
                .cloned()
                .collect();
            (frames, *n)
        })
        .collect()
}

fn samples_with(stacks: &[(Vec<String>, u64)], pred: impl Fn(&[String]) -> bool) -> u64 {
    stacks.iter().filter(|(s, _)| pred(s)).map(|(_, n)| n).sum()
}

/// Root-first `window` appears contiguously in `stack`.
fn has_window(stack: &[String], window: &[&str]) -> bool {
    stack
        .windows(window.len())
        .any(|w| w.iter().zip(window).all(|(a, b)| a == b))
}

fn profile(workload: &Path, unwind: &str, seconds: &str) -> (BTreeMap<Vec<String>, u64>, String) {
    profile_with(workload, &[], unwind, seconds)
}

fn profile_with(
    workload: &Path,
    args: &[&str],
    unwind: &str,
    seconds: &str,
) -> (BTreeMap<Vec<String>, u64>, String) {
    let w = Workload::start(workload, args);
    let dir = temp_dir();
    let out = dir.path().join("p.folded");
    let cache = dir.path().join("tables");
    let pid = w.pid().to_string();
    let output = run_agent(&[
        "--pid",
        &pid,
        "--duration",
        seconds,
        "--unwind",
        unwind,
        "--unwind-cache-dir",
        cache.to_str().unwrap(),
        "--summary",
        "json",
        "--output",
        out.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "agent failed: {stderr}");
    (read_folded(&out), stderr)
}

fn top(stacks: &[(Vec<String>, u64)]) -> String {
    let mut sorted: Vec<_> = stacks.to_vec();
    sorted.sort_by_key(|s| std::cmp::Reverse(s.1));
    sorted
        .iter()
        .take(6)
        .map(|(s, n)| format!("  {n} {}", s.join(";")))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn c_without_frame_pointers_unwinds_to_main_with_tables_and_not_with_frame_pointers() {
    if !require_root() {
        return;
    }
    let workload = build_c_nofp("nofp");
    let (dwarf, summary) = profile(&workload, "dwarf", "4s");
    let dwarf = user_stacks(&dwarf);
    let total = samples_with(&dwarf, |_| true);
    assert!(total > 100, "too few samples: {total}\n{summary}");
    let to_main = samples_with(&dwarf, |s| {
        has_window(s, &["__libc_start_call_main", "main", "run"])
    });
    let sort = samples_with(&dwarf, |s| {
        has_window(s, &["main", "run", "level_a", "level_b"])
            && s.iter().any(|f| f.contains("qsort"))
    });
    let callback = samples_with(&dwarf, |s| {
        has_window(s, &["level_a", "level_b"])
            && s.iter().any(|f| f == "compare_keys")
            && s.iter().position(|f| f.contains("qsort"))
                < s.iter().position(|f| f == "compare_keys")
    });
    let spin = samples_with(&dwarf, |s| has_window(s, &["main", "run", "spin"]));
    eprintln!(
        "dwarf: {total} samples, {to_main} reach main, {sort} in the sort, {callback} in the callback, {spin} in spin\n{}\n{summary}",
        top(&dwarf)
    );
    assert!(
        to_main * 100 >= total * 95,
        "only {to_main} of {total} stacks reach __libc_start_call_main;main;run:\n{}",
        top(&dwarf)
    );
    assert!(sort * 100 >= total * 20, "sort branch: {sort} of {total}");
    assert!(
        callback > 0,
        "no stack shows qsort calling compare_keys:\n{}",
        top(&dwarf)
    );
    assert!(spin * 100 >= total * 20, "spin branch: {spin} of {total}");
    // Tables were in use, and the kernel counted the stacks they unwound.
    let json = summary_json(&summary);
    assert!(json["tables"].is_object(), "no tables in {json}");
    assert!(unwind_count(&summary, "unwind_started") > 0, "{json}");

    let (fp, _) = profile(&workload, "fp", "2s");
    let fp = user_stacks(&fp);
    let fp_total = samples_with(&fp, |_| true);
    let fp_main = samples_with(&fp, |s| s.iter().any(|f| f == "main"));
    eprintln!("fp: {fp_total} samples, {fp_main} reach main\n{}", top(&fp));
    assert!(
        fp_main * 100 <= fp_total * 50,
        "frame pointers alone should not reach main in a -fomit-frame-pointer build ({fp_main} of {fp_total})"
    );
}

#[test]
fn rust_release_build_unwinds_to_main() {
    if !require_root() {
        return;
    }
    let workload = build_rust_nofp("nofp_rust");
    let (dwarf, summary) = profile(&workload, "auto", "3s");
    let dwarf = user_stacks(&dwarf);
    let total = samples_with(&dwarf, |_| true);
    let chain = samples_with(&dwarf, |s| {
        has_window(
            s,
            &[
                "nofp_rust::run",
                "nofp_rust::outer",
                "nofp_rust::inner",
                "nofp_rust::spin",
            ],
        ) && s.iter().any(|f| f == "main")
    });
    eprintln!("{chain} of {total}\n{}\n{summary}", top(&dwarf));
    assert!(total > 100, "too few samples: {total}");
    assert!(
        chain * 100 >= total * 90,
        "only {chain} of {total} reach main through run;outer;inner;spin:\n{}",
        top(&dwarf)
    );
}

/// Projects a leaf-first path onto the workload's own functions and libc's sort, collapsing the
/// sort's recursion (its depth differs sample to sample) and libc's internal names (perf names
/// `msort_with_tmp.part.0` what DWARF names `msort_with_tmp`).
fn project(leaf_first: &[&str]) -> String {
    const OWN: [&str; 7] = [
        "mix",
        "compare_keys",
        "level_b",
        "level_a",
        "run",
        "spin",
        "main",
    ];
    let mut out: Vec<&str> = Vec::new();
    for f in leaf_first {
        let name = if OWN.contains(f) {
            *f
        } else if f.contains("qsort") || f.contains("msort") {
            "<libc sort>"
        } else {
            continue;
        };
        if out.last() != Some(&name) {
            out.push(name);
        }
        if name == "main" {
            break;
        }
    }
    out.join(";")
}

#[test]
fn leaf_to_main_paths_match_perf_dwarf() {
    if !require_root() {
        return;
    }
    let workload = build_c_nofp("nofp");
    let w = Workload::start(&workload, &[]);
    let pid = w.pid();
    let dir = temp_dir();
    let out = dir.path().join("p.folded");
    let cache = dir.path().join("tables");
    // Both sample the same process over the same seconds.
    let agent = std::process::Command::new(agent_binary())
        .args([
            "--pid",
            &pid.to_string(),
            "--duration",
            "6s",
            "--unwind",
            "dwarf",
        ])
        .arg("--unwind-cache-dir")
        .arg(&cache)
        .arg("--output")
        .arg(&out)
        .arg("--quiet")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("agent starts");
    let perf = perf_dwarf_paths(pid, 6);
    let agent = agent.wait_with_output().expect("agent runs");
    assert!(
        agent.status.success(),
        "agent: {}",
        String::from_utf8_lossy(&agent.stderr)
    );
    let ours = read_folded(&out);

    let mut perf_paths: BTreeMap<String, u64> = BTreeMap::new();
    for (path, n) in &perf {
        let frames: Vec<&str> = path.split(';').collect();
        *perf_paths.entry(project(&frames)).or_default() += n;
    }
    let mut our_paths: BTreeMap<String, u64> = BTreeMap::new();
    for (stack, n) in user_stacks(&ours) {
        let frames: Vec<&str> = stack.iter().rev().map(String::as_str).collect();
        *our_paths.entry(project(&frames)).or_default() += n;
    }
    let perf_total: u64 = perf_paths.values().sum();
    let our_total: u64 = our_paths.values().sum();
    let share = |m: &BTreeMap<String, u64>, total: u64, k: &str| {
        100.0 * *m.get(k).unwrap_or(&0) as f64 / total.max(1) as f64
    };
    let mut report = String::new();
    let mut keys: Vec<&String> = perf_paths.keys().chain(our_paths.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in &keys {
        report.push_str(&format!(
            "  perf {:5.1}%  ours {:5.1}%  {k}\n",
            share(&perf_paths, perf_total, k),
            share(&our_paths, our_total, k)
        ));
    }
    eprintln!("perf {perf_total} samples, ours {our_total}\n{report}");
    assert!(
        perf_total > 100 && our_total > 100,
        "too few samples\n{report}"
    );
    // Every path perf sees in at least 5 % of samples is one of ours, with a share within
    // binomial noise (3 sigma of the larger variance, at least 5 points).
    let mut top: Vec<(&String, &u64)> = perf_paths.iter().collect();
    top.sort_by(|a, b| b.1.cmp(a.1));
    for (path, _) in top.iter().take(5) {
        let p = share(&perf_paths, perf_total, path);
        if p < 5.0 {
            continue;
        }
        assert!(
            path.ends_with("main"),
            "perf's path {path} does not reach main"
        );
        let o = share(&our_paths, our_total, path);
        let q = p / 100.0;
        let sigma = 100.0 * (q * (1.0 - q) / perf_total.min(our_total) as f64).sqrt();
        let tolerance = (3.0 * sigma * 2f64.sqrt()).max(5.0);
        assert!(
            (p - o).abs() <= tolerance,
            "path {path}: perf {p:.1}% vs ours {o:.1}% (tolerance {tolerance:.1})\n{report}"
        );
    }
}

/// One of the kernel's counters in the JSON summary, e.g. `unwind_truncated`.
fn unwind_count(summary: &str, stat: &str) -> u64 {
    summary_u64(&summary_json(summary), &["kernel", stat])
}

#[test]
fn a_stack_of_120_frames_unwinds_to_main() {
    if !require_root() {
        return;
    }
    let workload = build_c_nofp("deep");
    let (folded, summary) = profile_with(&workload, &["120"], "dwarf", "3s");
    let stacks = user_stacks(&folded);
    let total = samples_with(&stacks, |_| true);
    let complete = samples_with(&stacks, |s| {
        let main = s.iter().position(|f| f == "main");
        let descents = s.iter().filter(|f| *f == "descend").count();
        main.is_some() && descents == 121 && s.last().is_some_and(|f| f == "spin")
    });
    eprintln!("{complete} of {total}\n{}\n{summary}", top(&stacks));
    assert!(total > 100, "too few samples: {total}");
    assert!(
        complete * 100 >= total * 90,
        "{complete} of {total} stacks show main;descend×121;spin\n{}",
        top(&stacks)
    );
}

#[test]
fn deeper_stacks_stop_at_the_frame_limit_and_are_counted() {
    if !require_root() {
        return;
    }
    let workload = build_c_nofp("deep");
    let (folded, summary) = profile_with(&workload, &["300"], "dwarf", "2s");
    let stacks = user_stacks(&folded);
    let total = samples_with(&stacks, |_| true);
    let longest = stacks.iter().map(|(s, _)| s.len()).max().unwrap_or(0);
    let truncated = unwind_count(&summary, "unwind_truncated");
    eprintln!("{total} samples, longest {longest} frames, {truncated} truncated\n{summary}");
    assert_eq!(
        longest,
        profiler_common::unwind::MAX_UNWOUND_FRAMES,
        "stacks are cut at the frame limit"
    );
    assert!(
        truncated * 100 >= total * 90,
        "{truncated} of {total} counted as truncated"
    );
    // The leaf end is kept: a cut stack is all `descend` but for a `spin` leaf.
    for (stack, _) in stacks.iter().filter(|(s, _)| s.len() == longest) {
        let (leaf, callers) = stack.split_last().unwrap();
        assert!(
            (leaf == "spin" || leaf == "descend") && callers.iter().all(|f| f == "descend"),
            "{}",
            stack.join(";")
        );
    }
}

#[test]
fn node_wide_tables_are_built_in_the_background_and_used() {
    if !require_root() {
        return;
    }
    let workload = build_c_nofp("nofp");
    let w = Workload::start(&workload, &[]);
    let dir = temp_dir();
    let cache = dir.path().join("tables");
    // Node-wide, the workload's stacks that reach main;run, and how many there were.
    let run = |seconds: &str| {
        let out = dir.path().join("node.folded");
        let output = run_agent(&[
            "--duration",
            seconds,
            "--unwind-cache-dir",
            cache.to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
        ]);
        let summary = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "agent failed: {summary}");
        let ours: Vec<(Vec<String>, u64)> = user_stacks(&read_folded(&out))
            .into_iter()
            .filter(|(s, _)| s.first().is_some_and(|p| p == "nofp"))
            .collect();
        let total = samples_with(&ours, |_| true);
        let to_main = samples_with(&ours, |s| has_window(s, &["main", "run"]));
        eprintln!("{to_main} of {total}\n{}\n{summary}", top(&ours));
        assert!(
            total > 50,
            "too few samples of the workload: {total}\n{summary}"
        );
        (to_main, total)
    };
    // Cold: the tables are built in the background (the first samples come before they are
    // ready, more of them on a busy machine, where the builder runs at low priority).
    let (to_main, total) = run("6s");
    assert!(
        to_main * 100 >= total * 50,
        "cold cache: only {to_main} of {total} samples reach main;run"
    );
    let built = std::fs::read_dir(&cache)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "rows"))
        })
        .count();
    assert!(
        built >= 2,
        "{built} tables cached (the program's and libc's at least)"
    );
    // Warm: loaded from the disk cache as soon as the process is seen.
    let (to_main, total) = run("4s");
    drop(w);
    assert!(
        to_main * 100 >= total * 95,
        "warm cache: only {to_main} of {total} samples reach main;run"
    );
}
