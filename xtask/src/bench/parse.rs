//! Pure parsers for what the benchmarks read: the agent's summary lines, `/proc` files, BPF
//! program fdinfo, Prometheus text, `perf script`, folded stacks and the table-builder
//! measurement; plus the small statistics the reports use. No I/O here, so all of it is tested.
use std::collections::BTreeMap;

use anyhow::{Context, Result, bail};

/// What a local-mode agent run reported at the end: the JSON object `--summary json` prints as
/// the last line of stderr (see `profiler-agent/src/summary.rs`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentSummary {
    pub samples: u64,
    pub seconds: f64,
    pub distinct_stacks: u64,
    pub agent_cpu_s: f64,
    pub max_rss_mib: Option<f64>,
    pub ticks: u64,
    pub idle: u64,
    pub other_processes: u64,
    pub counted: u64,
    /// Program runs and mean ns per run (only with `kernel.bpf_stats_enabled=1`).
    pub bpf_runs: Option<u64>,
    pub bpf_ns_per_run: Option<f64>,
    /// The table unwinder's counters, when tables were used.
    pub unwind: Option<UnwindSummary>,
}

/// Stacks the table unwinder walked and the unwind tables' counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnwindSummary {
    pub stacks: u64,
    pub complete: u64,
    pub truncated: u64,
    pub frame_pointer_frames: u64,
    pub tables_loaded: u64,
    pub tables_evicted: u64,
    pub tables_without_cfi: u64,
    pub tables_too_big: u64,
}

impl UnwindSummary {
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "stacks": self.stacks, "complete": self.complete, "truncated": self.truncated,
            "frame_pointer_frames": self.frame_pointer_frames, "tables_loaded": self.tables_loaded,
            "tables_evicted": self.tables_evicted, "tables_without_cfi": self.tables_without_cfi,
            "tables_too_big": self.tables_too_big,
        })
    }
}

impl AgentSummary {
    /// Total BPF program time in ns (runs × mean), when the agent measured it.
    pub fn bpf_run_time_ns(&self) -> Option<f64> {
        Some(self.bpf_runs? as f64 * self.bpf_ns_per_run?)
    }

    pub fn tables_loaded(&self) -> Option<u64> {
        self.unwind.map(|u| u.tables_loaded)
    }
}

/// Parses the summary a local-mode run with `--summary json` writes to stderr.
pub fn agent_summary(stderr: &str) -> Result<AgentSummary> {
    let line = stderr
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .with_context(|| {
            let last = stderr.lines().last().unwrap_or("(nothing)");
            format!("no JSON summary in the agent's output (run with --summary json); it ended with: {last}")
        })?;
    let v: serde_json::Value =
        serde_json::from_str(line).with_context(|| format!("summary is not JSON: {line}"))?;
    let at = |path: &[&str]| -> Option<&serde_json::Value> {
        path.iter().try_fold(&v, |v, key| v.get(key))
    };
    let uint = |path: &[&str]| -> Result<u64> {
        at(path)
            .and_then(serde_json::Value::as_u64)
            .with_context(|| format!("no {} in the summary: {line}", path.join(".")))
    };
    let float = |path: &[&str]| -> Result<f64> {
        at(path)
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("no {} in the summary: {line}", path.join(".")))
    };
    if at(&["mode"]).and_then(serde_json::Value::as_str) != Some("local") {
        bail!("not a local-mode summary: {line}");
    }
    let unwind = match at(&["tables"]) {
        Some(t) if !t.is_null() => Some(UnwindSummary {
            stacks: uint(&["kernel", "unwind_started"])?,
            complete: uint(&["kernel", "unwind_complete"])?,
            truncated: uint(&["kernel", "unwind_truncated"])?,
            frame_pointer_frames: uint(&["kernel", "unwind_frame_pointer_frames"])?,
            tables_loaded: uint(&["tables", "loaded"])?,
            tables_evicted: uint(&["tables", "evicted"])?,
            tables_without_cfi: uint(&["tables", "without_cfi_or_unreadable"])?,
            tables_too_big: uint(&["tables", "too_big"])?,
        }),
        _ => None,
    };
    Ok(AgentSummary {
        samples: uint(&["samples"])?,
        seconds: float(&["elapsed_s"])?,
        distinct_stacks: uint(&["distinct_stacks"])?,
        agent_cpu_s: float(&["agent_cpu_s"])?,
        max_rss_mib: at(&["max_rss_bytes"])
            .and_then(serde_json::Value::as_u64)
            .map(|b| b as f64 / (1024.0 * 1024.0)),
        ticks: uint(&["kernel", "ticks"])?,
        idle: uint(&["kernel", "idle"])?,
        other_processes: uint(&["kernel", "filtered"])?,
        counted: uint(&["kernel", "counted"])?,
        bpf_runs: at(&["bpf", "runs"]).and_then(serde_json::Value::as_u64),
        bpf_ns_per_run: at(&["bpf", "ns_per_run"]).and_then(serde_json::Value::as_f64),
        unwind,
    })
}

/// `run_time_ns` and `run_cnt` of one BPF program, from `/proc/PID/fdinfo/FD`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProgRunStats {
    pub prog_id: u64,
    pub run_time_ns: u64,
    pub run_cnt: u64,
}

/// Parses the fdinfo of a BPF program fd; `None` for any other kind of fd.
pub fn bpf_prog_fdinfo(text: &str) -> Option<ProgRunStats> {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().parse().ok())
    };
    Some(ProgRunStats {
        prog_id: field("prog_id")?,
        run_time_ns: field("run_time_ns")?,
        run_cnt: field("run_cnt")?,
    })
}

/// utime + stime in clock ticks, from `/proc/PID/stat` (the command name may hold spaces and
/// parentheses, so fields are counted from the last `)`).
pub fn proc_stat_cpu_ticks(text: &str) -> Result<u64> {
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("no `)` in /proc/PID/stat")?;
    // After the name: state(3) ppid(4) … utime(14) stime(15); `rest` starts at field 3.
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .context("/proc/PID/stat too short")?
            .parse()
            .context("/proc/PID/stat field is not a number")
    };
    Ok(get(14)? + get(15)?)
}

/// A `/proc/PID/status` field given in kB (`VmRSS`, `VmHWM`), in bytes.
pub fn status_bytes(text: &str, field: &str) -> Option<u64> {
    let line = text
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The value of one Prometheus sample, given its full name with labels as the exporter writes
/// them (`kalypso_bpf_events_total{event="counted"}`).
pub fn prometheus_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// Stacks (frames leaf first) with their sample counts.
pub type Stacks = Vec<(Vec<String>, u64)>;

/// Stacks from `perf script -F ip,sym`: one block per sample, `<address> <symbol>` per frame,
/// leaf first.
pub fn perf_script_stacks(text: &str) -> Stacks {
    let mut stacks = Vec::new();
    let mut current: Vec<String> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim();
        if line.is_empty() {
            if !current.is_empty() {
                stacks.push((std::mem::take(&mut current), 1));
            }
            continue;
        }
        let sym = line.split_once(' ').map_or("[unknown]", |(_, s)| s.trim());
        // With -F sym,symoff perf prints `func+0x1f`; plain `sym` has no offset, but be safe.
        let sym = sym.split_once("+0x").map_or(sym, |(f, _)| f);
        current.push(sym.to_string());
    }
    stacks
}

/// Stacks from folded text (`root;…;leaf count`), turned leaf first, kernel suffix removed.
pub fn folded_stacks(text: &str) -> Stacks {
    text.lines()
        .filter_map(|line| {
            let (stack, count) = line.rsplit_once(' ')?;
            let frames = stack
                .rsplit(';')
                .map(|f| f.strip_suffix("_[k]").unwrap_or(f).to_string())
                .collect();
            Some((frames, count.parse().ok()?))
        })
        .collect()
}

/// Per function, the percentage of samples with it at the leaf (self) and anywhere on the stack
/// (inclusive, counted once per sample however often it recurs): `(self, inclusive)`.
pub fn shares(stacks: &Stacks) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let total: u64 = stacks.iter().map(|(_, n)| n).sum();
    let mut leaf: BTreeMap<String, f64> = BTreeMap::new();
    let mut inclusive: BTreeMap<String, f64> = BTreeMap::new();
    for (frames, n) in stacks {
        let pct = 100.0 * *n as f64 / total.max(1) as f64;
        if let Some(f) = frames.first() {
            *leaf.entry(f.clone()).or_default() += pct;
        }
        let unique: std::collections::BTreeSet<&String> = frames.iter().collect();
        for f in unique {
            *inclusive.entry(f.clone()).or_default() += pct;
        }
    }
    (leaf, inclusive)
}

/// `fixed_work`'s result line: `wall_s=… cpu_s=… rounds=…` → (wall, cpu).
pub fn fixed_work_line(text: &str) -> Result<(f64, f64)> {
    let field = |name: &str| -> Result<f64> {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(name)?.strip_prefix('='))
            .with_context(|| format!("no {name}= in `{}`", text.trim()))?
            .parse()
            .with_context(|| format!("{name} is not a number in `{}`", text.trim()))
    };
    Ok((field("wall_s")?, field("cpu_s")?))
}

/// One row of the table builder's measurement (`measure_table_builds`, an ignored test).
#[derive(Clone, Debug, PartialEq)]
pub struct TableBuild {
    pub object: String,
    pub eh_frame_bytes: u64,
    pub fdes: u64,
    pub rows: u64,
    pub row_bytes: u64,
    pub bytes_per_mib: f64,
    pub build_ms: f64,
    /// Peak RSS growth during the build, KiB (in parentheses when it could not be reset).
    pub peak_kib: String,
}

/// Rows of the table under the header line that starts with `object`.
pub fn table_builds(text: &str) -> Result<Vec<TableBuild>> {
    let mut lines = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("object "));
    if lines.next().is_none() {
        bail!("no `object …` header in the table-builder output");
    }
    let mut rows = Vec::new();
    for line in lines {
        let t: Vec<&str> = line.split_whitespace().collect();
        if line.starts_with(' ') || t.len() != 10 {
            continue;
        }
        let n = |i: usize| -> Result<f64> {
            t[i].parse()
                .with_context(|| format!("column {i} of `{line}` is not a number"))
        };
        rows.push(TableBuild {
            object: t[0].to_string(),
            eh_frame_bytes: n(1)? as u64,
            fdes: n(2)? as u64,
            rows: n(3)? as u64,
            row_bytes: n(4)? as u64,
            bytes_per_mib: n(5)?,
            build_ms: n(7)?,
            peak_kib: t[8].to_string(),
        });
    }
    Ok(rows)
}

/// Median, quartiles and range of a set of measurements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub n: usize,
    pub median: f64,
    pub p25: f64,
    pub p75: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    /// `None` for an empty set. Quantiles interpolate linearly between order statistics.
    pub fn of(values: &[f64]) -> Option<Spread> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let q = |p: f64| {
            let pos = p * (v.len() - 1) as f64;
            let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
            v[lo] + (v[hi] - v[lo]) * (pos - lo as f64)
        };
        Some(Spread {
            n: v.len(),
            median: q(0.5),
            p25: q(0.25),
            p75: q(0.75),
            min: v[0],
            max: v[v.len() - 1],
        })
    }
}

/// The lines of an error that say what happened, on one line for a report: the first line, a
/// panic and its message, and `error:` lines (a backtrace is left out).
pub fn error_gist(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut keep: Vec<&str> = lines.first().copied().into_iter().collect();
    for (i, line) in lines.iter().enumerate().skip(1) {
        if line.contains("panicked at") {
            keep.push(line);
            keep.extend(lines.get(i + 1));
        } else if line.starts_with("error:") {
            keep.push(line);
        }
    }
    keep.retain(|l| !l.is_empty());
    keep.dedup();
    let gist = keep.join(" / ").replace('`', "'");
    match gist.char_indices().nth(400) {
        Some((cut, _)) => format!("{}…", &gist[..cut]),
        None => gist,
    }
}

/// Replaces what lies between the `begin` and `end` marker lines of `doc` with `body`.
pub fn replace_marked(doc: &str, begin: &str, end: &str, body: &str) -> Result<String> {
    let start = doc
        .find(begin)
        .with_context(|| format!("no `{begin}` marker"))?
        + begin.len();
    let stop = doc[start..]
        .find(end)
        .with_context(|| format!("no `{end}` marker after `{begin}`"))?
        + start;
    Ok(format!(
        "{}\n{}\n{}",
        &doc[..start],
        body.trim_end(),
        &doc[stop..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `profiler-agent --summary json` printed at the end of a local run (abridged: the
    /// parser reads only these fields).
    const LOCAL: &str = r#"wrote /tmp/x.folded (Folded): 524 samples in 3.0 s (174.2/s; 298 expected for one busy thread), 514 distinct stacks, agent CPU 1.08 s, max RSS 36.0 MiB
{"mode":"local","samples":524,"distinct_stacks":514,"elapsed_s":3.0,"agent_cpu_s":1.08,"max_rss_bytes":37748736,"kernel":{"ticks":587,"idle":3,"filtered":60,"counted":524,"unwind_started":435,"unwind_complete":119,"unwind_truncated":0,"unwind_frame_pointer_frames":447},"tables":{"loaded":21,"evicted":5,"without_cfi_or_unreadable":0,"too_big":2},"bpf":{"runs":594,"ns_per_run":10882.0}}
"#;

    #[test]
    fn reads_every_number_of_a_local_summary() {
        let s = agent_summary(LOCAL).unwrap();
        assert_eq!(s.samples, 524);
        assert_eq!(s.seconds, 3.0);
        assert_eq!(s.distinct_stacks, 514);
        assert_eq!(s.agent_cpu_s, 1.08);
        assert_eq!(s.max_rss_mib, Some(36.0));
        assert_eq!(
            (s.ticks, s.idle, s.other_processes, s.counted),
            (587, 3, 60, 524)
        );
        assert_eq!(s.bpf_runs, Some(594));
        assert_eq!(s.bpf_ns_per_run, Some(10882.0));
        assert_eq!(s.bpf_run_time_ns(), Some(594.0 * 10882.0));
        assert_eq!(s.tables_loaded(), Some(21));
        let u = s.unwind.unwrap();
        assert_eq!(
            (
                u.stacks,
                u.complete,
                u.frame_pointer_frames,
                u.tables_too_big
            ),
            (435, 119, 447, 2)
        );
    }

    #[test]
    fn a_summary_without_bpf_stats_or_tables_leaves_them_empty() {
        let text = LOCAL
            .replace(
                r#""bpf":{"runs":594,"ns_per_run":10882.0}"#,
                r#""bpf":null"#,
            )
            .replace(r#""max_rss_bytes":37748736"#, r#""max_rss_bytes":null"#);
        let text = without_tables(&text);
        let s = agent_summary(&text).unwrap();
        assert_eq!(
            (s.bpf_runs, s.max_rss_mib, s.tables_loaded()),
            (None, None, None)
        );
        assert_eq!(s.bpf_run_time_ns(), None);
    }

    fn without_tables(text: &str) -> String {
        let start = text.find(r#""tables":{"#).unwrap();
        let end = start + text[start..].find('}').unwrap() + 1;
        format!("{}\"tables\":null{}", &text[..start], &text[end..])
    }

    #[test]
    fn a_run_without_a_json_summary_is_an_error_naming_its_last_line() {
        let err = agent_summary("error: needs CAP_BPF\n").unwrap_err();
        assert!(err.to_string().contains("needs CAP_BPF"), "{err}");
        let export = agent_summary(r#"{"mode":"export","samples":1}"#).unwrap_err();
        assert!(export.to_string().contains("not a local-mode"), "{export}");
    }

    #[test]
    fn reads_bpf_prog_fdinfo_and_ignores_other_fds() {
        let prog = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t7\nprog_jited:\t1\nprog_tag:\t3b1a1b5c1c6d2a4f\nmemlock:\t4096\nprog_id:\t812\nrun_time_ns:\t123456789\nrun_cnt:\t4242\nrecursion_misses:\t0\nverified_insns:\t902\n";
        assert_eq!(
            bpf_prog_fdinfo(prog),
            Some(ProgRunStats {
                prog_id: 812,
                run_time_ns: 123_456_789,
                run_cnt: 4242
            })
        );
        let map = "pos:\t0\nflags:\t02000002\nmap_type:\t1\nkey_size:\t4\nmap_id:\t9\n";
        assert_eq!(bpf_prog_fdinfo(map), None);
    }

    #[test]
    fn cpu_ticks_survive_a_command_name_with_spaces_and_parentheses() {
        let stat =
            "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 37 0 0 20 0 5 0 1000 0 0";
        assert_eq!(proc_stat_cpu_ticks(stat).unwrap(), 187);
        assert!(proc_stat_cpu_ticks("4242 (x) S 1").is_err());
    }

    #[test]
    fn status_fields_are_bytes_and_prefixes_do_not_match() {
        let status =
            "Name:\tprofiler-agent\nVmHWM:\t   40960 kB\nVmRSS:\t   36864 kB\nVmRSSx:\t1 kB\n";
        assert_eq!(status_bytes(status, "VmRSS"), Some(36864 * 1024));
        assert_eq!(status_bytes(status, "VmHWM"), Some(40960 * 1024));
        assert_eq!(status_bytes(status, "VmSwap"), None);
    }

    #[test]
    fn prometheus_values_by_series_with_labels() {
        let text = "# HELP kalypso_bpf_events Kernel-side sampler counters\n# TYPE kalypso_bpf_events counter\nkalypso_bpf_events_total{event=\"ticks\"} 1188\nkalypso_bpf_events_total{event=\"counted\"} 594\nkalypso_bpf_events_total{event=\"counted_x\"} 1\n";
        let v = |s| prometheus_value(text, s);
        assert_eq!(
            v("kalypso_bpf_events_total{event=\"counted\"}"),
            Some(594.0)
        );
        assert_eq!(v("kalypso_bpf_events_total{event=\"ticks\"}"), Some(1188.0));
        assert_eq!(v("kalypso_bpf_events_total{event=\"idle\"}"), None);
    }

    #[test]
    fn perf_stacks_are_blocks_leaf_first() {
        let text = "\n    55d0c0a01139 work\n    55d0c0a0115a hot_a\n    55d0c0a011a0 main\n\n    55d0c0a01139 work+0x10\n    55d0c0a01170 hot_b\n\n    ffffffff8100 do_syscall_64\n    55d0 main\n";
        let stacks = perf_script_stacks(text);
        assert_eq!(stacks.len(), 3);
        assert_eq!(stacks[0].0, ["work", "hot_a", "main"]);
        assert_eq!(stacks[1].0, ["work", "hot_b"]);
        let (leaf, inclusive) = shares(&stacks);
        assert!((leaf["work"] - 200.0 / 3.0).abs() < 1e-9);
        assert!((inclusive["main"] - 200.0 / 3.0).abs() < 1e-9);
        assert!((leaf["do_syscall_64"] - 100.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn folded_stacks_turn_leaf_first_and_recursion_counts_once() {
        let text = "calltree;main;outer;hot_a;work 30\ncalltree;main;outer;hot_b;work 10\nsyscalls;main;f;f;clear_user_rep_good_[k] 10\n";
        let stacks = folded_stacks(text);
        assert_eq!(
            stacks[0],
            (
                vec![
                    "work".into(),
                    "hot_a".into(),
                    "outer".into(),
                    "main".into(),
                    "calltree".into()
                ],
                30
            )
        );
        let (leaf, inclusive) = shares(&stacks);
        assert_eq!(leaf["work"], 80.0);
        assert_eq!(leaf["clear_user_rep_good"], 20.0);
        assert_eq!(inclusive["hot_a"], 60.0);
        assert_eq!(inclusive["f"], 20.0);
        assert_eq!(inclusive["main"], 100.0);
    }

    #[test]
    fn fixed_work_line_gives_wall_and_cpu() {
        assert_eq!(
            fixed_work_line("wall_s=2.346392 cpu_s=1.237070 rounds=1000\n").unwrap(),
            (2.346392, 1.23707)
        );
        assert!(fixed_work_line("usage: fixed_work ROUNDS").is_err());
    }

    #[test]
    fn table_builder_rows_are_read_and_detail_lines_skipped() {
        let text = "running 1 test\nobject                                     eh_frame    FDEs      rows  row bytes     B/MiB  unsupp.  build ms  HWM +KiB  cache ms\nlibc.so.6                                  234228    3456     61234     734808   3289487        0      12.3      1024   15/0.2\n    heap +900 KiB (sampled); TableInfo { .. }; checksum 1f\nprofiler-agent                            4000000   40000    900000   10800000   2831155        2     300.5    (2048)  310/1.0\ntest result: ok\n";
        let rows = table_builds(text).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].object, "libc.so.6");
        assert_eq!(rows[0].eh_frame_bytes, 234_228);
        assert_eq!(rows[0].build_ms, 12.3);
        assert_eq!(rows[1].peak_kib, "(2048)");
        assert_eq!(rows[1].bytes_per_mib, 2_831_155.0);
        assert!(table_builds("nothing").is_err());
    }

    #[test]
    fn spread_interpolates_quartiles() {
        let s = Spread::of(&[4.0, 1.0, 3.0, 2.0, 5.0]).unwrap();
        assert_eq!(
            (s.median, s.p25, s.p75, s.min, s.max),
            (3.0, 2.0, 4.0, 1.0, 5.0)
        );
        let s = Spread::of(&[1.0, 2.0]).unwrap();
        assert_eq!(s.median, 1.5);
        assert!(Spread::of(&[]).is_none());
    }

    #[test]
    fn error_gist_keeps_the_panic_and_drops_the_backtrace() {
        let text = "agent --duration 20s failed (exit status: 101): \nthread 'main' (14714) panicked at procfs-core/src/process/mod.rs:481:81:\nend byte index 13 is out of bounds of `/SYSVab`\nstack backtrace:\n   0: rust_begin_unwind\nerror: sampling thread failed\n";
        assert_eq!(
            error_gist(text),
            "agent --duration 20s failed (exit status: 101): / thread 'main' (14714) panicked at procfs-core/src/process/mod.rs:481:81: / end byte index 13 is out of bounds of '/SYSVab' / error: sampling thread failed"
        );
        assert_eq!(error_gist("no VmRSS"), "no VmRSS");
        assert!(error_gist(&"x".repeat(1000)).ends_with('…'));
    }

    #[test]
    fn marked_section_is_replaced_and_the_rest_kept() {
        let doc = "# B\nintro\n<!-- bench:begin -->\nold\n<!-- bench:end -->\ntail\n";
        let out =
            replace_marked(doc, "<!-- bench:begin -->", "<!-- bench:end -->", "new\n").unwrap();
        assert_eq!(
            out,
            "# B\nintro\n<!-- bench:begin -->\nnew\n<!-- bench:end -->\ntail\n"
        );
        assert!(replace_marked("x", "<!-- bench:begin -->", "<!-- bench:end -->", "").is_err());
    }
}
