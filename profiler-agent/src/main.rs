use std::process::ExitCode;

use clap::Parser;
use profiler_agent::config::Config;
use profiler_agent::local;
use profiler_agent::record::StopReason;
use profiler_agent::telemetry;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cfg = Config::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("PROFILER_LOG").unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(local::run(&cfg)) {
        Ok(outcome) => {
            if let StopReason::TargetExited(after) = outcome.stop {
                eprintln!(
                    "note: pid {} exited after {:.1} s; writing what was collected",
                    cfg.pid.map(|p| p.0).unwrap_or_default(),
                    after.as_secs_f64()
                );
            }
            let secs = outcome.elapsed.as_secs_f64();
            eprintln!(
                "wrote {} ({:?}): {} samples in {:.1} s ({:.1}/s; {} expected for one busy thread), {} distinct stacks, agent CPU {:.2} s",
                outcome.path.display(),
                outcome.format,
                outcome.samples,
                secs,
                outcome.samples as f64 / secs.max(f64::EPSILON),
                outcome.report.expected_samples,
                outcome.distinct_stacks,
                telemetry::own_cpu_time().as_secs_f64(),
            );
            eprintln!("{}", outcome.report);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
