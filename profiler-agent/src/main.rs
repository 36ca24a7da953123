use std::process::ExitCode;

use clap::Parser;
use profiler_agent::collect::StopReason;
use profiler_agent::config::{Config, Mode};
use profiler_agent::summary::{self, SummaryFormat};
use profiler_agent::{daemon, local, telemetry};
use tracing_subscriber::EnvFilter;

/// `eprintln!` that never panics: a closed stderr (`… 2>&1 | head -1`) must not turn a run
/// whose profile was written into a crash.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

fn main() -> ExitCode {
    let cfg = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PROFILER_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match cfg.mode() {
        Mode::Local => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        // Export and /metrics run beside the sampling thread; two workers are plenty.
        Mode::Export(_) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    };
    let runtime = match runtime {
        Ok(rt) => rt,
        Err(e) => {
            say!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cfg.mode() {
        Mode::Local => runtime
            .block_on(local::run(&cfg))
            .map(|outcome| report_local(&cfg, &outcome)),
        Mode::Export(kind) => runtime.block_on(daemon::run(&cfg, kind)).map(|s| {
            if s.target_exited {
                say!("note: the target process exited; exported what was collected");
            }
            if cfg.summary == SummaryFormat::Json {
                say!("{}", summary::export(&s));
                return;
            }
            say!(
                "collected {} samples; sent {} in {} requests over {} intervals; dropped {}; agent CPU {:.2} s",
                s.samples,
                s.sent,
                s.requests,
                s.exports,
                s.dropped,
                telemetry::own_cpu_time().as_secs_f64()
            );
        }),
    };
    // Background tasks (metrics server, a stuck send) must not keep the process alive.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            say!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report_local(cfg: &Config, outcome: &local::Outcome) {
    if let StopReason::TargetExited(after) = outcome.stop {
        say!(
            "note: pid {} exited after {:.1} s; writing what was collected",
            cfg.pid.map(|p| p.0).unwrap_or_default(),
            after.as_secs_f64()
        );
    }
    let secs = outcome.elapsed.as_secs_f64();
    let empty = (outcome.samples == 0).then(|| {
        let who = match cfg.pid {
            Some(pid) => format!("pid {pid} did not run on a CPU"),
            None => "no process ran on a CPU".to_string(),
        };
        format!(
            "warning: the profile is empty: {who} during the {secs:.1} s (the sampler saw {} ticks)",
            outcome.report.stats.get(profiler_common::Stat::Ticks)
        )
    });
    if cfg.summary == SummaryFormat::Json {
        // The warnings the sentences carry, then the numbers as the last line.
        for warning in outcome.report.warnings() {
            say!("warning: {warning}");
        }
        if let Some(empty) = &empty {
            say!("{empty}");
        }
        say!("{}", summary::local(outcome));
        return;
    }
    say!(
        "wrote {} ({:?}): {} samples in {:.1} s ({:.1}/s; {} expected for one busy thread), {} distinct stacks, agent CPU {:.2} s, max RSS {:.1} MiB",
        outcome.path.display(),
        outcome.format,
        outcome.samples,
        secs,
        outcome.samples as f64 / secs.max(f64::EPSILON),
        outcome.report.expected_samples,
        outcome.distinct_stacks,
        telemetry::own_cpu_time().as_secs_f64(),
        telemetry::peak_rss().unwrap_or(0) as f64 / (1 << 20) as f64,
    );
    say!("{}", outcome.report);
    if let Some(empty) = empty {
        say!("{empty}");
    }
}
