//! What every benchmark needs: compiled workloads, the agent in local and continuous mode, perf,
//! the OTLP receiver, `/proc` readings, and the commands run (for the report).
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::parse::{self, AgentSummary, ProgRunStats};
use crate::setup;

/// Shared state of one `cargo xtask bench` run.
pub struct Bench {
    pub root: PathBuf,
    pub agent: PathBuf,
    pub quick: bool,
    out: PathBuf,
    /// Clock ticks per second (`getconf CLK_TCK`), the unit of /proc/PID/stat CPU times.
    pub clk_tck: f64,
    pub cpus: usize,
    commands: Vec<String>,
}

impl Bench {
    pub fn new(agent: PathBuf, quick: bool) -> Result<Bench> {
        let root = setup::workspace_root();
        let out = root.join("target/bench");
        for dir in ["bin", "tmp", "logs"] {
            std::fs::create_dir_all(out.join(dir))?;
        }
        let clk = Command::new("getconf").arg("CLK_TCK").output()?;
        let clk_tck: f64 = String::from_utf8_lossy(&clk.stdout)
            .trim()
            .parse()
            .context("getconf CLK_TCK")?;
        let cpus = std::thread::available_parallelism()?.get();
        Ok(Bench {
            root,
            agent,
            quick,
            out,
            clk_tck,
            cpus,
            commands: Vec::new(),
        })
    }

    pub fn out_dir(&self) -> &Path {
        &self.out
    }

    /// Scratch files of this run (profiles, perf.data, receiver output).
    pub fn tmp(&self, name: &str) -> PathBuf {
        self.out.join("tmp").join(name)
    }

    pub fn log(&self, name: &str) -> PathBuf {
        self.out.join("logs").join(name)
    }

    /// `full` normally, `quick` for a smoke run.
    pub fn pick<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }

    /// Notes a command for the report, once (paths shown relative to the workspace).
    pub fn record(&mut self, cmd: &Command) {
        let shown = self.show(cmd);
        if !self.commands.contains(&shown) {
            self.commands.push(shown);
        }
    }

    /// Notes a command described in words (e.g. a loop the bench runs itself).
    pub fn record_text(&mut self, text: impl Into<String>) {
        self.commands.push(text.into());
    }

    /// The commands noted since the last call.
    pub fn take_commands(&mut self) -> Vec<String> {
        std::mem::take(&mut self.commands)
    }

    pub fn show(&self, cmd: &Command) -> String {
        let root = format!("{}/", self.root.display());
        // `$CARGO` is a full path into the toolchain; the command a reader types is `cargo`.
        let program = Path::new(cmd.get_program());
        let program = if program.file_name().is_some_and(|n| n == "cargo") {
            std::ffi::OsStr::new("cargo")
        } else {
            cmd.get_program()
        };
        std::iter::once(program)
            .chain(cmd.get_args())
            .map(|a| mask_port(&a.to_string_lossy().replace(&root, "")))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Compiles `tests/workloads/<source>` with gcc into `target/bench/bin/<name>`.
    pub fn gcc(&self, source: &str, name: &str, flags: &[&str]) -> Result<PathBuf> {
        let out = self.out.join("bin").join(name);
        let src = self.root.join("tests/workloads").join(source);
        setup::run_checked(
            Command::new("gcc")
                .args(flags)
                .arg("-o")
                .arg(&out)
                .arg(&src),
        )
        .with_context(|| format!("compiling {}", src.display()))?;
        Ok(out)
    }

    /// A workload as the tests build it for frame-pointer unwinding (gcc drops frame pointers
    /// from leaf functions at -O1 and above, so -O0).
    pub fn fp_workload(&self, name: &str) -> Result<PathBuf> {
        self.gcc(
            &format!("{name}.c"),
            name,
            &["-O0", "-g", "-fno-omit-frame-pointer"],
        )
    }

    /// A workload without frame pointers: only `.eh_frame` tells how to unwind it.
    pub fn nofp_workload(&self, name: &str) -> Result<PathBuf> {
        self.gcc(
            &format!("{name}.c"),
            &format!("{name}-nofp"),
            &[
                "-O2",
                "-g",
                "-fomit-frame-pointer",
                "-fno-optimize-sibling-calls",
            ],
        )
    }

    /// Runs the agent in local mode to completion and parses its summary.
    pub fn run_local(&mut self, args: &[&str]) -> Result<(AgentSummary, String)> {
        let mut cmd = Command::new(&self.agent);
        cmd.args(args).args(["--quiet", "--summary", "json"]);
        self.record(&cmd);
        let out = cmd.output().context("starting the agent")?;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            bail!("{} failed ({}): {stderr}", self.show(&cmd), out.status);
        }
        Ok((parse::agent_summary(&stderr)?, stderr))
    }

    /// Starts the agent in continuous mode with /metrics on a free port, and waits until its
    /// program has run (so sampling has begun).
    pub fn start_daemon(&mut self, name: &str, args: &[&str]) -> Result<Daemon> {
        let port = free_port()?;
        let log = self.log(&format!("{name}.log"));
        let mut cmd = Command::new(&self.agent);
        cmd.args(args)
            .args(["--metrics-addr", &format!("127.0.0.1:{port}")]);
        self.record(&cmd);
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting the agent")?;
        let daemon = Daemon {
            child: Guard(child),
            port,
            log,
        };
        daemon.wait_ready(Duration::from_secs(60))?;
        Ok(daemon)
    }

    /// Starts the independent OTLP receiver (tests/readers/otlp_receiver.py) on a free port.
    pub fn start_receiver(&mut self, name: &str) -> Result<Receiver> {
        let out = self.tmp(&format!("{name}.jsonl"));
        let _ = std::fs::remove_file(&out);
        let mut cmd = Command::new(setup::test_tools_dir().join("venv/bin/python"));
        cmd.arg(self.root.join("tests/readers/otlp_receiver.py"))
            .args(["--port", "0", "--max-message-bytes", "16777216", "--out"])
            .arg(&out);
        self.record(&cmd);
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.log(&format!("{name}.log")))?)
            .spawn()
            .context("starting the OTLP receiver (cargo xtask setup --test-tools)")?;
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().context("receiver stdout")?).read_line(&mut line)?;
        let port = line
            .trim()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .with_context(|| format!("receiver said `{}`", line.trim()))?;
        Ok(Receiver {
            child: Guard(child),
            port,
            out,
        })
    }
}

/// `127.0.0.1:PORT` for a port picked at random (so repeated commands read, and dedupe, alike).
fn mask_port(arg: &str) -> String {
    const HOST: &str = "127.0.0.1:";
    match arg.find(HOST) {
        Some(at) => {
            let rest = &arg[at + HOST.len()..];
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            format!("{}{HOST}PORT{}", &arg[..at], &rest[digits..])
        }
        None => arg.to_string(),
    }
}

/// A child process killed (and reaped) when dropped, so a failing benchmark leaves nothing running.
pub struct Guard(pub Child);

impl Guard {
    pub fn pid(&self) -> u32 {
        self.0.id()
    }

    /// Sends `signal` (`TERM`, `INT`) and waits up to `timeout` for the exit.
    pub fn stop(&mut self, signal: &str, timeout: Duration) -> Result<ExitStatus> {
        send_signal(self.pid(), signal)?;
        wait_timeout(&mut self.0, timeout)?.with_context(|| {
            format!(
                "pid {} did not exit within {timeout:?} of SIG{signal}",
                self.pid()
            )
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

pub fn send_signal(pid: u32, signal: &str) -> Result<()> {
    setup::run_checked(
        Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string()),
    )
}

pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a workload and waits until it prints its first line (`ready`).
pub fn start_workload(program: &Path, args: &[&str]) -> Result<Guard> {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().context("workload stdout")?).read_line(&mut line)?;
    if !line.starts_with("ready") {
        bail!("{} did not start: `{}`", program.display(), line.trim());
    }
    Ok(Guard(child))
}

/// The agent in continuous mode.
pub struct Daemon {
    pub child: Guard,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    pub fn pid(&self) -> u32 {
        self.child.pid()
    }

    pub fn metrics(&self) -> Result<String> {
        http_get(self.port, "/metrics")
    }

    /// One series from /metrics, by its full name with labels.
    pub fn metric(&self, series: &str) -> Result<f64> {
        parse::prometheus_value(&self.metrics()?, series)
            .with_context(|| format!("no {series} on /metrics"))
    }

    /// A kernel-side counter (`ticks`, `counted`, …) from /metrics.
    pub fn kernel_event(&self, event: &str) -> Result<f64> {
        self.metric(&format!("kalypso_bpf_events_total{{event=\"{event}\"}}"))
    }

    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(ticks) = self.kernel_event("ticks")
                && ticks > 0.0
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "the agent did not start sampling within {timeout:?}: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// utime + stime of every thread of the agent, in seconds.
    pub fn cpu_seconds(&self, clk_tck: f64) -> Result<f64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        Ok(parse::proc_stat_cpu_ticks(&stat)? as f64 / clk_tck)
    }

    /// A `/proc/PID/status` field (`VmRSS`, `VmHWM`) in bytes.
    pub fn status_bytes(&self, field: &str) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        match parse::status_bytes(&status, field) {
            Some(bytes) => Ok(bytes),
            // A process that has exited (a zombie until reaped) has no memory fields.
            None => bail!(
                "the agent exited during the run: {}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            ),
        }
    }

    /// Run time and count summed over the agent's BPF programs, read from the fdinfo of its
    /// program fds (each program once; tail-called programs count nothing of their own, their
    /// time is in the program that was attached).
    pub fn bpf_run_stats(&self) -> Result<ProgRunStats> {
        bpf_run_stats(self.pid())
    }

    /// Stops the agent (SIGTERM, as the DaemonSet does) and returns what it printed.
    pub fn stop(mut self) -> Result<String> {
        let status = self.child.stop("TERM", Duration::from_secs(30))?;
        let log = std::fs::read_to_string(&self.log)?;
        if !status.success() {
            bail!("the agent exited with {status}: {log}");
        }
        Ok(log)
    }
}

/// Sum of the run stats of every BPF program that process `pid` holds an fd of.
pub fn bpf_run_stats(pid: u32) -> Result<ProgRunStats> {
    let mut seen = std::collections::BTreeSet::new();
    let mut total = ProgRunStats::default();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let is_prog = std::fs::read_link(entry.path())
            .is_ok_and(|target| target.to_string_lossy() == "anon_inode:bpf-prog");
        if !is_prog {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            entry.file_name().to_string_lossy()
        ))?;
        if let Some(stats) = parse::bpf_prog_fdinfo(&info)
            && seen.insert(stats.prog_id)
        {
            total.run_time_ns += stats.run_time_ns;
            total.run_cnt += stats.run_cnt;
        }
    }
    if seen.is_empty() {
        bail!("process {pid} holds no BPF program fd");
    }
    Ok(total)
}

/// The OTLP receiver; what it received is in `out` (JSON lines).
pub struct Receiver {
    pub child: Guard,
    pub port: u16,
    pub out: PathBuf,
}

impl Receiver {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the receiver and returns (requests, bytes as serialized) it accepted.
    pub fn stop(mut self) -> Result<(u64, u64)> {
        self.child.stop("TERM", Duration::from_secs(10))?;
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let (mut requests, mut bytes) = (0, 0);
        for line in text.lines() {
            let v: Value = serde_json::from_str(line)?;
            requests += 1;
            bytes += v["_wire_bytes"].as_u64().unwrap_or(0);
        }
        Ok((requests, bytes))
    }
}

/// Sets `kernel.bpf_stats_enabled=1` and puts the previous value back when dropped.
pub struct BpfStatsEnabled {
    previous: String,
}

const BPF_STATS: &str = "/proc/sys/kernel/bpf_stats_enabled";

impl BpfStatsEnabled {
    pub fn new() -> Result<BpfStatsEnabled> {
        let previous = std::fs::read_to_string(BPF_STATS)
            .context("reading kernel.bpf_stats_enabled")?
            .trim()
            .to_string();
        std::fs::write(BPF_STATS, "1").context("setting kernel.bpf_stats_enabled=1")?;
        Ok(BpfStatsEnabled { previous })
    }
}

impl Drop for BpfStatsEnabled {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(BPF_STATS, &self.previous) {
            eprintln!(
                "bench: could not restore kernel.bpf_stats_enabled={}: {e}",
                self.previous
            );
        }
    }
}

pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A plain HTTP/1.1 GET on localhost; the body on a 200, an error otherwise.
pub fn http_get(port: u16, path: &str) -> Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or_default());
    }
    Ok(body.to_string())
}

/// Cumulative CPU time of the whole machine from /proc/stat (jiffies).
pub struct CpuTimes {
    busy: u64,
    total: u64,
}

pub fn cpu_times() -> Result<CpuTimes> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …; idle and iowait are not busy.
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    Ok(CpuTimes {
        busy: total - idle,
        total,
    })
}

impl CpuTimes {
    /// Percent of all CPUs' time that was busy since `earlier`.
    pub fn busy_since(&self, earlier: &CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total).max(1);
        100.0 * self.busy.saturating_sub(earlier.busy) as f64 / total as f64
    }
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .current_dir(setup::workspace_root())
        .output()
        .ok()
        .map(|o| {
            let text = String::from_utf8_lossy(&o.stdout);
            text.lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_default()
}

/// Kernel, CPU, memory, load, date and source revision, for the report.
pub fn machine_facts() -> Value {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
        .map_or("unknown".to_string(), |(_, m)| m.trim().to_string());
    let mem_kib = parse::status_bytes(&read("/proc/meminfo"), "MemTotal").unwrap_or(0);
    let dirty = !command_line("git", &["status", "--porcelain"]).is_empty();
    // Other profilers share the CPUs (and add their own BPF programs to every tick).
    let ours = std::process::id().to_string();
    let other_profilers = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|c| c.is_ascii_digit())
        })
        .filter(|e| e.file_name().to_string_lossy() != ours)
        .filter(|e| {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            matches!(comm.trim(), "profiler-agent" | "perf")
        })
        .count();
    json!({
        "date": command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "cpu_model": model,
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "mem_gib": (mem_kib as f64 / (1u64 << 30) as f64).round(),
        "loadavg": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        "git": format!(
            "git {}{}",
            command_line("git", &["rev-parse", "--short", "HEAD"]),
            if dirty { " + uncommitted changes" } else { "" }
        ),
        "perf": command_line("perf", &["--version"]),
        "addr2line": command_line("addr2line", &["--version"]),
        "other_profilers": other_profilers,
    })
}

/// Formats a number with a sensible number of digits for a table.
pub fn fmt(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 100.0 || (v.fract() == 0.0 && v.abs() < 1e15) {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn random_ports_are_masked_in_shown_commands() {
        assert_eq!(
            super::mask_port("http://127.0.0.1:41341"),
            "http://127.0.0.1:PORT"
        );
        assert_eq!(super::mask_port("127.0.0.1:9464/x"), "127.0.0.1:PORT/x");
        assert_eq!(super::mask_port("--duration"), "--duration");
    }
}
