//! Unwind tables from call frame information: an ELF file's `.eh_frame` (or `.debug_frame`) turned
//! into the sorted [`UnwindRow`]s the kernel-side unwinder searches.
//!
//! Rows are streamed to a sink in ascending address order, FDE by FDE, so memory stays bounded
//! whatever the size of the object: FDEs are visited in address order through `.eh_frame_hdr`'s
//! sorted search table, or, without one, through a sorted list of `(start, offset)` pairs (16 bytes
//! per FDE, a fraction of the rows they produce). Only the rows of one FDE at a time and the
//! object's few CIEs are held.
//!
//! Which CFI is used: `.eh_frame` when it describes any function, else `.debug_frame`. The two
//! are not merged per address: objects carry one or the other for their own code, and an
//! `.eh_frame` holding only the C runtime's few FDEs next to a `.debug_frame` for the rest (code
//! built with `-fno-asynchronous-unwind-tables -g`) is rare enough to leave to frame pointers.
//!
//! Malformed CFI never panics and rarely fails the whole table: an FDE that does not parse is
//! skipped, one whose program fails part-way ends in an [`kind::UNSUPPORTED`] row, and both are
//! counted in [`TableInfo`].
use std::collections::HashMap;
use std::fs::File;

use gimli::{
    BaseAddresses, CfaRule, CieOrFde, CommonInformationEntry, DebugFrame, EhFrame, EhFrameHdr,
    EndianSlice, FrameDescriptionEntry, LittleEndian, Register, RegisterRule, UnwindContext,
    UnwindExpression, UnwindOffset, UnwindSection, UnwindTableRow, Vendor,
};
use memmap2::Mmap;
use object::read::{ReadCache, ReadRef};
use object::{Architecture, Object, ObjectKind, ObjectSection, SectionKind};
use profiler_common::unwind::{UnwindRow, arch, kind};

use crate::gopclntab;

mod emit;
mod go;
use emit::{Emitter, Rule};
use go::emit_go;

type Reader<'a> = EndianSlice<'a, LittleEndian>;

/// Empty FDEs looked past for a non-empty one at the same address (see [`Cfi::past_empty`]);
/// libLLVM has runs of up to 20.
const MAX_EMPTY_FDE_RUN: usize = 64;

/// CIEs remembered while building one table; objects have a handful, and past this bound further
/// ones are parsed again for each FDE instead of remembered.
const MAX_CACHED_CIES: usize = 1024;

/// The CFA expression of an x86_64 PLT stub, as GNU ld emits it for `.plt`:
/// `DW_OP_breg7 (rsp) 8; DW_OP_breg16 (rip) 0; DW_OP_lit15; DW_OP_and; DW_OP_lit11; DW_OP_ge;
/// DW_OP_lit3; DW_OP_shl; DW_OP_plus`. [`kind::PLT`] rows evaluate it without the expression.
const X86_64_PLT_CFA_EXPRESSION: [u8; 11] = [
    0x77, 0x08, 0x80, 0x00, 0x3f, 0x1a, 0x3b, 0x2a, 0x33, 0x24, 0x22,
];
/// The `rsp` offset of [`X86_64_PLT_CFA_EXPRESSION`].
const X86_64_PLT_CFA_OFFSET: i16 = 8;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TableError {
    #[error("not a readable ELF file: {0}")]
    NotElf(#[source] object::Error),
    #[error(
        "unsupported object ({0}): unwind tables are built for 64-bit little-endian x86_64 and \
         aarch64 ELF files only"
    )]
    UnsupportedArch(String),
    #[error(
        "a relocatable object (.o) has no final addresses: build tables from linked executables \
         and shared libraries"
    )]
    Relocatable,
    #[error(
        "code ends at {end:#x}, above 4 GiB: unwind tables address the first 4 GiB of an object"
    )]
    TooLarge { end: u64 },
    #[error("cannot read the {name} section: {source}")]
    Section {
        name: &'static str,
        #[source]
        source: object::Error,
    },
    #[error(
        ".debug_frame is compressed and there is no .eh_frame: unwind tables need uncompressed CFI"
    )]
    CompressedDebugFrame,
    #[error("cannot map the object file: {0}")]
    Map(#[source] std::io::Error),
}

/// What a table was built from and what could not be expressed, for metrics and benchmarks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableInfo {
    /// One of [`arch`].
    pub arch: u32,
    /// FDEs whose rows were emitted.
    pub fdes: u64,
    /// Rows emitted (after merging equal neighbours).
    pub rows: u64,
    /// Emitted rows of kind [`kind::UNSUPPORTED`].
    pub unsupported_rows: u64,
    /// CFI rows made [`kind::UNSUPPORTED`] because an offset does not fit 16 bits.
    pub offset_overflows: u64,
    /// FDEs left out: unparseable, empty, beyond 4 GiB, or (from a corrupt search table)
    /// starting before the FDE visited before them.
    pub skipped_fdes: u64,
    /// FDEs cut short because a later-starting FDE overlaps them.
    pub overlapping_fdes: u64,
    /// Malformed entries or CFI programs: an FDE skipped or ended early, or a walk of the
    /// section stopped.
    pub cfi_errors: u64,
    pub eh_frame_bytes: u64,
    pub debug_frame_bytes: u64,
    /// Go functions whose rows came from `.gopclntab`'s stack-pointer deltas.
    pub go_functions: u64,
    /// Go functions whose entry or delta table did not decode (their code falls back to CFI, or
    /// to frame pointers).
    pub go_errors: u64,
}

/// A whole table in memory, for tests and small objects; the agent streams with [`build_rows`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnwindTable {
    /// One of [`arch`].
    pub arch: u32,
    pub rows: Vec<UnwindRow>,
    pub info: TableInfo,
}

/// Builds the table of an ELF file in memory.
pub fn build_table(elf: &[u8]) -> Result<UnwindTable, TableError> {
    let mut rows = Vec::new();
    let info = build_rows(elf, &mut |row| rows.push(row))?;
    Ok(UnwindTable {
        arch: info.arch,
        rows,
        info,
    })
}

/// Builds the table of an open ELF file, read with `pread` (never mapped: the process that maps
/// the file can truncate it at any time, and reading a mapping past the new end raises SIGBUS).
/// Only the headers, the symbol tables `object` parses, and the CFI sections are read, into the
/// heap for the length of the build.
pub fn build_rows_from_file(
    file: &File,
    sink: &mut impl FnMut(UnwindRow),
) -> Result<TableInfo, TableError> {
    // Go's table is read through its own bounded block cache, not object's (which keeps every
    // range it reads for the length of the build).
    let mut go_bytes = gopclntab::BlockFile::new(file.try_clone().map_err(TableError::Map)?);
    build_rows_from(
        &ReadCache::new(crate::elf::Pread::new(file)),
        &mut go_bytes,
        sink,
    )
}

/// Maps a cached table file read-only (see `CachedTable::from_file` for why that is safe there;
/// objects other processes map are never mapped by the agent's own code).
pub(crate) fn map_file(file: &File) -> Result<Mmap, TableError> {
    // SAFETY: the mapping is only read, through a byte slice, of a file only this agent writes
    // and never rewrites in place.
    unsafe { Mmap::map(file) }.map_err(TableError::Map)
}

/// Streams the unwind rows of an ELF file to `sink`, in strictly ascending `pc` order; each row's
/// rule holds up to the next row's `pc`. An object without CFI yields no rows.
pub fn build_rows(elf: &[u8], sink: &mut impl FnMut(UnwindRow)) -> Result<TableInfo, TableError> {
    build_rows_from(elf, &mut { elf }, sink)
}

/// [`build_rows`] from any `object` reader: bytes in memory, or a file read on demand; `go_bytes`
/// reads the same file for Go's function table.
fn build_rows_from<'d, R: ReadRef<'d>>(
    elf: R,
    go_bytes: &mut impl gopclntab::Bytes,
    sink: &mut impl FnMut(UnwindRow),
) -> Result<TableInfo, TableError> {
    let file = object::File::parse(elf).map_err(TableError::NotElf)?;
    let regs = ArchRegs::of(&file)?;
    if file.kind() == ObjectKind::Relocatable {
        return Err(TableError::Relocatable);
    }
    for section in file.sections() {
        if section.kind() == SectionKind::Text {
            let end = section.address().saturating_add(section.size());
            if end > u64::from(u32::MAX) {
                return Err(TableError::TooLarge { end });
            }
        }
    }
    let mut bases = BaseAddresses::default();
    if let Some(text) = file.section_by_name(".text") {
        bases = bases.set_text(text.address());
    }
    if let Some(got) = file.section_by_name(".got") {
        bases = bases.set_got(got.address());
    }
    let eh_frame = section_data(&file, ".eh_frame")?;
    let debug_frame = file.section_by_name(".debug_frame");
    let mut out = Emitter {
        sink,
        pending: None,
        last_rule: None,
        info: TableInfo {
            arch: regs.arch,
            eh_frame_bytes: eh_frame.map_or(0, |(_, data)| data.len() as u64),
            debug_frame_bytes: debug_frame.as_ref().map_or(0, |s| s.size()),
            ..TableInfo::default()
        },
    };
    if let Some(layout) = gopclntab::Layout::of(&file, go_bytes)
        && let Ok(mut go) = gopclntab::Table::open(&mut *go_bytes, layout)
    {
        // Go code: rows from the function table, and CFI (the C code of cgo binaries) where no
        // Go function is. Go emits no `.eh_frame` for its own code, so the CFI rows are few and
        // held in memory to merge.
        let mut cfi_rows = Vec::new();
        let mut cfi_sink = |row| cfi_rows.push(row);
        let mut cfi = Emitter {
            sink: &mut cfi_sink,
            pending: None,
            last_rule: None,
            info: out.info,
        };
        match emit_cfi(&file, eh_frame, debug_frame, bases, regs, &mut cfi) {
            // Go compresses its DWARF, `.debug_frame` included: the function table replaces it.
            Ok(()) | Err(TableError::CompressedDebugFrame) => {}
            Err(e) => return Err(e),
        }
        out.info = cfi.finish();
        out.info.rows = 0;
        out.info.unsupported_rows = 0;
        emit_go(&mut go, regs.arch, &cfi_rows, &mut out);
        return Ok(out.finish());
    }
    emit_cfi(&file, eh_frame, debug_frame, bases, regs, &mut out)?;
    Ok(out.finish())
}

/// Emits `.eh_frame`'s rows, or `.debug_frame`'s when `.eh_frame` describes no function.
fn emit_cfi<'d, R: ReadRef<'d>, F: FnMut(UnwindRow)>(
    file: &object::File<'d, R>,
    eh_frame: Option<(u64, &[u8])>,
    debug_frame: Option<object::Section<'d, '_, R>>,
    bases: BaseAddresses,
    regs: ArchRegs,
    out: &mut Emitter<'_, F>,
) -> Result<(), TableError> {
    if let Some(eh_frame) = eh_frame
        && emit_eh_frame(file, eh_frame, bases.clone(), regs, out)?
    {
        return Ok(());
    }
    if let Some(debug_frame) = debug_frame {
        emit_debug_frame(&debug_frame, bases, regs, out)?;
    }
    Ok(())
}

/// Emits the rows of `.eh_frame` (at `address`, holding `data`); `false` when it has no FDE.
fn emit_eh_frame<'d, R: ReadRef<'d>, F: FnMut(UnwindRow)>(
    file: &object::File<'d, R>,
    (address, data): (u64, &[u8]),
    mut bases: BaseAddresses,
    regs: ArchRegs,
    out: &mut Emitter<'_, F>,
) -> Result<bool, TableError> {
    bases = bases.set_eh_frame(address);
    let hdr = section_data(file, ".eh_frame_hdr")?;
    if let Some((hdr_address, _)) = hdr {
        bases = bases.set_eh_frame_hdr(hdr_address);
    }
    let mut section = EhFrame::new(data, LittleEndian);
    section.set_address_size(8);
    section.set_vendor(regs.vendor);
    let mut cfi = Cfi::new(section, data, bases, regs);
    if let Some((_, hdr)) = hdr
        && cfi.emit_in_hdr_order(hdr, (address, data.len()), out)
    {
        return Ok(true);
    }
    let order = cfi.sorted_order(&mut out.info);
    if order.is_empty() {
        return Ok(false);
    }
    let offsets = order.into_iter().map(|(_, offset)| Ok(offset));
    cfi.emit(Order::Sorted, offsets, out);
    Ok(true)
}

fn emit_debug_frame<'d, R: ReadRef<'d>, F: FnMut(UnwindRow)>(
    debug_frame: &object::Section<'d, '_, R>,
    bases: BaseAddresses,
    regs: ArchRegs,
    out: &mut Emitter<'_, F>,
) -> Result<(), TableError> {
    let compressed = debug_frame
        .compressed_file_range()
        .map_err(|source| section_error(".debug_frame", source))?;
    if compressed.format != object::CompressionFormat::None {
        return Err(TableError::CompressedDebugFrame);
    }
    let data = debug_frame
        .data()
        .map_err(|source| section_error(".debug_frame", source))?;
    let mut section = DebugFrame::new(data, LittleEndian);
    section.set_address_size(8);
    section.set_vendor(regs.vendor);
    let mut cfi = Cfi::new(section, data, bases, regs);
    let order = cfi.sorted_order(&mut out.info);
    let offsets = order.into_iter().map(|(_, offset)| Ok(offset));
    cfi.emit(Order::Sorted, offsets, out);
    Ok(())
}

fn section_error(name: &'static str, source: object::Error) -> TableError {
    TableError::Section { name, source }
}

/// The address and contents of a section, `None` when absent or without contents (`NOBITS`, as
/// in separate debug files).
fn section_data<'d, R: ReadRef<'d>>(
    file: &object::File<'d, R>,
    name: &'static str,
) -> Result<Option<(u64, &'d [u8])>, TableError> {
    let Some(section) = file.section_by_name(name) else {
        return Ok(None);
    };
    let data = section
        .data()
        .map_err(|source| section_error(name, source))?;
    Ok((!data.is_empty()).then_some((section.address(), data)))
}

/// The DWARF registers unwinding follows on one architecture.
#[derive(Clone, Copy, Debug)]
struct ArchRegs {
    arch: u32,
    vendor: Vendor,
    sp: Register,
    fp: Register,
    ra: Register,
}

impl ArchRegs {
    fn of<'d, R: ReadRef<'d>>(file: &object::File<'d, R>) -> Result<Self, TableError> {
        if !file.is_64() || !file.is_little_endian() {
            return Err(TableError::UnsupportedArch(format!(
                "{:?}, {}-bit {} endian",
                file.architecture(),
                if file.is_64() { 64 } else { 32 },
                if file.is_little_endian() {
                    "little"
                } else {
                    "big"
                },
            )));
        }
        match file.architecture() {
            Architecture::X86_64 => Ok(Self {
                arch: arch::X86_64,
                vendor: Vendor::Default,
                sp: gimli::X86_64::RSP,
                fp: gimli::X86_64::RBP,
                ra: gimli::X86_64::RA,
            }),
            Architecture::Aarch64 => Ok(Self {
                arch: arch::AARCH64,
                vendor: Vendor::AArch64,
                sp: gimli::AArch64::SP,
                fp: gimli::AArch64::X29,
                ra: gimli::AArch64::X30,
            }),
            other => Err(TableError::UnsupportedArch(format!("{other:?}"))),
        }
    }
}

/// Why a CFI row has no [`Rule`] other than [`Rule::UNSUPPORTED`].
enum Inexpressible {
    Rule,
    OffsetOverflow,
}

fn small(offset: i64) -> Result<i16, Inexpressible> {
    i16::try_from(offset).map_err(|_| Inexpressible::OffsetOverflow)
}

/// The CIE at `offset`, parsed once per table.
fn cached_cie<'a, S>(
    cies: &mut HashMap<usize, CommonInformationEntry<Reader<'a>>>,
    section: &S,
    bases: &BaseAddresses,
    offset: S::Offset,
) -> gimli::Result<CommonInformationEntry<Reader<'a>>>
where
    S: UnwindSection<Reader<'a>>,
    S::Offset: UnwindOffset<usize>,
{
    let key = UnwindOffset::into(offset);
    if let Some(cie) = cies.get(&key) {
        return Ok(cie.clone());
    }
    let cie = section.cie_from_offset(bases, offset)?;
    if cies.len() < MAX_CACHED_CIES {
        cies.insert(key, cie.clone());
    }
    Ok(cie)
}

/// Where the FDE order of [`Cfi::emit`] comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Order {
    /// `.eh_frame_hdr`'s search table: one FDE per address, chosen by the linker.
    SearchTable,
    /// Every FDE of the section, sorted.
    Sorted,
}

/// One CFI section with what is needed to walk it.
struct Cfi<'a, S: UnwindSection<Reader<'a>>> {
    section: S,
    /// The section's bytes (`section` keeps them private).
    data: &'a [u8],
    bases: BaseAddresses,
    regs: ArchRegs,
    cies: HashMap<usize, CommonInformationEntry<Reader<'a>>>,
}

/// A parsed FDE with its address range, known to fit 32 bits.
struct Fde<'a> {
    fde: FrameDescriptionEntry<Reader<'a>>,
    start: u32,
    end: u32,
}

impl<'a, S> Cfi<'a, S>
where
    S: UnwindSection<Reader<'a>>,
    S::Offset: UnwindOffset<usize>,
{
    fn new(section: S, data: &'a [u8], bases: BaseAddresses, regs: ArchRegs) -> Self {
        Self {
            section,
            data,
            bases,
            regs,
            cies: HashMap::new(),
        }
    }

    fn fde_at(&mut self, offset: usize) -> gimli::Result<FrameDescriptionEntry<Reader<'a>>> {
        let partial = self
            .section
            .partial_fde_from_offset(&self.bases, offset.into())?;
        partial.parse(|section, bases, cie| cached_cie(&mut self.cies, section, bases, cie))
    }

    /// Every FDE's `(start address, offset)`, sorted; a malformed entry ends the walk with what
    /// was found before it. Bounded by the section: an FDE takes at least 16 bytes of it, and
    /// its entry here 16 bytes of heap.
    fn sorted_order(&mut self, info: &mut TableInfo) -> Vec<(u64, usize)> {
        let mut order = Vec::new();
        let bases = self.bases.clone();
        let section = self.section.clone();
        let mut entries = section.entries(&bases);
        loop {
            match entries.next() {
                Ok(None) => break,
                Ok(Some(CieOrFde::Cie(_))) => {}
                Ok(Some(CieOrFde::Fde(partial))) => {
                    let cies = &mut self.cies;
                    match partial.parse(|section, bases, cie| cached_cie(cies, section, bases, cie))
                    {
                        Ok(fde) => order.push((fde.initial_address(), partial.offset())),
                        Err(_) => {
                            info.cfi_errors += 1;
                            info.skipped_fdes += 1;
                        }
                    }
                }
                Err(_) => {
                    info.cfi_errors += 1;
                    break;
                }
            }
        }
        order.sort_unstable();
        order
    }

    /// Emits the rows of the FDEs at `offsets` (in address order). Each FDE's rows are cut at
    /// the start of the next FDE, so that a later-starting FDE wins where two overlap; where the
    /// next FDE starts after this one ends, a [`kind::NO_INFO`] row marks the gap.
    fn emit<F: FnMut(UnwindRow)>(
        &mut self,
        order: Order,
        offsets: impl Iterator<Item = gimli::Result<usize>>,
        out: &mut Emitter<'_, F>,
    ) {
        let mut ctx = UnwindContext::new();
        let mut current: Option<Fde<'a>> = None;
        for offset in offsets {
            let Some(mut fde) = offset.and_then(|o| self.fde_at(o)).ok() else {
                out.info.cfi_errors += 1;
                out.info.skipped_fdes += 1;
                continue;
            };
            if order == Order::SearchTable && fde.len() == 0 {
                fde = self.past_empty(fde);
            }
            let start = fde.initial_address();
            let end = start.checked_add(fde.len());
            let (Ok(start), Some(Ok(end))) = (u32::try_from(start), end.map(u32::try_from)) else {
                out.info.skipped_fdes += 1;
                continue;
            };
            if end == start || current.as_ref().is_some_and(|c| start < c.start) {
                out.info.skipped_fdes += 1;
                continue;
            }
            if let Some(previous) = current.replace(Fde { fde, start, end }) {
                self.emit_fde(&mut ctx, &previous, Some(start), out);
            }
        }
        if let Some(last) = current {
            self.emit_fde(&mut ctx, &last, None, out);
        }
    }

    /// The first non-empty FDE among `fde` and the ones right after it in the section that start
    /// at the same address, or `fde`. Compilers may emit empty FDEs just before a function's
    /// real one (libLLVM has 333), and `.eh_frame_hdr` keeps one entry per address, sometimes an
    /// empty one.
    fn past_empty(
        &mut self,
        fde: FrameDescriptionEntry<Reader<'a>>,
    ) -> FrameDescriptionEntry<Reader<'a>> {
        let mut next = fde.clone();
        for _ in 0..MAX_EMPTY_FDE_RUN {
            // The entry after `next`: its initial length field (4 bytes, or 0xffffffff and 8 more
            // in 64-bit DWARF) plus its length.
            let offset = next.offset();
            let Some(length) = self.data.get(offset..offset.saturating_add(4)) else {
                break;
            };
            let header = if length == [0xff; 4] { 12 } else { 4 };
            let following = offset
                .checked_add(header)
                .and_then(|o| o.checked_add(next.entry_len()))
                .and_then(|o| self.fde_at(o).ok());
            match following {
                Some(f) if f.initial_address() == fde.initial_address() => next = f,
                _ => break,
            }
            if next.len() != 0 {
                return next;
            }
        }
        fde
    }

    /// Emits one FDE's rows up to its end or `limit` (the next FDE's start), whichever is first.
    fn emit_fde<F: FnMut(UnwindRow)>(
        &self,
        ctx: &mut UnwindContext<usize>,
        fde: &Fde<'a>,
        limit: Option<u32>,
        out: &mut Emitter<'_, F>,
    ) {
        let end = limit.map_or(fde.end, |limit| limit.min(fde.end));
        if end < fde.end {
            out.info.overlapping_fdes += 1;
        }
        if end <= fde.start {
            return;
        }
        out.info.fdes += 1;
        let cie_ra = fde.fde.cie().return_address_register();
        // Where the row after the last one emitted starts, while it is within the FDE.
        let mut next = Some(fde.start);
        match fde.fde.rows(&self.section, &self.bases, ctx) {
            Ok(mut rows) => loop {
                match rows.next_row() {
                    Ok(Some(row)) => {
                        let Ok(pc) = u32::try_from(row.start_address()) else {
                            break;
                        };
                        if pc >= end {
                            break;
                        }
                        let rule = self.rule(row, cie_ra, &mut out.info);
                        if !out.push(pc, rule) {
                            // Addresses went backwards (an advance wrapped): the program is bogus.
                            out.info.cfi_errors += 1;
                            break;
                        }
                        next = u32::try_from(row.end_address())
                            .ok()
                            .filter(|&e| e > pc && e < end);
                    }
                    Ok(None) => break,
                    Err(_) => {
                        out.info.cfi_errors += 1;
                        if let Some(pc) = next {
                            out.push(pc, Rule::UNSUPPORTED);
                        }
                        break;
                    }
                }
            },
            Err(_) => {
                out.info.cfi_errors += 1;
                out.push(fde.start, Rule::UNSUPPORTED);
            }
        }
        if limit != Some(end) {
            out.push(end, Rule::NO_INFO);
        }
    }

    /// Maps one CFI row to a [`Rule`], counting rows whose offsets do not fit.
    fn rule(&self, row: &UnwindTableRow<usize>, cie_ra: Register, info: &mut TableInfo) -> Rule {
        match self.try_rule(row, cie_ra) {
            Ok(rule) => rule,
            Err(Inexpressible::Rule) => Rule::UNSUPPORTED,
            Err(Inexpressible::OffsetOverflow) => {
                info.offset_overflows += 1;
                Rule::UNSUPPORTED
            }
        }
    }

    fn try_rule(
        &self,
        row: &UnwindTableRow<usize>,
        cie_ra: Register,
    ) -> Result<Rule, Inexpressible> {
        let regs = &self.regs;
        // An RA column other than the ABI's would put the return address where `step` does not
        // look for it.
        if cie_ra != regs.ra {
            return Err(Inexpressible::Rule);
        }
        let ra_offset = match row.register(regs.ra) {
            Some(RegisterRule::Undefined) => return Ok(Rule::END),
            Some(RegisterRule::Offset(n)) if n != 0 => small(n)?,
            // Not saved yet: still in the link register, which only aarch64 has.
            None | Some(RegisterRule::SameValue) if regs.arch == arch::AARCH64 => 0,
            _ => return Err(Inexpressible::Rule),
        };
        // 0 means "unchanged" in a row, so a frame pointer saved at CFA + 0 cannot be expressed.
        let fp_offset = match row.register(regs.fp) {
            None | Some(RegisterRule::SameValue) => 0,
            Some(RegisterRule::Offset(n)) if n != 0 => small(n)?,
            _ => return Err(Inexpressible::Rule),
        };
        let (kind, cfa_offset) = match row.cfa() {
            CfaRule::RegisterAndOffset { register, offset } if *register == regs.sp => {
                (kind::CFA_SP, small(*offset)?)
            }
            CfaRule::RegisterAndOffset { register, offset } if *register == regs.fp => {
                (kind::CFA_FP, small(*offset)?)
            }
            CfaRule::Expression(expression)
                if regs.arch == arch::X86_64 && self.is_plt_expression(expression) =>
            {
                (kind::PLT, X86_64_PLT_CFA_OFFSET)
            }
            _ => return Err(Inexpressible::Rule),
        };
        Ok(Rule {
            kind,
            cfa_offset,
            fp_offset,
            ra_offset,
        })
    }

    fn is_plt_expression(&self, expression: &UnwindExpression<usize>) -> bool {
        expression
            .get(&self.section)
            .is_ok_and(|e| e.0.slice() == X86_64_PLT_CFA_EXPRESSION)
    }
}

impl<'a> Cfi<'a, EhFrame<Reader<'a>>> {
    /// Emits the rows of the FDEs in the order of `.eh_frame_hdr`'s search table. Returns `false`,
    /// having emitted nothing, when there is no table or it cannot be trusted (not sorted,
    /// pointers outside `.eh_frame`): that is checked in a first pass over the table, so that
    /// the walk never has to fall back half-way.
    fn emit_in_hdr_order<F: FnMut(UnwindRow)>(
        &mut self,
        hdr: &[u8],
        (eh_frame_address, eh_frame_len): (u64, usize),
        out: &mut Emitter<'_, F>,
    ) -> bool {
        let bases = self.bases.clone();
        let Ok(parsed) = EhFrameHdr::new(hdr, LittleEndian).parse(&bases, 8) else {
            return false;
        };
        if parsed.eh_frame_ptr().direct().ok() != Some(eh_frame_address) {
            return false;
        }
        let Some(table) = parsed.table() else {
            return false;
        };
        // An FDE pointer as an offset into `.eh_frame`, computed here rather than by gimli's
        // `pointer_to_offset`, which does not check for pointers below the section.
        let to_offset = |pointer: gimli::Pointer| -> Option<usize> {
            let offset = pointer.direct().ok()?.checked_sub(eh_frame_address)?;
            usize::try_from(offset).ok().filter(|&o| o < eh_frame_len)
        };
        let mut previous = 0u64;
        let mut entries = table.iter(&bases);
        loop {
            match entries.next() {
                Ok(None) => break,
                Ok(Some((start, fde))) => {
                    let Ok(start) = start.direct() else {
                        return false;
                    };
                    if start < previous || to_offset(fde).is_none() {
                        return false;
                    }
                    previous = start;
                }
                Err(_) => return false,
            }
        }
        let mut entries = table.iter(&bases);
        let offsets = std::iter::from_fn(|| {
            let entry = entries.next().transpose()?;
            Some(entry.and_then(|(_, fde)| {
                to_offset(fde).ok_or(gimli::Error::UnsupportedIndirectPointer)
            }))
        });
        self.emit(Order::SearchTable, offsets, out);
        true
    }
}

#[cfg(test)]
pub(crate) mod tests;
