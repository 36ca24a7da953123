//! Helpers for the end-to-end tests: build real workloads, run the real agent binary as root, and
//! read what it wrote.
#![allow(dead_code)]

pub mod otlp;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

pub fn agent_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_profiler-agent"))
}

/// BPF tests need root. CI runs as root and sets KALYPSO_REQUIRE_ROOT_TESTS=1, so there a missing
/// privilege fails the test instead of skipping it.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("KALYPSO_REQUIRE_ROOT_TESTS").is_some() {
        panic!("this test loads BPF programs and must run as root");
    }
    eprintln!("skipped: needs root to load BPF programs");
    false
}

fn out_dir() -> PathBuf {
    let dir = workspace_root().join("target/test-workloads");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles `tests/workloads/<name>.c` with frame pointers everywhere (gcc drops them from leaf
/// functions at -O1 and above, so -O0).
pub fn build_c(name: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap();
    let src = workspace_root().join(format!("tests/workloads/{name}.c"));
    let out = out_dir().join(name);
    let mut cmd = Command::new("gcc");
    cmd.args(["-O0", "-g", "-fno-omit-frame-pointer"]);
    if cfg!(target_arch = "aarch64") {
        cmd.arg("-mno-omit-leaf-frame-pointer");
    }
    let status = cmd
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .expect("gcc runs");
    assert!(status.success(), "gcc failed for {}", src.display());
    out
}

/// Compiles `tests/workloads/<name>.rs` optimised, with frame pointers and debug info.
pub fn build_rust(name: &str) -> PathBuf {
    static ONCE: OnceLock<PathBuf> = OnceLock::new();
    ONCE.get_or_init(|| {
        let src = workspace_root().join(format!("tests/workloads/{name}.rs"));
        let out = out_dir().join(name);
        let status = Command::new("rustc")
            .args([
                "--edition",
                "2021",
                "-C",
                "opt-level=2",
                "-C",
                "force-frame-pointers=yes",
                "-g",
                "-o",
            ])
            .arg(&out)
            .arg(&src)
            .status()
            .expect("rustc runs");
        assert!(status.success(), "rustc failed for {}", src.display());
        out
    })
    .clone()
}

/// Builds a workload once per test process into `target/test-workloads/nofp/` (apart from the
/// frame-pointer builds of the same names). `compile(src, out)` gives the compiler command.
fn build_once(file: &str, compile: impl FnOnce(&Path, &Path) -> Command) -> PathBuf {
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap();
    if let Some(out) = built.get(file) {
        return out.clone();
    }
    let src = workspace_root().join("tests/workloads").join(file);
    let dir = out_dir().join("nofp");
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(Path::new(file).file_stem().unwrap());
    let status = compile(&src, &out).status().expect("the compiler runs");
    assert!(status.success(), "building {} failed", src.display());
    built.insert(file.to_string(), out.clone());
    out
}

/// Compiles `tests/workloads/<name>.c` optimised and without frame pointers, so only
/// `.eh_frame` tells how to unwind it. Sibling-call optimisation is off: a tail call leaves no
/// frame, and the call chains the tests look for must all be on the stack.
pub fn build_c_nofp(name: &str) -> PathBuf {
    build_once(&format!("{name}.c"), |src, out| {
        let mut cmd = Command::new("gcc");
        cmd.args([
            "-O2",
            "-g",
            "-fomit-frame-pointer",
            "-fno-optimize-sibling-calls",
            "-o",
        ])
        .arg(out)
        .arg(src);
        cmd
    })
}

/// Compiles `tests/workloads/<name>.rs` release-like (opt-level 3), without frame pointers and
/// with debug info.
pub fn build_rust_nofp(name: &str) -> PathBuf {
    build_once(&format!("{name}.rs"), |src, out| {
        let mut cmd = Command::new("rustc");
        cmd.args([
            "--edition",
            "2021",
            "-C",
            "opt-level=3",
            "-C",
            "force-frame-pointers=no",
            "-g",
            "-o",
        ])
        .arg(out)
        .arg(src);
        cmd
    })
}

/// Samples `pid` with `perf record --call-graph dwarf` (perf copies 8 KiB of user stack per
/// sample and unwinds it with the objects' CFI) for `seconds`, and counts the stacks as
/// `leaf;…;main` paths: leaf first, cut after `main` (what lies below it differs between libc
/// versions and is not what a comparison is about). Stacks that never reach `main` are kept
/// whole. Needs perf (`apt-get install linux-perf`) and the right to profile `pid`.
pub fn perf_dwarf_paths(pid: u32, seconds: u32) -> BTreeMap<String, u64> {
    let dir = temp_dir();
    let data = dir.path().join("perf.data");
    let out = Command::new("perf")
        .args([
            "record",
            "-q",
            "-F",
            "99",
            "-e",
            "cpu-clock",
            "--call-graph",
            "dwarf",
        ])
        .args(["-p", &pid.to_string(), "-o"])
        .arg(&data)
        .args(["--", "sleep", &seconds.to_string()])
        .stdout(Stdio::null())
        .output()
        .expect("perf runs (apt-get install linux-perf)");
    assert!(
        out.status.success(),
        "perf record: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // --no-inline: one name per frame, the function the code belongs to, as our unwinder reports.
    let mut paths = BTreeMap::new();
    for mut frames in perf_script_stacks(&data, &["--no-inline"]) {
        if let Some(main) = frames.iter().position(|f| f == "main") {
            frames.truncate(main + 1);
        }
        *paths.entry(frames.join(";")).or_default() += 1;
    }
    paths
}

/// Every sample of a `perf record` file as its frames' symbols, leaf first, from
/// `perf script [extra] -F ip,sym`. Samples without frames are skipped.
pub fn perf_script_stacks(data: &Path, extra: &[&str]) -> Vec<Vec<String>> {
    let out = Command::new("perf")
        .arg("script")
        .args(extra)
        .args(["-F", "ip,sym", "-i"])
        .arg(data)
        .output()
        .expect("perf runs (apt-get install linux-perf)");
    assert!(
        out.status.success(),
        "perf script: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One block per sample: an empty header line (no header fields asked for), then
    // "<ip> <symbol>" per frame, leaf first.
    let mut stacks = Vec::new();
    let mut frames = Vec::new();
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines().chain(std::iter::once("")) {
        let line = line.trim();
        if line.is_empty() {
            if !frames.is_empty() {
                stacks.push(std::mem::take(&mut frames));
            }
            continue;
        }
        let symbol = line
            .split_once(' ')
            .map_or("[unknown]", |(_, sym)| sym.trim());
        frames.push(symbol.to_string());
    }
    stacks
}

/// A running workload, killed when dropped.
pub struct Workload {
    pub child: Child,
}

impl Workload {
    /// Starts the program and waits until it prints `ready`.
    pub fn start(program: &Path, args: &[&str]) -> Workload {
        Self::start_with_env(program, args, &[])
    }

    /// [`Workload::start`] with these environment variables. The OTel ones a workload could
    /// name itself by are only those given here, never the test's own.
    pub fn start_with_env(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Workload {
        let mut child = Command::new(program)
            .args(args)
            .env_remove("OTEL_SERVICE_NAME")
            .env_remove("OTEL_RESOURCE_ATTRIBUTES")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "ready", "workload did not start");
        Workload { child }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("kalypso-test-")
        .tempdir()
        .unwrap()
}

/// Runs the agent to completion.
pub fn run_agent(args: &[&str]) -> Output {
    let out = Command::new(agent_binary())
        .args(args)
        .arg("--quiet")
        .output()
        .unwrap();
    eprintln!(
        "agent {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Folded stacks: frames root first → count.
pub fn read_folded(path: &Path) -> BTreeMap<Vec<String>, u64> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|line| {
            let (stack, count) = line.rsplit_once(' ').expect("folded line has a count");
            (
                stack.split(';').map(str::to_owned).collect(),
                count.parse().expect("count is a number"),
            )
        })
        .collect()
}

pub fn total(folded: &BTreeMap<Vec<String>, u64>) -> u64 {
    folded.values().sum()
}

/// Samples whose stack contains `path` as consecutive frames.
pub fn count_with(folded: &BTreeMap<Vec<String>, u64>, path: &[&str]) -> u64 {
    folded
        .iter()
        .filter(|(stack, _)| {
            stack
                .windows(path.len())
                .any(|w| w.iter().zip(path).all(|(a, b)| a == b))
        })
        .map(|(_, c)| c)
        .sum()
}

/// Bad input: a non-zero exit, no panic, and a first line `error: …` that mentions `needle`.
pub fn assert_one_line_error(out: &std::process::Output, needle: &str) {
    assert!(!out.status.success(), "exit status {}", out.status);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "panic: {stderr}");
    let first = stderr.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error:"),
        "first line is not an error: {stderr}"
    );
    assert!(stderr.contains(needle), "expected `{needle}` in: {stderr}");
}

/// A field of `/proc/PID/status` given in kB (`VmRSS`, `VmHWM`), in KiB; `None` once the process
/// is gone.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The agent's end-of-run summary as `--summary json` prints it: the last line of stderr that
/// is a JSON object with a `mode`. Panics, showing stderr, when there is none.
pub fn summary_json(stderr: &str) -> serde_json::Value {
    stderr
        .lines()
        .rev()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v.get("mode").is_some())
        .unwrap_or_else(|| panic!("no JSON summary (--summary json) in:\n{stderr}"))
}

/// A number of the JSON summary by its path (`["kernel", "counted"]`); panics when absent.
pub fn summary_u64(summary: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(summary, |v, key| &v[*key])
        .as_u64()
        .unwrap_or_else(|| panic!("no number at {path:?} in {summary}"))
}

/// The peak RSS of the summary, in MiB.
pub fn summary_max_rss_mib(summary: &serde_json::Value) -> f64 {
    summary_u64(summary, &["max_rss_bytes"]) as f64 / (1 << 20) as f64
}

/// The agent in continuous mode, its `/metrics` on a free port. Its output is read as it comes,
/// so a long, chatty run never blocks on a full pipe. Killed when dropped.
pub struct DaemonAgent {
    child: Option<Child>,
    pub metrics_port: u16,
    stdout: Option<std::thread::JoinHandle<Vec<u8>>>,
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl DaemonAgent {
    /// Starts the agent with `args` (plus `--metrics-addr`) and waits for its metrics server.
    pub fn start(args: &[&str]) -> DaemonAgent {
        Self::start_wrapped(&[], args)
    }

    /// The same, run through `wrapper` (e.g. `["taskset", "-c", "0"]`), which must exec the
    /// agent in its own process.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> DaemonAgent {
        let metrics_port = otlp::free_port();
        let mut command = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(agent_binary());
                c
            }
            None => Command::new(agent_binary()),
        };
        let mut child = command
            .args(args)
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .env("PROFILER_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let drain = |mut from: Box<dyn std::io::Read + Send>| {
            std::thread::spawn(move || {
                let mut all = Vec::new();
                let _ = from.read_to_end(&mut all);
                all
            })
        };
        let stdout = Some(drain(Box::new(child.stdout.take().unwrap())));
        let stderr = Some(drain(Box::new(child.stderr.take().unwrap())));
        let agent = DaemonAgent {
            child: Some(child),
            metrics_port,
            stdout,
            stderr,
        };
        otlp::wait_for(
            std::time::Duration::from_secs(20),
            "the metrics server",
            || std::net::TcpStream::connect(("127.0.0.1", metrics_port)).is_ok(),
        );
        agent
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    pub fn metrics(&self) -> String {
        let (status, body) = otlp::http_get(self.metrics_port, "/metrics");
        assert_eq!(status, 200);
        body
    }

    /// SIGTERM, then the exit status and output, and how long the agent took to exit.
    pub fn terminate(mut self) -> (Output, std::time::Duration) {
        let mut child = self.child.take().unwrap();
        let sent = std::time::Instant::now();
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        let took = sent.elapsed();
        let out = Output {
            status,
            stdout: self.stdout.take().unwrap().join().unwrap(),
            stderr: self.stderr.take().unwrap().join().unwrap(),
        };
        eprintln!(
            "agent: {} after {:.1} s\n{}",
            out.status,
            took.as_secs_f64(),
            String::from_utf8_lossy(&out.stderr)
        );
        (out, took)
    }
}

impl Drop for DaemonAgent {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Exit 0 and no panic.
pub fn assert_clean_exit(out: &Output) {
    let stderr = stderr_of(out);
    assert!(
        !stderr.contains("panicked"),
        "the agent panicked:\n{stderr}"
    );
    assert!(
        out.status.success(),
        "exit status {}:\n{stderr}",
        out.status
    );
}

/// Runs the agent to completion through `wrapper`, a command that execs it (`unshare …`,
/// `nice -n 10`).
pub fn run_agent_via(wrapper: &[&str], args: &[&str]) -> Output {
    let out = Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(agent_binary())
        .args(args)
        .arg("--quiet")
        .output()
        .unwrap_or_else(|e| panic!("{wrapper:?}: {e}"));
    eprintln!(
        "agent via {wrapper:?} {args:?}: {}\n{}",
        out.status,
        stderr_of(&out)
    );
    out
}

/// Continuous mode's JSON summary: (collected, sent, dropped).
pub fn daemon_summary(stderr: &str) -> (u64, u64, u64) {
    let v = summary_json(stderr);
    assert_eq!(v["mode"], "export", "{v}");
    (
        summary_u64(&v, &["samples"]),
        summary_u64(&v, &["sent"]),
        summary_u64(&v, &["dropped"]),
    )
}

/// calltree's `main;outer;hot_a;work` and `…;hot_b;work` samples in folded stacks (root first).
pub fn calltree_split(folded: &BTreeMap<Vec<String>, u64>) -> (u64, u64) {
    (
        count_with(folded, &["main", "outer", "hot_a", "work"]),
        count_with(folded, &["main", "outer", "hot_b", "work"]),
    )
}

/// The same from stacks leaf first, as [`otlp::stacks_of`] gives them.
pub fn calltree_split_leaf_first(stacks: &[(Vec<String>, u64)]) -> (u64, u64) {
    let count = |path: &[&str]| -> u64 {
        stacks
            .iter()
            .filter(|(s, _)| s.windows(path.len()).any(|w| w == path))
            .map(|(_, c)| c)
            .sum()
    };
    (
        count(&["work", "hot_a", "outer", "main"]),
        count(&["work", "hot_b", "outer", "main"]),
    )
}

/// calltree calls hot_a three times as often as hot_b: ~75 % of the call tree's samples, of which
/// there must be `at_least`.
pub fn assert_calltree_shares(what: &str, (a, b): (u64, u64), at_least: u64) {
    eprintln!("{what}: hot_a {a}, hot_b {b}");
    assert!(
        a + b >= at_least,
        "{what}: only {a} + {b} samples of the call tree"
    );
    let share = a as f64 / (a + b) as f64;
    assert!(
        (0.68..=0.82).contains(&share),
        "{what}: hot_a share {share:.3}, expected ~0.75"
    );
}

pub fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// A process's resident memory (`VmRSS`) sampled over time.
pub struct RssTrace {
    pid: u32,
    start: std::time::Instant,
    /// (seconds since start, MiB)
    pub points: Vec<(f64, f64)>,
}

impl RssTrace {
    pub fn new(pid: u32) -> RssTrace {
        RssTrace {
            pid,
            start: std::time::Instant::now(),
            points: Vec::new(),
        }
    }

    pub fn sample(&mut self) {
        if let Some(kib) = proc_status_kib(self.pid, "VmRSS") {
            self.points
                .push((self.start.elapsed().as_secs_f64(), mib(kib)));
        }
    }

    pub fn peak(&self) -> f64 {
        peak_of(&self.points)
    }

    /// Memory must not climb while the fault lasts: the median of the last third of the samples
    /// may exceed that of the first third by `tolerance` MiB at most. Medians, not peaks: a leak
    /// raises the level every sample sees, while one export's transient allocation, caught by a
    /// single sample, is growth only by timing (peaks are bounded by `assert_rss_within`).
    pub fn assert_flat(&self, what: &str, tolerance: f64) {
        let n = self.points.len() / 3;
        assert!(n > 0, "{what}: too few RSS samples");
        let (early, late) = (
            median_of(&self.points[..n]),
            median_of(&self.points[2 * n..]),
        );
        let every = (self.points.len() / 12).max(1);
        eprintln!(
            "{what}: RSS (s, MiB) {:?}",
            self.points
                .iter()
                .step_by(every)
                .map(|(t, m)| (t.round() as u64, m.round() as u64))
                .collect::<Vec<_>>()
        );
        assert!(
            late - early <= tolerance,
            "{what}: RSS grew from a median {early:.1} to {late:.1} MiB"
        );
    }
}

fn peak_of(points: &[(f64, f64)]) -> f64 {
    points.iter().map(|(_, m)| *m).fold(0.0, f64::max)
}

fn median_of(points: &[(f64, f64)]) -> f64 {
    let mut v: Vec<f64> = points.iter().map(|(_, m)| *m).collect();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Borrowed views of owned arguments, for helpers that take `&[&str]`.
pub fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// The Go toolchains `cargo xtask setup --test-tools` installed, oldest first: (version, `go`
/// binary), as it lists them in `target/test-tools/go/toolchains.txt` (xtask's
/// `setup::go_toolchains` is the one list; the tests cannot depend on xtask).
pub fn go_toolchains() -> Vec<(String, PathBuf)> {
    let file = workspace_root().join("target/test-tools/go/toolchains.txt");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: the Go toolchains are missing: run `cargo xtask setup --test-tools`",
            file.display()
        )
    });
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(v, go)| (v.to_string(), PathBuf::from(go)))
        .collect()
}

/// How [`build_go`] builds a Go workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoBuild {
    /// A version [`go_toolchains`] lists, e.g. "1.23".
    pub version: String,
    /// `-ldflags=-s -w`: no `.symtab`, no DWARF, but the pclntab stays (what container images
    /// ship).
    pub stripped: bool,
    /// `-buildmode=pie`.
    pub pie: bool,
    /// `-trimpath`: no file system paths in the pclntab's file table.
    pub trimpath: bool,
    /// GOARCH: "amd64" or "arm64".
    pub goarch: String,
    /// CGO_ENABLED=1 (with the cross gcc for a foreign GOARCH); CGO_ENABLED=0 otherwise, which
    /// makes a static binary.
    pub cgo: bool,
}

impl GoBuild {
    /// A plain build for this machine's architecture with Go `version`.
    pub fn new(version: &str) -> GoBuild {
        GoBuild {
            version: version.to_string(),
            stripped: false,
            pie: false,
            trimpath: false,
            goarch: if cfg!(target_arch = "aarch64") {
                "arm64"
            } else {
                "amd64"
            }
            .to_string(),
            cgo: false,
        }
    }

    /// The directory name's variant part: `amd64`, `arm64-pie-stripped`, `amd64-trimpath-cgo`.
    fn variant(&self) -> String {
        let mut v = self.goarch.clone();
        for (on, name) in [
            (self.pie, "-pie"),
            (self.stripped, "-stripped"),
            (self.trimpath, "-trimpath"),
            (self.cgo, "-cgo"),
        ] {
            if on {
                v.push_str(name);
            }
        }
        v
    }

    /// The binary's name, which is also its `comm` (15 bytes at most): `hot`, `hot_s` (stripped),
    /// `hot_pie_s`; `httpload_pie_s` is the longest.
    fn file_name(&self, program: &str) -> String {
        let mut name = program.to_string();
        if self.pie {
            name.push_str("_pie");
        }
        if self.stripped {
            name.push_str("_s");
        }
        name
    }

    fn args(&self) -> Vec<&'static str> {
        let mut args = vec!["build"];
        if self.stripped {
            args.push("-ldflags=-s -w");
        }
        if self.pie {
            args.push("-buildmode=pie");
        }
        if self.trimpath {
            args.push("-trimpath");
        }
        args
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let cache = workspace_root().join("target/go-workloads/.cache");
        let mut env = vec![
            ("GOARCH", self.goarch.clone()),
            ("GOOS", "linux".into()),
            ("CGO_ENABLED", if self.cgo { "1" } else { "0" }.into()),
            // One build cache for every toolchain (its keys include the toolchain), shared
            // with `cargo xtask vm-test`'s Go build.
            ("GOCACHE", cache.join("build").display().to_string()),
            ("GOPATH", cache.join("gopath").display().to_string()),
            (
                "GOMODCACHE",
                cache.join("gopath/pkg/mod").display().to_string(),
            ),
            // Hermetic: no user `go env -w` settings, no toolchain or module downloads (there
            // is no proxy.golang.org here), GOPATH mode for a single package main (works the
            // same from 1.19 to 1.23, with no go.mod to keep in step with the versions).
            ("GOENV", "off".into()),
            ("GOTOOLCHAIN", "local".into()),
            ("GOPROXY", "off".into()),
            ("GOFLAGS", "-buildvcs=false".into()),
            ("GO111MODULE", "off".into()),
        ];
        let host = if cfg!(target_arch = "aarch64") {
            "arm64"
        } else {
            "amd64"
        };
        if self.cgo && self.goarch != host {
            let cc = match self.goarch.as_str() {
                "arm64" => "aarch64-linux-gnu-gcc",
                "amd64" => "x86_64-linux-gnu-gcc",
                other => panic!("no cross C compiler known for GOARCH={other}"),
            };
            env.push(("CC", cc.into()));
        }
        env
    }
}

/// Builds `tests/workloads/go/<program>/` (package main) with `go` into
/// `target/go-workloads/<program>-<version>-<variant>/` (variant as in
/// `amd64-pie-stripped`; the file itself is short, see [`GoBuild`]). Rebuilds only when the
/// source, the flags or the toolchain changed.
pub fn build_go(program: &str, go: &GoBuild) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let toolchains = go_toolchains();
    let (_, go_binary) = toolchains
        .iter()
        .find(|(v, _)| *v == go.version)
        .unwrap_or_else(|| panic!("no Go {} in {toolchains:?}", go.version));
    let src = workspace_root().join("tests/workloads/go").join(program);
    let dir = workspace_root().join("target/go-workloads").join(format!(
        "{program}-{}-{}",
        go.version,
        go.variant()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join(go.file_name(program));

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap_or_else(|e| panic!("{}: {e}", src.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "go"))
        .collect();
    sources.sort();
    // What the binary depends on, in full (a few KiB): compared, not hashed.
    // GOROOT/VERSION: a point release of the same toolchain (an apt upgrade) rebuilds too.
    let goroot_version = go_binary
        .parent()
        .and_then(Path::parent)
        .and_then(|root| std::fs::read_to_string(root.join("VERSION")).ok())
        .unwrap_or_default();
    let mut key = format!(
        "{} {goroot_version:?} {:?} {:?}\n",
        go_binary.display(),
        go.args(),
        go.env()
    );
    for file in &sources {
        key.push_str(&std::fs::read_to_string(file).unwrap());
    }
    let stamp = dir.join("build.key");
    if out.exists() && std::fs::read_to_string(&stamp).is_ok_and(|k| k == key) {
        return out;
    }
    let _ = std::fs::remove_file(&stamp);
    let mut cmd = Command::new(go_binary);
    cmd.args(go.args())
        .arg("-o")
        .arg(&out)
        .arg(".")
        .current_dir(&src)
        .env_remove("GOROOT")
        .envs(go.env());
    let started = std::time::Instant::now();
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", go_binary.display()));
    assert!(status.success(), "{cmd:?} failed ({status})");
    eprintln!(
        "built {} in {:.1} s",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    std::fs::write(&stamp, key).unwrap();
    out
}
