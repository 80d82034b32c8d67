//! The layer-wise async planner (spec §4.4).

use super::*;

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
) -> Result<PlanBuf> {
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
        let mut out = Segs::with_capacity(cap_hint(2, src_blocks.len()));
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
        Ok(PlanBuf::new(out))
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
        let mut out = Segs::with_capacity(cap_hint(2, dst_blocks.len()));
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
        Ok(PlanBuf::new(out))
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
        let mut out = Segs::with_capacity(2);
        for (k, &dbase) in dst_bases.iter().enumerate() {
            let src = tensor_base(local, 2 * layer + k as u32, s_l, "local")? + src_bi * s_l;
            let dst = dst_addr(dbase, 0, 0, s_l, k)?;
            out.push(Segment { dst, src, len: s_l });
        }
        Ok(PlanBuf::new(out))
    }
}
