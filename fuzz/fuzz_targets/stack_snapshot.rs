//! `unwind::replay::StackSnapshot::from_json`: any text. Never panics; what it reads writes back
//! to the same snapshot, and unwinds (by frame pointers) within bounds.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use profiler_agent::unwind::replay::StackSnapshot;
use profiler_common::unwind::{MAX_UNWOUND_FRAMES, ProcessMappings, Stop, UnwindRow};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(snapshot) = StackSnapshot::from_json(text) else {
        return;
    };
    let again = StackSnapshot::from_json(&snapshot.to_json()).expect("to_json reads back");
    assert_eq!(again, snapshot);
    let tables: BTreeMap<u32, Vec<UnwindRow>> = BTreeMap::new();
    let unwound = snapshot.unwind(&ProcessMappings::default(), &tables, MAX_UNWOUND_FRAMES);
    assert!(!unwound.frames.is_empty() && unwound.frames.len() <= MAX_UNWOUND_FRAMES);
    assert_eq!(unwound.frames[0], snapshot.regs.pc);
    assert_eq!(unwound.fp_fallback_frames, unwound.frames.len());
    if unwound.truncated {
        assert_eq!(unwound.frames.len(), MAX_UNWOUND_FRAMES);
        assert_eq!(unwound.stop, Stop::Complete);
    }
});
