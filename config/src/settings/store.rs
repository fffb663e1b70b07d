//! `[store]`: which store backs durable state (memory or Redis).

use std::fmt;
use std::time::Duration;

/// The store backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSettings {
    /// In-process store: nothing survives a restart; one daemon only.
    Memory,
    /// Redis (or a compatible server).
    Redis(RedisSettings),
}

/// Connection settings of the Redis store. `Debug` redacts the URL's password.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// `redis://` or `rediss://` URL, possibly with credentials.
    pub url: String,
    /// Prefix of every key the daemon writes.
    pub prefix: String,
    /// Time allowed to open a connection.
    pub connect_timeout: Duration,
    /// Time allowed for one reply.
    pub response_timeout: Duration,
    /// Upper bound of the reconnect backoff.
    pub reconnect_max_delay: Duration,
}

impl RedisSettings {
    /// The URL with its password replaced by `***`, for logs and summaries.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &self.redacted_url())
            .field("prefix", &self.prefix)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("reconnect_max_delay", &self.reconnect_max_delay)
            .finish()
    }
}

/// `scheme://user:pass@host/..` -> `scheme://user:***@host/..`; a lone user-info part (which
/// Redis URLs may use for a password) becomes `***`.
pub(crate) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_owned();
    };
    let userinfo = match userinfo.split_once(':') {
        Some((user, _password)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}://{userinfo}@{host}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        for (url, expected) in [
            (
                "redis://user:pass@host:6379/0",
                "redis://user:***@host:6379/0",
            ),
            ("rediss://:s3cr@t@host", "rediss://:***@host"),
            ("redis://token@host/1", "redis://***@host/1"),
            ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
            ("not a url", "not a url"),
        ] {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn debug_hides_the_password() {
        let settings = RedisSettings {
            url: "redis://app:hunter2@db:6379".to_owned(),
            prefix: "troupe:".to_owned(),
            connect_timeout: Duration::from_secs(1),
            response_timeout: Duration::from_secs(1),
            reconnect_max_delay: Duration::from_secs(1),
        };
        let debug = format!("{settings:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        assert!(debug.contains("redis://app:***@db:6379"), "{debug}");
    }
}
