//! Address arithmetic (spec §4.3–§4.5): turns one transfer call into segments.
//!
//! Everything here is pure: no I/O, no pointer is dereferenced. Each planner
//! validates its arguments (every rejection is `LLM_PARAM_INVALID` with a message
//! naming the argument and the bad value) and returns a list of [`Segment`]s,
//! produced tensor-major (for each tensor pair, then each block/chunk) so that
//! consecutive blocks of one tensor merge into one copy.
//!
//! A planner's result is a [`PlanBuf`]: the only way to a [`Plan`], which is
//! what the byte movers (`transfer::exec`) take, so a raw-address copy starts
//! from planned segments (or, through the `unsafe` [`Plan::assume_checked`],
//! from ranges a caller checked against registered memory itself).
//!
//! Overflow strategy: every tensor whose bytes are touched is checked once
//! ([`tensor_base`]) so that `addr + dim0 * stride` fits in `u64`; every offset
//! computed afterwards stays inside that tensor (indices are range-checked first),
//! so the inner loops need no further checks. Destination addresses that are not
//! backed by a [`CacheView`] (layer-wise async) are checked per segment.

use crate::bail;
use crate::cache::types::{CacheView, LayerSel, Segment, Segs};
pub use crate::cache::types::{Plan, PlanBuf};
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
#[cfg(test)]
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
fn push_merge(out: &mut Segs, run: usize, seg: Segment) {
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
fn push_merge_disjoint(out: &mut Segs, seg: Segment) {
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
#[cfg(test)]
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
#[cfg(test)]
pub fn total_bytes(segs: &[Segment]) -> u64 {
    segs.iter().fold(0u64, |acc, s| acc.saturating_add(s.len))
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

mod async_layer;

mod local;
mod pull;
mod push;
pub use async_layer::*;
pub use local::*;
pub use pull::*;
pub use push::*;

#[cfg(test)]
mod tests;
