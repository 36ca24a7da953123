//! End to end: the real agent binary profiles real processes through the real kernel.
mod common;

use std::time::{Duration, Instant};

use common::*;

fn profile_folded(pid: u32, seconds: &str) -> std::collections::BTreeMap<Vec<String>, u64> {
    let dir = temp_dir();
    let out = dir.path().join("cpu.folded");
    let status = run_agent(&[
        "--pid",
        &pid.to_string(),
        "--duration",
        seconds,
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(status.status.success());
    read_folded(&out)
}

#[test]
fn c_call_tree_comes_out_in_order_with_75_25_shares() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("calltree"), &[]);
    let folded = profile_folded(w.pid(), "6s");
    let all = total(&folded);
    let a = count_with(&folded, &["main", "outer", "hot_a", "work"]);
    let b = count_with(&folded, &["main", "outer", "hot_b", "work"]);
    // One busy thread at 99 Hz for 6 s: ~594 samples; allow for scheduling noise.
    assert!(all > 250, "only {all} samples");
    assert!(
        (a + b) as f64 > 0.9 * all as f64,
        "call tree covers {a}+{b} of {all}"
    );
    let share = a as f64 / (a + b) as f64;
    assert!(
        (0.68..=0.82).contains(&share),
        "hot_a share {share:.3}, expected ~0.75"
    );
}

#[test]
fn syscall_heavy_workload_shows_kernel_frames_under_user_frames() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("syscalls"), &[]);
    let folded = profile_folded(w.pid(), "5s");
    let entry = if cfg!(target_arch = "aarch64") {
        "el0_svc_[k]"
    } else {
        "do_syscall_64_[k]"
    };
    let in_kernel: u64 = folded
        .iter()
        .filter(|(stack, _)| {
            let user = stack.iter().position(|f| f == "raw_read");
            let kernel = stack.iter().position(|f| f == entry);
            matches!((user, kernel), (Some(u), Some(k)) if u < k)
                && stack
                    .windows(3)
                    .any(|w| w == ["main", "read_zeroes", "raw_read"])
                && stack[kernel.unwrap()..].iter().all(|f| f.ends_with("_[k]"))
        })
        .map(|(_, c)| c)
        .sum();
    let all = total(&folded);
    assert!(
        in_kernel as f64 > 0.5 * all as f64,
        "{in_kernel} of {all} samples show main;read_zeroes;raw_read;…;{entry};…"
    );
    // The kernel side resolves to real functions, not addresses.
    let unknown_kernel: u64 = folded
        .iter()
        .filter(|(s, _)| s.iter().any(|f| f.starts_with("[unknown] [kernel]")))
        .map(|(_, c)| c)
        .sum();
    assert!(
        unknown_kernel * 20 < all,
        "{unknown_kernel} samples with unresolved kernel frames"
    );
}

#[test]
fn rust_workload_shows_demangled_names() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_rust("rust_calltree"), &[]);
    let folded = profile_folded(w.pid(), "5s");
    let all = total(&folded);
    let a = count_with(
        &folded,
        &[
            "rust_calltree::engine::Crunch<T>::run",
            "rust_calltree::engine::hot_a",
            "rust_calltree::engine::spin",
        ],
    );
    let b = count_with(
        &folded,
        &[
            "rust_calltree::engine::Crunch<T>::run",
            "rust_calltree::engine::hot_b",
            "rust_calltree::engine::spin",
        ],
    );
    assert!(
        (a + b) as f64 > 0.8 * all as f64,
        "demangled tree covers {a}+{b} of {all}: {folded:#?}"
    );
    let share = a as f64 / (a + b) as f64;
    assert!((0.68..=0.82).contains(&share), "hot_a share {share:.3}");
    let mangled: Vec<_> = folded
        .keys()
        .flatten()
        .filter(|f| f.starts_with("_ZN") || f.starts_with("_R"))
        .collect();
    assert!(mangled.is_empty(), "mangled names left: {mangled:?}");
}

#[test]
fn a_process_that_exits_mid_run_still_gets_its_profile() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("calltree"), &["2"]);
    let dir = temp_dir();
    let out = dir.path().join("cpu.folded");
    let started = Instant::now();
    let run = run_agent(&[
        "--pid",
        &w.pid().to_string(),
        "--duration",
        "20s",
        "--output",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "agent did not notice the exit"
    );
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("exited after"), "no exit note in: {stderr}");
    let folded = read_folded(&out);
    assert!(
        count_with(&folded, &["main", "outer", "hot_a", "work"]) > 50,
        "{folded:?}"
    );
    // Symbolized although the process was gone by the time its stacks were resolved.
    assert!(
        !folded
            .keys()
            .flatten()
            .any(|f| f.starts_with("[unknown]") && f.contains("calltree"))
    );
}

#[test]
fn sigint_ends_sampling_and_still_writes_the_profile() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("calltree"), &[]);
    let dir = temp_dir();
    let out = dir.path().join("cpu.svg");
    let child = std::process::Command::new(agent_binary())
        .args([
            "--pid",
            &w.pid().to_string(),
            "--output",
            out.to_str().unwrap(),
            "--quiet",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // SAFETY: sending a signal to our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let result = child.wait_with_output().unwrap();
    assert!(
        result.status.success(),
        "{}",
        String::from_utf8_lossy(&result.stderr)
    );
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(
        svg.contains("hot_a") && svg.contains("outer"),
        "flame graph lacks the workload's frames"
    );
    assert!(
        svg.contains(&format!("pid {}", w.pid())),
        "title names the process"
    );
}

#[test]
fn svg_output_is_an_interactive_flame_graph_titled_with_the_command() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("calltree"), &[]);
    let dir = temp_dir();
    let out = dir.path().join("cpu.svg");
    assert!(
        run_agent(&[
            "--pid",
            &w.pid().to_string(),
            "-d",
            "3s",
            "-o",
            out.to_str().unwrap()
        ])
        .status
        .success()
    );
    let svg = std::fs::read_to_string(&out).unwrap();
    assert!(svg.starts_with("<?xml") && svg.trim_end().ends_with("</svg>"));
    assert!(
        svg.contains("<script"),
        "inferno's search/zoom script is embedded"
    );
    assert!(svg.contains("calltree"), "title shows the command line");
    for f in ["main", "outer", "hot_a", "hot_b", "work"] {
        assert!(
            svg.contains(&format!(">{f}<")) || svg.contains(&format!("{f} (")),
            "{f} missing"
        );
    }
}

#[test]
fn every_thread_of_the_process_is_sampled() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("threads"), &[]);
    let folded = profile_folded(w.pid(), "4s");
    let a = count_with(&folded, &["thread_a", "spin_a"]);
    let b = count_with(&folded, &["thread_b", "spin_b"]);
    // Two busy threads on two CPUs at 99 Hz for 4 s: ~400 samples each on an otherwise idle machine.
    assert!(a > 100 && b > 100, "thread_a {a}, thread_b {b}: {folded:?}");
    let share = a as f64 / (a + b) as f64;
    assert!((0.4..=0.6).contains(&share), "thread_a share {share:.2}");
}

/// Every sample the kernel counted is in the output: the summary's kernel count equals the sum of
/// the folded file.
#[test]
fn every_counted_sample_reaches_the_output() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c("threads"), &[]);
    let dir = temp_dir();
    let out = dir.path().join("cpu.folded");
    let run = run_agent(&[
        "--pid",
        &w.pid().to_string(),
        "-d",
        "3s",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    let at = stderr
        .find(" counted;")
        .unwrap_or_else(|| panic!("no kernel count in: {stderr}"));
    let counted: u64 = stderr[..at].rsplit(' ').next().unwrap().parse().unwrap();
    assert!(counted > 100, "{stderr}");
    assert_eq!(total(&read_folded(&out)), counted, "{stderr}");
}

#[test]
fn name_filters_apply_to_a_node_wide_local_profile() {
    if !require_root() {
        return;
    }
    let _calltree = Workload::start(&build_c("calltree"), &[]);
    let _threads = Workload::start(&build_c("threads"), &[]);
    let dir = temp_dir();
    let roots = |filter: &str, regex: &str| {
        let out = dir.path().join("node.folded");
        let run = run_agent(&["-d", "3s", filter, regex, "-o", out.to_str().unwrap()]);
        assert!(run.status.success());
        let mut roots = std::collections::BTreeMap::new();
        for (stack, count) in read_folded(&out) {
            *roots.entry(stack[0].clone()).or_insert(0u64) += count;
        }
        roots
    };
    let included = roots("--include-comm", "^calltree$");
    assert_eq!(
        included.keys().collect::<Vec<_>>(),
        ["calltree"],
        "{included:?}"
    );
    // Which processes appear is the point, not their share of two CPUs (which other load on the
    // machine decides): some tens of samples in 3 s show the filter lets the process through.
    assert!(included["calltree"] > 20, "{included:?}");
    let excluded = roots("--exclude-comm", "^calltree$");
    assert!(!excluded.contains_key("calltree"), "{excluded:?}");
    assert!(
        excluded.get("threads").is_some_and(|n| *n > 20),
        "{excluded:?}"
    );
}
