//! A liveness word the kernel clears when a process dies: the same-host
//! copy path's check that its peer still holds its pid, without a system call.
//!
//! Each process that offers a same-host identity also makes a one-page memfd
//! named `llmdd-live` holding a robust futex word, owned by a thread of its
//! own that parks ("llmdd-live") until the control plane stops ([`release`]:
//! it then clears the word, and peers poll). The word holds that thread's id; when
//! the thread dies (its process exits, is killed, or `exec`s) the kernel's
//! robust-futex cleanup sets `FUTEX_OWNER_DIED` and clears the id, during the
//! exit and so before the process can be reaped, which is before its pid can
//! name another process. A verifier that mapped the page (read-only, taken
//! through the peer's pidfd like the identity memfd) therefore knows, when it
//! reads the word unchanged after a copy, that the pid named its peer for the
//! whole copy: what a `poll` of the pidfd told it, for a load instead of a
//! system call (the poll stays the answer whenever the word is not the one
//! seen at link time).
//!
//! Nothing else can make the word look alive: the memfd is sealed against new
//! writers (`F_SEAL_FUTURE_WRITE`, no growing or shrinking), the owner's own
//! writable mapping is not inherited by a fork (`MADV_DONTFORK`), and a forked
//! child has no holder thread (it makes its own identity, `identity`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{fence, AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// The memfd name of a liveness page.
pub const LIVE_NAME: &str = "llmdd-live";
/// `/proc/<pid>/fd` target of a liveness memfd.
pub const LIVE_PATH: &str = "/memfd:llmdd-live (deleted)";
/// Bytes of a liveness memfd (one page).
const LIVE_LEN: usize = 4096;
/// Seals a liveness memfd carries: no new writer, fixed size.
const LIVE_SEALS: i32 =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_FUTURE_WRITE;
/// Set by the kernel in a robust futex word whose owner died.
const OWNER_DIED: u32 = 0x4000_0000;
/// The owner's thread id in a robust futex word.
const TID_MASK: u32 = 0x3fff_ffff;
/// Most descriptors of a peer looked at to find its liveness memfd.
const SCAN_MAX: usize = 65_536;

/// The kernel's `struct robust_list`.
#[repr(C)]
struct RobustList {
    next: *mut RobustList,
}

/// The kernel's `struct robust_list_head`.
#[repr(C)]
struct RobustListHead {
    list: RobustList,
    futex_offset: libc::c_long,
    list_op_pending: *mut RobustList,
}

/// Layout of the shared page: the futex word, then the list entry the
/// kernel follows to it.
#[repr(C)]
struct Page {
    word: AtomicU32,
    _pad: u32,
    entry: RobustList,
}

/// This process's liveness page while it has one: the memfd, our writable
/// mapping, and the holder thread.
struct Holder {
    pid: u32,
    fd: OwnedFd,
    page: usize,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

static HOLDER: Mutex<Option<Holder>> = Mutex::new(None);

/// This process's liveness memfd, made on first use after start, after a
/// [`release`], and in a forked child (whose copy of the parent's has no
/// holder thread); None if it cannot be made (peers then poll the pidfd).
pub fn own_fd() -> Option<RawFd> {
    let mut g = HOLDER.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if let Some(h) = g.as_ref() {
        if h.pid == pid {
            return Some(h.fd.as_raw_fd());
        }
        // A forked child: the parent's thread does not exist here and its
        // mapping was not inherited; only the descriptor copy is ours.
        let old = g.take().expect("checked above");
        drop(old.fd);
        std::mem::forget(old.thread);
    }
    *g = make(pid);
    g.as_ref().map(|h| h.fd.as_raw_fd())
}

/// Ends this process's liveness page (the control plane stopped: the last
/// instance finalized). The holder clears the word before it exits, so a peer
/// that mapped it polls the pidfd from then on; the memfd closes and the
/// thread is joined (finalize leaves neither behind). The next [`own_fd`]
/// makes a new page.
pub fn release() {
    let h = HOLDER.lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(h) = h else { return };
    if h.pid != std::process::id() {
        std::mem::forget(h.thread);
        return;
    }
    h.stop.store(true, Ordering::SeqCst);
    h.thread.thread().unpark();
    let _ = h.thread.join();
    // SAFETY: our mapping; its thread is gone.
    unsafe { libc::munmap(h.page as *mut libc::c_void, LIVE_LEN) };
}

/// Makes the page and its holder thread.
fn make(pid: u32) -> Option<Holder> {
    let name = std::ffi::CString::new(LIVE_NAME).ok()?;
    // SAFETY: valid C string.
    let fd =
        unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
    if fd < 0 {
        return None;
    }
    // SAFETY: a new fd; we own it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sizing our memfd, then mapping it shared and writable.
    let page = unsafe {
        if libc::ftruncate(fd.as_raw_fd(), LIVE_LEN as libc::off_t) != 0 {
            return None;
        }
        let p = libc::mmap(
            std::ptr::null_mut(),
            LIVE_LEN,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        // A fork must not inherit a writable view of the word.
        if libc::madvise(p, LIVE_LEN, libc::MADV_DONTFORK) != 0
            || libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, LIVE_SEALS) != 0
        {
            libc::munmap(p, LIVE_LEN);
            return None;
        }
        p as usize
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let flag = stop.clone();
    let spawned = std::thread::Builder::new()
        .name("llmdd-live".into())
        .stack_size(64 << 10)
        .spawn(move || hold(page, &flag, tx));
    let thread = match spawned {
        Ok(t) if rx.recv() == Ok(true) => t,
        other => {
            if let Ok(t) = other {
                let _ = t.join();
            }
            // SAFETY: our mapping, unused by anyone.
            unsafe { libc::munmap(page as *mut libc::c_void, LIVE_LEN) };
            return None;
        }
    };
    Some(Holder {
        pid,
        fd,
        page,
        stop,
        thread,
    })
}

/// The holder thread: registers the page's word as its robust futex, takes
/// it, says so, and parks until [`release`]; then clears the word and takes
/// its robust list back from the kernel before it ends.
fn hold(page: usize, stop: &AtomicBool, ready: std::sync::mpsc::Sender<bool>) {
    let p = page as *mut Page;
    let mut head = Box::new(RobustListHead {
        list: RobustList {
            next: std::ptr::null_mut(),
        },
        futex_offset: 0,
        list_op_pending: std::ptr::null_mut(),
    });
    // SAFETY: `p` is our live shared mapping; this thread alone writes it.
    // This thread uses no robust mutex of the C library, whose own list for
    // it this replaces. `head` outlives the registration (undone below
    // before it is freed; at an exit of the process it is still here).
    let ok = unsafe {
        let entry = std::ptr::addr_of_mut!((*p).entry);
        let word = std::ptr::addr_of_mut!((*p).word) as *mut u8;
        head.futex_offset = word.offset_from(entry as *mut u8) as libc::c_long;
        (*entry).next = &mut head.list;
        head.list.next = entry;
        libc::syscall(
            libc::SYS_set_robust_list,
            &mut *head as *mut RobustListHead,
            std::mem::size_of::<RobustListHead>(),
        ) == 0
    };
    if ok {
        // SAFETY: as above.
        let tid = unsafe { libc::gettid() } as u32;
        // SAFETY: `p` is our live shared mapping of a `Page` (mapped by the
        // caller, unmapped only after this thread ends); `word` is an atomic,
        // so the store is sound while peers read it.
        unsafe { (*p).word.store(tid & TID_MASK, Ordering::SeqCst) };
    }
    let _ = ready.send(ok);
    if !ok {
        return;
    }
    while !stop.load(Ordering::SeqCst) {
        std::thread::park();
    }
    // SAFETY: as above. The word no longer names a live holder; the list is
    // emptied so the kernel walks nothing of the page or of `head` at exit.
    unsafe {
        (*p).word.store(0, Ordering::SeqCst);
        head.list.next = &mut head.list;
    }
}

/// A peer's liveness word, mapped read-only, with the value it held when the
/// peer was verified.
#[derive(Debug)]
pub struct LiveWord {
    map: usize,
    expect: u32,
}

// SAFETY: `map` is the address of a read-only mapping that `LiveWord` owns
// (unmapped only in its `Drop`) and reads with atomic loads only, so moving it
// to another thread is sound.
unsafe impl Send for LiveWord {}
// SAFETY: as for `Send`: shared use only performs atomic loads of the mapping.
unsafe impl Sync for LiveWord {}

impl LiveWord {
    /// True while the word still names the holder thread seen at link time:
    /// then the peer has not exited, so a copy that finished before this call
    /// reached it. False means only "poll the pidfd to know".
    #[inline]
    pub fn holds(&self) -> bool {
        // Order the load after the copy that precedes it.
        fence(Ordering::SeqCst);
        // SAFETY: `map` is our live read-only mapping of the page.
        let w = unsafe { &*(self.map as *const AtomicU32) };
        w.load(Ordering::Acquire) == self.expect
    }
}

impl Drop for LiveWord {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.map as *mut libc::c_void, LIVE_LEN) };
    }
}

/// Maps the liveness page of process `pid`, whose descriptors `take` duplicates
/// (through its pidfd) and `fds` lists (its `/proc/<pid>/fd`), trying `hint`
/// first. None if the peer has none, or its word is not held by one of its own
/// threads (the caller then polls the pidfd). The caller checks, after this,
/// that the peer is still alive.
pub fn attach(
    pid: u32,
    hint: u32,
    take: impl Fn(u32) -> std::io::Result<OwnedFd>,
) -> Option<LiveWord> {
    let found = take(hint)
        .ok()
        .filter(is_live_memfd)
        .or_else(|| scan(pid, hint, &take))?;
    // SAFETY: mapping our duplicate read-only; it stays mapped after the fd closes.
    let map = unsafe {
        let p = libc::mmap(
            std::ptr::null_mut(),
            LIVE_LEN,
            libc::PROT_READ,
            libc::MAP_SHARED,
            found.as_raw_fd(),
            0,
        );
        if p == libc::MAP_FAILED {
            return None;
        }
        p as usize
    };
    // SAFETY: our mapping.
    let w = unsafe { &*(map as *const AtomicU32) }.load(Ordering::Acquire);
    let live = LiveWord { map, expect: w };
    let tid = w & TID_MASK;
    if w & OWNER_DIED != 0 || tid == 0 || w != tid {
        return None;
    }
    // The holder must be a thread of the peer.
    std::fs::metadata(format!("/proc/{pid}/task/{tid}")).ok()?;
    Some(live)
}

/// Looks through the peer's descriptors for its liveness memfd.
fn scan(pid: u32, skip: u32, take: &impl Fn(u32) -> std::io::Result<OwnedFd>) -> Option<OwnedFd> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    for e in dir.take(SCAN_MAX).flatten() {
        let Some(n) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if n == skip || std::fs::read_link(e.path()).map_or(true, |p| p.as_os_str() != LIVE_PATH) {
            continue;
        }
        if let Some(f) = take(n).ok().filter(is_live_memfd) {
            return Some(f);
        }
    }
    None
}

/// True for a liveness memfd: its name, its seals and its size.
fn is_live_memfd(fd: &OwnedFd) -> bool {
    let named = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    if !named.is_ok_and(|p| p.as_os_str() == LIVE_PATH) {
        return false;
    }
    // SAFETY: F_GET_SEALS and fstat on our fd.
    let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    // SAFETY: `libc::stat` is plain integers, for which all-zero bytes are a
    // valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    seals >= 0
        && seals & LIVE_SEALS == LIVE_SEALS
        // SAFETY: `fd` is an open fd we own (borrowed for the call) and `st`
        // is a valid, writable `stat` that fstat fills.
        && unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0
        && st.st_size == LIVE_LEN as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether no one can write the liveness memfd `fd` of this process.
    fn sealed(fd: RawFd) -> bool {
        let w = unsafe { libc::pwrite(fd, [0u8].as_ptr() as *const _, 1, 0) };
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                LIVE_LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        w == -1 && p == libc::MAP_FAILED
    }

    /// The child role of `the_word_follows_its_holder` (a fresh process: no
    /// other test's instance stops the control plane under it, and the holder
    /// thread is not made in a fork of this threaded harness). Commands on
    /// stdin: `make`, `release`.
    fn child_role() {
        use std::io::BufRead;
        let mut lines = std::io::stdin().lock().lines();
        while let Some(Ok(cmd)) = lines.next() {
            match cmd.trim() {
                "make" => {
                    let fd = own_fd().expect("a liveness memfd");
                    assert_eq!(own_fd(), Some(fd), "made once");
                    println!("\nLIVE fd={fd} sealed={}", sealed(fd));
                }
                "release" => {
                    release();
                    println!("\nRELEASED");
                }
                _ => break,
            }
        }
        std::process::exit(0);
    }

    #[test]
    fn the_word_follows_its_holder() {
        use std::io::{BufRead, Write};
        const T: &str = "transport::live::tests::the_word_follows_its_holder";
        if std::env::var_os("LLMDD_LIVE_CHILD").is_some() {
            return child_role();
        }
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", T, "--nocapture", "--test-threads=1"])
            .env("LLMDD_LIVE_CHILD", "1")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut to = child.stdin.take().unwrap();
        let mut from = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut ask = |cmd: &str, want: &str| -> String {
            writeln!(to, "{cmd}").unwrap();
            loop {
                let mut line = String::new();
                assert!(
                    from.read_line(&mut line).unwrap() > 0,
                    "the child said nothing"
                );
                if line.starts_with(want) {
                    return line;
                }
            }
        };
        let pid = child.id();
        // The child's descriptors, as /proc shows them to its parent.
        let take = |n: u32| std::fs::File::open(format!("/proc/{pid}/fd/{n}")).map(OwnedFd::from);
        let fd_of = |line: &str| -> u32 {
            assert!(line.contains("sealed=true"), "writable: {line}");
            line["LIVE fd=".len()..]
                .split(' ')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        // Released: the word is cleared, so it no longer holds.
        let w = attach(pid, fd_of(&ask("make", "LIVE")), take).expect("attached");
        assert!(w.holds());
        ask("release", "RELEASED");
        assert!(!w.holds(), "a released word must not hold");
        // A new page; found by scanning when the hint misses. It dies with
        // its process: the kernel marks it.
        let fd = fd_of(&ask("make", "LIVE"));
        let w = attach(pid, fd + 7, take).expect("attached by scanning");
        assert!(w.holds());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!w.holds(), "the kernel marked the word when the child died");
    }
}
