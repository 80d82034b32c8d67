// The one status table: every LLM-DataDist status llmdd knows, in the
// documented numbering (../shared/spec/llm-datadist-api.md; 507053 and 507057
// are CANN's ACL_ERROR_RT_* values, as the reference reports them).
//
// Each row is `Variant = code, "LLM_NAME", [C constant or nothing], "doc";`.
// `src/status.rs` expands it into the `Status` enum, `Status::ALL`, the names
// and the `LLMDD_*` Rust constants; build.rs `include!`s this same file and
// writes the `#define LLMDD_*` status macros of include/llmdd.h from it.
// Rows without a C constant are internal or legacy codes the C API does not
// name (they still map from and to their numbers). A retired number stays as
// a comment, never reused. Plain comments only: build.rs includes the file.

statuses! {
    Success = 0x0, "LLM_SUCCESS", [LLMDD_SUCCESS],
        "Success.";
    Failed = 0xFFFF_FFFF, "LLM_FAILED", [LLMDD_FAILED],
        "Generic failure; also returned by calls before init / after finalize.";
    WaitProcessTimeout = 0x5010_B001, "LLM_WAIT_PROCESS_TIMEOUT", [LLMDD_WAIT_PROCESS_TIMEOUT],
        "Legacy: request waited too long.";
    KvCacheNotExist = 0x5010_B002, "LLM_KV_CACHE_NOT_EXIST", [LLMDD_KV_CACHE_NOT_EXIST],
        "Cache does not exist (local id, or the peer's key/id/slot).";
    RepeatRequest = 0x5010_B003, "LLM_REPEAT_REQUEST", [LLMDD_REPEAT_REQUEST],
        "Legacy: repeated request.";
    RequestAlreadyCompleted = 0x5010_B004, "LLM_REQUEST_ALREADY_COMPLETED", [LLMDD_REQUEST_ALREADY_COMPLETED],
        "Legacy: request already completed.";
    ParamInvalid = 0x5010_B005, "LLM_PARAM_INVALID", [LLMDD_PARAM_INVALID],
        "Invalid argument, option or state.";
    EngineFinalized = 0x5010_B006, "LLM_ENGINE_FINALIZED", [LLMDD_ENGINE_FINALIZED],
        "Legacy: engine finalized.";
    NotYetLink = 0x5010_B007, "LLM_NOT_YET_LINK", [LLMDD_NOT_YET_LINK],
        "No link to the peer (or rank-table link not ready, or unknown comm id).";
    AlreadyLink = 0x5010_B008, "LLM_ALREADY_LINK", [LLMDD_ALREADY_LINK],
        "A link to that cluster already exists.";
    LinkFailed = 0x5010_B009, "LLM_LINK_FAILED", [LLMDD_LINK_FAILED],
        "Link setup failed.";
    UnlinkFailed = 0x5010_B00A, "LLM_UNLINK_FAILED", [LLMDD_UNLINK_FAILED],
        "Unlink failed; force-unlink both ends.";
    NotifyPromptUnlinkFailed = 0x5010_B00B, "LLM_NOTIFY_PROMPT_UNLINK_FAILED", [LLMDD_NOTIFY_PROMPT_UNLINK_FAILED],
        "Could not notify the prompt side of an unlink.";
    ClusterNumExceedLimit = 0x5010_B00C, "LLM_CLUSTER_NUM_EXCEED_LIMIT", [LLMDD_CLUSTER_NUM_EXCEED_LIMIT],
        "More than 16 clusters in one (un)link call.";
    ProcessingLink = 0x5010_B00D, "LLM_PROCESSING_LINK", [LLMDD_PROCESSING_LINK],
        "Another (un)link is in progress (never returned by llmdd).";
    DeviceOutOfMemory = 0x5010_B00E, "LLM_DEVICE_OUT_OF_MEMORY", [LLMDD_DEVICE_OUT_OF_MEMORY],
        "Device memory exhausted.";
    PrefixAlreadyExist = 0x5010_B00F, "LLM_PREFIX_ALREADY_EXIST", [],
        "Legacy: prefix already exists.";
    PrefixNotExist = 0x5010_B010, "LLM_PREFIX_NOT_EXIST", [],
        "Legacy: prefix does not exist.";
    SeqLenOverLimit = 0x5010_B011, "LLM_SEQ_LEN_OVER_LIMIT", [],
        "Legacy: sequence length over limit.";
    NoFreeBlock = 0x5010_B012, "LLM_NO_FREE_BLOCK", [],
        "Legacy: no free block.";
    BlocksOutOfMemory = 0x5010_B013, "LLM_BLOCKS_OUT_OF_MEMORY", [],
        "Legacy: blocks out of memory.";
    CacheIncompatible = 0x5010_B014, "LLM_CACHE_INCOMPATIBLE", [],
        "Internal: cache incompatible.";
    CacheKeyAlreadyExist = 0x5010_B015, "LLM_CACHE_KEY_ALREADY_EXIST", [],
        "Internal: cache key already exists.";
    CopyCacheFailed = 0x5010_B016, "LLM_COPY_CACHE_FAILED", [],
        "Internal: copy failed.";
    CacheIdAlreadyExist = 0x5010_B017, "LLM_CACHE_ID_ALREADY_EXIST", [],
        "Internal: cache id already exists.";
    ExistLink = 0x5010_B018, "LLM_EXIST_LINK", [LLMDD_EXIST_LINK],
        "switch_role or unregister while links exist.";
    FeatureNotEnabled = 0x5010_B019, "LLM_FEATURE_NOT_ENABLED", [LLMDD_FEATURE_NOT_ENABLED],
        "Option, pool, backend or placement not available.";
    Timeout = 0x5010_B01A, "LLM_TIMEOUT", [LLMDD_TIMEOUT],
        "A transfer or wait timed out (re-link after a transfer timeout).";
    LinkBusy = 0x5010_B01B, "LLM_LINK_BUSY", [LLMDD_LINK_BUSY],
        "Reserved: conflicting use of a link (never returned by llmdd).";
    OutOfMemory = 0x5010_B01C, "LLM_OUT_OF_MEMORY", [LLMDD_OUT_OF_MEMORY],
        "Memory pool or system memory exhausted.";
    DeviceMemError = 507_053, "LLM_DEVICE_MEM_ERROR", [LLMDD_DEVICE_MEM_ERROR],
        "Uncorrectable device memory error.";
    SuspectRemoteError = 507_057, "LLM_SUSPECT_REMOTE_ERROR", [LLMDD_SUSPECT_REMOTE_ERROR],
        "Suspected remote memory fault.";
}
