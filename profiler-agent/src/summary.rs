//! The end-of-run summary as data: what `--summary json` prints instead of sentences, one JSON
//! object on one line of stderr, with the same numbers under stable names (the kernel's counters
//! under [`Stat::name`]), for scripts, tests and the bench.
use serde_json::{Map, Value, json};

use profiler_common::Stat;

use crate::collect::StopReason;
use crate::collect::source::SamplerStats;
use crate::daemon::DaemonSummary;
use crate::local::Outcome;
use crate::telemetry::{self, Report};
use crate::unwind::loader::LoaderStats;

/// How the summary is printed (`--summary`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SummaryFormat {
    /// Sentences, for people.
    #[default]
    Text,
    /// One JSON object on one line.
    Json,
}

/// A local run (`--output`).
pub fn local(outcome: &Outcome) -> Value {
    let r = &outcome.report;
    let mut v = json!({
        "mode": "local",
        "output": {
            "path": outcome.path.display().to_string(),
            "format": format!("{:?}", outcome.format).to_lowercase(),
        },
        "samples": outcome.samples,
        "distinct_stacks": outcome.distinct_stacks,
        "elapsed_s": outcome.elapsed.as_secs_f64(),
        "expected_samples": r.expected_samples,
        "stop": stop(outcome.stop),
        "lost": { "aggregation_bound": r.aggregator_dropped },
        "symbolizer": {
            "unresolved": r.symbolizer.unknown,
            "unresolved_in_unreadable_files": r.symbolizer.errors,
            "last_error": r.symbolizer_error,
            "cache_hits": r.symbolizer.cache_hits,
            "cache_misses": r.symbolizer.cache_misses,
            "user_stacks_cut": r.symbolizer.walk_loops,
        },
        "files": { "unreadable": r.unknown_objects, "denied": r.denied_objects },
        "bpf": bpf(r),
    });
    common(&mut v, &r.stats, r.tables.as_ref());
    v
}

/// A continuous run (`--exporter`).
pub fn export(s: &DaemonSummary) -> Value {
    let mut v = json!({
        "mode": "export",
        "samples": s.samples,
        "sent": s.sent,
        "dropped": s.dropped,
        "requests": s.requests,
        "exports": s.exports,
        "target_exited": s.target_exited,
    });
    common(&mut v, &s.stats, s.tables.as_ref());
    v
}

/// What both modes report: the agent's own cost, the kernel's counters and the unwind tables'.
fn common(v: &mut Value, stats: &SamplerStats, tables: Option<&LoaderStats>) {
    let obj = v.as_object_mut().expect("an object");
    obj.insert(
        "agent_cpu_s".into(),
        json!(telemetry::own_cpu_time().as_secs_f64()),
    );
    obj.insert("max_rss_bytes".into(), json!(telemetry::peak_rss()));
    obj.insert("kernel".into(), kernel(stats));
    obj.insert("tables".into(), tables.map_or(Value::Null, tables_json));
}

fn kernel(stats: &SamplerStats) -> Value {
    let mut m = Map::new();
    for stat in Stat::ALL {
        m.insert(stat.name().into(), json!(stats.get(stat)));
    }
    Value::Object(m)
}

fn tables_json(t: &LoaderStats) -> Value {
    json!({
        "loaded": t.tables_loaded,
        "evicted": t.tables_evicted,
        "reused": t.tables_reused,
        "without_cfi_or_unreadable": t.table_errors,
        "too_big": t.tables_too_big,
        "process_errors": t.process_errors,
        "build_queue_full": t.build_queue_full,
        "builds_pending": t.builds_pending,
        "chunks_in_use": t.chunks_in_use,
        "processes": t.processes,
    })
}

fn bpf(r: &Report) -> Value {
    match r.bpf_runs {
        Some((runs, time)) if runs > 0 => json!({
            "runs": runs,
            "ns_per_run": time.as_nanos() as f64 / runs as f64,
        }),
        _ => Value::Null,
    }
}

fn stop(reason: StopReason) -> Value {
    match reason {
        StopReason::Duration => json!({ "reason": "duration" }),
        StopReason::Signal => json!({ "reason": "signal" }),
        StopReason::TargetExited(after) => {
            json!({ "reason": "target_exited", "after_s": after.as_secs_f64() })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;
    use crate::export::Format;

    #[test]
    fn every_kernel_counter_and_the_outcome_are_named() {
        let mut stats = SamplerStats::default();
        stats.counts[Stat::Counted as usize] = 7;
        stats.counts[Stat::UnwindTruncated as usize] = 2;
        let outcome = Outcome {
            path: PathBuf::from("/tmp/x.folded"),
            format: Format::Folded,
            samples: 7,
            distinct_stacks: 3,
            elapsed: Duration::from_millis(1500),
            stop: StopReason::TargetExited(Duration::from_secs(1)),
            report: Report {
                stats,
                aggregator_dropped: 1,
                tables: Some(LoaderStats {
                    table_errors: 4,
                    ..LoaderStats::default()
                }),
                ..Report::default()
            },
        };
        let v = local(&outcome);
        // Round-trips as one line of JSON.
        let line = v.to_string();
        assert!(!line.contains('\n'));
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["mode"], "local");
        assert_eq!(v["output"]["format"], "folded");
        assert_eq!(v["samples"], 7);
        assert_eq!(v["stop"]["reason"], "target_exited");
        assert_eq!(v["kernel"]["counted"], 7);
        assert_eq!(v["kernel"]["unwind_truncated"], 2);
        assert_eq!(v["kernel"].as_object().unwrap().len(), Stat::COUNT as usize);
        assert_eq!(v["tables"]["without_cfi_or_unreadable"], 4);
        assert_eq!(v["lost"]["aggregation_bound"], 1);
        assert!(v["agent_cpu_s"].as_f64().unwrap() > 0.0);
        assert!(v["max_rss_bytes"].as_u64().unwrap() > 0);
        assert_eq!(v["bpf"], Value::Null);

        let e = export(&DaemonSummary {
            samples: 10,
            sent: 9,
            dropped: 1,
            ..DaemonSummary::default()
        });
        assert_eq!(
            (&e["mode"], &e["samples"], &e["sent"], &e["dropped"]),
            (&json!("export"), &json!(10), &json!(9), &json!(1))
        );
        assert_eq!(e["tables"], Value::Null);
    }
}
