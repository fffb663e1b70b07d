//! Arguments as both store backends apply them, so they agree: TTLs and `BLOCK` times in whole
//! milliseconds, and the checks both make before sending anything: an entry has fields, an
//! `XAUTOCLAIM` count is at least 1, a batch of writes can be applied in full.

use std::time::Duration;

use super::{StoreError, StoreResult, Write};

/// A TTL in whole milliseconds as both backends apply it: rounded up, at least 1 ms (Redis
/// refuses `PX 0`).
pub(super) fn ttl_millis(ttl: Duration) -> u64 {
    let ms = ttl.as_nanos().div_ceil(1_000_000);
    u64::try_from(ms).unwrap_or(u64::MAX).max(1)
}

/// A `BLOCK` duration in whole milliseconds, at least 1 (Redis reads `BLOCK 0` as "forever").
pub(super) fn block_millis(block: Duration) -> u64 {
    ttl_millis(block)
}

/// Refuses a stream entry without fields (Redis cannot store one) for `op`.
pub(super) fn check_entry(op: &'static str, stream: &str, fields: usize) -> StoreResult<()> {
    if fields == 0 {
        return Err(StoreError::InvalidArgument {
            op,
            message: format!("entry for stream {stream:?} has no fields"),
        });
    }
    Ok(())
}

/// Refuses an `XAUTOCLAIM` that could claim nothing (Redis refuses `COUNT 0`).
pub(super) fn check_claim_count(count: usize) -> StoreResult<()> {
    if count == 0 {
        return Err(StoreError::InvalidArgument {
            op: "xautoclaim",
            message: "count must be at least 1".into(),
        });
    }
    Ok(())
}

/// Refuses a batch that no backend could apply in full, before any of it is applied.
pub(super) fn check_writes(writes: &[Write]) -> StoreResult<()> {
    for w in writes {
        if let Write::XAdd { stream, fields, .. } = w {
            check_entry("apply", stream, fields.len())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_milliseconds() {
        assert_eq!(ttl_millis(Duration::ZERO), 1);
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert_eq!(ttl_millis(Duration::from_secs(2)), 2000);
    }
}
