use super::*;

/// One function of a synthetic table: name, entry (offset from the text start), size, and its
/// pc-value tables as `(end offset, value)` runs.
pub(crate) struct SynthFunc {
    pub name: &'static str,
    pub entry: u32,
    pub size: u32,
    pub sp: Vec<(u32, i32)>,
    pub line: Vec<(u32, i32)>,
    pub flag: u8,
}

pub(crate) const TEXT_START: u64 = 0x40_1000;

fn varint(out: &mut Vec<u8>, mut v: u32) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A pc-value table: Go's zig-zag value deltas and pc deltas (quantum 1), 0-terminated.
fn pcvalue(out: &mut Vec<u8>, runs: &[(u32, i32)]) {
    let (mut pc, mut value) = (0u32, -1i32);
    for &(end, v) in runs {
        let delta = v - value;
        let zigzag = ((delta << 1) ^ (delta >> 31)) as u32;
        varint(out, zigzag);
        varint(out, end - pc);
        pc = end;
        value = v;
    }
    out.push(0);
}

/// A Go 1.20-layout table (magic 0xfffffff1, quantum 1, 8-byte pointers) with one file,
/// `main.go`, for every function.
pub(crate) fn synth_table(funcs: &[SynthFunc]) -> Vec<u8> {
    let mut names = Vec::new();
    let mut name_offs = Vec::new();
    for f in funcs {
        name_offs.push(names.len() as u32);
        names.extend_from_slice(f.name.as_bytes());
        names.push(0);
    }
    let cutab: Vec<u8> = 0u32.to_le_bytes().to_vec();
    let filetab = b"main.go\0".to_vec();
    // pctab starts with a zero byte so no table sits at offset 0 (which means "none").
    let mut pctab = vec![0u8];
    let mut tables = Vec::new();
    for f in funcs {
        let sp = pctab.len() as u32;
        pcvalue(&mut pctab, &f.sp);
        let file = pctab.len() as u32;
        pcvalue(&mut pctab, &[(f.size, 0)]);
        let line = pctab.len() as u32;
        pcvalue(&mut pctab, &f.line);
        tables.push((sp, file, line));
    }
    let nfunc = funcs.len() as u64;
    let functab_bytes = (nfunc + 1) * 8;
    let mut pcln = vec![0u8; functab_bytes as usize];
    for (i, f) in funcs.iter().enumerate() {
        let off = pcln.len() as u32;
        pcln[i * 8..i * 8 + 4].copy_from_slice(&f.entry.to_le_bytes());
        pcln[i * 8 + 4..i * 8 + 8].copy_from_slice(&off.to_le_bytes());
        let (sp, file, line) = tables[i];
        for word in [f.entry, name_offs[i], 0, 0, sp, file, line, 0, 0, 1] {
            pcln.extend_from_slice(&word.to_le_bytes());
        }
        pcln.extend_from_slice(&[0, f.flag, 0, 0]);
    }
    let last = funcs.last().map_or(0, |f| f.entry + f.size);
    let n = nfunc as usize;
    pcln[n * 8..n * 8 + 4].copy_from_slice(&last.to_le_bytes());
    let mut out = Vec::new();
    out.extend_from_slice(&0xffff_fff1u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 1, 8]);
    let funcnames = 72u64;
    let cu = funcnames + names.len() as u64;
    let files = cu + cutab.len() as u64;
    let pct = files + filetab.len() as u64;
    let pcl = pct + pctab.len() as u64;
    for word in [nfunc, 1, TEXT_START, funcnames, cu, files, pct, pcl] {
        out.extend_from_slice(&word.to_le_bytes());
    }
    for part in [&names, &cutab, &filetab, &pctab, &pcln] {
        out.extend_from_slice(part);
    }
    out
}

pub(crate) fn sample_funcs() -> Vec<SynthFunc> {
    vec![
        SynthFunc {
            name: "runtime.goexit",
            entry: 0,
            size: 0x10,
            sp: vec![(0x10, 0)],
            line: vec![(0x10, 1595)],
            flag: FLAG_TOPFRAME,
        },
        SynthFunc {
            name: "main.leafWork",
            entry: 0x10,
            size: 0x40,
            sp: vec![(0x40, 0)],
            line: vec![(0x8, 8), (0x40, 9)],
            flag: 0,
        },
        SynthFunc {
            name: "main.hotA",
            entry: 0x50,
            size: 0x30,
            sp: vec![(0x0a, 0), (0x27, 16), (0x30, 0)],
            line: vec![(0x30, 15)],
            flag: 0,
        },
    ]
}

fn open(data: &[u8]) -> Table<&[u8]> {
    Table::open(data, Layout::whole(data.len() as u64)).expect("a valid table")
}

#[test]
fn functions_are_found_by_address_with_their_names_and_lines() {
    let data = synth_table(&sample_funcs());
    let mut t = open(&data);
    assert_eq!(t.version(), Version::Go120);
    assert_eq!(t.len(), 3);
    assert_eq!(t.text_range(), Some((TEXT_START, TEXT_START + 0x80)));
    assert_eq!(t.find(TEXT_START - 1), None);
    assert_eq!(t.find(TEXT_START + 0x80), None);
    let i = t.find(TEXT_START + 0x18).unwrap();
    let f = t.func(i).unwrap();
    assert_eq!((f.entry, f.end), (TEXT_START + 0x10, TEXT_START + 0x50));
    let frames = t.frames(&f, TEXT_START + 0x18);
    assert_eq!(
        frames,
        [GoFrame {
            function: "main.leafWork".into(),
            file: Some("main.go".into()),
            line: Some(9),
        }]
    );
    let i = t.find(TEXT_START).unwrap();
    let f = t.func(i).unwrap();
    assert_eq!(f.flag, FLAG_TOPFRAME);
}

#[test]
fn stack_pointer_deltas_come_as_ranges() {
    let data = synth_table(&sample_funcs());
    let mut t = open(&data);
    let f = t.func(2).unwrap();
    let mut ranges = Vec::new();
    t.sp_deltas(&f, &mut |s, e, v| {
        ranges.push((s - f.entry, e - f.entry, v));
        true
    })
    .unwrap();
    assert_eq!(ranges, [(0, 0x0a, 0), (0x0a, 0x27, 16), (0x27, 0x30, 0)]);
    assert_eq!(t.pc_value(&f, f.pcsp, f.entry + 0x10), Some(16));
}

#[test]
fn old_and_unknown_layouts_are_refused_with_a_reason() {
    let mut data = synth_table(&sample_funcs());
    data[..4].copy_from_slice(&0xffff_fffbu32.to_le_bytes());
    assert_eq!(
        Table::open(&data[..], Layout::whole(data.len() as u64)).err(),
        Some(GoError::TooOld)
    );
    data[..4].copy_from_slice(&0x1234_5678u32.to_le_bytes());
    assert_eq!(
        Table::open(&data[..], Layout::whole(data.len() as u64)).err(),
        Some(GoError::UnknownMagic(0x1234_5678))
    );
    let mut data = synth_table(&sample_funcs());
    data[7] = 4;
    assert_eq!(
        Table::open(&data[..], Layout::whole(data.len() as u64)).err(),
        Some(GoError::PointerSize(4))
    );
}

#[test]
fn a_truncated_or_corrupt_table_yields_nothing_wrong_and_never_panics() {
    let good = synth_table(&sample_funcs());
    // Every truncation: either refused at open, or lookups return nothing or the right thing.
    for len in 0..good.len() {
        let data = &good[..len];
        let Ok(mut t) = Table::open(data, Layout::whole(len as u64)) else {
            continue;
        };
        for pc in TEXT_START - 1..TEXT_START + 0x81 {
            if let Some(i) = t.find(pc)
                && let Some(f) = t.func(i)
            {
                for frame in t.frames(&f, pc) {
                    assert!(!frame.function.is_empty());
                }
                t.sp_deltas(&f, &mut |_, _, _| true);
            }
        }
    }
    // Every single-byte corruption of the bytes after the header.
    for at in 72..good.len() {
        for value in [0x00, 0x7f, 0x80, 0xff] {
            let mut data = good.clone();
            data[at] = value;
            let Ok(mut t) = Table::open(&data[..], Layout::whole(data.len() as u64)) else {
                continue;
            };
            for pc in [TEXT_START, TEXT_START + 0x18, TEXT_START + 0x60] {
                if let Some(i) = t.find(pc)
                    && let Some(f) = t.func(i)
                {
                    let _ = t.frames(&f, pc);
                    let _ = t.sp_deltas(&f, &mut |s, e, _| {
                        assert!(s < e && e <= f.end);
                        true
                    });
                }
            }
        }
    }
}

#[test]
fn a_block_file_reads_across_blocks_and_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bytes");
    let data: Vec<u8> = (0..(BLOCK_BYTES * 3 + 100))
        .map(|i| (i % 251) as u8)
        .collect();
    std::fs::write(&path, &data).unwrap();
    let mut f = BlockFile::new(std::fs::File::open(&path).unwrap());
    let mut buf = vec![0u8; BLOCK_BYTES + 10];
    assert!(f.read_at(BLOCK_BYTES as u64 - 5, &mut buf));
    assert_eq!(buf, data[BLOCK_BYTES - 5..2 * BLOCK_BYTES + 5]);
    let mut tail = [0u8; 100];
    assert!(f.read_at((BLOCK_BYTES * 3) as u64, &mut tail));
    assert!(
        !f.read_at((BLOCK_BYTES * 3) as u64 + 1, &mut tail),
        "past the end"
    );
    for block in 0..(MAX_CACHED_BLOCKS as u64 + 10) {
        let _ = f.read_at(block * BLOCK_BYTES as u64, &mut [0u8; 1]);
        assert!(f.cached_blocks() <= MAX_CACHED_BLOCKS);
    }
}

#[test]
fn every_layout_of_the_fuzz_seeds_decodes_the_same_functions() {
    // fuzz/make_seeds.py writes the same three functions in the Go 1.16, 1.18 and 1.20 layouts,
    // with its own encoder.
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/gopclntab");
    for (seed, version) in [
        ("go1.16", Version::Go116),
        ("go1.18", Version::Go118),
        ("go1.20", Version::Go120),
    ] {
        let data = std::fs::read(dir.join(seed)).unwrap();
        let mut t = Table::open(&data[..], Layout::whole(data.len() as u64)).unwrap();
        assert_eq!(t.version(), version, "{seed}");
        let names: Vec<String> = (0..t.len())
            .map(|i| {
                let f = t.func(i).unwrap();
                t.name(&f).unwrap()
            })
            .collect();
        assert_eq!(
            names,
            ["runtime.goexit", "main.leafWork", "main.hotA"],
            "{seed}"
        );
        let i = t.find(TEXT_START + 0x60).unwrap();
        let f = t.func(i).unwrap();
        assert_eq!(f.flag, 0);
        assert_eq!(
            t.pc_value(&f, f.pcsp, TEXT_START + 0x60),
            Some(16),
            "{seed}"
        );
        assert_eq!(
            t.frames(&f, TEXT_START + 0x60),
            [GoFrame {
                function: "main.hotA".into(),
                file: Some("main.go".into()),
                line: Some(15),
            }],
            "{seed}"
        );
        let goexit = t.func(0).unwrap();
        assert_eq!(goexit.flag, FLAG_TOPFRAME, "{seed}");
    }
}
