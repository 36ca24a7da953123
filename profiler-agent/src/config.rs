//! Command line and environment: one clap struct, every flag also an environment variable.
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::collect::bpf::{SamplerOptions, UnwindMode};
use crate::export::Format;
use crate::summary::SummaryFormat;
use crate::types::Pid;
use crate::unwind::loader::LoaderOptions;

/// Highest sampling frequency accepted: above this the sampler's own cost distorts the profile.
pub const MAX_FREQUENCY: u64 = 10_000;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "profiler-agent",
    version,
    about = "Kalypso: sample CPU stacks with eBPF and write a flame graph, pprof or folded stacks",
    after_help = "Examples:\n  sudo profiler-agent --pid 1234 --duration 10s --output cpu.svg\n  sudo profiler-agent --pid 1234 --output cpu.pb.gz    (Ctrl-C ends sampling)\n  sudo profiler-agent --duration 30s --output node.folded   (every process)"
)]
pub struct Config {
    /// Profile this process (all its threads). Without it, every process on the machine.
    #[arg(long, short, env = "PROFILER_PID", value_parser = parse_pid)]
    pub pid: Option<Pid>,

    /// How long to sample (e.g. 10s, 2m, 500ms); with --exporter, the last window is exported
    /// then and the agent exits. Default: until Ctrl-C/SIGTERM, or until the process exits.
    #[arg(long, short, env = "PROFILER_DURATION", value_parser = parse_duration)]
    pub duration: Option<Duration>,

    /// Samples per second on each CPU.
    #[arg(long, short = 'F', env = "PROFILER_FREQUENCY", default_value_t = 99,
          value_parser = clap::value_parser!(u64).range(1..=MAX_FREQUENCY))]
    pub frequency: u64,

    /// Where to write the profile; the format follows the extension (.svg, .pb.gz/.pprof, .folded/.txt).
    /// Default: kalypso-<pid>.svg (kalypso-node.svg without --pid).
    #[arg(long, short, env = "PROFILER_OUTPUT")]
    pub output: Option<PathBuf>,

    /// Output format, overriding the extension.
    #[arg(long, value_enum, env = "PROFILER_FORMAT")]
    pub format: Option<Format>,

    /// How user stacks are unwound: `auto` (with .eh_frame tables where the kernel accepts the
    /// table unwinder, else frame pointers), `fp` (frame pointers only) or `dwarf` (tables; an
    /// error if the kernel rejects the unwinder).
    #[arg(long, value_enum, env = "PROFILER_UNWIND", default_value_t = UnwindMode::Auto)]
    pub unwind: UnwindMode,

    /// Directory where unwind tables are cached between runs (one file per binary, by build id).
    /// It must be private: it is created with mode 0700; a symbolic link, a directory another
    /// user owns, or a non-empty one others may write to is refused. Default: as root
    /// /var/cache/kalypso/unwind-tables, else $XDG_CACHE_HOME/kalypso/unwind-tables
    /// (~/.cache/kalypso/unwind-tables).
    #[arg(long, env = "PROFILER_UNWIND_CACHE_DIR")]
    pub unwind_cache_dir: Option<PathBuf>,

    /// Bound on the unwind-table cache on disk; least recently used tables go first.
    #[arg(long, env = "PROFILER_UNWIND_CACHE_BYTES", default_value_t = 512 << 20)]
    pub unwind_cache_bytes: u64,

    /// Kernel memory for unwind tables, in MiB (8 bytes per rule; glibc needs 0.2 MiB, the largest
    /// C++ libraries about 10 MiB each). Tables that do not fit unwind by frame pointers.
    #[arg(long, env = "PROFILER_UNWIND_TABLE_MIB", default_value_t = 24,
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub unwind_table_mib: u32,

    /// How often the kernel maps are drained into the agent.
    #[arg(long, env = "PROFILER_DRAIN_INTERVAL", default_value = "1s", value_parser = parse_duration, hide = true)]
    pub drain_interval: Duration,

    /// Never show the progress line (it is only shown on a terminal anyway).
    #[arg(long, env = "PROFILER_QUIET")]
    pub quiet: bool,

    /// How the end-of-run summary is printed on stderr: sentences, or one JSON object on one
    /// line with the same numbers under stable names (for scripts).
    #[arg(long, value_enum, env = "PROFILER_SUMMARY", default_value_t = SummaryFormat::Text)]
    pub summary: SummaryFormat,

    /// Continuous export instead of one file: `otlp` (gRPC to a collector or Pyroscope), `stdout`
    /// (each request as a JSON line; when the reader closes the pipe, as `| head` does, the agent
    /// says so on stderr once and exits with status 1), or `none`. Default when neither --pid
    /// nor --output is given: otlp.
    #[arg(
        long,
        value_enum,
        env = "PROFILER_EXPORTER",
        help_heading = "Continuous export"
    )]
    pub exporter: Option<ExporterKind>,

    /// OTLP gRPC endpoint [env: OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT, then OTEL_EXPORTER_OTLP_ENDPOINT]
    /// [default: http://localhost:4317]
    #[arg(long, help_heading = "Continuous export")]
    pub otlp_endpoint: Option<String>,

    /// Extra gRPC header, KEY=VALUE (repeatable; e.g. X-Scope-OrgID=tenant)
    /// [env: OTEL_EXPORTER_OTLP_PROFILES_HEADERS / OTEL_EXPORTER_OTLP_HEADERS, comma-separated]
    #[arg(long = "otlp-header", value_parser = parse_key_value, help_heading = "Continuous export")]
    pub otlp_headers: Vec<(String, String)>,

    /// CA certificate (PEM) to trust for https endpoints, besides the system roots.
    #[arg(
        long,
        env = "OTEL_EXPORTER_OTLP_CERTIFICATE",
        help_heading = "Continuous export"
    )]
    pub otlp_ca_file: Option<PathBuf>,

    /// Largest request sent; bigger exports are split (4 MiB is the common receiver limit).
    #[arg(long, env = "PROFILER_OTLP_MAX_MESSAGE_BYTES", default_value_t = 4 << 20, help_heading = "Continuous export")]
    pub otlp_max_message_bytes: usize,

    /// How often profiles are exported.
    #[arg(long, env = "PROFILER_EXPORT_INTERVAL", default_value = "10s", value_parser = parse_duration, help_heading = "Continuous export")]
    pub export_interval: Duration,

    /// Bound on requests waiting to be sent; past it the oldest are dropped (and counted).
    #[arg(long, env = "PROFILER_EXPORT_QUEUE_BYTES", default_value_t = 64 << 20, help_heading = "Continuous export")]
    pub export_queue_bytes: usize,

    /// On SIGTERM/Ctrl-C, how long to keep sending what is pending before exiting.
    #[arg(long, env = "PROFILER_SHUTDOWN_TIMEOUT", default_value = "5s", value_parser = parse_duration, help_heading = "Continuous export")]
    pub shutdown_timeout: Duration,

    /// Address for /metrics and /healthz.
    #[arg(
        long,
        env = "PROFILER_METRICS_ADDR",
        default_value = "127.0.0.1:9464",
        help_heading = "Continuous export"
    )]
    pub metrics_addr: std::net::SocketAddr,

    /// `host.name` on every resource (e.g. the Kubernetes node name). Default: this host's name.
    #[arg(long, env = "PROFILER_HOST_NAME", help_heading = "Continuous export")]
    pub host_name: Option<String>,

    /// Extra resource attributes for every process, k1=v1,k2=v2.
    #[arg(
        long,
        env = "OTEL_RESOURCE_ATTRIBUTES",
        help_heading = "Continuous export"
    )]
    pub resource_attributes: Option<String>,

    /// Only profile processes whose name (comm) matches this regular expression.
    #[arg(long, env = "PROFILER_INCLUDE_COMM", help_heading = "Filters")]
    pub include_comm: Option<regex::Regex>,

    /// Never profile processes whose name (comm) matches this regular expression.
    #[arg(long, env = "PROFILER_EXCLUDE_COMM", help_heading = "Filters")]
    pub exclude_comm: Option<regex::Regex>,
}

/// Which processes to profile, by name (comm).
#[derive(Clone, Debug, Default)]
pub struct CommFilter {
    pub include: Option<regex::Regex>,
    pub exclude: Option<regex::Regex>,
}

impl CommFilter {
    pub fn wants(&self, comm: &str) -> bool {
        comm_wanted(self.include.as_ref(), self.exclude.as_ref(), comm)
    }
}

fn comm_wanted(include: Option<&regex::Regex>, exclude: Option<&regex::Regex>, comm: &str) -> bool {
    include.is_none_or(|re| re.is_match(comm)) && !exclude.is_some_and(|re| re.is_match(comm))
}

/// Continuous exporters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExporterKind {
    Otlp,
    Stdout,
    None,
}

/// What a run does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Sample for a while and write one file.
    Local,
    /// Sample until stopped, exporting every interval.
    Export(ExporterKind),
}

impl Config {
    /// Export when asked to, or when there is neither a process nor a file to profile into.
    pub fn mode(&self) -> Mode {
        match self.exporter {
            Some(kind) => Mode::Export(kind),
            None if self.pid.is_none() && self.output.is_none() => Mode::Export(ExporterKind::Otlp),
            None => Mode::Local,
        }
    }

    /// The OTLP endpoint: the flag, else the profiles-specific variable, else the generic one.
    pub fn otlp_endpoint(&self) -> String {
        self.otlp_endpoint
            .clone()
            .or_else(|| env_nonempty("OTEL_EXPORTER_OTLP_PROFILES_ENDPOINT"))
            .or_else(|| env_nonempty("OTEL_EXPORTER_OTLP_ENDPOINT"))
            .unwrap_or_else(|| "http://localhost:4317".into())
    }

    /// Headers from OTEL_EXPORTER_OTLP_HEADERS, then the profiles-specific variable, then flags
    /// (later ones win for the same key).
    pub fn otlp_headers(&self) -> Result<Vec<(String, String)>, String> {
        let mut headers: Vec<(String, String)> = Vec::new();
        for var in [
            "OTEL_EXPORTER_OTLP_HEADERS",
            "OTEL_EXPORTER_OTLP_PROFILES_HEADERS",
        ] {
            if let Some(text) = env_nonempty(var) {
                let parsed = crate::resource::parse_otel_resource_attributes(&text)
                    .map_err(|e| format!("{var}: {e}"))?;
                headers.extend(parsed);
            }
        }
        headers.extend(self.otlp_headers.iter().cloned());
        let mut out: Vec<(String, String)> = Vec::new();
        for (k, v) in headers {
            out.retain(|(old, _)| !old.eq_ignore_ascii_case(&k));
            out.push((k, v));
        }
        Ok(out)
    }

    /// Whether `--include-comm` / `--exclude-comm` let a process with this name through.
    pub fn wants(&self, comm: &str) -> bool {
        comm_wanted(self.include_comm.as_ref(), self.exclude_comm.as_ref(), comm)
    }

    /// `--include-comm` / `--exclude-comm`, for the stages that apply them.
    pub fn comm_filter(&self) -> CommFilter {
        CommFilter {
            include: self.include_comm.clone(),
            exclude: self.exclude_comm.clone(),
        }
    }

    /// What the sampler is asked to do.
    pub fn sampler_options(&self) -> SamplerOptions {
        SamplerOptions {
            target: self.pid,
            frequency: self.frequency,
            unwind: self.unwind,
            tables: LoaderOptions {
                cache_dir: self.unwind_cache_dir.clone().unwrap_or_else(|| {
                    default_unwind_cache_dir(
                        rustix::process::geteuid().is_root(),
                        std::env::var_os("XDG_CACHE_HOME"),
                        std::env::var_os("HOME"),
                    )
                }),
                cache_max_bytes: self.unwind_cache_bytes,
                // One process: its tables are built before sampling starts. Node-wide: in the
                // background, so new processes never hold up sampling.
                background: self.pid.is_none(),
                row_chunks: self.unwind_table_mib
                    * ((1 << 20) / profiler_common::UNWIND_CHUNK_BYTES),
                wake: None,
            },
        }
    }

    pub fn output_path(&self) -> PathBuf {
        self.output.clone().unwrap_or_else(|| match self.pid {
            Some(pid) => PathBuf::from(format!("kalypso-{pid}.svg")),
            None => PathBuf::from("kalypso-node.svg"),
        })
    }

    /// The output format: `--format`, else the extension; `None` if neither says.
    pub fn output_format(&self) -> Option<Format> {
        self.format
            .or_else(|| Format::from_path(&self.output_path()))
    }
}

/// Where unwind tables are cached without `--unwind-cache-dir`: a root daemon's cache under
/// /var/cache; another user's under the XDG cache directory (`$XDG_CACHE_HOME`, else
/// `~/.cache`). Never a predictable name in a shared directory such as /tmp, where another user
/// could plant a link first.
pub fn default_unwind_cache_dir(
    root: bool,
    xdg_cache_home: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    const SYSTEM: &str = "/var/cache/kalypso/unwind-tables";
    // The XDG spec: relative values are invalid and ignored.
    let absolute = |v: Option<std::ffi::OsString>| v.map(PathBuf::from).filter(|p| p.is_absolute());
    if root {
        return PathBuf::from(SYSTEM);
    }
    absolute(xdg_cache_home)
        .or_else(|| absolute(home).map(|h| h.join(".cache")))
        .map_or_else(
            || PathBuf::from(SYSTEM),
            |c| c.join("kalypso/unwind-tables"),
        )
}

fn env_nonempty(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("`{s}` is not KEY=VALUE")),
    }
}

fn parse_pid(s: &str) -> Result<Pid, String> {
    match s.trim().parse::<u32>() {
        Ok(0) => Err("pid 0 is the idle task, not a process".into()),
        Ok(p) if p <= i32::MAX as u32 => Ok(Pid(p)),
        _ => Err(format!("`{s}` is not a process id")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim()).or_else(|e| {
        // A bare number means seconds.
        s.trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| e.to_string())
    })?;
    if d.is_zero() {
        return Err("must be longer than zero".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_consistent() {
        Config::command().debug_assert();
    }

    #[test]
    fn parses_the_documented_invocations() {
        let c = Config::try_parse_from([
            "p",
            "--pid",
            "1234",
            "--duration",
            "10s",
            "--output",
            "cpu.svg",
        ])
        .unwrap();
        assert_eq!(c.pid, Some(Pid(1234)));
        assert_eq!(c.duration, Some(Duration::from_secs(10)));
        assert_eq!(c.output_format(), Some(Format::Svg));
        assert_eq!(c.frequency, 99);
        let c = Config::try_parse_from(["p", "--pid", "1", "--output", "x.pb.gz"]).unwrap();
        assert_eq!((c.duration, c.output_format()), (None, Some(Format::Pprof)));
        let c = Config::try_parse_from(["p", "--pid", "1", "-o", "x.bin", "--format", "folded"])
            .unwrap();
        assert_eq!(c.output_format(), Some(Format::Folded));
    }

    #[test]
    fn defaults_need_no_configuration() {
        let c = Config::try_parse_from(["p", "--pid", "77"]).unwrap();
        assert_eq!(c.output_path(), PathBuf::from("kalypso-77.svg"));
        assert_eq!(c.output_format(), Some(Format::Svg));
    }

    #[test]
    fn rejects_bad_numbers() {
        for args in [
            ["p", "--pid", "1", "--frequency", "0"],
            ["p", "--pid", "1", "--frequency", "10001"],
            ["p", "--pid", "1", "--duration", "0s"],
            ["p", "--pid", "1", "--duration", "soon"],
            ["p", "--pid", "x", "--duration", "1s"],
            ["p", "--pid", "0", "--duration", "1s"],
        ] {
            assert!(Config::try_parse_from(args).is_err(), "{args:?} accepted");
        }
    }

    #[test]
    fn mode_follows_the_flags() {
        let mode = |args: &[&str]| Config::try_parse_from(args).unwrap().mode();
        assert_eq!(mode(&["p"]), Mode::Export(ExporterKind::Otlp));
        assert_eq!(mode(&["p", "--pid", "1"]), Mode::Local);
        assert_eq!(mode(&["p", "-o", "x.svg"]), Mode::Local);
        assert_eq!(
            mode(&["p", "--pid", "1", "--exporter", "stdout"]),
            Mode::Export(ExporterKind::Stdout)
        );
    }

    #[test]
    fn headers_from_flags_override_the_environment() {
        let c = Config::try_parse_from([
            "p",
            "--otlp-header",
            "X-Scope-OrgID=a",
            "--otlp-header",
            "x-scope-orgid=b",
        ])
        .unwrap();
        assert_eq!(
            c.otlp_headers().unwrap(),
            vec![("x-scope-orgid".to_string(), "b".to_string())]
        );
        assert!(Config::try_parse_from(["p", "--otlp-header", "novalue"]).is_err());
    }

    #[test]
    fn the_default_unwind_cache_is_never_in_a_shared_temporary_directory() {
        let os = |s: &str| Some(std::ffi::OsString::from(s));
        assert_eq!(
            default_unwind_cache_dir(true, os("/home/u/.cache"), os("/home/u")),
            PathBuf::from("/var/cache/kalypso/unwind-tables")
        );
        assert_eq!(
            default_unwind_cache_dir(false, os("/home/u/xdg"), os("/home/u")),
            PathBuf::from("/home/u/xdg/kalypso/unwind-tables")
        );
        assert_eq!(
            default_unwind_cache_dir(false, os("relative"), os("/home/u")),
            PathBuf::from("/home/u/.cache/kalypso/unwind-tables")
        );
        assert_eq!(
            default_unwind_cache_dir(false, None, None),
            PathBuf::from("/var/cache/kalypso/unwind-tables")
        );
        let c = Config::try_parse_from(["p", "--pid", "1"]).unwrap();
        let dir = c.sampler_options().tables.cache_dir;
        assert!(!dir.starts_with(std::env::temp_dir()), "{}", dir.display());
    }

    #[test]
    fn a_bare_number_is_seconds() {
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }
}
