//! Load biases from ELF program headers: `unwind::replay::load_bias` and the loader's
//! `executable_segments` + `load_bias`, on any bytes. Input: mapping start (8 bytes, LE), file
//! offset (8 bytes, LE), then the ELF file. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profiler_agent::unwind::{loader, replay};

fuzz_target!(|data: &[u8]| {
    let Some((numbers, elf)) = data.split_at_checked(16) else {
        return;
    };
    let start = u64::from_le_bytes(numbers[..8].try_into().unwrap());
    let offset = u64::from_le_bytes(numbers[8..].try_into().unwrap());
    let _ = replay::load_bias(elf, start, offset);
    let segments = loader::executable_segments(elf);
    let _ = loader::load_bias(&segments, start, offset);
});
