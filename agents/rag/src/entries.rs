//! Listing and deleting: the entries and namespaces of a group, the records of a namespace,
//! and the deletion of entries, records and whole namespaces.

use troupe_runtime::store::Write;

use crate::error::RagError;
use crate::handle::Rag;
use crate::reserved::{is_reserved, public_namespace};
use troupe_runtime::key_name::KeyName;

use crate::store::{decode, EntryRecord, Keys, NamespaceInfo};

impl Rag {
    /// The records of every entry of the namespace `keys`, at its current version (those
    /// whose chunks could not be read included).
    pub async fn records(&self, keys: &Keys) -> Result<Vec<EntryRecord>, RagError> {
        let loaded = self.loaded(keys).await?;
        Ok(loaded
            .entries
            .iter()
            .map(|e| e.record.clone())
            .chain(loaded.missing.iter().cloned())
            .collect())
    }

    /// Deletes the entry `key`; returns whether it existed.
    pub async fn delete_entry(
        &self,
        group: &str,
        namespace: Option<&str>,
        key: &str,
    ) -> Result<bool, RagError> {
        let namespace = public_namespace(group, namespace)?;
        self.delete_entry_in(group, &namespace, key).await
    }

    /// [`Rag::delete_entry`] in any namespace, reserved ones included.
    pub async fn delete_entry_in(
        &self,
        group: &str,
        namespace: &str,
        key: &str,
    ) -> Result<bool, RagError> {
        let keys = Keys::new(group, namespace)?;
        let store = &self.inner.store;
        let record: EntryRecord = match store.hget(&keys.entries(), key).await? {
            Some(bytes) if !bytes.is_empty() => decode(&keys.entries(), &bytes)?,
            _ => return Ok(false),
        };
        store
            .apply(vec![
                Write::HSet {
                    key: keys.entries(),
                    fields: vec![(key.to_owned(), Vec::new())],
                },
                Write::HIncrBy {
                    key: keys.state(),
                    field: "version".to_owned(),
                    delta: 1,
                },
            ])
            .await?;
        store.del(&[keys.chunks(&record.version)]).await?;
        store.hdel(&keys.entries(), &[key]).await?;
        tracing::info!(group, namespace, key, "entry deleted");
        Ok(true)
    }

    /// Deletes `records` of the namespace `keys` in one batch with `also` (each marked deleted,
    /// the version bumped, their chunks removed), then drops their fields.
    pub async fn delete_records(
        &self,
        keys: &Keys,
        records: &[&EntryRecord],
        also: Vec<Write>,
    ) -> Result<(), RagError> {
        let store = &self.inner.store;
        let mut writes = Vec::with_capacity(records.len() + also.len() + 2);
        if !records.is_empty() {
            writes.push(Write::HSet {
                key: keys.entries(),
                fields: records
                    .iter()
                    .map(|r| (r.key.clone(), Vec::new()))
                    .collect(),
            });
            writes.push(Write::HIncrBy {
                key: keys.state(),
                field: "version".to_owned(),
                delta: 1,
            });
            writes.extend(records.iter().map(|r| Write::Del {
                key: keys.chunks(&r.version),
            }));
        }
        writes.extend(also);
        if writes.is_empty() {
            return Ok(());
        }
        store.apply(writes).await?;
        if !records.is_empty() {
            let fields: Vec<&str> = records.iter().map(|r| r.key.as_str()).collect();
            store.hdel(&keys.entries(), &fields).await?;
        }
        Ok(())
    }

    /// Deletes a namespace of `group` with every entry; returns how many entries it had.
    pub async fn delete_namespace(&self, group: &str, namespace: &str) -> Result<usize, RagError> {
        let namespace = public_namespace(group, Some(namespace))?;
        let keys = Keys::new(group, &namespace)?;
        let store = &self.inner.store;
        let entries = self.entries_in(group, &namespace).await?;
        let mut writes: Vec<Write> = entries
            .iter()
            .map(|e| Write::Del {
                key: keys.chunks(&e.version),
            })
            .collect();
        writes.push(Write::Del {
            key: keys.entries(),
        });
        writes.push(Write::Del { key: keys.dim() });
        writes.push(Write::HIncrBy {
            key: keys.state(),
            field: "version".to_owned(),
            delta: 1,
        });
        store.apply(writes).await?;
        store
            .hdel(&keys.group_namespaces(), &[namespace.as_str()])
            .await?;
        tracing::info!(group, namespace = %namespace, entries = entries.len(), "namespace deleted");
        Ok(entries.len())
    }

    /// The entries of a namespace of `group`, by key.
    pub async fn entries(
        &self,
        group: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<EntryRecord>, RagError> {
        let namespace = public_namespace(group, namespace)?;
        self.entries_in(group, &namespace).await
    }

    async fn entries_in(&self, group: &str, namespace: &str) -> Result<Vec<EntryRecord>, RagError> {
        let keys = Keys::new(group, namespace)?;
        let mut out = Vec::new();
        for (field, value) in self.inner.store.hgetall(&keys.entries()).await? {
            if !value.is_empty() {
                out.push(decode(&format!("{}/{field}", keys.entries()), &value)?);
            }
        }
        Ok(out)
    }

    /// The namespaces of `group` (reserved ones left out), by name.
    pub async fn namespaces(&self, group: &str) -> Result<Vec<NamespaceInfo>, RagError> {
        let group_name = KeyName::new("group", group)?;
        let mut out = Vec::new();
        for (name, _) in self
            .inner
            .store
            .hgetall(&Keys::namespaces(&group_name))
            .await?
        {
            if is_reserved(&name) {
                continue;
            }
            let entries = self.entries_in(group, &name).await?;
            let dim = self
                .dimension(&Keys::new(group, &name)?)
                .await?
                .unwrap_or(0);
            out.push(NamespaceInfo {
                chunks: entries.iter().map(|e| e.chunks).sum(),
                entries: entries.len(),
                dim,
                name,
            });
        }
        Ok(out)
    }
}
