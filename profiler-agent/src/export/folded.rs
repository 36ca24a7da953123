//! Folded stacks (Brendan Gregg's format): one line per distinct stack, frames root first joined
//! by `;`, a space, the count. Kernel frames follow the user frames and carry a `_[k]` suffix.
use std::collections::BTreeMap;
use std::io::{self, Write};

use crate::profile::{LocationKind, Profile};

/// Root-first frame names of every sample, summed per distinct line (sorted, so output is stable).
/// Node-wide (or whenever several processes are in it), each stack starts with the process name.
pub fn lines(profile: &Profile) -> BTreeMap<String, u64> {
    let prefix_process = profile.node_wide || profile.processes.len() > 1;
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    let mut line = String::new();
    for sample in &profile.samples {
        line.clear();
        if prefix_process {
            line.push_str(&sanitize(&profile.processes[sample.process].name));
        }
        for &loc in sample.locations.iter().rev() {
            let location = &profile.locations[loc];
            // Innermost-first frames: the outer function comes first in root-first order.
            for frame in location.frames.iter().rev() {
                if !line.is_empty() {
                    line.push(';');
                }
                line.push_str(&sanitize(&frame.function));
                if location.kind == LocationKind::Kernel {
                    line.push_str("_[k]");
                }
            }
        }
        if line.is_empty() {
            line.push_str("[no stack]");
        }
        *out.entry(line.clone()).or_default() += sample.count;
    }
    out
}

/// `;` separates frames and the last space separates the count: neither may appear in a name.
fn sanitize(name: &str) -> String {
    name.replace(';', ":").replace(['\n', '\r'], " ")
}

pub fn write(profile: &Profile, out: &mut dyn Write) -> io::Result<()> {
    for (line, count) in lines(profile) {
        writeln!(out, "{line} {count}")?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::profile::{Location, MappingInfo, ProcessMeta, Sample};
    use crate::symbolize::{Frame, FrameKind, Frames};
    use crate::types::{FileOffset, Pid, VirtAddr};

    fn frames(names: &[&str]) -> Frames {
        names
            .iter()
            .map(|n| Frame {
                function: Arc::from(*n),
                file: Some(Arc::from("w.c")),
                line: Some(7),
                kind: FrameKind::Native,
            })
            .collect()
    }

    /// A small profile: main → outer → {hot_a ×3 (one inlined helper), hot_b ×1 into the kernel}.
    pub fn sample_profile() -> Profile {
        let loc = |addr: u64, names: &[&str], kind: LocationKind, mapping: usize| Location {
            address: VirtAddr(addr),
            mapping: Some(mapping),
            frames: frames(names),
            kind,
            symbolized: true,
        };
        Profile {
            start: SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            duration: Duration::from_secs(10),
            period_ns: 10_101_010,
            title: "test".into(),
            node_wide: false,
            processes: vec![ProcessMeta {
                pid: Pid(42),
                name: "work".into(),
                exe: Some("/bin/work".into()),
                cmdline: vec!["work".into()],
            }],
            mappings: vec![
                MappingInfo {
                    start: VirtAddr(0x1000),
                    end: VirtAddr(0x9000),
                    offset: FileOffset(0),
                    path: "/bin/work".into(),
                    build_id: Some(crate::types::BuildId(vec![0xab, 0xcd])),
                    go_build_id: None,
                    kernel: false,
                },
                MappingInfo::kernel(),
            ],
            locations: vec![
                loc(0x1100, &["main"], LocationKind::User, 0),
                loc(0x1200, &["outer"], LocationKind::User, 0),
                loc(0x1300, &["helper", "hot_a"], LocationKind::User, 0),
                loc(0x1400, &["hot_b"], LocationKind::User, 0),
                loc(
                    0xffff_8000_0000_1000,
                    &["do_syscall_64"],
                    LocationKind::Kernel,
                    1,
                ),
            ],
            samples: vec![
                Sample {
                    process: 0,
                    thread: Some(Arc::from("work")),
                    locations: vec![2, 1, 0],
                    count: 3,
                },
                Sample {
                    process: 0,
                    thread: Some(Arc::from("work")),
                    locations: vec![4, 3, 1, 0],
                    count: 1,
                },
            ],
        }
    }

    #[test]
    fn frames_are_root_first_with_inlined_and_kernel_frames() {
        let mut out = Vec::new();
        write(&sample_profile(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "main;outer;hot_a;helper 3\nmain;outer;hot_b;do_syscall_64_[k] 1\n"
        );
    }

    #[test]
    fn separators_in_names_cannot_break_lines() {
        assert_eq!(sanitize("a;b\nc"), "a:b c");
    }
}
