//! Interactive SVG flame graph, rendered by `inferno` from the folded stacks.
use std::io::{self, Write};

use inferno::flamegraph::{self, Options};

use super::folded;
use crate::profile::Profile;

pub fn write(profile: &Profile, out: &mut dyn Write) -> Result<(), super::ExportError> {
    let lines: Vec<String> = folded::lines(profile)
        .into_iter()
        .map(|(l, c)| format!("{l} {c}"))
        .collect();
    let mut opts = Options::default();
    opts.title = profile.title.clone();
    opts.subtitle = Some(format!(
        "{} samples over {:.1} s",
        profile.total_samples(),
        profile.duration.as_secs_f64()
    ));
    opts.count_name = "samples".into();
    if lines.is_empty() {
        // inferno refuses empty input; an empty profile is still a valid answer.
        return write_empty(&opts.title, out).map_err(Into::into);
    }
    flamegraph::from_lines(&mut opts, lines.iter().map(String::as_str), out)
        .map_err(|e| super::ExportError::FlameGraph(e.to_string()))
}

fn write_empty(title: &str, out: &mut dyn Write) -> io::Result<()> {
    let title = title
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    write!(
        out,
        r#"<?xml version="1.0" standalone="no"?><svg version="1.1" width="1200" height="60" xmlns="http://www.w3.org/2000/svg"><text x="600" y="24" text-anchor="middle" font-size="17">{title}</text><text x="600" y="48" text-anchor="middle" font-size="12">no samples</text></svg>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::folded::tests::sample_profile;

    #[test]
    fn renders_every_function_and_the_title() {
        let mut out = Vec::new();
        write(&sample_profile(), &mut out).unwrap();
        let svg = String::from_utf8(out).unwrap();
        assert!(svg.starts_with("<?xml"));
        for name in [
            "main",
            "outer",
            "hot_a",
            "helper",
            "hot_b",
            "do_syscall_64",
            "test",
        ] {
            assert!(svg.contains(name), "{name} missing from the SVG");
        }
    }

    #[test]
    fn an_empty_profile_still_renders() {
        let mut p = sample_profile();
        p.samples.clear();
        let mut out = Vec::new();
        write(&p, &mut out).unwrap();
        assert!(String::from_utf8(out).unwrap().contains("no samples"));
    }
}
