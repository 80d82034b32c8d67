//! Unit tests of `plan`.

use super::*;
use crate::cache::types::CacheKind;
use crate::status::{Error, Status};
use proptest::prelude::*;

fn view(kind: CacheKind, addrs: &[u64], tensor_bytes: u64, dim0: u64) -> CacheView {
    CacheView {
        kind,
        addrs: addrs.to_vec(),
        tensor_bytes,
        dim0,
    }
}

/// `num` tensors of `dim0 * stride` bytes, tensor t at `base + t * 0x10000`.
fn cache(kind: CacheKind, num: u32, dim0: u64, stride: u64, base: u64) -> CacheView {
    let addrs: Vec<u64> = (0..num as u64).map(|t| base + t * 0x10000).collect();
    view(kind, &addrs, dim0 * stride, dim0)
}

fn sel(src: Option<(u32, u32)>, dst: Option<(u32, u32)>, n: u32) -> LayerSel {
    LayerSel {
        src,
        dst,
        per_layer: n,
    }
}

fn seg(dst: u64, src: u64, len: u64) -> Segment {
    Segment { dst, src, len }
}

/// Adjacent tensors (each its own HCCL region on the acl backend) are never
/// merged into one segment, while runs within a tensor still are.
#[test]
fn segments_never_span_two_tensors() {
    // Two tensors of 4 blocks of 256 bytes, back to back on both sides.
    let adj = |base: u64| view(CacheKind::Blocks, &[base, base + 1024], 1024, 4);
    let (remote, local) = (adj(0x10_0000), adj(0x20_0000));
    let all = [0, 1, 2, 3];
    let p = pull_blocks_plan(&local, &remote, &all, &all, &LayerSel::default()).unwrap();
    assert_eq!(
        p,
        vec![
            seg(0x20_0000, 0x10_0000, 1024),
            seg(0x20_0400, 0x10_0400, 1024)
        ]
    );
    let p = push_blocks_plan(&local, &remote, &all, &all, &LayerSel::default()).unwrap();
    assert_eq!(p.len(), 1, "one layer");
    assert_eq!(p[0].1.len(), 2, "one segment per tensor: {:?}", p[0].1);
}

#[track_caller]
fn invalid<T: std::fmt::Debug>(r: Result<T>, needle: &str) -> Error {
    let e = r.expect_err("expected ParamInvalid");
    assert_eq!(e.status, Status::ParamInvalid, "{e}");
    assert!(
        e.message.contains(needle),
        "message {:?} does not contain {:?}",
        e.message,
        needle
    );
    e
}

const B: CacheKind = CacheKind::Batch;
const K: CacheKind = CacheKind::Blocks;
const M: CacheKind = CacheKind::Mixed;
const L: u64 = 0x100_0000; // local base
const R: u64 = 0x900_0000; // remote base
const T: u64 = 0x10000; // tensor spacing used by `cache`

// ---------------- tensor_pairs ----------------

#[test]
fn pairs_no_range() {
    let p = tensor_pairs(4, 4, &LayerSel::default()).unwrap();
    assert_eq!(p, vec![(0, 0), (1, 1), (2, 2), (3, 3)]);
    // per_layer irrelevant without ranges: default 2 on a 1-tensor cache works.
    assert_eq!(
        tensor_pairs(1, 1, &LayerSel::default()).unwrap(),
        vec![(0, 0)]
    );
    assert_eq!(tensor_pairs(3, 3, &LayerSel::default()).unwrap().len(), 3);
    invalid(
        tensor_pairs(4, 6, &LayerSel::default()),
        "num_tensors differ",
    );
}

#[test]
fn pairs_both_ranges() {
    // src layers [2,4) -> dst [0,2) with n=2: tensors 4..8 -> 0..4
    let p = tensor_pairs(8, 4, &sel(Some((2, 4)), Some((0, 2)), 2)).unwrap();
    assert_eq!(p, vec![(4, 0), (5, 1), (6, 2), (7, 3)]);
    let p = tensor_pairs(6, 9, &sel(Some((1, 2)), Some((2, 3)), 3)).unwrap();
    assert_eq!(p, vec![(3, 6), (4, 7), (5, 8)]);
    invalid(
        tensor_pairs(8, 8, &sel(Some((0, 2)), Some((0, 3)), 2)),
        "covers 2 layers but dst_layer_range [0, 3) covers 3",
    );
    invalid(
        tensor_pairs(8, 8, &sel(Some((3, 5)), Some((0, 2)), 2)),
        "src_layer_range [3, 5) exceeds the 4 layers",
    );
    invalid(
        tensor_pairs(8, 4, &sel(Some((0, 2)), Some((1, 3)), 2)),
        "dst_layer_range [1, 3) exceeds the 2 layers",
    );
    invalid(
        tensor_pairs(8, 8, &sel(Some((2, 2)), Some((0, 0)), 2)),
        "empty or reversed",
    );
    invalid(
        tensor_pairs(8, 8, &sel(Some((3, 1)), Some((0, 2)), 2)),
        "empty or reversed",
    );
}

#[test]
fn pairs_one_sided() {
    let p = tensor_pairs(8, 4, &sel(Some((2, 4)), None, 2)).unwrap();
    assert_eq!(p, vec![(4, 0), (5, 1), (6, 2), (7, 3)]);
    let p = tensor_pairs(2, 6, &sel(None, Some((1, 2)), 2)).unwrap();
    assert_eq!(p, vec![(0, 2), (1, 3)]);
    invalid(
        tensor_pairs(8, 6, &sel(Some((2, 4)), None, 2)),
        "selects 4 tensors but the destination cache has 6",
    );
    invalid(
        tensor_pairs(4, 6, &sel(None, Some((1, 2)), 2)),
        "selects 2 tensors but the source cache has 4",
    );
}

#[test]
fn pairs_per_layer_rules() {
    invalid(
        tensor_pairs(4, 4, &sel(None, None, 0)),
        "tensor_num_per_layer = 0",
    );
    invalid(
        tensor_pairs(4, 4, &sel(Some((0, 1)), Some((0, 1)), 0)),
        "tensor_num_per_layer = 0",
    );
    invalid(
        tensor_pairs(4, 8, &sel(Some((0, 1)), Some((0, 1)), 5)),
        "tensor_num_per_layer = 5 exceeds the 4 tensors",
    );
    invalid(
        tensor_pairs(6, 8, &sel(Some((0, 1)), Some((0, 1)), 4)),
        "num_tensors 6 is not a multiple of tensor_num_per_layer 4",
    );
    // only the side with a range needs divisibility
    let p = tensor_pairs(6, 2, &sel(None, Some((0, 1)), 4));
    invalid(p, "exceeds the 2 tensors");
    assert_eq!(
        tensor_pairs(3, 9, &sel(None, Some((1, 2)), 3)).unwrap(),
        vec![(0, 3), (1, 4), (2, 5)]
    );
    // per_layer == num_tensors is fine
    assert_eq!(
        tensor_pairs(2, 2, &sel(Some((0, 1)), Some((0, 1)), 2))
            .unwrap()
            .len(),
        2
    );
}

// ---------------- pull_cache ----------------

#[test]
fn pull_cache_basic() {
    let local = cache(B, 4, 4, 100, L);
    let remote = cache(B, 4, 8, 100, R);
    let p = pull_cache_plan(&local, &remote, 5, 2, -1, &LayerSel::default()).unwrap();
    assert_eq!(p.len(), 4);
    for (t, s) in p.iter().enumerate() {
        let t = t as u64;
        assert_eq!(*s, seg(L + t * T + 200, R + t * T + 500, 100));
    }
    assert_eq!(total_bytes(&p), 400);
    // explicit size, mixed kinds accepted
    let local = cache(M, 4, 4, 100, L);
    let p = pull_cache_plan(&local, &remote, 0, 3, 40, &LayerSel::default()).unwrap();
    assert_eq!(p[1], seg(L + T + 300, R + T, 40));
}

#[test]
fn pull_cache_size_rules() {
    // local stride 100, remote stride 120
    let local = cache(B, 2, 4, 100, L);
    let remote = cache(B, 2, 4, 120, R);
    let d = LayerSel::default();
    assert_eq!(
        pull_cache_plan(&local, &remote, 0, 0, -1, &d).unwrap()[0].len,
        100
    );
    invalid(
        pull_cache_plan(&local, &remote, 0, 0, 0, &d),
        "size = 0 is invalid",
    );
    invalid(
        pull_cache_plan(&local, &remote, 0, 0, -2, &d),
        "size = -2 is invalid",
    );
    invalid(
        pull_cache_plan(&local, &remote, 0, 0, 101, &d),
        "exceeds the local slot size of 100",
    );
    // -1 means local stride; must fit in the remote stride (§9 item 9)
    let remote_small = cache(B, 2, 4, 80, R);
    invalid(
        pull_cache_plan(&local, &remote_small, 0, 0, -1, &d),
        "exceeds the remote slot size of 80",
    );
    invalid(
        pull_cache_plan(&local, &remote_small, 0, 0, 90, &d),
        "exceeds the remote slot size of 80",
    );
    assert_eq!(
        pull_cache_plan(&local, &remote_small, 0, 0, 80, &d).unwrap()[1].len,
        80
    );
}

#[test]
fn pull_cache_rejects() {
    let local = cache(B, 2, 4, 100, L);
    let remote = cache(B, 2, 8, 100, R);
    let d = LayerSel::default();
    invalid(
        pull_cache_plan(&local, &remote, 8, 0, -1, &d),
        "remote_slot (source batch index) = 8 is out of range for a remote cache of batch size 8",
    );
    invalid(
        pull_cache_plan(&local, &remote, 0, 4, -1, &d),
        "local_slot (batch_index) = 4 is out of range",
    );
    let blocks_local = cache(K, 2, 4, 100, L);
    invalid(
        pull_cache_plan(&blocks_local, &remote, 0, 0, -1, &d),
        "needs a batch (contiguous) local cache",
    );
    let blocks_remote = cache(K, 2, 4, 100, R);
    invalid(
        pull_cache_plan(&local, &blocks_remote, 0, 0, -1, &d),
        "needs a batch (contiguous) remote cache",
    );
    let local3 = cache(B, 3, 4, 100, L);
    invalid(
        pull_cache_plan(&local3, &remote, 0, 0, -1, &d),
        "num_tensors differ",
    );
    // geometry
    let empty = view(B, &[], 400, 4);
    invalid(pull_cache_plan(&empty, &remote, 0, 0, -1, &d), "no tensors");
    let zero_dim = view(B, &[L], 400, 0);
    invalid(
        pull_cache_plan(&zero_dim, &remote, 0, 0, -1, &d),
        "shape[0] = 0",
    );
    let tiny = view(B, &[L, L], 3, 4);
    invalid(
        pull_cache_plan(&tiny, &remote, 0, 0, -1, &d),
        "zero-byte slots",
    );
}

#[test]
fn pull_cache_overflow() {
    let local = view(B, &[L, u64::MAX - 300], 400, 4);
    let remote = cache(B, 2, 4, 100, R);
    invalid(
        pull_cache_plan(&local, &remote, 0, 0, -1, &LayerSel::default()),
        "local tensor 1 at address",
    );
    let remote = view(B, &[u64::MAX - 100, R], 400, 4);
    let local = cache(B, 2, 4, 100, L);
    invalid(
        pull_cache_plan(&local, &remote, 0, 0, -1, &LayerSel::default()),
        "overflows the 64-bit address space",
    );
    // exactly fits at the top of the address space
    let remote = view(B, &[u64::MAX - 400, R], 400, 4);
    let p = pull_cache_plan(&local, &remote, 3, 0, -1, &LayerSel::default()).unwrap();
    assert_eq!(p[0].src, u64::MAX - 100);
}

#[test]
fn pull_cache_layer_ranges() {
    let local = cache(B, 4, 2, 64, L);
    let remote = cache(B, 8, 2, 64, R);
    let p = pull_cache_plan(
        &local,
        &remote,
        1,
        0,
        -1,
        &sel(Some((2, 4)), Some((0, 2)), 2),
    )
    .unwrap();
    let got: Vec<_> = p
        .iter()
        .map(|s| ((s.src - R - 64) / T, (s.dst - L) / T))
        .collect();
    assert_eq!(got, vec![(4, 0), (5, 1), (6, 2), (7, 3)]);
    invalid(
        pull_cache_plan(
            &local,
            &remote,
            1,
            0,
            -1,
            &sel(Some((2, 4)), Some((0, 1)), 2),
        ),
        "covers",
    );
}

// ---------------- pull_blocks ----------------

#[test]
fn pull_blocks_coalesces() {
    let local = cache(K, 2, 128, 32, L);
    let remote = cache(K, 2, 64, 32, R);
    let d = LayerSel::default();
    // adjacent 1,2,3 -> 5,6,7: one segment per tensor
    let p = pull_blocks_plan(&local, &remote, &[1, 2, 3], &[5, 6, 7], &d).unwrap();
    assert_eq!(
        p,
        vec![
            seg(L + 5 * 32, R + 32, 96),
            seg(L + T + 5 * 32, R + T + 32, 96)
        ]
    );
    // 1,3 -> two segments per tensor
    let p = pull_blocks_plan(&local, &remote, &[1, 3], &[1, 3], &d).unwrap();
    assert_eq!(
        p,
        vec![
            seg(L + 32, R + 32, 32),
            seg(L + 96, R + 96, 32),
            seg(L + T + 32, R + T + 32, 32),
            seg(L + T + 96, R + T + 96, 32)
        ]
    );
    // only source contiguous -> no merge
    let p = pull_blocks_plan(&local, &remote, &[1, 2], &[4, 9], &d).unwrap();
    assert_eq!(p.len(), 4);
    assert_eq!(total_bytes(&p), 4 * 32);
}

#[test]
fn pull_blocks_rejects() {
    let local = cache(K, 2, 128, 32, L);
    let remote = cache(K, 2, 64, 32, R);
    let d = LayerSel::default();
    let e = invalid(
        pull_blocks_plan(&local, &remote, &[0, 1, 2, 3], &[0, 1, 2, 130], &d),
        "dst_blocks[3] = 130",
    );
    assert!(e.message.contains("local cache of 128 blocks"));
    invalid(
        pull_blocks_plan(&local, &remote, &[0, 64], &[0, 1], &d),
        "src_blocks[1] = 64 is out of range for a remote cache of 64 blocks",
    );
    invalid(
        pull_blocks_plan(&local, &remote, &[0, 1], &[0], &d),
        "src_blocks has 2 entries but dst_blocks has 1",
    );
    invalid(
        pull_blocks_plan(&local, &remote, &[], &[], &d),
        "src_blocks must not be empty",
    );
    invalid(
        pull_blocks_plan(&local, &remote, &[1], &[], &d),
        "dst_blocks must not be empty",
    );
    let remote16 = cache(K, 2, 64, 16, R);
    invalid(
        pull_blocks_plan(&local, &remote16, &[0], &[0], &d),
        "block sizes differ",
    );
    let batch_local = cache(B, 2, 128, 32, L);
    invalid(
        pull_blocks_plan(&batch_local, &remote, &[0], &[0], &d),
        "needs a blocks (paged) local cache",
    );
    let batch_remote = cache(B, 2, 64, 32, R);
    invalid(
        pull_blocks_plan(&local, &batch_remote, &[0], &[0], &d),
        "remote cache is a Batch cache",
    );
    // mixed both sides ok
    let ml = cache(M, 2, 128, 32, L);
    let mr = cache(M, 2, 64, 32, R);
    assert_eq!(pull_blocks_plan(&ml, &mr, &[0], &[0], &d).unwrap().len(), 2);
}

#[test]
fn pull_blocks_layer_ranges() {
    let local = cache(K, 4, 16, 8, L);
    let remote = cache(K, 8, 16, 8, R);
    let p = pull_blocks_plan(
        &local,
        &remote,
        &[3],
        &[2],
        &sel(Some((2, 4)), Some((0, 2)), 2),
    )
    .unwrap();
    let got: Vec<_> = p
        .iter()
        .map(|s| {
            (
                (s.src - R) / T,
                (s.dst - L) / T,
                (s.src - R) % T,
                (s.dst - L) % T,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (4, 0, 24, 16),
            (5, 1, 24, 16),
            (6, 2, 24, 16),
            (7, 3, 24, 16)
        ]
    );
    invalid(
        pull_blocks_plan(
            &local,
            &remote,
            &[3],
            &[2],
            &sel(Some((3, 5)), Some((0, 2)), 2),
        ),
        "exceeds the 4 layers",
    );
    invalid(
        pull_blocks_plan(
            &local,
            &remote,
            &[3],
            &[2],
            &sel(Some((0, 1)), Some((0, 1)), 3),
        ),
        "not a multiple",
    );
}

// ---------------- contiguous -> blocks ----------------

#[test]
fn pull_cache_to_blocks_chunks() {
    // remote slot 100 bytes, local blocks of 32: chunks 32,32,32,4
    let local = cache(K, 2, 16, 32, L);
    let remote = cache(B, 2, 4, 100, R);
    let d = LayerSel::default();
    let p = pull_cache_to_blocks_plan(&local, &remote, 2, &[9, 3, 4, 0], &d).unwrap();
    assert_eq!(
        &p[..4],
        &[
            seg(L + 9 * 32, R + 200, 32),
            seg(L + 3 * 32, R + 232, 64), // chunks 1,2 -> blocks 3,4 merged
            seg(L, R + 296, 4),           // last chunk shorter
            seg(L + T + 9 * 32, R + T + 200, 32),
        ]
    );
    assert_eq!(p.len(), 6);
    assert_eq!(total_bytes(&p), 200);
    // fewer blocks than chunks: partial slot
    let p = pull_cache_to_blocks_plan(&local, &remote, 0, &[1, 2], &d).unwrap();
    assert_eq!(p, vec![seg(L + 32, R, 64), seg(L + T + 32, R + T, 64)]);
    // too many blocks: ceil(100/32) = 4
    invalid(
        pull_cache_to_blocks_plan(&local, &remote, 0, &[0, 1, 2, 3, 4], &d),
        "fills at most 4 local blocks",
    );
    invalid(
        pull_cache_to_blocks_plan(&local, &remote, 0, &[], &d),
        "dst_blocks must not be empty",
    );
    invalid(
        pull_cache_to_blocks_plan(&local, &remote, 4, &[0], &d),
        "remote_slot (source batch index) = 4",
    );
    invalid(
        pull_cache_to_blocks_plan(&local, &remote, 0, &[16], &d),
        "dst_blocks[0] = 16 is out of range for a local cache of 16 blocks",
    );
    let bl = cache(B, 2, 16, 32, L);
    invalid(
        pull_cache_to_blocks_plan(&bl, &remote, 0, &[0], &d),
        "needs a blocks (paged) local cache",
    );
    let kr = cache(K, 2, 4, 100, R);
    invalid(
        pull_cache_to_blocks_plan(&local, &kr, 0, &[0], &d),
        "needs a batch (contiguous) remote cache",
    );
    // exact multiple: 96-byte slot into 32-byte blocks = 3 chunks
    let remote96 = cache(B, 2, 4, 96, R);
    let p = pull_cache_to_blocks_plan(&local, &remote96, 1, &[5, 6, 7], &d).unwrap();
    assert_eq!(p[0], seg(L + 160, R + 96, 96));
    invalid(
        pull_cache_to_blocks_plan(&local, &remote96, 1, &[5, 6, 7, 8], &d),
        "at most 3",
    );
    // slot smaller than a block: one chunk of S_r
    let remote10 = cache(B, 2, 4, 10, R);
    let p = pull_cache_to_blocks_plan(&local, &remote10, 3, &[2], &d).unwrap();
    assert_eq!(p[0], seg(L + 64, R + 30, 10));
}

// ---------------- push_cache ----------------

#[test]
fn push_cache_per_layer() {
    let local = cache(B, 4, 2, 64, L); // 2 layers
    let remote = cache(B, 6, 4, 80, R); // 3 layers
                                        // default ranges: layer counts differ
    invalid(
        push_cache_plan(&local, &remote, 1, 2, -1, &LayerSel::default()),
        "covers 2 layers but dst_layer_range [0, 3) covers 3",
    );
    let p = push_cache_plan(&local, &remote, 1, 2, -1, &sel(None, Some((1, 3)), 2)).unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[0].0, 0);
    assert_eq!(
        p[0].1,
        vec![
            seg(R + 2 * T + 160, L + 64, 64),
            seg(R + 3 * T + 160, L + T + 64, 64)
        ]
    );
    assert_eq!(p[1].0, 1);
    assert_eq!(
        p[1].1,
        vec![
            seg(R + 4 * T + 160, L + 2 * T + 64, 64),
            seg(R + 5 * T + 160, L + 3 * T + 64, 64)
        ]
    );
    // src range only on a 3-layer remote of equal layer count
    let remote4 = cache(B, 4, 4, 80, R);
    let p = push_cache_plan(&local, &remote4, 0, 0, -1, &LayerSel::default()).unwrap();
    assert_eq!(p.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1]);
    let p = push_cache_plan(
        &local,
        &remote4,
        0,
        0,
        -1,
        &sel(Some((1, 2)), Some((0, 1)), 2),
    )
    .unwrap();
    assert_eq!(
        p,
        vec![(
            1,
            PlanBuf::new(vec![seg(R, L + 2 * T, 64), seg(R + T, L + 3 * T, 64)])
        )]
    );
    // per_layer 1
    let p = push_cache_plan(&local, &remote4, 0, 0, -1, &sel(None, None, 1)).unwrap();
    assert_eq!(p.len(), 4);
    assert!(p.iter().all(|(_, s)| s.len() == 1));
}

#[test]
fn push_cache_rejects() {
    let local = cache(B, 4, 2, 64, L);
    let remote = cache(B, 4, 4, 80, R);
    let d = LayerSel::default();
    invalid(
        push_cache_plan(&local, &remote, 0, 0, 64, &d),
        "size = 64 is invalid for push_cache",
    );
    invalid(push_cache_plan(&local, &remote, 0, 0, 0, &d), "size = 0");
    invalid(
        push_cache_plan(&local, &remote, 2, 0, -1, &d),
        "src_batch_index = 2 is out of range for a local cache of batch size 2",
    );
    invalid(
        push_cache_plan(&local, &remote, 0, 4, -1, &d),
        "destination batch_index = 4",
    );
    let remote_small = cache(B, 4, 4, 32, R);
    invalid(
        push_cache_plan(&local, &remote_small, 0, 0, -1, &d),
        "does not fit in the remote slot of 32",
    );
    let kl = cache(K, 4, 2, 64, L);
    invalid(
        push_cache_plan(&kl, &remote, 0, 0, -1, &d),
        "needs a batch (contiguous) local cache",
    );
    let kr = cache(K, 4, 4, 80, R);
    invalid(
        push_cache_plan(&local, &kr, 0, 0, -1, &d),
        "needs a batch (contiguous) remote cache",
    );
    let odd = cache(B, 3, 2, 64, L);
    invalid(
        push_cache_plan(&odd, &remote, 0, 0, -1, &d),
        "num_tensors 3 is not a multiple",
    );
    invalid(
        push_cache_plan(&local, &remote, 0, 0, -1, &sel(None, None, 0)),
        "tensor_num_per_layer = 0",
    );
    invalid(
        push_cache_plan(&local, &remote, 0, 0, -1, &sel(None, None, 8)),
        "exceeds the 4 tensors",
    );
    invalid(
        push_cache_plan(
            &local,
            &remote,
            0,
            0,
            -1,
            &sel(Some((0, 3)), Some((0, 3)), 2),
        ),
        "src_layer_range [0, 3) exceeds the 2 layers",
    );
}

// ---------------- push_blocks ----------------

#[test]
fn push_blocks_per_layer() {
    let local = cache(K, 4, 8, 16, L);
    let remote = cache(K, 4, 32, 16, R);
    let p = push_blocks_plan(
        &local,
        &remote,
        &[0, 1, 2, 5],
        &[10, 11, 12, 20],
        &LayerSel::default(),
    )
    .unwrap();
    assert_eq!(p.len(), 2);
    assert_eq!(p[1].0, 1);
    assert_eq!(
        p[1].1,
        vec![
            seg(R + 2 * T + 160, L + 2 * T, 48),
            seg(R + 2 * T + 320, L + 2 * T + 80, 16),
            seg(R + 3 * T + 160, L + 3 * T, 48),
            seg(R + 3 * T + 320, L + 3 * T + 80, 16),
        ]
    );
    let p = push_blocks_plan(
        &local,
        &remote,
        &[7],
        &[31],
        &sel(Some((1, 2)), Some((0, 1)), 2),
    )
    .unwrap();
    assert_eq!(
        p,
        vec![(
            1,
            PlanBuf::new(vec![
                seg(R + 31 * 16, L + 2 * T + 112, 16),
                seg(R + T + 31 * 16, L + 3 * T + 112, 16)
            ])
        )]
    );
}

#[test]
fn push_blocks_rejects() {
    let local = cache(K, 4, 8, 16, L);
    let remote = cache(K, 4, 32, 16, R);
    let d = LayerSel::default();
    invalid(
        push_blocks_plan(&local, &remote, &[8], &[0], &d),
        "src_blocks[0] = 8 is out of range for a local cache of 8 blocks",
    );
    invalid(
        push_blocks_plan(&local, &remote, &[0, 1], &[0, 32], &d),
        "dst_blocks[1] = 32 is out of range for a remote cache of 32 blocks",
    );
    invalid(
        push_blocks_plan(&local, &remote, &[0, 1], &[0], &d),
        "src_blocks has 2 entries",
    );
    invalid(
        push_blocks_plan(&local, &remote, &[], &[], &d),
        "must not be empty",
    );
    let r8 = cache(K, 4, 32, 8, R);
    invalid(
        push_blocks_plan(&local, &r8, &[0], &[0], &d),
        "block sizes differ",
    );
    let bl = cache(B, 4, 8, 16, L);
    invalid(
        push_blocks_plan(&bl, &remote, &[0], &[0], &d),
        "needs a blocks (paged) local cache",
    );
    let r6 = cache(K, 6, 32, 16, R);
    invalid(
        push_blocks_plan(&local, &r6, &[0], &[0], &d),
        "covers 2 layers but dst_layer_range [0, 3)",
    );
}

// ---------------- copy_cache ----------------

#[test]
fn copy_cache_rules() {
    let dst = cache(B, 2, 4, 100, L);
    let src = cache(B, 2, 8, 120, R);
    let p = copy_cache_plan(&dst, &src, 1, 7, 10, 50).unwrap();
    assert_eq!(
        p,
        vec![seg(L + 110, R + 850, 50), seg(L + T + 110, R + T + 850, 50)]
    );
    // size -1 with offset: S_src - offset = 110 > S_dst - offset = 90
    invalid(
        copy_cache_plan(&dst, &src, 0, 0, 10, -1),
        "exceeds the destination slot size of 100",
    );
    let src_eq = cache(B, 2, 8, 100, R);
    let p = copy_cache_plan(&dst, &src_eq, 0, 0, 30, -1).unwrap();
    assert_eq!(p[0].len, 70);
    invalid(
        copy_cache_plan(&dst, &src, 0, 0, 0, 0),
        "size = 0 is invalid",
    );
    invalid(
        copy_cache_plan(&dst, &src, 0, 0, 0, -2),
        "size = -2 is invalid",
    );
    invalid(
        copy_cache_plan(&dst, &src, 0, 0, 100, 1),
        "offset = 100 must be smaller than the destination slot size",
    );
    invalid(
        copy_cache_plan(&dst, &src, 0, 0, 120, 1),
        "offset = 120 must be smaller than the source slot size",
    );
    invalid(
        copy_cache_plan(&dst, &src, 0, 0, 50, 51),
        "exceeds the destination slot size",
    );
    invalid(
        copy_cache_plan(&dst, &src_eq, 0, 0, 0, 101),
        "exceeds the source slot size",
    );
    invalid(
        copy_cache_plan(&dst, &src, 4, 0, 0, 1),
        "dst_batch_index = 4",
    );
    invalid(
        copy_cache_plan(&dst, &src, 0, 8, 0, 1),
        "src_batch_index = 8",
    );
    let src3 = cache(B, 3, 8, 100, R);
    invalid(
        copy_cache_plan(&dst, &src3, 0, 0, 0, -1),
        "num_tensors differ",
    );
    let kb = cache(K, 2, 8, 100, R);
    invalid(
        copy_cache_plan(&dst, &kb, 0, 0, 0, -1),
        "needs a batch (contiguous) source cache",
    );
    assert_eq!(
        copy_cache_plan(&dst, &src_eq, 3, 3, 0, -1).unwrap()[1],
        seg(L + T + 300, R + T + 300, 100)
    );
}

// ---------------- copy_blocks / swap_blocks ----------------

#[test]
fn copy_blocks_rules() {
    let c = cache(K, 2, 16, 8, L);
    let p = copy_blocks_plan(&c, &[(0, 4), (1, 5), (2, 6)]).unwrap();
    assert_eq!(p, vec![seg(L + 32, L, 24), seg(L + T + 32, L + T, 24)]);
    // chain 1->2, 2->3 must not merge into an overlapping move
    let p = copy_blocks_plan(&c, &[(1, 2), (2, 3)]).unwrap();
    assert_eq!(p.len(), 4);
    invalid(
        copy_blocks_plan(&c, &[(0, 1), (16, 2)]),
        "pairs[1] source block 16 is out of range for a blocks cache of 16 blocks",
    );
    invalid(
        copy_blocks_plan(&c, &[(0, 16)]),
        "pairs[0] destination block 16",
    );
    assert!(copy_blocks_plan(&c, &[]).unwrap().is_empty());
    let b = cache(B, 2, 16, 8, L);
    invalid(copy_blocks_plan(&b, &[(0, 1)]), "needs a blocks (paged)");
}

#[test]
fn swap_blocks_rules() {
    let dst = cache(K, 2, 16, 8, L);
    let src = cache(K, 2, 4, 8, R);
    let p = swap_blocks_plan(&dst, &src, &[(0, 10), (1, 11), (3, 2)]).unwrap();
    assert_eq!(
        p,
        vec![
            seg(L + 80, R, 16),
            seg(L + 16, R + 24, 8),
            seg(L + T + 80, R + T, 16),
            seg(L + T + 16, R + T + 24, 8)
        ]
    );
    invalid(
        swap_blocks_plan(&dst, &src, &[(4, 0)]),
        "pairs[0] source block 4 is out of range for a source cache of 4 blocks",
    );
    invalid(
        swap_blocks_plan(&dst, &src, &[(0, 16)]),
        "destination block 16",
    );
    let src16 = cache(K, 2, 4, 16, R);
    invalid(
        swap_blocks_plan(&dst, &src16, &[(0, 0)]),
        "block sizes differ",
    );
    let src3 = cache(K, 3, 4, 8, R);
    invalid(
        swap_blocks_plan(&dst, &src3, &[(0, 0)]),
        "num_tensors differ",
    );
    let bsrc = cache(B, 2, 4, 8, R);
    invalid(
        swap_blocks_plan(&dst, &bsrc, &[(0, 0)]),
        "needs a blocks (paged) source cache",
    );
    assert!(swap_blocks_plan(&dst, &src, &[]).unwrap().is_empty());
}

// ---------------- async ----------------

#[test]
fn async_contiguous() {
    let local = cache(B, 4, 4, 64, L);
    let p = async_layer_plan(&local, 1, 3, [0x5000, 0x7000], &[], &[], None).unwrap();
    assert_eq!(
        p,
        vec![
            seg(0x5000, L + 2 * T + 192, 64),
            seg(0x7000, L + 3 * T + 192, 64)
        ]
    );
    // dst_block_size 0 == None
    assert_eq!(
        async_layer_plan(&local, 1, 3, [0x5000, 0x7000], &[], &[], Some(0)).unwrap(),
        p
    );
    invalid(
        async_layer_plan(&local, 2, 0, [0, 0], &[], &[], None),
        "layer 2 is out of range for a local cache of 2 layers",
    );
    invalid(
        async_layer_plan(&local, 0, 4, [0, 0], &[], &[], None),
        "src_batch_index = 4",
    );
    invalid(
        async_layer_plan(&local, 0, 0, [0, 0], &[], &[1], None),
        "requires dst_block_memory_size",
    );
    invalid(
        async_layer_plan(&local, 0, 0, [u64::MAX - 10, 0], &[], &[], None),
        "dst_bases[0]",
    );
    let odd = cache(B, 3, 4, 64, L);
    invalid(
        async_layer_plan(&odd, 0, 0, [0, 0], &[], &[], None),
        "even num_tensors",
    );
    // A blocks source without indices is one batch of stride one block
    // (the reference's reading): slot 0 = block 0 of each tensor.
    let k = cache(K, 4, 4, 64, L);
    assert_eq!(
        async_layer_plan(&k, 1, 0, [0x5000, 0x7000], &[], &[], None).unwrap(),
        vec![seg(0x5000, L + 2 * T, 64), seg(0x7000, L + 3 * T, 64)]
    );
    invalid(
        async_layer_plan(&k, 0, 1, [0, 0], &[], &[], None),
        "src_batch_index = 1 is out of range for a local cache of batch size 1",
    );
    // ... also when cut into destination blocks (64 bytes into 32-byte blocks).
    assert_eq!(
        async_layer_plan(&k, 0, 0, [0x5000, 0x7000], &[], &[3, 1], Some(32)).unwrap(),
        vec![
            seg(0x5000 + 96, L, 32),
            seg(0x5000 + 32, L + 32, 32),
            seg(0x7000 + 96, L + T, 32),
            seg(0x7000 + 32, L + T + 32, 32)
        ]
    );
}

#[test]
fn async_contiguous_to_blocks() {
    // slot 100 bytes, dst blocks of 32 -> chunks 32,32,32,4
    let local = cache(B, 2, 4, 100, L);
    let p = async_layer_plan(
        &local,
        0,
        1,
        [0x10_0000, 0x20_0000],
        &[],
        &[7, 8, 2, 0],
        Some(32),
    )
    .unwrap();
    assert_eq!(
        p,
        vec![
            seg(0x10_0000 + 7 * 32, L + 100, 64),
            seg(0x10_0000 + 64, L + 164, 32),
            seg(0x10_0000, L + 196, 4),
            seg(0x20_0000 + 7 * 32, L + T + 100, 64),
            seg(0x20_0000 + 64, L + T + 164, 32),
            seg(0x20_0000, L + T + 196, 4),
        ]
    );
    invalid(
        async_layer_plan(&local, 0, 1, [0, 0], &[], &[0, 1, 2, 3, 4], Some(32)),
        "at most 4 destination blocks",
    );
    invalid(
        async_layer_plan(&local, 0, 1, [0, 0], &[], &[], Some(32)),
        "only valid with dst_blocks",
    );
    invalid(
        async_layer_plan(&local, 0, 1, [0, 0], &[], &[0], Some(400)),
        "smaller than the local tensor size of 400",
    );
    // bms >= S but < T: one chunk of S
    let p = async_layer_plan(&local, 0, 2, [0, 0x1000], &[], &[3], Some(150)).unwrap();
    assert_eq!(p[0], seg(450, L + 200, 100));
    invalid(
        async_layer_plan(&local, 0, 0, [0, u64::MAX - 200], &[], &[6], Some(32)),
        "dst_bases[1]",
    );
}

#[test]
fn async_blocks() {
    let local = cache(K, 4, 16, 32, L);
    let p = async_layer_plan(
        &local,
        1,
        0,
        [0x10_0000, 0x20_0000],
        &[1, 2, 3],
        &[4, 5, 9],
        None,
    )
    .unwrap();
    assert_eq!(
        p,
        vec![
            seg(0x10_0000 + 128, L + 2 * T + 32, 64),
            seg(0x10_0000 + 288, L + 2 * T + 96, 32),
            seg(0x20_0000 + 128, L + 3 * T + 32, 64),
            seg(0x20_0000 + 288, L + 3 * T + 96, 32),
        ]
    );
    assert_eq!(
        async_layer_plan(
            &local,
            1,
            0,
            [0x10_0000, 0x20_0000],
            &[1, 2, 3],
            &[4, 5, 9],
            Some(32)
        )
        .unwrap(),
        p
    );
    invalid(
        async_layer_plan(&local, 1, 0, [0, 0], &[1, 2], &[4], None),
        "src_blocks has 2 entries but dst_blocks has 1",
    );
    invalid(
        async_layer_plan(&local, 1, 0, [0, 0], &[1], &[4], Some(16)),
        "dst_block_memory_size = 16 must equal the local block size of 32",
    );
    invalid(
        async_layer_plan(&local, 1, 1, [0, 0], &[1], &[4], None),
        "src_batch_index = 1 must be 0",
    );
    invalid(
        async_layer_plan(&local, 1, 0, [0, 0], &[16], &[4], None),
        "src_blocks[0] = 16 is out of range for a local cache of 16 blocks",
    );
    invalid(
        async_layer_plan(&local, 1, 0, [0, 0], &[1], &[u64::MAX / 8], None),
        "overflows",
    );
    let b = cache(B, 4, 16, 32, L);
    invalid(
        async_layer_plan(&b, 1, 0, [0, 0], &[1], &[4], None),
        "needs a blocks (paged) local cache",
    );
}

// ---------------- coalesce ----------------

#[test]
fn coalesce_rules() {
    let mut v = vec![
        seg(100, 10, 5),
        seg(105, 15, 5),
        seg(110, 20, 0),
        seg(110, 20, 5),
        seg(200, 25, 5),
        seg(205, 30, 1),
    ];
    coalesce(&mut v);
    assert_eq!(v, vec![seg(100, 10, 15), seg(200, 25, 6)]);
    // no reorder: a later segment preceding in memory is not merged
    let mut v = vec![seg(105, 15, 5), seg(100, 10, 5)];
    coalesce(&mut v);
    assert_eq!(v.len(), 2);
    // only one side continuing
    let mut v = vec![seg(0, 0, 4), seg(4, 8, 4), seg(8, 12, 4)];
    coalesce(&mut v);
    assert_eq!(v, vec![seg(0, 0, 4), seg(4, 8, 8)]);
    let mut v = vec![seg(0, 0, 0)];
    coalesce(&mut v);
    assert!(v.is_empty());
    let mut v = vec![seg(u64::MAX - 4, 0, 4), seg(0, 4, 4)];
    coalesce(&mut v);
    assert_eq!(v.len(), 2);
    assert_eq!(total_bytes(&[seg(0, 0, u64::MAX), seg(0, 0, 5)]), u64::MAX);
}

// ---------------- proptest: simulate on byte arrays ----------------

/// A byte array that stands for one address space starting at `base`.
struct Mem {
    base: u64,
    bytes: Vec<u8>,
}

impl Mem {
    fn new(base: u64, len: usize, seed: u8) -> Mem {
        Mem {
            base,
            bytes: (0..len)
                .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
                .collect(),
        }
    }
    fn off(&self, a: u64) -> usize {
        (a - self.base) as usize
    }
}

fn apply(dst: &mut Mem, src: &Mem, segs: &[Segment]) {
    for s in segs {
        let (d, o, n) = (dst.off(s.dst), src.off(s.src), s.len as usize);
        dst.bytes[d..d + n].copy_from_slice(&src.bytes[o..o + n]);
    }
}

fn apply_within(m: &mut Mem, segs: &[Segment]) {
    for s in segs {
        let (d, o, n) = (m.off(s.dst), m.off(s.src), s.len as usize);
        m.bytes.copy_within(o..o + n, d);
    }
}

/// Tensors of `dim0*s` bytes laid out back to back (gap 0) or spaced.
fn layout(kind: CacheKind, base: u64, num: u32, dim0: u64, s: u64, gap: u64) -> CacheView {
    let tb = dim0 * s;
    let addrs = (0..num as u64)
        .map(|t| base + t * (tb + gap))
        .collect::<Vec<_>>();
    view(kind, &addrs, tb, dim0)
}

fn mem_for(v: &CacheView, base: u64, seed: u8) -> Mem {
    let end = v.addrs.iter().map(|a| a + v.tensor_bytes).max().unwrap();
    Mem::new(base, (end - base) as usize, seed)
}

fn layer_sel() -> impl Strategy<Value = (u32, u32, LayerSel)> {
    // (n, layers, sel) with both caches having layers*n tensors
    (1u32..=3, 1u32..=4).prop_flat_map(|(n, layers)| {
        (1..=layers).prop_flat_map(move |span| {
            (0..=layers - span, 0..=layers - span, 0u8..4).prop_map(move |(s0, d0, mode)| {
                let sel = match mode {
                    0 => LayerSel {
                        src: None,
                        dst: None,
                        per_layer: n,
                    },
                    1 => LayerSel {
                        src: Some((s0, s0 + span)),
                        dst: Some((d0, d0 + span)),
                        per_layer: n,
                    },
                    2 => LayerSel {
                        src: Some((0, layers)),
                        dst: None,
                        per_layer: n,
                    },
                    _ => LayerSel {
                        src: None,
                        dst: Some((0, layers)),
                        per_layer: n,
                    },
                };
                (n, layers, sel)
            })
        })
    })
}

proptest! {
    #[test]
    fn blocks_plans_match_reference(
        (n, layers, sel) in layer_sel(),
        s in 1u64..=8,
        nl in 1u64..=10,
        nr in 1u64..=10,
        gap_l in prop_oneof![Just(0u64), 1u64..5],
        gap_r in prop_oneof![Just(0u64), 1u64..5],
        raw in proptest::collection::vec((0u64..1000, 0u64..1000), 1..8),
    ) {
        let num = n * layers;
        let local = layout(K, 0x1000, num, nl, s, gap_l);
        let remote = layout(M, 0x8000, num, nr, s, gap_r);
        let src_blocks: Vec<u64> = raw.iter().map(|p| p.0 % nr).collect();
        let dst_blocks: Vec<u64> = raw.iter().map(|p| p.1 % nl).collect();
        let pairs = tensor_pairs(num, num, &sel).unwrap();

        // pull: remote -> local
        let plan = pull_blocks_plan(&local, &remote, &src_blocks, &dst_blocks, &sel).unwrap();
        let rmem = mem_for(&remote, 0x8000, 7);
        let mut got = mem_for(&local, 0x1000, 99);
        let mut want = mem_for(&local, 0x1000, 99);
        apply(&mut got, &rmem, &plan);
        for &(ts, td) in &pairs {
            for (&bs, &bd) in src_blocks.iter().zip(&dst_blocks) {
                let seg = [Segment { dst: local.addrs[td as usize] + bd * s, src: remote.addrs[ts as usize] + bs * s, len: s }];
                apply(&mut want, &rmem, &seg);
            }
        }
        prop_assert_eq!(&got.bytes, &want.bytes);
        prop_assert!(plan.iter().all(|x| x.len > 0));

        // push: local -> remote, layer by layer (pairs from the same selection,
        // roles swapped: src range on local, dst range on remote)
        let lp = push_blocks_plan(&local, &remote, &dst_blocks, &src_blocks, &sel).unwrap();
        let lmem = mem_for(&local, 0x1000, 3);
        let mut got = mem_for(&remote, 0x8000, 42);
        let mut want = mem_for(&remote, 0x8000, 42);
        for (_, segs) in &lp {
            apply(&mut got, &lmem, segs);
        }
        for &(ts, td) in &pairs {
            for (&bs, &bd) in dst_blocks.iter().zip(&src_blocks) {
                let seg = [Segment { dst: remote.addrs[td as usize] + bd * s, src: local.addrs[ts as usize] + bs * s, len: s }];
                apply(&mut want, &lmem, &seg);
            }
        }
        prop_assert_eq!(&got.bytes, &want.bytes);
        let layer_ids: Vec<u32> = lp.iter().map(|x| x.0).collect();
        let first = pairs[0].0 / n;
        prop_assert_eq!(layer_ids, (first..first + pairs.len() as u32 / n).collect::<Vec<_>>());

        // copy_blocks within the local cache: sequential per-block reference
        let cpairs: Vec<(u64, u64)> = raw.iter().map(|p| (p.0 % nl, p.1 % nl)).collect();
        let plan = copy_blocks_plan(&local, &cpairs).unwrap();
        let mut got = mem_for(&local, 0x1000, 5);
        let mut want = mem_for(&local, 0x1000, 5);
        apply_within(&mut got, &plan);
        for t in 0..num as usize {
            for &(a, b) in &cpairs {
                apply_within(&mut want, &[Segment { dst: local.addrs[t] + b * s, src: local.addrs[t] + a * s, len: s }]);
            }
        }
        prop_assert_eq!(&got.bytes, &want.bytes);
    }

    #[test]
    fn contiguous_to_blocks_matches_reference(
        (n, layers, sel) in layer_sel(),
        s_l in 1u64..=8,
        s_r in 1u64..=30,
        nl in 4u64..=12,
        br in 1u64..=3,
        slot_raw in 0u64..100,
        raw in proptest::collection::vec(0u64..1000, 1..6),
    ) {
        let _ = n;
        let num = n * layers;
        let local = layout(K, 0x1000, num, nl, s_l, 0);
        let remote = layout(B, 0x8000, num, br, s_r, 0);
        let slot = slot_raw % br;
        let max = s_r.div_ceil(s_l) as usize;
        let dst_blocks: Vec<u64> = raw.iter().take(max).map(|b| b % nl).collect();
        let plan = pull_cache_to_blocks_plan(&local, &remote, slot, &dst_blocks, &sel).unwrap();
        let rmem = mem_for(&remote, 0x8000, 11);
        let mut got = mem_for(&local, 0x1000, 77);
        let mut want = mem_for(&local, 0x1000, 77);
        apply(&mut got, &rmem, &plan);
        for (ts, td) in tensor_pairs(num, num, &sel).unwrap() {
            for (j, &bd) in dst_blocks.iter().enumerate() {
                let off = j as u64 * s_l;
                let len = s_l.min(s_r - off);
                let seg = [Segment { dst: local.addrs[td as usize] + bd * s_l, src: remote.addrs[ts as usize] + slot * s_r + off, len }];
                apply(&mut want, &rmem, &seg);
            }
        }
        prop_assert_eq!(&got.bytes, &want.bytes);
        prop_assert_eq!(total_bytes(&plan), tensor_pairs(num, num, &sel).unwrap().len() as u64 * (s_r.min(dst_blocks.len() as u64 * s_l)));
    }

    #[test]
    fn coalesce_preserves_copy_semantics(
        raw in proptest::collection::vec((0u64..6, 0u64..6, 0u64..3), 0..12),
    ) {
        // disjoint src/dst spaces: coalesced plan == original plan
        let segs: Vec<Segment> = raw.iter().map(|&(d, s, l)| Segment { dst: d * 2, src: 100 + s * 2, len: l * 2 }).collect();
        let mut c = segs.clone();
        coalesce(&mut c);
        prop_assert_eq!(total_bytes(&c), total_bytes(&segs));
        prop_assert!(c.len() <= segs.len());
        let src = Mem::new(100, 32, 1);
        let mut a = Mem::new(0, 32, 2);
        let mut b = Mem::new(0, 32, 2);
        apply(&mut a, &src, &segs);
        apply(&mut b, &src, &c);
        prop_assert_eq!(a.bytes, b.bytes);
    }
}

#[test]
fn a_single_block_plan_needs_no_allocation() {
    let view = |a: u64| CacheView {
        kind: CacheKind::Blocks,
        addrs: vec![a],
        tensor_bytes: 4 * 16384,
        dim0: 4,
    };
    let p = pull_blocks_plan(
        &view(0x10000),
        &view(0x90000),
        &[2],
        &[1],
        &LayerSel::default(),
    )
    .unwrap();
    assert_eq!(p.len(), 1);
    assert!(!p.on_heap());
    // Three separate blocks: more than fit in place.
    let p = pull_blocks_plan(
        &view(0x10000),
        &view(0x90000),
        &[3, 0, 2],
        &[0, 2, 1],
        &LayerSel::default(),
    )
    .unwrap();
    assert_eq!(p.len(), 3);
    assert!(p.on_heap());
}
