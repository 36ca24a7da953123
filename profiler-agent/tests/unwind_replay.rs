//! Replays the kernel-side unwinder over stacks recorded from live programs built without frame
//! pointers: the shared unwinding step must walk them through `.eh_frame` from any sampled
//! instruction up to `main` and libc's start code, where frame pointers alone get lost.
//!
//! The recording uses ptrace on a child of the test (allowed without privileges, also under
//! Yama's `ptrace_scope` 1), so these tests need no root; only the perf reference does.
//!
//! The tables are built and laid out by the agent's own loader, into an in-memory image of the
//! kernel's maps, so the replay covers everything but the BPF program's map lookups.
//!
//! Go programs (static, stripped) replay too: goroutine stacks live in Go's heap, so the recorder
//! reads whichever mapping holds the stack pointer, of the thread running the busy goroutine.
//!
//! x86_64 only: the register read (`PTRACE_GETREGS`) is x86_64's; arm64 is covered live by
//! `cargo xtask vm-test`.
#![cfg(target_arch = "x86_64")]
mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use common::*;
use profiler_agent::process::ProcessTable;
use profiler_agent::symbolize::Symbolizer;
use profiler_agent::types::{Pid, VirtAddr};
use profiler_agent::unwind::loader::{InMemoryMaps, LoaderOptions, TableLoader};
use profiler_agent::unwind::replay::{StackSnapshot, Unwound};
use profiler_common::unwind::{MAX_UNWOUND_FRAMES, ProcessMappings, Regs, Stop, arch};

/// Bound on the stack bytes recorded above the stack pointer.
const MAX_STACK_BYTES: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------------------
// Recording a live stack.
// ---------------------------------------------------------------------------------------------

/// A stack recorded from a live process.
struct Recording {
    snapshot: StackSnapshot,
}

/// Detaches from a seized process, also when the test panics.
struct Seized(libc::pid_t);

impl Drop for Seized {
    fn drop(&mut self) {
        // SAFETY: a ptrace request without memory arguments.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.0, 0usize, 0usize) };
    }
}

/// Stops thread `pid` where it is, records its registers, its stack from the stack pointer up (at most
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
    // The mapping holding the stack pointer: `[stack]` for a main thread, an anonymous mapping
    // for other threads and for goroutines (Go allocates their stacks in its heap).
    let stack_end = maps
        .lines()
        .filter_map(|l| {
            let (start, end) = l.split_whitespace().next()?.split_once('-')?;
            Some((
                u64::from_str_radix(start, 16).ok()?,
                u64::from_str_radix(end, 16).ok()?,
            ))
        })
        .find(|(start, end)| (*start..*end).contains(&regs.sp))
        .map(|(_, end)| end)
        .expect("the stack pointer is in a mapping");
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
    }
}

// ---------------------------------------------------------------------------------------------
// Tables and names for the recorded process.
// ---------------------------------------------------------------------------------------------

/// The process as the agent sees it: its mappings, and its tables laid out by the agent's own
/// loader exactly as it would write them into the kernel's maps.
struct Target {
    pid: Pid,
    kernel: InMemoryMaps,
    names: ProcessTable,
    symbolizer: Symbolizer,
    _cache: tempfile::TempDir,
}

impl Target {
    /// Reads the process's mappings and loads the table of each object it maps (`tables` of
    /// them at least).
    fn new(pid: u32, tables: u64) -> Self {
        let pid = Pid(pid);
        let mut names = ProcessTable::default();
        names.refresh(pid).expect("the workload's mappings");
        let cache = temp_dir();
        let mut loader = TableLoader::new(
            &LoaderOptions::foreground(cache.path().to_path_buf()),
            arch::X86_64,
        )
        .expect("a cache directory");
        let mut kernel = InMemoryMaps::default();
        loader.update(&mut kernel, names.get(pid).expect("refreshed"));
        let stats = loader.stats();
        eprintln!("loader: {stats:?}");
        assert!(stats.tables_loaded >= tables, "{tables} tables expected");
        Self {
            pid,
            kernel,
            names,
            symbolizer: Symbolizer::new(),
            _cache: cache,
        }
    }

    fn mappings(&self) -> ProcessMappings {
        *self
            .kernel
            .processes
            .get(&self.pid)
            .expect("the loader wrote the process's mappings")
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
            let Some((mapping, offset)) = info
                .mapping(VirtAddr(addr))
                .and_then(|m| Some((m, m.file_offset(VirtAddr(addr))?)))
            else {
                names.push(format!("[{pc:#x}]"));
                continue;
            };
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
    // The program's table and libc's.
    record_and_replay_threads(pid, 2, count, interval, |pid| pid)
}

/// The same, recording the thread `thread(pid)` picks each time, with at least `tables`
/// tables loaded.
fn record_and_replay_threads(
    pid: u32,
    tables: u64,
    count: usize,
    interval: Duration,
    thread: impl Fn(u32) -> u32,
) -> Vec<Replayed> {
    let mut target = Target::new(pid, tables);
    let mut out = Vec::new();
    for n in 0..count {
        std::thread::sleep(interval);
        let rec = record(thread(pid));
        let mappings = target.mappings();
        let dwarf = rec
            .snapshot
            .unwind(&mappings, &target.kernel, MAX_UNWOUND_FRAMES);
        let fp = rec.snapshot.unwind(
            &ProcessMappings::default(),
            &target.kernel,
            MAX_UNWOUND_FRAMES,
        );
        // The snapshot is self-contained: saved and loaded, it replays the same.
        let reloaded = StackSnapshot::from_json(&rec.snapshot.to_json()).unwrap();
        assert_eq!(
            reloaded.unwind(&mappings, &target.kernel, MAX_UNWOUND_FRAMES),
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

/// The thread of `pid` that has run longest (user + system time): the one running a busy
/// goroutine, whichever thread Go's scheduler put it on.
fn busiest_thread(pid: u32) -> u32 {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| {
            let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
            // Fields after the parenthesised comm: state is 3rd, utime 14th, stime 15th.
            let rest = stat.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let running = fields.first() == Some(&"R");
            let time: u64 =
                fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
            Some((running, time, tid))
        })
        .max()
        .map(|(_, _, tid)| tid)
        .unwrap_or(pid)
}

#[test]
fn table_replay_keeps_the_callers_of_frameless_go_leaves_where_frame_pointers_lose_them() {
    for version in ["1.19", "1.23"] {
        let build = GoBuild {
            stripped: true,
            ..GoBuild::new(version)
        };
        let w = Workload::start(&build_go("hot", &build), &[]);
        std::thread::sleep(Duration::from_millis(200));
        // A static Go binary: its own table (and the vDSO's, when it has CFI).
        let replayed =
            record_and_replay_threads(w.pid(), 1, 30, Duration::from_millis(25), busiest_thread);
        const ROOTS: &[&str] = &["runtime.goexit", "runtime.mstart", "runtime.rt0_go"];
        let (mut in_leaf, mut fp_lost) = (0, 0);
        for r in &replayed {
            let names = &r.dwarf_names;
            assert_eq!(r.dwarf.stop, Stop::Complete, "go{version}: {names:?}");
            assert!(!r.dwarf.truncated, "go{version}: {names:?}");
            let root = names.last().map(String::as_str).unwrap_or("");
            assert!(
                ROOTS.contains(&root)
                    || names
                        .iter()
                        .any(|n| n == "runtime.systemstack" || n == "runtime.mcall"),
                "go{version}: the stack does not end at a Go stack's end: {names:?}"
            );
            if names.first().is_some_and(|n| n == "main.leafWork") {
                in_leaf += 1;
                assert!(
                    names[1] == "main.hotA" || names[1] == "main.hotB",
                    "go{version}: the frameless leaf lost its caller: {names:?}"
                );
                assert_eq!(
                    names[2..],
                    ["main.main", "runtime.main", "runtime.goexit"],
                    "go{version}"
                );
                if !r
                    .fp_names
                    .iter()
                    .any(|n| n == "main.hotA" || n == "main.hotB")
                {
                    fp_lost += 1;
                }
            }
        }
        eprintln!(
            "go{version}: {} snapshots, {in_leaf} in main.leafWork, of which frame pointers alone lost the caller in {fp_lost}",
            replayed.len()
        );
        assert!(in_leaf > 0, "go{version}: no snapshot in the hot leaf");
        assert_eq!(
            fp_lost, in_leaf,
            "go{version}: frame pointers found the leaf's caller"
        );
    }
}
