//! Public and reserved namespaces: the one used when none is named, the `_` prefix reserved
//! for troupe's own use (thread memory), and the writes that make a reserved namespace expire.

use std::time::Duration;

use troupe_runtime::store::Write;

use crate::error::RagError;
use crate::store::{check_name, Keys};

/// The namespace used when none is given.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The writes that make a namespace's entries, state and dimension expire after `ttl`.
pub fn expiring(keys: &Keys, ttl: Duration) -> [Write; 3] {
    [keys.entries(), keys.state(), keys.dim()].map(|key| Write::Expire { key, ttl })
}

/// Whether `namespace` is reserved for troupe's own use (thread memory).
pub fn is_reserved(namespace: &str) -> bool {
    namespace.starts_with('_')
}

/// The namespace a caller from outside names (the default when none), refusing reserved ones.
pub(crate) fn public_namespace(group: &str, namespace: Option<&str>) -> Result<String, RagError> {
    let namespace = namespace.unwrap_or(DEFAULT_NAMESPACE);
    check_name("namespace", namespace)?;
    if is_reserved(namespace) {
        return Err(RagError::Forbidden {
            group: group.to_owned(),
            namespace: namespace.to_owned(),
        });
    }
    Ok(namespace.to_owned())
}
