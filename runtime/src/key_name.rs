//! Names that become parts of store keys (groups, users, thread ids, namespaces…): one rule,
//! [`is_key_name`]; one type for a name known to keep it, [`KeyName`], which the types that
//! build keys (a thread's id, a knowledge base's keys) hold; and one way to say a name breaks
//! it, [`InvalidKeyName`], which each crate's error takes as its `Invalid` variant.

use std::fmt;
use std::ops::Deref;

/// How many characters of a bad name an error quotes.
const QUOTED: usize = 64;

/// A name that cannot be part of a store key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what}: {}", self.detail())]
pub struct InvalidKeyName {
    /// What the name names (`group`, `user`, `thread id`, `namespace`…).
    pub what: &'static str,
    /// The name, cut to its first characters.
    pub value: String,
}

impl InvalidKeyName {
    /// Why, without the `invalid {what}` prefix.
    pub fn detail(&self) -> String {
        format!(
            "{:?} must be 1-128 characters without white space, and it must not contain ':'",
            self.value
        )
    }
}

/// A name that can be part of a store key ([`is_key_name`]): made only by [`KeyName::new`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KeyName(String);

impl KeyName {
    /// `value` as a key name, or an error naming `what` (`group`, `namespace`…).
    pub fn new(what: &'static str, value: &str) -> Result<KeyName, InvalidKeyName> {
        check_key_name(what, value)?;
        Ok(KeyName(value.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for KeyName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for KeyName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `Ok` when `value` can be part of a store key ([`is_key_name`]), else an error naming
/// `what`.
pub fn check_key_name(what: &'static str, value: &str) -> Result<(), InvalidKeyName> {
    if is_key_name(value) {
        return Ok(());
    }
    let mut quoted: String = value.chars().take(QUOTED).collect();
    if quoted.len() < value.len() {
        quoted.push('…');
    }
    Err(InvalidKeyName {
        what,
        value: quoted,
    })
}

/// Whether `value` can be part of a store key: 1-128 characters, no `:` (the key separator)
/// and no white space.
pub fn is_key_name(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 128
        && !value.contains(':')
        && !value.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_names_are_short_and_free_of_separators() {
        assert!(is_key_name("acme-1.x"));
        assert!(!is_key_name(""));
        assert!(!is_key_name("a:b"));
        assert!(!is_key_name("a b"));
        assert!(is_key_name(&"k".repeat(128)));
        assert!(!is_key_name(&"k".repeat(129)));
    }

    #[test]
    fn a_key_name_is_made_only_from_a_good_name() {
        let name = KeyName::new("group", "acme").expect("a good name");
        assert_eq!(name.as_str(), "acme");
        assert_eq!(format!("rag:{name}:x"), "rag:acme:x");
        let err = KeyName::new("namespace", "a b").expect_err("white space");
        assert_eq!(err.what, "namespace");
    }

    #[test]
    fn a_bad_name_is_named_and_quoted_short() {
        assert_eq!(check_key_name("group", "acme"), Ok(()));
        let err = check_key_name("group", "a:b").expect_err("a separator");
        assert_eq!(
            err.to_string(),
            "invalid group: \"a:b\" must be 1-128 characters without white space, and it must not contain ':'"
        );
        let err = check_key_name("user", &"x".repeat(500)).expect_err("too long");
        assert_eq!(err.value, format!("{}…", "x".repeat(64)));
    }
}

/// `parts` joined into one key, allocated once at its length. For keys built on every write,
/// where `format!` (which guesses the length from the literal parts and grows) costs several
/// times as much.
pub fn join(parts: &[&str]) -> String {
    let mut key = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        key.push_str(part);
    }
    key
}
