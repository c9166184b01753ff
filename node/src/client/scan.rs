//! A scan across partitions, assembled from one scan per partition. The same code runs in
//! the routing client (each part sent to its partition's leader) and in a coordinating
//! node (each part served by its own replica or forwarded), so that both promise the
//! same thing:
//!
//! - range partitioning: the parts are read one after another in key order, each from
//!   where the last one ended, until the limit is reached;
//! - hash partitioning: every bucket may hold keys of the range, so all are read at once,
//!   merged in key order and cut to the limit;
//! - each part is a linearizable read of its own partition (unless serializable), but the
//!   parts are read at different moments: a scan is not a snapshot across partitions.

use std::future::Future;

use crate::partitioning::{KeySpan, PartitionId, RangeDescriptor};

/// Key, value and revision of each key found, in key order.
pub type Items = Vec<(Vec<u8>, Vec<u8>, u64)>;

/// What a scan found: the items, whether keys in the range were left out (the limit was
/// reached), and the partitions read, in the order read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scanned {
    pub items: Items,
    pub more: bool,
    pub partitions: Vec<PartitionId>,
}

/// The part of `[start, end)` inside a partition's span (buckets keep it whole).
pub fn clip(span: &KeySpan, start: &[u8], end: &[u8]) -> (Vec<u8>, Vec<u8>) {
    match span {
        KeySpan::Range { start: s, end: e } => {
            let from = if s.as_slice() > start {
                s.clone()
            } else {
                start.to_vec()
            };
            let to = match (e.is_empty(), end.is_empty()) {
                (true, _) => end.to_vec(),
                (false, true) => e.clone(),
                (false, false) => e.as_slice().min(end).to_vec(),
            };
            (from, to)
        }
        KeySpan::Bucket { .. } => (start.to_vec(), end.to_vec()),
    }
}

/// Runs the scan of `[start, end)` over `covering` (in key order, as
/// [`crate::partitioning::PartitionMap::covering`] gives it). `part` reads one partition's
/// `[from, to)` up to a limit. `skip_boundary` is the seeded bug `scan-skips-boundary`:
/// every range part after the first starts just past its partition's first key.
pub async fn assemble<F, Fut, E>(
    covering: &[RangeDescriptor],
    start: &[u8],
    end: &[u8],
    limit: usize,
    skip_boundary: bool,
    part: F,
) -> Result<Scanned, E>
where
    F: Fn(RangeDescriptor, Vec<u8>, Vec<u8>, usize) -> Fut,
    Fut: Future<Output = Result<(Items, bool), E>>,
{
    let hashed = covering
        .first()
        .is_some_and(|d| matches!(d.span, KeySpan::Bucket { .. }));
    let mut scanned = Scanned::default();
    if hashed {
        let parts = covering
            .iter()
            .map(|d| part(d.clone(), start.to_vec(), end.to_vec(), limit));
        for (descriptor, found) in covering.iter().zip(join_all(parts).await) {
            let (items, more) = found?;
            scanned.more |= more;
            scanned.items.extend(items);
            scanned.partitions.push(descriptor.id);
        }
        scanned.items.sort_by(|a, b| a.0.cmp(&b.0));
        if scanned.items.len() > limit {
            scanned.items.truncate(limit);
            scanned.more = true;
        }
        return Ok(scanned);
    }
    for (number, descriptor) in covering.iter().enumerate() {
        let (mut from, to) = clip(&descriptor.span, start, end);
        if number > 0 && skip_boundary {
            from.push(0);
        }
        let (items, more) = part(descriptor.clone(), from, to, limit - scanned.items.len()).await?;
        scanned.items.extend(items);
        scanned.partitions.push(descriptor.id);
        if more || scanned.items.len() >= limit {
            scanned.more = more || number + 1 < covering.len();
            break;
        }
    }
    Ok(scanned)
}

/// Runs futures concurrently and collects their outputs in order (tokio has no join_all
/// for a dynamic number of borrowed futures).
pub async fn join_all<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = futures.map(Box::pin).collect();
    let mut outputs: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (future, output) in pinned.iter_mut().zip(outputs.iter_mut()) {
            if output.is_none() {
                match future.as_mut().poll(cx) {
                    std::task::Poll::Ready(value) => *output = Some(value),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outputs
        .into_iter()
        .map(|o| o.expect("every future finished"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_is_clipped_to_each_range() {
        let span = KeySpan::Range {
            start: b"g".to_vec(),
            end: b"p".to_vec(),
        };
        assert_eq!(clip(&span, b"a", b""), (b"g".to_vec(), b"p".to_vec()));
        assert_eq!(clip(&span, b"h", b"k"), (b"h".to_vec(), b"k".to_vec()));
        let last = KeySpan::Range {
            start: b"p".to_vec(),
            end: Vec::new(),
        };
        assert_eq!(clip(&last, b"a", b""), (b"p".to_vec(), Vec::new()));
    }
}
