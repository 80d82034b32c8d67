//! Local copy and swap planners (spec §4.5).

use super::*;

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
) -> Result<PlanBuf> {
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
    let mut out = Segs::with_capacity(num as usize);
    for t in 0..num {
        let s = tensor_base(src, t, s_s, "source")? + src_bi * s_s + offset;
        let d = tensor_base(dst, t, s_d, "destination")? + dst_bi * s_d + offset;
        out.push(Segment {
            dst: d,
            src: s,
            len,
        });
    }
    Ok(PlanBuf::new(out))
}

/// copy_blocks (spec §4.5): within one blocks-capable cache; `pairs` are
/// `(src_block, dst_block)`, both < dim0; one block per tensor per pair,
/// tensor-major, coalesced (runs are never merged into a segment whose source and
/// destination overlap, so executing the segments in order equals the sequential
/// per-block copies). An empty `pairs` gives an empty plan.
pub fn copy_blocks_plan(cache: &CacheView, pairs: &[(u64, u64)]) -> Result<PlanBuf> {
    let s = geometry(cache, "blocks")?;
    require_blocks(cache, "blocks", "copy_blocks")?;
    check_pairs(pairs, cache.dim0, cache.dim0, "blocks", "blocks")?;
    let num = cache.num_tensors();
    let mut out = Segs::with_capacity(cap_hint(num as usize, pairs.len()));
    if pairs.is_empty() {
        return Ok(PlanBuf::new(out));
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
    Ok(PlanBuf::new(out))
}

/// swap_blocks (spec §4.5): `src` and `dst` blocks-capable, equal block size and
/// num_tensors; `pairs` are `(src_block, dst_block)` in range; one block per tensor
/// per pair, coalesced. The HOST↔DEVICE placement rule is the caller's.
pub fn swap_blocks_plan(dst: &CacheView, src: &CacheView, pairs: &[(u64, u64)]) -> Result<PlanBuf> {
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
    let mut out = Segs::with_capacity(cap_hint(num as usize, pairs.len()));
    if pairs.is_empty() {
        return Ok(PlanBuf::new(out));
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
    Ok(PlanBuf::new(out))
}
