//! Load biases from ELF program headers: `elf::executable_segments` + `elf::load_bias` (the one
//! rule the loader and the replay tests use), on any bytes. Input: mapping start (8 bytes, LE),
//! file offset (8 bytes, LE), then the ELF file. Never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profiler_agent::elf;

fuzz_target!(|data: &[u8]| {
    let Some((numbers, bytes)) = data.split_at_checked(16) else {
        return;
    };
    let start = u64::from_le_bytes(numbers[..8].try_into().unwrap());
    let offset = u64::from_le_bytes(numbers[8..].try_into().unwrap());
    let segments = elf::executable_segments(bytes);
    let _ = elf::load_bias(&segments, start, offset);
    let _ = elf::load_bias_in(bytes, start, offset);
});
