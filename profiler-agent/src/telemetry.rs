//! Counters reported at the end of a run (and, node-wide, on /metrics): what was sampled, and
//! everything that was lost or could not be resolved, so nothing disappears silently.
use std::fmt;
use std::time::Duration;

use profiler_common::Stat;

use crate::collect::source::SamplerStats;
use crate::symbolize::SymbolizerStats;
use crate::unwind::loader::LoaderStats;

#[derive(Clone, Debug, Default)]
pub struct Report {
    pub stats: SamplerStats,
    /// Samples the aggregator dropped at its stack bound.
    pub aggregator_dropped: u64,
    pub symbolizer: SymbolizerStats,
    /// The last error the symbolizer met reading a file (with its path).
    pub symbolizer_error: Option<String>,
    /// Mapped files that could not be opened for symbolization.
    pub unknown_objects: u64,
    /// Of those, refused for lack of privilege.
    pub denied_objects: u64,
    /// What one fully busy thread would give: frequency × duration.
    pub expected_samples: u64,
    /// Unwind-table counters, when user stacks were unwound with tables.
    pub tables: Option<LoaderStats>,
    /// Runs of the BPF program and their total time (only counted while
    /// `kernel.bpf_stats_enabled` is 1).
    pub bpf_runs: Option<(u64, Duration)>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.stats;
        write!(
            f,
            "kernel: {} ticks, {} idle, {} other processes, {} counted; stack errors: {} user collisions, {} user other, {} kernel collisions, {} kernel faults, {} kernel other; {} lost (count map full), {} lost (aggregation bound); {} addresses unresolved, {} files unreadable, {} user stacks cut at a looping walk",
            s.get(Stat::Ticks),
            s.get(Stat::Idle),
            s.get(Stat::Filtered),
            s.get(Stat::Counted),
            s.get(Stat::UserStackCollision),
            s.get(Stat::UserStackOther),
            s.get(Stat::KernelStackCollision),
            s.get(Stat::KernelStackFault),
            s.get(Stat::KernelStackOther),
            s.get(Stat::CountMapFull),
            self.aggregator_dropped,
            self.symbolizer.unknown,
            self.unknown_objects,
            self.symbolizer.walk_loops,
        )?;
        for warning in self.warnings() {
            write!(f, "\nwarning: {warning}")?;
        }
        if let Some((runs, time)) = self.bpf_runs
            && runs > 0
        {
            write!(
                f,
                "\nbpf: {runs} program runs, {:.0} ns per run (kernel.bpf_stats_enabled)",
                time.as_nanos() as f64 / runs as f64
            )?;
        }
        if let Some(t) = &self.tables {
            write!(
                f,
                "\nunwind: {} stacks by tables ({} complete, {} truncated, {} read faults, {} unsupported rules, {} no progress, {} failed tail calls, {} with unreadable registers, {} lost to a full map), {} frames by frame pointer; tables: {} loaded, {} evicted, {} without CFI or unreadable, {} too big",
                s.get(Stat::UnwindStarted),
                s.get(Stat::UnwindComplete),
                s.get(Stat::UnwindTruncated),
                s.get(Stat::UnwindReadFault),
                s.get(Stat::UnwindUnsupported),
                s.get(Stat::UnwindNoProgress),
                s.get(Stat::UnwindTailCallFailed),
                s.get(Stat::UnwindRegsUnreadable),
                s.get(Stat::UnwoundStackMapFull),
                s.get(Stat::UnwindFramePointerFrames),
                t.tables_loaded,
                t.tables_evicted,
                t.table_errors,
                t.tables_too_big,
            )?;
        }
        Ok(())
    }
}

impl Report {
    /// What the user must be told whatever the summary's format: files the agent was refused,
    /// files that could not be read.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.denied_objects > 0 {
            out.push(denied_warning(self.denied_objects));
        }
        if self.symbolizer.errors > 0 {
            out.push(format!(
                "{} of the unresolved addresses are in files that could not be read; last error: {}",
                self.symbolizer.errors,
                self.symbolizer_error.as_deref().unwrap_or("unknown")
            ));
        }
        out
    }
}

/// What to tell a user whose agent may not open other processes' files.
pub fn denied_warning(files: u64) -> String {
    format!(
        "{files} mapped files could not be opened (permission denied): their frames show as [unknown] and their stacks unwind by frame pointers; run as root with CAP_SYS_PTRACE"
    )
}

/// The most resident memory this process has had (`VmHWM`), in bytes.
pub fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time this process has used (user + system).
pub fn own_cpu_time() -> Duration {
    // SAFETY: getrusage only writes into the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a rusage struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
