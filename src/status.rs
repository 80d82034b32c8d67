//! Status codes with the numeric values documented for LLM-DataDist, and the
//! crate-wide error type that carries one of them plus a human message.

use std::ffi::CStr;
use std::fmt;

/// Expands the status table (`src/status_table.rs`) into the `Status` enum,
/// `Status::ALL`, the names and the `LLMDD_*` constants of [`c_constants`].
macro_rules! statuses {
    ($( $variant:ident = $code:literal, $llm:literal, [$($c:ident)?], $doc:literal; )*) => {
        /// A documented LLM-DataDist status code (`LLM_*`), with its exact
        /// numeric value; one row each in `src/status_table.rs`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u32)]
        pub enum Status {
            $( #[doc = $doc] $variant = $code, )*
        }

        impl Status {
            /// Every status, in table order, for name lookups and tests.
            pub(crate) const ALL: &'static [Status] = &[$(Status::$variant),*];

            /// The documented name, e.g. `"LLM_PARAM_INVALID"`.
            pub fn name(self) -> &'static str {
                match self {
                    $( Status::$variant => $llm, )*
                }
            }

            /// The documented name as a C string, e.g. `c"LLM_PARAM_INVALID"`
            /// (static: `llmdd_status_name` hands it out as is).
            pub fn c_name(self) -> &'static CStr {
                match self {
                    $( Status::$variant => const {
                        match CStr::from_bytes_with_nul(concat!($llm, "\0").as_bytes()) {
                            Ok(c) => c,
                            Err(_) => panic!("status name with a NUL"),
                        }
                    }, )*
                }
            }
        }

        /// The `LLMDD_*` status constants of the C API, one per table row
        /// that names one (include/llmdd.h has the same `#define`s, written
        /// by build.rs from the same table).
        pub mod c_constants {
            $( $( #[doc = $doc] pub const $c: u32 = super::Status::$variant as u32; )? )*
        }
    };
}

include!("status_table.rs");

impl Status {
    /// The numeric code.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// Maps a numeric code back; unknown integers map to `Failed` (as Python does).
    pub fn from_code(code: u32) -> Status {
        Status::ALL
            .iter()
            .copied()
            .find(|s| s.code() == code)
            .unwrap_or(Status::Failed)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (0x{:X})", self.name(), self.code())
    }
}

/// The crate-wide error: a documented status plus a message saying what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{status}: {message}")]
pub struct Error {
    /// The status reported to the caller.
    pub status: Status,
    /// What was wrong, naming the argument or peer involved.
    pub message: String,
}

impl Error {
    /// Builds an error from a status and a message.
    pub fn new(status: Status, message: impl Into<String>) -> Self {
        Error {
            status,
            message: message.into(),
        }
    }
}

/// Crate-wide result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `return Err(Error::new(status, format!(...)))` in one line.
#[macro_export]
macro_rules! bail {
    ($status:ident, $($fmt:tt)+) => {
        return Err($crate::status::Error::new($crate::status::Status::$status, format!($($fmt)+)))
    };
}

/// Builds an `Error` with a formatted message.
#[macro_export]
macro_rules! err {
    ($status:ident, $($fmt:tt)+) => {
        $crate::status::Error::new($crate::status::Status::$status, format!($($fmt)+))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented values (../shared/spec/llm-datadist-api.md §5; 507053 and
    /// 507057 are CANN's `ACL_ERROR_RT_DEVICE_MEM_ERROR` and
    /// `ACL_ERROR_RT_SUSPECT_REMOTE_ERROR`), written out independently of the
    /// table so that an edit of the table cannot pass unnoticed.
    const DOCUMENTED: &[(&str, u32)] = &[
        ("LLM_SUCCESS", 0x0),
        ("LLM_FAILED", 0xFFFF_FFFF),
        ("LLM_WAIT_PROCESS_TIMEOUT", 0x5010_B001),
        ("LLM_KV_CACHE_NOT_EXIST", 0x5010_B002),
        ("LLM_REPEAT_REQUEST", 0x5010_B003),
        ("LLM_REQUEST_ALREADY_COMPLETED", 0x5010_B004),
        ("LLM_PARAM_INVALID", 0x5010_B005),
        ("LLM_ENGINE_FINALIZED", 0x5010_B006),
        ("LLM_NOT_YET_LINK", 0x5010_B007),
        ("LLM_ALREADY_LINK", 0x5010_B008),
        ("LLM_LINK_FAILED", 0x5010_B009),
        ("LLM_UNLINK_FAILED", 0x5010_B00A),
        ("LLM_NOTIFY_PROMPT_UNLINK_FAILED", 0x5010_B00B),
        ("LLM_CLUSTER_NUM_EXCEED_LIMIT", 0x5010_B00C),
        ("LLM_PROCESSING_LINK", 0x5010_B00D),
        ("LLM_DEVICE_OUT_OF_MEMORY", 0x5010_B00E),
        ("LLM_PREFIX_ALREADY_EXIST", 0x5010_B00F),
        ("LLM_PREFIX_NOT_EXIST", 0x5010_B010),
        ("LLM_SEQ_LEN_OVER_LIMIT", 0x5010_B011),
        ("LLM_NO_FREE_BLOCK", 0x5010_B012),
        ("LLM_BLOCKS_OUT_OF_MEMORY", 0x5010_B013),
        ("LLM_CACHE_INCOMPATIBLE", 0x5010_B014),
        ("LLM_CACHE_KEY_ALREADY_EXIST", 0x5010_B015),
        ("LLM_COPY_CACHE_FAILED", 0x5010_B016),
        ("LLM_CACHE_ID_ALREADY_EXIST", 0x5010_B017),
        ("LLM_EXIST_LINK", 0x5010_B018),
        ("LLM_FEATURE_NOT_ENABLED", 0x5010_B019),
        ("LLM_TIMEOUT", 0x5010_B01A),
        ("LLM_LINK_BUSY", 0x5010_B01B),
        ("LLM_OUT_OF_MEMORY", 0x5010_B01C),
        ("LLM_DEVICE_MEM_ERROR", 507_053),
        ("LLM_SUSPECT_REMOTE_ERROR", 507_057),
    ];

    #[test]
    fn table_matches_the_documented_values() {
        let table: Vec<(&str, u32)> = Status::ALL.iter().map(|s| (s.name(), s.code())).collect();
        assert_eq!(table, DOCUMENTED);
        assert_eq!(Status::ParamInvalid.code(), 0x5010B005);
        assert_eq!(Status::DeviceMemError.code(), 507053);
    }

    #[test]
    fn codes_and_names_round_trip() {
        for &s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), s);
            assert_eq!(s.c_name().to_str(), Ok(s.name()));
        }
        assert_eq!(Status::from_code(0x5010B018), Status::ExistLink);
        assert_eq!(Status::from_code(12345), Status::Failed);
    }

    #[test]
    fn c_constants_equal_the_table() {
        use c_constants::*;
        // Spot checks; build.rs writes the header from the same rows, and
        // tests/header.rs checks every `#define` against `Status::ALL`.
        assert_eq!(LLMDD_SUCCESS, 0);
        assert_eq!(LLMDD_FAILED, u32::MAX);
        assert_eq!(LLMDD_PARAM_INVALID, 0x5010_B005);
        assert_eq!(LLMDD_SUSPECT_REMOTE_ERROR, 507_057);
    }
}
