//! The symbolized profile every exporter reads: samples pointing at deduplicated locations, each
//! location with its (possibly inlined) frames and the mapping it came from.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::aggregate::StackKey;
use crate::collect::source::StackSide;
use crate::process::ProcessTable;
pub use crate::symbolize::MappingInfo;
use crate::symbolize::{Address, Frame, FrameKind, Frames, Symbolizer};
use crate::types::{Pid, VirtAddr};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LocationKind {
    User,
    Kernel,
    /// Stands for a stack that was lost (the sample is kept).
    Placeholder,
}

#[derive(Clone, Debug)]
pub struct Location {
    pub address: VirtAddr,
    pub mapping: Option<usize>,
    /// Innermost first. Never empty: unknown code gets one `[unknown] module+0xoffset` frame.
    pub frames: Frames,
    pub kind: LocationKind,
    /// Whether the frames came from symbols (false for `[unknown]` and placeholders).
    pub symbolized: bool,
}

#[derive(Clone, Debug)]
pub struct ProcessMeta {
    pub pid: Pid,
    pub name: String,
    pub exe: Option<String>,
    pub cmdline: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub process: usize,
    /// The threads' name (`comm`), when the kernel gave one. Shared by every sample of that name.
    pub thread: Option<Arc<str>>,
    /// Leaf first: kernel locations (if any), then user locations.
    pub locations: Vec<usize>,
    pub count: u64,
}

#[derive(Clone, Debug)]
pub struct Profile {
    pub start: SystemTime,
    pub duration: Duration,
    /// Nanoseconds of CPU time one sample stands for (1e9 / frequency).
    pub period_ns: u64,
    /// Shown as the flame graph's title.
    pub title: String,
    /// Every process was sampled (not one target): stacks are told apart by process.
    pub node_wide: bool,
    pub processes: Vec<ProcessMeta>,
    pub mappings: Vec<MappingInfo>,
    pub locations: Vec<Location>,
    pub samples: Vec<Sample>,
}

impl Profile {
    pub fn total_samples(&self) -> u64 {
        self.samples.iter().map(|s| s.count).sum()
    }
}

/// What the profile is about, apart from its samples.
#[derive(Clone, Debug)]
pub struct ProfileMeta {
    pub start: SystemTime,
    pub duration: Duration,
    pub frequency: u64,
    pub title: String,
    pub node_wide: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum LocKey {
    /// (process, address, is_leaf): return addresses are symbolized at address - 1.
    User(Pid, VirtAddr, bool),
    Kernel(VirtAddr),
    Placeholder(u32),
}

/// Builds a [`Profile`] from aggregated stacks: dedupes locations, symbolizes each once, in
/// batches per file.
pub fn build(
    entries: Vec<(StackKey, u64)>,
    table: &ProcessTable,
    symbolizer: &mut Symbolizer,
    meta: &ProfileMeta,
) -> Profile {
    let mut b = Builder::default();
    let mut samples = Vec::with_capacity(entries.len());
    for (key, count) in entries {
        let process = b.process(key.pid, table);
        let mut locations = Vec::new();
        match &key.kernel {
            StackSide::Frames(addrs) => {
                locations.extend(addrs.iter().map(|a| b.location(LocKey::Kernel(*a), None)));
            }
            StackSide::Lost(loss) => locations.push(b.placeholder(loss.frame_name())),
            StackSide::Absent => {}
        }
        match &key.user {
            StackSide::Frames(addrs) => {
                let kept = walk_loop_start(addrs, table.get(key.pid));
                for (i, addr) in addrs[..kept].iter().enumerate() {
                    let loc = b.location(LocKey::User(key.pid, *addr, i == 0), None);
                    locations.push(loc);
                }
                if kept < addrs.len() {
                    symbolizer.stats.walk_loops += count;
                    locations.push(b.placeholder(WALK_LOOP_FRAME.into()));
                }
            }
            StackSide::Lost(loss) => locations.push(b.placeholder(loss.frame_name())),
            // Kernel threads have no user stack.
            StackSide::Absent => {}
        }
        let thread = key.thread.text().map(|name| b.thread(name));
        samples.push(Sample {
            process,
            thread,
            locations,
            count,
        });
    }
    b.resolve(table, symbolizer);
    Profile {
        start: meta.start,
        duration: meta.duration,
        period_ns: 1_000_000_000 / meta.frequency.max(1),
        title: meta.title.clone(),
        node_wide: meta.node_wide,
        processes: b.processes,
        mappings: b.mappings,
        locations: b.locations,
        samples,
    }
}

/// Stands for the outer part of a user stack cut by [`walk_loop_start`].
pub const WALK_LOOP_FRAME: &str = "[stack cut: frame-pointer walk looped outside code]";

/// How many of a user stack's frames (leaf first) to keep: all of them, unless the same
/// return address outside every executable mapping of the process comes twice in a row. The
/// kernel's frame-pointer walk does not check that frames move up the stack, so a register
/// that holds data rather than a frame pointer (code built without them) and points at a word
/// that points to itself yields that address again and again, up to the depth limit. A real
/// recursion repeats an address in code; an address outside code cannot be a return address at
/// all. The first occurrence is kept (it is what the walk read), the rest is cut. Nothing is
/// judged for a process whose mappings are not known.
fn walk_loop_start(addrs: &[VirtAddr], process: Option<&crate::process::ProcessInfo>) -> usize {
    let Some(process) = process.filter(|p| !p.mappings.is_empty()) else {
        return addrs.len();
    };
    let outside_code = |a: VirtAddr| process.mapping(VirtAddr(a.0.saturating_sub(1))).is_none();
    addrs
        .windows(2)
        .position(|w| w[0] == w[1] && outside_code(w[0]))
        .map_or(addrs.len(), |i| i + 1)
}

#[derive(Default)]
struct Builder {
    processes: Vec<ProcessMeta>,
    process_index: HashMap<Pid, usize>,
    mappings: Vec<MappingInfo>,
    mapping_index: HashMap<(Option<Pid>, VirtAddr), usize>,
    locations: Vec<Location>,
    location_index: HashMap<LocKey, usize>,
    keys: Vec<LocKey>,
    placeholder_names: HashMap<String, u32>,
    /// Thread names, one allocation each (bounded by the samples' distinct names).
    threads: std::collections::HashSet<Arc<str>>,
}

impl Builder {
    fn thread(&mut self, name: String) -> Arc<str> {
        if let Some(shared) = self.threads.get(name.as_str()) {
            return Arc::clone(shared);
        }
        let shared: Arc<str> = Arc::from(name);
        self.threads.insert(Arc::clone(&shared));
        shared
    }

    fn process(&mut self, pid: Pid, table: &ProcessTable) -> usize {
        if let Some(&i) = self.process_index.get(&pid) {
            return i;
        }
        let meta = match table.get(pid) {
            Some(info) => ProcessMeta {
                pid,
                name: info.name(),
                exe: info.exe.as_ref().map(|p| p.display().to_string()),
                cmdline: info.cmdline.clone(),
            },
            None => ProcessMeta {
                pid,
                name: format!("pid {pid}"),
                exe: None,
                cmdline: vec![],
            },
        };
        self.processes.push(meta);
        self.process_index.insert(pid, self.processes.len() - 1);
        self.processes.len() - 1
    }

    fn location(&mut self, key: LocKey, frames: Option<Frames>) -> usize {
        if let Some(&i) = self.location_index.get(&key) {
            return i;
        }
        let (address, kind) = match key {
            LocKey::User(_, a, _) => (a, LocationKind::User),
            LocKey::Kernel(a) => (a, LocationKind::Kernel),
            LocKey::Placeholder(_) => (VirtAddr(0), LocationKind::Placeholder),
        };
        self.locations.push(Location {
            address,
            mapping: None,
            frames: frames.unwrap_or_else(|| Frames::from([])),
            kind,
            symbolized: false,
        });
        self.keys.push(key);
        self.location_index.insert(key, self.locations.len() - 1);
        self.locations.len() - 1
    }

    fn placeholder(&mut self, name: String) -> usize {
        let next = self.placeholder_names.len() as u32;
        let id = *self.placeholder_names.entry(name.clone()).or_insert(next);
        let frame = Frame {
            function: Arc::from(name.as_str()),
            file: None,
            line: None,
            kind: FrameKind::Native,
        };
        self.location(LocKey::Placeholder(id), Some(Frames::from([frame])))
    }

    fn mapping(&mut self, pid: Option<Pid>, info: MappingInfo) -> usize {
        *self
            .mapping_index
            .entry((pid, info.start))
            .or_insert_with(|| {
                self.mappings.push(info);
                self.mappings.len() - 1
            })
    }

    /// Symbolizes every location (the symbolizer picks the resolver and batches per file).
    fn resolve(&mut self, table: &ProcessTable, symbolizer: &mut Symbolizer) {
        let mut indices = Vec::new();
        let mut addresses = Vec::new();
        for (i, key) in self.keys.iter().enumerate() {
            let address = match *key {
                LocKey::User(pid, addr, leaf) => Address::User { pid, addr, leaf },
                LocKey::Kernel(addr) => Address::Kernel(addr),
                LocKey::Placeholder(_) => continue,
            };
            indices.push(i);
            addresses.push(address);
        }
        let resolved = symbolizer.resolve(table, &addresses);
        for ((i, address), r) in indices.into_iter().zip(addresses).zip(resolved) {
            let pid = match address {
                Address::User { pid, .. } => Some(pid),
                Address::Kernel(_) => None,
            };
            let mapping = r.mapping.map(|info| self.mapping(pid, info));
            let loc = &mut self.locations[i];
            loc.mapping = mapping;
            loc.frames = r.frames;
            loc.symbolized = r.symbolized;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::{Mapping, ProcessInfo};
    use crate::types::FileOffset;

    fn mapping(start: u64, end: u64, offset: u64, label: &str) -> Mapping {
        Mapping {
            start: VirtAddr(start),
            end: VirtAddr(end),
            offset: FileOffset(offset),
            object: None,
            label: label.into(),
        }
    }

    fn meta() -> ProfileMeta {
        ProfileMeta {
            start: SystemTime::UNIX_EPOCH,
            duration: Duration::from_secs(1),
            frequency: 99,
            title: String::new(),
            node_wide: false,
        }
    }

    /// Frame-pointer walks of untrusted stacks yield any return address, including one at the
    /// very start of a mapping: the call before it is in the mapping below, or nowhere.
    #[test]
    fn a_return_address_at_the_start_of_a_mapping_belongs_to_the_code_before_it() {
        let pid = Pid(42);
        let mut table = ProcessTable::default();
        table.insert_for_test(ProcessInfo {
            pid: Some(pid),
            mappings: vec![
                mapping(0x1000, 0x2000, 0, "a"),
                mapping(0x2000, 0x3000, 0x1000, "b"),
            ],
            alive: true,
            ..ProcessInfo::default()
        });
        let key = StackKey {
            pid,
            thread: crate::collect::source::ThreadName::default(),
            // Leaf first: in b; returns to the start of b (the call ended a); returns to the
            // start of a (nothing mapped before it).
            user: StackSide::Frames(vec![VirtAddr(0x2500), VirtAddr(0x2000), VirtAddr(0x1000)]),
            kernel: StackSide::Absent,
        };
        let mut symbolizer = Symbolizer::new();
        let profile = build(vec![(key, 1)], &table, &mut symbolizer, &meta());
        let locations: Vec<&Location> = profile.samples[0]
            .locations
            .iter()
            .map(|&i| &profile.locations[i])
            .collect();
        let label = |l: &Location| l.mapping.map(|m| profile.mappings[m].path.clone());
        let name = |l: &Location| l.frames[0].function.to_string();
        assert_eq!(label(locations[0]).as_deref(), Some("b"));
        assert_eq!(name(locations[0]), "[unknown] b+0x1500");
        assert_eq!(label(locations[1]).as_deref(), Some("a"));
        assert_eq!(name(locations[1]), "[unknown] a+0x1000");
        assert_eq!(label(locations[2]), None);
        assert_eq!(name(locations[2]), "[unknown] 0x1000");
        assert_eq!(symbolizer.stats.unknown, 3);
    }

    #[test]
    fn a_walk_that_repeats_an_address_outside_code_is_cut_and_counted_but_recursion_is_kept() {
        let pid = Pid(42);
        let mut table = ProcessTable::default();
        table.insert_for_test(ProcessInfo {
            pid: Some(pid),
            mappings: vec![mapping(0x1000, 0x2000, 0, "a")],
            alive: true,
            ..ProcessInfo::default()
        });
        let stack = |user: Vec<u64>| StackKey {
            pid,
            thread: crate::collect::source::ThreadName::default(),
            user: StackSide::Frames(user.into_iter().map(VirtAddr).collect()),
            kernel: StackSide::Absent,
        };
        let mut looped = vec![0x1100, 0x1200];
        looped.extend([0x7000; 125]);
        let recursion = [vec![0x1100], vec![0x1300; 126]].concat();
        // One address outside code, once: kept as unknown, not a loop.
        let single = vec![0x1100, 0x7000, 0x1400];
        let mut symbolizer = Symbolizer::new();
        let profile = build(
            vec![
                (stack(looped), 3),
                (stack(recursion), 1),
                (stack(single), 1),
            ],
            &table,
            &mut symbolizer,
            &meta(),
        );
        let names = |s: &Sample| -> Vec<String> {
            s.locations
                .iter()
                .map(|&i| profile.locations[i].frames[0].function.to_string())
                .collect()
        };
        assert_eq!(
            names(&profile.samples[0]),
            [
                "[unknown] a+0x100",
                "[unknown] a+0x200",
                "[unknown] 0x7000",
                WALK_LOOP_FRAME
            ]
        );
        assert_eq!(profile.samples[1].locations.len(), 127);
        assert_eq!(names(&profile.samples[2]).len(), 3);
        assert_eq!(symbolizer.stats.walk_loops, 3);
    }
}
