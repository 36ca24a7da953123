//! Tables of real objects: the system libc (cross-checked against `readelf`), the test binary
//! itself, and a measurement of the largest objects on the machine.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use object::{Object, ObjectSymbol};

use super::*;

/// The rule a function's first instruction has: the return address just pushed by the call
/// (x86_64: CFA = rsp + 8, at CFA - 8) or still in the link register (aarch64: CFA = sp).
fn entry_rule(arch: u32) -> Rule {
    if arch == arch::X86_64 {
        Rule::of(&sp(0, 8, 0))
    } else {
        Rule::of(&row(0, kind::CFA_SP, 0, 0, 0))
    }
}

/// Invariants of a real object's table: sorted, and nearly all code unwinds by CFA (the other
/// rows describing code being END, PLT and UNSUPPORTED; NO_INFO rows only end functions).
fn assert_plausible(table: &UnwindTable) {
    assert!(table.rows.len() > 1000, "{:?}", table.info);
    assert_sorted(&table.rows);
    let count = |kinds: &[u8]| {
        table
            .rows
            .iter()
            .filter(|r| kinds.contains(&r.kind))
            .count()
    };
    let code = table.rows.len() - count(&[kind::NO_INFO]);
    let share = count(&[kind::CFA_SP, kind::CFA_FP]) as f64 / code as f64;
    assert!(
        share > 0.95,
        "{share} of rows unwind by CFA: {:?}",
        table.info
    );
}

#[test]
fn libc_functions_start_with_the_entry_rule() {
    let elf = std::fs::read(libc_path()).unwrap();
    let table = build_table(&elf).unwrap();
    assert_plausible(&table);
    assert!(table.info.eh_frame_bytes > 0);
    for name in ["malloc", "free", "getpid", "qsort", "fopen", "strtol"] {
        let (start, _) = symbol(&elf, name);
        let rule = row_at(&table.rows, start).map(|r| Rule::of(&r));
        assert_eq!(rule, Some(entry_rule(table.arch)), "{name} at {start:#x}");
    }
}

#[test]
fn test_binary_functions_start_with_the_entry_rule() {
    let elf = std::fs::read(std::env::current_exe().unwrap()).unwrap();
    let table = build_table(&elf).unwrap();
    assert_plausible(&table);
    let file = object::File::parse(&*elf).unwrap();
    let entry = entry_rule(table.arch);
    let (mut checked, mut other) = (0, Vec::new());
    for sym in file.symbols() {
        if sym.kind() != object::SymbolKind::Text || sym.size() == 0 {
            continue;
        }
        let start = u32::try_from(sym.address()).unwrap();
        match row_at(&table.rows, start) {
            None => {}
            Some(r) if r.kind == kind::NO_INFO => {}
            Some(r) if Rule::of(&r) == entry => checked += 1,
            Some(r) => other.push((sym.name().unwrap_or("?").to_owned(), r)),
        }
    }
    // Only hand-written assembly (`_start`, with its END row) may differ.
    assert!(checked > 1000, "{checked}");
    assert!(
        other.len() <= 5,
        "{checked} functions ok; others: {other:?}"
    );
}

/// A rule as `readelf --debug-dump=frames-interp` prints it: a CFA expression is either the PLT
/// rule or unsupported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Rule(Rule),
    Expression { fp_offset: i16 },
}

/// One `readelf` table line in x86_64 register names: `values` are the CFA then one value per
/// register of `columns` (`rbx rbp ... ra`).
fn readelf_rule(columns: &[&str], values: &[&str]) -> Expected {
    let column = |name| {
        columns
            .iter()
            .position(|c| *c == name)
            .and_then(|i| values.get(i + 1).copied())
    };
    let saved = |value: Option<&str>| -> Option<i16> {
        match value {
            None | Some("u") | Some("s") => Some(0),
            Some(v) => v.strip_prefix('c')?.parse().ok().filter(|&n| n != 0),
        }
    };
    let unsupported = Expected::Rule(Rule::UNSUPPORTED);
    let ra = match column("ra") {
        Some("u") => return Expected::Rule(Rule::END),
        ra => match saved(ra) {
            Some(n) if n != 0 => n,
            _ => return unsupported,
        },
    };
    let Some(fp_offset) = saved(column("rbp")) else {
        return unsupported;
    };
    let cfa = values[0];
    if cfa == "exp" {
        return Expected::Expression { fp_offset };
    }
    let (kind, offset) = if let Some(n) = cfa.strip_prefix("rsp+") {
        (kind::CFA_SP, n)
    } else if let Some(n) = cfa.strip_prefix("rbp+") {
        (kind::CFA_FP, n)
    } else {
        return unsupported;
    };
    match offset.parse::<i16>() {
        Ok(cfa_offset) => Expected::Rule(Rule {
            kind,
            cfa_offset,
            fp_offset,
            ra_offset: ra,
        }),
        Err(_) => unsupported,
    }
}

/// An FDE from `readelf`: its range and `(LOC, rule)` lines (the CIE's when it has none).
struct ReadelfFde {
    start: u64,
    end: u64,
    rows: Vec<(u64, Expected)>,
}

/// A CIE or FDE being read.
struct Entry {
    /// The CIE's offset, or the FDE's CIE.
    cie: String,
    /// The FDE's range; `None` for a CIE.
    range: Option<(u64, u64)>,
    columns: Vec<String>,
    rows: Vec<(u64, Expected)>,
}

fn parse_readelf_frames(text: &str) -> Vec<ReadelfFde> {
    let mut cies: HashMap<String, Vec<(u64, Expected)>> = HashMap::new();
    let mut fdes = Vec::new();
    let mut finish = |entry: Option<Entry>| match entry {
        None => {}
        Some(Entry {
            cie,
            range: None,
            rows,
            ..
        }) => {
            cies.insert(cie, rows);
        }
        Some(Entry {
            cie,
            range: Some((start, end)),
            mut rows,
            ..
        }) => {
            if rows.is_empty() {
                let initial = cies.get(&cie).and_then(|r| r.last()).map(|r| r.1);
                rows.extend(initial.map(|rule| (start, rule)));
            }
            fdes.push(ReadelfFde { start, end, rows });
        }
    };
    let mut current: Option<Entry> = None;
    for line in text.lines() {
        // "r10 (r10)": a register rule names the register twice, the second time in parentheses.
        let words: Vec<&str> = line
            .split_whitespace()
            .filter(|w| !w.starts_with('('))
            .collect();
        let hex = |s: &str| u64::from_str_radix(s, 16).ok();
        match words.as_slice() {
            [offset, _, _, "CIE", ..] => {
                finish(current.take());
                current = Some(Entry {
                    cie: offset.to_string(),
                    range: None,
                    columns: Vec::new(),
                    rows: Vec::new(),
                });
            }
            [_, _, _, "FDE", cie, pc, ..] => {
                finish(current.take());
                let (start, end) = pc.trim_start_matches("pc=").split_once("..").unwrap();
                current = Some(Entry {
                    cie: cie.trim_start_matches("cie=").to_string(),
                    range: Some((hex(start).unwrap(), hex(end).unwrap())),
                    columns: Vec::new(),
                    rows: Vec::new(),
                });
            }
            ["LOC", "CFA", columns @ ..] => {
                if let Some(entry) = current.as_mut() {
                    entry.columns = columns.iter().map(|c| c.to_string()).collect();
                }
            }
            [loc, values @ ..] if !values.is_empty() && loc.len() == 16 => {
                if let (Some(entry), Some(loc)) = (current.as_mut(), hex(loc)) {
                    let columns: Vec<&str> = entry.columns.iter().map(|c| c.as_str()).collect();
                    entry.rows.push((loc, readelf_rule(&columns, values)));
                }
            }
            _ => {}
        }
    }
    finish(current.take());
    fdes
}

#[test]
fn libc_agrees_with_readelf() {
    let path = libc_path();
    let table = build_table(&std::fs::read(&path).unwrap()).unwrap();
    if table.arch != arch::X86_64 {
        eprintln!("skipped: the readelf cross-check reads x86_64 register names");
        return;
    }
    let Ok(output) = Command::new("readelf")
        .arg("--debug-dump=frames-interp")
        .arg(&path)
        .output()
    else {
        eprintln!("skipped: readelf is not installed");
        return;
    };
    let mut fdes = parse_readelf_frames(&String::from_utf8_lossy(&output.stdout));
    fdes.retain(|f| f.end > f.start);
    fdes.sort_by_key(|f| f.start);
    assert!(fdes.len() > 1000, "{} FDEs from readelf", fdes.len());
    assert_eq!(fdes.len() as u64, table.info.fdes);

    let (mut compared, mut mismatches) = (0, Vec::new());
    let mut check = |pc: u64, expected: Expected| {
        let ours = row_at(&table.rows, u32::try_from(pc).unwrap());
        let ok = match (expected, ours) {
            (Expected::Rule(rule), Some(r)) => Rule::of(&r) == rule,
            (Expected::Expression { fp_offset }, Some(r)) => {
                r.kind == kind::UNSUPPORTED
                    || Rule::of(&r)
                        == Rule {
                            kind: kind::PLT,
                            cfa_offset: 8,
                            fp_offset,
                            ra_offset: -8,
                        }
            }
            (_, None) => false,
        };
        compared += 1;
        if !ok {
            mismatches.push((pc, expected, ours));
        }
    };
    for (i, fde) in fdes.iter().enumerate() {
        let next = fdes.get(i + 1).map(|f| f.start);
        let end = next.map_or(fde.end, |n| n.min(fde.end));
        for (j, &(loc, rule)) in fde.rows.iter().enumerate() {
            // A later line at the same address replaces this one.
            let replaced = fde.rows.get(j + 1).is_some_and(|r| r.0 == loc);
            if loc < end && !replaced {
                check(loc, rule);
            }
        }
        if next.is_none_or(|n| n > fde.end) {
            check(fde.end, Expected::Rule(Rule::NO_INFO));
        }
    }
    assert!(compared > 10_000, "{compared}");
    assert!(
        mismatches.is_empty(),
        "{} of {compared} rows differ from readelf, first: {:?}",
        mismatches.len(),
        &mismatches[..mismatches.len().min(10)]
    );
}

/// A `/proc/self/status` field in KiB.
fn status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Table size and build cost for libc and the largest objects found on this machine. Run with
/// `cargo test --release -p profiler-agent --lib unwind::table -- --ignored --nocapture`.
#[test]
#[ignore = "measurement: prints numbers, asserts nothing about them"]
fn measure_table_builds() {
    let mut objects = vec![libc_path(), std::env::current_exe().unwrap()];
    let agent = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/profiler-agent");
    let globs = [
        agent,
        PathBuf::from("/usr/lib/llvm-22/lib/libLLVM.so.22.1"),
        PathBuf::from("/usr/lib/x86_64-linux-gnu/libLLVM-14.so.1"),
        // Stripped Go (cgo) binaries: rows from .gopclntab merged with their C code's CFI.
        PathBuf::from("/usr/bin/podman"),
        PathBuf::from("/usr/sbin/runc"),
    ];
    objects.extend(globs.into_iter().filter(|p| p.exists()));
    // More, e.g. a generated 100 MiB Go binary: KALYPSO_TABLE_OBJECTS=a:b.
    if let Ok(extra) = std::env::var("KALYPSO_TABLE_OBJECTS") {
        objects.extend(
            extra
                .split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
        );
    }
    if let Ok(home) = std::env::var("HOME") {
        let lib = Path::new(&home).join(".rustup/toolchains/1.95.0-x86_64-unknown-linux-gnu/lib");
        for entry in std::fs::read_dir(lib).into_iter().flatten().flatten() {
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with("librustc_driver")
            {
                objects.push(entry.path());
            }
        }
    }
    println!(
        "{:<40} {:>10} {:>7} {:>9} {:>10} {:>9} {:>8} {:>9} {:>9} {:>9}",
        "object",
        "eh_frame",
        "FDEs",
        "rows",
        "row bytes",
        "B/MiB",
        "unsupp.",
        "build ms",
        "HWM +KiB",
        "cache ms"
    );
    for path in objects {
        let file = std::fs::File::open(&path).unwrap();
        // Reset the peak RSS to the current RSS (Linux >= 4.0), so the peak measures this build.
        let reset = std::fs::write("/proc/self/clear_refs", "5").is_ok();
        let rss_before = status_kib("VmRSS:").unwrap_or(0);
        let anon_before = status_kib("RssAnon:").unwrap_or(0);
        let (mut rows, mut checksum, mut anon_peak) = (0u64, 0u64, anon_before);
        let started = std::time::Instant::now();
        let info = build_rows_from_file(&file, &mut |row| {
            rows += 1;
            checksum = checksum.wrapping_add(u64::from(row.pc) ^ u64::from(row.kind));
            // Heap (anonymous memory) sampled every 64 Ki rows; the mapped file is not heap.
            if rows % 65_536 == 0 {
                anon_peak = anon_peak.max(status_kib("RssAnon:").unwrap_or(0));
            }
        })
        .unwrap();
        let elapsed = started.elapsed();
        let peak = status_kib("VmHWM:").unwrap_or(0).saturating_sub(rss_before);
        let anon = anon_peak.saturating_sub(anon_before);
        assert_eq!(rows, info.rows);

        let dir = tempfile::tempdir().unwrap();
        let cache = crate::unwind::cache::TableCache::new(dir.path().to_owned(), u64::MAX).unwrap();
        let started = std::time::Instant::now();
        let built = cache.get_or_build_file("key", &file).unwrap();
        let cache_build = started.elapsed();
        drop(built);
        let started = std::time::Instant::now();
        let hit = cache.get_or_build_file("key", &file).unwrap();
        let cache_hit = started.elapsed();
        assert_eq!(hit.rows().len() as u64, rows);

        let name = path.file_name().unwrap().to_string_lossy();
        let mib = info.eh_frame_bytes.max(info.debug_frame_bytes) as f64 / (1024.0 * 1024.0);
        println!(
            "{:<40} {:>10} {:>7} {:>9} {:>10} {:>9.0} {:>8} {:>9.1} {:>9} {:>4.0}/{:.1}",
            name.chars().take(40).collect::<String>(),
            info.eh_frame_bytes,
            info.fdes,
            rows,
            rows * 12,
            (rows * 12) as f64 / mib,
            info.unsupported_rows,
            elapsed.as_secs_f64() * 1e3,
            if reset {
                peak.to_string()
            } else {
                format!("({peak})")
            },
            cache_build.as_secs_f64() * 1e3,
            cache_hit.as_secs_f64() * 1e3,
        );
        println!("    heap +{anon} KiB (sampled); {info:?}; checksum {checksum:x}");
    }
}
