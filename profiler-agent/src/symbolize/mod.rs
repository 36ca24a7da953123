//! Turns addresses into function names, source lines and inlined frames, with one resolver per
//! kind of code: Go code from `.gopclntab` ([`go`]), other user code with blazesym (ELF symbols,
//! DWARF lines and inlined functions, demangling: [`elf`]), the kernel with a compact table of
//! `/proc/kallsyms` read once ([`kernel`]). One long-lived instance caches results per (file, offset) and
//! per kernel address, with names interned; blazesym's parsed files are released after each
//! export in continuous mode ([`Symbolizer::release_parsed`]), which bounds memory on nodes that
//! run large binaries.
use std::collections::HashMap;
use std::sync::Arc;

use blazesym::symbolize::evict::{self, Evict};
use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolizer as Blaze};

mod elf;
mod go;
mod kernel;

use elf::{debug_offsets, to_frames};
use kernel::Kallsyms;

use crate::process::{ObjectFile, ObjectKey, ProcessTable};
use crate::types::{BuildId, FileOffset, Pid, VirtAddr};

/// Bound on cached results (user + kernel), about 130 bytes each with interned names: ~13 MiB.
/// The cache is cleared when it is reached; entries are recomputed on demand.
pub const MAX_CACHED_ADDRESSES: usize = 100_000;

/// One function frame; several per address when functions were inlined.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
    pub kind: FrameKind,
}

/// What kind of code a frame is, by the resolver that named it (OTLP's `profile.frame.type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FrameKind {
    /// Compiled code named from ELF symbols or DWARF (and code no resolver could name).
    #[default]
    Native,
    /// Go code, named from its function table.
    Go,
    Kernel,
}

/// Frames for one address, innermost (most deeply inlined) first. Empty when unknown.
pub type Frames = Arc<[Frame]>;

#[derive(Clone, Debug)]
pub struct MappingInfo {
    pub start: VirtAddr,
    pub end: VirtAddr,
    pub offset: FileOffset,
    pub path: String,
    pub build_id: Option<BuildId>,
    /// The Go build id, for Go binaries (they may carry a GNU one as well).
    pub go_build_id: Option<String>,
    pub kernel: bool,
}

impl MappingInfo {
    /// The one mapping all kernel frames share (kallsyms addresses are absolute).
    pub fn kernel() -> Self {
        MappingInfo {
            start: VirtAddr(0),
            end: VirtAddr(0),
            offset: FileOffset(0),
            path: "[kernel.kallsyms]".into(),
            build_id: None,
            go_build_id: None,
            kernel: true,
        }
    }
}

/// An address to symbolize.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Address {
    /// In a process; `leaf` for the sampled frame (other frames are return addresses, looked up
    /// one byte back, at the call).
    User {
        pid: Pid,
        addr: VirtAddr,
        leaf: bool,
    },
    Kernel(VirtAddr),
}

/// What an address resolved to.
#[derive(Clone, Debug)]
pub struct Resolved {
    /// Innermost first; never empty: unknown code gets one `[unknown] module+0xoffset` frame.
    pub frames: Frames,
    /// The mapping the address lies in, when one is known.
    pub mapping: Option<MappingInfo>,
    /// Whether a resolver named it (false for `[unknown]` frames).
    pub symbolized: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolizerStats {
    pub cache_hits: u64,
    pub cache_misses: u64,
    /// Addresses left unresolved, whatever the reason.
    pub unknown: u64,
    /// Of those, addresses in files blazesym failed to read (not an ELF file, corrupt,
    /// truncated): see [`Symbolizer::last_error`].
    pub errors: u64,
    /// Samples whose user stack was cut where a frame-pointer walk looped outside code
    /// (`profile::WALK_LOOP_FRAME`).
    pub walk_loops: u64,
}

pub struct Symbolizer {
    blaze: Blaze,
    go: go::GoResolver,
    /// Read on first use; `None` if kallsyms is unreadable or hides addresses.
    kallsyms: Option<Option<Kallsyms>>,
    /// Function and file names, shared by every cached frame that uses them.
    names: std::collections::HashSet<Arc<str>>,
    /// Files blazesym has parsed since the last [`Symbolizer::release_parsed`].
    parsed: HashMap<ObjectKey, std::path::PathBuf>,
    user_cache: HashMap<(ObjectKey, FileOffset), Frames>,
    kernel_cache: HashMap<VirtAddr, Frames>,
    /// Files blazesym failed to read (their cached empty results count as errors).
    failed: std::collections::HashSet<ObjectKey>,
    last_error: Option<String>,
    pub stats: SymbolizerStats,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        // blazesym maps the files it reads, and their owners may truncate them.
        crate::sigbus::install();
        let blaze = Blaze::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        Self {
            blaze,
            go: go::GoResolver::default(),
            kallsyms: None,
            names: std::collections::HashSet::new(),
            parsed: HashMap::new(),
            user_cache: HashMap::new(),
            kernel_cache: HashMap::new(),
            failed: std::collections::HashSet::new(),
            last_error: None,
            stats: SymbolizerStats::default(),
        }
    }

    /// The last error blazesym reported for a file, with the file's path.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    fn make_room(&mut self, incoming: usize) {
        if self.user_cache.len() + self.kernel_cache.len() + incoming > MAX_CACHED_ADDRESSES {
            self.clear_results();
        }
    }

    /// Drops the per-address results (and the names only they used); what blazesym has parsed
    /// stays. The bound on the cache does this; the symbolization benchmark does it to time
    /// lookups in parsed files.
    pub fn clear_results(&mut self) {
        self.user_cache.clear();
        self.kernel_cache.clear();
        self.names.clear();
    }

    /// Symbolizes addresses of processes (through their mappings in `table`) and of the kernel:
    /// the one place that finds the code an address belongs to and sends it to its resolver,
    /// batched per file.
    pub fn resolve(&mut self, table: &ProcessTable, addresses: &[Address]) -> Vec<Resolved> {
        let mut out: Vec<Option<Resolved>> = vec![None; addresses.len()];
        let mut per_object: HashMap<ObjectKey, ObjectWork> = HashMap::new();
        let mut kernel: Vec<(usize, VirtAddr)> = Vec::new();
        for (i, address) in addresses.iter().enumerate() {
            let (pid, addr, leaf) = match *address {
                Address::User { pid, addr, leaf } => (pid, addr, leaf),
                Address::Kernel(addr) => {
                    kernel.push((i, addr));
                    continue;
                }
            };
            // A return address points after the call; the call itself is one byte back, in the
            // mapping below when the address starts a mapping.
            let lookup = if leaf {
                addr
            } else {
                VirtAddr(addr.0.saturating_sub(1))
            };
            let mapping = table.get(pid).and_then(|p| p.mapping(lookup));
            let (Some(m), Some(offset)) = (mapping, mapping.and_then(|m| m.file_offset(lookup)))
            else {
                // Outside every mapping we know of: unresolved, and counted as such.
                self.stats.unknown += 1;
                out[i] = Some(Resolved {
                    frames: unknown(&format!("{:#x}", addr.0)),
                    mapping: None,
                    symbolized: false,
                });
                continue;
            };
            let info = MappingInfo {
                start: m.start,
                end: m.end,
                offset: m.offset,
                path: m
                    .object
                    .as_ref()
                    .map_or(m.label.clone(), |o| o.path.display().to_string()),
                build_id: m.object.as_ref().and_then(|o| o.build_id.clone()),
                go_build_id: m.object.as_ref().and_then(|o| o.go_build_id.clone()),
                kernel: false,
            };
            // Shown at the address itself, as tools like addr2line expect.
            let shown = offset.0 + u64::from(!leaf);
            match &m.object {
                Some(object) => {
                    per_object
                        .entry(object.key)
                        .or_insert_with(|| (Arc::clone(object), Vec::new()))
                        .1
                        .push((i, offset, shown, info));
                }
                None => {
                    // Anonymous or special code (JIT, vdso): no file to read names from.
                    self.stats.unknown += 1;
                    out[i] = Some(Resolved {
                        frames: unknown(&format!("{}+{shown:#x}", m.label)),
                        mapping: Some(info),
                        symbolized: false,
                    });
                }
            }
        }
        for (object, items) in per_object.into_values() {
            let offsets: Vec<FileOffset> = items.iter().map(|(_, o, _, _)| *o).collect();
            let results = self.user(&object, &offsets);
            for ((i, _, shown, info), frames) in items.into_iter().zip(results) {
                let symbolized = !frames.is_empty();
                out[i] = Some(Resolved {
                    frames: if symbolized {
                        frames
                    } else {
                        unknown(&format!("{}+{shown:#x}", object.name()))
                    },
                    mapping: Some(info),
                    symbolized,
                });
            }
        }
        if !kernel.is_empty() {
            let addrs: Vec<VirtAddr> = kernel.iter().map(|(_, a)| *a).collect();
            for ((i, addr), frames) in kernel.into_iter().zip(self.kernel(&addrs)) {
                let symbolized = !frames.is_empty();
                out[i] = Some(Resolved {
                    frames: if symbolized {
                        frames
                    } else {
                        unknown(&format!("[kernel]+{:#x}", addr.0))
                    },
                    mapping: Some(MappingInfo::kernel()),
                    symbolized,
                });
            }
        }
        out.into_iter()
            .map(|r| {
                r.unwrap_or_else(|| Resolved {
                    frames: unknown("?"),
                    mapping: None,
                    symbolized: false,
                })
            })
            .collect()
    }

    /// Symbolizes offsets into one file. The offsets must already point *into* the instruction
    /// wanted (callers pass return address - 1 for non-leaf frames).
    pub fn user(&mut self, object: &ObjectFile, offsets: &[FileOffset]) -> Vec<Frames> {
        let mut out = vec![None; offsets.len()];
        let mut todo: Vec<(usize, FileOffset)> = Vec::new();
        for (i, off) in offsets.iter().enumerate() {
            match self.user_cache.get(&(object.key, *off)) {
                Some(frames) => {
                    self.stats.cache_hits += 1;
                    out[i] = Some(Arc::clone(frames));
                }
                None => match self.go.frames(object, *off, &mut self.names) {
                    Some(frames) => {
                        self.stats.cache_misses += 1;
                        self.make_room(1);
                        self.user_cache
                            .insert((object.key, *off), Arc::clone(&frames));
                        out[i] = Some(frames);
                    }
                    None => todo.push((i, *off)),
                },
            }
        }
        if !todo.is_empty() {
            self.stats.cache_misses += todo.len() as u64;
            self.make_room(todo.len());
            let raw: Vec<u64> = todo.iter().map(|(_, o)| o.0).collect();
            let results = match debug_offsets(object, &todo) {
                Some((debug, virt)) => {
                    self.parsed
                        .entry(object.key)
                        .or_insert_with(|| debug.clone());
                    let src = Source::Elf(Elf::new(debug));
                    self.blaze.symbolize(&src, Input::VirtOffset(&virt))
                }
                None => {
                    self.parsed
                        .entry(object.key)
                        .or_insert_with(|| object.open_path.clone());
                    let src = Source::Elf(Elf::new(&object.open_path));
                    self.blaze.symbolize(&src, Input::FileOffset(&raw))
                }
            };
            if let Err(e) = &results {
                let error = format!("{}: {e:#}", object.path.display());
                // Once per file: the count says how many addresses it cost.
                if self.failed.insert(object.key) {
                    tracing::warn!("cannot symbolize {error}");
                }
                self.last_error = Some(error);
            }
            for (n, (i, off)) in todo.into_iter().enumerate() {
                let frames = match &results {
                    Ok(syms) => to_frames(syms.get(n), &mut self.names),
                    Err(_) => Frames::from([]),
                };
                self.user_cache
                    .insert((object.key, off), Arc::clone(&frames));
                out[i] = Some(frames);
            }
        }
        let failed = self.failed.contains(&object.key);
        out.into_iter()
            .map(|f| {
                let f = f.unwrap_or_else(|| Frames::from([]));
                if f.is_empty() {
                    self.stats.unknown += 1;
                    self.stats.errors += u64::from(failed);
                }
                f
            })
            .collect()
    }

    /// Releases everything cached for files no process maps any more: blazesym's parsed
    /// ELF/DWARF (the bulk of the agent's memory for large binaries) and our per-offset results.
    pub fn forget(&mut self, objects: &[Arc<ObjectFile>]) {
        if objects.is_empty() {
            return;
        }
        let keys: std::collections::HashSet<ObjectKey> = objects.iter().map(|o| o.key).collect();
        self.user_cache.retain(|(key, _), _| !keys.contains(key));
        self.go.forget(&keys);
        self.parsed.retain(|key, _| !keys.contains(key));
        self.failed.retain(|key| !keys.contains(key));
        for object in objects {
            // Eviction is best effort and cannot fail for a path it never cached.
            let _ = self
                .blaze
                .evict(&Evict::Elf(evict::Elf::new(&object.open_path)));
            if let Some(debug) = &object.debug {
                let _ = self.blaze.evict(&Evict::Elf(evict::Elf::new(&debug.path)));
            }
        }
    }

    /// Releases what blazesym parsed for every file (symbol tables, DWARF: the bulk of the agent's
    /// memory when large binaries run) and returns freed memory to the system. The results
    /// cached per address stay, so a steady workload's next window needs blazesym only for
    /// addresses it has not seen. Continuous mode calls this after each export.
    pub fn release_parsed(&mut self) {
        for (_, path) in self.parsed.drain() {
            // Eviction is best effort and cannot fail for a path it never cached.
            let _ = self.blaze.evict(&Evict::Elf(evict::Elf::new(&path)));
        }
        self.go.release();
        // SAFETY: malloc_trim only walks the allocator's own free lists.
        unsafe { libc::malloc_trim(0) };
    }

    /// Symbolizes kernel addresses via kallsyms.
    pub fn kernel(&mut self, addrs: &[VirtAddr]) -> Vec<Frames> {
        let todo: Vec<VirtAddr> = {
            let mut t: Vec<VirtAddr> = addrs
                .iter()
                .copied()
                .filter(|a| !self.kernel_cache.contains_key(a))
                .collect();
            t.sort_unstable();
            t.dedup();
            t
        };
        self.stats.cache_hits += (addrs.len() - todo.len()) as u64;
        if !todo.is_empty() {
            self.stats.cache_misses += todo.len() as u64;
            self.make_room(todo.len());
            let table = self
                .kallsyms
                .get_or_insert_with(|| Kallsyms::read("/proc/kallsyms"));
            for addr in &todo {
                let frames = match table.as_ref().and_then(|t| t.lookup(addr.0)) {
                    Some(name) => Frames::from([Frame {
                        function: intern(&mut self.names, name),
                        file: None,
                        line: None,
                        kind: FrameKind::Kernel,
                    }]),
                    None => Frames::from([]),
                };
                self.kernel_cache.insert(*addr, frames);
            }
        }
        addrs
            .iter()
            .map(|a| {
                let f = self
                    .kernel_cache
                    .get(a)
                    .map(Arc::clone)
                    .unwrap_or_else(|| Frames::from([]));
                if f.is_empty() {
                    self.stats.unknown += 1;
                }
                f
            })
            .collect()
    }
}

/// A file and what to symbolize in it: (index in the request, offset, offset shown when unknown,
/// mapping).
type ObjectWork = (Arc<ObjectFile>, Vec<(usize, FileOffset, u64, MappingInfo)>);

/// The frame of code no resolver named.
pub fn unknown(what: &str) -> Frames {
    Frames::from([Frame {
        function: Arc::from(format!("[unknown] {what}")),
        file: None,
        line: None,
        kind: FrameKind::Native,
    }])
}

fn intern(names: &mut std::collections::HashSet<Arc<str>>, name: &str) -> Arc<str> {
    if let Some(existing) = names.get(name) {
        return Arc::clone(existing);
    }
    let name: Arc<str> = Arc::from(name);
    names.insert(Arc::clone(&name));
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    const KALLSYMS: &str = "\
ffffffff81000000 T _stext
ffffffff81000100 t do_one_initcall
ffffffff81000050 T startup_64
ffffffff81001000 D some_data
ffffffff81002000 W weak_fn
ffffffffc0000000 t mod_fn\t[some_module]
garbage line
";

    #[test]
    fn kallsyms_lookups_find_the_symbol_at_or_before() {
        let k = Kallsyms::parse(KALLSYMS).expect("symbols");
        assert_eq!(k.symbols.len(), 5, "data symbols and junk are skipped");
        assert_eq!(k.lookup(0xffffffff81000000), Some("_stext"));
        assert_eq!(k.lookup(0xffffffff81000060), Some("startup_64"));
        assert_eq!(k.lookup(0xffffffff81000fff), Some("do_one_initcall"));
        assert_eq!(k.lookup(0xffffffff81002010), Some("weak_fn"));
        assert_eq!(k.lookup(0xffffffffc0000004), Some("mod_fn"));
        assert_eq!(k.lookup(0x1000), None);
    }

    #[test]
    fn hidden_kernel_addresses_mean_no_table() {
        let hidden = "0000000000000000 T _stext\n0000000000000000 t foo\n";
        assert!(Kallsyms::parse(hidden).is_none());
        assert!(Kallsyms::parse("").is_none());
    }

    #[test]
    fn names_are_shared() {
        let mut names = std::collections::HashSet::new();
        let a = intern(&mut names, "main");
        let b = intern(&mut names, "main");
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_file_blazesym_cannot_read_is_an_error_with_its_cause_not_just_unknown() {
        use crate::process::ProcessTable;
        use crate::types::Pid;
        let mut bytes = b"\x7fELF not really".to_vec();
        bytes.resize(8192, 0xee);
        let file = crate::elf::tests::write_temp(&bytes);
        // SAFETY: a private temporary file, mapped the way a loader maps code.
        let map = unsafe { memmap2::MmapOptions::new().map_exec(file.as_file()) }.unwrap();
        let mut table = ProcessTable::default();
        let me = Pid(std::process::id());
        table.refresh(me).unwrap();
        let object = table
            .get(me)
            .and_then(|p| p.mapping(VirtAddr(map.as_ptr() as u64)))
            .and_then(|m| m.object.clone())
            .expect("the file is mapped");
        let mut s = Symbolizer::new();
        let frames = s.user(&object, &[FileOffset(0x10), FileOffset(0x20)]);
        assert!(frames.iter().all(|f| f.is_empty()));
        assert_eq!((s.stats.unknown, s.stats.errors), (2, 2));
        let error = s.last_error().expect("the cause is kept");
        assert!(
            error.contains(&object.path.display().to_string()),
            "{error}"
        );
        // Cached results of a failed file stay errors, not plain unknowns.
        s.user(&object, &[FileOffset(0x10)]);
        assert_eq!((s.stats.unknown, s.stats.errors), (3, 3));
    }

    #[test]
    fn vdso_code_is_named_like_any_library() {
        use crate::process::ProcessTable;
        use crate::types::Pid;
        use object::{Object, ObjectSymbol};
        let mut table = ProcessTable::default();
        let me = Pid(std::process::id());
        table.refresh(me).unwrap();
        let Some(vdso) = table
            .get(me)
            .and_then(|p| p.mappings.iter().find(|m| m.label == "[vdso]"))
            .cloned()
        else {
            eprintln!("skipped: this kernel maps no vdso");
            return;
        };
        let object = vdso.object.clone().expect("the vdso is an object");
        assert_eq!(object.name(), "[vdso]");
        assert!(
            object.build_id.is_some(),
            "the kernel links the vdso with a build id"
        );
        // The expected name, read by another ELF reader (the object crate) from the vdso's own
        // dynamic symbols: clock_gettime is what Go's time.Now and nanotime call there.
        let bytes = std::fs::read(&object.open_path).unwrap();
        let elf = object::File::parse(&*bytes).unwrap();
        let wanted = ["__vdso_clock_gettime", "__kernel_clock_gettime"];
        let symbol = elf
            .dynamic_symbols()
            .find(|s| s.name().is_ok_and(|n| wanted.contains(&n)))
            .expect("the vdso exports clock_gettime");
        let name = symbol.name().unwrap().to_string();
        assert!(symbol.size() > 8, "{name} has a body");
        let mut s = Symbolizer::new();
        let leaf = Address::User {
            pid: me,
            addr: VirtAddr(vdso.start.0 + symbol.address() + 4),
            leaf: true,
        };
        let resolved = s.resolve(&table, &[leaf]);
        assert!(resolved[0].symbolized, "{:?}", resolved[0].frames);
        let function = &*resolved[0].frames[0].function;
        // x86_64 names it __vdso_clock_gettime and also clock_gettime (an alias) at one address.
        assert!(function.ends_with("clock_gettime"), "{function} for {name}");
        let mapping = resolved[0].mapping.as_ref().unwrap();
        assert_eq!(mapping.path, "[vdso]");
        assert_eq!(mapping.build_id, object.build_id);
        assert_eq!(s.stats.unknown, 0);
    }

    #[test]
    fn the_running_kernel_symbolizes() {
        let mut s = Symbolizer::new();
        let Some(Some(table)) = Some(Kallsyms::read("/proc/kallsyms")) else {
            eprintln!("skipped: kallsyms hides addresses here (needs root)");
            return;
        };
        let (addr, _, _) = table.symbols[table.symbols.len() / 2];
        let frames = s.kernel(&[VirtAddr(addr + 1)]);
        assert_eq!(frames.len(), 1);
        assert!(!frames[0].is_empty());
    }
}
