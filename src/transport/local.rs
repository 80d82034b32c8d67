//! Same-host and same-process byte movers: one-sided process_vm_readv/writev
//! with many segments per syscall (split over two threads for large plans,
//! the second a persistent helper),
//! and plain memcpy when both ends live in this process. Which one a link may
//! use is decided by the identity proofs of `transport::identity`.

use std::io;

use crate::cache::types::Segment;
use crate::status::Result;
use crate::transport::peer_proc::PeerProcess;
use crate::transport::push_iovec;
use crate::{bail, err};

/// Most iovecs per process_vm_* call (the kernel's UIO_MAXIOV).
const IOV_MAX: usize = 1024;
/// Plans at least this large are split over two threads.
const PARALLEL_BYTES: u64 = 2 << 20;

/// A random 64-bit value (link tokens).
pub fn random_u64() -> u64 {
    let t = crate::transport::identity::random_tag();
    u64::from_le_bytes(t[..8].try_into().expect("8 bytes"))
}

/// How bytes reach a peer's memory without the network (chosen only after
/// the peer proved who it is: `transport::identity`).
#[derive(Debug)]
pub enum LocalPath {
    /// The peer is this process: memcpy.
    SameProcess,
    /// The peer is this process of this host: process_vm_readv/writev on its
    /// pid, checked against its pidfd around every copy.
    SameHost(PeerProcess),
}

/// One process_vm_readv (write=false: peer `src` → local `dst`) or
/// process_vm_writev (write=true: local `src` → peer `dst`) pass over `segs`,
/// IOV_MAX segments per syscall, retrying partial transfers.
///
/// # Safety
/// The local side of every segment (`dst` of a read, `src` of a write) must
/// be memory of this process valid for that access for its whole length
/// during the call (the segments of a `cache::types::Plan`, or a part of one).
/// The peer's side is checked by the kernel against the peer's address space.
pub unsafe fn vm_copy(pid: u32, segs: &[Segment], write: bool) -> Result<()> {
    if let [s] = segs {
        // One segment (a single-block pull): one iovec a side on the stack,
        // no thread-local lookup.
        let (l, r) = if write {
            (s.src, s.dst)
        } else {
            (s.dst, s.src)
        };
        let iov = |a: u64| libc::iovec {
            iov_base: a as usize as *mut _,
            iov_len: s.len as usize,
        };
        // SAFETY: the caller's contract, for this one segment.
        return unsafe { vm_pass(pid, segs, write, &[iov(l)], &[iov(r)]) };
    }
    // iovec arrays reused per thread (cleared before each use, so no stale
    // pointer is ever passed): a transfer allocates nothing once warm.
    thread_local! {
        static IOVECS: std::cell::RefCell<(Vec<libc::iovec>, Vec<libc::iovec>)> =
            const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    IOVECS.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => {
            let (local, remote) = &mut *v;
            vm_copy_with(pid, segs, write, local, remote)
        }
        // Re-entered on this thread (cannot happen today): use fresh arrays.
        Err(_) => vm_copy_with(pid, segs, write, &mut Vec::new(), &mut Vec::new()),
    })
}

/// # Safety
/// As [`vm_copy`].
unsafe fn vm_copy_with(
    pid: u32,
    segs: &[Segment],
    write: bool,
    local: &mut Vec<libc::iovec>,
    remote: &mut Vec<libc::iovec>,
) -> Result<()> {
    for chunk in segs.chunks(IOV_MAX) {
        local.clear();
        remote.clear();
        for s in chunk {
            let (l, r) = if write {
                (s.src, s.dst)
            } else {
                (s.dst, s.src)
            };
            // Each side's run of adjacent ranges is one iovec (a strided
            // gather into a packed buffer costs half the entries).
            push_iovec(local, l, s.len);
            push_iovec(remote, r, s.len);
        }
        // SAFETY: the iovecs describe `chunk`, under the caller's contract.
        unsafe { vm_pass(pid, chunk, write, local, remote)? };
    }
    Ok(())
}

/// One process_vm_readv/writev of `local`/`remote` (the iovecs of `chunk`,
/// at most IOV_MAX each), finishing a partial transfer segment by segment.
///
/// # Safety
/// As [`vm_copy`], for `chunk`; the iovecs describe exactly its segments.
unsafe fn vm_pass(
    pid: u32,
    chunk: &[Segment],
    write: bool,
    local: &[libc::iovec],
    remote: &[libc::iovec],
) -> Result<()> {
    let want: usize = chunk.iter().map(|s| s.len as usize).sum();
    let call = if write {
        libc::process_vm_writev
    } else {
        libc::process_vm_readv
    };
    // SAFETY: local iovecs are caller-vouched memory; remote ones are
    // checked by the kernel against the peer's address space.
    let n = unsafe {
        call(
            pid as i32,
            local.as_ptr(),
            local.len() as _,
            remote.as_ptr(),
            remote.len() as _,
            0,
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        bail!(
            LinkFailed,
            "process_vm_{} on pid {pid} failed: {e}",
            if write { "writev" } else { "readv" }
        );
    }
    if (n as usize) < want {
        // Partial: finish the rest segment by segment (rare; a fault on
        // the peer side stops at a segment boundary).
        let mut done = n as usize;
        for s in chunk {
            let l = s.len as usize;
            if done >= l {
                done -= l;
                continue;
            }
            let rest = Segment {
                dst: s.dst + done as u64,
                src: s.src + done as u64,
                len: (l - done) as u64,
            };
            done = 0;
            single(pid, &rest, write)?;
        }
    }
    Ok(())
}

/// # Safety
/// As [`vm_copy`].
unsafe fn single(pid: u32, s: &Segment, write: bool) -> Result<()> {
    let mut off = 0u64;
    while off < s.len {
        let (l, r) = if write {
            (s.src + off, s.dst + off)
        } else {
            (s.dst + off, s.src + off)
        };
        let li = libc::iovec {
            iov_base: l as usize as *mut _,
            iov_len: (s.len - off) as usize,
        };
        let ri = libc::iovec {
            iov_base: r as usize as *mut _,
            iov_len: (s.len - off) as usize,
        };
        // SAFETY: as in vm_copy.
        let n = unsafe {
            if write {
                libc::process_vm_writev(pid as i32, &li, 1, &ri, 1, 0)
            } else {
                libc::process_vm_readv(pid as i32, &li, 1, &ri, 1, 0)
            }
        };
        if n <= 0 {
            return Err(err!(
                LinkFailed,
                "process_vm_{} on pid {pid} at 0x{:x} failed: {}",
                if write { "writev" } else { "readv" },
                r,
                io::Error::last_os_error()
            ));
        }
        off += n as u64;
    }
    Ok(())
}

/// Copies within this process.
///
/// # Safety
/// Both sides of every segment must be memory of this process, `src` readable
/// and `dst` writable for the whole length during the call (the segments of
/// a `cache::types::Plan`, or a part of one, or a peer pool's mapping).
pub unsafe fn memcpy_segments(segs: &[Segment]) {
    for s in segs {
        // SAFETY: the caller's contract.
        unsafe {
            std::ptr::copy(
                s.src as usize as *const u8,
                s.dst as usize as *mut u8,
                s.len as usize,
            )
        };
    }
}

/// Splits `segs` into two halves of about equal bytes (may split one
/// segment), into two lists the caller reuses (cleared first).
pub fn split_half_into(segs: &[Segment], a: &mut Vec<Segment>, b: &mut Vec<Segment>) {
    a.clear();
    b.clear();
    let total: u64 = segs.iter().map(|s| s.len).sum();
    let half = total / 2;
    let mut acc = 0u64;
    for s in segs {
        if acc >= half {
            b.push(*s);
        } else if acc + s.len <= half {
            a.push(*s);
        } else {
            let k = half - acc;
            a.push(Segment {
                dst: s.dst,
                src: s.src,
                len: k,
            });
            b.push(Segment {
                dst: s.dst + k,
                src: s.src + k,
                len: s.len - k,
            });
        }
        acc += s.len;
    }
}

/// Runs `f` over the plan, in two halves on this thread and a persistent
/// helper ([`crate::transport::parallel`]) when it is large.
pub fn run_split(segs: &[Segment], f: impl Fn(&[Segment]) -> Result<()> + Sync) -> Result<()> {
    let total: u64 = segs.iter().map(|s| s.len).sum();
    if total < PARALLEL_BYTES {
        return f(segs);
    }
    // The halves' lists are reused per calling thread (a large copy
    // allocates nothing once warm).
    thread_local! {
        static HALVES: std::cell::RefCell<(Vec<Segment>, Vec<Segment>)> =
            const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    HALVES.with(|cell| {
        let mut own = (Vec::new(), Vec::new());
        let mut guard = cell.try_borrow_mut();
        let (a, b) = match guard.as_mut() {
            Ok(v) => &mut **v,
            Err(_) => &mut own,
        };
        split_half_into(segs, a, b);
        let (a, b) = (&*a, &*b);
        crate::transport::parallel::join(2, &|i| f(if i == 0 { a } else { b }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_exact() {
        let segs = [
            Segment {
                dst: 0,
                src: 100,
                len: 10,
            },
            Segment {
                dst: 10,
                src: 110,
                len: 30,
            },
        ];
        let (mut a, mut b) = (Vec::new(), Vec::new());
        split_half_into(&segs, &mut a, &mut b);
        assert_eq!(a.iter().map(|s| s.len).sum::<u64>(), 20);
        assert_eq!(
            b[0],
            Segment {
                dst: 20,
                src: 120,
                len: 20
            }
        );
    }

    #[test]
    fn vm_copy_self() {
        let src: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
        let mut dst = vec![0u8; 10_000];
        let segs = [Segment {
            dst: dst.as_mut_ptr() as u64,
            src: src.as_ptr() as u64,
            len: 10_000,
        }];
        unsafe { vm_copy(std::process::id(), &segs, false) }.unwrap();
        assert_eq!(src, dst);
    }

    #[test]
    fn vm_copy_of_one_segment_writes_and_finishes_or_names_a_fault() {
        // A write of one segment (the one-iovec path).
        let src: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
        let mut dst = vec![0u8; 5000];
        let seg = |dst: u64, src: u64, len: u64| Segment { dst, src, len };
        let s = [seg(dst.as_mut_ptr() as u64, src.as_ptr() as u64, 5000)];
        unsafe { vm_copy(std::process::id(), &s, true) }.unwrap();
        assert_eq!(src, dst);
        // A remote range whose second page is unmapped: the first page
        // arrives (a partial read, finished segment by segment), then the
        // fault is named with its address, as for a many-segment plan.
        // SAFETY: a fresh anonymous mapping of two pages, its second unmapped.
        let page = 4096usize;
        let m = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(m, libc::MAP_FAILED);
        // SAFETY: the first page is ours and writable; the second is ours to unmap.
        unsafe {
            std::ptr::write_bytes(m as *mut u8, 0x5a, page);
            libc::munmap((m as usize + page) as *mut _, page);
        }
        let mut out = vec![0u8; 2 * page];
        let s = [seg(out.as_mut_ptr() as u64, m as u64, 2 * page as u64)];
        let e = unsafe { vm_copy(std::process::id(), &s, false) }.unwrap_err();
        assert!(
            e.message.contains(&format!("at 0x{:x}", m as usize + page)),
            "{e}"
        );
        assert!(out[..page].iter().all(|&b| b == 0x5a));
        // Nothing of the range mapped: the first call fails outright.
        let s = [seg(out.as_mut_ptr() as u64, (m as usize + page) as u64, 16)];
        let e = unsafe { vm_copy(std::process::id(), &s, false) }.unwrap_err();
        assert!(e.message.contains("process_vm_readv on pid"), "{e}");
        // SAFETY: the first page of the mapping, still ours.
        unsafe { libc::munmap(m, page) };
    }

    #[test]
    fn vm_copy_strided_gather_and_scatter() {
        // 3000 strided 16-byte pieces into a packed buffer and back: more
        // segments than one syscall takes, local side merged into one iovec.
        let src: Vec<u8> = (0..96_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut packed = vec![0u8; 48_000];
        let segs: Vec<Segment> = (0..3000u64)
            .map(|i| Segment {
                dst: packed.as_mut_ptr() as u64 + 16 * i,
                src: src.as_ptr() as u64 + 32 * i,
                len: 16,
            })
            .collect();
        unsafe { vm_copy(std::process::id(), &segs, false) }.unwrap();
        for i in 0..3000usize {
            assert_eq!(packed[16 * i..16 * i + 16], src[32 * i..32 * i + 16]);
        }
        let mut back = vec![0u8; 96_000];
        let segs: Vec<Segment> = (0..3000u64)
            .map(|i| Segment {
                dst: back.as_mut_ptr() as u64 + 32 * i,
                src: packed.as_ptr() as u64 + 16 * i,
                len: 16,
            })
            .collect();
        unsafe { vm_copy(std::process::id(), &segs, true) }.unwrap();
        for i in 0..3000usize {
            assert_eq!(back[32 * i..32 * i + 16], src[32 * i..32 * i + 16]);
            assert!(back[32 * i + 16..32 * i + 32].iter().all(|&b| b == 0));
        }
    }
}
