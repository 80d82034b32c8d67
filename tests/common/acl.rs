//! Helpers of the acl-backend integration tests: init options for an instance
//! on one simulated device, cache descriptions, patterned data, and tensors in
//! the simulator's ACL memory.

use std::path::Path;
use std::sync::Arc;

use llmdd::cache::types::{CacheDesc, DataType, Placement};
use llmdd::testing::acl::runtime::{AclContext, MemcpyKind};
use llmdd::testing::loader::AscendRuntime;

/// The simulated machine's hccn.conf, as an option value.
pub fn hccn() -> &'static str {
    static P: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    P.get_or_init(|| super::sim::hccn_conf().display().to_string())
}

/// Init options for an instance on (logical = physical) device `dev`, with the
/// simulated machine's hccn.conf unless `extra` names another.
pub fn opts<'a>(
    dir: &'a str,
    dev: &'a str,
    backend: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut p = vec![
        ("llm.DeviceId", dev),
        ("llm.EnableCacheManager", "1"),
        ("llmdd.Backend", backend),
        ("llmdd.AscendLibDir", dir),
    ];
    if !extra.iter().any(|(k, _)| *k == "llmdd.HccnConf") {
        p.push(("llmdd.HccnConf", hccn()));
    }
    p.extend_from_slice(extra);
    p
}

pub fn desc(placement: Placement, n: u32, shape: &[i64]) -> CacheDesc {
    CacheDesc {
        placement,
        num_tensors: n,
        data_type: DataType::Uint8,
        shape: shape.to_vec(),
        batch_dim_index: 0,
        seq_len_dim_index: -1,
    }
}

pub fn pattern(seed: u8, t: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32 * 7 + t as u32 * 31 + seed as u32) as u8)
        .collect()
}

/// `n` tensors of `len` bytes of `placement` memory of device `dev` from the
/// simulator, filled with `pattern(seed)` (seed 0: zeros).
pub struct Tensors {
    pub ctx: AclContext,
    pub placement: Placement,
    pub addrs: Vec<u64>,
    pub len: usize,
}

impl Tensors {
    pub fn new(
        dir: &Path,
        dev: i32,
        placement: Placement,
        n: usize,
        len: usize,
        seed: u8,
    ) -> Tensors {
        let rt = Arc::new(AscendRuntime::load(Some(dir)).unwrap());
        let ctx = AclContext::open(rt, dev).unwrap();
        let addrs = (0..n)
            .map(|t| {
                let a = ctx.malloc(len, placement).unwrap();
                let init = if seed == 0 {
                    vec![0u8; len]
                } else {
                    pattern(seed, t, len)
                };
                let kind = match placement {
                    Placement::Device => MemcpyKind::HostToDevice,
                    Placement::Host => MemcpyKind::HostToHost,
                };
                ctx.memcpy_sync(a, init.as_ptr() as u64, len, kind).unwrap();
                a
            })
            .collect();
        Tensors {
            ctx,
            placement,
            addrs,
            len,
        }
    }

    pub fn read(&self, t: usize) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        let kind = match self.placement {
            Placement::Device => MemcpyKind::DeviceToHost,
            Placement::Host => MemcpyKind::HostToHost,
        };
        self.ctx
            .memcpy_sync(v.as_mut_ptr() as u64, self.addrs[t], self.len, kind)
            .unwrap();
        v
    }
}

impl Drop for Tensors {
    fn drop(&mut self) {
        for &a in &self.addrs {
            let _ = self.ctx.free(a, self.placement);
        }
    }
}
