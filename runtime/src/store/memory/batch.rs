//! [`Store::apply`](crate::store::Store::apply) in the memory store: a batch of [`Write`]s
//! applied in order under one lock, like `MULTI`/`EXEC`.

use tokio::time::Instant;

use super::keyspace::Keyspace;
use crate::store::{StoreError, StoreResult, Write};

impl Keyspace {
    /// Applies every write of a checked batch; returns whether an entry was appended to a
    /// stream (readers are to be woken) and the first failure.
    pub(super) fn apply(&mut self, writes: &[Write], now: Instant) -> (bool, Option<StoreError>) {
        let mut first_error = None;
        let mut appended = false;
        // Like MULTI/EXEC: a failing write does not stop the others; its error is returned.
        for w in writes {
            match self.write(w, now) {
                Ok(a) => appended |= a,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        (appended, first_error)
    }

    /// One write of a batch; whether it appended a stream entry.
    fn write(&mut self, w: &Write, now: Instant) -> StoreResult<bool> {
        let mut appended = false;
        match w {
            Write::Set { key, value, ttl } => self.set(key, value, *ttl, now),
            Write::Del { key } => {
                self.del(std::slice::from_ref(key), now);
            }
            Write::HSet { key, fields } => {
                let fields: Vec<(&str, &[u8])> = fields
                    .iter()
                    .map(|(f, v)| (f.as_str(), v.as_slice()))
                    .collect();
                self.hset(key, &fields, now)?;
            }
            Write::HDel { key, fields } => {
                let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
                self.hdel(key, &fields, now)?;
            }
            Write::Push { key, values } => {
                let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
                self.push(key, &values, now)?;
            }
            Write::XAdd {
                stream,
                fields,
                trim,
            } => {
                let fields: Vec<(&[u8], &[u8])> = fields
                    .iter()
                    .map(|(f, v)| (f.as_slice(), v.as_slice()))
                    .collect();
                self.xadd(stream, &fields, trim.as_ref(), now)?;
                appended = true;
            }
            Write::XAck { stream, group, ids } => {
                self.xack(stream, group, ids, now)?;
            }
            Write::XDel { stream, ids } => {
                self.xdel(stream, ids, now)?;
            }
            // Renewing costs no round trip here: always done.
            Write::Expire { key, ttl } | Write::Renew { key, ttl } => {
                self.expire(key, *ttl, now);
            }
            Write::ZAdd { key, member, score } => self.zadd(key, member, *score, now)?,
            Write::ZRem { key, member } => self.zrem(key, member, now)?,
            Write::ZRemBelow { key, below } | Write::Prune { key, below } => {
                self.zrem_below(key, *below, now)?
            }
            Write::Persist { key } => self.persist(key, now),
            Write::HIncrBy { key, field, delta } => {
                self.hincr_by(key, field, *delta, now)?;
            }
        }
        Ok(appended)
    }
}
