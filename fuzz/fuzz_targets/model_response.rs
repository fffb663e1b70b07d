//! Fuzz target `model_response`: arbitrary bytes as what an OpenAI-compatible server answers,
//! through `troupe_agents::model::fuzzing` (the decoders as the openai model service drives
//! them). The input is up to three parts separated by NUL bytes:
//!
//! 1. a non-streamed chat completion body;
//! 2. an SSE stream body (`data:` / `event:` lines, events ended by a blank line);
//! 3. an embeddings body, whose first byte modulo 8 is the number of inputs (`'0'`..`'7'`
//!    read as themselves).
//!
//! Property: an answer or a typed `ModelError` of the kinds decoding produces, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use troupe_agents::model::{fuzzing, ModelError};

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |byte| *byte == 0);
    let completion = parts.next().unwrap_or_default();
    let sse = parts.next().unwrap_or_default();
    let embeddings = parts.next().unwrap_or_default();

    if let Err(err) = fuzzing::completion(completion) {
        assert!(
            matches!(
                err,
                ModelError::MalformedResponse { .. } | ModelError::Provider { status: 200, .. }
            ),
            "{err:?}"
        );
    }

    let text = String::from_utf8_lossy(sse);
    let events = sse_events(&text);
    if let Err(err) = fuzzing::stream(events.iter().map(|(e, d)| (e.as_str(), d.as_str()))) {
        assert!(
            matches!(
                err,
                ModelError::MalformedResponse { .. }
                    | ModelError::Provider { status: 200, .. }
                    | ModelError::Connection { .. }
            ),
            "{err:?}"
        );
    }

    let (expected, body) = match embeddings.split_first() {
        Some((count, body)) => (usize::from(count % 8), body),
        None => (0, embeddings),
    };
    match fuzzing::embeddings(body, expected) {
        Ok(result) => assert_eq!(result.vectors.len(), expected),
        Err(err) => assert!(
            matches!(err, ModelError::MalformedResponse { .. }),
            "{err:?}"
        ),
    }
});

/// The events of an SSE body as `(event type, data)`: `data:` lines joined with `\n`, a blank
/// line ends an event, `:` lines are comments (the subset of the SSE format servers use).
fn sse_events(text: &str) -> Vec<(String, String)> {
    let mut events = Vec::new();
    let mut event = String::new();
    let mut data: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            if let Some(data) = data.take() {
                events.push((std::mem::take(&mut event), data));
            }
            event.clear();
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((field, value)) => (field, value.strip_prefix(' ').unwrap_or(value)),
            None => (line, ""),
        };
        match (field, &mut data) {
            ("event", _) => value.clone_into(&mut event),
            ("data", Some(data)) => {
                data.push('\n');
                data.push_str(value);
            }
            ("data", None) => data = Some(value.to_owned()),
            _ => {}
        }
    }
    if let Some(data) = data {
        events.push((event, data));
    }
    events
}
