//! LoRA adapters served unmerged over the one base model: their names, and which are resident.
//!
//! Every adapter named at start ([`crate::EngineConfig::loras`]) is read and checked against
//! the base model once, in [`crate::start`], so a bad one stops the engine before it serves
//! (the error names the adapter, its file and the setting at fault). The first `max_loras` stay
//! resident; the others are dropped and read again when a request needs them.
//!
//! Residency (on the engine thread): a queued request whose adapter is not resident waits at
//! the head of the queue until the scheduler loads it, between two steps, evicting the least
//! recently used resident adapter that no running sequence uses. At most one adapter is read
//! per admission pass, so running streams stall for at most one adapter's read per step; when
//! every resident adapter is in use the request waits until one is free. Nothing fails for
//! lack of room.
//!
//! Invariant: at most `max_loras` adapters are resident, and a running sequence's adapter is
//! never evicted (it also holds its own reference).

use std::path::PathBuf;
use std::sync::Arc;

use ingot_core::model::lora::LoraAdapter;
use ingot_core::model::Model;

use crate::EngineError;

/// An adapter's index in [`crate::EngineConfig::loras`].
pub(crate) type AdapterId = usize;

/// The adapters' names, in configuration order (ids are indices).
#[derive(Debug, Default)]
pub(crate) struct AdapterNames(Vec<String>);

impl AdapterNames {
    /// The id of the adapter called `name`.
    pub(crate) fn id(&self, name: &str) -> Option<AdapterId> {
        self.0.iter().position(|n| n == name)
    }

    pub(crate) fn names(&self) -> &[String] {
        &self.0
    }
}

/// One resident adapter.
struct Slot {
    adapter: Arc<LoraAdapter>,
    last_used: u64,
}

/// The resident adapters, at most `max` of them, least recently used evicted first.
#[derive(Default)]
pub(crate) struct Resident {
    dirs: Vec<PathBuf>,
    names: Vec<String>,
    max: usize,
    /// Indexed by [`AdapterId`].
    slots: Vec<Option<Slot>>,
    clock: u64,
}

/// What [`Resident::acquire`] found.
pub(crate) enum Acquired {
    /// It was resident.
    Resident(Arc<LoraAdapter>),
    /// It was read from disk just now.
    Read(Arc<LoraAdapter>),
    /// Not resident, and it cannot be read now: every resident adapter is in use, or reading
    /// is not allowed at this moment.
    Wait,
}

impl Resident {
    /// Reads and checks every adapter (`(name, dir)`) against `model`; keeps the first
    /// `max_loras` (all when `None`) resident. Returns them with their names, in order.
    pub(crate) fn load(
        model: &Model,
        loras: &[(String, PathBuf)],
        max_loras: Option<usize>,
    ) -> Result<(Self, AdapterNames), EngineError> {
        let max = max_loras.unwrap_or(loras.len());
        if max == 0 && !loras.is_empty() {
            return Err(EngineError::invalid("max_loras", "max_loras must be at least 1 when LoRA adapters are given"));
        }
        let mut slots = Vec::with_capacity(loras.len());
        for (i, (name, dir)) in loras.iter().enumerate() {
            if loras[..i].iter().any(|(n, _)| n == name) {
                return Err(EngineError::invalid("lora", format!("LoRA adapter name '{name}' is given twice")));
            }
            let adapter = read(model, name, dir)?;
            slots.push((i < max).then(|| Slot { adapter: Arc::new(adapter), last_used: 0 }));
        }
        let names: Vec<String> = loras.iter().map(|(n, _)| n.clone()).collect();
        let resident = Self { dirs: loras.iter().map(|(_, d)| d.clone()).collect(), names: names.clone(), max, slots, clock: 0 };
        Ok((resident, AdapterNames(names)))
    }

    /// Adapter `id`, made resident if it is not (`may_read`: whether reading one from disk is
    /// allowed now; `in_use`: whether a running sequence uses an adapter).
    pub(crate) fn acquire(
        &mut self,
        model: &Model,
        id: AdapterId,
        may_read: bool,
        in_use: impl Fn(AdapterId) -> bool,
    ) -> Result<Acquired, EngineError> {
        self.clock += 1;
        if let Some(slot) = &mut self.slots[id] {
            slot.last_used = self.clock;
            return Ok(Acquired::Resident(slot.adapter.clone()));
        }
        if !may_read {
            return Ok(Acquired::Wait);
        }
        if self.slots.iter().flatten().count() >= self.max {
            let victim = (0..self.slots.len())
                .filter(|&i| !in_use(i))
                .filter_map(|i| self.slots[i].as_ref().map(|s| (s.last_used, i)))
                .min();
            let Some((_, victim)) = victim else { return Ok(Acquired::Wait) };
            self.slots[victim] = None;
        }
        let adapter = Arc::new(read(model, &self.names[id], &self.dirs[id])?);
        self.slots[id] = Some(Slot { adapter: adapter.clone(), last_used: self.clock });
        Ok(Acquired::Read(adapter))
    }
}

fn read(model: &Model, name: &str, dir: &std::path::Path) -> Result<LoraAdapter, EngineError> {
    LoraAdapter::load(dir, model).map_err(|source| EngineError::Adapter { name: name.to_string(), source })
}
