//! OTLP profiles (proto v1.10, `v1development`): one `ResourceProfiles` per process, all sharing
//! one `ProfilesDictionary` per request, requests split to stay under the receiver's size limit.
use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use opentelemetry_proto::tonic::collector::profiles::v1development::ExportProfilesServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::profiles::v1development as pb;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::profile::{LocationKind, ProcessMeta, Profile, Sample};
use crate::symbolize::FrameKind;

/// Requests are packed up to this share of the limit: gRPC framing and the estimate's slack
/// must fit in the rest.
const FILL: f64 = 0.9;

/// Samples in one profile at most: Pyroscope's OTLP ingest refuses a profile with more than
/// 16,000 (its `max-profile-size-samples` default), so larger ones are split like oversized ones.
pub const MAX_SAMPLES_PER_PROFILE: usize = 16_000;

pub const SCOPE_NAME: &str = "kalypso";

pub fn string_kv(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

pub fn int_kv(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// Builds the export requests for a profile. `resource_of` gives each process's resource
/// attributes. No request's encoding exceeds `max_bytes` unless a single stack alone does (then
/// that stack is dropped and counted in the returned total), and no profile holds more than
/// [`MAX_SAMPLES_PER_PROFILE`] samples.
pub fn build_requests(
    profile: &Profile,
    resource_of: &dyn Fn(&ProcessMeta) -> Vec<KeyValue>,
    max_bytes: usize,
) -> (Vec<ExportProfilesServiceRequest>, u64) {
    let budget = (max_bytes as f64 * FILL) as usize;
    let mut by_process: Vec<Vec<&Sample>> = vec![Vec::new(); profile.processes.len()];
    for s in &profile.samples {
        by_process[s.process].push(s);
    }
    // Pieces of (process, samples) that each fit alone, with their standalone size.
    let mut pieces: Vec<(usize, Vec<&Sample>, usize)> = Vec::new();
    let mut dropped = 0;
    let mut todo: Vec<(usize, Vec<&Sample>)> = by_process
        .into_iter()
        .enumerate()
        .filter(|(_, s)| !s.is_empty())
        .collect();
    todo.reverse();
    while let Some((process, samples)) = todo.pop() {
        if samples.len() > MAX_SAMPLES_PER_PROFILE {
            let second = samples[samples.len() / 2..].to_vec();
            let first = samples[..samples.len() / 2].to_vec();
            todo.push((process, second));
            todo.push((process, first));
            continue;
        }
        let size = Request::new(profile, resource_of)
            .with(process, &samples)
            .finish()
            .encoded_len();
        if size <= budget {
            pieces.push((process, samples, size));
        } else if samples.len() > 1 {
            let second = samples[samples.len() / 2..].to_vec();
            let first = samples[..samples.len() / 2].to_vec();
            todo.push((process, second));
            todo.push((process, first));
        } else {
            dropped += samples[0].count;
        }
    }
    // Pack greedily: a shared dictionary makes the real size at most the sum of the pieces.
    let mut requests = Vec::new();
    let mut current = Request::new(profile, resource_of);
    let mut used = 0;
    for (process, samples, size) in pieces {
        if used > 0 && used + size > budget {
            requests
                .push(std::mem::replace(&mut current, Request::new(profile, resource_of)).finish());
            used = 0;
        }
        current = current.with(process, &samples);
        used += size;
    }
    if used > 0 {
        requests.push(current.finish());
    }
    (requests, dropped)
}

/// One request under construction: its dictionary and its resource profiles.
struct Request<'a> {
    profile: &'a Profile,
    resource_of: &'a dyn Fn(&ProcessMeta) -> Vec<KeyValue>,
    dict: Dictionary,
    resources: Vec<pb::ResourceProfiles>,
}

impl<'a> Request<'a> {
    fn new(profile: &'a Profile, resource_of: &'a dyn Fn(&ProcessMeta) -> Vec<KeyValue>) -> Self {
        Self {
            profile,
            resource_of,
            dict: Dictionary::new(),
            resources: Vec::new(),
        }
    }

    fn with(mut self, process: usize, samples: &[&Sample]) -> Self {
        let p = self.profile;
        let d = &mut self.dict;
        let samples = samples
            .iter()
            .map(|s| {
                let locations: Vec<i32> = s.locations.iter().map(|l| d.location(p, *l)).collect();
                // Semantic convention `thread.name`, per sample as the reference agent sends it
                // (Pyroscope makes it a label users filter by).
                let attribute_indices = s
                    .thread
                    .as_deref()
                    .map(|name| d.string_attribute("thread.name", name))
                    .into_iter()
                    .collect();
                pb::Sample {
                    stack_index: d.stack(locations),
                    values: vec![s.count as i64],
                    attribute_indices,
                    ..Default::default()
                }
            })
            .collect();
        let start = p
            .start
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let profile = pb::Profile {
            sample_type: Some(pb::ValueType {
                type_strindex: d.string("samples"),
                unit_strindex: d.string("count"),
            }),
            samples,
            time_unix_nano: start,
            duration_nano: p.duration.as_nanos() as u64,
            period_type: Some(pb::ValueType {
                type_strindex: d.string("cpu"),
                unit_strindex: d.string("nanoseconds"),
            }),
            period: p.period_ns as i64,
            profile_id: profile_id(),
            ..Default::default()
        };
        self.resources.push(pb::ResourceProfiles {
            resource: Some(Resource {
                attributes: (self.resource_of)(&p.processes[process]),
                ..Default::default()
            }),
            scope_profiles: vec![pb::ScopeProfiles {
                scope: Some(InstrumentationScope {
                    name: SCOPE_NAME.into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                profiles: vec![profile],
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        });
        self
    }

    fn finish(self) -> ExportProfilesServiceRequest {
        ExportProfilesServiceRequest {
            resource_profiles: self.resources,
            dictionary: Some(self.dict.finish()),
        }
    }
}

/// 16 random bytes, never all zero (the spec calls an all-zero id invalid).
fn profile_id() -> Vec<u8> {
    let mut id = fastrand::u128(1..).to_le_bytes().to_vec();
    id.truncate(16);
    id
}

/// The shared tables. Index 0 of every table is the zero value, as the spec requires.
struct Dictionary {
    strings: Vec<String>,
    string_index: HashMap<String, i32>,
    mappings: Vec<pb::Mapping>,
    mapping_index: HashMap<usize, i32>,
    locations: Vec<pb::Location>,
    location_index: HashMap<usize, i32>,
    functions: Vec<pb::Function>,
    function_index: HashMap<(i32, i32), i32>,
    attributes: Vec<pb::KeyValueAndUnit>,
    attribute_index: HashMap<(i32, String), i32>,
    stacks: Vec<pb::Stack>,
    stack_index: HashMap<Vec<i32>, i32>,
}

impl Dictionary {
    fn new() -> Self {
        let mut d = Self {
            strings: Vec::new(),
            string_index: HashMap::new(),
            mappings: vec![pb::Mapping::default()],
            mapping_index: HashMap::new(),
            locations: vec![pb::Location::default()],
            location_index: HashMap::new(),
            functions: vec![pb::Function::default()],
            function_index: HashMap::new(),
            attributes: vec![pb::KeyValueAndUnit::default()],
            attribute_index: HashMap::new(),
            stacks: vec![pb::Stack::default()],
            stack_index: HashMap::new(),
        };
        d.string("");
        d
    }

    fn string(&mut self, s: &str) -> i32 {
        if let Some(&i) = self.string_index.get(s) {
            return i;
        }
        let i = self.strings.len() as i32;
        self.strings.push(s.to_owned());
        self.string_index.insert(s.to_owned(), i);
        i
    }

    fn string_attribute(&mut self, key: &str, value: &str) -> i32 {
        let key = self.string(key);
        if let Some(&i) = self.attribute_index.get(&(key, value.to_owned())) {
            return i;
        }
        let i = self.attributes.len() as i32;
        self.attributes.push(pb::KeyValueAndUnit {
            key_strindex: key,
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value.to_owned())),
            }),
            unit_strindex: 0,
        });
        self.attribute_index.insert((key, value.to_owned()), i);
        i
    }

    fn mapping(&mut self, profile: &Profile, index: usize) -> i32 {
        if let Some(&i) = self.mapping_index.get(&index) {
            return i;
        }
        let m = &profile.mappings[index];
        let mut attribute_indices = Vec::new();
        if let Some(id) = &m.build_id {
            attribute_indices
                .push(self.string_attribute("process.executable.build_id.gnu", &id.to_string()));
        }
        if let Some(id) = &m.go_build_id {
            attribute_indices.push(self.string_attribute("process.executable.build_id.go", id));
        }
        let mapping = pb::Mapping {
            memory_start: m.start.0,
            memory_limit: m.end.0,
            file_offset: m.offset.0,
            filename_strindex: self.string(&m.path),
            attribute_indices,
        };
        let i = self.mappings.len() as i32;
        self.mappings.push(mapping);
        self.mapping_index.insert(index, i);
        i
    }

    fn location(&mut self, profile: &Profile, index: usize) -> i32 {
        if let Some(&i) = self.location_index.get(&index) {
            return i;
        }
        let loc = &profile.locations[index];
        let mapping_index = loc.mapping.map_or(0, |m| self.mapping(profile, m));
        // Code no resolver could name keeps its mapping, address and build id, and no line: a
        // made-up `[unknown] lib+0x…` function would make every address its own node and tell
        // the server the location is already symbolized (so it never tries). Placeholders are
        // not code: their name says why the stack ends there.
        let named = loc.symbolized || loc.kind == LocationKind::Placeholder;
        let lines = loc
            .frames
            .iter()
            .filter(|_| named)
            .map(|f| {
                let name = self.string(&f.function);
                let file = f.file.as_deref().map_or(0, |file| self.string(file));
                let next = self.functions.len() as i32;
                let function_index =
                    *self.function_index.entry((name, file)).or_insert_with(|| {
                        self.functions.push(pb::Function {
                            name_strindex: name,
                            system_name_strindex: name,
                            filename_strindex: file,
                            start_line: 0,
                        });
                        next
                    });
                pb::Line {
                    function_index,
                    line: f.line.map_or(0, i64::from),
                    column: 0,
                }
            })
            .collect();
        // Semantic convention `profile.frame.type`: how the frame was produced.
        let frame_type = match loc.kind {
            LocationKind::User if loc.frames.first().is_some_and(|f| f.kind == FrameKind::Go) => {
                "go"
            }
            LocationKind::User => "native",
            LocationKind::Kernel => "kernel",
            LocationKind::Placeholder => "abort-marker",
        };
        let location = pb::Location {
            mapping_index,
            address: loc.address.0,
            lines,
            attribute_indices: vec![self.string_attribute("profile.frame.type", frame_type)],
        };
        let i = self.locations.len() as i32;
        self.locations.push(location);
        self.location_index.insert(index, i);
        i
    }

    fn stack(&mut self, locations: Vec<i32>) -> i32 {
        if let Some(&i) = self.stack_index.get(&locations) {
            return i;
        }
        let i = self.stacks.len() as i32;
        self.stacks.push(pb::Stack {
            location_indices: locations.clone(),
        });
        self.stack_index.insert(locations, i);
        i
    }

    fn finish(self) -> pb::ProfilesDictionary {
        pb::ProfilesDictionary {
            mapping_table: self.mappings,
            location_table: self.locations,
            function_table: self.functions,
            link_table: vec![pb::Link::default()],
            string_table: self.strings,
            attribute_table: self.attributes,
            stack_table: self.stacks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::folded::tests::sample_profile;
    use crate::symbolize::{Frame, Frames};
    use std::sync::Arc;

    fn resource_of(p: &ProcessMeta) -> Vec<KeyValue> {
        vec![
            string_kv("service.name", p.name.clone()),
            int_kv("process.pid", i64::from(p.pid.0)),
        ]
    }

    fn build(profile: &Profile, max: usize) -> Vec<ExportProfilesServiceRequest> {
        let (requests, dropped) = build_requests(profile, &resource_of, max);
        assert_eq!(dropped, 0);
        requests
    }

    /// Checks the spec's invariants: zero values at index 0, every index in range.
    fn assert_valid(req: &ExportProfilesServiceRequest) {
        let d = req.dictionary.as_ref().expect("dictionary");
        assert_eq!(d.string_table[0], "");
        assert_eq!(d.mapping_table[0], pb::Mapping::default());
        assert_eq!(d.location_table[0], pb::Location::default());
        assert_eq!(d.function_table[0], pb::Function::default());
        assert_eq!(d.link_table[0], pb::Link::default());
        assert_eq!(d.attribute_table[0], pb::KeyValueAndUnit::default());
        assert_eq!(d.stack_table[0], pb::Stack::default());
        let s = |i: i32| assert!((0..d.string_table.len() as i32).contains(&i), "string {i}");
        for m in &d.mapping_table {
            s(m.filename_strindex);
            m.attribute_indices
                .iter()
                .for_each(|a| assert!((*a as usize) < d.attribute_table.len()));
        }
        for l in &d.location_table {
            assert!((l.mapping_index as usize) < d.mapping_table.len());
            for line in &l.lines {
                assert!(
                    line.function_index > 0
                        && (line.function_index as usize) < d.function_table.len()
                );
            }
        }
        for f in &d.function_table {
            s(f.name_strindex);
            s(f.filename_strindex);
        }
        for st in &d.stack_table {
            st.location_indices
                .iter()
                .for_each(|l| assert!(*l > 0 && (*l as usize) < d.location_table.len()));
        }
        for r in &req.resource_profiles {
            for p in r.scope_profiles.iter().flat_map(|s| &s.profiles) {
                assert!(p.period > 0 && p.time_unix_nano > 0 && p.duration_nano > 0);
                assert_eq!(p.profile_id.len(), 16);
                for smp in &p.samples {
                    assert!(
                        smp.stack_index > 0 && (smp.stack_index as usize) < d.stack_table.len()
                    );
                    assert_eq!(smp.values.len(), 1);
                }
            }
        }
    }

    fn names_of_first_stack(req: &ExportProfilesServiceRequest) -> Vec<String> {
        let d = req.dictionary.as_ref().unwrap();
        let p = &req.resource_profiles[0].scope_profiles[0].profiles[0];
        let stack = &d.stack_table[p.samples[0].stack_index as usize];
        stack
            .location_indices
            .iter()
            .flat_map(|l| &d.location_table[*l as usize].lines)
            .map(|line| {
                d.string_table
                    [d.function_table[line.function_index as usize].name_strindex as usize]
                    .clone()
            })
            .collect()
    }

    #[test]
    fn one_valid_request_with_types_period_and_leaf_first_stacks() {
        let reqs = build(&sample_profile(), 4 << 20);
        assert_eq!(reqs.len(), 1);
        let req = &reqs[0];
        assert_valid(req);
        let d = req.dictionary.as_ref().unwrap();
        let p = &req.resource_profiles[0].scope_profiles[0].profiles[0];
        let st = |i: i32| d.string_table[i as usize].as_str();
        let (sample_type, period_type) = (p.sample_type.unwrap(), p.period_type.unwrap());
        assert_eq!(
            (st(sample_type.type_strindex), st(sample_type.unit_strindex)),
            ("samples", "count")
        );
        assert_eq!(
            (st(period_type.type_strindex), st(period_type.unit_strindex)),
            ("cpu", "nanoseconds")
        );
        assert_eq!(p.period, 10_101_010);
        assert_eq!(
            names_of_first_stack(req),
            ["helper", "hot_a", "outer", "main"]
        );
        let total: i64 = p.samples.iter().map(|s| s.values[0]).sum();
        assert_eq!(total, 4);
    }

    #[test]
    fn build_ids_and_frame_types_are_attributes() {
        let req = &build(&sample_profile(), 4 << 20)[0];
        let d = req.dictionary.as_ref().unwrap();
        let attr = |i: i32| {
            let a = &d.attribute_table[i as usize];
            let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                _ => String::new(),
            };
            (d.string_table[a.key_strindex as usize].clone(), v)
        };
        let work = d
            .mapping_table
            .iter()
            .find(|m| d.string_table[m.filename_strindex as usize] == "/bin/work")
            .unwrap();
        assert_eq!(
            attr(work.attribute_indices[0]),
            ("process.executable.build_id.gnu".into(), "abcd".into())
        );
        let kinds: Vec<(String, String)> = d.location_table[1..]
            .iter()
            .map(|l| attr(l.attribute_indices[0]))
            .collect();
        assert!(kinds.contains(&("profile.frame.type".into(), "kernel".into())));
        assert!(kinds.contains(&("profile.frame.type".into(), "native".into())));
    }

    #[test]
    fn unknown_code_has_an_address_and_a_mapping_but_no_invented_line() {
        let mut profile = sample_profile();
        // hot_b (0x1400) unresolved, as the symbolizer leaves it: one `[unknown]` frame.
        profile.locations[3].symbolized = false;
        profile.locations[3].frames = Frames::from([Frame {
            function: Arc::from("[unknown] work+0x400"),
            file: None,
            line: None,
            kind: FrameKind::Native,
        }]);
        let req = &build(&profile, 1 << 20)[0];
        assert_valid(req);
        let d = req.dictionary.as_ref().unwrap();
        let unknown = d
            .location_table
            .iter()
            .find(|l| l.address == 0x1400)
            .expect("the location is kept");
        assert!(unknown.lines.is_empty(), "{:?}", unknown.lines);
        let mapping = &d.mapping_table[unknown.mapping_index as usize];
        assert_eq!(
            d.string_table[mapping.filename_strindex as usize],
            "/bin/work"
        );
        assert_eq!(mapping.attribute_indices.len(), 1, "the build id");
        assert!(d.string_table.iter().all(|s| !s.contains("[unknown]")));
        // Named neighbours keep their lines.
        let main = d
            .location_table
            .iter()
            .find(|l| l.address == 0x1100)
            .unwrap();
        assert_eq!(main.lines.len(), 1);
    }

    #[test]
    fn go_frames_and_go_build_ids_say_so() {
        let mut profile = sample_profile();
        profile.mappings[0].go_build_id = Some("abc/def".into());
        let go = &mut profile.locations[0];
        go.frames = go
            .frames
            .iter()
            .map(|f| crate::symbolize::Frame {
                kind: FrameKind::Go,
                ..f.clone()
            })
            .collect();
        let req = &build(&profile, 4 << 20)[0];
        let d = req.dictionary.as_ref().unwrap();
        let attr = |i: &i32| {
            let a = &d.attribute_table[*i as usize];
            let v = match a.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => s.clone(),
                _ => String::new(),
            };
            (d.string_table[a.key_strindex as usize].clone(), v)
        };
        let work = d
            .mapping_table
            .iter()
            .find(|m| d.string_table[m.filename_strindex as usize] == "/bin/work")
            .unwrap();
        let ids: Vec<_> = work.attribute_indices.iter().map(attr).collect();
        assert_eq!(
            ids,
            [
                ("process.executable.build_id.gnu".into(), "abcd".into()),
                ("process.executable.build_id.go".into(), "abc/def".into())
            ]
        );
        let types: Vec<_> = d.location_table[1..]
            .iter()
            .map(|l| attr(&l.attribute_indices[0]).1)
            .collect();
        assert_eq!(
            types.iter().filter(|t| *t == "go").count(),
            1,
            "only the location with Go frames: {types:?}"
        );
    }

    #[test]
    fn splits_requests_to_stay_under_the_limit_without_losing_samples() {
        let mut profile = sample_profile();
        // Many processes, each with its own copy of the samples.
        let base = profile.samples.clone();
        for i in 1..60 {
            let mut meta = profile.processes[0].clone();
            meta.pid = crate::types::Pid(100 + i);
            profile.processes.push(meta);
            for s in &base {
                profile.samples.push(Sample {
                    process: i as usize,
                    ..s.clone()
                });
            }
        }
        let max = 4096;
        let reqs = build(&profile, max);
        assert!(reqs.len() > 1, "expected a split");
        let mut total = 0;
        for r in &reqs {
            assert!(
                r.encoded_len() <= max,
                "request of {} bytes",
                r.encoded_len()
            );
            assert_valid(r);
            total += r
                .resource_profiles
                .iter()
                .flat_map(|r| &r.scope_profiles[0].profiles[0].samples)
                .map(|s| s.values[0])
                .sum::<i64>();
        }
        assert_eq!(total, 4 * 60);
    }

    #[test]
    fn no_profile_holds_more_samples_than_pyroscope_accepts() {
        let mut profile = sample_profile();
        let base = profile.samples[0].clone();
        // 40,000 distinct stacks of one process: far under the byte limit, over the sample one.
        profile.samples = (0..40_000)
            .map(|i| Sample {
                locations: vec![base.locations[0], base.locations[0] + (i % 2)],
                count: 1 + i as u64 % 3,
                ..base.clone()
            })
            .collect();
        let total: u64 = profile.samples.iter().map(|s| s.count).sum();
        let (reqs, dropped) = build_requests(&profile, &resource_of, 64 << 20);
        assert_eq!(dropped, 0);
        let mut sent = 0;
        let mut profiles = 0;
        for req in &reqs {
            for rp in &req.resource_profiles {
                for p in &rp.scope_profiles[0].profiles {
                    profiles += 1;
                    assert!(
                        p.samples.len() <= MAX_SAMPLES_PER_PROFILE,
                        "{}",
                        p.samples.len()
                    );
                    sent += p.samples.iter().map(|s| s.values[0] as u64).sum::<u64>();
                }
            }
        }
        assert!(profiles >= 3, "{profiles} profiles");
        assert_eq!(sent, total, "every sample is sent");
    }

    #[test]
    fn golden_export_request() {
        let mut req = build(&sample_profile(), 4 << 20).remove(0);
        for r in &mut req.resource_profiles {
            for p in r.scope_profiles.iter_mut().flat_map(|s| &mut s.profiles) {
                p.profile_id = vec![7; 16];
            }
        }
        let json = serde_json::to_string_pretty(&req).unwrap() + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/otlp_export_request.json");
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &json).unwrap();
        }
        let want =
            std::fs::read_to_string(&path).expect("golden file (regenerate with UPDATE_GOLDEN=1)");
        assert_eq!(
            json, want,
            "export request changed; if intended, rerun with UPDATE_GOLDEN=1 and review the diff"
        );
    }
}
