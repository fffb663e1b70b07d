//! `Replay::fold`, data-driven: a journal in a line notation goes in, the replay decision
//! (what to reuse, what was in flight, which deadlines to keep) comes out.
//!
//! Journal lines: `started KEY`, `completed KEY=OUTPUT` (`completed KEY` without an output),
//! `failed KEY`, `waiting KEY@MS`, `restarted STEP`, `note`, `adopted`, `finished`.
//! Expected: `completed` as `KEY=OUTPUT` pairs, `started` and `deadlines` (`KEY@MS`) as lists.

use std::collections::{BTreeMap, BTreeSet};

use troupe_workflow::journal::{Entry, EntryKind, OutputRef, Replay};

/// The top-level steps of the workflow the cases run, in order.
const ORDER: [&str; 4] = ["classify", "research", "wait", "report"];

struct Case {
    name: &'static str,
    journal: &'static str,
    completed: &'static [&'static str],
    started: &'static [&'static str],
    deadlines: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "an empty journal reuses nothing",
        journal: "",
        completed: &[],
        started: &[],
        deadlines: &[],
    },
    Case {
        name: "a completed step is reused",
        journal: "started classify\ncompleted classify=tech",
        completed: &["classify=tech"],
        started: &[],
        deadlines: &[],
    },
    Case {
        name: "a step in flight at a crash is started, not completed",
        journal: "started classify\ncompleted classify=tech\nstarted research/web",
        completed: &["classify=tech"],
        started: &["research/web"],
        deadlines: &[],
    },
    Case {
        name: "a failed attempt then a retry that completes keeps the retry's output",
        journal: "started classify\nfailed classify\nstarted classify\ncompleted classify=general",
        completed: &["classify=general"],
        started: &[],
        deadlines: &[],
    },
    Case {
        name: "parallel calls are folded one by one",
        journal: "started research/web\nstarted research/news\ncompleted research/web=w\nstarted research/academic\ncompleted research/academic=a",
        completed: &["research/academic=a", "research/web=w"],
        started: &["research/news"],
        deadlines: &[],
    },
    Case {
        name: "a wait keeps its deadline, the last one journaled",
        journal: "started wait\nwaiting wait@1000\nadopted\nwaiting wait@2000",
        completed: &[],
        started: &["wait"],
        deadlines: &["wait@2000"],
    },
    Case {
        name: "a completion without an output ends the call but reuses nothing",
        journal: "started classify\ncompleted classify",
        completed: &[],
        started: &[],
        deadlines: &[],
    },
    Case {
        name: "notes, adoptions and the end change nothing",
        journal: "note\nstarted classify\nadopted\ncompleted classify=x\nfinished",
        completed: &["classify=x"],
        started: &[],
        deadlines: &[],
    },
    Case {
        name: "a restart voids its step and every later one, branches and deadlines included",
        journal: "completed classify=c\ncompleted research/web=w\ncompleted research=r\nwaiting wait@500\nstarted report\nrestarted research",
        completed: &["classify=c"],
        started: &[],
        deadlines: &[],
    },
    Case {
        name: "what completes after a restart is reused again",
        journal: "completed classify=c\ncompleted research=r1\nrestarted research\nstarted research/web\ncompleted research/web=w2\ncompleted research=r2",
        completed: &["classify=c", "research/web=w2", "research=r2"],
        started: &[],
        deadlines: &[],
    },
    Case {
        name: "a restart from the first step voids everything before it",
        journal: "completed classify=c\ncompleted research=r\nrestarted classify\nstarted classify",
        completed: &[],
        started: &["classify"],
        deadlines: &[],
    },
    Case {
        name: "a restart from a step the workflow no longer has voids everything",
        journal: "completed classify=c\ncompleted research=r\nrestarted gone",
        completed: &[],
        started: &[],
        deadlines: &[],
    },
];

fn entry(line: &str) -> Entry {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let kind = match verb {
        "started" => EntryKind::Started,
        "completed" => EntryKind::Completed,
        "failed" => EntryKind::AttemptFailed,
        "waiting" => EntryKind::Waiting,
        "restarted" => EntryKind::Restarted,
        "note" => EntryKind::Note,
        "adopted" => EntryKind::Adopted,
        "finished" => EntryKind::Finished,
        other => panic!("unknown journal line {other:?}"),
    };
    let (step, output) = match rest.split_once('=') {
        Some((step, output)) => (step, Some(OutputRef::Inline(output.to_owned()))),
        None => (rest, None),
    };
    let (step, until) = match step.split_once('@') {
        Some((step, at)) => (step, Some(at.parse().expect("a deadline in ms"))),
        None => (step, None),
    };
    let mut entry = Entry::new(step, kind);
    entry.output = output;
    entry.until = until;
    entry
}

#[test]
fn replay_folds_each_journal_into_its_decision() {
    let order: Vec<String> = ORDER.iter().map(|s| (*s).to_owned()).collect();
    for case in CASES {
        let entries: Vec<Entry> = case
            .journal
            .lines()
            .filter(|l| !l.is_empty())
            .map(entry)
            .collect();
        let replay = Replay::fold(&entries, &order);
        let completed: BTreeMap<String, String> = replay
            .completed
            .iter()
            .map(|(k, v)| match v {
                OutputRef::Inline(text) => (k.clone(), text.clone()),
                OutputRef::Stored { hash, .. } => (k.clone(), format!("#{hash}")),
            })
            .collect();
        let expected: BTreeMap<String, String> = case
            .completed
            .iter()
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("KEY=OUTPUT");
                (k.to_owned(), v.to_owned())
            })
            .collect();
        assert_eq!(completed, expected, "{}: completed", case.name);
        let started: BTreeSet<String> = case.started.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(replay.started, started, "{}: started", case.name);
        let deadlines: BTreeMap<String, u64> = case
            .deadlines
            .iter()
            .map(|pair| {
                let (k, v) = pair.split_once('@').expect("KEY@MS");
                (k.to_owned(), v.parse().expect("ms"))
            })
            .collect();
        assert_eq!(replay.deadlines, deadlines, "{}: deadlines", case.name);
    }
}
