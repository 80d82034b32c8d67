// The init option keys, written into llmdd.h as `LLMDD_OPTION_*` string
// macros. cbindgen has no string constants, so build.rs `include!`s this file
// and writes the macros itself; the crate uses the same table in its tests.
// Plain comments only: the file is included as items into build.rs.

/// `(macro name, option key, one-line description)` of every option llmdd
/// interprets (`src/datadist/options.rs`; values in docs/options.md).
pub const OPTION_KEYS: &[(&str, &str, &str)] = &[
    (
        "LLMDD_OPTION_DEVICE_ID",
        "llm.DeviceId",
        "Device id (required; C++ OPTION_DEVICE_ID).",
    ),
    (
        "LLMDD_OPTION_GE_DEVICE_ID",
        "ge.exec.deviceId",
        "Device id, Python's spelling.",
    ),
    (
        "LLMDD_OPTION_LISTEN_IP_INFO",
        "llm.ListenIpInfo",
        "\"ip:port\" to listen on (C++ OPTION_LISTEN_IP_INFO).",
    ),
    (
        "LLMDD_OPTION_SYNC_KV_CACHE_WAIT_TIME",
        "llm.SyncKvCacheWaitTime",
        "Transfer timeout in ms (C++ OPTION_SYNC_CACHE_WAIT_TIME).",
    ),
    (
        "LLMDD_OPTION_ENABLE_CACHE_MANAGER",
        "llm.EnableCacheManager",
        "\"1\" (default) / \"0\" (v1 engine: refused).",
    ),
    (
        "LLMDD_OPTION_ENABLE_REMOTE_CACHE_ACCESSIBLE",
        "llm.EnableRemoteCacheAccessible",
        "\"1\": remote-cache-accessible mode (push).",
    ),
    (
        "LLMDD_OPTION_LOCAL_COMM_RES",
        "llm.LocalCommRes",
        "Local communication resource JSON (C++ OPTION_LOCAL_COMM_RES).",
    ),
    (
        "LLMDD_OPTION_TRANSFER_BACKEND",
        "llm.TransferBackend",
        "\"hixl\" (C++ OPTION_TRANSFER_BACKEND).",
    ),
    (
        "LLMDD_OPTION_GLOBAL_RESOURCE_CONFIG",
        "llm.GlobalResourceConfig",
        "JSON object (C++ OPTION_GLOBAL_RESOURCE_CONFIG).",
    ),
    (
        "LLMDD_OPTION_RDMA_TRAFFIC_CLASS",
        "llm.RdmaTrafficClass",
        "RDMA traffic class (acl backend).",
    ),
    (
        "LLMDD_OPTION_RDMA_SERVICE_LEVEL",
        "llm.RdmaServiceLevel",
        "RDMA service level (acl backend).",
    ),
    (
        "LLMDD_OPTION_LINK_TOTAL_TIME",
        "llm.LinkTotalTime",
        "Rank-table link budget in seconds.",
    ),
    (
        "LLMDD_OPTION_LINK_RETRY_COUNT",
        "llm.LinkRetryCount",
        "Attempts per cluster in link_clusters.",
    ),
    (
        "LLMDD_OPTION_MEM_POOL_CONFIG",
        "llm.MemPoolConfig",
        "Device pool JSON for allocate_cache.",
    ),
    (
        "LLMDD_OPTION_HOST_MEM_POOL_CONFIG",
        "llm.HostMemPoolConfig",
        "Host pool JSON for allocate_cache.",
    ),
    (
        "LLMDD_OPTION_BUF_POOL_CFG",
        "llm.BufPoolCfg",
        "v1 engine only: validated, no effect (C++ OPTION_BUF_POOL_CFG).",
    ),
    (
        "LLMDD_OPTION_ENABLE_SWITCH_ROLE",
        "llm.EnableSwitchRole",
        "Validated, no effect (C++ OPTION_ENABLE_SET_ROLE).",
    ),
    (
        "LLMDD_OPTION_ROLE",
        "llm.Role",
        "\"Prompt\"/\"Decoder\"/\"Mix\"; must match the instance's role.",
    ),
    (
        "LLMDD_OPTION_BACKEND",
        "llmdd.Backend",
        "\"auto\" (default), \"host\" or \"acl\".",
    ),
    (
        "LLMDD_OPTION_ASCEND_LIB_DIR",
        "llmdd.AscendLibDir",
        "Directory of libascendcl.so / libhccl.so.",
    ),
    (
        "LLMDD_OPTION_SAME_HOST",
        "llmdd.SameHost",
        "\"auto\" (default) or \"off\" (force TCP).",
    ),
    (
        "LLMDD_OPTION_DATA_CONNECTIONS",
        "llmdd.DataConnections",
        "TCP connections a transfer stripes over (1..8).",
    ),
    (
        "LLMDD_OPTION_MAX_LINKS",
        "llmdd.MaxLinks",
        "Links per instance (default 512).",
    ),
    (
        "LLMDD_OPTION_BUSY_POLL_US",
        "llmdd.BusyPollUs",
        "Spin before sleeping on a reply, in us.",
    ),
    (
        "LLMDD_OPTION_RANK_TABLE_DEFAULT_PORT",
        "llmdd.RankTableDefaultPort",
        "Port of a rank-table member without one (default 16666).",
    ),
    (
        "LLMDD_OPTION_MAX_REGISTERED_ADDRS",
        "llmdd.MaxRegisteredAddrs",
        "Registered tensor addresses at once (default 1024).",
    ),
    (
        "LLMDD_OPTION_STRICT_OPTIONS",
        "llmdd.StrictOptions",
        "\"1\": unknown llm. keys fail init instead of being ignored.",
    ),
    // proven identity, access and link authentication (issue 9)
    (
        "LLMDD_OPTION_LINK_SECRET",
        "llmdd.LinkSecret",
        "Shared link secret (>= 16 bytes): mutual link authentication.",
    ),
    (
        "LLMDD_OPTION_LINK_SECRET_FILE",
        "llmdd.LinkSecretFile",
        "File holding the shared link secret.",
    ),
    (
        "LLMDD_OPTION_PEER_POOL_MAX_BYTES",
        "llmdd.PeerPoolMaxBytes",
        "Largest same-host peer pool mapped (default 64 GiB).",
    ),
    // Network limits and timeouts (docs/security.md).
    (
        "LLMDD_OPTION_MAX_CONNS_PER_LINK",
        "llmdd.MaxConnsPerLink",
        "Connections one link may have on the server (default 32).",
    ),
    (
        "LLMDD_OPTION_MAX_CONNS_PER_PEER",
        "llmdd.MaxConnsPerPeer",
        "Connections one peer address may hold open (default 1024).",
    ),
    (
        "LLMDD_OPTION_IO_TIMEOUT_MS",
        "llmdd.IoTimeoutMs",
        "Bound on a served request's frame and I/O, in ms (default 30000).",
    ),
    (
        "LLMDD_OPTION_DEAD_PEER_TIMEOUT_MS",
        "llmdd.DeadPeerTimeoutMs",
        "Keepalive bound for a silent peer, in ms (default 10000).",
    ),
    // acl backend (issue 13)
    (
        "LLMDD_OPTION_HCCN_CONF",
        "llmdd.HccnConf",
        "acl: file of device NIC addresses (default /etc/hccn.conf).",
    ),
    (
        "LLMDD_OPTION_HCCL_PREPARE_TIMEOUT",
        "llmdd.HcclPrepareTimeout",
        "acl: ms the listening side waits in HcclCommPrepare (120000).",
    ),
];
