//! Rules that apply only on the acl backend (spec §4.3 placement restrictions,
//! §9 item 25; lifetime rule §1.8.2). The host backend supports every
//! placement combination and never calls these.
//!
//! Placement (local = the caller's cache, remote = the peer's):
//!
//! | operation | H→H | H→D | D→H | D→D |
//! |---|---|---|---|---|
//! | pull_cache | no | equal layouts only | yes | yes |
//! | pull_blocks blocks→blocks | no | yes | yes | yes |
//! | pull_blocks contiguous→blocks | no | no | yes | yes |
//! | push_cache | no | yes | yes | yes |
//! | push_blocks | no | no | yes | yes |
//!
//! (source→destination; for pulls the remote cache is the source.) A refused
//! combination is `FeatureNotEnabled`.
//!
//! Over HCCS (both ends on one server on A2, or one super pod on A3, without
//! `HCCL_INTRA_ROCE_ENABLE=1`) HCCL exports no host memory, so a transfer
//! whose remote cache is HOST is refused there too (`FeatureNotEnabled`); the
//! reference stages such transfers through a device pool, llmdd does not.
//!
//! Registration: memory must be registered before the link that should reach
//! it (HCCL exchanges the bound regions once, when the link is prepared).
//! Registering a remote-accessible cache while links exist is refused
//! (`ParamInvalid`, as Python rejects `remote_accessible=True` after `link`);
//! a cache registered later with `remote_accessible=0` is usable locally and on
//! links created afterwards, and a transfer through it on an older link is
//! refused (`ParamInvalid`).

use crate::bail;
use crate::cache::registry::CacheRecord;
use crate::cache::types::{CacheView, Placement};
use crate::status::Result;
use crate::transfer::link::Link;

/// The transfer being checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// pull_cache (contiguous → contiguous).
    PullCache,
    /// pull_blocks, blocks → blocks.
    PullBlocks,
    /// pull_blocks, contiguous → blocks.
    PullCacheToBlocks,
    /// push_cache.
    PushCache,
    /// push_blocks.
    PushBlocks,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::PullCache => "pull_cache",
            Op::PullBlocks => "pull_blocks (blocks to blocks)",
            Op::PullCacheToBlocks => "pull_blocks (contiguous to blocks)",
            Op::PushCache => "push_cache",
            Op::PushBlocks => "push_blocks",
        }
    }

    fn is_pull(self) -> bool {
        matches!(self, Op::PullCache | Op::PullBlocks | Op::PullCacheToBlocks)
    }
}

fn letter(p: Placement) -> &'static str {
    match p {
        Placement::Host => "HOST",
        Placement::Device => "DEVICE",
    }
}

/// Checks the placement combination of a transfer on the acl backend; `hccs`:
/// the link runs over HCCS, which reaches no remote host memory.
pub fn check_placement(
    op: Op,
    local: Placement,
    local_view: &CacheView,
    remote: Placement,
    remote_view: &CacheView,
    hccs: bool,
) -> Result<()> {
    let (src, dst) = if op.is_pull() {
        (remote, local)
    } else {
        (local, remote)
    };
    let what = format!(
        "{} from {} to {} memory",
        op.name(),
        letter(src),
        letter(dst)
    );
    if hccs && remote == Placement::Host && local == Placement::Device {
        bail!(
            FeatureNotEnabled,
            "{what} is not supported on this link: it runs over HCCS (both ends on one server or super pod), \
             where HCCL does not expose the peer's HOST memory; use DEVICE memory on the remote side, \
             or set HCCL_INTRA_ROCE_ENABLE=1 on both ends to use RDMA within the server"
        );
    }
    match (src, dst) {
        (Placement::Host, Placement::Host) => bail!(
            FeatureNotEnabled,
            "{what} is not supported on the acl backend (HOST to HOST transfers are unsupported)"
        ),
        (Placement::Host, Placement::Device) => match op {
            Op::PullCache => {
                let equal = local_view.kind == remote_view.kind
                    && local_view.tensor_bytes == remote_view.tensor_bytes
                    && local_view.dim0 == remote_view.dim0;
                if !equal {
                    bail!(
                        FeatureNotEnabled,
                        "{what} needs equal cache layouts on the acl backend (source {}x{} bytes, destination {}x{} bytes per tensor)",
                        remote_view.dim0,
                        remote_view.stride(),
                        local_view.dim0,
                        local_view.stride()
                    );
                }
                Ok(())
            }
            Op::PullBlocks | Op::PushCache => Ok(()),
            Op::PullCacheToBlocks => bail!(
                FeatureNotEnabled,
                "{what} is not supported on the acl backend (HOST to DEVICE pulls must be blocks to blocks)"
            ),
            Op::PushBlocks => bail!(
                FeatureNotEnabled,
                "{what} is not supported on the acl backend (HOST to DEVICE pushes must be contiguous to contiguous)"
            ),
        },
        _ => Ok(()),
    }
}

/// Refuses a local cache that was registered after `link` was created: its
/// memory is not bound to the link's communicator.
pub fn check_bound(rec: &CacheRecord, link: &Link) -> Result<()> {
    if link.data_path().is_some_and(|p| p.device_rules().is_some())
        && !rec.is_allocated()
        && rec.generation > link.generation
    {
        bail!(
            ParamInvalid,
            "cache {} was registered after the link to cluster {} was created; on the acl backend a link reaches only memory registered before it (unlink and link again)",
            rec.id,
            link.remote_cluster_id
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::types::CacheKind;
    use crate::status::Status;

    fn view(kind: CacheKind, dim0: u64, t: u64) -> CacheView {
        CacheView {
            kind,
            addrs: vec![0x1000],
            tensor_bytes: t,
            dim0,
        }
    }

    #[test]
    fn placement_matrix() {
        use Placement::*;
        let b = view(CacheKind::Batch, 4, 4096);
        let b2 = view(CacheKind::Batch, 2, 4096);
        let k = view(CacheKind::Blocks, 8, 8192);
        let ok =
            |op, l, lv: &CacheView, r, rv: &CacheView| check_placement(op, l, lv, r, rv, false);
        // D→D and D→H always work.
        for op in [
            Op::PullCache,
            Op::PullBlocks,
            Op::PullCacheToBlocks,
            Op::PushCache,
            Op::PushBlocks,
        ] {
            assert!(ok(op, Device, &b, Device, &b).is_ok());
            let (l, r) = if op.is_pull() {
                (Host, Device)
            } else {
                (Device, Host)
            };
            assert!(ok(op, l, &b, r, &b).is_ok(), "{op:?} D->H");
            let e = ok(op, Host, &b, Host, &b).unwrap_err();
            assert_eq!(e.status, Status::FeatureNotEnabled, "{op:?} H->H");
            assert!(e.message.contains("HOST to HOST"));
        }
        // H→D pulls: remote HOST source, local DEVICE destination.
        assert!(ok(Op::PullCache, Device, &b, Host, &b).is_ok());
        let e = ok(Op::PullCache, Device, &b2, Host, &b).unwrap_err();
        assert_eq!(e.status, Status::FeatureNotEnabled);
        assert!(ok(Op::PullBlocks, Device, &k, Host, &k).is_ok());
        let e = ok(Op::PullCacheToBlocks, Device, &k, Host, &b).unwrap_err();
        assert_eq!(e.status, Status::FeatureNotEnabled);
        // H→D pushes: local HOST source, remote DEVICE destination.
        assert!(ok(Op::PushCache, Host, &b, Device, &b2).is_ok());
        let e = ok(Op::PushBlocks, Host, &k, Device, &k).unwrap_err();
        assert_eq!(e.status, Status::FeatureNotEnabled);
        // Over HCCS no remote HOST memory: H→D pulls and D→H pushes are refused.
        let hccs =
            |op, l, lv: &CacheView, r, rv: &CacheView| check_placement(op, l, lv, r, rv, true);
        for (op, lv, rv) in [
            (Op::PullBlocks, &k, &k),
            (Op::PullCache, &b, &b),
            (Op::PushBlocks, &k, &k),
        ] {
            let e = hccs(op, Device, lv, Host, rv).unwrap_err();
            assert_eq!(e.status, Status::FeatureNotEnabled, "{op:?}");
            assert!(e.message.contains("HCCL_INTRA_ROCE_ENABLE"), "{e}");
        }
        assert!(hccs(Op::PullBlocks, Device, &k, Device, &k).is_ok());
        assert!(
            hccs(Op::PushCache, Host, &b, Device, &b).is_ok(),
            "local HOST is fine"
        );
    }
}
