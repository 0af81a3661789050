//! Media encoders run a bounded slice at a time, so an engine can interleave a long encoding
//! (a large image, a long video, 30 s of audio) with the decode steps of running streams
//! instead of stalling them for the whole encoding.
//!
//! An [`EncodeJob`] is one item's encoding in progress: its stages (patch embedding or
//! convolutions, each transformer block, the merger or projector) run in order, and every
//! stage works row by row, so a slice covers as many rows of the current stage (and of the
//! stages after it) as its [`Budget`] of multiply-adds pays for. The stages' per-row costs are
//! each encoder's own estimate from its shapes, so a slice's cost does not depend on the
//! image's size and is the same on every run.
//!
//! Invariants: every slice makes progress (at least one row), so a job ends after a bounded
//! number of slices; the output does not depend on how the work was sliced (every stage
//! computes each row alone, and the attention of a row reads the whole span's keys and values,
//! which the stage before completed), bit for bit.

use std::ops::Range;


/// Multiply-adds one slice may spend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    left: u64,
}

impl Budget {
    /// A slice of about `macs` multiply-adds (at least one row of work, whatever the number).
    pub fn new(macs: u64) -> Self {
        Self { left: macs }
    }

    /// No bound: the rest of the job in one slice.
    pub fn unlimited() -> Self {
        Self { left: u64::MAX }
    }

    pub fn is_spent(&self) -> bool {
        self.left == 0
    }

    /// How many of a stage's `remaining` rows, costing `per_row` each, this budget pays for
    /// (at least one when any remain), and charges them.
    pub(crate) fn take_rows(&mut self, per_row: u64, remaining: usize) -> usize {
        let affordable = usize::try_from(self.left / per_row.max(1)).unwrap_or(usize::MAX);
        let rows = affordable.clamp(1, remaining.max(1)).min(remaining);
        self.left = self.left.saturating_sub(per_row.saturating_mul(rows as u64));
        rows
    }
}

/// What a slice leaves: the job to continue, or the encoder's output rows.
pub enum Slice<'a> {
    Pending(Box<dyn EncodeJob<'a> + 'a>),
    Done(Vec<f32>),
}

impl std::fmt::Debug for Slice<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Pending(_) => f.write_str("Slice::Pending"),
            Self::Done(rows) => write!(f, "Slice::Done({} values)", rows.len()),
        }
    }
}

/// One media item's encoding in progress (see the module docs).
/// `Send`: an engine's scheduler moves into its kernel pool with the jobs it holds.
pub trait EncodeJob<'a>: Send {
    /// Runs the next slice within `budget`; a finished job gives its output rows (`[tokens,
    /// hidden]` row-major, in the order of the item's placeholder tokens). Cannot fail: the
    /// encoders check their input when the job is made.
    fn advance(self: Box<Self>, budget: &mut Budget) -> Slice<'a>;
}

/// Runs a job to its end in one slice.
pub fn finish<'a>(job: Box<dyn EncodeJob<'a> + 'a>) -> Vec<f32> {
    let mut job = job;
    loop {
        match job.advance(&mut Budget::unlimited()) {
            Slice::Done(rows) => return rows,
            Slice::Pending(next) => job = next,
        }
    }
}

/// Runs `job` in slices of `macs` multiply-adds: its output and how many slices it took.
#[cfg(test)]
pub(crate) fn in_slices<'a>(job: Box<dyn EncodeJob<'a> + 'a>, macs: u64) -> (Vec<f32>, usize) {
    let (mut job, mut slices) = (job, 0);
    loop {
        slices += 1;
        match job.advance(&mut Budget::new(macs)) {
            Slice::Done(rows) => return (rows, slices),
            Slice::Pending(next) => job = next,
        }
    }
}

/// An encoding made of stages of rows, what the encoders' jobs are; [`advance`] slices it.
pub(crate) trait Stages {
    /// Multiply-adds of one row of the current stage.
    fn row_cost(&self) -> u64;
    /// The current stage's progress.
    fn rows(&mut self) -> &mut Rows;
    /// Runs `chunk` of the current stage's rows.
    fn run(&mut self, chunk: Range<usize>);
    /// Moves past a finished stage; false when it was the last.
    fn next_stage(&mut self) -> bool;
    /// The output rows of a finished encoding.
    fn output(self: Box<Self>) -> Vec<f32>;
}

/// [`EncodeJob::advance`] for a job made of [`Stages`]: chunks of rows while the budget lasts,
/// at least one.
pub(crate) fn advance<'a, J: Stages + EncodeJob<'a> + 'a>(mut job: Box<J>, budget: &mut Budget) -> Slice<'a> {
    let mut first = true;
    loop {
        if !first && budget.is_spent() {
            return Slice::Pending(job);
        }
        first = false;
        let cost = job.row_cost();
        let chunk = job.rows().next(budget, cost);
        job.run(chunk);
        if job.rows().finished() && !job.next_stage() {
            return Slice::Done(job.output());
        }
    }
}

/// A stage's progress: `done` of its `total` rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Rows {
    pub done: usize,
    pub total: usize,
}

impl Rows {
    pub(crate) fn new(total: usize) -> Self {
        Self { done: 0, total }
    }

    /// The next chunk of rows the budget pays for at `per_row` each; empty once all are done.
    pub(crate) fn next(&mut self, budget: &mut Budget, per_row: u64) -> Range<usize> {
        let n = budget.take_rows(per_row, self.total - self.done);
        let chunk = self.done..self.done + n;
        self.done += n;
        chunk
    }

    pub(crate) fn finished(&self) -> bool {
        self.done == self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_budget_pays_for_whole_rows_and_at_least_one() {
        let mut b = Budget::new(100);
        assert_eq!(b.take_rows(30, 10), 3);
        assert_eq!(b, Budget::new(10));
        // Less than one row left: one row all the same, and the budget is spent.
        assert_eq!(b.take_rows(30, 10), 1);
        assert!(b.is_spent());
        assert_eq!(Budget::new(0).take_rows(5, 4), 1);
        assert_eq!(Budget::new(1000).take_rows(5, 4), 4, "never more rows than remain");
        assert_eq!(Budget::new(1000).take_rows(5, 0), 0);
        let mut rows = Rows::new(5);
        let mut b = Budget::new(6);
        assert_eq!(rows.next(&mut b, 2), 0..3);
        assert_eq!(rows.next(&mut Budget::unlimited(), 2), 3..5);
        assert!(rows.finished());
    }
}
