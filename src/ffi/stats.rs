//! Per-link statistics and the link-state query through the C ABI (llmdd
//! extensions; the reference has no such calls). docs/operating.md says what
//! each field means.

use std::ffi::c_char;

use crate::datadist::link_state::{LinkInfo, LinkState};
use crate::ffi::boundary::{output, run};
use crate::ffi::types::instance;
use crate::ffi::types::llmdd_instance_t;
use crate::stats::Snapshot;

/// Version of `llmdd_link_stats_t` this library writes in its `version`
/// field. A later version only gives meaning to reserved bytes (the size
/// stays), so a caller built against version 1 reads a later one correctly.
pub const LLMDD_LINK_STATS_VERSION: u32 = 1;

/// Link state: no link to that cluster, and no attempt under way or failed
/// (also: unlinked, or never linked).
pub const LLMDD_LINK_STATE_UNLINKED: u32 = 0;
/// Link state: `llmdd_link_clusters` to that cluster is under way, or its
/// rank-table comm is still PREPARING.
pub const LLMDD_LINK_STATE_LINKING: u32 = 1;
/// Link state: linked and usable for transfers.
pub const LLMDD_LINK_STATE_LINKED: u32 = 2;
/// Link state: the link died (its peer exited, closed its connection or
/// stopped answering keepalive), its rank-table comm FAILED, or the last
/// `llmdd_link_clusters` to that cluster failed. The reason is given.
/// Linking again (or unlinking) leaves this state.
pub const LLMDD_LINK_STATE_FAILED: u32 = 3;

/// Data path of a link: both ends in this process (memcpy).
pub const LLMDD_PATH_SAME_PROCESS: u32 = 0;
/// Data path of a link: both ends on this host (mapped pools, process_vm_readv/writev).
pub const LLMDD_PATH_SAME_HOST: u32 = 1;
/// Data path of a link: TCP.
pub const LLMDD_PATH_TCP: u32 = 2;
/// Data path of a link: HCCL (acl backend).
pub const LLMDD_PATH_HCCL: u32 = 3;
/// Number of data paths (second index of `ops` and `bytes`).
pub const LLMDD_PATH_COUNT: usize = 4;

/// Direction (first index of `ops`, `bytes` and the latency arrays): pull (read).
pub const LLMDD_DIR_PULL: u32 = 0;
/// Direction: push (write).
pub const LLMDD_DIR_PUSH: u32 = 1;

/// Entries of `llmdd_link_stats_t.errors` (see `llmdd_stats_error_slot`).
pub const LLMDD_STATS_ERROR_SLOTS: usize = 32;
/// Bytes of `llmdd_link_stats_t.last_error_message`, its NUL included.
pub const LLMDD_STATS_MESSAGE_LEN: usize = 256;

/// The statistics of one link (`llmdd_get_link_stats`), written by the
/// library. Counters count from `since_unix_ns` (the link's creation or the
/// last `llmdd_reset_link_stats`); each is read on its own, so a transfer
/// finishing during the call may be in one counter and not yet in another.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_link_stats_t {
    /// `LLMDD_LINK_STATS_VERSION` of the library that wrote it.
    pub version: u32,
    /// `LLMDD_LINK_STATE_*` (LINKING, LINKED or FAILED: a link exists).
    pub state: u32,
    /// The peer's cluster id.
    pub remote_cluster_id: u64,
    /// Rank-table comm of the link (`llmdd_link`), 0 for `llmdd_link_clusters`.
    pub comm_id: u64,
    /// The link's data path (`LLMDD_PATH_*`), fixed for its life.
    pub path: u32,
    /// 1 if this side dialled the link (called link_clusters), 0 if it accepted it.
    pub dialed: u32,
    /// When the link was set up (ns since the Unix epoch).
    pub linked_unix_ns: u64,
    /// When counting began: the link's setup or the last reset (ns since the epoch).
    pub since_unix_ns: u64,
    /// Operations this side started and completed, `[LLMDD_DIR_*][LLMDD_PATH_*]`:
    /// pull_cache / pull_blocks calls (pull); push_cache / push_blocks calls and
    /// each layer of each config of an async transfer (push).
    pub ops: [[u64; 4]; 2],
    /// Bytes of those operations, `[LLMDD_DIR_*][LLMDD_PATH_*]`.
    pub bytes: [[u64; 4]; 2],
    /// Operations this side started that failed, all statuses (the sum of `errors`).
    pub failed_ops: u64,
    /// Failed operations by status: `errors[llmdd_stats_error_slot(status)]`.
    pub errors: [u64; 32],
    /// Operations this side has in flight on the link now.
    pub in_flight: u64,
    /// Completed operations timed, per direction (equal to the sum of `ops[dir]`).
    pub latency_count: [u64; 2],
    /// Median latency per direction (ns, within 1.6 %; 0 when none).
    pub latency_p50_ns: [u64; 2],
    /// 99th-percentile latency per direction (ns, within 1.6 %).
    pub latency_p99_ns: [u64; 2],
    /// Largest latency per direction (ns, exact).
    pub latency_max_ns: [u64; 2],
    /// TCP requests this side served to the peer, `[LLMDD_DIR_*]` as the peer
    /// sees it: its reads (pull) and its writes (push). One peer operation may
    /// be several requests (striping).
    pub served_requests: [u64; 2],
    /// Bytes of those requests.
    pub served_bytes: [u64; 2],
    /// Peer requests answered with an error (unknown key, access rules,
    /// ranges outside its caches).
    pub served_refused: u64,
    /// Status of the last failed operation (`LLMDD_SUCCESS` if none).
    pub last_error_status: u32,
    /// Zero.
    pub pad: u32,
    /// When it failed (ns since the Unix epoch; 0 if none).
    pub last_error_unix_ns: u64,
    /// Its message, NUL-terminated UTF-8 (cut at a character boundary).
    pub last_error_message: [c_char; 256],
    /// Reserved; the library writes zeros.
    pub reserved: [u8; 256],
}

/// One entry of `llmdd_list_links`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct llmdd_link_entry_t {
    /// The peer's cluster id.
    pub remote_cluster_id: u64,
    /// `LLMDD_LINK_STATE_*` (never UNLINKED).
    pub state: u32,
    /// 1 if this side dialled (or is dialling) the link, 0 if it accepted it.
    pub dialed: u32,
    /// Rank-table comm of the link, 0 for `llmdd_link_clusters`.
    pub comm_id: u64,
    /// Reserved; the library writes zeros.
    pub reserved: [u8; 16],
}

/// The slot of `status` in `llmdd_link_stats_t.errors`: the low byte of an
/// `LLMDD_*` code `0x5010B0xx` (1..28), 0 for `LLMDD_FAILED`, 29 for
/// `LLMDD_DEVICE_MEM_ERROR`, 30 for `LLMDD_SUSPECT_REMOTE_ERROR`, 31 for any
/// other value.
#[no_mangle]
pub extern "C" fn llmdd_stats_error_slot(status: u32) -> u32 {
    crate::stats::error_slot(status) as u32
}

/// Copies `s` into `out` as a NUL-terminated string, cut at a UTF-8
/// character boundary to fit.
fn copy_str(s: &str, out: &mut [c_char]) {
    out.fill(0);
    let Some(room) = out.len().checked_sub(1) else {
        return;
    };
    let mut n = s.len().min(room);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    for (o, b) in out.iter_mut().zip(&s.as_bytes()[..n]) {
        *o = *b as c_char;
    }
}

fn state_code(s: &LinkState) -> u32 {
    match s {
        LinkState::Unlinked => LLMDD_LINK_STATE_UNLINKED,
        LinkState::Linking => LLMDD_LINK_STATE_LINKING,
        LinkState::Linked => LLMDD_LINK_STATE_LINKED,
        LinkState::Failed(_) => LLMDD_LINK_STATE_FAILED,
    }
}

fn fill_stats(info: &LinkInfo, s: &Snapshot, out: &mut llmdd_link_stats_t) {
    let last = s.last_error.clone().unwrap_or_default();
    let mut st = llmdd_link_stats_t {
        version: LLMDD_LINK_STATS_VERSION,
        state: state_code(&info.state),
        remote_cluster_id: info.cluster_id,
        comm_id: info.comm_id,
        path: info.path as u32,
        dialed: info.dialed as u32,
        linked_unix_ns: info.linked_unix_ns,
        since_unix_ns: s.since_ns,
        ops: s.ops,
        bytes: s.bytes,
        failed_ops: s.failed(),
        errors: s.errors,
        in_flight: s.in_flight,
        latency_count: s.latency.map(|p| p.count),
        latency_p50_ns: s.latency.map(|p| p.p50),
        latency_p99_ns: s.latency.map(|p| p.p99),
        latency_max_ns: s.latency.map(|p| p.max),
        served_requests: s.served_requests,
        served_bytes: s.served_bytes,
        served_refused: s.served_refused,
        last_error_status: last.status,
        pad: 0,
        last_error_unix_ns: last.unix_ns,
        last_error_message: [0; LLMDD_STATS_MESSAGE_LEN],
        reserved: [0; 256],
    };
    copy_str(&last.message, &mut st.last_error_message);
    *out = st;
}

/// Writes the statistics of the link to `cluster_id` to `*out` (owned by the
/// caller). Statuses: `LLMDD_NOT_YET_LINK` (no link to that cluster: never
/// linked, unlinked, still dialling, or its link_clusters failed),
/// `LLMDD_FAILED` (not initialized), `LLMDD_PARAM_INVALID` (NULL pointers).
/// Thread-safe; cheap (no I/O, no lock a transfer takes).
#[no_mangle]
pub unsafe extern "C" fn llmdd_get_link_stats(
    inst: *const llmdd_instance_t,
    cluster_id: u64,
    out: *mut llmdd_link_stats_t,
) -> u32 {
    run("llmdd_get_link_stats", || {
        let i = instance(inst)?;
        let out = output(out, "out")?;
        let (info, snap) = i.session()?.link_stats(cluster_id)?;
        fill_stats(&info, &snap, out);
        Ok(())
    })
}

/// Zeroes the statistics of the link to `cluster_id` (all but `in_flight`;
/// `since_unix_ns` becomes now). Statuses as `llmdd_get_link_stats`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_reset_link_stats(
    inst: *const llmdd_instance_t,
    cluster_id: u64,
) -> u32 {
    run("llmdd_reset_link_stats", || {
        instance(inst)?
            .session()?
            .reset_link_stats(Some(cluster_id))
    })
}

/// Zeroes the statistics of every link of the instance. Statuses:
/// `LLMDD_FAILED` (not initialized), `LLMDD_PARAM_INVALID` (NULL instance).
#[no_mangle]
pub unsafe extern "C" fn llmdd_reset_all_link_stats(inst: *const llmdd_instance_t) -> u32 {
    run("llmdd_reset_all_link_stats", || {
        instance(inst)?.session()?.reset_link_stats(None)
    })
}

/// The state of this instance's link to `cluster_id` (in the spirit of
/// HIXL's `GetAsyncConnectStatus`): `*state_out` receives an
/// `LLMDD_LINK_STATE_*`. `reason` (NULL with `reason_len` 0, or a buffer of
/// `reason_len` bytes) receives, NUL-terminated and cut to fit, why the link
/// is FAILED, and an empty string in any other state. An unknown cluster is
/// UNLINKED (`LLMDD_SUCCESS`). Statuses: `LLMDD_FAILED` (not initialized),
/// `LLMDD_PARAM_INVALID` (NULL pointers). Thread-safe; no I/O.
#[no_mangle]
pub unsafe extern "C" fn llmdd_query_link_state(
    inst: *const llmdd_instance_t,
    cluster_id: u64,
    state_out: *mut u32,
    reason: *mut c_char,
    reason_len: usize,
) -> u32 {
    run("llmdd_query_link_state", || {
        let i = instance(inst)?;
        let out = output(state_out, "state_out")?;
        let buf = crate::ffi::boundary::slice_mut(reason, reason_len, "reason")?;
        let st = i.session()?.link_state(cluster_id);
        *out = state_code(&st);
        match &st {
            LinkState::Failed(why) => copy_str(why, buf),
            _ => copy_str("", buf),
        }
        Ok(())
    })
}

/// Lists the links of this instance that are not UNLINKED (linked, being
/// linked, or failed), sorted by cluster id: the first `capacity` go to
/// `entries` (NULL with `capacity` 0 to only count), and `*needed` receives
/// how many there are. If `*needed > capacity` the list was cut: call again
/// with a larger buffer (links may come and go between calls). Statuses:
/// `LLMDD_FAILED` (not initialized), `LLMDD_PARAM_INVALID` (NULL pointers).
#[no_mangle]
pub unsafe extern "C" fn llmdd_list_links(
    inst: *const llmdd_instance_t,
    entries: *mut llmdd_link_entry_t,
    capacity: usize,
    needed: *mut usize,
) -> u32 {
    run("llmdd_list_links", || {
        let i = instance(inst)?;
        let needed = output(needed, "needed")?;
        let buf = crate::ffi::boundary::slice_mut(entries, capacity, "entries")?;
        let list = i.session()?.list_links();
        for (e, l) in buf.iter_mut().zip(&list) {
            *e = llmdd_link_entry_t {
                remote_cluster_id: l.cluster_id,
                state: state_code(&l.state),
                dialed: l.dialed as u32,
                comm_id: l.comm_id,
                reserved: [0; 16],
            };
        }
        *needed = list.len();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_str_cuts_at_a_char_boundary() {
        let mut b = [1 as c_char; 5];
        copy_str("aé€x", &mut b); // a(1) é(2) €(3): 4 bytes of room
        let got: Vec<u8> = b.iter().map(|&c| c as u8).collect();
        assert_eq!(got, [b'a', 0xC3, 0xA9, 0, 0]);
        copy_str("anything", &mut []);
        let mut one = [7 as c_char; 1];
        copy_str("x", &mut one);
        assert_eq!(one[0], 0);
    }

    #[test]
    fn the_struct_keeps_its_size() {
        assert_eq!(std::mem::size_of::<llmdd_link_stats_t>(), 1080);
        assert_eq!(std::mem::size_of::<llmdd_link_entry_t>(), 40);
    }
}
