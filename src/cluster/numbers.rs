//! Replica numbers: each node id owns one number from 1 to 255, kept in
//! the store for good (`/pgbaton/numbers/<n>` holds the id). The number is
//! the top byte of every cancel secret the replica hands out, so another
//! replica that receives a CancelRequest for one of its sessions knows
//! where to forward it; it is also the top of the replica's session ids.

use super::records::{number_key, NUMBERS};
use super::store::{Cond, CoordStore, Op, StoreError, TxnOutcome};

/// The number of node `me`: the one it already owns, else the lowest free
/// one. 0 when all 255 are owned by other ids (its cancels then cannot be
/// forwarded; the log says so).
pub async fn claim(store: &dyn CoordStore, me: &str) -> Result<u8, StoreError> {
    for _ in 0..10 {
        let mut used = [false; 256];
        for (key, v) in store.list(NUMBERS).await? {
            let Ok(n) = key[NUMBERS.len()..].parse::<u8>() else {
                continue;
            };
            if v.value == me.as_bytes() {
                return Ok(n);
            }
            used[n as usize] = true;
        }
        let Some(n) = (1..=255u8).find(|n| !used[*n as usize]) else {
            tracing::warn!(node = me, "all 255 replica numbers are owned by other node ids; cancels for this replica's sessions will not be forwarded by the others (delete the numbers of retired ids under {NUMBERS})");
            return Ok(0);
        };
        let key = number_key(n);
        let outcome = store
            .txn(
                vec![(key.clone(), Cond::Absent)],
                vec![Op::put(key, me.as_bytes().to_vec())],
            )
            .await?;
        if let TxnOutcome::Committed { .. } = outcome {
            return Ok(n);
        }
        // Another node took it first: read again.
    }
    Err(StoreError::Failed {
        store: store.describe(),
        reason: "replica numbers kept changing while this replica claimed one".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::store::memory::MemoryStore;

    #[tokio::test]
    async fn each_id_keeps_its_own_number() {
        let store = MemoryStore::new();
        let a = claim(&store, "a").await.unwrap();
        let b = claim(&store, "b").await.unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(claim(&store, "a").await.unwrap(), 1, "a keeps its number");
        assert_eq!(claim(&store, "c").await.unwrap(), 3);
    }
}
