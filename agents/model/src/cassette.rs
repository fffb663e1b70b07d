//! Cassettes: an `openai` model with `record = "FILE"` appends every successful exchange to a
//! JSON-lines file; a `scripted` model with `cassette = "FILE"` replays them offline.
//!
//! Each line is one exchange, tagged by `kind`:
//!
//! ```json
//! {"kind":"chat","model":"fast","request":{"messages":[...],"tools":[...],...},"response":{"content":"...",...}}
//! {"kind":"embed","model":"fast","inputs":["..."],"response":{"vectors":[[...]],"usage":...}}
//! ```
//!
//! Replay matches a request by its normalised content (roles, whitespace-collapsed texts, tool
//! call names and arguments, offered tool names; not temperature, token caps or call ids). The
//! first unused matching exchange answers; a request seen more often than recorded gets the
//! last match again; a request matching nothing gets the next unused exchange in file order;
//! when none is left the answer is [`ModelError::NoScriptedReply`].

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::{ChatRequest, ChatResponse, Embeddings, ModelError};

/// One recorded exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Exchange {
    /// A chat completion.
    Chat {
        model: String,
        request: ChatRequest,
        response: ChatResponse,
    },
    /// An embeddings call.
    Embed {
        model: String,
        inputs: Vec<String>,
        response: Embeddings,
    },
}

/// Appends exchanges to a cassette file.
#[derive(Debug, Clone)]
pub(super) struct Recorder {
    path: Arc<PathBuf>,
    lock: Arc<Mutex<()>>,
}

impl Recorder {
    pub(super) fn new(path: PathBuf) -> Recorder {
        Recorder {
            path: Arc::new(path),
            lock: Arc::new(Mutex::new(())),
        }
    }

    /// Appends one exchange as one line. A failure to write is logged, not returned: the
    /// model call itself succeeded.
    pub(super) async fn record(&self, exchange: Exchange) {
        let recorder = self.clone();
        let written = tokio::task::spawn_blocking(move || recorder.append(&exchange)).await;
        let failure = match written {
            Ok(Ok(())) => return,
            Ok(Err(err)) => err.to_string(),
            Err(err) => err.to_string(),
        };
        tracing::error!(path = %self.path.display(), error = %failure, "cannot record a model exchange");
    }

    fn append(&self, exchange: &Exchange) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(exchange)?;
        line.push(b'\n');
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path.as_path())?
            .write_all(&line)
    }
}

#[derive(Debug)]
struct Slot<K, V> {
    key: K,
    value: V,
    used: bool,
}

/// Recorded exchanges being replayed.
#[derive(Debug)]
pub(super) struct Replay {
    chats: Vec<Slot<String, ChatResponse>>,
    embeds: Vec<Slot<Vec<String>, Embeddings>>,
}

impl Replay {
    /// Reads a cassette; `model` names the scripted model in errors.
    pub(super) fn load(model: &str, path: &Path) -> Result<Replay, ModelError> {
        let invalid = |message: String| ModelError::invalid_request(model, message);
        let text = std::fs::read_to_string(path)
            .map_err(|err| invalid(format!("cannot read cassette {}: {err}", path.display())))?;
        let mut replay = Replay {
            chats: Vec::new(),
            embeds: Vec::new(),
        };
        for (number, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let exchange: Exchange = serde_json::from_str(line)
                .map_err(|err| invalid(format!("{}:{}: {err}", path.display(), number + 1)))?;
            match exchange {
                Exchange::Chat {
                    request, response, ..
                } => replay.chats.push(Slot {
                    key: chat_key(&request),
                    value: response,
                    used: false,
                }),
                Exchange::Embed {
                    inputs, response, ..
                } => replay.embeds.push(Slot {
                    key: inputs,
                    value: response,
                    used: false,
                }),
            }
        }
        Ok(replay)
    }

    /// The recorded answer to `request`.
    pub(super) fn chat(&mut self, request: &ChatRequest) -> Option<ChatResponse> {
        let key = chat_key(request);
        pick(&mut self.chats, |slot| slot.key == key, true)
    }

    /// The recorded vectors of `inputs` (matched exactly, no fallback).
    pub(super) fn embed(&mut self, inputs: &[String]) -> Option<Embeddings> {
        pick(&mut self.embeds, |slot| slot.key == inputs, false)
    }
}

fn pick<K, V: Clone>(
    slots: &mut [Slot<K, V>],
    matches: impl Fn(&Slot<K, V>) -> bool,
    in_order: bool,
) -> Option<V> {
    let index = slots
        .iter()
        .position(|slot| !slot.used && matches(slot))
        .or_else(|| slots.iter().rposition(&matches))
        .or_else(|| {
            let next = slots
                .iter()
                .position(|slot| !slot.used)
                .filter(|_| in_order);
            if next.is_some() {
                tracing::debug!(
                    "cassette: no recorded request matches; replaying the next one in order"
                );
            }
            next
        })?;
    slots[index].used = true;
    Some(slots[index].value.clone())
}

/// The normalised content of a request.
fn chat_key(request: &ChatRequest) -> String {
    let collapse = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
    let messages: Vec<serde_json::Value> = request
        .messages
        .iter()
        .map(|message| {
            let calls: Vec<serde_json::Value> = message
                .tool_calls
                .iter()
                .map(|call| {
                    let arguments = serde_json::from_str::<serde_json::Value>(&call.arguments)
                        .unwrap_or_else(|_| serde_json::Value::String(collapse(&call.arguments)));
                    serde_json::json!([call.name, arguments])
                })
                .collect();
            serde_json::json!([message.role, collapse(&message.content), calls])
        })
        .collect();
    serde_json::json!([messages, request.tool_names()]).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::{ChatMessage, Role};
    use crate::FinishReason;

    fn request(text: &str) -> ChatRequest {
        ChatRequest {
            messages: vec![ChatMessage::new(Role::User, text)],
            tools: Vec::new(),
            temperature: None,
            max_tokens: None,
        }
    }

    fn response(text: &str) -> ChatResponse {
        ChatResponse {
            content: text.to_owned(),
            tool_calls: Vec::new(),
            finish: FinishReason::Stop,
            usage: None,
            model: "m".to_owned(),
        }
    }

    fn slot(text: &str, answer: &str) -> Slot<String, ChatResponse> {
        Slot {
            key: chat_key(&request(text)),
            value: response(answer),
            used: false,
        }
    }

    #[test]
    fn replay_matches_content_then_order() {
        let mut replay = Replay {
            chats: vec![slot("a", "A1"), slot("b", "B"), slot("a", "A2")],
            embeds: Vec::new(),
        };
        let answer =
            |replay: &mut Replay, text: &str| replay.chat(&request(text)).map(|r| r.content);
        assert_eq!(answer(&mut replay, "a").as_deref(), Some("A1"));
        assert_eq!(answer(&mut replay, "  a ").as_deref(), Some("A2"));
        assert_eq!(answer(&mut replay, "a").as_deref(), Some("A2"));
        assert_eq!(answer(&mut replay, "zzz").as_deref(), Some("B"));
        assert_eq!(answer(&mut replay, "zzz"), None);
    }
}
