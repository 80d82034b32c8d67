//! The per-instance cache registry: registered and allocated caches, the key
//! tables of spec §1.5 (request/prefix keys bound to batch slots, blocks keys
//! bound to blocks caches), the registered memory regions that every remote
//! read/write is checked against, and the registered-address limit.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::cache::types::{
    BindKey, CacheDesc, CacheKey, CacheKind, CacheView, IdMap, Placement, Segment,
};
use crate::device::pool::Pool;
use crate::status::Result;
#[cfg(test)]
use crate::status::Status;
use crate::transport::wire::CacheEntry;
use crate::{bail, err};

/// Default limit on the tensor addresses registered at once
/// (`llmdd.MaxRegisteredAddrs`). The reference documents 240 but does not
/// enforce it; vllm-ascend registers 256 for a 64-layer model with its
/// decode-side staging caches, so the default leaves room for that.
pub const DEFAULT_MAX_REGISTERED_ADDRS: usize = 1024;
/// Hard cap of `llmdd.MaxRegisteredAddrs`: the registry's tables and the
/// cache table a peer fetches stay bounded (the wire accepts at most 65536
/// addresses per cache).
pub const MAX_REGISTERED_ADDRS_CAP: usize = 65_536;

/// One cache known to the registry.
pub struct CacheRecord {
    /// The cache id handed to the caller (unique per instance, never reused).
    pub id: i64,
    /// Batch (contiguous slots) or blocks (paged) layout.
    pub kind: CacheKind,
    /// What the caller described: tensors, shape, data type, placement.
    pub desc: CacheDesc,
    /// Bytes of each tensor (`shape` × element size).
    pub tensor_bytes: u64,
    /// Tensor base addresses; stable for the record's lifetime (the C API hands
    /// out a pointer to this array).
    pub addrs: Box<[u64]>,
    /// Peers may read or write it (listed in the cache table a link sees).
    pub remote_accessible: bool,
    /// Registry generation at creation (links see caches created before them).
    pub generation: u64,
    /// Pool that owns the memory, for allocated caches.
    pub pool: Option<Arc<Pool>>,
    /// The planner's view, made once (a transfer borrows it, copying nothing).
    view: CacheView,
}

impl CacheRecord {
    /// The planner's view of this cache.
    pub fn view(&self) -> &CacheView {
        &self.view
    }

    /// True if the library allocated this cache.
    pub fn is_allocated(&self) -> bool {
        self.pool.is_some()
    }

    /// Registers this cache's tensors with what `backend` needs to reach
    /// them from a peer (HCCL on acl; nothing on host), a no-op for an
    /// allocated cache: its pool is registered as a whole.
    pub fn register_on(&self, backend: &dyn crate::backend::Device) -> Result<()> {
        if self.is_allocated() {
            return Ok(());
        }
        backend.register_memory(self.id, &self.addrs, self.tensor_bytes, self.desc.placement)
    }

    fn entry(&self, keys: &HashMap<BindKey, (i64, u64)>, blocks: &HashMap<u64, i64>) -> CacheEntry {
        let mut req_keys: Vec<(u64, u64, u64)> = keys
            .iter()
            .filter(|(k, (id, _))| *id == self.id && !k.is_prefix)
            .map(|(k, (_, slot))| (k.id, k.model_id, *slot))
            .collect();
        req_keys.sort_unstable();
        CacheEntry {
            cache_id: self.id,
            kind: self.kind as u8,
            placement: self.desc.placement as u32,
            data_type: self.desc.data_type as u32,
            shape: self.desc.shape.clone(),
            tensor_bytes: self.tensor_bytes,
            addrs: self.addrs.to_vec(),
            req_keys,
            blocks_model: blocks
                .iter()
                .find(|(_, id)| **id == self.id)
                .map(|(m, _)| *m),
        }
    }
}

impl Drop for CacheRecord {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            for &a in self.addrs.iter() {
                pool.free(a, self.tensor_bytes);
            }
        }
    }
}

/// The planner's view of a cache of `desc` with tensors at `addrs`, each
/// `tensor_bytes` long.
fn planner_view(kind: CacheKind, desc: &CacheDesc, tensor_bytes: u64, addrs: &[u64]) -> CacheView {
    CacheView {
        kind,
        addrs: addrs.to_vec(),
        tensor_bytes,
        dim0: desc.shape[0] as u64,
    }
}

#[derive(Default)]
struct Inner {
    /// Live caches by id (looked up on every transfer: [`IdMap`]).
    caches: IdMap<i64, Arc<CacheRecord>>,
    /// Allocated caches whose id reference was dropped but that still have keys.
    deferred: HashMap<i64, Arc<CacheRecord>>,
    /// Request/prefix key → (cache id, slot).
    keys: HashMap<BindKey, (i64, u64)>,
    /// (cache id, slot) → bound key, for CacheKeyByIdAndIndex lookups.
    slot_keys: HashMap<(i64, u64), BindKey>,
    /// Blocks model id → cache id.
    blocks: HashMap<u64, i64>,
    /// Registered memory: start → (end, cache id).
    regions: BTreeMap<u64, (u64, i64)>,
    registered_addrs: usize,
    generation: u64,
}

/// A cache the key resolved to, with the slot it names and the key to consume
/// after a successful pull (one-shot request keys of allocated caches).
pub struct Resolved {
    /// The cache the key names.
    pub record: Arc<CacheRecord>,
    /// The batch slot (or block) within it.
    pub slot: u64,
    /// The one-shot key to remove after a successful pull, if any (the
    /// puller decides from its table; kept for the registry's own tests).
    #[cfg(test)]
    pub consume: Option<BindKey>,
}

/// The registry. Cheap reads, serialised writes.
pub struct Registry {
    next_id: AtomicI64,
    inner: RwLock<Inner>,
    /// Most tensor addresses registered at once.
    max_addrs: usize,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::with_limit(DEFAULT_MAX_REGISTERED_ADDRS)
    }
}

impl Registry {
    /// An empty registry allowing `max_addrs` registered addresses at once
    /// (capped at [`MAX_REGISTERED_ADDRS_CAP`]).
    pub fn with_limit(max_addrs: usize) -> Registry {
        Registry {
            next_id: AtomicI64::new(1),
            inner: RwLock::new(Inner::default()),
            max_addrs: max_addrs.min(MAX_REGISTERED_ADDRS_CAP),
        }
    }
}

/// Binding keys of a `register_cache`/`allocate_cache` key list, per slot.
fn bind_list(keys: &[CacheKey], slots: u64) -> Result<Vec<(BindKey, u64)>> {
    if keys.len() as u64 > slots {
        bail!(
            ParamInvalid,
            "{} cache keys given for a cache of {slots} batch slots",
            keys.len()
        );
    }
    let mut out = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let CacheKey::Req {
            req_id,
            model_id,
            prefix_id,
            ..
        } = *k
        else {
            bail!(
                ParamInvalid,
                "cache_keys[{i}] must be a CacheKey (request/prefix key)"
            );
        };
        if let Some(b) = BindKey::for_binding(req_id, prefix_id, model_id) {
            if out.iter().any(|(x, _)| *x == b) {
                bail!(
                    ParamInvalid,
                    "cache_keys[{i}] repeats an earlier key in the same list"
                );
            }
            out.push((b, i as u64));
        }
    }
    Ok(out)
}

impl Registry {
    fn read(&self) -> RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|p| p.into_inner())
    }
    fn write(&self) -> RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Current generation (increases with every new cache).
    pub fn generation(&self) -> u64 {
        self.read().generation
    }

    fn check_keys_free(inner: &Inner, binds: &[(BindKey, u64)], blocks: Option<u64>) -> Result<()> {
        for (b, _) in binds {
            if inner.keys.contains_key(b) {
                bail!(
                    ParamInvalid,
                    "cache key ({} {}, model {}) is already bound to another cache",
                    if b.is_prefix { "prefix_id" } else { "req_id" },
                    b.id,
                    b.model_id
                );
            }
        }
        if let Some(m) = blocks {
            if inner.blocks.contains_key(&m) {
                bail!(
                    ParamInvalid,
                    "a blocks cache with model_id {m} is already bound"
                );
            }
        }
        Ok(())
    }

    fn insert(
        inner: &mut Inner,
        rec: Arc<CacheRecord>,
        binds: Vec<(BindKey, u64)>,
        blocks: Option<u64>,
    ) {
        for (b, slot) in binds {
            inner.keys.insert(b, (rec.id, slot));
            inner.slot_keys.insert((rec.id, slot), b);
        }
        if let Some(m) = blocks {
            inner.blocks.insert(m, rec.id);
        }
        for &a in rec.addrs.iter() {
            inner.regions.insert(a, (a + rec.tensor_bytes, rec.id));
        }
        inner.caches.insert(rec.id, rec);
    }

    /// Registers user-owned memory (spec §4.2). `keys` binds batch slots,
    /// `blocks_model` binds a blocks key.
    pub fn register(
        &self,
        desc: &CacheDesc,
        addrs: &[u64],
        kind: CacheKind,
        keys: &[CacheKey],
        blocks_model: Option<u64>,
        remote_accessible: Option<bool>,
    ) -> Result<Arc<CacheRecord>> {
        let t = desc.validate()?;
        if addrs.len() != desc.num_tensors as usize {
            bail!(
                ParamInvalid,
                "{} tensor addresses given for cache_desc.num_tensors = {}",
                addrs.len(),
                desc.num_tensors
            );
        }
        if let Some(i) = addrs.iter().position(|&a| a == 0) {
            bail!(ParamInvalid, "tensor_addrs[{i}] is 0");
        }
        for (i, &a) in addrs.iter().enumerate() {
            if a.checked_add(t).is_none() {
                bail!(ParamInvalid, "tensor_addrs[{i}] + tensor size overflows");
            }
        }
        let binds = bind_list(keys, desc.shape[0] as u64)?;
        let mut inner = self.write();
        if inner.registered_addrs + addrs.len() > self.max_addrs {
            bail!(
                ParamInvalid,
                "registering {} more addresses would exceed the limit of {} registered addresses ({} in use; llmdd.MaxRegisteredAddrs raises it)",
                addrs.len(),
                self.max_addrs,
                inner.registered_addrs
            );
        }
        for (i, &a) in addrs.iter().enumerate() {
            let end = a + t;
            // Overlap with a live region, or with another tensor of this call.
            let hit = inner
                .regions
                .range(..end)
                .next_back()
                .filter(|(_, (e, _))| *e > a)
                .map(|(_, (_, id))| *id);
            if let Some(id) = hit {
                bail!(
                    ParamInvalid,
                    "tensor_addrs[{i}] overlaps memory already registered by cache {id}"
                );
            }
            if addrs[..i].iter().any(|&b| b < end && a < b + t) {
                bail!(
                    ParamInvalid,
                    "tensor_addrs[{i}] overlaps another tensor of the same cache"
                );
            }
        }
        Self::check_keys_free(&inner, &binds, blocks_model)?;
        inner.generation += 1;
        let rec = Arc::new(CacheRecord {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            kind,
            desc: desc.clone(),
            tensor_bytes: t,
            addrs: addrs.into(),
            remote_accessible: remote_accessible.unwrap_or(desc.placement == Placement::Device),
            generation: inner.generation,
            pool: None,
            view: planner_view(kind, desc, t, addrs),
        });
        inner.registered_addrs += addrs.len();
        Self::insert(&mut inner, rec.clone(), binds, blocks_model);
        Ok(rec)
    }

    /// Allocates a cache from `pool` (spec §4.5).
    pub fn allocate(
        &self,
        desc: &CacheDesc,
        kind: CacheKind,
        keys: &[CacheKey],
        blocks_model: Option<u64>,
        pool: &Arc<Pool>,
    ) -> Result<Arc<CacheRecord>> {
        let t = desc.validate()?;
        let binds = bind_list(keys, desc.shape[0] as u64)?;
        {
            let inner = self.read();
            Self::check_keys_free(&inner, &binds, blocks_model)?;
        }
        let mut addrs = Vec::with_capacity(desc.num_tensors as usize);
        for _ in 0..desc.num_tensors {
            match pool.alloc(t) {
                Ok(a) => addrs.push(a),
                Err(e) => {
                    for &a in &addrs {
                        pool.free(a, t);
                    }
                    return Err(e);
                }
            }
        }
        let mut inner = self.write();
        inner.generation += 1;
        let rec = Arc::new(CacheRecord {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            kind,
            desc: desc.clone(),
            tensor_bytes: t,
            view: planner_view(kind, desc, t, &addrs),
            addrs: addrs.into(),
            remote_accessible: true,
            generation: inner.generation,
            pool: Some(pool.clone()),
        });
        // Re-check under the write lock: keys may have been bound meanwhile.
        if let Err(e) = Self::check_keys_free(&inner, &binds, blocks_model) {
            drop(inner);
            drop(rec);
            return Err(e);
        }
        Self::insert(&mut inner, rec.clone(), binds, blocks_model);
        Ok(rec)
    }

    fn remove_record(inner: &mut Inner, id: i64) -> Option<Arc<CacheRecord>> {
        let rec = inner
            .caches
            .remove(&id)
            .or_else(|| inner.deferred.remove(&id))?;
        inner.keys.retain(|_, (c, _)| *c != id);
        inner.slot_keys.retain(|(c, _), _| *c != id);
        inner.blocks.retain(|_, c| *c != id);
        for &a in rec.addrs.iter() {
            inner.regions.remove(&a);
        }
        if !rec.is_allocated() {
            inner.registered_addrs -= rec.addrs.len();
        }
        Some(rec)
    }

    /// Unregisters a registered cache; unknown id is a success; an allocated
    /// cache id is `ParamInvalid`.
    pub fn unregister(&self, id: i64) -> Result<()> {
        let mut inner = self.write();
        match inner.caches.get(&id) {
            None => Ok(()),
            Some(r) if r.is_allocated() => {
                bail!(
                    ParamInvalid,
                    "cache {id} was allocated by the library; use deallocate"
                )
            }
            Some(_) => {
                Self::remove_record(&mut inner, id);
                Ok(())
            }
        }
    }

    /// Drops the id reference of an allocated batch cache; frees it now if no
    /// keys remain, else when the last key goes. Unknown or registered: no-op.
    pub fn deallocate(&self, id: i64, blocks: bool) -> Result<()> {
        let mut inner = self.write();
        let Some(rec) = inner.caches.get(&id).cloned() else {
            return Ok(());
        };
        if !rec.is_allocated() {
            return Ok(());
        }
        if blocks != (rec.kind == CacheKind::Blocks) {
            bail!(
                ParamInvalid,
                "cache {id} is a {} cache; use {}",
                if blocks { "batch" } else { "blocks" },
                if blocks {
                    "deallocate_cache"
                } else {
                    "deallocate_blocks_cache"
                }
            );
        }
        let has_keys = inner.keys.values().any(|(c, _)| *c == id);
        if blocks || !has_keys {
            Self::remove_record(&mut inner, id);
        } else {
            inner.caches.remove(&id);
            inner.deferred.insert(id, rec);
        }
        Ok(())
    }

    /// Unbinds a request/prefix key; frees a deallocated cache whose last key
    /// this was. Absent key, or a key of a registered cache: no-op.
    pub fn remove_key(&self, key: &BindKey) {
        let mut inner = self.write();
        Self::consume_locked(&mut inner, key, true);
    }

    fn consume_locked(inner: &mut Inner, key: &BindKey, only_allocated: bool) {
        let Some(&(id, slot)) = inner.keys.get(key) else {
            return;
        };
        let allocated = inner
            .caches
            .get(&id)
            .or_else(|| inner.deferred.get(&id))
            .is_some_and(|r| r.is_allocated());
        if only_allocated && !allocated {
            return;
        }
        inner.keys.remove(key);
        inner.slot_keys.remove(&(id, slot));
        if inner.deferred.contains_key(&id) && !inner.keys.values().any(|(c, _)| *c == id) {
            Self::remove_record(inner, id);
        }
    }

    /// Consumes a one-shot key after a successful pull.
    pub fn consume(&self, key: &BindKey) {
        let mut inner = self.write();
        Self::consume_locked(&mut inner, key, true);
    }

    /// A live cache by id (`KvCacheNotExist` if unknown).
    pub fn get(&self, id: i64) -> Result<Arc<CacheRecord>> {
        self.read()
            .caches
            .get(&id)
            .cloned()
            .ok_or_else(|| err!(KvCacheNotExist, "local cache {id} does not exist"))
    }

    /// Resolves a key naming one of *this* instance's caches (the owner side of a pull).
    pub fn resolve(&self, key: &CacheKey) -> Result<Resolved> {
        let inner = self.read();
        let lookup = |b: &BindKey| -> Result<Resolved> {
            let (id, slot) = *inner.keys.get(b).ok_or_else(|| {
                err!(
                    KvCacheNotExist,
                    "no cache is bound to {} {} (model {})",
                    if b.is_prefix { "prefix_id" } else { "req_id" },
                    b.id,
                    b.model_id
                )
            })?;
            let record = inner
                .caches
                .get(&id)
                .or_else(|| inner.deferred.get(&id))
                .cloned()
                .ok_or_else(|| err!(KvCacheNotExist, "cache {id} no longer exists"))?;
            #[cfg(test)]
            let consume = (!b.is_prefix && record.is_allocated()).then_some(*b);
            Ok(Resolved {
                record,
                slot,
                #[cfg(test)]
                consume,
            })
        };
        match *key {
            CacheKey::Req {
                req_id,
                model_id,
                prefix_id,
                ..
            } => lookup(&BindKey::for_lookup(req_id, prefix_id, model_id)?),
            CacheKey::IdIndex {
                cache_id,
                batch_index,
                ..
            } => {
                let slot = batch_index as u64;
                if let Some(b) = inner.slot_keys.get(&(cache_id, slot)) {
                    return lookup(b);
                }
                let record = inner
                    .caches
                    .get(&cache_id)
                    .cloned()
                    .ok_or_else(|| err!(KvCacheNotExist, "cache {cache_id} does not exist"))?;
                if slot >= record.desc.shape[0] as u64 {
                    bail!(KvCacheNotExist, "cache {cache_id} has no batch slot {slot}");
                }
                Ok(Resolved {
                    record,
                    slot,
                    #[cfg(test)]
                    consume: None,
                })
            }
            CacheKey::Blocks { model_id, .. } => {
                let id = *inner.blocks.get(&model_id).ok_or_else(|| {
                    err!(
                        KvCacheNotExist,
                        "no blocks cache is bound to model_id {model_id}"
                    )
                })?;
                let record = inner
                    .caches
                    .get(&id)
                    .cloned()
                    .ok_or_else(|| err!(KvCacheNotExist, "cache {id} no longer exists"))?;
                Ok(Resolved {
                    record,
                    slot: 0,
                    #[cfg(test)]
                    consume: None,
                })
            }
        }
    }

    /// The wire entry of a record (with its current key bindings).
    pub fn entry(&self, rec: &CacheRecord) -> CacheEntry {
        let inner = self.read();
        rec.entry(&inner.keys, &inner.blocks)
    }

    /// The cache table published to remote-accessible peers: remote-accessible
    /// caches created at or before `generation`.
    pub fn table(&self, generation: u64) -> Vec<CacheEntry> {
        let inner = self.read();
        let mut v: Vec<CacheEntry> = inner
            .caches
            .values()
            .filter(|r| r.remote_accessible && r.generation <= generation)
            .map(|r| r.entry(&inner.keys, &inner.blocks))
            .collect();
        v.sort_by_key(|e| e.cache_id);
        v
    }

    /// Checks that every segment's local side (`dst` when `write`, else `src`)
    /// lies inside one registered tensor region of a cache that `may` lets the
    /// peer reach (`Err(why)` otherwise). Used by the serving side for every
    /// remote read/write, before a byte moves.
    pub fn check_local(
        &self,
        segs: &[Segment],
        write: bool,
        may: impl Fn(&CacheRecord) -> std::result::Result<(), String>,
    ) -> Result<()> {
        let inner = self.read();
        for (i, s) in segs.iter().enumerate() {
            let a = if write { s.dst } else { s.src };
            let hit = a.checked_add(s.len).and_then(|end| {
                inner
                    .regions
                    .range(..=a)
                    .next_back()
                    .filter(|(_, (e, _))| end <= *e)
                    .map(|(_, (_, id))| *id)
            });
            let Some(id) = hit else {
                bail!(
                    ParamInvalid,
                    "segment {i} [0x{a:x}, +{}) is outside every registered cache",
                    s.len
                );
            };
            let rec = inner.caches.get(&id).or_else(|| inner.deferred.get(&id));
            if let Some(Err(why)) = rec.map(|r| may(r)) {
                bail!(
                    ParamInvalid,
                    "segment {i} [0x{a:x}, +{}) lies in cache {id}, which {why}",
                    s.len
                );
            }
        }
        Ok(())
    }

    /// Number of live caches (for tests).
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.read().caches.len()
    }

    /// Removes everything (finalize).
    pub fn clear(&self) {
        *self.write() = Inner::default();
    }
}

/// Resolves `key` against a peer's published table (remote-cache-accessible
/// mode). Returns the entry's index in `entries` and the slot.
pub fn lookup_in_table(entries: &[CacheEntry], key: &CacheKey) -> Result<(usize, u64)> {
    match *key {
        CacheKey::Req { .. } => Err(err!(
            ParamInvalid,
            "in remote-cache-accessible mode a pull must name the source by CacheKeyByIdAndIndex or BlocksCacheKey"
        )),
        CacheKey::IdIndex {
            cache_id,
            batch_index,
            ..
        } => {
            let i = entries
                .iter()
                .position(|e| e.cache_id == cache_id)
                .ok_or_else(|| err!(KvCacheNotExist, "peer has no remote-accessible cache {cache_id}"))?;
            if batch_index as i64 >= entries[i].shape.first().copied().unwrap_or(0) {
                bail!(KvCacheNotExist, "peer cache {cache_id} has no batch slot {batch_index}");
            }
            Ok((i, batch_index as u64))
        }
        CacheKey::Blocks { model_id, .. } => entries
            .iter()
            .position(|e| e.blocks_model == Some(model_id))
            .map(|i| (i, 0))
            .ok_or_else(|| err!(KvCacheNotExist, "peer has no blocks cache bound to model_id {model_id}")),
    }
}

#[cfg(test)]
mod tests;
