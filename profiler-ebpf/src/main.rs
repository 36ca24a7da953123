//! Kalypso's sampler. Runs on every CPU at each tick of the software cpu-clock and counts
//! `(tgid, user stack, kernel stack)` in per-CPU hash maps, so increments never race across CPUs.
//!
//! Maps come in two generations; the agent flips `CONTROL.generation` and drains the pair the
//! program no longer writes to, so a drain never loses an increment.
#![no_std]
#![no_main]

use aya_ebpf::{
    EbpfContext, Global,
    bindings::{BPF_F_FAST_STACK_CMP, BPF_F_USER_STACK, BPF_RB_NO_WAKEUP},
    macros::{map, perf_event},
    maps::{Array, LruHashMap, PerCpuArray, PerCpuHashMap, RingBuf, StackTrace},
    programs::{PerfEventContext, tracing::StackIdContext},
};
use profiler_common::{
    COUNT_MAP_ENTRIES, Control, KNOWN_PROCESS_ENTRIES, NEW_PROCESS_RING_BYTES, STACK_MAP_ENTRIES,
    SampleKey, Stat, errno,
};

#[unsafe(no_mangle)]
static TARGET_TGID: Global<u32> = Global::new(0);

#[unsafe(no_mangle)]
static SELF_TGID: Global<u32> = Global::new(0);

#[map]
static STACKS_0: StackTrace = StackTrace::with_max_entries(STACK_MAP_ENTRIES, 0);
#[map]
static STACKS_1: StackTrace = StackTrace::with_max_entries(STACK_MAP_ENTRIES, 0);

#[map]
static COUNTS_0: PerCpuHashMap<SampleKey, u64> =
    PerCpuHashMap::with_max_entries(COUNT_MAP_ENTRIES, 0);
#[map]
static COUNTS_1: PerCpuHashMap<SampleKey, u64> =
    PerCpuHashMap::with_max_entries(COUNT_MAP_ENTRIES, 0);

#[map]
static STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(Stat::COUNT, 0);

#[map]
static CONTROL: Array<Control> = Array::with_max_entries(1, 0);

/// Processes already announced to the agent.
#[map]
static KNOWN: LruHashMap<u32, u8> = LruHashMap::with_max_entries(KNOWN_PROCESS_ENTRIES, 0);

/// tgids of processes sampled for the first time, so the agent can read their mappings while
/// they still exist.
#[map]
static NEW_PROCESSES: RingBuf = RingBuf::with_byte_size(NEW_PROCESS_RING_BYTES, 0);

#[inline(always)]
fn bump(stat: Stat) {
    if let Some(slot) = STATS.get_ptr_mut(stat as u32) {
        // SAFETY: per-CPU slot, and this program cannot be re-entered on the same CPU.
        unsafe { *slot += 1 };
    }
}

/// Turns a `bpf_get_stackid` result into a stack id, or `-errno` when the stack is missing,
/// counting the reason.
#[inline(always)]
fn stack_id(result: Result<i64, i32>, fault: Stat, collision: Stat, other: Stat) -> i32 {
    match result {
        Ok(id) => id as i32,
        Err(err) => {
            let errno = -err;
            bump(if errno == errno::EFAULT {
                fault
            } else if errno == errno::EEXIST {
                collision
            } else {
                other
            });
            err
        }
    }
}

#[perf_event]
pub fn kalypso_sample(ctx: PerfEventContext) -> u32 {
    bump(Stat::Ticks);
    let tgid = ctx.tgid();
    // The idle task: nothing to attribute, and its kernel stack is the costliest to walk.
    if ctx.pid() == 0 {
        bump(Stat::Idle);
        return 0;
    }
    let target = TARGET_TGID.load();
    if (target != 0 && tgid != target) || tgid == SELF_TGID.load() {
        bump(Stat::Filtered);
        return 0;
    }
    if KNOWN.get_ptr(tgid).is_none() {
        // Announce before counting: the agent must see a process before its samples matter.
        // No wakeup: the agent polls the ring, and a wakeup per new process would cost an IPI.
        if NEW_PROCESSES.output::<u32>(&tgid, u64::from(BPF_RB_NO_WAKEUP)).is_ok() {
            // Only remember it once the announcement went out, so a full ring is retried.
            let _ = KNOWN.insert(tgid, 1, 0);
            bump(Stat::NewProcess);
        } else {
            bump(Stat::NewProcessLost);
        }
    }
    let Some(control) = CONTROL.get(0) else {
        bump(Stat::ControlMissing);
        return 0;
    };
    if control.generation == 0 {
        record(&ctx, tgid, &STACKS_0, &COUNTS_0);
    } else {
        record(&ctx, tgid, &STACKS_1, &COUNTS_1);
    }
    0
}

#[inline(always)]
fn record(
    ctx: &PerfEventContext,
    tgid: u32,
    stacks: &StackTrace,
    counts: &PerCpuHashMap<SampleKey, u64>,
) {
    let user = stack_id(
        ctx.get_stackid(stacks, u64::from(BPF_F_USER_STACK | BPF_F_FAST_STACK_CMP)),
        Stat::UserStackFault,
        Stat::UserStackCollision,
        Stat::UserStackOther,
    );
    let kernel = stack_id(
        ctx.get_stackid(stacks, u64::from(BPF_F_FAST_STACK_CMP)),
        Stat::KernelStackUserMode,
        Stat::KernelStackCollision,
        Stat::KernelStackOther,
    );
    let key = SampleKey {
        tgid,
        user_stack_id: user,
        kernel_stack_id: kernel,
        _pad: 0,
    };
    match counts.get_ptr_mut(&key) {
        // SAFETY: per-CPU value, and this program cannot be re-entered on the same CPU.
        Some(count) => unsafe { *count += 1 },
        None => {
            if counts.insert(&key, &1, 0).is_err() {
                bump(Stat::CountMapFull);
                return;
            }
        }
    }
    bump(Stat::Counted);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
