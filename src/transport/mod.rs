//! Byte movers: the TCP wire protocol and data path, same-host one-sided
//! copies (with the proofs of identity they rest on) and link authentication.

pub mod auth;
pub mod identity;
pub mod live;
pub mod local;
pub mod parallel;
pub mod peer_proc;
pub(crate) mod poller;
pub mod tcp;
pub mod wire;

/// Appends `[addr, addr + len)` to an iovec list, extending the last entry
/// when it ends at `addr`: a run of adjacent ranges is one entry (a strided
/// gather into packed memory hands the kernel half the entries).
pub(crate) fn push_iovec(v: &mut Vec<libc::iovec>, addr: u64, len: u64) {
    if let Some(last) = v.last_mut() {
        if last.iov_base as usize as u64 + last.iov_len as u64 == addr {
            last.iov_len += len as usize;
            return;
        }
    }
    v.push(libc::iovec {
        iov_base: addr as usize as *mut _,
        iov_len: len as usize,
    });
}
