//! gzip'd pprof: what `go tool pprof`, Pyroscope and speedscope open.
use std::collections::HashMap;
use std::io::{self, Write};

use flate2::Compression;
use flate2::write::GzEncoder;
use prost::Message;

use super::pprof_proto as pb;
use crate::profile::{LocationKind, Profile};

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Self::default();
        s.intern(""); // pprof requires string_table[0] == ""
        s
    }

    fn intern(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// Builds the pprof message (ids are 1-based: 0 means "none" in pprof).
pub fn to_pprof(profile: &Profile) -> pb::Profile {
    let mut strings = Strings::new();
    let sample_type = vec![
        pb::ValueType {
            r#type: strings.intern("samples"),
            unit: strings.intern("count"),
        },
        pb::ValueType {
            r#type: strings.intern("cpu"),
            unit: strings.intern("nanoseconds"),
        },
    ];
    let period_type = pb::ValueType {
        r#type: strings.intern("cpu"),
        unit: strings.intern("nanoseconds"),
    };

    let mut mapping_has_lines = vec![false; profile.mappings.len()];
    let mut functions: Vec<pb::Function> = Vec::new();
    let mut function_index: HashMap<(i64, i64), u64> = HashMap::new();
    let mut locations = Vec::with_capacity(profile.locations.len());
    for (i, loc) in profile.locations.iter().enumerate() {
        let kernel = loc.kind == LocationKind::Kernel;
        let mut lines = Vec::with_capacity(loc.frames.len());
        for frame in loc.frames.iter() {
            let name = if kernel {
                strings.intern(&format!("{}_[k]", frame.function))
            } else {
                strings.intern(&frame.function)
            };
            let file = frame.file.as_deref().map_or(0, |f| strings.intern(f));
            let next = functions.len() as u64 + 1;
            let function_id = *function_index.entry((name, file)).or_insert_with(|| {
                functions.push(pb::Function {
                    id: next,
                    name,
                    system_name: name,
                    filename: file,
                    start_line: 0,
                });
                next
            });
            if frame.line.is_some()
                && let Some(m) = loc.mapping
            {
                mapping_has_lines[m] = true;
            }
            lines.push(pb::Line {
                function_id,
                line: frame.line.map_or(0, i64::from),
                column: 0,
            });
        }
        locations.push(pb::Location {
            id: i as u64 + 1,
            mapping_id: loc.mapping.map_or(0, |m| m as u64 + 1),
            address: loc.address.0,
            line: lines,
            is_folded: false,
        });
    }
    let mappings = profile
        .mappings
        .iter()
        .enumerate()
        .map(|(i, m)| pb::Mapping {
            id: i as u64 + 1,
            memory_start: m.start.0,
            memory_limit: m.end.0,
            file_offset: m.offset.0,
            filename: strings.intern(&m.path),
            // pprof has one build id per mapping: the GNU one, else Go's.
            build_id: match (&m.build_id, &m.go_build_id) {
                (Some(gnu), _) => strings.intern(&gnu.to_string()),
                (None, Some(go)) => strings.intern(go),
                (None, None) => 0,
            },
            has_functions: true,
            has_filenames: mapping_has_lines[i],
            has_line_numbers: mapping_has_lines[i],
            has_inline_frames: mapping_has_lines[i],
        })
        .collect();
    let multi_process = profile.node_wide || profile.processes.len() > 1;
    let (pid_key, process_key) = (strings.intern("pid"), strings.intern("process"));
    let thread_key = strings.intern("thread_name");
    let samples = profile
        .samples
        .iter()
        .map(|s| {
            let process = &profile.processes[s.process];
            let label = if multi_process {
                vec![
                    pb::Label {
                        key: pid_key,
                        num: i64::from(process.pid.0),
                        ..Default::default()
                    },
                    pb::Label {
                        key: process_key,
                        str: strings.intern(&process.name),
                        ..Default::default()
                    },
                ]
            } else {
                Vec::new()
            };
            let mut label = label;
            if let Some(thread) = s.thread.as_deref() {
                label.push(pb::Label {
                    key: thread_key,
                    str: strings.intern(thread),
                    ..Default::default()
                });
            }
            pb::Sample {
                location_id: s.locations.iter().map(|l| *l as u64 + 1).collect(),
                value: vec![s.count as i64, (s.count * profile.period_ns) as i64],
                label,
            }
        })
        .collect();
    let comment = vec![strings.intern(&profile.title)];
    let time_nanos = profile
        .start
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    pb::Profile {
        sample_type,
        sample: samples,
        mapping: mappings,
        location: locations,
        function: functions,
        string_table: strings.table,
        time_nanos,
        duration_nanos: profile.duration.as_nanos() as i64,
        period_type: Some(period_type),
        period: profile.period_ns as i64,
        comment,
        default_sample_type: 0,
    }
}

pub fn write(profile: &Profile, out: &mut dyn Write) -> io::Result<()> {
    let bytes = to_pprof(profile).encode_to_vec();
    let mut gz = GzEncoder::new(out, Compression::default());
    gz.write_all(&bytes)?;
    gz.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::export::folded::tests::sample_profile;

    fn decode(bytes: &[u8]) -> pb::Profile {
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut raw)
            .unwrap();
        pb::Profile::decode(raw.as_slice()).unwrap()
    }

    #[test]
    fn round_trips_with_types_period_and_stacks() {
        let mut out = Vec::new();
        write(&sample_profile(), &mut out).unwrap();
        let p = decode(&out);
        let s = |i: i64| p.string_table[i as usize].as_str();
        assert_eq!(s(0), "");
        assert_eq!(
            (s(p.sample_type[0].r#type), s(p.sample_type[0].unit)),
            ("samples", "count")
        );
        assert_eq!(
            (s(p.sample_type[1].r#type), s(p.sample_type[1].unit)),
            ("cpu", "nanoseconds")
        );
        assert_eq!(p.period, 10_101_010);
        assert_eq!(p.duration_nanos, 10_000_000_000);
        assert_eq!(p.sample.len(), 2);
        assert_eq!(p.sample[0].value, vec![3, 3 * 10_101_010]);
        // Leaf first: the first location of sample 0 is hot_a with its inlined helper.
        let leaf = &p.location[(p.sample[0].location_id[0] - 1) as usize];
        let names: Vec<&str> = leaf
            .line
            .iter()
            .map(|l| s(p.function[(l.function_id - 1) as usize].name))
            .collect();
        assert_eq!(names, ["helper", "hot_a"]);
        assert_eq!(leaf.line[0].line, 7);
        let mapping = &p.mapping[(leaf.mapping_id - 1) as usize];
        assert_eq!(s(mapping.filename), "/bin/work");
        assert_eq!(s(mapping.build_id), "abcd");
        assert!(mapping.has_line_numbers);
    }

    #[test]
    fn kernel_frames_are_marked() {
        let p = to_pprof(&sample_profile());
        let names: Vec<&str> = p
            .function
            .iter()
            .map(|f| p.string_table[f.name as usize].as_str())
            .collect();
        assert!(names.contains(&"do_syscall_64_[k]"));
    }
}
