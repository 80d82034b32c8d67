//! Address arithmetic (spec §4.3–§4.5): turns one transfer call into segments.
//!
//! Everything here is pure: no I/O, no pointer is dereferenced. Each planner
//! validates its arguments (every rejection is `LLM_PARAM_INVALID` with a message
//! naming the argument and the bad value) and returns a list of [`Segment`]s,
//! produced tensor-major (for each tensor pair, then each block/chunk) so that
//! consecutive blocks of one tensor merge into one copy.
//!
//! Overflow strategy: every tensor whose bytes are touched is checked once
//! ([`tensor_base`]) so that `addr + dim0 * stride` fits in `u64`; every offset
//! computed afterwards stays inside that tensor (indices are range-checked first),
//! so the inner loops need no further checks. Destination addresses that are not
//! backed by a [`CacheView`] (layer-wise async) are checked per segment.

use crate::bail;
use crate::cache::types::{CacheView, LayerSel, Segment};
use crate::status::Result;

/// Upper bound on a capacity hint, so a huge (but valid) request never asks the
/// allocator for an absurd amount up front; the vector still grows as needed.
const MAX_PREALLOC: usize = 1 << 20;

fn cap_hint(a: usize, b: usize) -> usize {
    a.saturating_mul(b).min(MAX_PREALLOC)
}

// ---------------------------------------------------------------------------
// Geometry and index checks
// ---------------------------------------------------------------------------

/// Checks a view's geometry (tensors present, dim0 > 0, non-empty slots) and
/// returns its stride `S = T / dim0`.
fn geometry(v: &CacheView, side: &str) -> Result<u64> {
    if v.addrs.is_empty() {
        bail!(
            ParamInvalid,
            "the {side} cache has no tensors (num_tensors = 0)"
        );
    }
    if v.addrs.len() > u32::MAX as usize {
        bail!(
            ParamInvalid,
            "the {side} cache has {} tensors, more than 2^32 - 1",
            v.addrs.len()
        );
    }
    if v.dim0 == 0 {
        bail!(ParamInvalid, "the {side} cache has shape[0] = 0");
    }
    let s = v.tensor_bytes / v.dim0;
    if s == 0 {
        bail!(
            ParamInvalid,
            "the {side} cache has zero-byte slots (tensor_bytes {} < shape[0] {})",
            v.tensor_bytes,
            v.dim0
        );
    }
    Ok(s)
}

fn require_batch(v: &CacheView, side: &str, op: &str) -> Result<()> {
    if !v.kind.is_batch() {
        bail!(
            ParamInvalid,
            "{op} needs a batch (contiguous) {side} cache, but the {side} cache is a {:?} cache",
            v.kind
        );
    }
    Ok(())
}

fn require_blocks(v: &CacheView, side: &str, op: &str) -> Result<()> {
    if !v.kind.is_blocks() {
        bail!(
            ParamInvalid,
            "{op} needs a blocks (paged) {side} cache, but the {side} cache is a {:?} cache",
            v.kind
        );
    }
    Ok(())
}

/// Base address of tensor `t`, verified so that `base + dim0 * stride` (the
/// whole addressable tensor) does not overflow `u64`. `t` must be < num_tensors.
#[inline]
fn tensor_base(v: &CacheView, t: u32, stride: u64, side: &str) -> Result<u64> {
    let base = v.addrs[t as usize];
    // dim0 * stride <= tensor_bytes, so the product cannot overflow.
    let extent = v.dim0 * stride;
    if base.checked_add(extent).is_none() {
        bail!(
            ParamInvalid,
            "{side} tensor {t} at address {base:#x} with {extent} bytes overflows the 64-bit address space"
        );
    }
    Ok(base)
}

fn check_slot(slot: u64, name: &str, side: &str, dim0: u64) -> Result<()> {
    if slot >= dim0 {
        bail!(
            ParamInvalid,
            "{name} = {slot} is out of range for a {side} cache of batch size {dim0}"
        );
    }
    Ok(())
}

/// Batch size of `v` as the source of a transfer without block indices: its
/// dim 0 for a batch cache; 1 for a blocks cache, which the reference treats as
/// one batch whose stride is one block (so slot 0 is block 0).
fn slots_without_indices(v: &CacheView) -> u64 {
    if v.kind.is_batch() {
        v.dim0
    } else {
        1
    }
}

fn check_blocks(idx: &[u64], name: &str, side: &str, dim0: u64) -> Result<()> {
    if let Some((j, &k)) = idx.iter().enumerate().find(|(_, &k)| k >= dim0) {
        bail!(
            ParamInvalid,
            "{name}[{j}] = {k} is out of range for a {side} cache of {dim0} blocks"
        );
    }
    Ok(())
}

fn check_pairs(
    pairs: &[(u64, u64)],
    src_dim0: u64,
    dst_dim0: u64,
    src_side: &str,
    dst_side: &str,
) -> Result<()> {
    for (j, &(s, d)) in pairs.iter().enumerate() {
        if s >= src_dim0 {
            bail!(
                ParamInvalid,
                "pairs[{j}] source block {s} is out of range for a {src_side} cache of {src_dim0} blocks"
            );
        }
        if d >= dst_dim0 {
            bail!(
                ParamInvalid,
                "pairs[{j}] destination block {d} is out of range for a {dst_side} cache of {dst_dim0} blocks"
            );
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Layer / tensor selection
// ---------------------------------------------------------------------------

/// A resolved tensor selection: pairs `(ts0 + i, td0 + i)` for `i in 0..m`.
/// Every selection of §1.6 / §4.3 has this contiguous form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TensorSel {
    ts0: u32,
    td0: u32,
    m: u32,
}

/// A resolved layer selection: layer pairs `(s0 + l, d0 + l)` for `l in 0..count`,
/// `n` tensors per layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct LayerPairs {
    s0: u32,
    d0: u32,
    count: u32,
    n: u32,
}

fn check_per_layer(n: u32) -> Result<()> {
    if n == 0 {
        bail!(
            ParamInvalid,
            "tensor_num_per_layer = 0 is invalid (must be >= 1)"
        );
    }
    Ok(())
}

/// Checks that `n` divides a side's tensors into layers; returns the layer count.
fn layer_count(num: u32, n: u32, side: &str, why: &str) -> Result<u32> {
    if n > num {
        bail!(
            ParamInvalid,
            "tensor_num_per_layer = {n} exceeds the {num} tensors of the {side} cache"
        );
    }
    if num % n != 0 {
        bail!(
            ParamInvalid,
            "the {side} cache's num_tensors {num} is not a multiple of tensor_num_per_layer {n} ({why})"
        );
    }
    Ok(num / n)
}

/// Validates a half-open layer range against a side's layer count; returns its span.
fn check_range(r: (u32, u32), layers: u32, arg: &str, side: &str) -> Result<u32> {
    let (b, e) = r;
    if b >= e {
        bail!(
            ParamInvalid,
            "{arg} [{b}, {e}) is empty or reversed (need begin < end)"
        );
    }
    if e > layers {
        bail!(
            ParamInvalid,
            "{arg} [{b}, {e}) exceeds the {layers} layers of the {side} cache"
        );
    }
    Ok(e - b)
}

fn span_mismatch(s: (u32, u32), d: (u32, u32)) -> crate::status::Error {
    crate::err!(
        ParamInvalid,
        "src_layer_range [{}, {}) covers {} layers but dst_layer_range [{}, {}) covers {}",
        s.0,
        s.1,
        s.1 - s.0,
        d.0,
        d.1,
        d.1 - d.0
    )
}

/// Pull-style selection (§1.6, §4.3 "Tensor selection").
fn resolve_tensors(
    src_num: u32,
    dst_num: u32,
    sel: &LayerSel,
    src_side: &str,
    dst_side: &str,
) -> Result<TensorSel> {
    let n = sel.per_layer;
    check_per_layer(n)?;
    match (sel.src, sel.dst) {
        (Some(s), Some(d)) => {
            let sl = layer_count(
                src_num,
                n,
                src_side,
                "required when src_layer_range is given",
            )?;
            let dl = layer_count(
                dst_num,
                n,
                dst_side,
                "required when dst_layer_range is given",
            )?;
            let ss = check_range(s, sl, "src_layer_range", src_side)?;
            let ds = check_range(d, dl, "dst_layer_range", dst_side)?;
            if ss != ds {
                return Err(span_mismatch(s, d));
            }
            // s.0 < sl and ss <= sl, so these products stay <= num_tensors.
            Ok(TensorSel {
                ts0: s.0 * n,
                td0: d.0 * n,
                m: ss * n,
            })
        }
        (Some(s), None) => {
            let sl = layer_count(
                src_num,
                n,
                src_side,
                "required when src_layer_range is given",
            )?;
            let ss = check_range(s, sl, "src_layer_range", src_side)?;
            let m = ss * n;
            if m != dst_num {
                bail!(
                    ParamInvalid,
                    "src_layer_range [{}, {}) selects {m} tensors but the {dst_side} cache has {dst_num} (no dst_layer_range given)",
                    s.0,
                    s.1
                );
            }
            Ok(TensorSel {
                ts0: s.0 * n,
                td0: 0,
                m,
            })
        }
        (None, Some(d)) => {
            let dl = layer_count(
                dst_num,
                n,
                dst_side,
                "required when dst_layer_range is given",
            )?;
            let ds = check_range(d, dl, "dst_layer_range", dst_side)?;
            let m = ds * n;
            if m != src_num {
                bail!(
                    ParamInvalid,
                    "dst_layer_range [{}, {}) selects {m} tensors but the {src_side} cache has {src_num} (no src_layer_range given)",
                    d.0,
                    d.1
                );
            }
            Ok(TensorSel {
                ts0: 0,
                td0: d.0 * n,
                m,
            })
        }
        (None, None) => {
            if src_num != dst_num {
                bail!(
                    ParamInvalid,
                    "num_tensors differ: the {src_side} cache has {src_num}, the {dst_side} cache has {dst_num} (no layer range given)"
                );
            }
            Ok(TensorSel {
                ts0: 0,
                td0: 0,
                m: src_num,
            })
        }
    }
}

/// Push-style selection (§4.3 push_cache/push_blocks): layer-wise, default
/// range = all layers of each side, equal spans.
fn resolve_layers(
    src_num: u32,
    dst_num: u32,
    sel: &LayerSel,
    src_side: &str,
    dst_side: &str,
) -> Result<LayerPairs> {
    let n = sel.per_layer;
    check_per_layer(n)?;
    let why = "push transfers move whole layers";
    let sl = layer_count(src_num, n, src_side, why)?;
    let dl = layer_count(dst_num, n, dst_side, why)?;
    let s = sel.src.unwrap_or((0, sl));
    let d = sel.dst.unwrap_or((0, dl));
    let ss = check_range(s, sl, "src_layer_range", src_side)?;
    let ds = check_range(d, dl, "dst_layer_range", dst_side)?;
    if ss != ds {
        return Err(span_mismatch(s, d));
    }
    Ok(LayerPairs {
        s0: s.0,
        d0: d.0,
        count: ss,
        n,
    })
}

/// Resolves a layer selection into (src_tensor, dst_tensor) pairs (spec §1.6 and
/// §4.3 "Tensor selection").
///
/// `per_layer` must be >= 1, and `1..=num_tensors` with `num_tensors % per_layer
/// == 0` on each side that has a range. Ranges are half-open layer ranges
/// (`begin < end <= num_tensors / per_layer`). Both ranges: equal span,
/// `ts = s0*n+i`, `td = d0*n+i`. Only a src range: `span*n` must equal
/// `dst_num`, `td = i`. Only a dst range: `span*n` must equal `src_num`,
/// `ts = i`. No range: `src_num == dst_num`, `ts = td = i`.
pub fn tensor_pairs(src_num: u32, dst_num: u32, sel: &LayerSel) -> Result<Vec<(u32, u32)>> {
    let t = resolve_tensors(src_num, dst_num, sel, "source", "destination")?;
    Ok((0..t.m).map(|i| (t.ts0 + i, t.td0 + i)).collect())
}

// ---------------------------------------------------------------------------
// Coalescing
// ---------------------------------------------------------------------------

/// True if `b` continues exactly where `a` ended on both sides.
#[inline]
fn continues(a: &Segment, b: &Segment) -> bool {
    a.dst.checked_add(a.len) == Some(b.dst) && a.src.checked_add(a.len) == Some(b.src)
}

/// Appends `seg`, merging it into the last segment when it continues it and
/// was pushed at or after index `run` (the start of the current tensor pair).
/// Segments never span two tensors: on the acl backend each registered tensor
/// is its own HCCL region, and a descriptor must lie inside one region on both
/// sides, even where two tensors happen to be adjacent in memory.
#[inline]
fn push_merge(out: &mut Vec<Segment>, run: usize, seg: Segment) {
    if seg.len == 0 {
        return;
    }
    if out.len() <= run {
        out.push(seg);
        return;
    }
    if let Some(last) = out.last_mut() {
        if continues(last, &seg) {
            if let Some(len) = last.len.checked_add(seg.len) {
                last.len = len;
                return;
            }
        }
    }
    out.push(seg);
}

/// Like [`push_merge`], but only merges when the merged segment's source and
/// destination ranges do not overlap. Used for copies within one address space
/// (copy_blocks), where merging `1→2` and `2→3` into one overlapping move would
/// change the result of the sequential per-block copies.
#[inline]
fn push_merge_disjoint(out: &mut Vec<Segment>, seg: Segment) {
    if seg.len == 0 {
        return;
    }
    if let Some(last) = out.last_mut() {
        if continues(last, &seg) {
            if let Some(len) = last.len.checked_add(seg.len) {
                let disjoint = match (last.src.checked_add(len), last.dst.checked_add(len)) {
                    (Some(src_end), Some(dst_end)) => src_end <= last.dst || dst_end <= last.src,
                    _ => false,
                };
                if disjoint {
                    last.len = len;
                    return;
                }
            }
        }
    }
    out.push(seg);
}

/// Merges runs where both dst and src continue exactly where the previous
/// segment ended (`dst_prev + len == dst && src_prev + len == src`). Does not
/// reorder. Drops zero-length segments.
pub fn coalesce(segs: &mut Vec<Segment>) {
    let mut w = 0usize;
    for r in 0..segs.len() {
        let seg = segs[r];
        if seg.len == 0 {
            continue;
        }
        if w > 0 {
            let last = &mut segs[w - 1];
            if continues(last, &seg) {
                if let Some(len) = last.len.checked_add(seg.len) {
                    last.len = len;
                    continue;
                }
            }
        }
        segs[w] = seg;
        w += 1;
    }
    segs.truncate(w);
}

/// Total bytes of a segment list (saturating).
pub fn total_bytes(segs: &[Segment]) -> u64 {
    segs.iter().fold(0u64, |acc, s| acc.saturating_add(s.len))
}

// ---------------------------------------------------------------------------
// Pulls
// ---------------------------------------------------------------------------

/// pull_cache, contiguous → contiguous (spec §4.3 pull_cache, §9 items 9–10).
///
/// `local` is the destination, `remote` the source. `remote_slot` is the source
/// slot (< remote.dim0), `local_slot` the destination slot (< local.dim0).
/// `size`: -1 ⇒ the local stride, else > 0; the length must not exceed either
/// stride. Both views must be batch-capable. One segment per tensor pair:
/// `len` bytes from `remote.addrs[ts] + bs*S_r` to `local.addrs[td] + bd*S_l`.
pub fn pull_cache_plan(
    local: &CacheView,
    remote: &CacheView,
    remote_slot: u64,
    local_slot: u64,
    size: i64,
    sel: &LayerSel,
) -> Result<Vec<Segment>> {
    let s_l = geometry(local, "local")?;
    let s_r = geometry(remote, "remote")?;
    require_batch(local, "local", "pull_cache")?;
    require_batch(remote, "remote", "pull_cache")?;
    check_slot(
        remote_slot,
        "remote_slot (source batch index)",
        "remote",
        remote.dim0,
    )?;
    check_slot(local_slot, "local_slot (batch_index)", "local", local.dim0)?;
    let len = match size {
        -1 => s_l,
        x if x > 0 => x as u64,
        x => bail!(
            ParamInvalid,
            "size = {x} is invalid (must be -1 for the whole local slot, or > 0)"
        ),
    };
    if len > s_l {
        bail!(
            ParamInvalid,
            "size = {len} exceeds the local slot size of {s_l} bytes"
        );
    }
    if len > s_r {
        bail!(
            ParamInvalid,
            "size {len} exceeds the remote slot size of {s_r} bytes"
        );
    }
    let t = resolve_tensors(
        remote.num_tensors(),
        local.num_tensors(),
        sel,
        "remote",
        "local",
    )?;
    let mut out = Vec::with_capacity(t.m as usize);
    for i in 0..t.m {
        let src = tensor_base(remote, t.ts0 + i, s_r, "remote")? + remote_slot * s_r;
        let dst = tensor_base(local, t.td0 + i, s_l, "local")? + local_slot * s_l;
        out.push(Segment { dst, src, len });
    }
    Ok(out)
}

/// Shared checks of a blocks → blocks transfer between `local` and `remote`:
/// both blocks-capable, block lists valid, equal block sizes, and indices in
/// range (`src_side` names which cache the source blocks index: "local" or
/// "remote"). `ops` are the operation names used for the local and remote
/// kind checks. Returns the common block size.
fn blocks_pair_geometry(
    local: &CacheView,
    remote: &CacheView,
    src_blocks: &[u64],
    dst_blocks: &[u64],
    ops: (&str, &str),
    src_side: &str,
) -> Result<u64> {
    let s_l = geometry(local, "local")?;
    let s_r = geometry(remote, "remote")?;
    require_blocks(local, "local", ops.0)?;
    require_blocks(remote, "remote", ops.1)?;
    check_block_lists(src_blocks, dst_blocks)?;
    if s_l != s_r {
        bail!(
            ParamInvalid,
            "block sizes differ: local blocks are {s_l} bytes, remote blocks are {s_r} bytes"
        );
    }
    let (src_view, dst_view, dst_side) = if src_side == "remote" {
        (remote, local, "local")
    } else {
        (local, remote, "remote")
    };
    check_blocks(src_blocks, "src_blocks", src_side, src_view.dim0)?;
    check_blocks(dst_blocks, "dst_blocks", dst_side, dst_view.dim0)?;
    Ok(s_l)
}

/// pull_blocks, blocks → blocks (spec §4.3, §9 item 11). Both views blocks-capable
/// with equal block sizes; `src_blocks` (remote) and `dst_blocks` (local) non-empty,
/// of equal length, in range. One block per (tensor pair, j), coalesced.
pub fn pull_blocks_plan(
    local: &CacheView,
    remote: &CacheView,
    src_blocks: &[u64],
    dst_blocks: &[u64],
    sel: &LayerSel,
) -> Result<Vec<Segment>> {
    let s_l = blocks_pair_geometry(
        local,
        remote,
        src_blocks,
        dst_blocks,
        ("pull_blocks", "pull_blocks (blocks → blocks)"),
        "remote",
    )?;
    let t = resolve_tensors(
        remote.num_tensors(),
        local.num_tensors(),
        sel,
        "remote",
        "local",
    )?;
    let s = s_l;
    let mut out = Vec::with_capacity(cap_hint(t.m as usize, src_blocks.len()));
    for i in 0..t.m {
        let sb = tensor_base(remote, t.ts0 + i, s, "remote")?;
        let db = tensor_base(local, t.td0 + i, s, "local")?;
        let run = out.len();
        for (&bs, &bd) in src_blocks.iter().zip(dst_blocks) {
            push_merge(
                &mut out,
                run,
                Segment {
                    dst: db + bd * s,
                    src: sb + bs * s,
                    len: s,
                },
            );
        }
    }
    Ok(out)
}

fn check_block_lists(src_blocks: &[u64], dst_blocks: &[u64]) -> Result<()> {
    if src_blocks.is_empty() {
        bail!(ParamInvalid, "src_blocks must not be empty");
    }
    if dst_blocks.is_empty() {
        bail!(ParamInvalid, "dst_blocks must not be empty");
    }
    if src_blocks.len() != dst_blocks.len() {
        bail!(
            ParamInvalid,
            "src_blocks has {} entries but dst_blocks has {}",
            src_blocks.len(),
            dst_blocks.len()
        );
    }
    Ok(())
}

/// pull_blocks, contiguous → blocks (spec §4.3, §9 item 12). The remote source
/// slot `remote_slot` (batch-capable remote) is cut into chunks of the local block
/// size `S_l`; chunk j goes to local block `dst_blocks[j]`; the last chunk is
/// `S_r - j*S_l` bytes. `dst_blocks` non-empty, at most `ceil(S_r / S_l)` entries,
/// each < local.dim0; local blocks-capable.
pub fn pull_cache_to_blocks_plan(
    local: &CacheView,
    remote: &CacheView,
    remote_slot: u64,
    dst_blocks: &[u64],
    sel: &LayerSel,
) -> Result<Vec<Segment>> {
    let s_l = geometry(local, "local")?;
    let s_r = geometry(remote, "remote")?;
    require_blocks(local, "local", "pull_blocks")?;
    require_batch(remote, "remote", "pull_blocks (contiguous → blocks)")?;
    check_slot(
        remote_slot,
        "remote_slot (source batch index)",
        "remote",
        remote.dim0,
    )?;
    if dst_blocks.is_empty() {
        bail!(ParamInvalid, "dst_blocks must not be empty");
    }
    let max_chunks = s_r.div_ceil(s_l);
    if dst_blocks.len() as u64 > max_chunks {
        bail!(
            ParamInvalid,
            "dst_blocks has {} entries but the remote slot of {s_r} bytes fills at most {max_chunks} local blocks of {s_l} bytes",
            dst_blocks.len()
        );
    }
    check_blocks(dst_blocks, "dst_blocks", "local", local.dim0)?;
    let t = resolve_tensors(
        remote.num_tensors(),
        local.num_tensors(),
        sel,
        "remote",
        "local",
    )?;
    let mut out = Vec::with_capacity(cap_hint(t.m as usize, dst_blocks.len()));
    for i in 0..t.m {
        let slot = tensor_base(remote, t.ts0 + i, s_r, "remote")? + remote_slot * s_r;
        let db = tensor_base(local, t.td0 + i, s_l, "local")?;
        let mut off = 0u64;
        let run = out.len();
        for &bd in dst_blocks {
            // off < s_r because j < ceil(s_r / s_l).
            let len = s_l.min(s_r - off);
            push_merge(
                &mut out,
                run,
                Segment {
                    dst: db + bd * s_l,
                    src: slot + off,
                    len,
                },
            );
            off += len;
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Pushes
// ---------------------------------------------------------------------------

/// push_cache (spec §4.3, §9 item 13): `local` is the (batch-capable) source,
/// `remote` the (batch-capable) destination. `src_slot < local.dim0`,
/// `dst_slot < remote.dim0`, `size` must be -1, and `S_l <= S_r`. Returns one
/// segment list per layer pair, in order, tagged with the source layer: layer pair
/// `(sL, dL)` copies, for `t in 0..n`, `S_l` bytes from
/// `local.addrs[sL*n+t] + bs*S_l` to `remote.addrs[dL*n+t] + bd*S_r`.
/// `LayerSel.src` applies to the local cache, `LayerSel.dst` to the remote one.
pub fn push_cache_plan(
    local: &CacheView,
    remote: &CacheView,
    src_slot: u64,
    dst_slot: u64,
    size: i64,
    sel: &LayerSel,
) -> Result<Vec<(u32, Vec<Segment>)>> {
    let s_l = geometry(local, "local")?;
    let s_r = geometry(remote, "remote")?;
    require_batch(local, "local", "push_cache")?;
    require_batch(remote, "remote", "push_cache")?;
    check_slot(src_slot, "src_batch_index", "local", local.dim0)?;
    check_slot(dst_slot, "destination batch_index", "remote", remote.dim0)?;
    if size != -1 {
        bail!(
            ParamInvalid,
            "size = {size} is invalid for push_cache (only -1, the whole local slot, is supported)"
        );
    }
    if s_l > s_r {
        bail!(
            ParamInvalid,
            "the local slot of {s_l} bytes does not fit in the remote slot of {s_r} bytes"
        );
    }
    let lp = resolve_layers(
        local.num_tensors(),
        remote.num_tensors(),
        sel,
        "local",
        "remote",
    )?;
    let n = lp.n;
    let mut out = Vec::with_capacity(lp.count as usize);
    for l in 0..lp.count {
        let (sl, dl) = (lp.s0 + l, lp.d0 + l);
        let mut segs = Vec::with_capacity(n as usize);
        for t in 0..n {
            let src = tensor_base(local, sl * n + t, s_l, "local")? + src_slot * s_l;
            let dst = tensor_base(remote, dl * n + t, s_r, "remote")? + dst_slot * s_r;
            segs.push(Segment { dst, src, len: s_l });
        }
        out.push((sl, segs));
    }
    Ok(out)
}

/// push_blocks (spec §4.3, §9 item 11): both views blocks-capable with equal block
/// sizes; `src_blocks` (local) and `dst_blocks` (remote) non-empty, equal length,
/// in range. Per layer pair `(sL, dL)`, for each `t` and `j`, `S` bytes from
/// `local.addrs[sL*n+t] + src_blocks[j]*S` to `remote.addrs[dL*n+t] +
/// dst_blocks[j]*S`; coalesced within each layer.
pub fn push_blocks_plan(
    local: &CacheView,
    remote: &CacheView,
    src_blocks: &[u64],
    dst_blocks: &[u64],
    sel: &LayerSel,
) -> Result<Vec<(u32, Vec<Segment>)>> {
    let s_l = blocks_pair_geometry(
        local,
        remote,
        src_blocks,
        dst_blocks,
        ("push_blocks", "push_blocks"),
        "local",
    )?;
    let lp = resolve_layers(
        local.num_tensors(),
        remote.num_tensors(),
        sel,
        "local",
        "remote",
    )?;
    let (n, s) = (lp.n, s_l);
    let mut out = Vec::with_capacity(lp.count as usize);
    for l in 0..lp.count {
        let (sl, dl) = (lp.s0 + l, lp.d0 + l);
        let mut segs = Vec::with_capacity(cap_hint(n as usize, src_blocks.len()));
        for t in 0..n {
            let sb = tensor_base(local, sl * n + t, s, "local")?;
            let db = tensor_base(remote, dl * n + t, s, "remote")?;
            let run = segs.len();
            for (&bs, &bd) in src_blocks.iter().zip(dst_blocks) {
                push_merge(
                    &mut segs,
                    run,
                    Segment {
                        dst: db + bd * s,
                        src: sb + bs * s,
                        len: s,
                    },
                );
            }
        }
        out.push((sl, segs));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Local copies (§4.5)
// ---------------------------------------------------------------------------

/// copy_cache (spec §4.5): both batch-capable, equal num_tensors. `len = size`
/// (> 0) or `S_src - offset` (size == -1; other values invalid). `bi < dim0` on
/// both sides; a non-zero `offset` must be `< S` on both sides; `len <= S - offset`
/// on both. Per tensor t: `len` bytes from `src.addrs[t] + src_bi*S_src + offset`
/// to `dst.addrs[t] + dst_bi*S_dst + offset`.
pub fn copy_cache_plan(
    dst: &CacheView,
    src: &CacheView,
    dst_bi: u64,
    src_bi: u64,
    offset: u64,
    size: i64,
) -> Result<Vec<Segment>> {
    let s_d = geometry(dst, "destination")?;
    let s_s = geometry(src, "source")?;
    require_batch(dst, "destination", "copy_cache")?;
    require_batch(src, "source", "copy_cache")?;
    let num = src.num_tensors();
    if dst.num_tensors() != num {
        bail!(
            ParamInvalid,
            "num_tensors differ: the source cache has {num}, the destination cache has {}",
            dst.num_tensors()
        );
    }
    check_slot(dst_bi, "dst_batch_index", "destination", dst.dim0)?;
    check_slot(src_bi, "src_batch_index", "source", src.dim0)?;
    if offset > 0 {
        if offset >= s_s {
            bail!(
                ParamInvalid,
                "offset = {offset} must be smaller than the source slot size of {s_s} bytes"
            );
        }
        if offset >= s_d {
            bail!(
                ParamInvalid,
                "offset = {offset} must be smaller than the destination slot size of {s_d} bytes"
            );
        }
    }
    // Here offset < s_s (or offset == 0), so the subtractions cannot underflow
    // (offset < s_d is checked above as well when offset > 0).
    let len = match size {
        -1 => s_s - offset,
        x if x > 0 => x as u64,
        x => bail!(
            ParamInvalid,
            "size = {x} is invalid (must be -1 for the rest of the source slot, or > 0)"
        ),
    };
    if len > s_s - offset {
        bail!(
            ParamInvalid,
            "size {len} at offset {offset} exceeds the source slot size of {s_s} bytes"
        );
    }
    if len > s_d - offset {
        bail!(
            ParamInvalid,
            "size {len} at offset {offset} exceeds the destination slot size of {s_d} bytes"
        );
    }
    let mut out = Vec::with_capacity(num as usize);
    for t in 0..num {
        let s = tensor_base(src, t, s_s, "source")? + src_bi * s_s + offset;
        let d = tensor_base(dst, t, s_d, "destination")? + dst_bi * s_d + offset;
        out.push(Segment {
            dst: d,
            src: s,
            len,
        });
    }
    Ok(out)
}

/// copy_blocks (spec §4.5): within one blocks-capable cache; `pairs` are
/// `(src_block, dst_block)`, both < dim0; one block per tensor per pair,
/// tensor-major, coalesced (runs are never merged into a segment whose source and
/// destination overlap, so executing the segments in order equals the sequential
/// per-block copies). An empty `pairs` gives an empty plan.
pub fn copy_blocks_plan(cache: &CacheView, pairs: &[(u64, u64)]) -> Result<Vec<Segment>> {
    let s = geometry(cache, "blocks")?;
    require_blocks(cache, "blocks", "copy_blocks")?;
    check_pairs(pairs, cache.dim0, cache.dim0, "blocks", "blocks")?;
    let num = cache.num_tensors();
    let mut out = Vec::with_capacity(cap_hint(num as usize, pairs.len()));
    if pairs.is_empty() {
        return Ok(out);
    }
    for t in 0..num {
        let base = tensor_base(cache, t, s, "blocks")?;
        for &(bs, bd) in pairs {
            push_merge_disjoint(
                &mut out,
                Segment {
                    dst: base + bd * s,
                    src: base + bs * s,
                    len: s,
                },
            );
        }
    }
    Ok(out)
}

/// swap_blocks (spec §4.5): `src` and `dst` blocks-capable, equal block size and
/// num_tensors; `pairs` are `(src_block, dst_block)` in range; one block per tensor
/// per pair, coalesced. The HOST↔DEVICE placement rule is the caller's.
pub fn swap_blocks_plan(
    dst: &CacheView,
    src: &CacheView,
    pairs: &[(u64, u64)],
) -> Result<Vec<Segment>> {
    let s_d = geometry(dst, "destination")?;
    let s_s = geometry(src, "source")?;
    require_blocks(dst, "destination", "swap_blocks")?;
    require_blocks(src, "source", "swap_blocks")?;
    if s_d != s_s {
        bail!(
            ParamInvalid,
            "block sizes differ: source blocks are {s_s} bytes, destination blocks are {s_d} bytes"
        );
    }
    let num = src.num_tensors();
    if dst.num_tensors() != num {
        bail!(
            ParamInvalid,
            "num_tensors differ: the source cache has {num}, the destination cache has {}",
            dst.num_tensors()
        );
    }
    check_pairs(pairs, src.dim0, dst.dim0, "source", "destination")?;
    let s = s_s;
    let mut out = Vec::with_capacity(cap_hint(num as usize, pairs.len()));
    if pairs.is_empty() {
        return Ok(out);
    }
    for t in 0..num {
        let sb = tensor_base(src, t, s, "source")?;
        let db = tensor_base(dst, t, s, "destination")?;
        for &(bs, bd) in pairs {
            push_merge_disjoint(
                &mut out,
                Segment {
                    dst: db + bd * s,
                    src: sb + bs * s,
                    len: s,
                },
            );
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Layer-wise async (§4.4)
// ---------------------------------------------------------------------------

/// `base + idx * unit`, with room for `len` more bytes, or ParamInvalid.
#[inline]
fn dst_addr(base: u64, idx: u64, unit: u64, len: u64, k: usize) -> Result<u64> {
    match idx
        .checked_mul(unit)
        .and_then(|o| base.checked_add(o))
        .filter(|a| a.checked_add(len).is_some())
    {
        Some(a) => Ok(a),
        None => bail!(
            ParamInvalid,
            "destination address dst_bases[{k}] = {base:#x} + {idx} * {unit} + {len} bytes overflows the 64-bit address space"
        ),
    }
}

/// Layer-wise async transfer plan for ONE source layer (spec §4.4 execution, §9
/// items 12, 15, 16). `dst_bases` are the destination base addresses of the
/// destination layer (k = 0, 1); tensors per layer are fixed at 2.
///
/// - contiguous → contiguous (`src_blocks` empty, `dst_block_size` None/0): `S_l`
///   bytes from `local.addrs[2L+k] + src_bi*S_l` to `dst_bases[k]`. Without
///   block indices a blocks source counts as one batch of stride one block, as
///   in the reference (`src_bi` must be 0: block 0 moves), in both branches.
/// - contiguous → blocks (`src_blocks` empty, `dst_block_size` = bms with
///   `0 < bms < T_l`): the source slot cut into chunks of bms, chunk j →
///   `dst_bases[k] + dst_blocks[j]*bms`, last chunk shorter;
///   `dst_blocks` non-empty with at most `ceil(S_l / bms)` entries.
/// - blocks → blocks (`src_blocks` non-empty): `dst_blocks` of equal length,
///   `src_bi == 0`, bms (default `S_l`) must equal `S_l`; `S_l` bytes from
///   `local.addrs[2L+k] + src_blocks[j]*S_l` to `dst_bases[k] + dst_blocks[j]*S_l`;
///   coalesced.
///
/// Source indices are range-checked; destination indices cannot be (the caller
/// guarantees them), but destination address overflow is rejected.
pub fn async_layer_plan(
    local: &CacheView,
    layer: u32,
    src_bi: u64,
    dst_bases: [u64; 2],
    src_blocks: &[u64],
    dst_blocks: &[u64],
    dst_block_size: Option<u64>,
) -> Result<Vec<Segment>> {
    let s_l = geometry(local, "local")?;
    let num = local.num_tensors();
    if num % 2 != 0 {
        bail!(
            ParamInvalid,
            "transfer_cache_async needs an even num_tensors (2 tensors per layer); the local cache has {num}"
        );
    }
    let layers = num / 2;
    if layer >= layers {
        bail!(
            ParamInvalid,
            "layer {layer} is out of range for a local cache of {layers} layers"
        );
    }
    let bms = dst_block_size.filter(|&b| b != 0);
    if !src_blocks.is_empty() {
        // blocks → blocks
        require_blocks(local, "local", "transfer_cache_async with src_blocks")?;
        if dst_blocks.len() != src_blocks.len() {
            bail!(
                ParamInvalid,
                "src_blocks has {} entries but dst_blocks has {} (blocks → contiguous is unsupported)",
                src_blocks.len(),
                dst_blocks.len()
            );
        }
        if src_bi != 0 {
            bail!(
                ParamInvalid,
                "src_batch_index = {src_bi} must be 0 when src_blocks are given"
            );
        }
        let b = bms.unwrap_or(s_l);
        if b != s_l {
            bail!(
                ParamInvalid,
                "dst_block_memory_size = {b} must equal the local block size of {s_l} bytes"
            );
        }
        check_blocks(src_blocks, "src_blocks", "local", local.dim0)?;
        let mut out = Vec::with_capacity(cap_hint(2, src_blocks.len()));
        for (k, &dbase) in dst_bases.iter().enumerate() {
            let sb = tensor_base(local, 2 * layer + k as u32, s_l, "local")?;
            let run = out.len();
            for (&bs, &bd) in src_blocks.iter().zip(dst_blocks) {
                let dst = dst_addr(dbase, bd, s_l, s_l, k)?;
                push_merge(
                    &mut out,
                    run,
                    Segment {
                        dst,
                        src: sb + bs * s_l,
                        len: s_l,
                    },
                );
            }
        }
        Ok(out)
    } else if let Some(b) = bms {
        // contiguous → blocks
        if dst_blocks.is_empty() {
            bail!(
                ParamInvalid,
                "dst_block_memory_size = {b} is only valid with dst_blocks (the destination is not a blocks cache)"
            );
        }
        check_slot(
            src_bi,
            "src_batch_index",
            "local",
            slots_without_indices(local),
        )?;
        if b >= local.tensor_bytes {
            bail!(
                ParamInvalid,
                "dst_block_memory_size = {b} must be smaller than the local tensor size of {} bytes",
                local.tensor_bytes
            );
        }
        let max_chunks = s_l.div_ceil(b);
        if dst_blocks.len() as u64 > max_chunks {
            bail!(
                ParamInvalid,
                "dst_blocks has {} entries but the local slot of {s_l} bytes fills at most {max_chunks} destination blocks of {b} bytes",
                dst_blocks.len()
            );
        }
        let mut out = Vec::with_capacity(cap_hint(2, dst_blocks.len()));
        for (k, &dbase) in dst_bases.iter().enumerate() {
            let slot = tensor_base(local, 2 * layer + k as u32, s_l, "local")? + src_bi * s_l;
            let mut off = 0u64;
            let run = out.len();
            for &bd in dst_blocks {
                let len = b.min(s_l - off);
                let dst = dst_addr(dbase, bd, b, len, k)?;
                push_merge(
                    &mut out,
                    run,
                    Segment {
                        dst,
                        src: slot + off,
                        len,
                    },
                );
                off += len;
            }
        }
        Ok(out)
    } else {
        // contiguous → contiguous
        if !dst_blocks.is_empty() {
            bail!(
                ParamInvalid,
                "dst_blocks given ({} entries) for a contiguous source requires dst_block_memory_size",
                dst_blocks.len()
            );
        }
        check_slot(
            src_bi,
            "src_batch_index",
            "local",
            slots_without_indices(local),
        )?;
        let mut out = Vec::with_capacity(2);
        for (k, &dbase) in dst_bases.iter().enumerate() {
            let src = tensor_base(local, 2 * layer + k as u32, s_l, "local")? + src_bi * s_l;
            let dst = dst_addr(dbase, 0, 0, s_l, k)?;
            out.push(Segment { dst, src, len: s_l });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
