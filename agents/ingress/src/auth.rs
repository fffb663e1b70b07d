//! Producer authentication (`[ingress.auth] mode = "hmac"`): a task proves which group it
//! was published for with an HMAC-SHA256 of its raw `task` bytes under that group's secret,
//! carried in the entry's `sig` field (lowercase hex). A signed task must also carry an `id`
//! and an `expires` (Unix seconds, at most `max_expiry` ahead): an expired task never runs,
//! and a second entry with the same signed task id is a replay (see
//! [`super::IngressActor`], which records each id's first entry until it expires).
//!
//! Secrets are read once from the environment variables the config names, kept in
//! [`SecretBox`]es, and never logged, stored or put in an error message.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretBox};
use sha2::Sha256;
use troupe_config::IngressAuth;
use troupe_runtime::store::StreamEntry;

use super::wire::{quote, Rejection, Task, SIG_FIELD};

type HmacSha256 = Hmac<Sha256>;

/// The lowercase hex HMAC-SHA256 of `task` (the raw bytes of the entry's `task` field)
/// under `secret`: what a producer puts in the entry's `sig` field.
pub fn sign(secret: &[u8], task: &[u8]) -> String {
    // An HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    match HmacSha256::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(task);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// One group's secret, or the variable that should have held it.
enum Secret {
    Key(SecretBox<Vec<u8>>),
    Unset { var: String },
}

/// The producer secrets of every group, and the expiry rule.
pub struct ProducerAuth {
    max_expiry: Duration,
    secrets: BTreeMap<String, Secret>,
}

impl fmt::Debug for ProducerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProducerAuth")
            .field("max_expiry", &self.max_expiry)
            .field("groups", &self.secrets.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl ProducerAuth {
    /// The authentication `settings` ask for, with secrets read from the process
    /// environment; `None` when producers are not authenticated.
    pub fn from_settings(settings: &IngressAuth) -> Option<ProducerAuth> {
        Self::with_env(settings, |var| std::env::var(var).ok())
    }

    /// As [`ProducerAuth::from_settings`], reading variables with `lookup`. A variable that
    /// is unset or empty leaves its group unable to publish (logged once here, by name).
    pub fn with_env(
        settings: &IngressAuth,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Option<ProducerAuth> {
        let IngressAuth::Hmac {
            max_expiry,
            secrets,
        } = settings
        else {
            return None;
        };
        let secrets = secrets
            .iter()
            .map(|(group, var)| {
                let secret = match lookup(var).filter(|v| !v.is_empty()) {
                    Some(value) => Secret::Key(SecretBox::new(Box::new(value.into_bytes()))),
                    None => {
                        tracing::error!(
                            %group,
                            env = %var,
                            "ingress auth: the producer secret's variable is not set; \
                             the group's tasks are refused"
                        );
                        Secret::Unset { var: var.clone() }
                    }
                };
                (group.clone(), secret)
            })
            .collect();
        Some(ProducerAuth {
            max_expiry: *max_expiry,
            secrets,
        })
    }

    /// Checks that `entry` carries a valid signature of its `task` field for `task`'s group,
    /// and that `task` has an id and has not expired at `now`. Returns how long until it
    /// expires.
    pub fn verify(
        &self,
        entry: &StreamEntry,
        task: &Task,
        now: SystemTime,
    ) -> Result<Duration, Rejection> {
        let refuse = |why: String| Err(Rejection::Unauthenticated(why));
        let secret = match self.secrets.get(&task.group) {
            Some(Secret::Key(secret)) => secret,
            Some(Secret::Unset { var }) => {
                return refuse(format!(
                    "the secret of group {:?} ({var}) is not set in the daemon's environment",
                    task.group
                ))
            }
            None => {
                return refuse(format!(
                    "no producer secret is configured for group {:?}",
                    task.group
                ))
            }
        };
        let Some(sig) = entry.field(SIG_FIELD) else {
            return refuse(format!("unsigned: the entry has no `{SIG_FIELD}` field"));
        };
        let Some(raw) = entry.field(super::wire::TASK_FIELD) else {
            return refuse("the entry has no `task` field".to_owned());
        };
        let Ok(sig) = hex::decode(sig.trim_ascii()) else {
            return refuse(format!("the `{SIG_FIELD}` field is not hex"));
        };
        let Ok(mut mac) = HmacSha256::new_from_slice(secret.expose_secret()) else {
            return refuse("the group's secret cannot key an HMAC".to_owned());
        };
        mac.update(raw);
        // Constant time: `verify_slice` compares without an early exit.
        if mac.verify_slice(&sig).is_err() {
            return refuse(format!(
                "the signature does not match the task for group {:?}",
                task.group
            ));
        }
        if !task.id_given {
            return refuse("a signed task needs an `id`".to_owned());
        }
        let Some(expires) = task.expires else {
            return refuse("a signed task needs `expires` (Unix seconds)".to_owned());
        };
        let now_s = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        if expires <= now_s {
            return refuse(format!(
                "task {} expired at {expires}, {} s ago",
                quote(&task.id),
                now_s - expires
            ));
        }
        let left = Duration::from_secs(expires - now_s);
        if left > self.max_expiry {
            return refuse(format!(
                "expires is {} s ahead, more than max_expiry = {} s",
                left.as_secs(),
                self.max_expiry.as_secs()
            ));
        }
        Ok(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> ProducerAuth {
        let settings = IngressAuth::Hmac {
            max_expiry: Duration::from_secs(600),
            secrets: BTreeMap::from([
                ("acme".to_owned(), "ACME_SECRET".to_owned()),
                ("beta".to_owned(), "BETA_SECRET".to_owned()),
            ]),
        };
        ProducerAuth::with_env(&settings, |var| {
            (var == "ACME_SECRET").then(|| "acme-secret".to_owned())
        })
        .expect("hmac mode")
    }

    fn task(group: &str, id: Option<&str>, expires: Option<u64>) -> (Vec<u8>, Task) {
        let raw = serde_json::json!({"group": group, "id": id, "expires": expires}).to_string();
        let task = Task {
            id: id.unwrap_or("1-0").to_owned(),
            id_given: id.is_some(),
            target: super::super::wire::Target::Agent("echo".to_owned()),
            input: "hi".to_owned(),
            group: group.to_owned(),
            user: "u".to_owned(),
            thread: None,
            reply_to: "results".to_owned(),
            stream: false,
            expires,
        };
        (raw.into_bytes(), task)
    }

    fn entry(raw: &[u8], sig: Option<&str>) -> StreamEntry {
        let mut fields = vec![(b"task".to_vec(), raw.to_vec())];
        if let Some(sig) = sig {
            fields.push((b"sig".to_vec(), sig.as_bytes().to_vec()));
        }
        StreamEntry {
            id: "1-0".to_owned(),
            fields,
        }
    }

    #[test]
    fn only_a_fresh_task_signed_with_its_groups_secret_passes() {
        let auth = auth();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let fresh = Some(1_000_060);
        let (raw, t) = task("acme", Some("t1"), fresh);
        let good = sign(b"acme-secret", &raw);
        assert_eq!(
            auth.verify(&entry(&raw, Some(&good)), &t, now),
            Ok(Duration::from_secs(60))
        );
        let upper = good.to_uppercase();
        assert!(auth.verify(&entry(&raw, Some(&upper)), &t, now).is_ok());

        let refused = |e: StreamEntry, t: &Task| match auth.verify(&e, t, now) {
            Err(Rejection::Unauthenticated(why)) => why,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert!(refused(entry(&raw, None), &t).contains("unsigned"));
        let forged = sign(b"another-secret", &raw);
        assert!(refused(entry(&raw, Some(&forged)), &t).contains("does not match"));
        assert!(refused(entry(&raw, Some("zz")), &t).contains("not hex"));
        // The signature covers the bytes: a changed task does not pass.
        let mut tampered = raw.clone();
        tampered.push(b' ');
        assert!(refused(entry(&tampered, Some(&good)), &t).contains("does not match"));
        let (raw, t) = task("acme", Some("t1"), Some(999_999));
        let sig = sign(b"acme-secret", &raw);
        assert!(refused(entry(&raw, Some(&sig)), &t).contains("expired"));
        let (raw, t) = task("acme", Some("t1"), Some(1_000_000 + 601));
        let sig = sign(b"acme-secret", &raw);
        assert!(refused(entry(&raw, Some(&sig)), &t).contains("max_expiry"));
        let (raw, t) = task("acme", None, fresh);
        let sig = sign(b"acme-secret", &raw);
        assert!(refused(entry(&raw, Some(&sig)), &t).contains("needs an `id`"));
        let (raw, t) = task("acme", Some("t1"), None);
        let sig = sign(b"acme-secret", &raw);
        assert!(refused(entry(&raw, Some(&sig)), &t).contains("needs `expires`"));
        // A group whose secret is unset, and one without a secret, publish nothing.
        let (raw, t) = task("beta", Some("t1"), fresh);
        let why = refused(entry(&raw, Some(&sign(b"", &raw))), &t);
        assert!(
            why.contains("BETA_SECRET") && why.contains("not set"),
            "{why}"
        );
        let (raw, t) = task("gamma", Some("t1"), fresh);
        assert!(refused(entry(&raw, Some(&good)), &t).contains("no producer secret"));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let shown = format!("{:?}", auth());
        assert!(!shown.contains("acme-secret"), "{shown}");
    }
}
