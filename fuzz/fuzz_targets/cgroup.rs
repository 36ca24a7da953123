//! `resource::container_id_from_cgroup` and `pod_uid_from_cgroup`: any text as `/proc/PID/cgroup`.
//! Never panics; an id it finds is a 64-digit lowercase hex id taken from the text, a pod uid a
//! UUID or 32 hex digits taken from a `kubepods` path (systemd spells its dashes `_`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use profiler_agent::resource::{container_id_from_cgroup, pod_uid_from_cgroup};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if let Some(id) = container_id_from_cgroup(text) {
        assert_eq!(id.len(), 64, "{id:?}");
        assert!(id.bytes().all(hex), "{id:?}");
        assert!(text.contains(&id));
    }
    if let Some(uid) = pod_uid_from_cgroup(text) {
        assert!(text.contains("kubepods"), "{uid:?}");
        assert!(matches!(uid.len(), 32 | 36), "{uid:?}");
        assert!(uid.bytes().all(|b| hex(b) || b == b'-'), "{uid:?}");
        assert!(
            text.contains(&uid) || text.contains(&uid.replace('-', "_")),
            "{uid:?}"
        );
    }
});
