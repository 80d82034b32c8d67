//! Formatting of one log line: the stderr form
//! (`2025-06-01T08:15:42.123456Z  INFO [4242:4250 llmdd-conn] llmdd::datadist::session: text`)
//! and the NUL-terminated module and message handed to a callback.
//!
//! Messages may carry text a peer chose (addresses, error strings), so control
//! characters are escaped (`\n`, `\u{1b}`): a line is always one line, and a
//! peer cannot forge lines or send terminal escapes.

use std::ffi::CStr;
use std::fmt::{self, Write};
use std::time::SystemTime;

use log::Level;

/// Where and when a line was produced (the stderr prefix).
pub struct Origin<'a> {
    /// Wall-clock time of the line (printed in UTC).
    pub time: SystemTime,
    /// Process id.
    pub pid: u32,
    /// Kernel thread id.
    pub tid: i64,
    /// Thread name (as the kernel knows it, at most 15 bytes).
    pub thread: &'a str,
}

impl Origin<'_> {
    /// Fills `name_buf` and returns the origin of a line produced now on this thread.
    pub fn here(name_buf: &mut [u8; 16]) -> Origin<'_> {
        // SAFETY: PR_GET_NAME writes at most 16 bytes, NUL included, into a
        // 16-byte buffer; gettid has no arguments.
        let (named, tid) = unsafe {
            let named = libc::prctl(libc::PR_GET_NAME, name_buf.as_mut_ptr() as libc::c_ulong);
            (named == 0, libc::syscall(libc::SYS_gettid))
        };
        let thread = if named {
            let len = name_buf.iter().position(|&b| b == 0).unwrap_or(0);
            std::str::from_utf8(&name_buf[..len]).unwrap_or("?")
        } else {
            "?"
        };
        Origin {
            time: SystemTime::now(),
            pid: std::process::id(),
            tid,
            thread,
        }
    }
}

/// Appends the stderr line (newline included) for a message from `target`.
pub fn stderr_line(
    buf: &mut String,
    origin: &Origin<'_>,
    level: Level,
    target: &str,
    args: fmt::Arguments<'_>,
) {
    let _ = write!(
        buf,
        "{} {:>5} [{}:{} ",
        humantime::format_rfc3339_micros(origin.time),
        level.as_str(),
        origin.pid,
        origin.tid
    );
    let _ = write!(OneLine(buf), "{}] {}: {}", origin.thread, target, args);
    buf.push('\n');
}

/// Appends `target` NUL `message` NUL to `buf` and returns the two C strings
/// (module, message) a callback receives.
pub fn callback_strings<'b>(
    buf: &'b mut String,
    target: &str,
    args: fmt::Arguments<'_>,
) -> (&'b CStr, &'b CStr) {
    buf.clear();
    let _ = write!(OneLine(buf), "{target}");
    buf.push('\0');
    let split = buf.len();
    let _ = write!(OneLine(buf), "{args}");
    buf.push('\0');
    let bytes = buf.as_bytes();
    // Neither part has an interior NUL: OneLine escapes every control character.
    let module = CStr::from_bytes_until_nul(bytes).unwrap_or_default();
    let message = CStr::from_bytes_until_nul(&bytes[split..]).unwrap_or_default();
    (module, message)
}

/// A `fmt::Write` that escapes control characters (NUL and newlines included).
struct OneLine<'a>(&'a mut String);

impl Write for OneLine<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if !s.chars().any(char::is_control) {
            self.0.push_str(s);
            return Ok(());
        }
        for c in s.chars() {
            if c.is_control() {
                self.0.extend(c.escape_debug());
            } else {
                self.0.push(c);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn origin(thread: &str) -> Origin<'_> {
        Origin {
            // 2025-06-01T08:15:42.123456789Z
            time: UNIX_EPOCH + Duration::new(1_748_765_742, 123_456_789),
            pid: 4242,
            tid: 4250,
            thread,
        }
    }

    #[test]
    fn the_stderr_line_has_time_level_thread_module_and_message() {
        let mut buf = String::new();
        let o = origin("llmdd-conn");
        stderr_line(
            &mut buf,
            &o,
            Level::Info,
            "llmdd::datadist::session",
            format_args!("cluster {} linked", 7),
        );
        assert_eq!(
            buf,
            "2025-06-01T08:15:42.123456Z  INFO [4242:4250 llmdd-conn] \
             llmdd::datadist::session: cluster 7 linked\n"
        );
    }

    #[test]
    fn levels_are_right_aligned_to_five_columns() {
        for (level, text) in [
            (Level::Error, "ERROR"),
            (Level::Warn, " WARN"),
            (Level::Info, " INFO"),
            (Level::Debug, "DEBUG"),
            (Level::Trace, "TRACE"),
        ] {
            let mut buf = String::new();
            stderr_line(&mut buf, &origin("t"), level, "llmdd", format_args!("m"));
            assert_eq!(&buf[28..33], text, "{buf}");
        }
    }

    #[test]
    fn control_characters_cannot_break_or_forge_a_line() {
        let mut buf = String::new();
        let hostile = "bad\npeer\r\n2025-01-01T00:00:00.000000Z ERROR forged\x1b[2J\0\u{85}end";
        stderr_line(
            &mut buf,
            &origin("a\nb"),
            Level::Warn,
            "llmdd::x",
            format_args!("peer said {hostile}"),
        );
        assert_eq!(buf.matches('\n').count(), 1, "{buf}");
        assert!(buf.ends_with('\n'));
        assert!(buf.contains("[4242:4250 a\\nb] llmdd::x: peer said bad\\npeer\\r\\n2025"));
        assert!(buf.contains("forged\\u{1b}[2J\\0\\u{85}end\n"), "{buf}");
        assert!(!buf[..buf.len() - 1].chars().any(char::is_control));
    }

    #[test]
    fn callback_strings_are_nul_terminated_and_escaped() {
        let mut buf = String::from("stale contents");
        let (module, message) =
            callback_strings(&mut buf, "llmdd::transport", format_args!("a\0b\nc {}", 5));
        assert_eq!(module.to_str().unwrap(), "llmdd::transport");
        assert_eq!(message.to_str().unwrap(), "a\\0b\\nc 5");
        let (module, message) = callback_strings(&mut buf, "llmdd", format_args!(""));
        assert_eq!(module.to_str().unwrap(), "llmdd");
        assert_eq!(message.to_str().unwrap(), "");
    }

    #[test]
    fn origin_here_names_this_thread() {
        let mut name = [0u8; 16];
        let here = std::thread::Builder::new()
            .name("llmdd-logtest".into())
            .spawn(move || {
                let o = Origin::here(&mut name);
                (o.thread.to_string(), o.tid, o.pid)
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(here.0, "llmdd-logtest");
        assert!(here.1 > 0);
        assert_eq!(here.2, std::process::id());
    }
}
