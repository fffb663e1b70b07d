//! The names in the journal's layout that are not under a run's group — the index of
//! unfinished runs, owners, leases — and the ids of runs and of their calls.

use troupe_runtime::clock::now_ms;

/// The index of unfinished runs.
pub const OPEN_INDEX: &str = "wf-open";

/// The key naming the group that owns a run.
pub fn group_key(run: &str) -> String {
    format!("wf-group:{run}")
}

/// The lease key of a run.
pub fn lease_key(run: &str) -> String {
    format!("wf-lease:{run}")
}

/// Length of every run id: `r` + 19 hex digits (time and randomness) for runs submitted
/// through the API, `t` + 19 hex digits of a hash for the run of an ingress task.
pub const RUN_ID_LEN: usize = 20;

/// A new run id for a submission through the API: the time, then randomness.
pub fn new_run_id() -> String {
    format!(
        "r{:011x}{:08x}",
        now_ms() & 0xfff_ffff_ffff,
        rand::random::<u32>()
    )
}

/// The run id of the ingress task `task` of `group`: the same for every delivery of the task,
/// and different for every other (group, task) pair (76 bits of SHA-256; `group` holds no
/// `:`).
pub fn task_run_id(group: &str, task: &str) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(format!("{group}:{task}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("t{}", &hex[..RUN_ID_LEN - 1])
}

/// The id of the thread (and pool item) of the call journaled under `key` in run `run`,
/// restarted `restarts` times: `wf-{run}[-r{restarts}].{key, '/' -> '.'}`. Names hold only
/// letters, digits, `_` and `-`, so two different keys never make the same id.
pub fn call_id(run: &str, restarts: u32, key: &str) -> String {
    let restart = if restarts > 0 {
        format!("-r{restarts}")
    } else {
        String::new()
    };
    let mut id = String::with_capacity(4 + run.len() + restart.len() + key.len());
    id.push_str("wf-");
    id.push_str(run);
    id.push_str(&restart);
    id.push('.');
    id.extend(key.chars().map(|c| if c == '/' { '.' } else { c }));
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_have_one_length_and_a_task_always_gets_the_same() {
        assert_eq!(new_run_id().len(), RUN_ID_LEN);
        let id = task_run_id("acme", "t1");
        assert_eq!(id.len(), RUN_ID_LEN);
        assert_eq!(id, task_run_id("acme", "t1"));
        assert_ne!(id, task_run_id("acme", "t2"));
        assert_ne!(id, task_run_id("globex", "t1"));
    }

    #[test]
    fn call_ids_of_different_keys_differ_and_fit_in_a_thread_id() {
        let run = task_run_id("acme", "t1");
        for (a, b) in [
            (("a/b", 0), ("a-b", 0)),
            (("x", 1), ("x/r1", 0)),
            (("x", 1), ("x-r1", 0)),
            (("s/0/c", 0), ("s-0-c", 0)),
        ] {
            assert_ne!(
                call_id(&run, a.1, a.0),
                call_id(&run, b.1, b.0),
                "{a:?} {b:?}"
            );
        }
        let longest = call_id(&run, u32::MAX, &"k".repeat(troupe_config::MAX_CALL_KEY));
        assert_eq!(longest.len(), 128);
    }
}
