//! Fuzz target `task`: arbitrary bytes as a whole ingress entry (field names included),
//! through `troupe_ingress::wire::parse_entry` with small fixed limits, then through
//! producer authentication. Property: a `Rejection` or a task that satisfies the limits,
//! never a panic; a task passes authentication only with the signature of its own bytes.
//!
//! Input format: records `[name length: u8][name][value length: u16 LE][value]` until the
//! data ends (a record cut short keeps what is there), so names may be any bytes, empty or
//! repeated. The seeds in `fuzz/corpus/task` are entries in this format.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use troupe_ingress::wire::{self, Limits, Target, TaskResult};
use troupe_ingress::{sign, ProducerAuth};
use troupe_config::IngressAuth;
use troupe_runtime::store::StreamEntry;

/// The limits' results stream and the store's key prefix.
const RESULTS: &str = "results";
const PREFIX: &str = "tp:";
const MAX_INPUT_BYTES: usize = 64;
const MAX_ENTRY_BYTES: usize = 4096;
/// The producer secret of group `g` in the fuzzed daemon.
const SECRET: &str = "fuzz-secret";
/// The fuzzed daemon's clock: tasks expiring after it (and within 10 min) are fresh.
const NOW: u64 = 1_000_000;

/// Decodes the input format above.
fn entry(mut data: &[u8]) -> StreamEntry {
    let mut fields = Vec::new();
    while let Some((&len, rest)) = data.split_first() {
        let (name, rest) = rest.split_at(usize::from(len).min(rest.len()));
        let (len, rest) = match rest {
            [a, b, rest @ ..] => (usize::from(u16::from_le_bytes([*a, *b])), rest),
            rest => (rest.len(), &rest[rest.len()..]),
        };
        let (value, rest) = rest.split_at(len.min(rest.len()));
        fields.push((name.to_vec(), value.to_vec()));
        data = rest;
    }
    StreamEntry {
        id: "1-0".to_owned(),
        fields,
    }
}

fuzz_target!(|data: &[u8]| {
    let agents = BTreeSet::from(["assistant".to_owned(), "researcher".to_owned()]);
    let workflows = BTreeSet::from(["triage".to_owned()]);
    let limits = Limits {
        agents: &agents,
        workflows: &workflows,
        max_input_bytes: MAX_INPUT_BYTES,
        max_entry_bytes: MAX_ENTRY_BYTES,
        results: RESULTS,
        prefix: PREFIX,
    };
    let entry = entry(data);
    let task = match wire::parse_entry(&entry, &limits) {
        Ok(task) => task,
        Err(rejection) => {
            let message = rejection.to_string();
            assert!(message.len() < 1024, "a long message: {message}");
            let _ = rejection.kind();
            let letter = wire::DeadLetter::new(&entry, MAX_ENTRY_BYTES, rejection.kind(), message, 1);
            let _ = serde_json::to_vec(&letter);
            return;
        }
    };
    assert!(entry.byte_len() <= MAX_ENTRY_BYTES);
    assert!(!task.id.is_empty() && !task.id.contains(':'));
    assert!(!task.group.is_empty() && !task.group.contains(':') && task.group != "system");
    assert!(!task.user.is_empty() && !task.user.contains(':'));
    assert!(task.input.len() <= MAX_INPUT_BYTES);
    match &task.target {
        Target::Agent(agent) => assert!(agents.contains(agent)),
        Target::Workflow(workflow) => assert!(workflows.contains(workflow)),
    }
    // The task's own group's results stream, or the shared one when none was asked.
    let own = format!("{RESULTS}:{}", task.group);
    assert!(
        task.reply_to == RESULTS
            || task.reply_to == own
            || task.reply_to.starts_with(&format!("{own}:")),
        "reply_to {:?} of group {:?}",
        task.reply_to,
        task.group
    );
    // Authentication: only the signature of the task's own bytes under its group's secret.
    let settings = IngressAuth::Hmac {
        max_expiry: Duration::from_secs(600),
        secrets: BTreeMap::from([("g".to_owned(), "SECRET".to_owned())]),
    };
    if let Some(auth) = ProducerAuth::with_env(&settings, |_| Some(SECRET.to_owned())) {
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        if auth.verify(&entry, &task, now).is_ok() {
            let raw = entry.field(wire::TASK_FIELD).unwrap_or_default();
            let sig = entry.field(wire::SIG_FIELD).unwrap_or_default();
            let sig = String::from_utf8_lossy(sig).trim().to_ascii_lowercase();
            assert_eq!(task.group, "g");
            assert_eq!(sig, sign(SECRET.as_bytes(), raw));
            assert!(task.expires.is_some_and(|e| e > NOW && e <= NOW + 600));
        }
    }
    // The notice written back for it reads back as written.
    let notice = TaskResult::accepted(&task.id, &task.group, task.thread.clone(), None, None);
    let json = serde_json::to_string(&notice).unwrap_or_default();
    assert_eq!(serde_json::from_str::<TaskResult>(&json).ok(), Some(notice));
});
