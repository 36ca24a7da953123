//! Go's function table, `.gopclntab`: function names, files and lines, inlined calls and the
//! stack-pointer deltas that unwinding needs, for every Go binary, stripped or not.
//!
//! `go build -ldflags="-s -w"` (how images ship Go) removes `.symtab` and DWARF but keeps the
//! table, since the runtime needs it for its own tracebacks. Layouts by header magic: Go 1.16 and
//! 1.17 (`0xfffffffa`), 1.18 and 1.19 (`0xfffffff0`), 1.20 and later (`0xfffffff1`); the
//! 1.2–1.15 layout (`0xfffffffb`) is refused with its own error. Only 64-bit little-endian tables
//! (amd64 and arm64) are read.
//!
//! Nothing is decoded up front: opening reads the 72-byte header (and, for inline trees, finds
//! the module data once); a lookup binary-searches the function index and decodes one function's
//! entry and the few pc-value tables it needs. Bytes come from a [`Bytes`] source: memory in
//! tests and fuzzing, and in the agent a [`BlockFile`] that reads the file with `pread` through a
//! bounded block cache ([`MAX_CACHED_BLOCKS`] × [`BLOCK_BYTES`] = 4 MiB), never a mapping.
//!
//! Malformed tables never panic: every offset is checked against the table's bounds, every loop is
//! bounded, and a function whose data does not decode yields no frames (or, for unwinding, no
//! rows) rather than wrong ones.
mod layout;
mod reader;

pub use layout::Layout;
use reader::Window;
pub use reader::{BLOCK_BYTES, BlockFile, Bytes, MAX_CACHED_BLOCKS};

/// Longest function or file name read; longer ones are cut (Go's own names stay far below).
const MAX_NAME_BYTES: usize = 4096;
/// Inlined calls followed at one address (Go's inliner nests a few levels deep).
const MAX_INLINE_DEPTH: usize = 64;
/// pc-value table entries decoded for one function before giving up on a corrupt table; a
/// function has at most one entry per instruction and Go's largest stay below 10^5.
const MAX_PCVALUE_STEPS: u32 = 1 << 20;
/// Functions accepted in one table (kubelet has ~80,000).
const MAX_FUNCTIONS: u64 = 1 << 24;

/// Function data and pc data indices the runtime defines (`internal/abi/symtab.go`).
const PCDATA_INL_TREE_INDEX: u32 = 2;
const FUNCDATA_INL_TREE: u32 = 3;

/// `_func.flag` bits (Go 1.17+): the outermost frame of a stack, and functions that write SP.
pub const FLAG_TOPFRAME: u8 = 1;
pub const FLAG_SPWRITE: u8 = 2;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum GoError {
    #[error("Go function table of Go 1.2–1.15 (magic 0xfffffffb): only Go 1.16 and later are read")]
    TooOld,
    #[error("Go function table with unknown magic {0:#x}")]
    UnknownMagic(u32),
    #[error("Go function table for {0}-byte pointers: only 64-bit tables are read")]
    PointerSize(u8),
    #[error("Go function table header is malformed: {0}")]
    Header(&'static str),
}

/// The table layout, by header magic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// Go 1.16 and 1.17.
    Go116,
    /// Go 1.18 and 1.19.
    Go118,
    /// Go 1.20 and later.
    Go120,
}

impl Version {
    fn of_magic(magic: u32) -> Result<Version, GoError> {
        match magic {
            0xffff_fffa => Ok(Version::Go116),
            0xffff_fff0 => Ok(Version::Go118),
            0xffff_fff1 => Ok(Version::Go120),
            0xffff_fffb => Err(GoError::TooOld),
            other => Err(GoError::UnknownMagic(other)),
        }
    }

    /// What users read: the first Go release of the layout.
    pub fn name(self) -> &'static str {
        match self {
            Version::Go116 => "go1.16",
            Version::Go118 => "go1.18",
            Version::Go120 => "go1.20",
        }
    }
}

/// One function's entry in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Func {
    /// Address range `[entry, end)` (link-time virtual addresses).
    pub entry: u64,
    pub end: u64,
    name_off: i32,
    pcsp: u32,
    pcfile: u32,
    pcln: u32,
    npcdata: u32,
    cu_offset: u32,
    pub func_id: u8,
    /// [`FLAG_TOPFRAME`], [`FLAG_SPWRITE`] (0 before Go 1.17).
    pub flag: u8,
    nfuncdata: u8,
    /// File offset of the `pcdata` array that follows the fixed fields.
    pcdata_at: u64,
}

impl Func {
    /// Whether the function has a stack-pointer delta table (host code linked into the Go text
    /// and some assembly have none).
    pub fn has_sp_deltas(&self) -> bool {
        self.pcsp != 0
    }
}

/// A frame of Go code: the function (inlined or not) and its position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoFrame {
    pub function: String,
    pub file: Option<String>,
    pub line: Option<u32>,
}

/// The fixed part of a table: its layout version and where its sub-tables start.
#[derive(Clone, Copy, Debug)]
struct Header {
    version: Version,
    /// Instruction size quantum of pc deltas (1 on amd64, 4 on arm64).
    quantum: u64,
    nfunc: u64,
    text_start: u64,
    /// File offsets of the sub-tables.
    funcnames: u64,
    cutab: u64,
    filetab: u64,
    pctab: u64,
    /// `pclntable`: the function index and the `_func` entries.
    functab: u64,
    /// End of the table (file offset).
    end: u64,
    /// The code the index covers: the first function's entry and the end sentinel.
    first_pc: u64,
    last_pc: u64,
}

/// An open function table.
pub struct Table<B> {
    bytes: B,
    h: Header,
    /// Virtual address of `go:func.*`, the base of funcdata offsets (Go 1.18+), from the module
    /// data; `None` when it was not found (inline trees are then not read).
    gofunc: Option<u64>,
    layout: Layout,
    /// Functions whose entries did not decode, since opening.
    pub bad_functions: u64,
}

impl<B: Bytes> Table<B> {
    /// Opens the table `layout` describes.
    pub fn open(mut bytes: B, layout: Layout) -> Result<Table<B>, GoError> {
        let h = read_header(&mut bytes, layout.offset, layout.size)?;
        let mut t = Table {
            bytes,
            h,
            gofunc: None,
            layout,
            bad_functions: 0,
        };
        t.gofunc = t.find_gofunc();
        Ok(t)
    }

    /// The source the table reads from.
    pub fn bytes_mut(&mut self) -> &mut B {
        &mut self.bytes
    }

    /// The table's layout version.
    pub fn version(&self) -> Version {
        self.h.version
    }

    /// The functions in the table.
    pub fn len(&self) -> u64 {
        self.h.nfunc
    }

    pub fn is_empty(&self) -> bool {
        self.h.nfunc == 0
    }

    /// Whether inline trees can be read (Go 1.18+ needs the module data to find them).
    pub fn has_inline_trees(&self) -> bool {
        self.h.version == Version::Go116 || self.gofunc.is_some()
    }

    fn u32_at(&mut self, offset: u64) -> Option<u32> {
        let mut b = [0u8; 4];
        self.bytes
            .read_at(offset, &mut b)
            .then(|| u32::from_le_bytes(b))
    }

    fn u64_at(&mut self, offset: u64) -> Option<u64> {
        let mut b = [0u8; 8];
        self.bytes
            .read_at(offset, &mut b)
            .then(|| u64::from_le_bytes(b))
    }

    /// A NUL-terminated string at `offset`, if it lies inside the table.
    fn cstr_at(&mut self, offset: u64) -> Option<String> {
        if offset >= self.h.end {
            return None;
        }
        let mut out = Vec::new();
        let mut chunk = [0u8; 64];
        let mut at = offset;
        while out.len() < MAX_NAME_BYTES && at < self.h.end {
            let len = (self.h.end - at).min(chunk.len() as u64) as usize;
            if !self.bytes.read_at(at, &mut chunk[..len]) {
                return None;
            }
            match chunk[..len].iter().position(|&b| b == 0) {
                Some(nul) => {
                    out.extend_from_slice(&chunk[..nul]);
                    return Some(String::from_utf8_lossy(&out).into_owned());
                }
                None => out.extend_from_slice(&chunk[..len]),
            }
            at += len as u64;
        }
        // Cut at the bound, or unterminated at the table's end: keep what was read.
        (!out.is_empty()).then(|| String::from_utf8_lossy(&out).into_owned())
    }

    /// Entry address and `_func` offset of index entry `i` (`i == nfunc` is the end sentinel).
    fn functab_entry(&mut self, i: u64) -> Option<(u64, u64)> {
        if i > self.h.nfunc {
            return None;
        }
        match self.h.version {
            Version::Go116 => {
                let at = self.h.functab + i * 16;
                Some((self.u64_at(at)?, self.u64_at(at + 8)?))
            }
            _ => {
                let at = self.h.functab + i * 8;
                let entry = self.h.text_start.checked_add(u64::from(self.u32_at(at)?))?;
                Some((entry, u64::from(self.u32_at(at + 4)?)))
            }
        }
    }

    /// The address range the table covers: `[first entry, end sentinel)`.
    pub fn text_range(&mut self) -> Option<(u64, u64)> {
        Some((self.h.first_pc, self.h.last_pc))
    }

    /// The index of the function containing `pc`, by binary search.
    pub fn find(&mut self, pc: u64) -> Option<u64> {
        let (first, last) = self.text_range()?;
        if pc < first || pc >= last {
            return None;
        }
        // Invariant: entry(lo) <= pc < entry(hi).
        let (mut lo, mut hi) = (0u64, self.h.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.functab_entry(mid)?.0 <= pc {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        Some(lo)
    }

    /// Decodes function `i`.
    pub fn func(&mut self, i: u64) -> Option<Func> {
        let decoded = self.decode_func(i);
        if decoded.is_none() {
            self.bad_functions += 1;
        }
        decoded
    }

    fn decode_func(&mut self, i: u64) -> Option<Func> {
        let (entry, off) = self.functab_entry(i)?;
        let (end, _) = self.functab_entry(i + 1)?;
        // A corrupt (unsorted) index: a function outside the code the index covers.
        if end < entry || entry < self.h.first_pc || end > self.h.last_pc {
            return None;
        }
        let at = self.h.functab.checked_add(off)?;
        // The fixed fields after `entry`/`entryOff`, and where `pcdata` starts.
        let (skip, fixed) = match self.h.version {
            Version::Go116 => (8, 44),
            Version::Go118 => (4, 40),
            Version::Go120 => (4, 44),
        };
        if at.checked_add(fixed)? > self.h.end {
            return None;
        }
        let fields = at + skip;
        let mut raw = [0u8; 40];
        if !self
            .bytes
            .read_at(fields, &mut raw[..(fixed - (fields - at)) as usize])
        {
            return None;
        }
        let word =
            |n: usize| u32::from_le_bytes(raw[n * 4..n * 4 + 4].try_into().unwrap_or([0; 4]));
        // nameoff, args, deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset, [startLine],
        // funcID, flag, pad, nfuncdata.
        let tail = match self.h.version {
            Version::Go120 => 9 * 4,
            _ => 8 * 4,
        };
        let f = Func {
            entry,
            end,
            name_off: word(0) as i32,
            pcsp: word(3),
            pcfile: word(4),
            pcln: word(5),
            npcdata: word(6),
            cu_offset: word(7),
            func_id: raw[tail],
            // Padding (zero) in Go 1.16, the flag since 1.17.
            flag: raw[tail + 1],
            nfuncdata: raw[tail + 3],
            pcdata_at: at + fixed,
        };
        if f.npcdata > 1 << 16 || f.pcdata_at.checked_add(u64::from(f.npcdata) * 4)? > self.h.end {
            return None;
        }
        Some(f)
    }

    /// The function's name.
    pub fn name(&mut self, f: &Func) -> Option<String> {
        let off = u64::try_from(f.name_off).ok()?;
        self.cstr_at(self.h.funcnames.checked_add(off)?)
    }

    /// The name at a `funcnametab` offset (inlined calls name their function this way).
    fn name_at(&mut self, off: i32) -> Option<String> {
        let off = u64::try_from(off).ok()?;
        self.cstr_at(self.h.funcnames.checked_add(off)?)
    }

    /// The value of the pc-value table at `table` (offset in `pctab`) for `pc` in `f`; `None`
    /// for a missing or corrupt table, or a pc it does not cover.
    pub fn pc_value(&mut self, f: &Func, table: u32, pc: u64) -> Option<i32> {
        let mut found = None;
        self.walk_pc_values(f, table, &mut |start, end, value| {
            if pc >= start && pc < end {
                found = Some(value);
                false
            } else {
                pc >= end
            }
        })?;
        found
    }

    /// Calls `each(start, end, value)` for the ranges of a pc-value table in address order, until
    /// it returns `false`. `None` when the table is missing or corrupt (ranges already given
    /// stand).
    fn walk_pc_values(
        &mut self,
        f: &Func,
        table: u32,
        each: &mut impl FnMut(u64, u64, i32) -> bool,
    ) -> Option<()> {
        if table == 0 {
            return None;
        }
        let mut at = self.h.pctab.checked_add(u64::from(table))?;
        let mut window = Window::default();
        let end = self.h.end;
        let mut pc = f.entry;
        let mut value: i32 = -1;
        let mut first = true;
        for _ in 0..MAX_PCVALUE_STEPS {
            let (uvdelta, n) = window.varint(&mut self.bytes, end, at)?;
            if uvdelta == 0 && !first {
                return Some(());
            }
            at += n;
            let vdelta = if uvdelta & 1 != 0 {
                !((uvdelta >> 1) as i32)
            } else {
                (uvdelta >> 1) as i32
            };
            let (pcdelta, n) = window.varint(&mut self.bytes, end, at)?;
            at += n;
            value = value.wrapping_add(vdelta);
            let next = pc.checked_add(u64::from(pcdelta) * self.h.quantum)?;
            if next > f.end || (next == pc && !first) {
                // A range past the function's end, or an empty one that is not the first:
                // corrupt.
                return None;
            }
            if next > pc && !each(pc, next, value) {
                return Some(());
            }
            pc = next;
            first = false;
        }
        None
    }

    /// The file name for a `pcfile` value of `f`.
    fn file(&mut self, f: &Func, index: i32) -> Option<String> {
        let index = u64::try_from(index).ok()?;
        let slot = self
            .h
            .cutab
            .checked_add((u64::from(f.cu_offset).checked_add(index)?).checked_mul(4)?)?;
        if slot + 4 > self.h.end {
            return None;
        }
        let off = self.u32_at(slot)?;
        if off == u32::MAX {
            return None;
        }
        self.cstr_at(self.h.filetab.checked_add(u64::from(off))?)
    }

    fn position(&mut self, f: &Func, pc: u64) -> (Option<String>, Option<u32>) {
        let file = self
            .pc_value(f, f.pcfile, pc)
            .and_then(|index| self.file(f, index));
        let line = self
            .pc_value(f, f.pcln, pc)
            .and_then(|l| u32::try_from(l).ok());
        (file, line)
    }

    fn pcdata_table(&mut self, f: &Func, index: u32) -> Option<u32> {
        if index >= f.npcdata {
            return None;
        }
        self.u32_at(f.pcdata_at + u64::from(index) * 4)
            .filter(|&t| t != 0)
    }

    /// File offset of the inline tree of `f`, if it has one.
    fn inline_tree(&mut self, f: &Func) -> Option<u64> {
        if u32::from(f.nfuncdata) <= FUNCDATA_INL_TREE {
            return None;
        }
        let after_pcdata = f.pcdata_at + u64::from(f.npcdata) * 4;
        let vaddr = match self.h.version {
            Version::Go116 => {
                // Pointer-sized entries, aligned to 8 bytes relative to the table's start.
                let rel = after_pcdata - self.layout.offset;
                let aligned = self.layout.offset + rel.next_multiple_of(8);
                let v = self.u64_at(aligned + u64::from(FUNCDATA_INL_TREE) * 8)?;
                (v != 0).then_some(v)?
            }
            _ => {
                let off = self.u32_at(after_pcdata + u64::from(FUNCDATA_INL_TREE) * 4)?;
                if off == u32::MAX {
                    return None;
                }
                self.gofunc?.checked_add(u64::from(off))?
            }
        };
        self.layout.file_offset(vaddr)
    }

    /// The frames at `pc` in function `f`, innermost (most deeply inlined) first. The outermost
    /// frame is `f` itself; each inlined call adds one, positioned at its call site.
    pub fn frames(&mut self, f: &Func, pc: u64) -> Vec<GoFrame> {
        let mut frames = Vec::new();
        let tree = self.inline_tree(f);
        let index_table = tree.and_then(|_| self.pcdata_table(f, PCDATA_INL_TREE_INDEX));
        let mut pc = pc;
        for _ in 0..MAX_INLINE_DEPTH {
            let (file, line) = self.position(f, pc);
            let inlined = match (tree, index_table) {
                (Some(tree), Some(table)) => self
                    .pc_value(f, table, pc)
                    .filter(|&ix| ix >= 0)
                    .and_then(|ix| self.inlined_call(tree, ix as u64)),
                _ => None,
            };
            match inlined {
                Some((name_off, parent_pc)) => {
                    let function = self
                        .name_at(name_off)
                        .unwrap_or_else(|| "[unknown inlined Go function]".into());
                    frames.push(GoFrame {
                        function,
                        file,
                        line,
                    });
                    let Some(parent) = f
                        .entry
                        .checked_add_signed(i64::from(parent_pc))
                        .filter(|p| *p >= f.entry && *p < f.end)
                    else {
                        break;
                    };
                    pc = parent;
                }
                None => {
                    let function = self
                        .name(f)
                        .unwrap_or_else(|| format!("[unknown Go function at {:#x}]", f.entry));
                    frames.push(GoFrame {
                        function,
                        file,
                        line,
                    });
                    return frames;
                }
            }
        }
        // Too deep or a parent outside the function: end with the function itself.
        let function = self
            .name(f)
            .unwrap_or_else(|| format!("[unknown Go function at {:#x}]", f.entry));
        frames.push(GoFrame {
            function,
            file: None,
            line: None,
        });
        frames
    }

    /// `(name offset, parent pc offset)` of entry `ix` of the inline tree at `tree`.
    fn inlined_call(&mut self, tree: u64, ix: u64) -> Option<(i32, i32)> {
        let (size, name_at, parent_at) = match self.h.version {
            // parent i16, funcID u8, pad, file i32, line i32, func_ i32, parentPc i32.
            Version::Go116 | Version::Go118 => (20, 12, 16),
            // funcID u8, pad [3], nameOff i32, parentPc i32, startLine i32.
            Version::Go120 => (16, 4, 8),
        };
        let at = tree.checked_add(ix.checked_mul(size)?)?;
        Some((
            self.u32_at(at + name_at)? as i32,
            self.u32_at(at + parent_at)? as i32,
        ))
    }

    /// Calls `each(start, end, sp_delta)` for every range of `f`'s stack-pointer delta table:
    /// how far SP is below its value at the function's entry. `None` when the table is missing
    /// or corrupt.
    pub fn sp_deltas(
        &mut self,
        f: &Func,
        each: &mut impl FnMut(u64, u64, i32) -> bool,
    ) -> Option<()> {
        self.walk_pc_values(f, f.pcsp, each)
    }

    /// Finds `runtime.firstmoduledata` (Go 1.18+): a pointer to the table's header followed by
    /// slices into the table, in a data section; returns its `gofunc` field.
    fn find_gofunc(&mut self) -> Option<u64> {
        if self.h.version == Version::Go116 {
            return None;
        }
        // Word index of `gofunc`: pcHeader, 6 slices (3 words each), findfunctab, minpc, maxpc,
        // text, etext, noptrdata..enoptrbss (8), [covctrs, ecovctrs (1.20+)], end, gcdata,
        // gcbss, types, etypes, rodata, gofunc.
        let (text_word, gofunc_word) = match self.h.version {
            Version::Go118 => (22, 38),
            _ => (22, 40),
        };
        let funcnames_vaddr = self
            .layout
            .vaddr
            .wrapping_add(self.h.funcnames - self.layout.offset);
        let sections = self.layout.data_sections.clone();
        let mut buf = vec![0u8; 64 * 1024];
        for (offset, _vaddr, size) in sections {
            let mut at = 0u64;
            while at < size {
                let len = (size - at).min(buf.len() as u64) as usize;
                if !self.bytes.read_at(offset + at, &mut buf[..len]) {
                    break;
                }
                for i in (0..len.saturating_sub(7)).step_by(8) {
                    let w = u64::from_le_bytes(buf[i..i + 8].try_into().ok()?);
                    if w != self.layout.vaddr {
                        continue;
                    }
                    let base = offset + at + i as u64;
                    let word = |t: &mut Self, n: u64| t.u64_at(base.checked_add(n * 8)?);
                    if word(self, 1) == Some(funcnames_vaddr)
                        && word(self, text_word) == Some(self.h.text_start)
                        && let Some(gofunc) = word(self, gofunc_word)
                        && self.layout.file_offset(gofunc).is_some()
                    {
                        return Some(gofunc);
                    }
                }
                at += len as u64;
            }
        }
        None
    }
}

/// Reads and checks the header at `offset` of a table of at most `size` bytes.
fn read_header(bytes: &mut dyn Bytes, offset: u64, size: u64) -> Result<Header, GoError> {
    // 64 bytes for Go 1.16, 72 since 1.18 (`textStart` was added); a 1.16 header is always
    // followed by more of the table, so 72 bytes are read for either.
    let mut h = [0u8; 72];
    if !bytes.read_at(offset, &mut h) {
        return Err(GoError::Header("shorter than its header"));
    }
    let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    let version = Version::of_magic(magic)?;
    if h[4] != 0 || h[5] != 0 {
        return Err(GoError::Header("padding bytes are not zero"));
    }
    let quantum = u64::from(h[6]);
    if !matches!(quantum, 1 | 2 | 4) {
        return Err(GoError::Header("instruction quantum is not 1, 2 or 4"));
    }
    if h[7] != 8 {
        return Err(GoError::PointerSize(h[7]));
    }
    let word = |n: usize| {
        let at = 8 + n * 8;
        u64::from_le_bytes(h[at..at + 8].try_into().unwrap_or([0; 8]))
    };
    let nfunc = word(0);
    // nfunc, nfiles, [textStart (1.18+)], funcnameOffset, cuOffset, filetabOffset, pctabOffset,
    // pclnOffset.
    let (text_start, rest) = match version {
        Version::Go116 => (0, 2),
        _ => (word(2), 3),
    };
    let rel = [
        word(rest),
        word(rest + 1),
        word(rest + 2),
        word(rest + 3),
        word(rest + 4),
    ];
    // Entries are 32-bit offsets from the text start (1.18+): every one must be an address.
    if text_start > u64::MAX - u64::from(u32::MAX) {
        return Err(GoError::Header("text start outside the address space"));
    }
    if nfunc == 0 || nfunc > MAX_FUNCTIONS {
        return Err(GoError::Header("implausible function count"));
    }
    let header_bytes = if version == Version::Go116 { 64 } else { 72 };
    if rel.iter().any(|&r| r < header_bytes || r >= size) {
        return Err(GoError::Header("a sub-table lies outside the table"));
    }
    let [funcnames, cutab, filetab, pctab, functab] = rel.map(|r| offset + r);
    let entry_bytes = if version == Version::Go116 { 16 } else { 8 };
    let end = offset
        .checked_add(size)
        .ok_or(GoError::Header("table size overflows"))?;
    if functab + (nfunc + 1) * entry_bytes > end {
        return Err(GoError::Header("function index runs past the table"));
    }
    let entry_at = |bytes: &mut dyn Bytes, i: u64| -> Option<u64> {
        let mut b = [0u8; 8];
        if version == Version::Go116 {
            bytes
                .read_at(functab + i * 16, &mut b)
                .then(|| u64::from_le_bytes(b))
        } else {
            let mut w = [0u8; 4];
            if !bytes.read_at(functab + i * 8, &mut w) {
                return None;
            }
            text_start.checked_add(u64::from(u32::from_le_bytes(w)))
        }
    };
    let (Some(first_pc), Some(last_pc)) = (entry_at(bytes, 0), entry_at(bytes, nfunc)) else {
        return Err(GoError::Header("function index unreadable"));
    };
    if first_pc > last_pc {
        return Err(GoError::Header("function index ends before it starts"));
    }
    Ok(Header {
        version,
        quantum,
        nfunc,
        text_start,
        funcnames,
        cutab,
        filetab,
        pctab,
        functab,
        end,
        first_pc,
        last_pc,
    })
}

#[cfg(test)]
mod tests;
