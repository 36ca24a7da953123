//! Command line and environment: one clap struct, every flag also an environment variable.
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::export::Format;
use crate::types::Pid;

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

    /// How long to sample (e.g. 10s, 2m, 500ms). Default: until Ctrl-C, or until the process exits.
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

    /// How often the kernel maps are drained into the agent.
    #[arg(long, env = "PROFILER_DRAIN_INTERVAL", default_value = "1s", value_parser = parse_duration, hide = true)]
    pub drain_interval: Duration,

    /// Never show the progress line (it is only shown on a terminal anyway).
    #[arg(long, env = "PROFILER_QUIET")]
    pub quiet: bool,
}

impl Config {
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
    fn a_bare_number_is_seconds() {
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    }
}
