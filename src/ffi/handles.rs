//! The one handle type of the C boundary: every opaque `llmdd_*_t` the
//! library hands out (instance, task, config builder, engine, engine memory
//! registration, engine request) is a [`HandleTable`] entry.
//!
//! A handle given to C is not a pointer to memory: it encodes a slot index and
//! the slot's generation. Resolving a handle looks it up in the table under a
//! lock, so a freed, stale or foreign handle is detected without reading the
//! memory it points at, and a stale handle never aliases a newer object that
//! reuses its slot (the generation differs). NULL is always "no handle".
//!
//! Ownership, the same for every kind: the caller owns a handle from the call
//! that returned it until the one call that releases it (`llmdd_destroy`,
//! `llmdd_task_free`, `llmdd_config_free`, `llmdd_engine_destroy`, …), which
//! removes it from its table; the table holds the object, and a call that
//! resolves a handle holds its own reference until it returns, so an object
//! outlives a release racing a call on it. Releasing NULL or a dead handle is
//! a no-op; any other call with NULL, a dead (released) or a foreign value
//! fails with `LLMDD_PARAM_INVALID` naming the kind, and never reads it.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

/// Bits of a handle that hold the slot index (the rest is the generation).
const INDEX_BITS: u32 = 24;
/// Most live handles of one kind.
const MAX_SLOTS: usize = 1 << INDEX_BITS;
/// Handles carry this tag in their low bits, so a handle is never NULL and an
/// arbitrary small integer or aligned pointer is unlikely to look valid.
const TAG: u64 = 0x5;
const TAG_BITS: u32 = 4;

struct Slot<T> {
    generation: u32,
    item: Option<Arc<T>>,
}

struct Slots<T> {
    slots: Vec<Slot<T>>,
    free: Vec<usize>,
}

/// A table of live objects `T` of one kind, addressed by opaque handles of
/// the C type `C` (`llmdd_instance_t`, …).
pub struct HandleTable<T, C> {
    inner: Mutex<Slots<T>>,
    _c: PhantomData<fn() -> C>,
}

impl<T, C> HandleTable<T, C> {
    /// An empty table (usable in a `static`).
    pub const fn new() -> Self {
        HandleTable {
            inner: Mutex::new(Slots {
                slots: Vec::new(),
                free: Vec::new(),
            }),
            _c: PhantomData,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `item`; returns its handle, or `None` when the table is full.
    pub fn insert(&self, item: T) -> Option<*mut C> {
        self.insert_id(item).map(|h| h as *mut C)
    }

    fn insert_id(&self, item: T) -> Option<usize> {
        let mut s = self.lock();
        let index = match s.free.pop() {
            Some(i) => i,
            None if s.slots.len() < MAX_SLOTS => {
                s.slots.push(Slot {
                    generation: 0,
                    item: None,
                });
                s.slots.len() - 1
            }
            None => return None,
        };
        let slot = &mut s.slots[index];
        slot.item = Some(Arc::new(item));
        Some(encode(index, slot.generation))
    }

    /// The live object behind `handle`, if any.
    pub fn get(&self, handle: *const C) -> Option<Arc<T>> {
        let (index, generation) = decode(handle as usize)?;
        let s = self.lock();
        let slot = s.slots.get(index)?;
        if slot.generation != generation {
            return None;
        }
        slot.item.clone()
    }

    /// The live object behind the C handle `p` (`what` names it in
    /// messages): `LLMDD_PARAM_INVALID` for NULL and for a handle that is not
    /// live (freed or foreign), which is never dereferenced.
    pub fn resolve(&self, p: *const C, what: &str) -> crate::Result<Arc<T>> {
        if p.is_null() {
            crate::bail!(ParamInvalid, "{what} is NULL");
        }
        self.get(p).ok_or_else(|| {
            crate::err!(
                ParamInvalid,
                "{what} handle is not a live llmdd {what} (freed or foreign)"
            )
        })
    }

    /// Removes the object behind `handle` (the handle is dead from now on) and
    /// returns it; `None` if the handle is not live.
    pub fn remove(&self, handle: *const C) -> Option<Arc<T>> {
        let (index, generation) = decode(handle as usize)?;
        let mut s = self.lock();
        let slot = s.slots.get_mut(index)?;
        if slot.generation != generation {
            return None;
        }
        let item = slot.item.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        s.free.push(index);
        Some(item)
    }
}

impl<T, C> Default for HandleTable<T, C> {
    fn default() -> Self {
        Self::new()
    }
}

fn encode(index: usize, generation: u32) -> usize {
    let v = ((u64::from(generation) << INDEX_BITS) | index as u64) << TAG_BITS | TAG;
    v as usize
}

fn decode(handle: usize) -> Option<(usize, u32)> {
    let v = handle as u64;
    if v & ((1 << TAG_BITS) - 1) != TAG {
        return None;
    }
    let v = v >> TAG_BITS;
    let index = (v & ((1 << INDEX_BITS) - 1)) as usize;
    let generation = u32::try_from(v >> INDEX_BITS).ok()?;
    Some((index, generation))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct C;

    #[test]
    fn stale_handles_never_alias() {
        let t = HandleTable::<u32, C>::new();
        let a = t.insert(1u32).unwrap();
        assert_eq!(*t.get(a).unwrap(), 1);
        assert_eq!(*t.remove(a).unwrap(), 1);
        assert!(t.get(a).is_none());
        assert!(t.remove(a).is_none());
        // The slot is reused with a new generation: the old handle stays dead.
        let b = t.insert(2u32).unwrap();
        assert_ne!(a, b);
        assert!(t.get(a).is_none());
        assert_eq!(*t.get(b).unwrap(), 2);
    }

    #[test]
    fn foreign_values_are_rejected() {
        let t = HandleTable::<u32, C>::new();
        let a = t.insert(7).unwrap();
        let n = a as usize;
        for h in [0usize, 1, 8, 0x1000, n + 16, usize::MAX, n ^ 1] {
            assert!(t.get(h as *const C).is_none(), "{h:#x}");
        }
        assert!(t.get(a).is_some());
    }
}
