//! `unwind::loader::ChunkAllocator` under any sequence of allocations and releases, against a
//! model that tracks every chunk: allocations never overlap and stay in range, the free total
//! is exact, and each allocation is first fit over the (fully coalesced) free runs.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use profiler_agent::unwind::loader::ChunkAllocator;

#[derive(Arbitrary, Debug)]
enum Op {
    /// Allocate this many chunks (at least 1: the loader never asks for 0).
    Allocate(u16),
    /// Release the live allocation with this index (modulo their number).
    Release(u16),
}

#[derive(Arbitrary, Debug)]
struct Input {
    chunks: u16,
    ops: Vec<Op>,
}

/// Start of the first run of at least `len` free chunks.
fn first_fit(free: &[bool], len: usize) -> Option<usize> {
    let mut run = 0;
    for (i, &is_free) in free.iter().enumerate() {
        run = if is_free { run + 1 } else { 0 };
        if run == len {
            return Some(i + 1 - len);
        }
    }
    None
}

fuzz_target!(|input: Input| {
    let total = usize::from(input.chunks % 512) + 1;
    let mut allocator = ChunkAllocator::new(total as u32);
    let mut free = vec![true; total];
    let mut live: Vec<(usize, usize)> = Vec::new();
    for op in &input.ops {
        match *op {
            Op::Allocate(len) => {
                let len = usize::from(len) % (total + 8) + 1;
                let got = allocator.allocate(len as u32).map(|s| s as usize);
                assert_eq!(got, first_fit(&free, len), "allocate({len}) after {live:?}");
                if let Some(start) = got {
                    assert!(start + len <= total);
                    for chunk in &mut free[start..start + len] {
                        assert!(*chunk, "chunk handed out twice");
                        *chunk = false;
                    }
                    live.push((start, len));
                }
            }
            Op::Release(i) => {
                if live.is_empty() {
                    continue;
                }
                let (start, len) = live.swap_remove(usize::from(i) % live.len());
                allocator.release(start as u32, len as u32);
                free[start..start + len].fill(true);
            }
        }
        let expected = free.iter().filter(|f| **f).count();
        assert_eq!(allocator.free_chunks() as usize, expected);
    }
});
