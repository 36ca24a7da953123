//! The kernel-side unwinder, run in userspace over recorded stack memory.
//!
//! [`unwind`] walks a stack with exactly the functions the BPF program uses
//! ([`find_mapping`], [`lookup_address`], [`find_row`], [`step`], [`step_frame_pointer`]), so a
//! stack recorded once (a [`StackSnapshot`]: registers plus the bytes from the stack pointer up)
//! can be unwound again and again, in a test, without root and without a kernel. The table is
//! reached through [`RowLookup`], so the replay does not care how rows were built or paged.
//!
//! [`process_mappings`] and [`crate::elf::load_bias`] turn `/proc/PID/maps` and the mapped ELF files into the
//! [`ProcessMappings`] the BPF program is given.
use std::collections::BTreeMap;
use std::path::Path;

use profiler_common::unwind::{
    Identity, Mapping, ProcessMappings, Regs, Stop, TABLE_PAGE_SHIFT, UnwindRow, arch, find_in,
    find_row, kind, lookup_address, step, step_frame_pointer,
};

use crate::unwind::loader::InMemoryMaps;

/// Finds the unwind row in force at an object virtual address of one table.
pub trait RowLookup {
    /// The last row of table `table_id` whose `pc` is at most `vaddr`; `None` when the table is
    /// unknown or starts after `vaddr`.
    fn row(&self, table_id: u32, vaddr: u64) -> Option<UnwindRow>;
}

/// Whole tables by id, each sorted by `pc`.
///
/// The lookup searches, like the BPF program, only the rows of `vaddr`'s page (plus the row in
/// force at its start) with the shared, step-bounded [`find_row`]: a whole object's table may
/// have more rows than that search covers.
impl RowLookup for BTreeMap<u32, Vec<UnwindRow>> {
    fn row(&self, table_id: u32, vaddr: u64) -> Option<UnwindRow> {
        let rows = self.get(&table_id)?;
        let pc = u32::try_from(vaddr).ok()?;
        let page = pc >> TABLE_PAGE_SHIFT;
        let page_start = page << TABLE_PAGE_SHIFT;
        let first = rows
            .partition_point(|r| r.pc <= page_start)
            .saturating_sub(1);
        let end = rows.partition_point(|r| r.pc >> TABLE_PAGE_SHIFT <= page);
        let extent = rows.get(first..end)?;
        let len = u32::try_from(extent.len()).ok()?;
        let i = find_row(
            len,
            pc,
            &mut |i| extent.get(i as usize).map(|r| r.pc),
            &mut Identity,
        )?;
        extent.get(i as usize).copied()
    }
}

/// The tables exactly as the loader laid them out for the kernel (chunks, pages, extents).
impl RowLookup for InMemoryMaps {
    fn row(&self, table_id: u32, vaddr: u64) -> Option<UnwindRow> {
        self.lookup_row(table_id, vaddr)
    }
}

/// The result of one unwind.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unwound {
    /// Program counters, leaf first; callers' entries are return addresses.
    pub frames: Vec<u64>,
    /// Why the walk ended: [`Stop::Complete`] for a normal end (and when `truncated`).
    pub stop: Stop,
    /// Frames whose caller was recovered by frame pointers: no mapping with a table, no row, or a
    /// [`kind::NO_INFO`] row.
    pub fp_fallback_frames: usize,
    /// The walk stopped at `max_frames`, not at the outermost frame.
    pub truncated: bool,
}

/// Unwinds from `regs` as the BPF program does: per frame, the mapping of the PC, its table row
/// and [`step`]; [`step_frame_pointer`] where no mapping or row covers the PC. `read` reads 8
/// bytes of the target's memory. Stops at the outermost frame, at the first [`Stop`], or after
/// `max_frames` frames.
pub fn unwind(
    arch: u32,
    regs: Regs,
    mappings: &ProcessMappings,
    tables: &impl RowLookup,
    read: &mut impl FnMut(u64) -> Option<u64>,
    max_frames: usize,
) -> Unwound {
    let mut out = Unwound {
        frames: Vec::new(),
        stop: Stop::Complete,
        fp_fallback_frames: 0,
        truncated: false,
    };
    let mut regs = regs;
    while out.frames.len() < max_frames {
        let leaf = out.frames.is_empty();
        out.frames.push(regs.pc);
        let row = find_in(mappings, regs.pc)
            .and_then(|m| tables.row(m.table_id, lookup_address(&m, regs.pc, leaf)));
        let next = match row {
            Some(row) => {
                if row.kind == kind::NO_INFO {
                    out.fp_fallback_frames += 1;
                }
                step(arch, &row, &regs, leaf, read)
            }
            None => {
                out.fp_fallback_frames += 1;
                step_frame_pointer(arch, &regs, read)
            }
        };
        match next {
            Ok(Some(caller)) => regs = caller,
            Ok(None) => return out,
            Err(stop) => {
                out.stop = stop;
                return out;
            }
        }
    }
    out.truncated = true;
    out
}

/// Why a snapshot or a maps text could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("not a stack snapshot: {0}")]
    Snapshot(String),
    #[error("cannot parse the /proc/PID/maps text: {0}")]
    Maps(String),
}

/// A recorded stack: the registers of the interrupted thread and its stack memory from
/// `stack_base` (the stack pointer, usually) upwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StackSnapshot {
    /// One of [`arch`].
    pub arch: u32,
    pub regs: Regs,
    /// Address of `stack[0]` in the recorded process.
    pub stack_base: u64,
    pub stack: Vec<u8>,
}

impl StackSnapshot {
    /// The little-endian 8 bytes at `addr`, if all of them were recorded.
    pub fn read(&self, addr: u64) -> Option<u64> {
        let start = usize::try_from(addr.checked_sub(self.stack_base)?).ok()?;
        let bytes = self.stack.get(start..start.checked_add(8)?)?;
        Some(u64::from_le_bytes(bytes.try_into().ok()?))
    }

    /// [`unwind`] over the recorded memory.
    pub fn unwind(
        &self,
        mappings: &ProcessMappings,
        tables: &impl RowLookup,
        max_frames: usize,
    ) -> Unwound {
        unwind(
            self.arch,
            self.regs,
            mappings,
            tables,
            &mut |addr| self.read(addr),
            max_frames,
        )
    }

    /// A JSON document (addresses and stack bytes in hex), for fixtures.
    pub fn to_json(&self) -> String {
        let hex = |v: u64| format!("{v:#x}");
        let arch = match self.arch {
            arch::X86_64 => "x86_64".to_string(),
            arch::AARCH64 => "aarch64".to_string(),
            other => other.to_string(),
        };
        let doc = serde_json::json!({
            "arch": arch,
            "regs": {
                "pc": hex(self.regs.pc),
                "sp": hex(self.regs.sp),
                "fp": hex(self.regs.fp),
                "lr": hex(self.regs.lr),
            },
            "stack_base": hex(self.stack_base),
            "stack": self.stack.iter().map(|b| format!("{b:02x}")).collect::<String>(),
        });
        serde_json::to_string_pretty(&doc).expect("a JSON value always serialises")
    }

    /// Reads what [`StackSnapshot::to_json`] wrote.
    pub fn from_json(text: &str) -> Result<Self, ReplayError> {
        let bad = |what: &str| ReplayError::Snapshot(what.to_string());
        let doc: serde_json::Value =
            serde_json::from_str(text).map_err(|e| ReplayError::Snapshot(e.to_string()))?;
        let string = |v: &serde_json::Value, name: &str| -> Result<String, ReplayError> {
            v.get(name)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("`{name}` is missing or not a string")))
        };
        let address = |v: &serde_json::Value, name: &str| -> Result<u64, ReplayError> {
            let text = string(v, name)?;
            let digits = text.strip_prefix("0x").unwrap_or(&text);
            u64::from_str_radix(digits, 16)
                .map_err(|_| bad(&format!("`{name}` is not a hex address: {text}")))
        };
        let arch = match string(&doc, "arch")?.as_str() {
            "x86_64" => arch::X86_64,
            "aarch64" => arch::AARCH64,
            other => return Err(bad(&format!("unknown arch `{other}`"))),
        };
        let regs = doc.get("regs").ok_or_else(|| bad("`regs` is missing"))?;
        let stack_hex = string(&doc, "stack")?;
        let stack = (0..stack_hex.len())
            .step_by(2)
            .map(|i| {
                stack_hex
                    .get(i..i + 2)
                    .and_then(|byte| u8::from_str_radix(byte, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| bad("`stack` is not hex bytes"))?;
        Ok(Self {
            arch,
            regs: Regs {
                pc: address(regs, "pc")?,
                sp: address(regs, "sp")?,
                fp: address(regs, "fp")?,
                lr: address(regs, "lr")?,
            },
            stack_base: address(&doc, "stack_base")?,
            stack,
        })
    }
}

/// An object's unwind table and its ELF bytes, for [`process_mappings`].
#[derive(Clone, Copy, Debug)]
pub struct ObjectTable<'a> {
    pub table_id: u32,
    pub elf: &'a [u8],
}

/// The [`ProcessMappings`] for a `/proc/PID/maps` text: one entry per executable file mapping
/// whose object `object(path)` knows, with its load bias. Mappings without a known object or
/// bias are left out (they unwind by frame pointers), as are those past
/// [`profiler_common::unwind::MAX_MAPPINGS`] in address order.
pub fn process_mappings<'a>(
    maps: &str,
    object: impl Fn(&Path) -> Option<ObjectTable<'a>>,
) -> Result<ProcessMappings, ReplayError> {
    let (maps, bad) = crate::maps::parse(maps);
    if maps.is_empty() && bad > 0 {
        return Err(ReplayError::Maps(format!("none of {bad} lines parses")));
    }
    let mut found: Vec<Mapping> = maps
        .iter()
        .filter(|m| m.executable)
        .filter_map(|m| {
            let crate::maps::MapPath::File(path) = &m.path else {
                return None;
            };
            let table = object(Path::new(path))?;
            let (start, end) = (m.start, m.end);
            Some(Mapping {
                start,
                end,
                bias: crate::elf::load_bias_in(table.elf, start, m.offset)?,
                table_id: table.table_id,
                _pad: 0,
            })
        })
        .collect();
    found.sort_by_key(|m| m.start);
    let mut out = ProcessMappings::default();
    for (slot, mapping) in out.mappings.iter_mut().zip(found) {
        *slot = mapping;
        out.len += 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::testing::{R, RX, elf_with_segments};
    use profiler_common::unwind::{MAX_MAPPINGS, TABLE_PAGE_BYTES};

    fn row(pc: u32, kind: u8, cfa_offset: i16, fp_offset: i16) -> UnwindRow {
        UnwindRow {
            pc,
            kind,
            _pad: 0,
            cfa_offset,
            fp_offset,
            ra_offset: -8,
        }
    }

    fn mappings(list: &[Mapping]) -> ProcessMappings {
        let mut out = ProcessMappings::default();
        out.mappings[..list.len()].copy_from_slice(list);
        out.len = list.len() as u32;
        out
    }

    /// A snapshot whose stack holds `words` from `base` up.
    fn snapshot(regs: Regs, base: u64, words: &[u64]) -> StackSnapshot {
        StackSnapshot {
            arch: arch::X86_64,
            regs,
            stack_base: base,
            stack: words.iter().flat_map(|w| w.to_le_bytes()).collect(),
        }
    }

    const BIAS: u64 = 0x5555_0000_0000;

    /// One object at BIAS with three functions (object addresses):
    /// - leaf   0x1000..0x1100: after `sub rsp, 24`: CFA = rsp + 32 from 0x1008
    /// - middle 0x1100..0x1200: after `push rbp`: CFA = rsp + 16, rbp at CFA - 16 from 0x1101
    /// - start  0x1200..0x1300: `_start`, the outermost frame
    ///
    /// then a gap without CFI from 0x1300.
    fn object() -> (ProcessMappings, BTreeMap<u32, Vec<UnwindRow>>) {
        let rows = vec![
            row(0x1000, kind::CFA_SP, 8, 0),
            row(0x1008, kind::CFA_SP, 32, 0),
            row(0x1100, kind::CFA_SP, 8, 0),
            row(0x1101, kind::CFA_SP, 16, -16),
            row(0x1200, kind::END, 0, 0),
            row(0x1300, kind::NO_INFO, 0, 0),
        ];
        let mapping = Mapping {
            start: BIAS + 0x1000,
            end: BIAS + 0x2000,
            bias: BIAS,
            table_id: 7,
            _pad: 0,
        };
        (mappings(&[mapping]), BTreeMap::from([(7, rows)]))
    }

    #[test]
    fn row_lookup_returns_the_last_row_at_or_before_the_address() {
        let (_, tables) = object();
        let kind_at = |vaddr| tables.row(7, vaddr).map(|r| (r.pc, r.kind));
        assert_eq!(kind_at(0xfff), None, "before the first row");
        assert_eq!(kind_at(0x1000), Some((0x1000, kind::CFA_SP)));
        assert_eq!(kind_at(0x10ff), Some((0x1008, kind::CFA_SP)));
        assert_eq!(kind_at(0x1250), Some((0x1200, kind::END)));
        assert_eq!(kind_at(0x9999), Some((0x1300, kind::NO_INFO)));
        assert_eq!(tables.row(8, 0x1000), None, "unknown table");
        assert_eq!(
            tables.row(7, 1 << 32),
            None,
            "beyond the 32-bit row addresses"
        );
    }

    #[test]
    fn row_lookup_carries_a_row_across_page_boundaries() {
        let page = TABLE_PAGE_BYTES as u32;
        let rows = vec![
            row(page - 0x10, kind::CFA_SP, 16, 0),
            row(3 * page + 4, kind::CFA_SP, 24, 0),
        ];
        let tables = BTreeMap::from([(1, rows)]);
        let offset_at = |vaddr: u32| tables.row(1, vaddr.into()).map(|r| r.cfa_offset);
        assert_eq!(offset_at(page), Some(16), "in force at the page start");
        assert_eq!(offset_at(3 * page + 3), Some(16), "two pages without rows");
        assert_eq!(offset_at(3 * page + 4), Some(24));
        assert_eq!(offset_at(u32::MAX), Some(24));
    }

    #[test]
    fn row_lookup_finds_rows_in_tables_larger_than_one_search_covers() {
        // 300,000 rows: more than find_row's bounded search reaches without paging.
        let rows: Vec<UnwindRow> = (0..300_000u32)
            .map(|i| row(i * 4, kind::CFA_SP, (i % 1000) as i16, 0))
            .collect();
        let tables = BTreeMap::from([(1, rows)]);
        for i in [0u32, 1, 65_535, 131_072, 299_999] {
            assert_eq!(
                tables.row(1, u64::from(i * 4 + 3)).map(|r| r.pc),
                Some(i * 4)
            );
        }
    }

    #[test]
    fn unwinds_by_table_rows_to_the_outermost_frame() {
        let (mappings, tables) = object();
        let sp = 0x7ff0_0000_1000;
        // leaf frame: 24 bytes of locals, then the return address into middle (after push rbp).
        // middle frame: saved rbp, then the return address into start.
        let words = [0, 0, 0, BIAS + 0x1150, 0xfeed, BIAS + 0x1280];
        let regs = Regs {
            pc: BIAS + 0x1010,
            sp,
            fp: 0x1234,
            lr: 0,
        };
        let unwound = snapshot(regs, sp, &words).unwind(&mappings, &tables, 64);
        assert_eq!(
            unwound,
            Unwound {
                frames: vec![BIAS + 0x1010, BIAS + 0x1150, BIAS + 0x1280],
                stop: Stop::Complete,
                fp_fallback_frames: 0,
                truncated: false,
            }
        );
    }

    #[test]
    fn looks_callers_up_at_the_call_instruction() {
        // A return address just past the end of `leaf` (a noreturn call as its last instruction)
        // belongs to leaf, not to middle whose rows start there.
        let (mappings, tables) = object();
        let sp = 0x7ff0_0000_1000;
        let regs = Regs {
            pc: BIAS + 0x1010,
            sp,
            fp: 0,
            lr: 0,
        };
        // leaf returns to 0x1100 (leaf's rule: CFA = rsp + 32), which must unwind as leaf again.
        let words = [0, 0, 0, BIAS + 0x1100, 0, 0, 0, BIAS + 0x1280];
        let unwound = snapshot(regs, sp, &words).unwind(&mappings, &tables, 64);
        assert_eq!(
            unwound.frames,
            vec![BIAS + 0x1010, BIAS + 0x1100, BIAS + 0x1280]
        );
        assert_eq!(unwound.stop, Stop::Complete);
    }

    #[test]
    fn falls_back_to_frame_pointers_without_mapping_or_cfi() {
        let (mappings, tables) = object();
        let sp = 0x7ff0_0000_1000;
        // JIT code (no mapping) with a frame record at sp + 16 → a PC in the CFI gap of the object
        // (NO_INFO, frame record at sp + 48) → start.
        let words = [
            0,
            0,
            sp + 48,       // [sp + 16] caller's rbp
            BIAS + 0x1400, // [sp + 24] return address into the gap
            0,
            0,
            0xdead,        // [sp + 48] caller's rbp
            BIAS + 0x1280, // [sp + 56] return address into start
        ];
        let regs = Regs {
            pc: 0x1000_0000,
            sp,
            fp: sp + 16,
            lr: 0,
        };
        let unwound = snapshot(regs, sp, &words).unwind(&mappings, &tables, 64);
        assert_eq!(
            unwound,
            Unwound {
                frames: vec![0x1000_0000, BIAS + 0x1400, BIAS + 0x1280],
                stop: Stop::Complete,
                fp_fallback_frames: 2,
                truncated: false,
            }
        );
    }

    #[test]
    fn stops_after_max_frames() {
        // A frame-pointer chain longer than the limit.
        let sp = 0x7ff0_0000_1000;
        let words: Vec<u64> = (0..20u64)
            .flat_map(|i| [sp + 16 * (i + 1), 0x4000 + i])
            .collect();
        let regs = Regs {
            pc: 0x3000,
            sp,
            fp: sp,
            lr: 0,
        };
        let tables = BTreeMap::new();
        let unwound = snapshot(regs, sp, &words).unwind(&ProcessMappings::default(), &tables, 4);
        assert_eq!(unwound.frames, vec![0x3000, 0x4000, 0x4001, 0x4002]);
        assert!(unwound.truncated);
        assert_eq!(unwound.stop, Stop::Complete);
        assert_eq!(unwound.fp_fallback_frames, 4);
    }

    #[test]
    fn reports_why_an_unwind_broke_off() {
        let (mappings, mut tables) = object();
        let sp = 0x7ff0_0000_1000;
        let regs = Regs {
            pc: BIAS + 0x1010,
            sp,
            fp: 0,
            lr: 0,
        };
        // The return address lies beyond the recorded bytes.
        let short = snapshot(regs, sp, &[0, 0, 0]);
        let unwound = short.unwind(&mappings, &tables, 64);
        assert_eq!((unwound.frames.len(), unwound.stop), (1, Stop::ReadFault));
        // CFI we cannot follow.
        tables.get_mut(&7).unwrap()[1].kind = kind::UNSUPPORTED;
        let unwound = snapshot(regs, sp, &[0; 8]).unwind(&mappings, &tables, 64);
        assert_eq!(unwound.stop, Stop::Unsupported);
    }

    #[test]
    fn snapshot_reads_little_endian_words_inside_the_recording_only() {
        let snap = snapshot(Regs::default(), 0x1000, &[0x0807_0605_0403_0201, 0x10]);
        assert_eq!(snap.read(0x1000), Some(0x0807_0605_0403_0201));
        assert_eq!(snap.read(0x1001), Some(0x1008_0706_0504_0302));
        assert_eq!(snap.read(0x1008), Some(0x10));
        assert_eq!(snap.read(0x1009), None, "runs past the end");
        assert_eq!(snap.read(0xfff), None, "below the base");
        assert_eq!(snap.read(u64::MAX), None);
    }

    #[test]
    fn snapshot_round_trips_through_json() {
        let snap = StackSnapshot {
            arch: arch::AARCH64,
            regs: Regs {
                pc: 0xffff_8000_1234,
                sp: 0x7ff0_0000_1000,
                fp: 0x7ff0_0000_1040,
                lr: 0x4000,
            },
            stack_base: 0x7ff0_0000_1000,
            stack: (0..=255u8).collect(),
        };
        let json = snap.to_json();
        assert!(json.contains("\"pc\": \"0xffff80001234\""), "{json}");
        assert_eq!(StackSnapshot::from_json(&json).unwrap(), snap);
    }

    #[test]
    fn snapshot_json_errors_name_the_bad_field() {
        let good = snapshot(Regs::default(), 0x1000, &[1]).to_json();
        for (from, to, needle) in [
            ("\"x86_64\"", "\"sparc\"", "unknown arch"),
            (
                "\"stack_base\": \"0x1000\"",
                "\"stack_base\": \"zz\"",
                "stack_base",
            ),
            ("0100000000000000", "010", "`stack` is not hex"),
            ("\"fp\"", "\"frame\"", "`fp` is missing"),
        ] {
            let bad = good.replace(from, to);
            assert_ne!(bad, good, "{from} is in the document");
            let err = StackSnapshot::from_json(&bad).unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
        assert!(StackSnapshot::from_json("{").is_err());
    }

    #[test]
    fn process_mappings_from_maps_text() {
        let elf = elf_with_segments(&[
            (0, 0, 0x600, R, 0x1000),
            (0x1000, 0x1000, 0x3000, RX, 0x1000),
        ]);
        let maps = "\
55d0c0000000-55d0c0001000 r--p 00000000 08:01 100 /usr/bin/app
55d0c0001000-55d0c0004000 r-xp 00001000 08:01 100 /usr/bin/app
55d0c0004000-55d0c0005000 rw-p 00004000 08:01 100 /usr/bin/app
7f0000000000-7f0000001000 r--p 00000000 08:01 200 /usr/lib/libc.so.6
7f0000001000-7f0000004000 r-xp 00001000 08:01 200 /usr/lib/libc.so.6
7f1000000000-7f1000001000 r-xp 00000000 08:01 300 /usr/lib/libunknown.so
7f2000000000-7f2000001000 rwxp 00000000 00:00 0 
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]
7ffc00100000-7ffc00102000 r-xp 00000000 00:00 0                          [vdso]
";
        let pm = process_mappings(maps, |path| match path.to_str()? {
            "/usr/bin/app" => Some(ObjectTable {
                table_id: 1,
                elf: &elf,
            }),
            "/usr/lib/libc.so.6" => Some(ObjectTable {
                table_id: 2,
                elf: &elf,
            }),
            _ => None,
        })
        .unwrap();
        assert_eq!(pm.len, 2);
        assert_eq!(
            &pm.mappings[..2],
            &[
                Mapping {
                    start: 0x55d0_c000_1000,
                    end: 0x55d0_c000_4000,
                    bias: 0x55d0_c000_0000,
                    table_id: 1,
                    _pad: 0
                },
                Mapping {
                    start: 0x7f00_0000_1000,
                    end: 0x7f00_0000_4000,
                    bias: 0x7f00_0000_0000,
                    table_id: 2,
                    _pad: 0
                },
            ]
        );
        assert!(process_mappings("not maps", |_| None).is_err());
    }

    #[test]
    fn process_mappings_keep_the_first_max_mappings() {
        let elf = elf_with_segments(&[(0, 0, 0x1000, RX, 0x1000)]);
        let maps: String = (0..MAX_MAPPINGS as u64 + 5)
            .map(|i| {
                let start = 0x7f00_0000_0000 + i * 0x1000;
                format!(
                    "{start:x}-{:x} r-xp 00000000 08:01 {i} /lib/l{i}.so\n",
                    start + 0x1000
                )
            })
            .collect();
        let pm = process_mappings(&maps, |_| {
            Some(ObjectTable {
                table_id: 1,
                elf: &elf,
            })
        })
        .unwrap();
        assert_eq!(pm.len as usize, MAX_MAPPINGS);
        assert_eq!(pm.mappings[0].start, 0x7f00_0000_0000);
        assert_eq!(find_in(&pm, 0x7f00_0000_0000 + 200 * 0x1000), None);
    }
}
