//! Keeps the kernel-side unwinder's maps in step with the processes being sampled: builds (or
//! reads from the disk cache) the table of every object a process maps, lays each table out as
//! one contiguous run of row chunks with an extent per 64 KiB page, and writes each process's
//! mappings with their load biases.
//!
//! Bounds: the row array ([`LoaderOptions::row_chunks`], `--unwind-table-mib`), the page map ([`UNWIND_PAGE_ENTRIES`]) and
//! the process map ([`UNWIND_PROCESS_ENTRIES`]) are fixed in the kernel; tables no sampled process
//! maps stay loaded until their space is needed and are then evicted, least recently used first.
//! Tables that still do not fit are not loaded (counted): their frames unwind by frame pointers.
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;

use profiler_common::unwind::{
    self, MAX_MAPPINGS, PackedRow, PageExtent, PageKey, ProcessMappings,
};
use profiler_common::{RowChunk, UNWIND_CHUNK_ROWS, UNWIND_PAGE_ENTRIES, UNWIND_PROCESS_ENTRIES};

use crate::collect::wake::Wakeup;
pub use crate::elf::{executable_segments, load_bias};
use crate::process::{ObjectFile, ObjectKey, ProcessInfo};
use crate::types::Pid;
use crate::unwind::cache::{CacheError, CachedTable, TableCache};
pub use crate::unwind::in_memory::InMemoryMaps;
pub use crate::unwind::layout::{ChunkAllocator, PageSpan, page_layout, split_pages};

/// What the loader writes to; implemented over the BPF maps by [`crate::collect::bpf`], and in memory for
/// tests.
pub trait UnwindMaps {
    fn write_chunk(&mut self, index: u32, chunk: &RowChunk) -> Result<(), String>;
    fn set_page(&mut self, key: PageKey, extent: PageExtent) -> Result<(), String>;
    fn remove_page(&mut self, key: PageKey);
    fn set_process(&mut self, pid: Pid, mappings: &ProcessMappings) -> Result<(), String>;
    fn remove_process(&mut self, pid: Pid);
}

/// Counters for `/metrics` and the run summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoaderStats {
    /// Tables loaded into the kernel (cumulative).
    pub tables_loaded: u64,
    /// Tables evicted to make room (cumulative).
    pub tables_evicted: u64,
    /// Tables of files mapped again after no process mapped them, taken back without a load.
    pub tables_reused: u64,
    /// Objects whose table could not be built (no CFI, unsupported format, I/O error).
    pub table_errors: u64,
    /// Tables that did not fit in the kernel maps even after eviction.
    pub tables_too_big: u64,
    /// Processes whose mappings could not be written (process map full).
    pub process_errors: u64,
    /// Tables not queued for building because the builder's queue was full (retried later).
    pub build_queue_full: u64,
    /// Tables waiting for the background builder now.
    pub builds_pending: u64,
    /// Chunks of the row array in use now.
    pub chunks_in_use: u64,
    /// Processes with tables now.
    pub processes: u64,
}

/// A table in the kernel.
struct LoadedTable {
    id: u32,
    /// First chunk and number of chunks of its rows.
    chunks: (u32, u32),
    pages: Vec<PageKey>,
    /// Executable PT_LOAD segments: (file offset, virtual address, file size).
    segments: Vec<(u64, u64, u64)>,
    /// Processes whose mappings use it now.
    users: usize,
    /// When it was last used (a logical clock), for eviction.
    last_used: u64,
}

enum TableState {
    Loaded(LoadedTable),
    /// Building or loading failed; not retried while the file stays mapped.
    Failed,
}

/// The loader. One per sampler.
pub struct TableLoader {
    cache: Arc<TableCache>,
    arch: u32,
    tables: HashMap<ObjectKey, TableState>,
    free: ChunkAllocator,
    /// Size of the kernel's row array.
    row_chunks: u32,
    pages_in_use: usize,
    next_id: u32,
    clock: u64,
    /// pid → (signature of its mappings, objects whose tables it uses).
    processes: HashMap<Pid, (u64, Vec<ObjectKey>)>,
    /// Loaded tables of files no process maps now, by cache key, for reuse.
    orphans: HashMap<String, LoadedTable>,
    /// Builds tables off the sampling thread; `None`: build in the foreground.
    builder: Option<Builder>,
    /// Objects whose table the builder is working on.
    pending: HashSet<ObjectKey>,
    /// Processes written without some of their tables, to update once builds finish.
    waiting: HashSet<Pid>,
    /// A build finished since the waiting processes were last updated.
    builds_finished: bool,
    stats: LoaderStats,
}

/// Where tables are cached on disk, and how much they may take.
#[derive(Clone, Debug)]
pub struct LoaderOptions {
    pub cache_dir: PathBuf,
    pub cache_max_bytes: u64,
    /// Build missing tables on a background thread at low priority (node-wide), rather than
    /// before returning (one process, whose tables should be there before sampling starts).
    pub background: bool,
    /// Elements of the kernel's row array ([`RowChunk`]s of 64 rows).
    pub row_chunks: u32,
    /// Poked whenever the background builder finishes a table, so the sampling thread can
    /// update the processes waiting for it without polling.
    pub wake: Option<Arc<Wakeup>>,
}

impl LoaderOptions {
    /// Tables built in the foreground, in `cache_dir`, with the default bounds (256 MiB of cache,
    /// the default row array): replay and tests.
    pub fn foreground(cache_dir: PathBuf) -> Self {
        Self {
            cache_dir,
            cache_max_bytes: 256 << 20,
            background: false,
            row_chunks: profiler_common::UNWIND_ROW_CHUNKS,
            wake: None,
        }
    }
}

/// Why the loader could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoaderError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("cannot start the unwind-table builder thread: {0}")]
    Builder(#[source] std::io::Error),
}

impl TableLoader {
    pub fn new(opts: &LoaderOptions, arch: u32) -> Result<Self, LoaderError> {
        let cache = Arc::new(TableCache::new(
            opts.cache_dir.clone(),
            opts.cache_max_bytes,
        )?);
        let builder = if opts.background {
            Some(
                Builder::start(Arc::clone(&cache), opts.wake.clone())
                    .map_err(LoaderError::Builder)?,
            )
        } else {
            None
        };
        Ok(Self {
            cache,
            arch,
            tables: HashMap::new(),
            free: ChunkAllocator::new(opts.row_chunks),
            row_chunks: opts.row_chunks,
            pages_in_use: 0,
            next_id: 1,
            clock: 0,
            processes: HashMap::new(),
            orphans: HashMap::new(),
            builder,
            pending: HashSet::new(),
            waiting: HashSet::new(),
            builds_finished: false,
            stats: LoaderStats::default(),
        })
    }

    pub fn stats(&self) -> LoaderStats {
        LoaderStats {
            chunks_in_use: u64::from(self.row_chunks - self.free.free_chunks()),
            processes: self.processes.len() as u64,
            builds_pending: self.pending.len() as u64,
            ..self.stats
        }
    }

    /// Brings the kernel's view of `process` up to date: loads the tables of its objects and
    /// writes its mappings. Cheap when nothing changed since the last call.
    pub fn update(&mut self, maps: &mut impl UnwindMaps, process: &ProcessInfo) {
        let Some(pid) = process.pid else { return };
        if !process.alive {
            return;
        }
        self.collect_builds();
        let objects = choose_mappings(process);
        let signature = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for (m, o) in &objects {
                (m.start.0, m.end.0, m.offset.0, o.key).hash(&mut h);
            }
            h.finish()
        };
        if self
            .processes
            .get(&pid)
            .is_some_and(|(sig, _)| *sig == signature)
        {
            return;
        }
        if !self.processes.contains_key(&pid)
            && self.processes.len() >= UNWIND_PROCESS_ENTRIES as usize
        {
            self.stats.process_errors += 1;
            return;
        }
        self.clock += 1;
        let clock = self.clock;
        // A table still being built: the mappings are written without it now, and again once
        // it is there (a zero signature never matches).
        let mut incomplete = false;
        let mut entry = ProcessMappings::default();
        let mut used = Vec::new();
        for (mapping, object) in objects {
            if entry.len as usize >= MAX_MAPPINGS {
                break;
            }
            let Some(table) = self.ensure_loaded(maps, object) else {
                incomplete |= self.pending.contains(&object.key);
                continue;
            };
            let Some(bias) = load_bias(&table.segments, mapping.start.0, mapping.offset.0) else {
                continue;
            };
            table.last_used = clock;
            entry.mappings[entry.len as usize] = unwind::Mapping {
                start: mapping.start.0,
                end: mapping.end.0,
                bias,
                table_id: table.id,
                _pad: 0,
            };
            entry.len += 1;
            used.push(object.key);
        }
        used.sort_by_key(|k| (k.dev, k.inode));
        used.dedup();
        if entry.len == 0 {
            self.forget(maps, &[pid]);
        }
        if incomplete {
            self.waiting.insert(pid);
        } else {
            self.waiting.remove(&pid);
        }
        if entry.len == 0 {
            return;
        }
        if maps.set_process(pid, &entry).is_err() {
            self.stats.process_errors += 1;
            self.forget(maps, &[pid]);
            return;
        }
        for key in &used {
            if let Some(TableState::Loaded(t)) = self.tables.get_mut(key) {
                t.users += 1;
            }
        }
        let signature = if incomplete { 0 } else { signature };
        if let Some((_, old)) = self.processes.insert(pid, (signature, used)) {
            self.release(&old);
        }
    }

    /// Drops exited processes from the kernel's view. Their tables stay loaded, unused, until
    /// the space is needed.
    pub fn forget(&mut self, maps: &mut impl UnwindMaps, pids: &[Pid]) {
        for pid in pids {
            self.waiting.remove(pid);
            if let Some((_, used)) = self.processes.remove(pid) {
                maps.remove_process(*pid);
                self.release(&used);
            }
        }
    }

    /// Objects the process table let go of (no process maps them). Their tables stay in the
    /// kernel as orphans, under the file's cache key (its build id), so a program that runs again
    /// and again (a probe, a cron job, a shell loop) is not loaded anew each time; orphans are
    /// evicted with the other unused tables, least recently used first, when space is needed.
    pub fn forget_objects(&mut self, maps: &mut impl UnwindMaps, objects: &[Arc<ObjectFile>]) {
        for object in objects {
            match self.tables.get(&object.key) {
                Some(TableState::Loaded(t)) if t.users == 0 => {
                    if let Some(TableState::Loaded(table)) = self.tables.remove(&object.key)
                        && let Some(older) = self.orphans.insert(cache_key(object), table)
                    {
                        self.unload_table(maps, older);
                    }
                }
                Some(TableState::Failed) => {
                    self.tables.remove(&object.key);
                }
                _ => {}
            }
        }
    }

    fn release(&mut self, used: &[ObjectKey]) {
        for key in used {
            if let Some(TableState::Loaded(t)) = self.tables.get_mut(key) {
                t.users = t.users.saturating_sub(1);
            }
        }
    }

    fn unload_table(&mut self, maps: &mut impl UnwindMaps, t: LoadedTable) {
        for page in &t.pages {
            maps.remove_page(*page);
        }
        self.pages_in_use -= t.pages.len();
        self.free.release(t.chunks.0, t.chunks.1);
        self.stats.tables_evicted += 1;
    }

    /// Evicts the least recently used table no process uses (an orphan or not); false if there
    /// is none.
    fn evict_one(&mut self, maps: &mut impl UnwindMaps) -> bool {
        let in_use = self
            .tables
            .iter()
            .filter_map(|(k, s)| match s {
                TableState::Loaded(t) if t.users == 0 => Some((t.last_used, *k)),
                _ => None,
            })
            .min_by_key(|(used, _)| *used);
        let orphan = self
            .orphans
            .iter()
            .map(|(k, t)| (t.last_used, k))
            .min_by_key(|(used, _)| *used);
        let table = match (in_use, orphan) {
            (Some((used, key)), orphan) if orphan.is_none_or(|(o, _)| used < o) => {
                match self.tables.remove(&key) {
                    Some(TableState::Loaded(t)) => t,
                    _ => return false,
                }
            }
            (_, Some((_, key))) => {
                let key = key.clone();
                match self.orphans.remove(&key) {
                    Some(t) => t,
                    None => return false,
                }
            }
            _ => return false,
        };
        self.unload_table(maps, table);
        true
    }

    /// The object's table in the kernel, loading it from the disk cache, or building it: at once
    /// in the foreground, or by the background builder (then `None` until a later call).
    fn ensure_loaded(
        &mut self,
        maps: &mut impl UnwindMaps,
        object: &Arc<ObjectFile>,
    ) -> Option<&mut LoadedTable> {
        if !self.tables.contains_key(&object.key) {
            let key = cache_key(object);
            if let Some(orphan) = self.orphans.remove(&key) {
                self.stats.tables_reused += 1;
                self.tables.insert(object.key, TableState::Loaded(orphan));
                return match self.tables.get_mut(&object.key) {
                    Some(TableState::Loaded(t)) => Some(t),
                    _ => None,
                };
            }
            let cached = match &self.builder {
                Some(builder) => match self.cache.get(&key) {
                    Some(table) => Some(Ok(table)),
                    None => {
                        if !self.pending.contains(&object.key) {
                            if builder.submit(key, Arc::clone(object)) {
                                self.pending.insert(object.key);
                            } else {
                                self.stats.build_queue_full += 1;
                            }
                        }
                        None
                    }
                },
                None => Some(self.cache.get_or_build_file(&key, object.file())),
            };
            let state = match cached {
                None => return None,
                Some(Err(_)) => {
                    self.stats.table_errors += 1;
                    TableState::Failed
                }
                Some(Ok(table)) => {
                    // Read with pread, never mapped: the process may truncate the file.
                    let segments = crate::elf::executable_segments_of(object.file());
                    match self.load(maps, &table, segments) {
                        Ok(loaded) => {
                            self.stats.tables_loaded += 1;
                            TableState::Loaded(loaded)
                        }
                        Err(LoadFailure::TooBig) => {
                            self.stats.tables_too_big += 1;
                            TableState::Failed
                        }
                        Err(LoadFailure::Unusable | LoadFailure::Kernel) => {
                            self.stats.table_errors += 1;
                            TableState::Failed
                        }
                    }
                }
            };
            self.tables.insert(object.key, state);
        }
        match self.tables.get_mut(&object.key) {
            Some(TableState::Loaded(t)) => Some(t),
            _ => None,
        }
    }

    /// Updates the processes that were waiting for tables, once the builder has finished some;
    /// `info` looks a process up. Cheap when nothing finished: call it often.
    pub fn retry_waiting<'a>(
        &mut self,
        maps: &mut impl UnwindMaps,
        info: impl Fn(Pid) -> Option<&'a ProcessInfo>,
    ) {
        self.collect_builds();
        if !std::mem::take(&mut self.builds_finished) {
            return;
        }
        let waiting: Vec<Pid> = self.waiting.drain().collect();
        for pid in waiting {
            if let Some(process) = info(pid) {
                self.update(maps, process);
            }
        }
    }

    /// Takes in what the background builder finished: failed builds are not retried.
    fn collect_builds(&mut self) {
        let Some(builder) = &self.builder else { return };
        for (key, ok) in builder.finished() {
            self.pending.remove(&key);
            self.builds_finished = true;
            if !ok {
                self.stats.table_errors += 1;
                self.tables.insert(key, TableState::Failed);
            }
        }
    }

    /// Loads a table that is in the disk cache into the kernel's maps.
    fn load(
        &mut self,
        maps: &mut impl UnwindMaps,
        table: &CachedTable,
        segments: Vec<(u64, u64, u64)>,
    ) -> Result<LoadedTable, LoadFailure> {
        if table.arch() != self.arch || segments.is_empty() {
            return Err(LoadFailure::Unusable);
        }
        let rows = table.rows();
        let pages = page_layout(rows);
        let total_rows: usize = pages.iter().map(PageSpan::len).sum();
        let chunks = u32::try_from(total_rows.div_ceil(UNWIND_CHUNK_ROWS as usize))
            .map_err(|_| LoadFailure::TooBig)?;
        if chunks == 0 {
            return Err(LoadFailure::Unusable);
        }
        if chunks > self.row_chunks || pages.len() > UNWIND_PAGE_ENTRIES as usize {
            // Could never fit: evicting everything else would not help.
            return Err(LoadFailure::TooBig);
        }
        let start = loop {
            let room_for_pages = self.pages_in_use + pages.len() <= UNWIND_PAGE_ENTRIES as usize;
            if room_for_pages && let Some(start) = self.free.allocate(chunks) {
                break start;
            }
            if !self.evict_one(maps) {
                return Err(LoadFailure::TooBig);
            }
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        // Rows first, then the pages that point at them: the kernel never sees a page whose
        // rows are not there yet.
        let mut chunk = RowChunk::default();
        let mut filled = 0usize;
        let mut chunk_index = start;
        let mut ok = true;
        for span in &pages {
            for row in span.iter(rows) {
                chunk.rows[filled] = PackedRow::pack(&row);
                filled += 1;
                if filled == UNWIND_CHUNK_ROWS as usize {
                    ok &= maps.write_chunk(chunk_index, &chunk).is_ok();
                    chunk_index += 1;
                    filled = 0;
                }
            }
        }
        if filled > 0 {
            ok &= maps.write_chunk(chunk_index, &chunk).is_ok();
        }
        let mut keys = Vec::with_capacity(pages.len());
        let mut row_index = start * UNWIND_CHUNK_ROWS;
        for span in &pages {
            let key = PageKey {
                table_id: id,
                page: span.page,
            };
            let extent = PageExtent {
                start: row_index,
                len: span.len() as u32,
            };
            row_index += span.len() as u32;
            if ok {
                ok = maps.set_page(key, extent).is_ok();
            }
            keys.push(key);
        }
        if !ok {
            for key in &keys {
                maps.remove_page(*key);
            }
            self.free.release(start, chunks);
            return Err(LoadFailure::Kernel);
        }
        self.pages_in_use += keys.len();
        Ok(LoadedTable {
            id,
            chunks: (start, chunks),
            pages: keys,
            segments,
            users: 0,
            last_used: self.clock,
        })
    }
}

/// Why a table was not loaded.
enum LoadFailure {
    /// Another architecture, no executable segment, or no rows.
    Unusable,
    /// More rows or pages than the kernel maps hold, even after evicting unused tables.
    TooBig,
    /// Writing a map failed.
    Kernel,
}

/// The file mappings of a process that get a slot in the kernel's (at most [`MAX_MAPPINGS`]),
/// sorted by address. When there are more, each distinct file gets one first (a process that
/// maps one file thousands of times must not crowd libc out), then the rest in address order.
fn choose_mappings(process: &ProcessInfo) -> Vec<(&crate::process::Mapping, &Arc<ObjectFile>)> {
    let all: Vec<(&crate::process::Mapping, &Arc<ObjectFile>)> = process
        .mappings
        .iter()
        .filter_map(|m| m.object.as_ref().map(|o| (m, o)))
        .collect();
    if all.len() <= MAX_MAPPINGS {
        return all;
    }
    let mut seen = HashSet::new();
    let (mut chosen, rest): (Vec<_>, Vec<_>) =
        all.into_iter().partition(|(_, o)| seen.insert(o.key));
    chosen.truncate(MAX_MAPPINGS);
    let room = MAX_MAPPINGS - chosen.len();
    chosen.extend(rest.into_iter().take(room));
    chosen.sort_by_key(|(m, _)| m.start);
    chosen
}

/// The disk-cache key of an object: its build id, else its identity and size and mtime.
fn cache_key(object: &ObjectFile) -> String {
    if let Some(id) = &object.build_id {
        return id.to_string();
    }
    let meta = object.file().metadata().ok();
    let (size, mtime) = meta.map_or((0, 0), |m| {
        use std::os::unix::fs::MetadataExt;
        (m.size(), m.mtime())
    });
    format!(
        "{}_{}-{}-{size}-{mtime}",
        object.key.dev.0, object.key.dev.1, object.key.inode
    )
}

/// Tables waiting to be built, at most: further requests are refused and retried later.
const BUILD_QUEUE: usize = 64;

type BuildRequest = (String, ObjectKey, Arc<ObjectFile>);

/// A build request ordered for a max-heap so that the smallest file comes out first.
struct Queued {
    size: u64,
    request: BuildRequest,
}

impl Queued {
    fn new(size: u64, request: BuildRequest) -> Self {
        Self { size, request }
    }
}

impl PartialEq for Queued {
    fn eq(&self, other: &Self) -> bool {
        self.size == other.size
    }
}
impl Eq for Queued {}
impl PartialOrd for Queued {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Queued {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        other.size.cmp(&self.size)
    }
}

/// The background table builder: one thread at low priority, fed through a bounded queue.
struct Builder {
    requests: std::sync::mpsc::SyncSender<BuildRequest>,
    done: std::sync::mpsc::Receiver<(ObjectKey, bool)>,
}

impl Builder {
    fn start(cache: Arc<TableCache>, wake: Option<Arc<Wakeup>>) -> std::io::Result<Self> {
        let (requests, inbox) = std::sync::mpsc::sync_channel::<BuildRequest>(BUILD_QUEUE);
        // Unbounded in type, bounded in practice: one message per request, and at most
        // BUILD_QUEUE + 1 requests are outstanding.
        let (report, done) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("kalypso-tables".into())
            .spawn(move || {
                // Table building is background work: below the workloads being profiled.
                // SAFETY: setpriority on this thread (tid 0 = the caller) has no memory effects.
                unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
                // Smallest files first: most processes need only small tables (their program,
                // libc), and one huge library must not hold all of them up.
                let mut queue = std::collections::BinaryHeap::new();
                let size = |o: &ObjectFile| o.file().metadata().map_or(u64::MAX, |m| m.len());
                loop {
                    if queue.is_empty() {
                        match inbox.recv() {
                            Ok(request) => queue.push(Queued::new(size(&request.2), request)),
                            Err(_) => break,
                        }
                    }
                    for request in inbox.try_iter() {
                        queue.push(Queued::new(size(&request.2), request));
                    }
                    let Some(Queued {
                        request: (key, object_key, object),
                        ..
                    }) = queue.pop()
                    else {
                        continue;
                    };
                    let ok = cache.get_or_build_file(&key, object.file()).is_ok();
                    drop(object);
                    if report.send((object_key, ok)).is_err() {
                        break;
                    }
                    if let Some(wake) = &wake {
                        wake.notify();
                    }
                }
            })?;
        Ok(Self { requests, done })
    }

    /// Queues a build; false if the queue is full.
    fn submit(&self, key: String, object: Arc<ObjectFile>) -> bool {
        let object_key = object.key;
        self.requests.try_send((key, object_key, object)).is_ok()
    }

    fn finished(&self) -> Vec<(ObjectKey, bool)> {
        self.done.try_iter().collect()
    }
}

#[cfg(test)]
mod tests;
