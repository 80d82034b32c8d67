//! Pull planners: contiguous and block caches from a peer (spec §4.3).

use super::*;

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
) -> Result<PlanBuf> {
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
    let mut out = Segs::with_capacity(t.m as usize);
    for i in 0..t.m {
        let src = tensor_base(remote, t.ts0 + i, s_r, "remote")? + remote_slot * s_r;
        let dst = tensor_base(local, t.td0 + i, s_l, "local")? + local_slot * s_l;
        out.push(Segment { dst, src, len });
    }
    Ok(PlanBuf::new(out))
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
) -> Result<PlanBuf> {
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
    let mut out = Segs::with_capacity(cap_hint(t.m as usize, src_blocks.len()));
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
    Ok(PlanBuf::new(out))
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
) -> Result<PlanBuf> {
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
    let mut out = Segs::with_capacity(cap_hint(t.m as usize, dst_blocks.len()));
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
    Ok(PlanBuf::new(out))
}
