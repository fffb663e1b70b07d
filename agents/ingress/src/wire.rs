//! The wire format of the ingress: tasks read from the ingress stream, results and dead
//! letters written back. Everything is one JSON document in one stream field, so that any
//! Redis client can publish and read with plain `XADD` / `XREAD`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

pub use troupe_runtime::error_kind::ErrorKind;
use troupe_runtime::store::StreamEntry;

pub use troupe_agents::task_result::{done_key, ErrorBody, Status, TaskResult, RESULT_FIELD};

/// The stream field holding a task's JSON.
pub const TASK_FIELD: &str = "task";
/// The stream field holding a task's signature (`[ingress.auth] mode = "hmac"`): the
/// lowercase hex HMAC-SHA256 of the `task` field's bytes with the group's secret.
pub const SIG_FIELD: &str = "sig";
/// The stream field holding a dead letter's JSON.
pub const DEAD_FIELD: &str = "dead";

/// Most fields an ingress entry may have (troupe reads `task` and `sig`; a few more are
/// tolerated for producers' own bookkeeping).
pub const MAX_FIELDS: usize = 16;
/// Longest field name of an ingress entry, in bytes.
pub const MAX_FIELD_NAME: usize = 64;
/// Longest `group`, in bytes.
pub const MAX_GROUP: usize = 64;
/// Longest `id`, `user`, `thread` and `reply_to` suffix, in bytes.
pub const MAX_NAME: usize = 128;
/// How much of a bad value an error message quotes.
const QUOTED: usize = 32;

/// A task as published: `{"id", "agent" | "workflow", "input", "group", "user", "thread",
/// "reply_to", "stream", "expires"}`. Unknown fields are ignored.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
pub struct RawTask {
    /// Idempotency key; the entry id when absent (mandatory with producer authentication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The agent to ask.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The workflow to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// Text, or any JSON (passed on as its JSON text).
    #[serde(default)]
    pub input: serde_json::Value,
    /// Tenant group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// End user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// An existing thread of the group to continue (agents only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<String>,
    /// The stream the result goes to: `<results>:<group>` or `<results>:<group>:<suffix>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// Stream the answer's deltas (agents only).
    #[serde(default)]
    pub stream: bool,
    /// Unix time in seconds after which the task must not run (mandatory with producer
    /// authentication, optional otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
}

/// What a task runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An agent turn.
    Agent(String),
    /// A workflow run.
    Workflow(String),
}

/// A validated task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Task {
    /// Idempotency key (the entry id when the producer gave none).
    pub id: String,
    /// Whether the producer gave the id (rather than it being the entry id).
    pub id_given: bool,
    /// What to run.
    pub target: Target,
    /// The input text.
    pub input: String,
    /// Tenant group.
    pub group: String,
    /// End user.
    pub user: String,
    /// Thread to continue.
    pub thread: Option<String>,
    /// Where the result goes.
    pub reply_to: String,
    /// Stream the deltas.
    pub stream: bool,
    /// Unix time in seconds after which the task must not run.
    pub expires: Option<u64>,
}

/// Why an entry was refused without running it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The entry itself is unusable: a field name that is not UTF-8, empty or too long, too
    /// many fields, the `task` field twice.
    #[error("malformed entry: {0}")]
    MalformedEntry(String),
    /// The entry is larger than `max_entry_bytes`.
    #[error("entry of {bytes} bytes is over the limit of {max} bytes (max_entry_bytes)")]
    EntryTooLarge {
        /// The entry's size (field names and values).
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// No `task` field.
    #[error("the entry has no `task` field")]
    NoTaskField,
    /// The `task` field is not a JSON object of the wire format.
    #[error("the task is not valid JSON: {0}")]
    NotJson(String),
    /// A required field is missing or empty.
    #[error("missing field `{0}`")]
    Missing(&'static str),
    /// A field's value breaks its rule (charset, length).
    #[error("field `{field}` {reason}")]
    Invalid {
        /// The task field.
        field: &'static str,
        /// What is wrong, quoting at most a short prefix of the value.
        reason: String,
    },
    /// Neither or both of `agent` and `workflow`.
    #[error("a task names exactly one of `agent` and `workflow`")]
    Target,
    /// No such agent.
    #[error("unknown agent {0}")]
    UnknownAgent(String),
    /// No such workflow.
    #[error("unknown workflow {0}")]
    UnknownWorkflow(String),
    /// The input is larger than `max_input_bytes`.
    #[error("input of {bytes} bytes is over the limit of {max} bytes")]
    InputTooLarge {
        /// The input's size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The group is reserved for the daemon itself.
    #[error("the group {0:?} is reserved for crons: no task may be published for it")]
    ReservedGroup(&'static str),
    /// `reply_to` is not a results stream of the task's group.
    #[error(
        "reply_to {shown} must be {results}:{group} or start with {results}:{group}: \
         (a results stream of the task's own group, with or without the store's key prefix)"
    )]
    ReplyTo {
        /// A short prefix of the value given.
        shown: String,
        /// The results stream.
        results: String,
        /// The task's group.
        group: String,
    },
    /// Producer authentication failed: unsigned, forged, expired, replayed, or no id.
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),
}

impl Rejection {
    /// A short machine-readable kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Rejection::MalformedEntry(_) => ErrorKind::MalformedEntry,
            Rejection::EntryTooLarge { .. } => ErrorKind::EntryTooLarge,
            Rejection::NoTaskField => ErrorKind::NoTaskField,
            Rejection::NotJson(_) => ErrorKind::NotJson,
            Rejection::Missing(_) => ErrorKind::MissingField,
            Rejection::Invalid { .. } => ErrorKind::InvalidField,
            Rejection::Target => ErrorKind::Target,
            Rejection::UnknownAgent(_) => ErrorKind::UnknownAgent,
            Rejection::UnknownWorkflow(_) => ErrorKind::UnknownWorkflow,
            Rejection::InputTooLarge { .. } => ErrorKind::InputTooLarge,
            Rejection::ReservedGroup(_) => ErrorKind::ReservedGroup,
            Rejection::ReplyTo { .. } => ErrorKind::ReplyTo,
            Rejection::Unauthenticated(_) => ErrorKind::Unauthenticated,
        }
    }
}

/// At most [`QUOTED`] characters of `value`, quoted, with its size when cut: what an error
/// message may show of a value a producer sent.
pub fn quote(value: &str) -> String {
    let mut chars = value.char_indices();
    match chars.nth(QUOTED) {
        None => format!("{value:?}"),
        Some((end, _)) => format!("{:?}… ({} bytes)", &value[..end], value.len()),
    }
}

/// Whether `value` is 1 to `max` bytes of ASCII letters, digits and `extra`.
fn is_token(value: &str, max: usize, extra: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= max
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || extra.contains(&b))
}

/// Characters of ids, users and threads besides letters and digits: enough for UUIDs,
/// e-mail addresses and base64, never `:` (the key separator), white space, glob or hash-tag
/// characters.
const NAME_EXTRA: &[u8] = b"_-.@+=";

/// Checks a `group`: 1-64 ASCII letters, digits, `_` or `-` (it becomes part of store keys).
pub fn check_group(value: &str) -> Result<(), Rejection> {
    check_token(
        "group",
        value,
        MAX_GROUP,
        b"_-",
        "1-64 ASCII letters, digits, '_' or '-'",
    )
}

/// Checks an `id`, `user` or `thread`: 1-128 ASCII letters, digits or any of `_-.@+=`. With
/// [`check_group`], two different (group, id) pairs can never name the same key.
pub fn check_name(field: &'static str, value: &str) -> Result<(), Rejection> {
    let rule = "1-128 ASCII letters, digits or any of _ - . @ + =";
    check_token(field, value, MAX_NAME, NAME_EXTRA, rule)
}

fn check_token(
    field: &'static str,
    value: &str,
    max: usize,
    extra: &[u8],
    rule: &str,
) -> Result<(), Rejection> {
    if is_token(value, max, extra) {
        Ok(())
    } else {
        Err(Rejection::Invalid {
            field,
            reason: format!("is {}: it must be {rule}", quote(value)),
        })
    }
}

/// What a task is checked against.
#[derive(Debug, Clone)]
pub struct Limits<'a> {
    /// Configured agents.
    pub agents: &'a BTreeSet<String>,
    /// Configured workflows.
    pub workflows: &'a BTreeSet<String>,
    /// Largest input in bytes.
    pub max_input_bytes: usize,
    /// Largest entry (field names and values) in bytes.
    pub max_entry_bytes: usize,
    /// The results stream: a task's `reply_to` is `{results}:{group}[:suffix]`.
    pub results: &'a str,
    /// The store's key prefix: a `reply_to` may name its stream with it (the Redis key) or
    /// without (the store key).
    pub prefix: &'a str,
}

/// Checks the entry as a whole before anything in it is read: its size, its field names
/// (UTF-8, non-empty, short), how many there are, one `task` field. Returns the `task`
/// field's bytes.
fn check_entry<'e>(entry: &'e StreamEntry, limits: &Limits<'_>) -> Result<&'e [u8], Rejection> {
    let bytes = entry.byte_len();
    if bytes > limits.max_entry_bytes {
        return Err(Rejection::EntryTooLarge {
            bytes,
            max: limits.max_entry_bytes,
        });
    }
    if entry.fields.len() > MAX_FIELDS {
        return Err(Rejection::MalformedEntry(format!(
            "{} fields, more than {MAX_FIELDS}",
            entry.fields.len()
        )));
    }
    let mut task = None;
    for (index, (name, value)) in entry.fields.iter().enumerate() {
        let name = match std::str::from_utf8(name) {
            Ok(name) => name,
            Err(_) => {
                let shown = String::from_utf8_lossy(&name[..name.len().min(QUOTED)]).into_owned();
                return Err(Rejection::MalformedEntry(format!(
                    "field {index}'s name is not UTF-8 ({} bytes, starting {shown:?})",
                    name.len()
                )));
            }
        };
        if name.is_empty() {
            return Err(Rejection::MalformedEntry(format!(
                "field {index} has an empty name"
            )));
        }
        if name.len() > MAX_FIELD_NAME {
            return Err(Rejection::MalformedEntry(format!(
                "field {index}'s name {} is longer than {MAX_FIELD_NAME} bytes",
                quote(name)
            )));
        }
        if name == TASK_FIELD {
            if task.is_some() {
                return Err(Rejection::MalformedEntry(
                    "the `task` field is given twice".to_owned(),
                ));
            }
            task = Some(value.as_slice());
        }
    }
    task.ok_or(Rejection::NoTaskField)
}

/// Checks the entry (see [`check_entry`]), then parses and validates its `task` field.
pub fn parse_entry(entry: &StreamEntry, limits: &Limits<'_>) -> Result<Task, Rejection> {
    let task = check_entry(entry, limits)?;
    parse(&entry.id, task, limits)
}

fn required(value: Option<String>, name: &'static str) -> Result<String, Rejection> {
    value
        .filter(|v| !v.trim().is_empty())
        .ok_or(Rejection::Missing(name))
}

/// A serde_json error as a short message (its text may quote the value).
fn json_error(err: &serde_json::Error) -> String {
    let text = err.to_string();
    match text.char_indices().nth(200) {
        None => text,
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

/// Parses and validates `bytes`, the `task` field of the entry `entry_id`.
fn parse(entry_id: &str, bytes: &[u8], limits: &Limits<'_>) -> Result<Task, Rejection> {
    let raw: RawTask =
        serde_json::from_slice(bytes).map_err(|err| Rejection::NotJson(json_error(&err)))?;
    let group = required(raw.group, "group")?;
    check_group(&group)?;
    if group == troupe_config::SYSTEM_GROUP {
        return Err(Rejection::ReservedGroup(troupe_config::SYSTEM_GROUP));
    }
    let user = required(raw.user, "user")?;
    check_name("user", &user)?;
    let id_given = raw.id.as_deref().is_some_and(|id| !id.is_empty());
    let id = match raw.id.filter(|id| !id.is_empty()) {
        Some(id) => {
            check_name("id", &id)?;
            id
        }
        None => entry_id.to_owned(),
    };
    let thread = match raw.thread.filter(|t| !t.is_empty()) {
        Some(thread) => {
            check_name("thread", &thread)?;
            Some(thread)
        }
        None => None,
    };
    let target = match (raw.agent, raw.workflow) {
        (Some(agent), None) if limits.agents.contains(&agent) => Target::Agent(agent),
        (Some(agent), None) => return Err(Rejection::UnknownAgent(quote(&agent))),
        (None, Some(workflow)) if limits.workflows.contains(&workflow) => {
            Target::Workflow(workflow)
        }
        (None, Some(workflow)) => return Err(Rejection::UnknownWorkflow(quote(&workflow))),
        _ => return Err(Rejection::Target),
    };
    let input = match raw.input {
        serde_json::Value::Null => return Err(Rejection::Missing("input")),
        serde_json::Value::String(text) => text,
        other => other.to_string(),
    };
    if input.len() > limits.max_input_bytes {
        return Err(Rejection::InputTooLarge {
            bytes: input.len(),
            max: limits.max_input_bytes,
        });
    }
    let reply_to = match raw.reply_to {
        None => limits.results.to_owned(),
        Some(stream) => reply_to(stream, &group, limits)?,
    };
    Ok(Task {
        id,
        id_given,
        target,
        input,
        group,
        user,
        thread,
        reply_to,
        stream: raw.stream,
        expires: raw.expires,
    })
}

/// Checks that `stream` is a results stream of `group`: `{results}:{group}` or
/// `{results}:{group}:{suffix}` (suffix: a name), with or without the store's prefix.
fn reply_to(stream: String, group: &str, limits: &Limits<'_>) -> Result<String, Rejection> {
    let local = match stream.strip_prefix(limits.prefix) {
        Some(local) if !limits.prefix.is_empty() => local,
        _ => stream.as_str(),
    };
    let ok = local
        .strip_prefix(limits.results)
        .and_then(|rest| rest.strip_prefix(':'))
        .and_then(|rest| rest.strip_prefix(group))
        .is_some_and(|rest| {
            rest.is_empty()
                || rest
                    .strip_prefix(':')
                    .is_some_and(|suffix| is_token(suffix, MAX_NAME, NAME_EXTRA))
        });
    if ok {
        Ok(local.to_owned())
    } else {
        Err(Rejection::ReplyTo {
            shown: quote(&stream),
            results: limits.results.to_owned(),
            group: group.to_owned(),
        })
    }
}

/// Most bytes of one field value a dead letter keeps (an entry refused for its size keeps
/// a prefix; every other dead letter holds its entry whole, so it can be retried).
pub const DEAD_VALUE_BYTES: usize = 4096;

/// A dead letter, written to the dead stream in the field `dead`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The ingress entry's id.
    pub entry: String,
    /// The entry's fields (names and values as text, lossy for non-UTF-8 bytes).
    pub fields: Vec<(String, String)>,
    /// Whether `fields` holds only a part of the entry (the first [`MAX_FIELDS`] fields,
    /// the first [`DEAD_VALUE_BYTES`] of each value): set for entries refused for their size.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Why it was dead-lettered.
    pub reason: String,
    /// Machine-readable reason kind (`not_json`, …, `max_deliveries`).
    pub kind: ErrorKind,
    /// How many times it had been delivered.
    pub deliveries: u64,
}

impl DeadLetter {
    /// The dead letter of `entry`: its fields as text, cut to a bounded size when the entry
    /// is over `max_entry_bytes` or has too many fields.
    pub fn new(
        entry: &StreamEntry,
        max_entry_bytes: usize,
        kind: ErrorKind,
        reason: String,
        deliveries: u64,
    ) -> DeadLetter {
        let cut = entry.byte_len() > max_entry_bytes || entry.fields.len() > MAX_FIELDS;
        let text = |bytes: &[u8], max: usize| -> String {
            let bytes = if cut {
                &bytes[..bytes.len().min(max)]
            } else {
                bytes
            };
            String::from_utf8_lossy(bytes).into_owned()
        };
        let fields = entry
            .fields
            .iter()
            .take(if cut { MAX_FIELDS } else { usize::MAX })
            .map(|(k, v)| (text(k, MAX_FIELD_NAME), text(v, DEAD_VALUE_BYTES)))
            .collect();
        DeadLetter {
            entry: entry.id.clone(),
            fields,
            truncated: cut,
            reason,
            kind,
            deliveries,
        }
    }
}

#[cfg(test)]
mod tests;
