//! Bad input: one clear line, a non-zero exit, never a panic or a hang.
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn no_such_pid() {
    let out = run_agent(&[
        "--pid",
        "999999999",
        "--duration",
        "1s",
        "--output",
        "/tmp/x.svg",
    ]);
    assert_one_line_error(&out, "no process with pid 999999999");
}

#[test]
fn output_directory_missing_fails_before_sampling() {
    let me = std::process::id().to_string();
    let started = Instant::now();
    let out = run_agent(&[
        "--pid",
        &me,
        "--duration",
        "30s",
        "--output",
        "/nonexistent/dir/cpu.svg",
    ]);
    assert_one_line_error(&out, "cannot write /nonexistent/dir/cpu.svg");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it sampled before failing"
    );
}

#[test]
fn output_path_that_is_a_directory() {
    let dir = temp_dir();
    let target = dir.path().join("out.svg");
    std::fs::create_dir(&target).unwrap();
    let out = run_agent(&[
        "--pid",
        &std::process::id().to_string(),
        "-d",
        "1s",
        "-o",
        target.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "is a directory");
}

#[test]
fn unknown_output_extension() {
    let out = run_agent(&[
        "--pid",
        &std::process::id().to_string(),
        "-d",
        "1s",
        "-o",
        "/tmp/cpu.json",
    ]);
    assert_one_line_error(&out, "cannot tell the output format");
}

#[test]
fn bad_frequency_and_duration() {
    let me = std::process::id().to_string();
    for (args, needle) in [
        (vec!["--frequency", "0"], "--frequency"),
        (vec!["--frequency", "10001"], "--frequency"),
        (vec!["--frequency", "fast"], "--frequency"),
        (vec!["--duration", "0s"], "--duration"),
        (vec!["--duration=-5s"], "--duration"),
        (vec!["--duration", "soon"], "--duration"),
    ] {
        let mut all = vec!["--pid", me.as_str(), "-o", "/tmp/x.svg"];
        all.extend(args);
        assert_one_line_error(&run_agent(&all), needle);
    }
}

#[test]
fn unprivileged_user_gets_a_clear_message() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        // Already unprivileged: run directly.
        let out = run_agent(&[
            "--pid",
            &std::process::id().to_string(),
            "-d",
            "1s",
            "-o",
            "/tmp/kalypso-unpriv.svg",
        ]);
        assert_one_line_error(&out, "CAP_BPF");
        return;
    }
    // As root: drop to `nobody` with no capabilities, via a copy of the binary it can execute.
    let dir = temp_dir();
    let binary = dir.path().join("profiler-agent");
    std::fs::copy(agent_binary(), &binary).unwrap();
    let chmod = |p: &std::path::Path, mode| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    chmod(dir.path(), 0o777);
    chmod(&binary, 0o755);
    let w = Workload::start(&build_c("calltree"), &[]);
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--",
        ])
        .arg(&binary)
        .args(["--pid", &w.pid().to_string(), "-d", "1s", "--quiet", "-o"])
        .arg(dir.path().join("cpu.svg"))
        .output()
        .unwrap();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    assert_one_line_error(&out, "CAP_BPF and CAP_PERFMON");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().count(),
        1,
        "exactly one line"
    );
}

/// The attack of issue 14: a link planted where the agent keeps unwind tables. The root agent
/// must not write through it.
#[test]
fn a_planted_link_as_the_unwind_cache_is_refused_and_nothing_is_written_through_it() {
    if !require_root() {
        return;
    }
    let dir = temp_dir();
    let victim = dir.path().join("chosen-by-someone-else");
    std::fs::create_dir(&victim).unwrap();
    let link = dir.path().join("kalypso-unwind-tables");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let out = run_agent(&[
        "--pid",
        &std::process::id().to_string(),
        "--duration",
        "1s",
        "--unwind",
        "dwarf",
        "--unwind-cache-dir",
        link.to_str().unwrap(),
        "--output",
        dir.path().join("x.folded").to_str().unwrap(),
    ]);
    assert_one_line_error(&out, "is a symbolic link");
    assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
}
