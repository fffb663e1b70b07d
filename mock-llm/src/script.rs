//! Scripted replies shared by the mock server and troupe's in-process scripted model: rules
//! that map the last user message to an answer or tool calls, the word-count token rule and
//! the hashed embeddings both report.
//!
//! # Rules file
//!
//! ```toml
//! # Reply when no rule matches; `{input}` is the last user message. Default: "You said: {input}".
//! default_reply = "You said: {input}"
//! # Reply after tool results, when the matching rule has no `follow_up`; `{tool_results}` is
//! # the results joined by "; ". Default: "Here is what the tools returned: {tool_results}".
//! follow_up = "The tools say: {tool_results}"
//!
//! [[rules]]
//! contains = "weather"            # case-insensitive substring of the last user message
//! reply = "It is sunny."          # the answer ({input} allowed)
//!
//! [[rules]]
//! contains = "2 + 2"
//! tool_calls = [{ name = "calculator", arguments = { expression = "2 + 2" } }]
//! follow_up = "2 + 2 = {tool_results}."
//!
//! [[rules]]
//! contains = "flood"
//! tool_calls = [{ name = "current_time", repeat = 5000 }]   # the same call 5,000 times
//! ```
//!
//! Rules are tried in order; the first whose `contains` occurs in the last user message wins.
//! A rule's `arguments` table is sent as JSON text; a string is sent verbatim (so a rule can
//! produce malformed arguments on purpose). Without a matching rule, when tools are offered and
//! the last user message names one of them, that tool is called with `{}`; otherwise the
//! default reply is given. When the conversation ends with tool results, the follow-up is given.
//!
//! # Token counting
//!
//! A token is a whitespace-separated word. Prompt tokens are the words of every message's
//! content; completion tokens are the words of the reply text plus, for each tool call, its
//! name (one word) and the words of its arguments text.

use std::hash::Hasher as _;

use fnv::FnvHasher;
use serde::Deserialize;

use crate::error::MockError;

/// The answer when no rule matches, unless the script sets `default_reply`.
pub const DEFAULT_REPLY: &str = "You said: {input}";
/// The answer after tool results, unless the rule or the script sets `follow_up`.
pub const DEFAULT_FOLLOW_UP: &str = "Here is what the tools returned: {tool_results}";
/// The most times a rule's call is repeated (`repeat`), whatever it asks.
pub const MAX_REPEAT: usize = 100_000;
/// Dimension of embeddings unless configured otherwise.
pub const DEFAULT_DIMENSIONS: usize = 384;

/// A set of reply rules (the format of a rules file).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// Rules, tried in order.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Template of the answer when no rule matches (`{input}`).
    #[serde(default)]
    pub default_reply: Option<String>,
    /// Template of the answer after tool results (`{input}`, `{tool_results}`).
    #[serde(default)]
    pub follow_up: Option<String>,
}

/// One rule: when the last user message contains `contains`, reply and/or call tools.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Case-insensitive substring of the last user message that selects this rule.
    pub contains: String,
    /// Answer text (`{input}` is replaced by the last user message).
    #[serde(default)]
    pub reply: Option<String>,
    /// Tool calls to request.
    #[serde(default)]
    pub tool_calls: Vec<ScriptedCall>,
    /// Answer once the tool results are in (`{input}`, `{tool_results}`).
    #[serde(default)]
    pub follow_up: Option<String>,
}

/// A tool call a rule requests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptedCall {
    /// The tool's name.
    pub name: String,
    /// The arguments: a table is sent as JSON, a string verbatim; absent means `{}`.
    #[serde(default)]
    pub arguments: Option<serde_json::Value>,
    /// How many times the call is requested in the one reply (default once, at most
    /// [`MAX_REPEAT`]): a flood of tool calls.
    #[serde(default)]
    pub repeat: Option<usize>,
}

/// One message of the conversation, as the script sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Turn<'a> {
    /// `"system"`, `"user"`, `"assistant"` or `"tool"`.
    pub role: &'a str,
    /// The text.
    pub content: &'a str,
    /// How many tool calls an assistant message made (for call ids).
    pub tool_calls: usize,
}

/// The script's answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// Text (may be empty when tools are called).
    pub text: String,
    /// Tool calls, in order.
    pub tool_calls: Vec<ReplyCall>,
}

/// One tool call of a [`Reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyCall {
    /// `call_N`, unique within the conversation.
    pub id: String,
    /// The tool's name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

impl Script {
    /// Parses a rules file's text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Script, MockError> {
        toml::from_str(text).map_err(|err| MockError::Parse {
            origin: origin.to_owned(),
            message: err.to_string(),
        })
    }

    /// Reads and parses a rules file.
    pub fn from_file(path: &std::path::Path) -> Result<Script, MockError> {
        let text = std::fs::read_to_string(path).map_err(|source| MockError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Script::from_toml(&text, &path.display().to_string())
    }

    /// The reply to `messages` when the tools named `tools` are offered.
    pub fn reply(&self, messages: &[Turn<'_>], tools: &[&str]) -> Reply {
        let last_user = messages.iter().rposition(|turn| turn.role == "user");
        let input = last_user.map_or("", |at| messages[at].content);
        let lowered = input.to_lowercase();
        let rule = self
            .rules
            .iter()
            .find(|rule| lowered.contains(&rule.contains.to_lowercase()));

        if messages.last().is_some_and(|turn| turn.role == "tool") {
            let after_user = last_user.map_or(0, |at| at + 1);
            let results: Vec<&str> = messages[after_user..]
                .iter()
                .filter(|turn| turn.role == "tool")
                .map(|turn| turn.content)
                .collect();
            let template = rule
                .and_then(|rule| rule.follow_up.as_deref())
                .or(self.follow_up.as_deref())
                .unwrap_or(DEFAULT_FOLLOW_UP);
            return Reply {
                text: fill(template, input, &results.join("; ")),
                tool_calls: Vec::new(),
            };
        }

        let earlier_calls: usize = messages.iter().map(|turn| turn.tool_calls).sum();
        let call_id = |i: usize| format!("call_{}", earlier_calls + i + 1);
        let default = || {
            fill(
                self.default_reply.as_deref().unwrap_or(DEFAULT_REPLY),
                input,
                "",
            )
        };

        if let Some(rule) = rule {
            let tool_calls: Vec<ReplyCall> = rule
                .tool_calls
                .iter()
                .flat_map(|call| {
                    std::iter::repeat_n(call, call.repeat.unwrap_or(1).min(MAX_REPEAT))
                })
                .enumerate()
                .map(|(i, call)| ReplyCall {
                    id: call_id(i),
                    name: call.name.clone(),
                    arguments: arguments_text(call.arguments.as_ref()),
                })
                .collect();
            let text = match &rule.reply {
                Some(reply) => fill(reply, input, ""),
                None if tool_calls.is_empty() => default(),
                None => String::new(),
            };
            return Reply { text, tool_calls };
        }

        if let Some(tool) = tools
            .iter()
            .find(|tool| !tool.is_empty() && lowered.contains(&tool.to_lowercase()))
        {
            return Reply {
                text: String::new(),
                tool_calls: vec![ReplyCall {
                    id: call_id(0),
                    name: (*tool).to_owned(),
                    arguments: "{}".to_owned(),
                }],
            };
        }

        Reply {
            text: default(),
            tool_calls: Vec::new(),
        }
    }
}

impl Reply {
    /// Completion tokens of this reply (see the module docs).
    pub fn completion_tokens(&self) -> u64 {
        count_words(&self.text)
            + self
                .tool_calls
                .iter()
                .map(|call| count_words(&call.name) + count_words(&call.arguments))
                .sum::<u64>()
    }
}

/// Prompt tokens of a conversation: the words of every message's content.
pub fn prompt_tokens<'a>(contents: impl IntoIterator<Item = &'a str>) -> u64 {
    contents.into_iter().map(count_words).sum()
}

/// The token rule: whitespace-separated words.
pub fn count_words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Splits text into word-sized stream deltas (leading whitespace stays with its word) whose
/// concatenation is exactly `text`.
pub fn word_pieces(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut previous_was_word = false;
    for (at, ch) in text.char_indices() {
        let is_space = ch.is_whitespace();
        if is_space && previous_was_word {
            pieces.push(&text[start..at]);
            start = at;
        }
        previous_was_word = !is_space;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// A deterministic embedding: hashed lower-case word features (FNV-1a, signed), L2-normalised.
/// Texts sharing words get a positive cosine similarity. An empty text gets a unit vector on
/// the first axis.
pub fn embed(text: &str, dimensions: usize) -> Vec<f32> {
    let mut vector = vec![0.0_f32; dimensions];
    if dimensions == 0 {
        return vector;
    }
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
    {
        let hash = fnv1a(word.to_lowercase().as_bytes());
        let slot = (hash % dimensions as u64) as usize;
        vector[slot] += if hash >> 63 == 1 { -1.0 } else { 1.0 };
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    } else {
        vector[0] = 1.0;
    }
    vector
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hasher = FnvHasher::default();
    hasher.write(bytes);
    hasher.finish()
}

fn fill(template: &str, input: &str, tool_results: &str) -> String {
    template
        .replace("{input}", input)
        .replace("{tool_results}", tool_results)
}

fn arguments_text(arguments: Option<&serde_json::Value>) -> String {
    match arguments {
        None => "{}".to_owned(),
        Some(serde_json::Value::String(text)) => text.clone(),
        Some(value) => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(content: &str) -> Turn<'_> {
        Turn {
            role: "user",
            content,
            tool_calls: 0,
        }
    }

    fn script(text: &str) -> Script {
        match Script::from_toml(text, "rules.toml") {
            Ok(script) => script,
            Err(err) => panic!("{err}"),
        }
    }

    #[test]
    fn default_reply_echoes_the_last_user_message() {
        let reply = Script::default().reply(&[user("hello there")], &[]);
        assert_eq!(reply.text, "You said: hello there");
        assert!(reply.tool_calls.is_empty());
        assert_eq!(reply.completion_tokens(), 4);
    }

    #[test]
    fn rules_match_case_insensitively_and_call_tools() {
        let script = script(
            r#"
[[rules]]
contains = "WEATHER"
reply = "Sunny for {input}"

[[rules]]
contains = "add"
tool_calls = [{ name = "calculator", arguments = { expression = "2 + 2" } }]
follow_up = "It is {tool_results}."
"#,
        );
        assert_eq!(
            script.reply(&[user("the weather?")], &[]).text,
            "Sunny for the weather?"
        );
        let reply = script.reply(&[user("please add")], &[]);
        assert_eq!(reply.text, "");
        assert_eq!(reply.tool_calls.len(), 1);
        assert_eq!(reply.tool_calls[0].id, "call_1");
        assert_eq!(reply.tool_calls[0].arguments, r#"{"expression":"2 + 2"}"#);
        let after = [
            user("please add"),
            Turn {
                role: "assistant",
                content: "",
                tool_calls: 1,
            },
            Turn {
                role: "tool",
                content: "4",
                tool_calls: 0,
            },
        ];
        assert_eq!(script.reply(&after, &[]).text, "It is 4.");
    }

    #[test]
    fn a_named_tool_is_called_without_rules() {
        let reply = Script::default().reply(&[user("use the Calculator please")], &["calculator"]);
        assert_eq!(reply.tool_calls[0].name, "calculator");
        assert_eq!(reply.tool_calls[0].arguments, "{}");
        let reply = Script::default().reply(&[user("no tools here")], &["calculator"]);
        assert!(reply.tool_calls.is_empty());
    }

    #[test]
    fn a_repeated_call_floods_one_reply_with_unique_ids() {
        let script = script(
            r#"
[[rules]]
contains = "flood"
tool_calls = [{ name = "a", repeat = 3 }, { name = "b" }, { name = "c", repeat = 0 }]

[[rules]]
contains = "absurd"
tool_calls = [{ name = "a", repeat = 1000000000000 }]
"#,
        );
        let reply = script.reply(&[user("flood me")], &[]);
        let calls: Vec<(&str, &str)> = reply
            .tool_calls
            .iter()
            .map(|c| (c.id.as_str(), c.name.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("call_1", "a"),
                ("call_2", "a"),
                ("call_3", "a"),
                ("call_4", "b")
            ]
        );
        let reply = script.reply(&[user("absurd")], &[]);
        assert_eq!(reply.tool_calls.len(), MAX_REPEAT);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        assert!(Script::from_toml("[[rules]]\ncontains = \"a\"\nanswer = \"b\"\n", "r").is_err());
    }

    #[test]
    fn word_pieces_concatenate_to_the_text() {
        for text in ["", "one", "  two  words ", "a\nb\tc", "héllo wörld"] {
            assert_eq!(word_pieces(text).concat(), text);
        }
        assert_eq!(word_pieces("You said: hi"), ["You", " said:", " hi"]);
    }

    #[test]
    fn embeddings_are_deterministic_and_normalised() {
        let a = embed("the cat sat", 384);
        assert_eq!(a, embed("The cat, sat!", 384));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        let b = embed("a cat", 384);
        let dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!(dot > 0.0);
        assert_eq!(embed("", 8)[0], 1.0);
    }
}
