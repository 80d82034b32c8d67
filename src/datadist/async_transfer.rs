//! `transfer_cache_async` (spec §4.4, flow 5; §9 items 15–16): validates the
//! call, resolves every destination, computes the plan of every (config, layer)
//! up front — so a bad index, range or address fails before anything starts —
//! and hands the plans to a layer-wise task ([`crate::transfer::task`]).
//!
//! Destinations are checked against what the peer registered: by cache key
//! they come from the peer's cache table (remote-cache-accessible mode); raw
//! addresses (request/response mode) must each lie inside a cache listed in
//! the peer's table, since same-host paths write into the peer directly.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crate::cache::plan;
use crate::cache::types::Dir;
use crate::cache::types::{CacheKey, CacheView, LayerSel, Placement, Segment};
use crate::datadist::cache_ops::{plan_bytes, CacheOps};
use crate::stats::Direction;
use crate::status::{Error, Result};
use crate::transfer::exec;
use crate::transfer::link::{InflightGuard, Link, PeerTable};
use crate::transfer::rpc;
pub use crate::transfer::task::{ConfigResult, SyncFn};
use crate::transfer::task::{Layer, Task, TaskSpec};
use crate::transport::wire::CacheEntry;
use crate::{bail, err};

/// Where one config sends its layers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AsyncDst {
    /// `TransferConfig` (request/response mode): the destination tensor
    /// addresses on cluster `cluster_id`, 2 per selected source layer.
    Addrs {
        /// Cluster id of the destination peer.
        cluster_id: u64,
        /// Destination tensor addresses in the peer's registered memory.
        addrs: Vec<u64>,
    },
    /// `TransferWithCacheKeyConfig` (remote-cache-accessible mode): the peer's
    /// cache named by a `BlocksCacheKey` or `CacheKeyByIdAndIndex`.
    Key(CacheKey),
}

/// One transfer config of `transfer_cache_async`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AsyncConfig {
    /// The destination.
    pub dst: AsyncDst,
    /// Source (and, by key, destination) layer ranges; `per_layer` must be 2.
    pub layers: LayerSel,
    /// Source batch slot (contiguous source; 0 for a blocks source).
    pub src_batch_index: u32,
}

/// The block arguments shared by every config.
#[derive(Clone, Copy, Debug, Default)]
pub struct AsyncBlocks<'a> {
    /// Source blocks (blocks → blocks), or empty.
    pub src: &'a [u64],
    /// Destination blocks, or empty (contiguous destination).
    pub dst: &'a [u64],
    /// Destination block size in bytes; 0 = unset.
    pub dst_block_size: u64,
}

/// The work of one config for one layer: its segments and the link they use.
pub struct LayerPart {
    link: Arc<Link>,
    segments: crate::cache::types::PlanBuf,
}

/// A peer's registered tensor regions `[start, end)`, sorted by start.
struct Regions(Vec<(u64, u64)>);

impl Regions {
    fn of_entries(entries: &[CacheEntry]) -> Regions {
        let mut v: Vec<(u64, u64)> = entries
            .iter()
            .flat_map(|e| {
                e.addrs
                    .iter()
                    .filter_map(move |&a| a.checked_add(e.tensor_bytes).map(|end| (a, end)))
            })
            .collect();
        v.sort_unstable();
        Regions(v)
    }

    fn of_view(v: &CacheView) -> Regions {
        let mut r: Vec<(u64, u64)> = v
            .addrs
            .iter()
            .filter_map(|&a| a.checked_add(v.tensor_bytes).map(|end| (a, end)))
            .collect();
        r.sort_unstable();
        Regions(r)
    }

    /// True if `[a, a + len)` lies inside one region.
    fn contains(&self, a: u64, len: u64) -> bool {
        let Some(end) = a.checked_add(len) else {
            return false;
        };
        // Registered regions never overlap: only the closest start can hold it.
        let i = self.0.partition_point(|&(s, _)| s <= a);
        i > 0 && end <= self.0[i - 1].1
    }

    /// The first segment (of any layer) outside every region.
    fn first_outside<'a>(
        &self,
        layers: impl Iterator<Item = (u32, &'a [Segment])>,
    ) -> Option<(u32, Segment)> {
        for (l, segs) in layers {
            if let Some(s) = segs.iter().find(|s| !self.contains(s.dst, s.len)) {
                return Some((l, *s));
            }
        }
        None
    }
}

fn prefixed(i: usize, e: Error) -> Error {
    Error::new(e.status, format!("configs[{i}]: {}", e.message))
}

impl CacheOps<'_> {
    /// `transfer_cache_async`: validates everything (returning the status
    /// synchronously), then starts a task that calls `sync` per source layer
    /// and pushes each approved layer of every config containing it.
    pub fn transfer_cache_async(
        &self,
        src_cache_id: i64,
        configs: &[AsyncConfig],
        blocks: AsyncBlocks<'_>,
        sync: SyncFn,
    ) -> Result<Task> {
        if configs.is_empty() {
            bail!(ParamInvalid, "configs must not be empty");
        }
        let rec = self.registry.get(src_cache_id)?;
        if rec.desc.placement == Placement::Host {
            bail!(
                ParamInvalid,
                "source cache {src_cache_id} has placement HOST; transfer_cache_async needs a DEVICE source cache"
            );
        }
        let local = rec.view();
        let n = local.num_tensors();
        if n % 2 != 0 {
            bail!(
                ParamInvalid,
                "transfer_cache_async moves 2 tensors per layer and needs an even num_tensors; source cache {src_cache_id} has {n}"
            );
        }
        let bms = (blocks.dst_block_size != 0).then_some(blocks.dst_block_size);
        // Checks the arguments shared by every config (cache kinds, block
        // lists, block size, source block indices) once, before per-config work.
        plan::async_layer_plan(local, 0, 0, [0, 0], blocks.src, blocks.dst, bms)?;

        let deadline = Instant::now() + self.config.sync_kv_timeout;
        let mut guards: Vec<InflightGuard> = Vec::new();
        let mut by_layer: BTreeMap<u32, Vec<(usize, LayerPart)>> = BTreeMap::new();
        for (i, c) in configs.iter().enumerate() {
            let parts = self
                .async_config(c, local, blocks, bms, deadline, &mut guards)
                .map_err(|e| prefixed(i, e))?;
            for (l, p) in parts {
                by_layer.entry(l).or_default().push((i, p));
            }
        }
        drop(guards);
        let spec = TaskSpec {
            num_configs: configs.len(),
            layers: by_layer
                .into_iter()
                .map(|(index, parts)| Layer { index, parts })
                .collect(),
        };
        let timeout = self.config.sync_kv_timeout;
        let stripes = self.config.data_connections as usize;
        // The task keeps the source record (an allocated cache's memory) alive
        // until its threads end.
        let keep = rec.clone();
        let exec = move |p: &LayerPart| -> Result<()> {
            let _source = &keep;
            // Each layer of each config is one push operation of the link.
            let mut op = p.link.stats.start(Direction::Push);
            op.set_bytes(plan_bytes(&p.segments));
            let r = p.link.begin().and_then(|_g| {
                exec::run(
                    &p.link,
                    &p.segments,
                    Dir::Write,
                    op.started() + timeout,
                    stripes,
                )
            });
            op.finish(p.link.path(), &r);
            r
        };
        // Waiters and idle workers busy-poll like the data paths do.
        self.tasks.set_busy_poll(self.config.busy_poll);
        Task::start(self.tasks, spec, sync, exec)
    }

    /// Validates one config and plans each of its layers: `(src layer, part)`.
    fn async_config(
        &self,
        c: &AsyncConfig,
        local: &CacheView,
        blocks: AsyncBlocks<'_>,
        bms: Option<u64>,
        deadline: Instant,
        guards: &mut Vec<InflightGuard>,
    ) -> Result<Vec<(u32, LayerPart)>> {
        let layers = local.num_tensors() / 2;
        if c.layers.per_layer != 2 {
            bail!(
                ParamInvalid,
                "tensor_num_per_layer = {} is not supported: transfer_cache_async moves 2 tensors per layer (pass 0 or 2)",
                c.layers.per_layer
            );
        }
        let (s0, s1) = c.layers.src.unwrap_or((0, layers));
        if s1 > layers {
            bail!(
                ParamInvalid,
                "src layer range [{s0}, {s1}) exceeds the source cache's {layers} layers"
            );
        }
        let count = (s1 - s0) as usize;
        let src_bi = c.src_batch_index as u64;
        let mut out = Vec::with_capacity(count);
        match &c.dst {
            AsyncDst::Addrs { cluster_id, addrs } => {
                if self.config.remote_cache_accessible {
                    bail!(
                        ParamInvalid,
                        "LLMDD_TRANSFER_BY_ADDRS (TransferConfig) is only available in request/response mode, but this instance is remote-cache-accessible; use LLMDD_TRANSFER_BY_CACHE_KEY"
                    );
                }
                if c.layers.dst.is_some() {
                    bail!(
                        ParamInvalid,
                        "a dst layer range is not used with LLMDD_TRANSFER_BY_ADDRS (dst_addrs name the destination); set dst_begin = -1"
                    );
                }
                if addrs.len() != 2 * count {
                    bail!(
                        ParamInvalid,
                        "num_dst_addrs = {} but the src layer range [{s0}, {s1}) selects {count} layers (2 addresses per layer)",
                        addrs.len()
                    );
                }
                if *cluster_id == self.peers.cluster_id {
                    bail!(
                        ParamInvalid,
                        "dst_cluster_id {cluster_id} is this instance's own cluster id"
                    );
                }
                let link = self.peers.usable_link(*cluster_id)?;
                guards.push(link.begin()?);
                for l in s0..s1 {
                    let j = 2 * (l - s0) as usize;
                    let segs = plan::async_layer_plan(
                        local,
                        l,
                        src_bi,
                        [addrs[j], addrs[j + 1]],
                        blocks.src,
                        blocks.dst,
                        bms,
                    )?;
                    out.push((
                        l,
                        LayerPart {
                            link: link.clone(),
                            segments: segs,
                        },
                    ));
                }
                self.check_addrs_registered(&link, &out, deadline)?;
            }
            AsyncDst::Key(key) => {
                if !self.config.remote_cache_accessible {
                    bail!(
                        ParamInvalid,
                        "LLMDD_TRANSFER_BY_CACHE_KEY (TransferWithCacheKeyConfig) needs remote-cache-accessible mode (llm.EnableRemoteCacheAccessible=1 or llm.LocalCommRes); use LLMDD_TRANSFER_BY_ADDRS"
                    );
                }
                let (blocks_key, key_bi) = match *key {
                    CacheKey::Blocks { .. } => (true, 0),
                    CacheKey::IdIndex { batch_index, .. } => (false, batch_index as u64),
                    CacheKey::Req { .. } => bail!(
                        ParamInvalid,
                        "cache_key must be LLMDD_KEY_BLOCKS or LLMDD_KEY_ID_AND_INDEX"
                    ),
                };
                if blocks_key && src_bi != 0 {
                    bail!(
                        ParamInvalid,
                        "src_batch_index = {src_bi} must be 0 with a BlocksCacheKey destination"
                    );
                }
                let link = self.peer(key)?;
                guards.push(link.begin()?);
                let remote = self.resolve_remote(&link, key, deadline)?;
                let rv = remote.view();
                let r_layers = rv.num_tensors() / 2;
                let (d0, d1) = c.layers.dst.unwrap_or((0, r_layers));
                if d1 > r_layers {
                    bail!(
                        ParamInvalid,
                        "dst layer range [{d0}, {d1}) exceeds the {r_layers} layers of the destination cache on cluster {}",
                        link.remote_cluster_id
                    );
                }
                if (d1 - d0) as usize != count {
                    bail!(
                        ParamInvalid,
                        "src layer range [{s0}, {s1}) has {count} layers but dst layer range [{d0}, {d1}) has {}",
                        d1 - d0
                    );
                }
                let off = check_key_destination(local, rv, blocks, bms, blocks_key, key_bi)?;
                for l in s0..s1 {
                    let dl = (d0 + (l - s0)) as usize;
                    let bases = [rv.addrs[2 * dl] + off, rv.addrs[2 * dl + 1] + off];
                    let segs = plan::async_layer_plan(
                        local, l, src_bi, bases, blocks.src, blocks.dst, bms,
                    )?;
                    out.push((
                        l,
                        LayerPart {
                            link: link.clone(),
                            segments: segs,
                        },
                    ));
                }
                let regions = Regions::of_view(rv);
                let it = out.iter().map(|(l, p)| (*l, &p.segments[..]));
                if let Some((l, s)) = regions.first_outside(it) {
                    bail!(
                        ParamInvalid,
                        "layer {l}: destination [{:#x}, +{}) falls outside the destination cache on cluster {}",
                        s.dst,
                        s.len,
                        link.remote_cluster_id
                    );
                }
            }
        }
        Ok(out)
    }

    /// The peer's cache table: cached on the link, fetched with `GetTable`
    /// when absent or when `refresh` is set.
    fn peer_table(
        &self,
        link: &Arc<Link>,
        deadline: Instant,
        refresh: bool,
    ) -> Result<Arc<PeerTable>> {
        if !refresh {
            if let Some(t) = link.cached_table() {
                return Ok(t);
            }
        }
        rpc::refresh_table(link, deadline)
    }

    /// Every destination segment of raw-address parts must lie inside a cache
    /// the peer registered (its table, refetched once on a miss).
    fn check_addrs_registered(
        &self,
        link: &Arc<Link>,
        parts: &[(u32, LayerPart)],
        deadline: Instant,
    ) -> Result<()> {
        let had = link.cached_table().is_some();
        let table = self.peer_table(link, deadline, false)?;
        let it = parts.iter().map(|(l, p)| (*l, &p.segments[..]));
        if Regions::of_entries(&table).first_outside(it).is_none() {
            return Ok(());
        }
        // A table cached by an earlier call may be stale: refetch once.
        let table = if had {
            self.peer_table(link, deadline, true)?
        } else {
            table
        };
        self.check_against(link, parts, &table)
    }

    fn check_against(
        &self,
        link: &Link,
        parts: &[(u32, LayerPart)],
        table: &[CacheEntry],
    ) -> Result<()> {
        let it = parts.iter().map(|(l, p)| (*l, &p.segments[..]));
        match Regions::of_entries(table).first_outside(it) {
            None => Ok(()),
            Some((l, s)) => Err(err!(
                ParamInvalid,
                "layer {l}: destination [{:#x}, +{}) from dst_addrs is outside every cache cluster {} registered",
                s.dst,
                s.len,
                link.remote_cluster_id
            )),
        }
    }
}

/// Checks a cache-key destination against the source and the block arguments
/// (spec §4.4: blocks ↔ blocks with equal block sizes, contiguous → blocks with
/// `dst_block_memory_size` equal to the destination block size, contiguous →
/// contiguous into a slot at least as large). Returns the byte offset of the
/// destination slot within each destination tensor.
fn check_key_destination(
    local: &CacheView,
    rv: &CacheView,
    blocks: AsyncBlocks<'_>,
    bms: Option<u64>,
    blocks_key: bool,
    key_bi: u64,
) -> Result<u64> {
    let s_r = rv.stride();
    if !blocks.dst.is_empty() {
        if !rv.kind.is_blocks() {
            bail!(
                ParamInvalid,
                "dst_blocks given but the destination cache is not a blocks cache"
            );
        }
        if key_bi != 0 {
            bail!(
                ParamInvalid,
                "a blocks destination needs cache_key.batch_index 0 (got {key_bi})"
            );
        }
        let b = bms.unwrap_or(local.stride());
        if b != s_r {
            bail!(
                ParamInvalid,
                "the destination block size is {s_r} bytes but the transfer uses {b}-byte blocks (dst_block_memory_size / source block size)"
            );
        }
        if let Some((j, &k)) = blocks.dst.iter().enumerate().find(|(_, &k)| k >= rv.dim0) {
            bail!(
                ParamInvalid,
                "dst_blocks[{j}] = {k} is out of range for a destination cache of {} blocks",
                rv.dim0
            );
        }
        return Ok(0);
    }
    // Without dst_blocks a blocks destination is one batch whose stride is one
    // block, as in the reference: slot 0 (block 0) receives the source slot.
    if (blocks_key || !rv.kind.is_batch()) && key_bi != 0 {
        bail!(
            ParamInvalid,
            "a blocks destination without dst_blocks is one batch of stride one block: cache_key.batch_index must be 0 (got {key_bi})"
        );
    }
    let s_l = local.stride();
    if s_l > s_r {
        bail!(
            ParamInvalid,
            "the source slot of {s_l} bytes does not fit the destination slot of {s_r} bytes"
        );
    }
    Ok(key_bi * s_r)
}
