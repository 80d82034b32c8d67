//! Unit tests of `registry`.

use super::*;
use crate::cache::types::{DataType, ID_UNSET};

fn desc(n: u32, shape: &[i64]) -> CacheDesc {
    CacheDesc {
        placement: Placement::Device,
        num_tensors: n,
        data_type: DataType::Float16,
        shape: shape.to_vec(),
        batch_dim_index: 0,
        seq_len_dim_index: -1,
    }
}

fn req(r: u64) -> CacheKey {
    CacheKey::Req {
        cluster_id: 1,
        req_id: r,
        model_id: 0,
        prefix_id: ID_UNSET,
    }
}

#[test]
fn ids_start_at_one_and_overlap_rejected() {
    let r = Registry::default();
    let a = r
        .register(
            &desc(2, &[4, 8]),
            &[0x1000, 0x2000],
            CacheKind::Batch,
            &[],
            None,
            None,
        )
        .unwrap();
    assert_eq!(a.id, 1);
    let e = r
        .register(
            &desc(1, &[4, 8]),
            &[0x1008],
            CacheKind::Batch,
            &[],
            None,
            None,
        )
        .err()
        .unwrap();
    assert_eq!(e.status, Status::ParamInvalid);
    let e = r
        .register(
            &desc(2, &[4, 8]),
            &[0x5000, 0x5010],
            CacheKind::Batch,
            &[],
            None,
            None,
        )
        .err()
        .unwrap();
    assert_eq!(e.status, Status::ParamInvalid);
    let b = r
        .register(
            &desc(1, &[4, 8]),
            &[0x3000],
            CacheKind::Batch,
            &[],
            None,
            None,
        )
        .unwrap();
    assert_eq!(b.id, 2, "failed calls do not consume ids");
    r.unregister(2).unwrap();
    let c = r
        .register(
            &desc(1, &[4, 8]),
            &[0x3000],
            CacheKind::Batch,
            &[],
            None,
            None,
        )
        .unwrap();
    assert_eq!(c.id, 3, "ids are never reused");
    r.unregister(1).unwrap();
    r.unregister(99).unwrap();
    assert_eq!(r.len(), 1);
}

#[test]
fn address_limit() {
    let r = Registry::with_limit(240);
    let addrs: Vec<u64> = (0..200).map(|i| 0x10_0000 + i * 0x1000).collect();
    r.register(
        &desc(200, &[1, 8]),
        &addrs,
        CacheKind::Blocks,
        &[],
        None,
        None,
    )
    .unwrap();
    let addrs2: Vec<u64> = (0..41).map(|i| 0x90_0000 + i * 0x1000).collect();
    let e = r
        .register(
            &desc(41, &[1, 8]),
            &addrs2,
            CacheKind::Blocks,
            &[],
            None,
            None,
        )
        .err()
        .unwrap();
    assert!(e.message.contains("240"));
}

#[test]
fn keys_bind_resolve_consume() {
    let r = Registry::default();
    let pool = Arc::new(Pool::new("reg", 1 << 20, 12).unwrap());
    let c = r
        .allocate(
            &desc(2, &[4, 8]),
            CacheKind::Batch,
            &[req(7), req(ID_UNSET), req(9)],
            None,
            &pool,
        )
        .unwrap();
    let res = r.resolve(&req(9)).unwrap();
    assert_eq!((res.record.id, res.slot), (c.id, 2));
    assert!(res.consume.is_some());
    // duplicate binding rejected
    assert!(r
        .allocate(&desc(2, &[4, 8]), CacheKind::Batch, &[req(7)], None, &pool)
        .is_err());
    assert!(r
        .allocate(
            &desc(2, &[4, 8]),
            CacheKind::Batch,
            &[req(5), req(5)],
            None,
            &pool
        )
        .is_err());
    // deallocate defers while keys remain
    let before = pool.free_bytes();
    r.deallocate(c.id, false).unwrap();
    drop(res);
    assert_eq!(pool.free_bytes(), before);
    r.consume(&BindKey::for_lookup(9, ID_UNSET, 0).unwrap());
    assert_eq!(
        r.resolve(&req(9)).err().unwrap().status,
        Status::KvCacheNotExist
    );
    r.remove_key(&BindKey::for_lookup(7, ID_UNSET, 0).unwrap());
    drop(c);
    assert_eq!(pool.free_bytes(), 1 << 20);
}

#[test]
fn check_local_regions() {
    let r = Registry::default();
    r.register(
        &desc(1, &[2, 8]),
        &[0x1000],
        CacheKind::Batch,
        &[],
        None,
        None,
    )
    .unwrap();
    let ok = Segment {
        dst: 0,
        src: 0x1004,
        len: 28,
    };
    let any = |_: &CacheRecord| Ok(());
    r.check_local(&[ok], false, any).unwrap();
    let bad = Segment {
        dst: 0,
        src: 0x1004,
        len: 29,
    };
    assert!(r.check_local(&[bad], false, any).is_err());
    let e = r
        .check_local(&[ok], false, |_| Err("is not yours".into()))
        .unwrap_err();
    assert!(
        e.message.contains("lies in cache 1, which is not yours"),
        "{}",
        e.message
    );
    assert!(r
        .check_local(
            &[Segment {
                dst: 0,
                src: u64::MAX,
                len: 2
            }],
            false,
            any
        )
        .is_err());
}
