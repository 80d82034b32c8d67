//! Status codes with the numeric values documented for LLM-DataDist, and the
//! crate-wide error type that carries one of them plus a human message.

use std::fmt;

/// A documented LLM-DataDist status code (`LLM_*`), with its exact numeric value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Status {
    /// Success.
    Success = 0,
    /// Generic failure; also "not initialized".
    Failed = 0xFFFF_FFFF,
    /// Legacy: request waited too long.
    WaitProcessTimeout = 0x5010_B001,
    /// Cache (local id or remote key/id/slot) does not exist.
    KvCacheNotExist = 0x5010_B002,
    /// Legacy: repeated request.
    RepeatRequest = 0x5010_B003,
    /// Legacy: request already completed.
    RequestAlreadyCompleted = 0x5010_B004,
    /// An argument, option or state check failed.
    ParamInvalid = 0x5010_B005,
    /// Legacy: engine finalized.
    EngineFinalized = 0x5010_B006,
    /// No (ready) link to the peer, or unknown comm id.
    NotYetLink = 0x5010_B007,
    /// A link to that cluster already exists.
    AlreadyLink = 0x5010_B008,
    /// Link setup failed.
    LinkFailed = 0x5010_B009,
    /// Unlink failed.
    UnlinkFailed = 0x5010_B00A,
    /// Could not notify the prompt side of an unlink.
    NotifyPromptUnlinkFailed = 0x5010_B00B,
    /// More than 16 clusters in one (un)link call.
    ClusterNumExceedLimit = 0x5010_B00C,
    /// Another (un)link is in progress.
    ProcessingLink = 0x5010_B00D,
    /// Device memory exhausted.
    DeviceOutOfMemory = 0x5010_B00E,
    /// Legacy: prefix already exists.
    PrefixAlreadyExist = 0x5010_B00F,
    /// Legacy: prefix does not exist.
    PrefixNotExist = 0x5010_B010,
    /// Legacy: sequence length over limit.
    SeqLenOverLimit = 0x5010_B011,
    /// Legacy: no free block.
    NoFreeBlock = 0x5010_B012,
    /// Legacy: blocks out of memory.
    BlocksOutOfMemory = 0x5010_B013,
    /// Internal: cache incompatible.
    CacheIncompatible = 0x5010_B014,
    /// Internal: cache key already exists.
    CacheKeyAlreadyExist = 0x5010_B015,
    /// Internal: copy failed.
    CopyCacheFailed = 0x5010_B016,
    /// Internal: cache id already exists.
    CacheIdAlreadyExist = 0x5010_B017,
    /// switch_role (or unregister) while links exist.
    ExistLink = 0x5010_B018,
    /// Required option, pool, backend or placement is not available.
    FeatureNotEnabled = 0x5010_B019,
    /// A transfer or wait timed out.
    Timeout = 0x5010_B01A,
    /// Reserved: conflicting concurrent use of a link (never returned by llmdd).
    LinkBusy = 0x5010_B01B,
    /// Memory pool or system memory exhausted.
    OutOfMemory = 0x5010_B01C,
    /// Uncorrectable device memory error (reserved).
    DeviceMemError = 507_053,
    /// Suspected remote memory fault.
    SuspectRemoteError = 507_057,
}

impl Status {
    /// Every status, for name lookups and tests.
    pub(crate) const ALL: [Status; 33] = [
        Status::Success,
        Status::Failed,
        Status::WaitProcessTimeout,
        Status::KvCacheNotExist,
        Status::RepeatRequest,
        Status::RequestAlreadyCompleted,
        Status::ParamInvalid,
        Status::EngineFinalized,
        Status::NotYetLink,
        Status::AlreadyLink,
        Status::LinkFailed,
        Status::UnlinkFailed,
        Status::NotifyPromptUnlinkFailed,
        Status::ClusterNumExceedLimit,
        Status::ProcessingLink,
        Status::DeviceOutOfMemory,
        Status::PrefixAlreadyExist,
        Status::PrefixNotExist,
        Status::SeqLenOverLimit,
        Status::NoFreeBlock,
        Status::BlocksOutOfMemory,
        Status::CacheIncompatible,
        Status::CacheKeyAlreadyExist,
        Status::CopyCacheFailed,
        Status::CacheIdAlreadyExist,
        Status::ExistLink,
        Status::FeatureNotEnabled,
        Status::Timeout,
        Status::LinkBusy,
        Status::OutOfMemory,
        Status::DeviceMemError,
        Status::SuspectRemoteError,
        Status::Success,
    ];

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

    /// The documented name, e.g. `"LLM_PARAM_INVALID"`.
    pub fn name(self) -> &'static str {
        match self {
            Status::Success => "LLM_SUCCESS",
            Status::Failed => "LLM_FAILED",
            Status::WaitProcessTimeout => "LLM_WAIT_PROCESS_TIMEOUT",
            Status::KvCacheNotExist => "LLM_KV_CACHE_NOT_EXIST",
            Status::RepeatRequest => "LLM_REPEAT_REQUEST",
            Status::RequestAlreadyCompleted => "LLM_REQUEST_ALREADY_COMPLETED",
            Status::ParamInvalid => "LLM_PARAM_INVALID",
            Status::EngineFinalized => "LLM_ENGINE_FINALIZED",
            Status::NotYetLink => "LLM_NOT_YET_LINK",
            Status::AlreadyLink => "LLM_ALREADY_LINK",
            Status::LinkFailed => "LLM_LINK_FAILED",
            Status::UnlinkFailed => "LLM_UNLINK_FAILED",
            Status::NotifyPromptUnlinkFailed => "LLM_NOTIFY_PROMPT_UNLINK_FAILED",
            Status::ClusterNumExceedLimit => "LLM_CLUSTER_NUM_EXCEED_LIMIT",
            Status::ProcessingLink => "LLM_PROCESSING_LINK",
            Status::DeviceOutOfMemory => "LLM_DEVICE_OUT_OF_MEMORY",
            Status::PrefixAlreadyExist => "LLM_PREFIX_ALREADY_EXIST",
            Status::PrefixNotExist => "LLM_PREFIX_NOT_EXIST",
            Status::SeqLenOverLimit => "LLM_SEQ_LEN_OVER_LIMIT",
            Status::NoFreeBlock => "LLM_NO_FREE_BLOCK",
            Status::BlocksOutOfMemory => "LLM_BLOCKS_OUT_OF_MEMORY",
            Status::CacheIncompatible => "LLM_CACHE_INCOMPATIBLE",
            Status::CacheKeyAlreadyExist => "LLM_CACHE_KEY_ALREADY_EXIST",
            Status::CopyCacheFailed => "LLM_COPY_CACHE_FAILED",
            Status::CacheIdAlreadyExist => "LLM_CACHE_ID_ALREADY_EXIST",
            Status::ExistLink => "LLM_EXIST_LINK",
            Status::FeatureNotEnabled => "LLM_FEATURE_NOT_ENABLED",
            Status::Timeout => "LLM_TIMEOUT",
            Status::LinkBusy => "LLM_LINK_BUSY",
            Status::OutOfMemory => "LLM_OUT_OF_MEMORY",
            Status::DeviceMemError => "LLM_DEVICE_MEM_ERROR",
            Status::SuspectRemoteError => "LLM_SUSPECT_REMOTE_ERROR",
        }
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

    #[test]
    fn documented_values() {
        assert_eq!(Status::ParamInvalid.code(), 0x5010B005);
        assert_eq!(Status::OutOfMemory.code(), 0x5010B01C);
        assert_eq!(Status::Failed.code(), u32::MAX);
        assert_eq!(Status::DeviceMemError.code(), 507053);
        assert_eq!(Status::from_code(0x5010B018), Status::ExistLink);
        assert_eq!(Status::from_code(12345), Status::Failed);
    }

    #[test]
    fn names_round_trip() {
        for s in Status::ALL {
            assert_eq!(Status::from_code(s.code()), s);
            assert!(s.name().starts_with("LLM_"));
        }
    }
}
