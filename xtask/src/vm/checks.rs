//! What /init reported, and the named checks that decide pass or fail.
use super::*;

#[derive(Debug, Default)]
pub(super) struct Begin {
    pub(super) release: String,
    pub(super) machine: String,
    pub(super) cpus: String,
}

/// What /init reported.
#[derive(Debug, Default)]
pub(super) struct VmOutput {
    pub(super) begin: Option<Begin>,
    pub(super) end: bool,
    /// Exit status of each step.
    pub(super) rc: BTreeMap<String, i32>,
    /// Guest uptime at each step's start and end.
    pub(super) started: BTreeMap<String, f64>,
    pub(super) finished: BTreeMap<String, f64>,
    /// Files printed with F lines, and whether their EOF line came.
    pub(super) files: BTreeMap<String, Vec<String>>,
    pub(super) complete: BTreeSet<String>,
    pub(super) missing: BTreeSet<String>,
    pub(super) notes: Vec<String>,
}

pub(super) fn parse_console(lines: &[String]) -> VmOutput {
    let mut out = VmOutput::default();
    for line in lines {
        // A kernel message can put bytes before ours on the same line; never after (we write
        // whole lines).
        let Some(at) = line.find("KALYPSO|") else {
            continue;
        };
        let fields: Vec<&str> = line[at..].splitn(4, '|').collect();
        match fields.as_slice() {
            ["KALYPSO", "F", file, content] => out
                .files
                .entry(file.to_string())
                .or_default()
                .push(content.to_string()),
            ["KALYPSO", "F", file] => out
                .files
                .entry(file.to_string())
                .or_default()
                .push(String::new()),
            ["KALYPSO", "BEGIN", rest @ ..] => {
                let rest = rest.join("|");
                let mut parts = rest.split('|');
                out.begin = Some(Begin {
                    release: parts.next().unwrap_or_default().to_string(),
                    machine: parts.next().unwrap_or_default().to_string(),
                    cpus: parts.next().unwrap_or_default().to_string(),
                });
            }
            ["KALYPSO", "END", ..] => out.end = true,
            ["KALYPSO", "START", step, up] => {
                if let Ok(t) = up.parse() {
                    out.started.insert(step.to_string(), t);
                }
            }
            ["KALYPSO", "RC", step, rest] => {
                let mut parts = rest.split('|');
                if let Some(rc) = parts.next().and_then(|r| r.trim().parse().ok()) {
                    out.rc.insert(step.to_string(), rc);
                }
                if let Some(t) = parts.next().and_then(|t| t.trim().parse().ok()) {
                    out.finished.insert(step.to_string(), t);
                }
            }
            ["KALYPSO", "EOF", file] => {
                out.complete.insert(file.to_string());
            }
            ["KALYPSO", "MISSING", file] => {
                out.missing.insert(file.to_string());
            }
            ["KALYPSO", "NOTE", rest @ ..] => out.notes.push(rest.join("|")),
            _ => {}
        }
    }
    out
}

pub(super) type Folded = BTreeMap<Vec<String>, u64>;

pub(super) fn parse_folded(lines: &[String]) -> Folded {
    let mut folded = Folded::new();
    for line in lines {
        if let Some((stack, count)) = line.trim_end().rsplit_once(' ')
            && let Ok(count) = count.parse::<u64>()
        {
            let frames = stack.split(';').map(str::to_string).collect();
            *folded.entry(frames).or_default() += count;
        }
    }
    folded
}

pub(super) fn has_window(stack: &[String], window: &[&str]) -> bool {
    stack
        .windows(window.len())
        .any(|w| w.iter().zip(window).all(|(a, b)| a == b))
}

pub(super) fn count_with(folded: &Folded, window: &[&str]) -> u64 {
    folded
        .iter()
        .filter(|(s, _)| has_window(s, window))
        .map(|(_, c)| c)
        .sum()
}

/// "… 490 samples in 5.0 s (98.0/s; …" from the agent's summary line.
pub(super) fn parse_summary(stderr: &[String]) -> Option<(u64, f64, f64)> {
    stderr.iter().find_map(|l| {
        let before = &l[..l.find(" samples in ")?];
        let samples = before.rsplit(' ').next()?.parse().ok()?;
        let after = &l[l.find(" samples in ")? + " samples in ".len()..];
        let secs: f64 = after.split(' ').next()?.parse().ok()?;
        let rate = after.split_once('(')?.1.split('/').next()?.parse().ok()?;
        Some((samples, secs, rate))
    })
}

pub(super) fn sample_rates(out: &VmOutput) -> Vec<(String, u64, f64, f64)> {
    ["calltree", "syscalls", "node", "go"]
        .iter()
        .filter_map(|step| {
            let err = out.files.get(&format!("{step}.err"))?;
            let (n, s, r) = parse_summary(err)?;
            Some((step.to_string(), n, s, r))
        })
        .collect()
}

/// Minimum samples for one busy thread over 5 s at 99 Hz (495 expected); TCG may lose some.
pub(super) const MIN_PID_SAMPLES: u64 = 200;

/// The exit status of `step` was 0; otherwise what it said on stderr.
fn step_ok(out: &VmOutput, step: &str) -> Result<(), String> {
    let err = out
        .files
        .get(&format!("{step}.err"))
        .map(|l| l.join("\n      "))
        .unwrap_or_default();
    match out.rc.get(step) {
        None => Err(format!("{step} never finished (no RC line)")),
        Some(0) => Ok(()),
        Some(124 | 143) => Err(format!(
            "{step} timed out inside the VM; stderr:\n      {err}"
        )),
        Some(rc) => Err(format!("{step} exited with {rc}; stderr:\n      {err}")),
    }
}

/// The folded stacks printed as `file`, whole and not empty.
fn folded_of(out: &VmOutput, file: &str) -> Result<Folded, String> {
    if out.missing.contains(file) {
        return Err(format!("{file} was not written"));
    }
    if !out.complete.contains(file) {
        return Err(format!("{file} was not printed completely"));
    }
    let f = parse_folded(out.files.get(file).map(Vec::as_slice).unwrap_or_default());
    if f.is_empty() {
        return Err(format!("{file} is empty"));
    }
    Ok(f)
}

fn total(f: &Folded) -> u64 {
    f.values().sum()
}

/// A workload that calls path `a` three times as often as path `b` (calltree's hot_a and
/// hot_b, Go hot's main.hotA and main.hotB), profiled by `step` into `<step>.folded`: enough
/// samples, the two paths hold at least `cover` of them, and `a` has 60-90 % of the pair.
fn three_to_one(
    out: &VmOutput,
    step: &str,
    (a_path, b_path): (&[&str], &[&str]),
    cover: f64,
) -> Result<String, String> {
    step_ok(out, step)?;
    let f = folded_of(out, &format!("{step}.folded"))?;
    let all = total(&f);
    let (a, b) = (count_with(&f, a_path), count_with(&f, b_path));
    let (a_name, b_name) = (a_path.join(";"), b_path.join(";"));
    if all < MIN_PID_SAMPLES {
        return Err(format!(
            "only {all} samples in 5 s (at least {MIN_PID_SAMPLES} expected)"
        ));
    }
    if b == 0 || ((a + b) as f64) < cover * all as f64 {
        return Err(format!(
            "{a_name} ({a}) + {b_name} ({b}) cover too little of {all} samples (at least {:.0} % \
             expected); top stacks: {}",
            cover * 100.0,
            top_stacks(&f)
        ));
    }
    let share = a as f64 / (a + b) as f64;
    if !(0.6..=0.9).contains(&share) {
        return Err(format!(
            "{a_name} share {share:.3} (of {a}+{b}), expected 0.6-0.9"
        ));
    }
    Ok(format!(
        "{all} samples; {a_name} {a}, {b_name} {b}, share {share:.2}"
    ))
}

/// Stripped Go: names from `.gopclntab` alone, and leafWork's caller kept although leafWork
/// pushes no frame (a frame-pointer walk from it skips straight to main.main). Only 60 % need
/// be under hotA/hotB: the Go runtime's own work on the same process takes a fifth of the
/// samples under TCG (measured on x86_64: 451 of 567; the rest is async preemption every 10 ms,
/// runtime.mcall → gopreempt_m → wakep → futex on the g0 stack, and sysmon's usleep).
pub(super) fn go_calltree(out: &VmOutput) -> CheckResult {
    three_to_one(
        out,
        "go",
        (
            &["main.hotA", "main.leafWork"],
            &["main.hotB", "main.leafWork"],
        ),
        0.6,
    )
    .map_or_else(|e| fail("go-calltree", e), |d| pass("go-calltree", d))
}

/// The checks on what /init reported. Every check is named; a missing report is a failure.
pub(super) fn check(
    arch: Arch,
    out: &VmOutput,
    boot: &Boot,
    timeout: Duration,
) -> Vec<CheckResult> {
    let mut checks = Vec::new();
    let tail = || {
        let shown: Vec<&str> = boot
            .lines
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        if shown.is_empty() {
            return "(no console output at all)".to_string();
        }
        shown[shown.len().saturating_sub(15)..].join("\n    ")
    };
    match &out.begin {
        Some(b) if b.machine == arch.name() => checks.push(pass(
            "boot",
            format!(
                "{} {} with {} CPUs reached /init after {:.1} s",
                b.release,
                b.machine,
                b.cpus,
                boot.to_begin.unwrap_or_default().as_secs_f64()
            ),
        )),
        Some(b) => checks.push(fail(
            "boot",
            format!(
                "the guest is {} ({}), expected {}",
                b.machine,
                b.release,
                arch.name()
            ),
        )),
        None => {
            let why = if boot.timed_out {
                format!(
                    "no KALYPSO|BEGIN line within the {} s timeout",
                    timeout.as_secs()
                )
            } else {
                format!(
                    "qemu {} before /init printed KALYPSO|BEGIN",
                    describe_exit(boot.exit)
                )
            };
            checks.push(fail(
                "boot",
                format!("{why}; last console lines:\n    {}", tail()),
            ));
            return checks;
        }
    }

    let step_ok = |step: &str| step_ok(out, step);
    let folded_of = |file: &str| folded_of(out, file);

    // --version inside the VM.
    checks.push(match step_ok("version") {
        Ok(()) => {
            let v = out
                .files
                .get("version.out")
                .and_then(|l| l.first())
                .cloned()
                .unwrap_or_default();
            if v.starts_with("profiler-agent ") {
                pass("version", v)
            } else {
                fail("version", format!("unexpected --version output {v:?}"))
            }
        }
        Err(e) => fail("version", e),
    });

    // The known call tree, in order, with ~75/25 shares.
    checks.push(
        three_to_one(
            out,
            "calltree",
            (
                &["main", "outer", "hot_a", "work"],
                &["main", "outer", "hot_b", "work"],
            ),
            0.8,
        )
        .map_or_else(|e| fail("calltree", e), |d| pass("calltree", d)),
    );

    // User frames, then the architecture's syscall entry, then only kernel frames.
    checks.push((|| -> Result<CheckResult, String> {
        step_ok("syscalls")?;
        let f = folded_of("syscalls.folded")?;
        let all = total(&f);
        let entry = arch.syscall_entry();
        let through: u64 = f
            .iter()
            .filter(|(s, _)| {
                let user = s.iter().position(|x| x == "raw_read");
                let kernel = s.iter().position(|x| x == entry);
                let first_k = s.iter().position(|x| x.ends_with("_[k]"));
                matches!((user, kernel, first_k), (Some(u), Some(k), Some(fk)) if u < fk && fk <= k)
                    && has_window(s, &["main", "read_zeroes", "raw_read"])
                    && s[first_k.unwrap_or_default()..].iter().all(|x| x.ends_with("_[k]"))
            })
            .map(|(_, c)| c)
            .sum();
        if all < MIN_PID_SAMPLES {
            return Err(format!("only {all} samples in 5 s (at least {MIN_PID_SAMPLES} expected)"));
        }
        if (through as f64) < 0.5 * all as f64 {
            return Err(format!(
                "{through} of {all} samples show main;read_zeroes;raw_read;…;{entry};… (expected > 50%); top stacks: {}",
                top_stacks(&f)
            ));
        }
        let example = f
            .iter()
            .filter(|(s, _)| s.iter().any(|x| x == entry))
            .max_by_key(|(_, c)| **c)
            .map(|(s, _)| s.join(";"))
            .unwrap_or_default();
        Ok(pass(
            "syscalls",
            format!("{through} of {all} samples go main;read_zeroes;raw_read → {entry} → kernel; e.g. {example}"),
        ))
    })()
    .unwrap_or_else(|e| fail("syscalls", e)));

    // Node-wide, with calltree and syscalls both busy: each stack starts with its process's name.
    checks.push(
        (|| -> Result<CheckResult, String> {
            step_ok("node")?;
            let f = folded_of("node.folded")?;
            let all = total(&f);
            let of = |process: &str, window: &[&str]| -> u64 {
                f.iter()
                    .filter(|(s, _)| {
                        s.first().is_some_and(|p| p == process) && has_window(s, window)
                    })
                    .map(|(_, c)| c)
                    .sum()
            };
            let calltree = of("calltree", &["main", "outer"]);
            let syscalls = of("syscalls", &["main", "read_zeroes"]);
            let processes: BTreeSet<&str> = f
                .keys()
                .filter_map(|s| s.first().map(String::as_str))
                .collect();
            if calltree < 50 || syscalls < 50 {
                return Err(format!(
                    "{calltree} samples calltree;…;main;outer;… and {syscalls} syscalls;…;main;read_zeroes;… \
                     of {all} (expected >= 50 each); first frames seen: {processes:?}"
                ));
            }
            Ok(pass(
                "node-wide",
                format!(
                    "{all} samples: calltree;…;main;outer;… {calltree}, syscalls;…;main;read_zeroes;… {syscalls}; first frames: {processes:?}"
                ),
            ))
        })()
        .unwrap_or_else(|e| fail("node-wide", e)),
    );

    // No frame pointers: with tables, stacks reach main through the call chain (the sort's
    // through libc); by frame pointers alone, they do not.
    checks.push(
        (|| -> Result<CheckResult, String> {
            step_ok("nofp")?;
            let f = folded_of("nofp.folded")?;
            let all = total(&f);
            let to_main = count_with(&f, &["main", "run"]);
            let sort = f
                .iter()
                .filter(|(s, _)| {
                    has_window(s, &["main", "run", "level_a", "level_b"])
                        && s.iter().any(|x| x.contains("qsort"))
                })
                .map(|(_, c)| c)
                .sum::<u64>();
            if all < MIN_PID_SAMPLES {
                return Err(format!(
                    "only {all} samples in 5 s (at least {MIN_PID_SAMPLES} expected)"
                ));
            }
            if (to_main as f64) < 0.9 * all as f64 || sort == 0 {
                return Err(format!(
                    "{to_main} of {all} samples reach main;run, {sort} main;run;level_a;level_b;…qsort…; top stacks: {}",
                    top_stacks(&f)
                ));
            }
            step_ok("nofp_fp")?;
            let fp = folded_of("nofp_fp.folded")?;
            let fp_all = total(&fp);
            let fp_main = count_with(&fp, &["main"]);
            if fp_main as f64 > 0.5 * fp_all as f64 {
                return Err(format!(
                    "frame pointers alone reached main in {fp_main} of {fp_all} samples of a -fomit-frame-pointer build"
                ));
            }
            Ok(pass(
                "nofp-unwind",
                format!(
                    "tables: {to_main} of {all} samples reach main;run ({sort} through libc's qsort); frame pointers: {fp_main} of {fp_all}"
                ),
            ))
        })()
        .unwrap_or_else(|e| fail("nofp-unwind", e)),
    );

    // The stripped, static Go `hot` (tests/workloads/go/hot, built by `go.rs`): names from
    // `.gopclntab` alone, and the callers of its frameless leaf.
    checks.push(go_calltree(out));

    // Unprivileged: one `error:` line naming CAP_BPF, a non-zero exit, no panic.
    checks.push(
        (|| -> Result<CheckResult, String> {
            let rc = *out
                .rc
                .get("unprivileged")
                .ok_or("the unprivileged run never finished")?;
            let err = out
                .files
                .get("unprivileged.err")
                .cloned()
                .unwrap_or_default();
            let lines: Vec<&String> = err.iter().filter(|l| !l.trim().is_empty()).collect();
            if rc == 0 {
                return Err(format!(
                    "exit status 0 without privileges; stderr {lines:?}"
                ));
            }
            if rc >= 124 {
                return Err(format!(
                    "exit status {rc} (timeout or signal); stderr {lines:?}"
                ));
            }
            if err.iter().any(|l| l.contains("panicked")) {
                return Err(format!("the agent panicked: {lines:?}"));
            }
            match lines.as_slice() {
                [line] if line.starts_with("error:") && line.contains("CAP_BPF") => {
                    Ok(pass("unprivileged", format!("exit {rc}: {line}")))
                }
                _ => Err(format!(
                    "expected exactly one `error:` line mentioning CAP_BPF, got {lines:?}"
                )),
            }
        })()
        .unwrap_or_else(|e| fail("unprivileged", e)),
    );

    checks.push(if out.end {
        pass(
            "complete",
            format!("/init reported END; guest notes: {}", out.notes.join("; ")),
        )
    } else if boot.timed_out {
        fail(
            "complete",
            format!(
                "no KALYPSO|END within the {} s timeout; last console lines:\n    {}",
                timeout.as_secs(),
                tail()
            ),
        )
    } else {
        fail(
            "complete",
            format!(
                "qemu {} before KALYPSO|END; last console lines:\n    {}",
                describe_exit(boot.exit),
                tail()
            ),
        )
    });
    checks
}

pub(super) fn top_stacks(f: &Folded) -> String {
    let mut v: Vec<_> = f.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1));
    v.iter()
        .take(3)
        .map(|(s, c)| format!("{} {c}", s.join(";")))
        .collect::<Vec<_>>()
        .join(" | ")
}
