//! Replays the kernel-side unwinder over stacks recorded from live programs built without frame
//! pointers: the shared unwinding step must walk them through `.eh_frame` from any sampled
//! instruction up to `main` and libc's start code, where frame pointers alone get lost.
//!
//! The recording uses ptrace on a child of the test (allowed without privileges, also under
//! Yama's `ptrace_scope` 1), so these tests need no root; only the perf reference does.
//!
//! x86_64 only for now: the register read and the test-only table stand-in know x86_64 alone.
#![cfg(target_arch = "x86_64")]
mod common;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use object::{Object, ObjectSection};
use profiler_agent::process::ProcessTable;
use profiler_agent::symbolize::Symbolizer;
use profiler_agent::types::{Pid, VirtAddr};
use profiler_agent::unwind::replay::{self, ObjectTable, StackSnapshot, Unwound};
use profiler_common::unwind::{
    MAX_UNWOUND_FRAMES, ProcessMappings, Regs, Stop, UnwindRow, arch, kind,
};

/// Bound on the stack bytes recorded above the stack pointer.
const MAX_STACK_BYTES: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Test-only stand-in for the table builder.
// TODO(merge): use unwind::table::build_table instead of readelf, and drop this section.
// ---------------------------------------------------------------------------------------------

/// One FDE as `readelf --debug-dump=frames-interp` prints it: its range and its rows, each a
/// column name (`CFA`, `rbp`, `ra`, …) → rule (`rsp+16`, `c-16`, `u`, `exp`, …).
struct Fde {
    cie: u64,
    start: u64,
    end: u64,
    rows: Vec<(u64, BTreeMap<String, String>)>,
}

/// Unwind rows of an x86_64 object from readelf's decoded `.eh_frame`: sorted by pc, a
/// `NO_INFO` row where no FDE covers the code, `END` where the return address is undefined
/// (`_start`), `PLT` for the expression rule of `.plt*` sections.
fn readelf_rows(path: &Path, elf: &[u8]) -> Vec<UnwindRow> {
    let out = Command::new("readelf")
        // Not following debug links: readelf fails on Debian's libc with libc6-dbg installed.
        .args([
            "--debug-dump=frames-interp",
            "--debug-dump=no-follow-links",
            "-W",
        ])
        .arg(path)
        .output()
        .expect("readelf runs");
    assert!(out.status.success(), "readelf failed on {}", path.display());
    let text = String::from_utf8_lossy(&out.stdout);
    let mut cie_rows: BTreeMap<u64, BTreeMap<String, String>> = BTreeMap::new();
    let mut fdes: Vec<Fde> = Vec::new();
    let mut current_cie = None;
    let mut columns: Vec<String> = Vec::new();
    let mut in_eh_frame = false;
    for line in text.lines() {
        if line.starts_with("Contents of the") {
            in_eh_frame = line.contains(".eh_frame section");
            continue;
        }
        let tokens: Vec<&str> = line.split_whitespace().collect();
        if !in_eh_frame || tokens.is_empty() {
            continue;
        }
        let hex = |t: &str| u64::from_str_radix(t, 16).ok();
        match tokens.get(3) {
            Some(&"CIE") => {
                current_cie = hex(tokens[0]);
                continue;
            }
            Some(&"FDE") => {
                let field = |name: &str| {
                    tokens
                        .iter()
                        .find_map(|t| t.strip_prefix(name))
                        .expect("FDE header field")
                };
                let (start, end) = field("pc=").split_once("..").unwrap();
                fdes.push(Fde {
                    cie: hex(field("cie=")).unwrap(),
                    start: hex(start).unwrap(),
                    end: hex(end).unwrap(),
                    rows: Vec::new(),
                });
                current_cie = None;
                continue;
            }
            _ => {}
        }
        if tokens[0] == "LOC" {
            columns = tokens[1..].iter().map(|c| c.to_string()).collect();
            continue;
        }
        let Some(loc) = hex(tokens[0]).filter(|_| tokens[0].len() == 16) else {
            continue;
        };
        let rules: BTreeMap<String, String> = columns
            .iter()
            .cloned()
            .zip(tokens[1..].iter().map(|t| t.to_string()))
            .collect();
        if let Some(cie) = current_cie {
            cie_rows.entry(cie).or_insert(rules);
        } else if let Some(fde) = fdes.last_mut() {
            // readelf prints a row at the FDE's end when the last instruction advances there.
            if loc < fde.end {
                fde.rows.push((loc, rules));
            }
        }
    }

    let file = object::File::parse(elf).expect("an ELF file");
    let plt: Vec<(u64, u64)> = file
        .sections()
        .filter(|s| s.name().is_ok_and(|n| n.starts_with(".plt")))
        .map(|s| (s.address(), s.address() + s.size()))
        .collect();
    fdes.sort_by_key(|f| f.start);
    let mut rows = Vec::new();
    for (i, fde) in fdes.iter().enumerate() {
        let in_plt = plt.iter().any(|(s, e)| (*s..*e).contains(&fde.start));
        if fde.rows.is_empty() {
            // An FDE without instructions of its own follows its CIE's initial rules.
            rows.extend(to_row(fde.start, &cie_rows[&fde.cie], in_plt));
        }
        rows.extend(
            fde.rows
                .iter()
                .filter_map(|(loc, rules)| to_row(*loc, rules, in_plt)),
        );
        if fdes.get(i + 1).is_none_or(|next| next.start > fde.end) {
            rows.extend(u32::try_from(fde.end).ok().map(|pc| UnwindRow {
                pc,
                kind: kind::NO_INFO,
                ..UnwindRow::default()
            }));
        }
    }
    rows
}

/// One readelf row as an [`UnwindRow`]; `None` above the 32-bit row addresses.
fn to_row(loc: u64, rules: &BTreeMap<String, String>, in_plt: bool) -> Option<UnwindRow> {
    let saved_at = |rule: &str| rule.strip_prefix('c')?.parse::<i16>().ok();
    let mut row = UnwindRow {
        pc: u32::try_from(loc).ok()?,
        ..UnwindRow::default()
    };
    match rules.get("ra").map(String::as_str) {
        Some("u") => row.kind = kind::END,
        Some(rule) if saved_at(rule).is_some() => {
            row.ra_offset = saved_at(rule).unwrap();
            row.fp_offset = rules.get("rbp").and_then(|r| saved_at(r)).unwrap_or(0);
            let cfa = rules["CFA"].as_str();
            (row.kind, row.cfa_offset) = if let Some(n) = cfa.strip_prefix("rsp+") {
                (kind::CFA_SP, n.parse().ok()?)
            } else if let Some(n) = cfa.strip_prefix("rbp+") {
                (kind::CFA_FP, n.parse().ok()?)
            } else if cfa == "exp" && in_plt {
                (kind::PLT, 8)
            } else {
                (kind::UNSUPPORTED, 0)
            };
        }
        _ => row.kind = kind::UNSUPPORTED,
    }
    Some(row)
}

// ---------------------------------------------------------------------------------------------
// Recording a live stack.
// ---------------------------------------------------------------------------------------------

/// A stack recorded from a live process, with the mappings it was recorded under.
struct Recording {
    snapshot: StackSnapshot,
    maps: String,
}

/// Detaches from a seized process, also when the test panics.
struct Seized(libc::pid_t);

impl Drop for Seized {
    fn drop(&mut self) {
        // SAFETY: a ptrace request without memory arguments.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, 0usize, 0usize) };
    }
}

/// Stops `pid` where it is, records its registers, its stack from the stack pointer up (at most
/// [`MAX_STACK_BYTES`]) and its mappings, and lets it run on. `pid` must be a child of this
/// thread's process: then ptrace needs no privilege.
fn record(pid: u32) -> Recording {
    let pid = pid as libc::pid_t;
    let check = |rc: libc::c_long, what: &str| {
        assert!(rc != -1, "{what}: {}", std::io::Error::last_os_error());
    };
    check(
        // SAFETY: a ptrace request without memory arguments.
        unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0usize, 0usize) },
        "PTRACE_SEIZE",
    );
    let _seized = Seized(pid);
    check(
        // SAFETY: as above.
        unsafe { libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0usize, 0usize) },
        "PTRACE_INTERRUPT",
    );
    let mut status = 0;
    // SAFETY: `status` is a valid out-pointer.
    let waited = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    assert_eq!(waited, pid, "waitpid: {}", std::io::Error::last_os_error());
    assert!(libc::WIFSTOPPED(status), "not stopped: status {status:#x}");
    // SAFETY: user_regs_struct is plain integers, valid all-zero.
    let mut user: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    check(
        // SAFETY: PTRACE_GETREGS writes one user_regs_struct to the pointer, which points to one.
        unsafe {
            libc::ptrace(
                libc::PTRACE_GETREGS,
                pid,
                0usize,
                &mut user as *mut libc::user_regs_struct,
            )
        },
        "PTRACE_GETREGS",
    );
    let regs = Regs {
        pc: user.rip,
        sp: user.rsp,
        fp: user.rbp,
        lr: 0,
    };
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let stack_end = maps
        .lines()
        .filter(|l| l.ends_with("[stack]"))
        .filter_map(|l| {
            let (start, end) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            ))
        })
        .find(|(start, end)| (*start..*end).contains(&regs.sp))
        .map(|(_, end)| end)
        .expect("the stack pointer is in [stack]");
    let mut stack = vec![0; (stack_end - regs.sp).min(MAX_STACK_BYTES) as usize];
    File::open(format!("/proc/{pid}/mem"))
        .and_then(|mem| mem.read_exact_at(&mut stack, regs.sp))
        .expect("the tracer reads the stopped process's stack");
    Recording {
        snapshot: StackSnapshot {
            arch: arch::X86_64,
            regs,
            stack_base: regs.sp,
            stack,
        },
        maps,
    }
}

// ---------------------------------------------------------------------------------------------
// Tables and names for the recorded process.
// ---------------------------------------------------------------------------------------------

/// The unwind tables of every file a process maps executable, and the names of its code.
struct Target {
    pid: Pid,
    files: BTreeMap<PathBuf, (u32, Vec<u8>)>,
    tables: BTreeMap<u32, Vec<UnwindRow>>,
    names: ProcessTable,
    symbolizer: Symbolizer,
}

impl Target {
    /// Reads the process's mappings and builds a table for each executable file mapping.
    fn new(pid: u32) -> Self {
        let pid = Pid(pid);
        let mut names = ProcessTable::default();
        names.refresh(pid).expect("the workload's mappings");
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        let mut files = BTreeMap::new();
        let mut tables = BTreeMap::new();
        for line in maps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(perms), Some(path)) = (fields.get(1), fields.get(5)) else {
                continue;
            };
            if !perms.contains('x') || !path.starts_with('/') || files.contains_key(Path::new(path))
            {
                continue;
            }
            let elf = std::fs::read(path).unwrap();
            let id = files.len() as u32 + 1;
            let rows = readelf_rows(Path::new(path), &elf);
            eprintln!("table {id}: {path}: {} rows", rows.len());
            tables.insert(id, rows);
            files.insert(PathBuf::from(path), (id, elf));
        }
        Self {
            pid,
            files,
            tables,
            names,
            symbolizer: Symbolizer::new(),
        }
    }

    fn mappings(&self, maps: &str) -> ProcessMappings {
        replay::process_mappings(maps, |path| {
            self.files.get(path).map(|(table_id, elf)| ObjectTable {
                table_id: *table_id,
                elf,
            })
        })
        .expect("a maps text")
    }

    /// One function name per frame, leaf first (the function the code belongs to, not what was
    /// inlined into it, as perf's `--no-inline`); `[file+offset]` or `[address]` where no name
    /// is known.
    fn symbolize(&mut self, frames: &[u64]) -> Vec<String> {
        let info = self.names.get(self.pid).expect("refreshed");
        let mut names = Vec::new();
        for (i, pc) in frames.iter().enumerate() {
            // Return addresses point after the call: name the call instruction.
            let addr = if i == 0 { *pc } else { pc.wrapping_sub(1) };
            let Some(mapping) = info.mapping(VirtAddr(addr)) else {
                names.push(format!("[{pc:#x}]"));
                continue;
            };
            let offset = mapping.file_offset(VirtAddr(addr));
            let functions = match &mapping.object {
                Some(object) => self.symbolizer.user(object, &[offset]).remove(0),
                None => Default::default(),
            };
            // Frames come innermost first: the last is the function the code belongs to.
            names.push(functions.last().map_or_else(
                || format!("[{}+{:#x}]", mapping.label, offset.0),
                |f| f.function.to_string(),
            ));
        }
        names
    }
}

/// One recorded stack unwound with tables (DWARF) and by frame pointers alone.
struct Replayed {
    dwarf: Unwound,
    dwarf_names: Vec<String>,
    fp_names: Vec<String>,
}

/// Records `count` stacks of a running workload, `interval` apart, and replays each.
fn record_and_replay(pid: u32, count: usize, interval: Duration) -> Vec<Replayed> {
    let mut target = Target::new(pid);
    let mut out = Vec::new();
    for n in 0..count {
        std::thread::sleep(interval);
        let rec = record(pid);
        let mappings = target.mappings(&rec.maps);
        let dwarf = rec
            .snapshot
            .unwind(&mappings, &target.tables, MAX_UNWOUND_FRAMES);
        let fp = rec.snapshot.unwind(
            &ProcessMappings::default(),
            &target.tables,
            MAX_UNWOUND_FRAMES,
        );
        // The snapshot is self-contained: saved and loaded, it replays the same.
        let reloaded = StackSnapshot::from_json(&rec.snapshot.to_json()).unwrap();
        assert_eq!(
            reloaded.unwind(&mappings, &target.tables, MAX_UNWOUND_FRAMES),
            dwarf
        );
        let replayed = Replayed {
            dwarf_names: target.symbolize(&dwarf.frames),
            fp_names: target.symbolize(&fp.frames),
            dwarf,
        };
        eprintln!(
            "snapshot {n}: pc {:#x} sp {:#x} fp {:#x}, {} stack bytes\n  dwarf ({:?}, {} frame-pointer steps): {}\n  fp only ({:?}): {}",
            rec.snapshot.regs.pc,
            rec.snapshot.regs.sp,
            rec.snapshot.regs.fp,
            rec.snapshot.stack.len(),
            replayed.dwarf.stop,
            replayed.dwarf.fp_fallback_frames,
            replayed.dwarf_names.join(";"),
            fp.stop,
            replayed.fp_names.join(";"),
        );
        out.push(replayed);
    }
    out
}

/// The stack reaches `main`, called from libc's start code, and ends normally.
fn assert_reaches_libc_start(r: &Replayed) {
    let names = &r.dwarf_names;
    assert_eq!(r.dwarf.stop, Stop::Complete, "{names:?}");
    assert!(!r.dwarf.truncated, "{names:?}");
    let main = names
        .iter()
        .position(|n| n == "main")
        .unwrap_or_else(|| panic!("no main in {names:?}"));
    assert!(
        names.get(main + 1).is_some_and(
            |n| n.starts_with("__libc_start_call_main") || n.starts_with("__libc_start_main")
        ),
        "main is not called from libc's start code: {names:?}"
    );
}

/// The frames named in `chain` (callee first) that appear in `names` are, in order, the tail of
/// `chain`: no frame of the chain is missing between the leaf-most one seen and main.
fn assert_chain_tail(names: &[String], chains: &[&[&str]]) {
    let seen: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| chains.iter().any(|c| c.contains(n)))
        .collect();
    assert!(
        chains.iter().any(|c| c.ends_with(&seen)),
        "frames out of order or missing: {seen:?} in {names:?}"
    );
}

fn reaches_main(names: &[String]) -> bool {
    names.iter().any(|n| n == "main")
}

#[test]
fn dwarf_replay_unwinds_a_c_program_without_frame_pointers_through_libc() {
    let w = Workload::start(&build_c_nofp("nofp"), &[]);
    std::thread::sleep(Duration::from_millis(200));
    let replayed = record_and_replay(w.pid(), 40, Duration::from_millis(25));

    const SORT: &[&str] = &["mix", "compare_keys", "level_b", "level_a", "run", "main"];
    const SPIN: &[&str] = &["spin", "run", "main"];
    let mut in_sort = 0;
    for r in &replayed {
        assert_reaches_libc_start(r);
        let names = &r.dwarf_names;
        assert_chain_tail(names, &[SORT, SPIN]);
        // Inside the sort, libc's qsort/msort frames lie between the callback and level_b.
        if let Some(cmp) = names.iter().position(|n| n == "compare_keys") {
            let level_b = names.iter().position(|n| n == "level_b").unwrap();
            let libc = &names[cmp + 1..level_b];
            assert!(
                !libc.is_empty() && libc.iter().any(|n| n.contains("qsort")),
                "no qsort frames between compare_keys and level_b: {names:?}"
            );
            in_sort += 1;
        }
    }
    let fp_main = replayed
        .iter()
        .filter(|r| reaches_main(&r.fp_names))
        .count();
    eprintln!(
        "{} snapshots: dwarf reached main in all, {in_sort} inside the qsort callback; frame pointers alone reached main in {fp_main}",
        replayed.len()
    );
    assert!(in_sort > 0, "no snapshot landed in the qsort callback");
    assert!(
        fp_main < replayed.len(),
        "frame pointers alone reached main every time: is the workload built without them?"
    );
}

#[test]
fn dwarf_replay_unwinds_a_rust_program_without_frame_pointers() {
    let w = Workload::start(&build_rust_nofp("nofp_rust"), &[]);
    std::thread::sleep(Duration::from_millis(200));
    let replayed = record_and_replay(w.pid(), 20, Duration::from_millis(25));

    const CHAIN: &[&str] = &[
        "nofp_rust::spin",
        "nofp_rust::inner",
        "nofp_rust::outer",
        "nofp_rust::run",
        "nofp_rust::main",
        "main",
    ];
    for r in &replayed {
        assert_reaches_libc_start(r);
        assert_chain_tail(&r.dwarf_names, &[CHAIN]);
    }
    assert!(
        replayed.iter().any(|r| r
            .dwarf_names
            .first()
            .is_some_and(|n| n == "nofp_rust::spin")),
        "no snapshot in the hot loop"
    );
}

#[test]
fn perf_dwarf_reference_sees_the_no_frame_pointer_call_chain() {
    if !require_root() {
        return;
    }
    let w = Workload::start(&build_c_nofp("nofp"), &[]);
    let paths = perf_dwarf_paths(w.pid(), 2);
    let mut by_count: Vec<(&String, &u64)> = paths.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1));
    for (path, n) in by_count.iter().take(10) {
        eprintln!("{n:>5} {path}");
    }
    let through = |tail: &str| {
        paths
            .iter()
            .filter(|(p, _)| p.ends_with(tail))
            .map(|(_, n)| n)
            .sum::<u64>()
    };
    let total: u64 = paths.values().sum();
    let sort = through("level_b;level_a;run;main");
    let spin = through("spin;run;main");
    eprintln!(
        "{total} samples: {sort} through level_b;level_a;run;main, {spin} through spin;run;main"
    );
    assert!(sort > 0 && spin > 0, "{paths:#?}");
}
