//! One-shot profiling to a local file: `profiler-agent --pid PID --output cpu.svg`.
use std::io::{BufWriter, IsTerminal};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use profiler_common::Stat;

use crate::collect::bpf::BpfSampler;
use crate::collect::session::{self, REVALIDATE_INTERVAL};
use crate::collect::source::SampleSource;
use crate::collect::wake::Wakeup;
use crate::collect::{SessionOptions, StopReason};
use crate::config::Config;
use crate::export::{self, Format};
use crate::process::{self, ProcessTable};
use crate::profile::{self, ProfileMeta};
use crate::record::{self, RecordOptions, Recording};
use crate::symbolize::Symbolizer;
use crate::{AgentError, telemetry};

/// What a run produced, for the summary line.
#[derive(Debug)]
pub struct Outcome {
    pub path: PathBuf,
    pub format: Format,
    pub samples: u64,
    pub distinct_stacks: usize,
    pub elapsed: Duration,
    pub stop: StopReason,
    pub report: telemetry::Report,
}

/// The output file, created up front in the destination directory so an unwritable path fails
/// before any sampling, and renamed into place only once complete.
fn prepare_output(path: &Path) -> Result<tempfile::NamedTempFile, AgentError> {
    let fail = |message: String| AgentError::Output {
        path: path.to_path_buf(),
        message,
    };
    if path.is_dir() {
        return Err(fail("is a directory".into()));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(fail(format!("directory {} does not exist", dir.display())));
    }
    tempfile::Builder::new()
        .prefix(".kalypso-")
        .tempfile_in(&dir)
        .map_err(|e| fail(e.to_string()))
}

fn title(cfg: &Config, processes: &ProcessTable) -> String {
    match cfg.pid {
        Some(pid) => {
            let what = processes
                .get(pid)
                .map(|p| {
                    if p.cmdline.is_empty() {
                        p.comm.clone()
                    } else {
                        p.cmdline.join(" ")
                    }
                })
                .unwrap_or_default();
            format!("CPU profile of pid {pid}: {what}")
        }
        None => "CPU profile of all processes".to_string(),
    }
}

pub async fn run(cfg: &Config) -> Result<Outcome, AgentError> {
    let path = cfg.output_path();
    let format = cfg
        .output_format()
        .ok_or_else(|| AgentError::UnknownFormat(path.clone()))?;
    let mut processes = ProcessTable::default();
    if let Some(pid) = cfg.pid
        && !process::exists(pid)
    {
        return Err(AgentError::NoSuchProcess(pid));
    }
    // Wakes the sampling loop: a signal arrived, an unwind table was built.
    let wake = Arc::new(
        Wakeup::new().map_err(|e| AgentError::Config(format!("cannot create an eventfd: {e}")))?,
    );
    // Ctrl-C and SIGTERM are caught from here on, also while the sampler loads (a signal then
    // ends the run at its first drain): the profile is still written and the temporary output
    // file does not stay behind.
    let stop = Arc::new(AtomicBool::new(false));
    let signals = session::watch_signals(
        Arc::clone(&stop),
        Arc::new(Mutex::new(None)),
        Arc::clone(&wake),
    );
    let output = prepare_output(&path)?;
    let mut options = cfg.sampler_options();
    options.tables.wake = Some(Arc::clone(&wake));
    let mut sampler = BpfSampler::load(options)?;
    // The target's unwind tables go in before sampling starts, so every sample unwinds alike.
    if let Some(pid) = cfg.pid {
        processes.refresh(pid)?;
        if let Some(info) = processes.get(pid) {
            sampler.update_process(info);
        }
    }
    sampler.attach()?;
    let opts = RecordOptions {
        session: SessionOptions {
            target: cfg.pid,
            duration: cfg.duration,
            drain_interval: cfg.drain_interval,
            revalidate_interval: REVALIDATE_INTERVAL,
        },
        progress: !cfg.quiet && std::io::stderr().is_terminal(),
        filter: cfg.comm_filter(),
    };
    let title = title(cfg, &processes);
    // The loop blocks on the sampler's descriptors in a thread of its own; signals reach it
    // through the flag and the wakeup, as in continuous mode.
    let (sampler, recording) = tokio::task::spawn_blocking(move || {
        let recording = record::record(&mut sampler, processes, &opts, stop, wake);
        (sampler, recording)
    })
    .await
    .map_err(|e| AgentError::Config(format!("sampling thread failed: {e}")))?;
    signals.abort();
    let Recording {
        mut aggregator,
        processes,
        stats,
        start,
        elapsed,
        stop,
    } = recording?;
    let tables = sampler.table_stats();
    let bpf_runs = sampler.run_stats();
    drop(sampler);
    // A sampler that never fired is broken, not a quiet target: say so instead of writing an
    // empty profile as if all went well.
    if stats.get(Stat::Ticks) == 0 && elapsed >= Duration::from_millis(500) {
        return Err(AgentError::SamplerSilent(elapsed.as_secs_f64()));
    }
    let dropped = aggregator.dropped();
    let distinct_stacks = aggregator.distinct_stacks();
    let mut symbolizer = Symbolizer::new();
    let meta = ProfileMeta {
        start,
        duration: elapsed,
        frequency: cfg.frequency,
        title: format!("{title} ({:.1} s)", elapsed.as_secs_f64()),
        node_wide: cfg.pid.is_none(),
    };
    // Samples of processes the comm filters exclude were dropped while sampling.
    let entries = aggregator.take();
    let profile = profile::build(entries, &processes, &mut symbolizer, &meta);
    let mut writer = BufWriter::new(output.as_file());
    export::write(&profile, format, &mut writer)?;
    drop(writer);
    output.persist(&path).map_err(|e| AgentError::Output {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let samples = profile.total_samples();
    let report = telemetry::Report {
        stats,
        aggregator_dropped: dropped,
        symbolizer: symbolizer.stats,
        symbolizer_error: symbolizer.last_error().map(str::to_owned),
        unknown_objects: processes.object_errors,
        denied_objects: processes.object_denied,
        expected_samples: expected(cfg, elapsed),
        tables,
        bpf_runs,
    };
    Ok(Outcome {
        path,
        format,
        samples,
        distinct_stacks,
        elapsed,
        stop,
        report,
    })
}

/// Samples a fully busy single-threaded target would give at this frequency.
fn expected(cfg: &Config, elapsed: Duration) -> u64 {
    (cfg.frequency as f64 * elapsed.as_secs_f64()).round() as u64
}
