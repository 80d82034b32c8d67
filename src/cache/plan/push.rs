//! Push planners: contiguous and block caches to a peer.

use super::*;

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
) -> Result<Vec<(u32, PlanBuf)>> {
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
        let mut segs = Segs::with_capacity(n as usize);
        for t in 0..n {
            let src = tensor_base(local, sl * n + t, s_l, "local")? + src_slot * s_l;
            let dst = tensor_base(remote, dl * n + t, s_r, "remote")? + dst_slot * s_r;
            segs.push(Segment { dst, src, len: s_l });
        }
        out.push((sl, PlanBuf::new(segs)));
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
) -> Result<Vec<(u32, PlanBuf)>> {
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
        let mut segs = Segs::with_capacity(cap_hint(n as usize, src_blocks.len()));
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
        out.push((sl, PlanBuf::new(segs)));
    }
    Ok(out)
}
