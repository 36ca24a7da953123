//! The only module that touches aya: loads the sampler, attaches it to every online CPU, and drains
//! its maps.
use std::collections::HashMap;
use std::time::Duration;

use aya::maps::{
    Array, HashMap as BpfHashMap, MapData, PerCpuArray, PerCpuHashMap, ProgramArray, RingBuf,
    StackTraceMap,
};
use aya::programs::perf_event::{
    PerfEvent, PerfEventConfig, PerfEventLinkId, PerfEventScope, SamplePolicy, SoftwareEvent,
};
use aya::{Ebpf, EbpfLoader};
use profiler_common::unwind::{PageExtent, PageKey, ProcessMappings, arch};
use profiler_common::{
    Control, NO_KERNEL_STACK, RowChunk, SampleKey, Stat, UNWOUND_STACK_ID, UnwoundStack, errno,
    names,
};

use crate::collect::source::{
    RawBatch, RawSample, SampleSource, SamplerStats, SourceError, StackSide, ThreadName,
};
use crate::process::{ObjectFile, ProcessInfo, ProcessTable};
use crate::types::{Pid, StackLoss, VirtAddr};
use crate::unwind::loader::{LoaderOptions, LoaderStats, TableLoader, UnwindMaps};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/profiler-ebpf.o"));

/// How long to wait after flipping generations before reading the old pair. A sample's program run
/// takes microseconds with interrupts off; this is three orders of magnitude more.
const FLIP_GRACE: Duration = Duration::from_millis(5);

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    /// EPERM/EACCES: missing capabilities, or a seccomp filter when they are there.
    #[error("{}", crate::seccomp::permission_advice())]
    Permission,
    #[error("the kernel rejected the eBPF sampler: {0}")]
    Load(String),
    #[error("cannot open the cpu-clock perf event on CPU {cpu}: {message}")]
    Attach { cpu: u32, message: String },
    #[error("reading eBPF map {map}: {message}")]
    Map { map: &'static str, message: String },
    #[error(transparent)]
    Tables(#[from] crate::unwind::loader::LoaderError),
}

/// How user stacks are unwound.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum UnwindMode {
    /// With `.eh_frame` tables where the kernel accepts the unwinder, else frame pointers.
    #[default]
    Auto,
    /// Frame pointers only (`bpf_get_stackid`).
    Fp,
    /// With tables; fail if the kernel rejects the unwinder.
    Dwarf,
}

/// What to sample.
#[derive(Clone, Debug)]
pub struct SamplerOptions {
    /// Only this process (all its threads); `None` = every process.
    pub target: Option<Pid>,
    /// Samples per second per CPU.
    pub frequency: u64,
    pub unwind: UnwindMode,
    /// Where unwind tables are cached (unused with [`UnwindMode::Fp`]).
    pub tables: LoaderOptions,
}

/// The architecture this agent runs on, as the unwinder names it.
pub const HOST_ARCH: u32 = if cfg!(target_arch = "aarch64") {
    arch::AARCH64
} else {
    arch::X86_64
};

/// The unwinder's maps in the kernel.
struct TableMaps {
    rows: Array<MapData, RowChunk>,
    pages: BpfHashMap<MapData, PageKey, PageExtent>,
    processes: BpfHashMap<MapData, u32, ProcessMappings>,
}

impl UnwindMaps for TableMaps {
    fn write_chunk(&mut self, index: u32, chunk: &RowChunk) -> Result<(), String> {
        self.rows.set(index, chunk, 0).map_err(|e| error_chain(&e))
    }
    fn set_page(&mut self, key: PageKey, extent: PageExtent) -> Result<(), String> {
        self.pages
            .insert(key, extent, 0)
            .map_err(|e| error_chain(&e))
    }
    fn remove_page(&mut self, key: PageKey) {
        // Absent already: nothing to remove.
        let _ = self.pages.remove(&key);
    }
    fn set_process(&mut self, pid: Pid, mappings: &ProcessMappings) -> Result<(), String> {
        self.processes
            .insert(pid.0, mappings, 0)
            .map_err(|e| error_chain(&e))
    }
    fn remove_process(&mut self, pid: Pid) {
        let _ = self.processes.remove(&pid.0);
    }
}

/// Table-based unwinding: the loader and the maps it fills.
struct Unwinder {
    loader: TableLoader,
    maps: TableMaps,
    stacks: [BpfHashMap<MapData, u64, UnwoundStack>; 2],
}

/// The loaded sampler. Dropping it detaches the program from every CPU.
pub struct BpfSampler {
    /// Owns the program and its perf-event links.
    ebpf: Ebpf,
    /// One link per online CPU; emptied by [`SampleSource::stop`].
    links: Vec<PerfEventLinkId>,
    control: Array<MapData, Control>,
    counts: [PerCpuHashMap<MapData, SampleKey, u64>; 2],
    stacks: [StackTraceMap<MapData>; 2],
    stats: PerCpuArray<MapData, u64>,
    known: BpfHashMap<MapData, u32, u8>,
    new_processes: RingBuf<MapData>,
    /// `None` in frame-pointer mode, or when the kernel rejected the unwinder in auto mode.
    unwinder: Option<Unwinder>,
    /// Samples per second per CPU, once attached.
    frequency: u64,
    /// The generation the program writes to now.
    generation: usize,
}

/// Whether an error comes from a system call refused for lack of privilege: an `EPERM` or
/// `EACCES` anywhere in its chain of causes (aya keeps the `io::Error` of every failed call).
fn is_permission(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        // The verifier rejects a program with EACCES too; its log tells the two apart.
        if let Some(aya::programs::ProgramError::LoadError { verifier_log, .. }) =
            e.downcast_ref::<aya::programs::ProgramError>()
            && !verifier_log.to_string().trim().is_empty()
        {
            return false;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
        {
            return true;
        }
        cur = e.source();
    }
    false
}

fn load_error(err: impl std::error::Error + 'static) -> BpfError {
    if is_permission(&err) {
        BpfError::Permission
    } else {
        BpfError::Load(error_chain(&err))
    }
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    text
}

impl BpfSampler {
    /// Loads the program and attaches it to the software cpu-clock of every online CPU.
    pub fn start(opts: SamplerOptions) -> Result<Self, BpfError> {
        let mut sampler = Self::load(opts)?;
        sampler.attach()?;
        Ok(sampler)
    }

    /// Runs of the sampling program and their total time, as the kernel accounts them while
    /// `kernel.bpf_stats_enabled` is 1 (tail-called unwinding included: the kernel charges it to
    /// the program that was entered). `None` if the kernel does not say.
    pub fn run_stats(&self) -> Option<(u64, Duration)> {
        let program: &PerfEvent = self.ebpf.program(names::PROGRAM)?.try_into().ok()?;
        let info = program.info().ok()?;
        Some((info.run_count(), info.run_time()))
    }

    /// Attaches the loaded program to the software cpu-clock of every online CPU. Before this,
    /// nothing is sampled: [`SampleSource::update_process`] can load a target's unwind tables
    /// first, so that every sample is unwound alike.
    pub fn attach(&mut self) -> Result<(), BpfError> {
        if !self.links.is_empty() {
            return Ok(());
        }
        let program: &mut PerfEvent = self
            .ebpf
            .program_mut(names::PROGRAM)
            .ok_or_else(|| BpfError::Load(format!("program {} missing", names::PROGRAM)))?
            .try_into()
            .map_err(load_error)?;
        let links = &mut self.links;
        let frequency = self.frequency;
        let cpus = aya::util::online_cpus()
            .map_err(|(_, e)| BpfError::Load(format!("reading online CPUs: {e}")))?;
        for &cpu in &cpus {
            let link = program
                .attach(
                    PerfEventConfig::Software(SoftwareEvent::CpuClock),
                    PerfEventScope::AllProcessesOneCpu { cpu },
                    SamplePolicy::Frequency(frequency),
                    false,
                )
                .map_err(|e| {
                    if is_permission(&e) {
                        BpfError::Permission
                    } else {
                        BpfError::Attach {
                            cpu,
                            message: error_chain(&e),
                        }
                    }
                })?;
            links.push(link);
        }
        Ok(())
    }

    /// Loads the program and its maps without attaching it.
    pub fn load(opts: SamplerOptions) -> Result<Self, BpfError> {
        let target = opts.target.map_or(0, |p| p.0);
        let own = std::process::id();
        let tables = u32::from(opts.unwind != UnwindMode::Fp);
        let cpus = aya::util::online_cpus().map_or(1, |c| c.len());
        let unwound = unwound_stack_entries(cpus, opts.frequency);
        let mut ebpf = EbpfLoader::new()
            .override_global(names::TARGET_TGID, &target, true)
            .override_global(names::SELF_TGID, &own, true)
            .override_global(names::UNWIND_TABLES, &tables, true)
            .override_global(names::ARCH, &HOST_ARCH, true)
            .map_max_entries(names::UNWIND_ROWS, opts.tables.row_chunks.max(1))
            .map_max_entries(names::UNWOUND_STACKS[0], unwound)
            .map_max_entries(names::UNWOUND_STACKS[1], unwound)
            .load(OBJECT)
            .map_err(load_error)?;
        let unwinder_loaded = match opts.unwind {
            UnwindMode::Fp => false,
            UnwindMode::Dwarf => {
                load_unwinder(&mut ebpf)?;
                true
            }
            UnwindMode::Auto => match load_unwinder(&mut ebpf) {
                Ok(()) => true,
                Err(BpfError::Permission) => return Err(BpfError::Permission),
                Err(e) => {
                    tracing::warn!(
                        "unwinding by frame pointers only: the kernel rejected the table unwinder ({e})"
                    );
                    false
                }
            },
        };
        let program: &mut PerfEvent = ebpf
            .program_mut(names::PROGRAM)
            .ok_or_else(|| BpfError::Load(format!("program {} missing", names::PROGRAM)))?
            .try_into()
            .map_err(load_error)?;
        program.load().map_err(load_error)?;
        let mut take = |name: &'static str| {
            ebpf.take_map(name)
                .ok_or_else(|| BpfError::Load(format!("map {name} missing from the object")))
        };
        let control =
            Array::try_from(take(names::CONTROL)?).map_err(|e| map_error(names::CONTROL, e))?;
        let counts = [
            typed_counts(take(names::COUNTS[0])?, 0)?,
            typed_counts(take(names::COUNTS[1])?, 1)?,
        ];
        let stacks = [
            typed_stacks(take(names::STACKS[0])?, 0)?,
            typed_stacks(take(names::STACKS[1])?, 1)?,
        ];
        let stats =
            PerCpuArray::try_from(take(names::STATS)?).map_err(|e| map_error(names::STATS, e))?;
        let known =
            BpfHashMap::try_from(take(names::KNOWN)?).map_err(|e| map_error(names::KNOWN, e))?;
        let new_processes = RingBuf::try_from(take(names::NEW_PROCESSES)?)
            .map_err(|e| map_error(names::NEW_PROCESSES, e))?;
        let unwinder = if unwinder_loaded {
            let loader = TableLoader::new(&opts.tables, HOST_ARCH)?;
            Some(Unwinder {
                loader,
                maps: TableMaps {
                    rows: Array::try_from(take(names::UNWIND_ROWS)?)
                        .map_err(|e| map_error(names::UNWIND_ROWS, e))?,
                    pages: BpfHashMap::try_from(take(names::UNWIND_PAGES)?)
                        .map_err(|e| map_error(names::UNWIND_PAGES, e))?,
                    processes: BpfHashMap::try_from(take(names::PROCESS_MAPPINGS)?)
                        .map_err(|e| map_error(names::PROCESS_MAPPINGS, e))?,
                },
                stacks: [
                    BpfHashMap::try_from(take(names::UNWOUND_STACKS[0])?)
                        .map_err(|e| map_error(names::UNWOUND_STACKS[0], e))?,
                    BpfHashMap::try_from(take(names::UNWOUND_STACKS[1])?)
                        .map_err(|e| map_error(names::UNWOUND_STACKS[1], e))?,
                ],
            })
        } else {
            None
        };
        let mut sampler = Self {
            ebpf,
            links: Vec::new(),
            control,
            counts,
            stacks,
            stats,
            known,
            new_processes,
            unwinder,
            frequency: opts.frequency,
            generation: 0,
        };
        sampler.set_generation(0)?;
        Ok(sampler)
    }

    fn set_generation(&mut self, generation: usize) -> Result<(), BpfError> {
        self.control
            .set(
                0,
                Control {
                    generation: generation as u32,
                    _pad: 0,
                },
                0,
            )
            .map_err(|e| map_error(names::CONTROL, e))?;
        self.generation = generation;
        Ok(())
    }

    /// Reads and clears one generation's maps; the program must not be writing to them.
    fn drain_generation(&mut self, generation: usize) -> Result<RawBatch, BpfError> {
        let counts_name = names::COUNTS[generation];
        let counts = &mut self.counts[generation];
        let stacks = &mut self.stacks[generation];
        let keys: Vec<SampleKey> = counts
            .keys()
            .collect::<Result<_, _>>()
            .map_err(|e| map_error(counts_name, e))?;
        let mut frames: HashMap<i32, Vec<VirtAddr>> = HashMap::new();
        let unwound = match &mut self.unwinder {
            Some(u) => drain_unwound(&mut u.stacks[generation], generation)?,
            None => HashMap::new(),
        };
        let mut samples = Vec::with_capacity(keys.len());
        for key in &keys {
            let count: u64 = counts
                .get(key, 0)
                .map_err(|e| map_error(counts_name, e))?
                .iter()
                .sum();
            if count > 0 {
                let user = if key.user_stack_id == UNWOUND_STACK_ID {
                    match unwound.get(&key.unwound_stack) {
                        Some(Ok(frames)) => StackSide::Frames(frames.clone()),
                        Some(Err(loss)) => StackSide::Lost(*loss),
                        None => StackSide::Lost(StackLoss::MapRead(libc::ENOENT)),
                    }
                } else {
                    resolve_stack(stacks, &mut frames, key.user_stack_id, Side::User)
                };
                let kernel = resolve_stack(stacks, &mut frames, key.kernel_stack_id, Side::Kernel);
                samples.push(RawSample {
                    pid: Pid(key.tgid),
                    thread: ThreadName(key.thread),
                    user,
                    kernel,
                    count,
                });
            }
        }
        // Clearing cannot fail for keys we just read; a failure would only leave stale entries
        // that the next drain of this generation reads again, so it is not worth aborting for.
        for key in &keys {
            let _ = counts.remove(key);
        }
        let ids: Vec<u32> = stacks.stack_ids().filter_map(Result::ok).collect();
        for id in ids {
            let _ = stacks.remove(&id);
        }
        Ok(RawBatch { samples })
    }
}

impl SampleSource for BpfSampler {
    fn drain(&mut self) -> Result<RawBatch, SourceError> {
        let old = self.generation;
        self.set_generation(1 - old)?;
        std::thread::sleep(FLIP_GRACE);
        Ok(self.drain_generation(old)?)
    }

    /// Readable when the kernel has announced new processes.
    fn announcements(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        Some(std::os::fd::AsFd::as_fd(&self.new_processes))
    }

    fn new_processes(&mut self) -> Vec<Pid> {
        let mut pids = Vec::new();
        while let Some(item) = self.new_processes.next() {
            if let Ok(bytes) = <[u8; 4]>::try_from(&*item) {
                pids.push(Pid(u32::from_ne_bytes(bytes)));
            }
        }
        pids
    }

    fn forget(&mut self, pids: &[Pid]) {
        for pid in pids {
            // Absent already (evicted by the LRU): nothing to forget.
            let _ = self.known.remove(&pid.0);
        }
        if let Some(u) = &mut self.unwinder {
            u.loader.forget(&mut u.maps, pids);
        }
    }

    fn update_process(&mut self, process: &ProcessInfo) {
        if let Some(u) = &mut self.unwinder {
            u.loader.update(&mut u.maps, process);
        }
    }

    fn retry_tables(&mut self, processes: &ProcessTable) {
        if let Some(u) = &mut self.unwinder {
            u.loader
                .retry_waiting(&mut u.maps, |pid| processes.get(pid));
        }
    }

    fn forget_objects(&mut self, objects: &[std::sync::Arc<ObjectFile>]) {
        if let Some(u) = &mut self.unwinder {
            u.loader.forget_objects(&mut u.maps, objects);
        }
    }

    fn table_stats(&self) -> Option<LoaderStats> {
        self.unwinder.as_ref().map(|u| u.loader.stats())
    }

    fn stop(&mut self) {
        if let Some(program) = self.ebpf.program_mut(names::PROGRAM)
            && let Ok(program) = <&mut PerfEvent>::try_from(program)
        {
            for link in self.links.drain(..) {
                // Detaching only fails for a link already gone: nothing left to stop then.
                let _ = program.detach(link);
            }
        }
    }

    fn stats(&self) -> Result<SamplerStats, SourceError> {
        let mut stats = SamplerStats::default();
        for stat in Stat::ALL {
            let per_cpu = self
                .stats
                .get(&(stat as u32), 0)
                .map_err(|e| map_error(names::STATS, e))?;
            stats.counts[stat as usize] = per_cpu.iter().sum();
        }
        Ok(stats)
    }
}

/// Entries of each generation's unwound-stack map (1,040 bytes each, preallocated): four times
/// the samples one drain can hold at this frequency on this many CPUs, so that every sample of a
/// tick can have its own stack even when a drain runs late; within [2,048, 32,768] (2–33 MiB).
pub fn unwound_stack_entries(cpus: usize, frequency: u64) -> u32 {
    let per_drain = (cpus as u64).saturating_mul(frequency);
    per_drain
        .saturating_mul(4)
        .next_power_of_two()
        .clamp(2_048, 32_768) as u32
}

/// Loads the table unwinder and puts it in the tail-call slot.
fn load_unwinder(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    let program: &mut PerfEvent = ebpf
        .program_mut(names::UNWIND_PROGRAM)
        .ok_or_else(|| BpfError::Load(format!("program {} missing", names::UNWIND_PROGRAM)))?
        .try_into()
        .map_err(load_error)?;
    program.load().map_err(load_error)?;
    let fd = program
        .fd()
        .map_err(load_error)?
        .try_clone()
        .map_err(|e| BpfError::Load(format!("duplicating the unwinder's fd: {e}")))?;
    let mut programs = ProgramArray::try_from(
        ebpf.map_mut(names::PROGRAMS)
            .ok_or_else(|| BpfError::Load(format!("map {} missing", names::PROGRAMS)))?,
    )
    .map_err(|e| map_error(names::PROGRAMS, e))?;
    programs
        .set(0, &fd, 0)
        .map_err(|e| map_error(names::PROGRAMS, e))?;
    Ok(())
}

/// Reads and clears one generation's table-unwound stacks; a stack that could not be read keeps
/// the reason.
fn drain_unwound(
    map: &mut BpfHashMap<MapData, u64, UnwoundStack>,
    generation: usize,
) -> Result<HashMap<u64, Result<Vec<VirtAddr>, StackLoss>>, BpfError> {
    let name = names::UNWOUND_STACKS[generation];
    let keys: Vec<u64> = map
        .keys()
        .collect::<Result<_, _>>()
        .map_err(|e| map_error(name, e))?;
    let mut stacks = HashMap::with_capacity(keys.len());
    for key in keys {
        let frames = map
            .get(&key, 0)
            .map(|stack| {
                let len = (stack.len as usize).min(stack.frames.len());
                stack.frames[..len].iter().map(|&f| VirtAddr(f)).collect()
            })
            .map_err(|e| map_read_loss(&e));
        stacks.insert(key, frames);
        let _ = map.remove(&key);
    }
    Ok(stacks)
}

fn typed_counts(
    map: aya::maps::Map,
    generation: usize,
) -> Result<PerCpuHashMap<MapData, SampleKey, u64>, BpfError> {
    PerCpuHashMap::try_from(map).map_err(|e| map_error(names::COUNTS[generation], e))
}

fn typed_stacks(
    map: aya::maps::Map,
    generation: usize,
) -> Result<StackTraceMap<MapData>, BpfError> {
    StackTraceMap::try_from(map).map_err(|e| map_error(names::STACKS[generation], e))
}

fn map_error(map: &'static str, err: impl std::error::Error) -> BpfError {
    BpfError::Map {
        map,
        message: error_chain(&err),
    }
}

/// Why a recorded stack could not be read from its map, with the errno of the failed call
/// (`ENOENT` for a missing entry, `EINVAL` for a mismatch of sizes that involves no call). The
/// first such failure is logged with its whole chain of causes; the rest show in the profile as
/// `[stack lost: map read error N]`.
fn map_read_loss(err: &aya::maps::MapError) -> StackLoss {
    use aya::maps::MapError;
    static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let errno = match err {
        MapError::KeyNotFound | MapError::ElementNotFound => libc::ENOENT,
        other => {
            let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(other);
            let mut errno = libc::EINVAL;
            while let Some(e) = cur {
                if let Some(code) = e
                    .downcast_ref::<std::io::Error>()
                    .and_then(std::io::Error::raw_os_error)
                {
                    errno = code;
                    break;
                }
                cur = e.source();
            }
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                tracing::warn!(
                    "reading a stack from its eBPF map failed (counted as a lost stack): {}",
                    error_chain(err)
                );
            }
            errno
        }
    };
    StackLoss::MapRead(errno)
}

/// Which stack of a sample an id is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    User,
    Kernel,
}

/// What a negative stack id says. A user-mode sample has no kernel stack ([`NO_KERNEL_STACK`]),
/// and a kernel thread no user stack (`-EFAULT` for the user side): both are normal. A kernel
/// stack that faulted in kernel mode is lost.
fn missing_stack(id: i32, side: Side) -> StackSide {
    if id == NO_KERNEL_STACK {
        return StackSide::Absent;
    }
    match (id.unsigned_abs() as i32, side) {
        (errno::EFAULT, Side::User) => StackSide::Absent,
        (errno::EEXIST, _) => StackSide::Lost(StackLoss::Collision),
        (other, _) => StackSide::Lost(StackLoss::Error(other)),
    }
}

fn resolve_stack(
    stacks: &StackTraceMap<MapData>,
    cache: &mut HashMap<i32, Vec<VirtAddr>>,
    id: i32,
    side: Side,
) -> StackSide {
    if id < 0 {
        return missing_stack(id, side);
    }
    if let Some(frames) = cache.get(&id) {
        return StackSide::Frames(frames.clone());
    }
    match stacks.get(&(id as u32), 0) {
        Ok(trace) => {
            let frames: Vec<VirtAddr> = trace.frames().iter().map(|f| VirtAddr(f.ip)).collect();
            cache.insert(id, frames.clone());
            StackSide::Frames(frames)
        }
        Err(e) => StackSide::Lost(map_read_loss(&e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error that only says it in words.
    #[derive(Debug)]
    struct Worded(&'static str);
    impl std::fmt::Display for Worded {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for Worded {}

    #[test]
    fn permission_errors_are_told_by_errno_not_by_message() {
        let syscall = |errno| {
            aya::maps::MapError::SyscallError(aya::sys::SyscallError {
                call: "bpf_map_create",
                io_error: std::io::Error::from_raw_os_error(errno),
            })
        };
        assert!(is_permission(&syscall(libc::EPERM)));
        assert!(is_permission(&syscall(libc::EACCES)));
        assert!(!is_permission(&syscall(libc::EINVAL)));
        let created = aya::maps::MapError::CreateError {
            name: "COUNTS_0".into(),
            io_error: std::io::Error::from_raw_os_error(libc::EPERM),
        };
        assert!(is_permission(&aya::EbpfError::MapError(created)));
        // Words are not an errno: a message that merely mentions a permission is something else.
        assert!(!is_permission(&Worded("Operation not permitted")));
        assert!(!is_permission(&Worded("map `Permission denied` missing")));
    }

    #[test]
    fn a_failed_map_read_keeps_its_errno() {
        use aya::maps::MapError;
        assert_eq!(
            map_read_loss(&MapError::KeyNotFound),
            StackLoss::MapRead(libc::ENOENT)
        );
        let failed = MapError::SyscallError(aya::sys::SyscallError {
            call: "bpf_map_lookup_elem",
            io_error: std::io::Error::from_raw_os_error(libc::EFAULT),
        });
        assert_eq!(map_read_loss(&failed), StackLoss::MapRead(libc::EFAULT));
        let wrong = MapError::InvalidValueSize {
            size: 1,
            expected: 2,
        };
        assert_eq!(map_read_loss(&wrong), StackLoss::MapRead(libc::EINVAL));
    }

    #[test]
    fn a_kernel_stack_that_faulted_in_kernel_mode_is_lost_not_absent() {
        assert_eq!(
            missing_stack(NO_KERNEL_STACK, Side::Kernel),
            StackSide::Absent
        );
        assert_eq!(
            missing_stack(-errno::EFAULT, Side::Kernel),
            StackSide::Lost(StackLoss::Error(errno::EFAULT))
        );
        assert_eq!(missing_stack(-errno::EFAULT, Side::User), StackSide::Absent);
        assert_eq!(
            missing_stack(-errno::EEXIST, Side::User),
            StackSide::Lost(StackLoss::Collision)
        );
        assert_eq!(
            missing_stack(-errno::ENOMEM, Side::User),
            StackSide::Lost(StackLoss::Error(errno::ENOMEM))
        );
    }

    #[test]
    fn unwound_stack_map_scales_with_the_node() {
        assert_eq!(unwound_stack_entries(2, 99), 2_048);
        assert_eq!(unwound_stack_entries(16, 99), 8_192);
        assert_eq!(unwound_stack_entries(64, 99), 32_768);
        assert_eq!(unwound_stack_entries(512, 10_000), 32_768);
    }
}
