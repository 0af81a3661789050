//! Media encoding in bounded slices between the batch's steps, so running streams keep
//! decoding while a large image, a long video or a long clip is encoded.
//!
//! An admitted request whose media items still need their encoder rows does not join the
//! batch at once: it waits here, in the "encoding" state, holding its KV reservation (it was
//! admitted) and counting towards `max_seqs`. Each turn of the engine loop runs one slice of
//! the front request's current item ([`EncodeJob`], at most `encode_slice_macs` multiply-adds;
//! unbounded when 0), then one step of the batch; so between two tokens of a running stream
//! there is at most one slice. When its last item is encoded the request joins the batch and
//! prefills as any other.
//!
//! Items are encoded once: the n samples of a request share the rows (the second sample finds
//! them set, since requests are served here in order), and an item wholly inside the reused
//! prefix (the pool keys media tokens by the item's bytes) is not encoded at all.
//!
//! Invariants: only the front request advances (FIFO, as admission); a request leaves this
//! state either into the batch with every item it will prefill encoded, or finished (cancelled,
//! or an encoder error naming the item), its reservation released and its job dropped.


use ingot_core::model::encode_job::{Budget, EncodeJob, Slice};

use super::{Scheduler, Seq};
use crate::event::FinishReason;
use crate::EngineError;

/// A request waiting for its media rows.
pub(super) struct Encoding<'m> {
    pub(super) seq: Seq<'m>,
    /// The media item being encoded (or to look at next).
    item: usize,
    /// That item's encoding in progress, once started.
    job: Option<Box<dyn EncodeJob<'m> + 'm>>,
}

/// Whether any media item of `seq` that it will prefill lacks its encoder rows.
pub(super) fn needs_encoding(seq: &Seq<'_>) -> bool {
    seq.job.request.media.as_ref().is_some_and(|m| (0..m.items.len()).any(|i| pending(seq, i)))
}

/// Whether item `i` of `seq`'s media is still to encode: not wholly inside the reused prefix
/// and not encoded for another sample.
fn pending(seq: &Seq<'_>, i: usize) -> bool {
    let Some(media) = &seq.job.request.media else { return false };
    let item = &media.items[i];
    item.start + item.len > seq.prefilled && item.features.get().is_none()
}

impl<'m> Scheduler<'m> {
    /// Puts an admitted sequence in the batch, or in the encoding queue if its media need it.
    pub(super) fn enter(&mut self, seq: Seq<'m>, active: &mut Vec<Seq<'m>>) {
        if needs_encoding(&seq) {
            self.encoding.push_back(Encoding { seq, item: 0, job: None });
        } else {
            active.push(seq);
        }
    }

    /// Ends the encodings whose callers went away, then runs one slice of the front one;
    /// a request whose items are all encoded joins `active`. Returns whether a slice ran.
    pub(super) fn encode_slice(&mut self, active: &mut Vec<Seq<'m>>) -> bool {
        let mut i = 0;
        while i < self.encoding.len() {
            if self.encoding[i].seq.job.abandoned() {
                let entry = self.encoding.remove(i).expect("index in range");
                self.finish(entry.seq, Ok(FinishReason::Cancelled));
            } else {
                i += 1;
            }
        }
        let Some(mut entry) = self.encoding.pop_front() else { return false };
        let media = entry.seq.job.request.media.clone().expect("only media requests encode");
        while entry.job.is_none() && entry.item < media.items.len() && !pending(&entry.seq, entry.item) {
            entry.item += 1;
        }
        if entry.item == media.items.len() {
            // Another sample encoded what was left.
            active.push(entry.seq);
            return false;
        }
        let job = match entry.job.take() {
            Some(job) => Ok(job),
            None => {
                let item = &media.items[entry.item];
                self.encoders
                    .start(&item.input)
                    .map_err(|e| EngineError::invalid(item.field.clone(), format!("{}: {e}", item.field)))
            }
        };
        match job.map(|job| job.advance(&mut self.encode_budget())) {
            Ok(Slice::Pending(job)) => {
                entry.job = Some(job);
                self.encoding.push_front(entry);
            }
            Ok(Slice::Done(rows)) => {
                // Only this thread sets it, and `pending` saw it empty.
                let _ = media.items[entry.item].features.set(rows);
                entry.item += 1;
                if (entry.item..media.items.len()).any(|i| pending(&entry.seq, i)) {
                    self.encoding.push_front(entry);
                } else {
                    active.push(entry.seq);
                }
            }
            Err(e) => self.finish(entry.seq, Err(e)),
        }
        true
    }

    /// One slice's budget: `encode_slice_macs` multiply-adds, or the whole item when 0.
    fn encode_budget(&self) -> Budget {
        match self.cap.encode_slice_macs {
            0 => Budget::unlimited(),
            macs => Budget::new(macs),
        }
    }
}
