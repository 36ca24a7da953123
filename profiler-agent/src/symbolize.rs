//! Turns addresses into function names, source lines and inlined frames with blazesym. One
//! long-lived instance: blazesym caches parsed ELF/DWARF per file, and this layer caches results
//! per (file, offset) and per kernel address.
use std::collections::HashMap;
use std::sync::Arc;

use blazesym::symbolize::evict::{self, Evict};
use blazesym::symbolize::source::{Elf, Kernel, Source};
use blazesym::symbolize::{CodeInfo, Input, Sym, Symbolized, Symbolizer as Blaze};

use crate::process::{ObjectFile, ObjectKey};
use crate::types::{FileOffset, VirtAddr};

/// Bound on cached results (user + kernel). The cache is cleared when it is reached: entries are
/// cheap to recompute from blazesym's own per-file cache.
pub const MAX_CACHED_ADDRESSES: usize = 500_000;

/// One function frame; several per address when functions were inlined.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Frame {
    pub function: Arc<str>,
    pub file: Option<Arc<str>>,
    pub line: Option<u32>,
}

/// Frames for one address, innermost (most deeply inlined) first. Empty when unknown.
pub type Frames = Arc<[Frame]>;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SymbolizerStats {
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub unknown: u64,
}

pub struct Symbolizer {
    blaze: Blaze,
    kernel: Source<'static>,
    user_cache: HashMap<(ObjectKey, FileOffset), Frames>,
    kernel_cache: HashMap<VirtAddr, Frames>,
    pub stats: SymbolizerStats,
}

impl Default for Symbolizer {
    fn default() -> Self {
        Self::new()
    }
}

impl Symbolizer {
    pub fn new() -> Self {
        let blaze = Blaze::builder()
            .enable_code_info(true)
            .enable_inlined_fns(true)
            .enable_demangling(true)
            .build();
        Self {
            blaze,
            kernel: Source::Kernel(Kernel::default()),
            user_cache: HashMap::new(),
            kernel_cache: HashMap::new(),
            stats: SymbolizerStats::default(),
        }
    }

    fn make_room(&mut self, incoming: usize) {
        if self.user_cache.len() + self.kernel_cache.len() + incoming > MAX_CACHED_ADDRESSES {
            self.user_cache.clear();
            self.kernel_cache.clear();
        }
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
                None => todo.push((i, *off)),
            }
        }
        if !todo.is_empty() {
            self.stats.cache_misses += todo.len() as u64;
            self.make_room(todo.len());
            let raw: Vec<u64> = todo.iter().map(|(_, o)| o.0).collect();
            let src = Source::Elf(Elf::new(&object.open_path));
            let results = self.blaze.symbolize(&src, Input::FileOffset(&raw));
            for (n, (i, off)) in todo.into_iter().enumerate() {
                let frames = match &results {
                    Ok(syms) => to_frames(syms.get(n)),
                    Err(_) => Frames::from([]),
                };
                self.user_cache
                    .insert((object.key, off), Arc::clone(&frames));
                out[i] = Some(frames);
            }
        }
        out.into_iter()
            .map(|f| {
                let f = f.expect("every slot filled");
                if f.is_empty() {
                    self.stats.unknown += 1;
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
        for object in objects {
            // Eviction is best effort and cannot fail for a path it never cached.
            let _ = self
                .blaze
                .evict(&Evict::Elf(evict::Elf::new(&object.open_path)));
        }
    }

    /// Symbolizes kernel addresses via kallsyms (and vmlinux where one is installed).
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
            let raw: Vec<u64> = todo.iter().map(|a| a.0).collect();
            let results = self.blaze.symbolize(&self.kernel, Input::AbsAddr(&raw));
            for (n, addr) in todo.iter().enumerate() {
                let frames = match &results {
                    Ok(syms) => to_frames(syms.get(n)),
                    Err(_) => Frames::from([]),
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

fn file_name(info: &CodeInfo<'_>) -> Arc<str> {
    Arc::from(info.to_path().to_string_lossy().as_ref())
}

/// blazesym reports the outer function with the inlined calls in nesting order (outer to inner);
/// we want innermost first, each with its own line.
fn to_frames(sym: Option<&Symbolized<'_>>) -> Frames {
    let Some(Symbolized::Sym(sym)) = sym else {
        return Frames::from([]);
    };
    let Sym {
        name,
        code_info,
        inlined,
        ..
    } = sym;
    let mut frames: Vec<Frame> = Vec::with_capacity(1 + inlined.len());
    for inl in inlined.iter().rev() {
        frames.push(Frame {
            function: Arc::from(inl.name.as_ref()),
            file: inl.code_info.as_ref().map(file_name),
            line: inl.code_info.as_ref().and_then(|c| c.line),
        });
    }
    frames.push(Frame {
        function: Arc::from(name.as_ref()),
        file: code_info.as_deref().map(file_name),
        line: code_info.as_deref().and_then(|c| c.line),
    });
    Frames::from(frames)
}
