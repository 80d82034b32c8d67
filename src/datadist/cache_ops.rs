//! Cache operations of a session (spec §4.2–§4.5): registration, pools, and
//! the pull/push/copy calls, each turned into one transfer plan and executed.

use std::sync::Arc;
use std::time::Instant;

use crate::backend::Device;
use crate::cache::plan;
use crate::cache::registry::Registry;
use crate::cache::registry::{lookup_in_table, CacheRecord};
use crate::cache::types::Dir;
use crate::cache::types::{
    BindKey, CacheDesc, CacheKey, CacheKind, CacheView, LayerSel, Placement, Segment,
};
use crate::datadist::acl_rules::{self, Op as AclOp};
use crate::datadist::options::Config;
use crate::datadist::peers::Peers;
use crate::datadist::pools::Pools;
use crate::stats::{Direction, Op};
use crate::status::Result;
use crate::transfer::exec;
use crate::transfer::link::{Link, PeerTable};
use crate::transfer::rpc;
use crate::transfer::task::TaskSet;
use crate::{bail, err};

/// A cache operand of swap_blocks: a registered/allocated cache, or host memory
/// described on the fly (`create_cpu_cache`).
pub enum CacheRef {
    /// A registered or allocated cache, by id.
    Id(i64),
    /// Host memory described by the call: its layout and tensor addresses.
    Host {
        /// Its layout (placement HOST).
        desc: CacheDesc,
        /// One address per tensor.
        addrs: Vec<u64>,
    },
}

/// Memory info of remap_registered_memory (`mem_type`: DEVICE = 0, HOST = 1).
pub struct MemInfo {
    /// `MEM_TYPE_DEVICE` (0) or `MEM_TYPE_HOST` (1).
    pub mem_type: u32,
    /// Start address of the memory.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
}

/// The remote side of a transfer, resolved.
pub(super) struct Remote {
    view: RemoteView,
    pub(super) placement: Placement,
    slot: u64,
    consume: Option<(u64, u64)>,
}

/// Where a remote cache's planner view lives.
enum RemoteView {
    /// Made from the entry the peer resolved the key to.
    Owned(CacheView),
    /// Entry `.1` of the link's cached table, whose view was checked (Ok)
    /// when resolved: lent, not copied.
    InTable(Arc<PeerTable>, usize),
}

impl Remote {
    /// The planner's view of the remote cache.
    pub(super) fn view(&self) -> &CacheView {
        match &self.view {
            RemoteView::Owned(v) => v,
            RemoteView::InTable(t, i) => match t.view(*i) {
                Some(Ok(v)) => v,
                // Checked by `resolve_remote`; a table never changes.
                _ => unreachable!("a resolved table entry has a view"),
            },
        }
    }
}

/// The placement a peer reported for one of its caches (untrusted input).
fn peer_placement(code: u32) -> Result<Placement> {
    Placement::from_code(code).map_err(|_| err!(LinkFailed, "peer sent cache placement {code}"))
}

/// The cache operations of one instance, over the owners they use (borrowed
/// from the session by `Session::caches`): the registry, the pools, the
/// backend, the links, the async tasks and the init options.
pub struct CacheOps<'s> {
    pub(crate) config: &'s Config,
    pub(crate) registry: &'s Registry,
    pub(crate) pools: &'s Pools,
    pub(crate) backend: &'s dyn Device,
    pub(crate) peers: Peers<'s>,
    pub(crate) tasks: &'s TaskSet,
}

impl CacheOps<'_> {
    /// register_cache (batch) or register of a mixed cache.
    pub fn register_cache(
        &self,
        desc: &CacheDesc,
        addrs: &[u64],
        keys: &[CacheKey],
        remote_accessible: Option<bool>,
        kind: CacheKind,
    ) -> Result<Arc<CacheRecord>> {
        self.check_register_before_link(desc, remote_accessible)?;
        let rec = self
            .registry
            .register(desc, addrs, kind, keys, None, remote_accessible)?;
        self.backend_register(rec)
    }

    /// A backend that binds memory per link (acl: HCCL exchanges bound
    /// memory once per link; spec §1.8 rule 2) needs a remote-accessible
    /// cache registered before any link.
    fn check_register_before_link(
        &self,
        desc: &CacheDesc,
        remote_accessible: Option<bool>,
    ) -> Result<()> {
        let ra = remote_accessible.unwrap_or(desc.placement == Placement::Device);
        if self.backend.capabilities().register_before_link && ra && self.peers.count() > 0 {
            bail!(
                ParamInvalid,
                "on the acl backend remote-accessible memory must be registered before link_clusters ({} link(s) exist); register first, or unlink, register and link again (or register with remote_accessible=0 for local use)",
                self.peers.count()
            );
        }
        Ok(())
    }

    /// Registers the new cache's memory with the backend (HCCL on acl),
    /// undoing the registration in the registry if that fails.
    pub(crate) fn backend_register(&self, rec: Arc<CacheRecord>) -> Result<Arc<CacheRecord>> {
        if let Err(e) = rec.register_on(self.backend) {
            let _ = self.registry.unregister(rec.id);
            return Err(e);
        }
        Ok(rec)
    }

    /// register_blocks_cache.
    pub fn register_blocks_cache(
        &self,
        desc: &CacheDesc,
        addrs: &[u64],
        key: Option<CacheKey>,
        remote_accessible: Option<bool>,
    ) -> Result<Arc<CacheRecord>> {
        let model = blocks_model(key)?;
        self.check_register_before_link(desc, remote_accessible)?;
        let rec = self.registry.register(
            desc,
            addrs,
            CacheKind::Blocks,
            &[],
            model,
            remote_accessible,
        )?;
        self.backend_register(rec)
    }

    /// unregister_cache: only with no live link (spec §9 item 19).
    pub fn unregister_cache(&self, id: i64) -> Result<()> {
        if self.peers.count() > 0 {
            bail!(
                ExistLink,
                "unregister_cache({id}) needs every link unlinked first ({} remain)",
                self.peers.count()
            );
        }
        self.registry.unregister(id)?;
        self.backend.unregister_memory(id);
        Ok(())
    }

    /// allocate_cache.
    pub fn allocate_cache(&self, desc: &CacheDesc, keys: &[CacheKey]) -> Result<Arc<CacheRecord>> {
        let pool = self.pools.for_placement(desc.placement)?;
        self.registry
            .allocate(desc, CacheKind::Batch, keys, None, pool)
    }

    /// allocate_blocks_cache.
    pub fn allocate_blocks_cache(
        &self,
        desc: &CacheDesc,
        key: Option<CacheKey>,
    ) -> Result<Arc<CacheRecord>> {
        let pool = self.pools.for_placement(desc.placement)?;
        self.registry
            .allocate(desc, CacheKind::Blocks, &[], blocks_model(key)?, pool)
    }

    /// deallocate_cache / deallocate_blocks_cache.
    pub fn deallocate(&self, id: i64, blocks: bool) -> Result<()> {
        self.pools.check_any()?;
        self.registry.deallocate(id, blocks)
    }

    /// remove_cache_key.
    pub fn remove_cache_key(&self, key: &CacheKey) -> Result<()> {
        self.pools.check_any()?;
        let CacheKey::Req {
            req_id,
            model_id,
            prefix_id,
            ..
        } = *key
        else {
            bail!(
                ParamInvalid,
                "remove_cache_key takes a CacheKey (request/prefix key)"
            );
        };
        let b = BindKey::for_lookup(req_id, prefix_id, model_id)?;
        self.registry.remove_key(&b);
        Ok(())
    }

    /// The open link to the cluster `key` names.
    pub(super) fn peer(&self, key: &CacheKey) -> Result<Arc<Link>> {
        self.peers.usable_link(key.cluster_id())
    }

    /// Runs one operation on the link to cluster `c` (usable, counted in
    /// flight for unlink) and counts it in the link's statistics: its
    /// bytes (`Op::set_bytes`) and latency if it succeeds, its status if it
    /// fails, including a refusal because the link is dead or draining.
    fn counted<T>(
        &self,
        c: u64,
        dir: Direction,
        f: impl FnOnce(&Arc<Link>, &mut Op<'_>) -> Result<T>,
    ) -> Result<T> {
        let link = self.peers.link_to(c)?;
        let mut op = link.stats.start(dir);
        let r = self.peers.usable(&link).and_then(|()| {
            let _g = link.begin()?;
            f(&link, &mut op)
        });
        op.finish(link.path(), &r);
        r
    }

    /// Resolves the remote cache a key names: from the peer's cached table in
    /// remote-accessible mode, else by asking the owner.
    pub(super) fn resolve_remote(
        &self,
        link: &Arc<Link>,
        key: &CacheKey,
        deadline: Instant,
    ) -> Result<Remote> {
        if self.config.remote_cache_accessible {
            let table = match link.cached_table() {
                Some(t) => t,
                None => rpc::refresh_table(link, deadline)?,
            };
            let (i, slot) = lookup_in_table(&table, key)?;
            // In range: the index of an entry found in the table.
            table.view(i).transpose()?;
            let placement = peer_placement(table[i].placement)?;
            return Ok(Remote {
                view: RemoteView::InTable(table, i),
                placement,
                slot,
                consume: None,
            });
        }
        let (e, slot) = rpc::resolve(link, key, deadline)?;
        let consume = match *key {
            CacheKey::Req {
                req_id,
                model_id,
                prefix_id,
                ..
            } if prefix_id == crate::cache::types::ID_UNSET => Some((req_id, model_id)),
            CacheKey::IdIndex { .. } => e.req_keys.iter().find(|k| k.2 == slot).map(|k| (k.0, k.1)),
            _ => None,
        };
        let view = e.view()?;
        if slot >= view.dim0 {
            bail!(LinkFailed, "peer resolved a slot outside its cache");
        }
        Ok(Remote {
            view: RemoteView::Owned(view),
            placement: peer_placement(e.placement)?,
            slot,
            consume,
        })
    }

    /// Reads `plan`, then consumes the remote key if the pull must; when
    /// nothing follows the read, `op`'s latency ends with it (the read's own
    /// clock read, not another).
    fn run_read(
        &self,
        link: &Arc<Link>,
        plan: &plan::Plan,
        deadline: Instant,
        remote: &Remote,
        op: &mut Op<'_>,
    ) -> Result<()> {
        let done = exec::run_timed(
            link,
            plan,
            Dir::Read,
            deadline,
            self.config.data_connections as usize,
        )?;
        match remote.consume {
            Some((req_id, model_id)) => rpc::consume(link, req_id, model_id, deadline),
            None => {
                op.ended_at(done);
                Ok(())
            }
        }
    }

    /// acl links: the placement restrictions and the registered-before-link
    /// rule (`acl_rules`). Nothing to check on host links.
    fn acl_checks(
        &self,
        link: &Link,
        op: AclOp,
        local: &CacheRecord,
        local_view: &CacheView,
        remote: &Remote,
    ) -> Result<()> {
        let Some(rules) = link.data_path().and_then(|p| p.device_rules()) else {
            return Ok(());
        };
        acl_rules::check_bound(local, link)?;
        acl_rules::check_placement(
            op,
            local.desc.placement,
            local_view,
            remote.placement,
            remote.view(),
            rules.hccs,
        )
    }

    /// Copies a local plan between memory of placements `src` and `dst`: ACL
    /// memcpy on the acl backend (device memory is not host-addressable), else
    /// memcpy. `pageable`: one side is unregistered (possibly unpinned) host memory.
    fn copy_local(
        &self,
        plan: &plan::Plan,
        src: Placement,
        dst: Placement,
        pageable: bool,
    ) -> Result<()> {
        self.backend
            .copy_local(plan, src, dst, pageable, self.config.sync_kv_timeout)
    }

    /// pull_cache (contiguous → contiguous).
    pub fn pull_cache(
        &self,
        key: &CacheKey,
        dst_id: i64,
        batch_index: u32,
        size: i64,
        sel: &LayerSel,
    ) -> Result<()> {
        let rec = self.registry.get(dst_id)?;
        let local = rec.view();
        if !local.kind.is_batch() {
            bail!(
                ParamInvalid,
                "pull_cache needs a batch cache as destination; cache {dst_id} is a blocks cache"
            );
        }
        if matches!(key, CacheKey::Blocks { .. }) {
            bail!(
                ParamInvalid,
                "pull_cache takes a CacheKey or CacheKeyByIdAndIndex, not a BlocksCacheKey"
            );
        }
        if batch_index as u64 >= local.dim0 {
            bail!(
                ParamInvalid,
                "batch_index {batch_index} is out of range for a cache of {} slots",
                local.dim0
            );
        }
        self.counted(key.cluster_id(), Direction::Pull, |link, op| {
            let deadline = op.started() + self.config.sync_kv_timeout;
            let remote = self.resolve_remote(link, key, deadline)?;
            self.acl_checks(link, AclOp::PullCache, &rec, local, &remote)?;
            let plan = plan::pull_cache_plan(
                local,
                remote.view(),
                remote.slot,
                batch_index as u64,
                size,
                sel,
            )?;
            op.set_bytes(plan_bytes(&plan));
            self.run_read(link, &plan, deadline, &remote, op)
        })
    }

    /// pull_blocks (blocks → blocks, or contiguous → blocks with empty src_blocks).
    pub fn pull_blocks(
        &self,
        key: &CacheKey,
        dst_id: i64,
        src_blocks: &[u64],
        dst_blocks: &[u64],
        sel: &LayerSel,
    ) -> Result<()> {
        let rec = self.registry.get(dst_id)?;
        let local = rec.view();
        if !local.kind.is_blocks() {
            bail!(
                ParamInvalid,
                "pull_blocks needs a blocks cache as destination; cache {dst_id} is a batch cache"
            );
        }
        if dst_blocks.is_empty() {
            bail!(ParamInvalid, "dst_blocks must not be empty");
        }
        let blocks_to_blocks = match *key {
            CacheKey::Blocks { .. } => true,
            CacheKey::IdIndex { batch_index, .. } if !src_blocks.is_empty() => {
                if batch_index != 0 {
                    bail!(
                        ParamInvalid,
                        "a blocks transfer needs batch_index 0 (got {batch_index})"
                    );
                }
                true
            }
            CacheKey::IdIndex { .. } => false,
            CacheKey::Req { .. } if !src_blocks.is_empty() => {
                bail!(ParamInvalid, "src_blocks are only valid with a BlocksCacheKey or CacheKeyByIdAndIndex source")
            }
            CacheKey::Req { .. } => false,
        };
        if blocks_to_blocks && src_blocks.is_empty() {
            bail!(
                ParamInvalid,
                "src_blocks must not be empty for a blocks source"
            );
        }
        self.counted(key.cluster_id(), Direction::Pull, |link, op| {
            let deadline = op.started() + self.config.sync_kv_timeout;
            let remote = self.resolve_remote(link, key, deadline)?;
            let acl_op = if blocks_to_blocks {
                AclOp::PullBlocks
            } else {
                AclOp::PullCacheToBlocks
            };
            self.acl_checks(link, acl_op, &rec, local, &remote)?;
            let plan = if blocks_to_blocks {
                if !remote.view().kind.is_blocks() {
                    bail!(
                        ParamInvalid,
                        "the source cache of cluster {} is not a blocks cache",
                        link.remote_cluster_id
                    );
                }
                plan::pull_blocks_plan(local, remote.view(), src_blocks, dst_blocks, sel)?
            } else {
                plan::pull_cache_to_blocks_plan(local, remote.view(), remote.slot, dst_blocks, sel)?
            };
            op.set_bytes(plan_bytes(&plan));
            self.run_read(link, &plan, deadline, &remote, op)
        })
    }

    fn check_push_mode(&self) -> Result<()> {
        if !self.config.remote_cache_accessible {
            bail!(
                ParamInvalid,
                "push needs remote-cache-accessible mode (llm.EnableRemoteCacheAccessible=1 or llm.LocalCommRes)"
            );
        }
        Ok(())
    }

    fn run_layers(
        &self,
        link: &Arc<Link>,
        layers: Vec<(u32, plan::PlanBuf)>,
        op: &mut Op<'_>,
    ) -> Result<()> {
        op.set_bytes(layers.iter().map(|(_, s)| plan_bytes(s)).sum());
        for (_, segs) in layers {
            let deadline = Instant::now() + self.config.sync_kv_timeout;
            exec::run(
                link,
                &segs,
                Dir::Write,
                deadline,
                self.config.data_connections as usize,
            )?;
        }
        Ok(())
    }

    /// push_cache (contiguous → contiguous, layer by layer).
    pub fn push_cache(
        &self,
        key: &CacheKey,
        src_id: i64,
        src_batch_index: u32,
        size: i64,
        sel: &LayerSel,
    ) -> Result<()> {
        self.check_push_mode()?;
        let CacheKey::IdIndex { batch_index, .. } = *key else {
            bail!(
                ParamInvalid,
                "push_cache takes a CacheKeyByIdAndIndex destination"
            );
        };
        let rec = self.registry.get(src_id)?;
        let local = rec.view();
        if !local.kind.is_batch() {
            bail!(
                ParamInvalid,
                "push_cache needs a batch cache as source; cache {src_id} is a blocks cache"
            );
        }
        self.counted(key.cluster_id(), Direction::Push, |link, op| {
            let deadline = op.started() + self.config.sync_kv_timeout;
            let remote = self.resolve_remote(link, key, deadline)?;
            self.acl_checks(link, AclOp::PushCache, &rec, local, &remote)?;
            let layers = plan::push_cache_plan(
                local,
                remote.view(),
                src_batch_index as u64,
                batch_index as u64,
                size,
                sel,
            )?;
            self.run_layers(link, layers, op)
        })
    }

    /// push_blocks (blocks → blocks, layer by layer).
    pub fn push_blocks(
        &self,
        key: &CacheKey,
        src_id: i64,
        src_blocks: &[u64],
        dst_blocks: &[u64],
        sel: &LayerSel,
    ) -> Result<()> {
        self.check_push_mode()?;
        match *key {
            CacheKey::Blocks { .. } => {}
            CacheKey::IdIndex { batch_index: 0, .. } => {}
            CacheKey::IdIndex { batch_index, .. } => {
                bail!(
                    ParamInvalid,
                    "a blocks transfer needs batch_index 0 (got {batch_index})"
                )
            }
            CacheKey::Req { .. } => bail!(
                ParamInvalid,
                "push_blocks takes a BlocksCacheKey or CacheKeyByIdAndIndex"
            ),
        }
        let rec = self.registry.get(src_id)?;
        let local = rec.view();
        if !local.kind.is_blocks() {
            bail!(
                ParamInvalid,
                "push_blocks needs a blocks cache as source; cache {src_id} is a batch cache"
            );
        }
        self.counted(key.cluster_id(), Direction::Push, |link, op| {
            let deadline = op.started() + self.config.sync_kv_timeout;
            let remote = self.resolve_remote(link, key, deadline)?;
            self.acl_checks(link, AclOp::PushBlocks, &rec, local, &remote)?;
            let layers = plan::push_blocks_plan(local, remote.view(), src_blocks, dst_blocks, sel)?;
            self.run_layers(link, layers, op)
        })
    }

    /// copy_cache (local).
    pub fn copy_cache(
        &self,
        dst_id: i64,
        src_id: i64,
        dst_bi: u32,
        src_bi: u32,
        offset: u64,
        size: i64,
    ) -> Result<()> {
        let dst = self.registry.get(dst_id)?;
        let src = self.registry.get(src_id)?;
        let p = plan::copy_cache_plan(
            dst.view(),
            src.view(),
            dst_bi as u64,
            src_bi as u64,
            offset,
            size,
        )?;
        self.copy_local(&p, src.desc.placement, dst.desc.placement, false)
    }

    /// copy_blocks (local, within one cache).
    pub fn copy_blocks(&self, id: i64, pairs: &[(u64, u64)]) -> Result<()> {
        let c = self.registry.get(id)?;
        let p = plan::copy_blocks_plan(c.view(), pairs)?;
        self.copy_local(&p, c.desc.placement, c.desc.placement, false)
    }

    fn cache_ref(&self, r: &CacheRef, what: &str) -> Result<(CacheView, Placement)> {
        match r {
            CacheRef::Id(id) => {
                let rec = self
                    .registry
                    .get(*id)
                    .map_err(|e| err!(KvCacheNotExist, "{what}: {}", e.message))?;
                Ok((rec.view().clone(), rec.desc.placement))
            }
            CacheRef::Host { desc, addrs } => {
                let t = desc.validate()?;
                if desc.placement != Placement::Host {
                    bail!(
                        ParamInvalid,
                        "{what}: a described cpu cache must have placement HOST"
                    );
                }
                if addrs.len() != desc.num_tensors as usize {
                    bail!(
                        ParamInvalid,
                        "{what}: {} addresses for num_tensors {}",
                        addrs.len(),
                        desc.num_tensors
                    );
                }
                if addrs.contains(&0) {
                    bail!(ParamInvalid, "{what}: tensor address 0");
                }
                Ok((
                    CacheView {
                        kind: CacheKind::Blocks,
                        addrs: addrs.clone(),
                        tensor_bytes: t,
                        dim0: desc.shape[0] as u64,
                    },
                    Placement::Host,
                ))
            }
        }
    }

    /// swap_blocks (HOST ↔ DEVICE only).
    pub fn swap_blocks(&self, src: &CacheRef, dst: &CacheRef, pairs: &[(u64, u64)]) -> Result<()> {
        let (s, sp) = self.cache_ref(src, "src_cache")?;
        let (d, dp) = self.cache_ref(dst, "dst_cache")?;
        if sp == dp {
            bail!(
                ParamInvalid,
                "swap_blocks moves HOST→DEVICE or DEVICE→HOST; both caches are {sp:?}"
            );
        }
        let p = plan::swap_blocks_plan(&d, &s, pairs)?;
        let pageable = matches!(src, CacheRef::Host { .. }) || matches!(dst, CacheRef::Host { .. });
        self.copy_local(&p, sp, dp, pageable)
    }

    /// remap_registered_memory: validated, then reported as not supported (spec §9 item 27).
    pub fn remap_registered_memory(&self, infos: &[MemInfo]) -> Result<()> {
        if infos.is_empty() {
            bail!(ParamInvalid, "mem_infos must not be empty");
        }
        for (i, m) in infos.iter().enumerate() {
            if m.mem_type != 0 {
                bail!(
                    ParamInvalid,
                    "mem_infos[{i}].mem_type must be MEM_TYPE_DEVICE (0)"
                );
            }
            if m.addr == 0 || m.size == 0 {
                bail!(
                    ParamInvalid,
                    "mem_infos[{i}] needs a non-zero addr and size"
                );
            }
        }
        bail!(
            FeatureNotEnabled,
            "remap_registered_memory is not supported (reserved in LLM-DataDist)"
        )
    }
}

/// The bytes a plan moves.
pub(super) fn plan_bytes(plan: &[Segment]) -> u64 {
    plan.iter().map(|s| s.len).sum()
}

fn blocks_model(key: Option<CacheKey>) -> Result<Option<u64>> {
    match key {
        None => Ok(None),
        Some(CacheKey::Blocks { model_id, .. }) => Ok(Some(model_id)),
        Some(_) => bail!(ParamInvalid, "blocks_cache_key must be a BlocksCacheKey"),
    }
}
