//! `resource::container_id_from_cgroup`: any text as `/proc/PID/cgroup`. Never panics; an id it
//! finds is a 64-digit lowercase hex id taken from the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use profiler_agent::resource::container_id_from_cgroup;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(id) = container_id_from_cgroup(text) {
        assert_eq!(id.len(), 64, "{id:?}");
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{id:?}"
        );
        assert!(text.contains(&id));
    }
});
