//! Entry points for the fuzz targets in `fuzz/`: the model-response decoders driven exactly as
//! [`OpenAiModel`](super::OpenAiModel) drives them, without HTTP. A completion body and an
//! embeddings body are read with `serde_json::from_slice` as async-openai reads them; a stream
//! is a sequence of SSE events (`[DONE]` ends it, `keepalive` events are skipped, as in
//! async-openai), each decoded as a chunk and applied to an [`Assembly`]. A decoding failure is
//! classified by the same code as a real one.
//!
//! The property the fuzzers check: whatever the bytes, these return a [`ModelError`], never
//! panic. Not a stable API: compiled only with the `fuzzing` feature (and in tests).

use std::time::Duration;

use async_openai::error::OpenAIError;
use serde::de::DeserializeOwned;

use super::transport;
use super::wire::{self, Assembly};
use super::{ChatResponse, Embeddings, ModelError};

/// The configured model name errors carry, and the fallback provider model.
pub const MODEL: &str = "fuzz";
/// The bound of an assembled stream: the default `max_response_bytes` (8 MiB).
const MAX_BYTES: usize = 8 * 1024 * 1024;

/// `bytes` as async-openai decodes a response body, a failure classified as the model does.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ModelError> {
    serde_json::from_slice(bytes).map_err(|err| {
        let content = String::from_utf8_lossy(bytes).into_owned();
        transport::classify(
            MODEL,
            Duration::ZERO,
            OpenAIError::JSONDeserialize(err, content),
        )
    })
}

/// A non-streamed chat completion body.
pub fn completion(body: &[u8]) -> Result<ChatResponse, ModelError> {
    decode::<wire::Response>(body)?.into_chat(MODEL, MODEL)
}

/// A streamed chat completion: SSE events as `(event type, data)`, in order.
pub fn stream<'a>(
    events: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<ChatResponse, ModelError> {
    let mut assembly = Assembly::new(MAX_BYTES);
    for (event, data) in events {
        if data == "[DONE]" {
            break;
        }
        if event == "keepalive" {
            continue;
        }
        let chunk: wire::Chunk = decode(data.as_bytes())?;
        assembly.apply(MODEL, chunk)?;
    }
    assembly.finish(MODEL, MODEL)
}

/// An embeddings body answering `expected` inputs.
pub fn embeddings(body: &[u8], expected: usize) -> Result<Embeddings, ModelError> {
    decode::<wire::EmbeddingResponse>(body)?.into_embeddings(MODEL, expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FinishReason;

    #[test]
    fn decodes_what_the_mock_server_sends() {
        let body = br#"{"id":"c","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1}}"#;
        let response = completion(body).map_err(|err| err.to_string());
        assert_eq!(response.as_ref().map(|r| r.content.as_str()), Ok("hi"));

        let events = [
            (
                "",
                r#"{"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":"h"},"finish_reason":null}],"usage":null}"#,
            ),
            ("keepalive", "not json"),
            (
                "",
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            ),
            ("", "[DONE]"),
            ("", "after the end, not read"),
        ];
        let response = stream(events).map_err(|err| err.to_string());
        assert_eq!(
            response.as_ref().map(|r| (r.content.as_str(), r.finish)),
            Ok(("h", FinishReason::Stop))
        );

        let body = br#"{"data":[{"index":1,"embedding":[1.0]},{"index":0,"embedding":[0.5]}]}"#;
        let vectors = embeddings(body, 2).map(|e| e.vectors);
        assert_eq!(vectors, Ok(vec![vec![0.5], vec![1.0]]));
    }

    #[test]
    fn bad_bytes_are_malformed_responses() {
        for body in [
            &b"{\"choices\":[{\"message\":{\"content\":\"bro"[..],
            b"\xff",
            b"",
        ] {
            assert!(
                matches!(completion(body), Err(ModelError::MalformedResponse { .. })),
                "{body:?}"
            );
        }
        assert!(matches!(
            stream([("", "{\"choices\":")]),
            Err(ModelError::MalformedResponse { .. })
        ));
        assert!(matches!(
            embeddings(b"[]", 1),
            Err(ModelError::MalformedResponse { .. })
        ));
    }
}
