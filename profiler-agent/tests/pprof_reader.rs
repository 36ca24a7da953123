//! The pprof output read back by an implementation we did not write: Datadog's `pprof-format`
//! (npm), installed by `cargo xtask setup --test-tools`.
mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn decode_with_pprof_format(path: &std::path::Path) -> Value {
    let root = workspace_root();
    let modules = root.join("target/test-tools/node_modules");
    assert!(
        modules.join("pprof-format").is_dir(),
        "pprof-format missing: run `cargo xtask setup --test-tools`"
    );
    let out = Command::new("node")
        .arg(root.join("tests/readers/pprof_dump.cjs"))
        .arg(path)
        .env("NODE_PATH", &modules)
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "pprof-format rejected the file: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn pprof_output_decodes_with_an_independent_reader() {
    if !require_root() {
        return;
    }
    let binary = build_c("calltree");
    let w = Workload::start(&binary, &[]);
    let dir = temp_dir();
    let out = dir.path().join("cpu.pb.gz");
    assert!(
        run_agent(&[
            "--pid",
            &w.pid().to_string(),
            "--duration",
            "4s",
            "--output",
            out.to_str().unwrap()
        ])
        .status
        .success()
    );
    let p = decode_with_pprof_format(&out);

    assert_eq!(p["string0"], "");
    assert_eq!(
        p["sampleTypes"],
        serde_json::json!([["samples", "count"], ["cpu", "nanoseconds"]])
    );
    assert_eq!(p["periodType"], serde_json::json!(["cpu", "nanoseconds"]));
    assert_eq!(p["period"], 1_000_000_000u64 / 99);
    assert!(p["durationNanos"].as_u64().unwrap() >= 3_900_000_000);
    assert!(p["timeNanos"].as_str().unwrap().parse::<u128>().unwrap() > 1_600_000_000_000_000_000);

    let samples = p["samples"].as_array().unwrap();
    let mut tree = 0;
    let mut total = 0;
    for s in samples {
        let values = s["values"].as_array().unwrap();
        let count = values[0].as_u64().unwrap();
        assert_eq!(
            values[1].as_u64().unwrap(),
            count * (1_000_000_000 / 99),
            "cpu = count × period"
        );
        total += count;
        let names: Vec<&str> = s["frames"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        // Leaf first in pprof.
        if names.windows(4).any(|w| {
            w == ["work", "hot_a", "outer", "main"] || w == ["work", "hot_b", "outer", "main"]
        }) {
            tree += count;
            // Kernel frames (an interrupt, a preemption) may come before `work`.
            let work = s["frames"]
                .as_array()
                .unwrap()
                .iter()
                .find(|f| f["name"] == "work")
                .unwrap();
            assert!(
                work["file"].as_str().unwrap().ends_with("calltree.c"),
                "{work}"
            );
            assert!(
                work["line"].as_u64().unwrap() > 0,
                "DWARF line numbers present"
            );
        }
    }
    assert!(
        tree as f64 > 0.9 * total as f64,
        "{tree} of {total} samples carry the call tree"
    );

    let exe = p["mappings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["file"].as_str() == Some(binary.to_str().unwrap()))
        .expect("a mapping for the workload binary");
    let build_id = exe["buildId"].as_str().unwrap();
    assert!(
        build_id.len() >= 16 && build_id.chars().all(|c| c.is_ascii_hexdigit()),
        "build id {build_id}"
    );
    assert_eq!(exe["hasLineNumbers"], true);
}
