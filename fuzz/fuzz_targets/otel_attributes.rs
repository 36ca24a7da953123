//! `resource::parse_otel_resource_attributes` (OTEL_RESOURCE_ATTRIBUTES, and the OTLP headers
//! variables) and `service_name_from_environ`: any input. Never panics; what parses has usable
//! keys and parses back the same from its percent-encoded form.
#![no_main]

use std::fmt::Write;

use libfuzzer_sys::fuzz_target;
use profiler_agent::resource::{parse_otel_resource_attributes, service_name_from_environ};

/// Every byte but ASCII letters and digits as `%XX`.
fn percent_encode(value: &str) -> String {
    value.bytes().fold(String::new(), |mut out, b| {
        if b.is_ascii_alphanumeric() {
            out.push(char::from(b));
        } else {
            write!(out, "%{b:02X}").unwrap();
        }
        out
    })
}

fuzz_target!(|data: &[u8]| {
    if let Some(name) = service_name_from_environ(data) {
        assert!(!name.is_empty());
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(attributes) = parse_otel_resource_attributes(text) else {
        return;
    };
    for (key, _) in &attributes {
        assert!(!key.is_empty());
        assert_eq!(key.trim(), key);
        assert!(!key.contains(',') && !key.contains('='), "{key:?}");
    }
    let encoded: Vec<String> = attributes
        .iter()
        .map(|(k, v)| format!("{k}={}", percent_encode(v)))
        .collect();
    let encoded = encoded.join(",");
    assert_eq!(
        parse_otel_resource_attributes(&encoded).as_ref(),
        Ok(&attributes),
        "{encoded:?}"
    );
});
