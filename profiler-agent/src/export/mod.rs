//! Writing a [`Profile`](crate::profile::Profile) out: folded stacks, pprof, SVG flame graph.
pub mod attributes;
pub mod folded;
pub mod otlp;
pub mod pprof;
mod pprof_proto;
pub mod queue;
pub mod sender;
pub mod svg;
pub mod worker;

use std::io::Write;
use std::path::Path;

use crate::profile::Profile;

/// Local output formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Brendan Gregg's folded stacks: `root;...;leaf count` per line.
    Folded,
    /// gzip'd pprof `profile.proto`.
    Pprof,
    /// Interactive SVG flame graph.
    Svg,
}

impl Format {
    /// The format an output path's extension implies.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        if name.ends_with(".svg") {
            Some(Format::Svg)
        } else if name.ends_with(".pb.gz") || name.ends_with(".pprof") || name.ends_with(".pb") {
            Some(Format::Pprof)
        } else if name.ends_with(".folded") || name.ends_with(".txt") {
            Some(Format::Folded)
        } else {
            None
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("writing the profile: {0}")]
    Io(#[from] std::io::Error),
    #[error("rendering the flame graph: {0}")]
    FlameGraph(String),
}

pub fn write(profile: &Profile, format: Format, out: &mut dyn Write) -> Result<(), ExportError> {
    match format {
        Format::Folded => folded::write(profile, out)?,
        Format::Pprof => pprof::write(profile, out)?,
        Format::Svg => svg::write(profile, out)?,
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_follows_the_extension() {
        assert_eq!(Format::from_path(Path::new("cpu.svg")), Some(Format::Svg));
        assert_eq!(
            Format::from_path(Path::new("a/cpu.pb.gz")),
            Some(Format::Pprof)
        );
        assert_eq!(
            Format::from_path(Path::new("cpu.pprof")),
            Some(Format::Pprof)
        );
        assert_eq!(
            Format::from_path(Path::new("cpu.folded")),
            Some(Format::Folded)
        );
        assert_eq!(
            Format::from_path(Path::new("cpu.TXT")),
            Some(Format::Folded)
        );
        assert_eq!(Format::from_path(Path::new("cpu.json")), None);
    }
}
