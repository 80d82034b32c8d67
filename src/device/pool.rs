//! Memory pools for library-allocated caches: one big allocation carved into
//! page-rounded ranges by a first-fit free list ([`FirstFit`]). The backing is a
//! memfd mapping on the host backend (a peer on the same host can map it too and
//! copy at memcpy speed), or one `aclrtMalloc` / `aclrtMallocHost` allocation on
//! the acl backend.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use std::os::fd::AsRawFd;

use crate::backend::acl::runtime::AclContext;
use crate::cache::types::Placement;
use crate::status::Result;
use crate::transport::peer_proc::PeerProcess;
use crate::transport::wire::PoolInfo;
use crate::{bail, err};

/// A first-fit allocator of page-rounded ranges inside `[base, base+size)`.
/// Owns no memory: it only hands out addresses.
pub struct FirstFit {
    base: u64,
    size: u64,
    page_shift: u32,
    /// Free ranges: offset → length.
    free: Mutex<BTreeMap<u64, u64>>,
}

impl FirstFit {
    /// An allocator over `[base, base+size)` with pages of `1 << page_shift` bytes.
    pub fn new(base: u64, size: u64, page_shift: u32) -> FirstFit {
        let mut free = BTreeMap::new();
        free.insert(0, size);
        FirstFit {
            base,
            size,
            page_shift,
            free: Mutex::new(free),
        }
    }

    /// Bytes actually reserved for a request of `len` bytes.
    pub fn rounded(&self, len: u64) -> u64 {
        let page = 1u64 << self.page_shift;
        len.div_ceil(page).saturating_mul(page).max(page)
    }

    /// Allocates `len` bytes (rounded up to whole pages); returns the address.
    pub fn alloc(&self, len: u64) -> Result<u64> {
        let need = self.rounded(len);
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let found = free.iter().find(|(_, &l)| l >= need).map(|(&o, &l)| (o, l));
        let Some((off, l)) = found else {
            bail!(
                OutOfMemory,
                "memory pool exhausted: {need} bytes requested, pool is {} bytes",
                self.size
            );
        };
        free.remove(&off);
        if l > need {
            free.insert(off + need, l - need);
        }
        Ok(self.base + off)
    }

    /// Returns a range obtained from `alloc(len)`.
    pub fn free(&self, addr: u64, len: u64) {
        let len = self.rounded(len);
        let Some(mut off) = addr.checked_sub(self.base) else {
            return;
        };
        let mut len = len;
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        // Merge with the following range.
        if let Some(&next_len) = free.get(&(off + len)) {
            free.remove(&(off + len));
            len += next_len;
        }
        // Merge with the preceding range.
        if let Some((&prev_off, &prev_len)) = free.range(..off).next_back() {
            if prev_off + prev_len == off {
                free.remove(&prev_off);
                off = prev_off;
                len += prev_len;
            }
        }
        free.insert(off, len);
    }

    /// Bytes currently free.
    pub fn free_bytes(&self) -> u64 {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .sum()
    }
}

/// What holds a pool's memory.
enum Backing {
    /// A shared memfd mapping (host backend).
    Memfd { fd: i32 },
    /// One ACL allocation (acl backend), freed with `aclrtFree` / `aclrtFreeHost`.
    Acl {
        ctx: Arc<AclContext>,
        placement: Placement,
    },
}

/// A memory pool: a backing allocation and the allocator that carves it.
pub struct Pool {
    backing: Backing,
    alloc: FirstFit,
}

// SAFETY: the memory is process-wide, the free list is behind a Mutex and the
// ACL context is Send + Sync.
unsafe impl Send for Pool {}
// SAFETY: as for Send: shared use goes through the Mutex'd free list, and the
// mapping's bytes belong to the caches allocated from it.
unsafe impl Sync for Pool {}

impl Pool {
    /// Creates a memfd-backed pool of `size` bytes with pages of `1 << page_shift` bytes.
    pub fn new(name: &str, size: u64, page_shift: u32) -> Result<Pool> {
        let cname = std::ffi::CString::new(name).unwrap_or_default();
        // SAFETY: valid C string.
        let fd = unsafe {
            libc::memfd_create(cname.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING)
        };
        if fd < 0 {
            bail!(
                OutOfMemory,
                "memfd_create for pool {name} failed: {}",
                io::Error::last_os_error()
            );
        }
        // SAFETY: fd is ours. The size is sealed: a peer that maps the pool
        // can rely on it (a shrink would turn its copies into SIGBUS).
        if unsafe {
            libc::ftruncate(fd, size as libc::off_t) != 0
                || libc::fcntl(fd, libc::F_ADD_SEALS, POOL_SEALS) != 0
        } {
            let e = io::Error::last_os_error();
            // SAFETY: `fd` is ours and not used after this.
            unsafe { libc::close(fd) };
            bail!(
                OutOfMemory,
                "sizing pool {name} to {size} bytes failed: {e}"
            );
        }
        // SAFETY: mapping a fresh memfd of `size` bytes.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: `fd` is ours and not used after this.
            unsafe { libc::close(fd) };
            bail!(
                OutOfMemory,
                "mapping pool {name} of {size} bytes failed: {e}"
            );
        }
        Ok(Pool {
            backing: Backing::Memfd { fd },
            alloc: FirstFit::new(p as u64, size, page_shift),
        })
    }

    /// Creates a pool of `size` bytes in one ACL allocation: device memory
    /// (`aclrtMalloc`) or pinned host memory (`aclrtMallocHost`).
    /// Errors: the mapped ACL status (`OutOfMemory` when the runtime is out of memory).
    pub fn with_acl(
        ctx: Arc<AclContext>,
        placement: Placement,
        size: u64,
        page_shift: u32,
    ) -> Result<Pool> {
        let len = usize::try_from(size)
            .map_err(|_| err!(ParamInvalid, "pool size {size} does not fit in memory"))?;
        let base = ctx.malloc(len, placement)?;
        Ok(Pool {
            backing: Backing::Acl { ctx, placement },
            alloc: FirstFit::new(base, size, page_shift),
        })
    }

    /// The memfd a same-host peer may map (memfd pools only).
    pub fn fd(&self) -> Option<i32> {
        match self.backing {
            Backing::Memfd { fd } => Some(fd),
            Backing::Acl { .. } => None,
        }
    }
    /// Base address of the pool.
    pub fn base(&self) -> u64 {
        self.alloc.base
    }
    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.alloc.size
    }

    /// Bytes actually reserved for a request of `len` bytes.
    pub fn rounded(&self, len: u64) -> u64 {
        self.alloc.rounded(len)
    }

    /// Allocates `len` bytes (rounded up to whole pages); returns the address.
    pub fn alloc(&self, len: u64) -> Result<u64> {
        self.alloc.alloc(len)
    }

    /// Returns a range obtained from `alloc(len)`.
    pub fn free(&self, addr: u64, len: u64) {
        self.alloc.free(addr, len)
    }

    /// Bytes currently free (for tests and diagnostics).
    pub fn free_bytes(&self) -> u64 {
        self.alloc.free_bytes()
    }

    /// True if `[addr, addr+len)` lies inside the pool.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        let (base, size) = (self.alloc.base, self.alloc.size);
        addr >= base && addr.checked_add(len).is_some_and(|e| e <= base + size)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        match &self.backing {
            // SAFETY: unmapping our own mapping and closing our fd.
            Backing::Memfd { fd } => unsafe {
                libc::munmap(self.alloc.base as *mut _, self.alloc.size as usize);
                libc::close(*fd);
            },
            Backing::Acl { ctx, placement } => {
                if let Err(e) = ctx.free(self.alloc.base, *placement) {
                    crate::log_warn!("freeing a memory pool: {}", e.message);
                }
            }
        }
    }
}

/// Seals of a pool memfd: its size is fixed for good.
const POOL_SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;

/// A read/write mapping of a same-host peer's pool in this process.
pub struct PeerMapping {
    /// The peer's base address.
    pub remote_base: u64,
    /// Where it is mapped here.
    pub local_base: u64,
    /// Length of the mapping in bytes.
    pub size: u64,
}

impl PeerMapping {
    /// Maps the pool `info` announced by the verified process `peer`: its
    /// memfd is taken through the pidfd, must be a regular file sealed
    /// against shrinking (so a copy can never fault on a truncated file), at
    /// least as large as announced, and the announcement at most `cap` bytes.
    /// Only the pages the peer really has are pre-faulted (a sparse memfd
    /// costs nothing here).
    pub fn open(peer: &PeerProcess, info: &PoolInfo, cap: u64) -> Result<PeerMapping> {
        let (fd, size, base) = (info.fd, info.size, info.base);
        let pid = peer.pid();
        if size == 0 || size > cap {
            bail!(
                FeatureNotEnabled,
                "peer pool of pid {pid} announces {size} bytes (limit llmdd.PeerPoolMaxBytes = {cap})"
            );
        }
        if base.checked_add(size).is_none() {
            bail!(
                FeatureNotEnabled,
                "peer pool of pid {pid} wraps the address space"
            );
        }
        let len = usize::try_from(size)
            .map_err(|_| err!(FeatureNotEnabled, "peer pool of {size} bytes does not fit"))?;
        let f = peer.take_fd(fd, libc::O_RDWR).map_err(|e| {
            err!(
                FeatureNotEnabled,
                "taking pool fd {fd} of pid {pid} failed: {e}"
            )
        })?;
        let raw = f.as_raw_fd();
        // SAFETY: `stat` is plain data; all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on the fd we own, into a stat we own.
        if unsafe { libc::fstat(raw, &mut st) } != 0 || (st.st_mode & libc::S_IFMT) != libc::S_IFREG
        {
            bail!(
                FeatureNotEnabled,
                "pool fd {fd} of pid {pid} is not a memory file"
            );
        }
        if (st.st_size as u64) < size {
            bail!(
                FeatureNotEnabled,
                "pool fd {fd} of pid {pid} has {} bytes, less than the {size} announced",
                st.st_size
            );
        }
        // SAFETY: F_GET_SEALS on the fd we own.
        let seals = unsafe { libc::fcntl(raw, libc::F_GET_SEALS) };
        if seals < 0 || seals & libc::F_SEAL_SHRINK == 0 {
            bail!(
                FeatureNotEnabled,
                "pool fd {fd} of pid {pid} is not sealed against shrinking"
            );
        }
        // SAFETY: mapping `len` bytes of a file at least that large whose
        // size is sealed; our fd is closed after mmap (the mapping holds it).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                raw,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(err!(
                FeatureNotEnabled,
                "mapping pool fd {fd} of pid {pid} failed: {}",
                io::Error::last_os_error()
            ));
        }
        populate_data(raw, p as u64, size);
        Ok(PeerMapping {
            remote_base: base,
            local_base: p as u64,
            size,
        })
    }

    /// Translates a peer address range into a local one, if inside this mapping.
    pub fn translate(&self, addr: u64, len: u64) -> Option<u64> {
        let off = addr.checked_sub(self.remote_base)?;
        (off.checked_add(len)? <= self.size).then(|| self.local_base + off)
    }
}

/// Pre-faults the mapping at `local` of the file `fd` only where the file has
/// data (`SEEK_DATA` / `SEEK_HOLE`): holes stay holes, so a large sparse pool
/// costs no memory. Best effort (kernels before 5.14 lack MADV_POPULATE_WRITE:
/// pages then fault in on first use).
fn populate_data(fd: i32, local: u64, size: u64) {
    let mut off: i64 = 0;
    let end = size as i64;
    while off < end {
        // SAFETY: lseek on our fd.
        let data = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
        if data < 0 || data >= end {
            return;
        }
        // SAFETY: lseek on our fd.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) }.clamp(data, end);
        if hole <= data {
            return;
        }
        // SAFETY: the range lies inside our mapping.
        let r = unsafe {
            libc::madvise(
                (local + data as u64) as *mut _,
                (hole - data) as usize,
                libc::MADV_POPULATE_WRITE,
            )
        };
        if r != 0 {
            return;
        }
        off = hole;
    }
}

impl Drop for PeerMapping {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.local_base as *mut _, self.size as usize) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_free_merge() {
        let p = Pool::new("t", 1 << 20, 12).unwrap();
        let a = p.alloc(5000).unwrap();
        let b = p.alloc(4096).unwrap();
        assert_eq!(b - a, 8192);
        assert!(p.alloc(2 << 20).is_err());
        p.free(a, 5000);
        p.free(b, 4096);
        assert_eq!(p.free_bytes(), 1 << 20);
        let c = p.alloc(1 << 20).unwrap();
        assert_eq!(c, a);
        unsafe { std::ptr::write_bytes(c as *mut u8, 7, 1 << 20) };
    }

    fn info(p: &Pool, size: u64) -> PoolInfo {
        PoolInfo {
            fd: p.fd().unwrap() as u32,
            base: p.base(),
            size,
        }
    }

    #[test]
    fn peer_mapping_sees_same_bytes() {
        let me = PeerProcess::open(std::process::id()).unwrap();
        let p = Pool::new("t2", 1 << 16, 12).unwrap();
        let a = p.alloc(100).unwrap();
        unsafe { *(a as *mut u8) = 42 };
        let m = PeerMapping::open(&me, &info(&p, p.size()), 1 << 30).unwrap();
        let l = m.translate(a, 1).unwrap();
        assert_eq!(unsafe { *(l as *const u8) }, 42);
        assert!(m.translate(p.base() + p.size(), 1).is_none());
    }

    #[test]
    fn peer_pool_announcements_are_checked() {
        let me = PeerProcess::open(std::process::id()).unwrap();
        let p = Pool::new("t3", 1 << 16, 12).unwrap();
        // Larger than the memfd, above the cap, empty.
        for (size, cap) in [(1 << 17, 1 << 30), (1 << 16, 1 << 15), (0, 1 << 30)] {
            let e = PeerMapping::open(&me, &info(&p, size), cap).err().unwrap();
            assert_eq!(
                e.status,
                crate::status::Status::FeatureNotEnabled,
                "{}",
                e.message
            );
        }
        // A descriptor that is not a memory file, and one that does not exist.
        let f = std::fs::File::open("/proc/self/status").unwrap();
        let bogus = PoolInfo {
            fd: f.as_raw_fd() as u32,
            base: 0x1000,
            size: 1,
        };
        assert!(PeerMapping::open(&me, &bogus, 1 << 30).is_err());
        let bogus = PoolInfo {
            fd: 1 << 29,
            ..bogus
        };
        assert!(PeerMapping::open(&me, &bogus, 1 << 30).is_err());
        // An unsealed memfd (it could shrink under a mapping): refused.
        let name = std::ffi::CString::new("unsealed").unwrap();
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        assert_eq!(unsafe { libc::ftruncate(fd, 1 << 16) }, 0);
        let unsealed = PoolInfo {
            fd: fd as u32,
            base: 0x10000,
            size: 1 << 16,
        };
        let e = PeerMapping::open(&me, &unsealed, 1 << 30).err().unwrap();
        assert!(e.message.contains("sealed"), "{}", e.message);
        unsafe { libc::close(fd) };
    }

    #[test]
    fn only_data_pages_are_populated() {
        // A 256 MiB pool with one touched page: mapping it must not fault in
        // (allocate) the other 256 MiB.
        let me = PeerProcess::open(std::process::id()).unwrap();
        let p = Pool::new("t4", 256 << 20, 12).unwrap();
        unsafe { *(p.base() as *mut u8) = 1 };
        let rss = || -> u64 {
            let s = std::fs::read_to_string("/proc/self/statm").unwrap();
            s.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 4096
        };
        let before = rss();
        let m = PeerMapping::open(&me, &info(&p, p.size()), 1 << 30).unwrap();
        assert!(rss() < before + (16 << 20), "populated beyond the data");
        assert_eq!(unsafe { *(m.local_base as *const u8) }, 1);
    }
}
