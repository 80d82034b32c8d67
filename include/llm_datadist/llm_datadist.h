/* llmdd: CANN's C++ LLM-DataDist API (llm_datadist::LlmDataDist), header-only
 * over the C ABI of llmdd.h. Code written against CANN's
 * llm_datadist/llm_datadist.h compiles with -I<prefix>/include and links with
 * -lllmdd. Names, signatures, default arguments, constants and status values
 * are CANN's; where llmdd behaves differently (no NPU: device memory is host
 * memory, and a few more) docs/cpp.md says so.
 *
 * Error text: every failing call leaves a message in llmdd_last_error_message()
 * (thread-local; CANN code reads aclGetRecentErrMsg() instead). C++11 or later. */
#ifndef LLMDD_LLM_DATADIST_LLM_DATADIST_H
#define LLMDD_LLM_DATADIST_LLM_DATADIST_H

#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "llm_datadist/llmdd_ge.h"
#include "llmdd.h"

#ifdef FUNC_VISIBILITY
#define ASCEND_FUNC_VISIBILITY __attribute__((visibility("default")))
#else
#define ASCEND_FUNC_VISIBILITY
#endif

namespace llm_datadist {

constexpr uint8_t kDefaultTensorNumPerLayer = 2U;

using Status = ge::Status;
using AscendString = ge::AscendString;
using DataType = ge::DataType;

// Initialize / SetRole option keys.
constexpr const char OPTION_LISTEN_IP_INFO[] = "llm.ListenIpInfo";
constexpr const char OPTION_DEVICE_ID[] = "llm.DeviceId";
constexpr const char OPTION_SYNC_CACHE_WAIT_TIME[] = "llm.SyncKvCacheWaitTime";
constexpr const char OPTION_BUF_POOL_CFG[] = "llm.BufPoolCfg";
constexpr const char OPTION_ENABLE_SET_ROLE[] = "llm.EnableSwitchRole";
constexpr const char OPTION_LOCAL_COMM_RES[] = "llm.LocalCommRes";
constexpr const char OPTION_TRANSFER_BACKEND[] = "llm.TransferBackend";
constexpr const char OPTION_GLOBAL_RESOURCE_CONFIG[] = "llm.GlobalResourceConfig";

// Status codes (the values of llmdd.h's LLMDD_* statuses).
constexpr Status LLM_SUCCESS = 0x0U;
constexpr Status LLM_FAILED = 0xFFFFFFFFU;
constexpr Status LLM_WAIT_PROC_TIMEOUT = 0x5010B001U;
constexpr Status LLM_KV_CACHE_NOT_EXIST = 0x5010B002U;
constexpr Status LLM_PARAM_INVALID = 0x5010B005U;
constexpr Status LLM_NOT_YET_LINK = 0x5010B007U;
constexpr Status LLM_ALREADY_LINK = 0x5010B008U;
constexpr Status LLM_LINK_FAILED = 0x5010B009U;
constexpr Status LLM_UNLINK_FAILED = 0x5010B00AU;
constexpr Status LLM_NOTIFY_PROMPT_UNLINK_FAILED = 0x5010B00BU;
constexpr Status LLM_CLUSTER_NUM_EXCEED_LIMIT = 0x5010B00CU;
constexpr Status LLM_PROCESSING_LINK = 0x5010B00DU;
constexpr Status LLM_DEVICE_OUT_OF_MEMORY = 0x5010B00EU;
constexpr Status LLM_EXIST_LINK = 0x5010B018U;
constexpr Status LLM_FEATURE_NOT_ENABLED = 0x5010B019U;
constexpr Status LLM_TIMEOUT = 0x5010B01AU;
constexpr Status LLM_LINK_BUSY = 0x5010B01BU;
constexpr Status LLM_OUT_OF_MEMORY = 0x5010B01CU;

// Data types.
using ge::DT_BF16;
using ge::DT_BOOL;
using ge::DT_COMPLEX128;
using ge::DT_COMPLEX32;
using ge::DT_COMPLEX64;
using ge::DT_DOUBLE;
using ge::DT_DUAL;
using ge::DT_DUAL_SUB_INT8;
using ge::DT_DUAL_SUB_UINT8;
using ge::DT_FLOAT;
using ge::DT_FLOAT16;
using ge::DT_FLOAT4_E1M2;
using ge::DT_FLOAT4_E2M1;
using ge::DT_FLOAT6_E2M3;
using ge::DT_FLOAT6_E3M2;
using ge::DT_FLOAT8_E4M3FN;
using ge::DT_FLOAT8_E5M2;
using ge::DT_FLOAT8_E8M0;
using ge::DT_HIFLOAT8;
using ge::DT_INT16;
using ge::DT_INT2;
using ge::DT_INT32;
using ge::DT_INT4;
using ge::DT_INT64;
using ge::DT_INT8;
using ge::DT_QINT16;
using ge::DT_QINT32;
using ge::DT_QINT8;
using ge::DT_QUINT16;
using ge::DT_QUINT8;
using ge::DT_RESOURCE;
using ge::DT_STRING;
using ge::DT_STRING_REF;
using ge::DT_UINT1;
using ge::DT_UINT16;
using ge::DT_UINT2;
using ge::DT_UINT32;
using ge::DT_UINT64;
using ge::DT_UINT8;
using ge::DT_UNDEFINED;
using ge::DT_VARIANT;

/// One endpoint: an IPv4 (or, in llmdd, IPv6) literal and a port.
struct IpInfo {
  AscendString ip;
  uint16_t port = 0U;
  uint8_t reserved[128];
};

/// A peer of LinkLlmClusters / UnlinkLlmClusters.
struct ClusterInfo {
  uint64_t remote_cluster_id = 0U;
  int32_t remote_role_type = 0;
  std::vector<IpInfo> local_ip_infos;
  std::vector<IpInfo> remote_ip_infos;
  uint8_t reserved[128];
};

enum class LlmRole : int32_t { kPrompt = 1, kDecoder = 2, kMix = 3, kEnd };

/// A cache of a remote cluster by id, and a batch slot of it.
struct CacheIndex {
  uint64_t cluster_id;
  int64_t cache_id;
  uint32_t batch_index;
  uint8_t reserved[128];
};

enum class CachePlacement : uint32_t {
  kHost = 0U,
  kDevice = 1U,
};

/// `num_tensors` tensors of one shape and data type.
struct CacheDesc {
  CachePlacement placement = CachePlacement::kDevice;
  uint32_t num_tensors = 0U;
  DataType data_type = DT_UNDEFINED;
  std::vector<int64_t> shape;
  uint8_t reserved[128];
};

/// A registered or allocated cache; transfers read only `cache_id` (and the
/// push calls also `cache_desc.placement` / `cache_desc.num_tensors`).
struct Cache {
  int64_t cache_id = -1;
  std::vector<uintptr_t> tensor_addrs;
  CacheDesc cache_desc;
  uint8_t reserved[128];
};

/// Inclusive layer ranges `(first, second)`; `first = -1` selects every layer.
struct KvCacheExtParam {
  std::pair<int32_t, int32_t> src_layer_range = {-1, -1};
  std::pair<int32_t, int32_t> dst_layer_range{-1, -1};
  uint8_t tensor_num_per_layer = kDefaultTensorNumPerLayer;
  uint8_t reserved[127];
};

/// Registration options (reserved).
struct RegisterCfg {
  uint8_t reserved[128] = {0};
};

namespace detail {

/// Records `message` as the thread's last error and returns `status`.
inline Status Fail(Status status, const std::string &message) {
  llmdd_set_last_error_message(message.c_str());
  return status;
}

/// Borrowed `{key, value}` pairs of an option map (valid while `options` lives),
/// with `forced` keys replacing what the caller gave for them.
inline std::vector<llmdd_option_t> Options(const std::map<AscendString, AscendString> &options,
                                           const std::vector<std::pair<const char *, const char *>> &forced) {
  std::vector<llmdd_option_t> out;
  out.reserve(options.size() + forced.size());
  for (const auto &kv : options) {
    bool replaced = false;
    for (const auto &f : forced) {
      replaced = replaced || kv.first == f.first;
    }
    if (!replaced) {
      out.push_back(llmdd_option_t{kv.first.GetString(), kv.second.GetString()});
    }
  }
  for (const auto &f : forced) {
    out.push_back(llmdd_option_t{f.first, f.second});
  }
  return out;
}

/// C views of a cluster list: the ip arrays live in `ips` (kept by the caller).
inline std::vector<llmdd_cluster_info_t> Clusters(const std::vector<ClusterInfo> &clusters,
                                                  std::vector<std::vector<llmdd_ip_info_t>> &ips) {
  std::vector<llmdd_cluster_info_t> out;
  ips.clear();
  ips.reserve(clusters.size() * 2U);
  for (const auto &c : clusters) {
    llmdd_cluster_info_t ci;
    std::memset(&ci, 0, sizeof ci);
    ci.remote_cluster_id = c.remote_cluster_id;
    ci.remote_role_type = c.remote_role_type;
    for (int side = 0; side < 2; ++side) {
      const std::vector<IpInfo> &from = side == 0 ? c.local_ip_infos : c.remote_ip_infos;
      ips.emplace_back();
      for (const auto &ip : from) {
        ips.back().push_back(llmdd_ip_info(ip.ip.GetString(), ip.port));
      }
      if (side == 0) {
        ci.local_ip_infos = ips.back().data();
        ci.num_local_ip_infos = ips.back().size();
      } else {
        ci.remote_ip_infos = ips.back().data();
        ci.num_remote_ip_infos = ips.back().size();
      }
    }
    out.push_back(ci);
  }
  return out;
}

/// The C description of `desc`. A shape of more than 32 dims is passed with
/// its true length so that the library reports it.
inline llmdd_cache_desc_t Desc(const CacheDesc &desc) {
  llmdd_cache_desc_t d = llmdd_cache_desc_init();
  d.placement = static_cast<uint32_t>(desc.placement);
  d.num_tensors = desc.num_tensors;
  d.data_type = static_cast<uint32_t>(desc.data_type);
  d.num_dims = static_cast<uint32_t>(desc.shape.size());
  for (size_t i = 0; i < desc.shape.size() && i < 32U; ++i) {
    d.shape[i] = desc.shape[i];
  }
  d.batch_dim_index = 0;
  d.seq_len_dim_index = -1;
  return d;
}

/// The reference's KvCacheExtParam checks (ranges >= -1 and ordered,
/// tensor_num_per_layer > 0; for push also equally long ranges).
inline Status CheckExt(const KvCacheExtParam &p, bool same_size, const char *call) {
  const auto &s = p.src_layer_range;
  const auto &d = p.dst_layer_range;
  if (s.first < -1 || s.second < -1 || s.first > s.second) {
    return Fail(LLMDD_PARAM_INVALID, std::string(call) + ": invalid src_layer_range [" + std::to_string(s.first) +
                                         ", " + std::to_string(s.second) + "] (need -1 <= first <= second)");
  }
  if (d.first < -1 || d.second < -1 || d.first > d.second) {
    return Fail(LLMDD_PARAM_INVALID, std::string(call) + ": invalid dst_layer_range [" + std::to_string(d.first) +
                                         ", " + std::to_string(d.second) + "] (need -1 <= first <= second)");
  }
  if (p.tensor_num_per_layer == 0U) {
    return Fail(LLMDD_PARAM_INVALID, std::string(call) + ": tensor_num_per_layer must be > 0");
  }
  if (same_size && (s.second - s.first) != (d.second - d.first)) {
    return Fail(LLMDD_PARAM_INVALID, std::string(call) + ": src_layer_range and dst_layer_range differ in size");
  }
  return LLM_SUCCESS;
}

/// Pull layers: both ranges given → inclusive ranges made half-open; either
/// one -1 → every layer (as the reference ignores a one-sided range).
inline llmdd_layer_range_t PullLayers(const KvCacheExtParam &p) {
  const auto &s = p.src_layer_range;
  const auto &d = p.dst_layer_range;
  if (s.first < 0 || d.first < 0) {
    return llmdd_layer_range(-1, -1, -1, -1, p.tensor_num_per_layer);
  }
  return llmdd_layer_range(s.first, s.second + 1, d.first, d.second + 1, p.tensor_num_per_layer);
}

/// Push layers as the reference's PushData walks them: src first..second to
/// dst first.., or, with src first = -1, every layer the caller's
/// `cache_desc.num_tensors` holds (a trailing partial layer counts as one).
inline Status PushLayers(const Cache &src, const KvCacheExtParam &p, const char *call, llmdd_layer_range_t &out) {
  const auto &s = p.src_layer_range;
  const auto &d = p.dst_layer_range;
  if (s.first >= 0) {
    if (d.first < 0) {
      return Fail(LLMDD_PARAM_INVALID, std::string(call) + ": dst_layer_range must be given with src_layer_range");
    }
    out = llmdd_layer_range(s.first, s.second + 1, d.first, d.first + (s.second - s.first) + 1,
                            p.tensor_num_per_layer);
    return LLM_SUCCESS;
  }
  const uint32_t n = src.cache_desc.num_tensors;
  if (n == 0U) {
    return Fail(LLMDD_PARAM_INVALID,
                std::string(call) + ": src_layer_range -1 needs src_cache.cache_desc.num_tensors > 0");
  }
  const uint32_t t = p.tensor_num_per_layer;
  int32_t max_layer = 0;
  if (n >= t) {
    max_layer = static_cast<int32_t>(n % t == 0U ? n / t - 1U : n / t);
  }
  out = llmdd_layer_range(0, max_layer + 1, 0, max_layer + 1, p.tensor_num_per_layer);
  return LLM_SUCCESS;
}

/// Runs a link/unlink call and copies its per-cluster statuses to `rets`
/// (untouched when the call failed before linking, as in the C API).
template <typename F>
inline Status PerCluster(size_t n, std::vector<Status> &rets, F call) {
  const uint32_t unset = LLMDD_TASK_RESULT_NOT_STARTED;  // never a per-cluster status
  std::vector<uint32_t> out(n, unset);
  const Status ret = call(out.empty() ? nullptr : out.data());
  if (!out.empty() && out[0] != unset) {
    rets.assign(out.begin(), out.end());
  }
  return ret;
}

}  // namespace detail

/// An LLM-DataDist instance (CANN's class). Not copyable.
class ASCEND_FUNC_VISIBILITY LlmDataDist {
 public:
  /// Creates an instance of `role` with `cluster_id` (no I/O until Initialize).
  LlmDataDist(uint64_t cluster_id, LlmRole role) : cluster_id_(cluster_id), role_(role) {
    if (llmdd_create(static_cast<uint32_t>(role), cluster_id, &inst_) != LLMDD_SUCCESS) {
      inst_ = nullptr;  // an invalid role: Initialize reports it
    }
  }

  /// Finalizes (if needed) and releases the instance.
  ~LlmDataDist() { llmdd_destroy(inst_); }

  LlmDataDist(const LlmDataDist &) = delete;
  LlmDataDist &operator=(const LlmDataDist &) = delete;

  /// Initializes with `options` (OPTION_* keys; llmdd's own llm./llmdd. keys
  /// too). Cache-manager and remote-cache-accessible mode are always on, as in
  /// CANN. A second call on an initialized instance succeeds.
  Status Initialize(const std::map<AscendString, AscendString> &options) {
    if (inst_ == nullptr) {
      return detail::Fail(LLM_PARAM_INVALID,
                          "Initialize: invalid role " + std::to_string(static_cast<int32_t>(role_)));
    }
    std::vector<std::pair<const char *, const char *>> forced = {{"llm.EnableCacheManager", "1"},
                                                                 {"llm.EnableRemoteCacheAccessible", "1"}};
    // OPTION_DEVICE_ID wins over a ge.exec.deviceId the caller also gave.
    const auto dev = options.find(AscendString(OPTION_DEVICE_ID));
    if (dev != options.end()) {
      forced.emplace_back("ge.exec.deviceId", dev->second.GetString());
    }
    const std::vector<llmdd_option_t> opts = detail::Options(options, forced);
    return llmdd_init(inst_, opts.data(), opts.size());
  }

  /// Tears down every link, registration and thread. Idempotent.
  void Finalize() {
    if (inst_ != nullptr) {
      (void)llmdd_finalize(inst_);
    }
  }

  /// Changes the role; `options` may hold OPTION_LISTEN_IP_INFO to listen on
  /// an endpoint (without it a listening instance stops listening).
  Status SetRole(LlmRole role, const std::map<AscendString, AscendString> &options = {}) {
    if (inst_ == nullptr) {
      return NotInitialized("SetRole");
    }
    const std::vector<llmdd_option_t> opts = detail::Options(options, {});
    const Status ret = llmdd_switch_role(inst_, static_cast<uint32_t>(role), opts.data(), opts.size());
    if (ret == LLM_SUCCESS) {
      role_ = role;
    }
    return ret;
  }

  /// Links to each cluster's `remote_ip_infos[0]`; `rets` gets one status per
  /// cluster. The default timeout is CANN C++'s 1000 ms.
  Status LinkLlmClusters(const std::vector<ClusterInfo> &clusters, std::vector<Status> &rets,
                         int32_t timeout_in_millis = 1000) {
    if (inst_ == nullptr) {
      return NotInitialized("LinkLlmClusters");
    }
    std::vector<std::vector<llmdd_ip_info_t>> ips;
    const std::vector<llmdd_cluster_info_t> cs = detail::Clusters(clusters, ips);
    return detail::PerCluster(cs.size(), rets, [&](uint32_t *out) {
      return llmdd_link_clusters(inst_, cs.data(), cs.size(), timeout_in_millis, out);
    });
  }

  /// Unlinks each cluster (`force_flag`: only the local side, on both ends).
  Status UnlinkLlmClusters(const std::vector<ClusterInfo> &clusters, std::vector<Status> &rets,
                           int32_t timeout_in_millis = 1000, bool force_flag = false) {
    if (inst_ == nullptr) {
      return NotInitialized("UnlinkLlmClusters");
    }
    std::vector<std::vector<llmdd_ip_info_t>> ips;
    const std::vector<llmdd_cluster_info_t> cs = detail::Clusters(clusters, ips);
    return detail::PerCluster(cs.size(), rets, [&](uint32_t *out) {
      return llmdd_unlink_clusters(inst_, cs.data(), cs.size(), timeout_in_millis, force_flag, out);
    });
  }

  /// Allocates a batch cache from the pool of `cache_desc.placement`
  /// (llm.MemPoolConfig / llm.HostMemPoolConfig at Initialize; without one:
  /// LLM_FEATURE_NOT_ENABLED, which is all CANN's C++ API ever returns).
  Status AllocateCache(const CacheDesc &cache_desc, Cache &cache) {
    if (inst_ == nullptr) {
      return NotInitialized("AllocateCache");
    }
    const llmdd_cache_desc_t d = detail::Desc(cache_desc);
    llmdd_cache_t c = llmdd_cache_init();
    const Status ret = llmdd_allocate_cache(inst_, &d, nullptr, 0, &c);
    if (ret == LLM_SUCCESS) {
      cache.cache_id = c.cache_id;
      cache.tensor_addrs.assign(c.tensor_addrs, c.tensor_addrs + c.num_tensor_addrs);
      cache.cache_desc = cache_desc;
    }
    return ret;
  }

  /// Frees an allocated cache; an unknown or already freed id succeeds
  /// (without a pool: LLM_FEATURE_NOT_ENABLED, as in CANN).
  Status DeallocateCache(int64_t cache_id) {
    if (inst_ == nullptr) {
      return NotInitialized("DeallocateCache");
    }
    return llmdd_deallocate_cache(inst_, cache_id);
  }

  /// Pulls slot `src_cache_index.batch_index` of a remote cache into slot
  /// `batch_index` of `dst_cache`; `size` -1 = the whole (local) slot.
  Status PullKvCache(const CacheIndex &src_cache_index, const Cache &dst_cache, uint32_t batch_index = 0U,
                     int64_t size = -1, const KvCacheExtParam &ext_param = {}) {
    if (inst_ == nullptr) {
      return NotInitialized("PullKvCache");
    }
    if (size != -1 && size <= 0) {
      return detail::Fail(LLM_PARAM_INVALID, "PullKvCache: size must be -1 or > 0 (got " + std::to_string(size) + ")");
    }
    const Status chk = detail::CheckExt(ext_param, false, "PullKvCache");
    if (chk != LLM_SUCCESS) {
      return chk;
    }
    const llmdd_cache_key_t key =
        llmdd_cache_key_by_id(src_cache_index.cluster_id, src_cache_index.cache_id, src_cache_index.batch_index);
    const llmdd_layer_range_t layers = detail::PullLayers(ext_param);
    return llmdd_pull_cache(inst_, &key, dst_cache.cache_id, batch_index, size, &layers);
  }

  /// Pulls blocks `src_blocks` of a remote cache into blocks `dst_blocks` of
  /// `dst_cache` (`src_cache_index.batch_index` must be 0).
  Status PullKvBlocks(const CacheIndex &src_cache_index, const Cache &dst_cache,
                      const std::vector<uint64_t> &src_blocks, const std::vector<uint64_t> &dst_blocks,
                      const KvCacheExtParam &ext_param = {}) {
    if (inst_ == nullptr) {
      return NotInitialized("PullKvBlocks");
    }
    if (src_cache_index.batch_index != 0U) {
      return detail::Fail(LLM_PARAM_INVALID, "PullKvBlocks: src_cache_index.batch_index must be 0 (got " +
                                                 std::to_string(src_cache_index.batch_index) + ")");
    }
    const Status chk = detail::CheckExt(ext_param, false, "PullKvBlocks");
    if (chk != LLM_SUCCESS) {
      return chk;
    }
    const llmdd_cache_key_t key = llmdd_cache_key_by_id(src_cache_index.cluster_id, src_cache_index.cache_id, 0U);
    const llmdd_layer_range_t layers = detail::PullLayers(ext_param);
    return llmdd_pull_blocks(inst_, &key, dst_cache.cache_id, src_blocks.data(), src_blocks.size(),
                             dst_blocks.data(), dst_blocks.size(), &layers);
  }

  /// Copies `size` bytes (-1: the rest of the slot) at `offset` of slot
  /// `src_batch_index` of `src_cache` to slot `dst_batch_index` of `dst_cache`.
  Status CopyKvCache(const Cache &src_cache, const Cache &dst_cache, uint32_t src_batch_index = 0U,
                     uint32_t dst_batch_index = 0U, uint64_t offset = 0U, int64_t size = -1) {
    if (inst_ == nullptr) {
      return NotInitialized("CopyKvCache");
    }
    return llmdd_copy_cache(inst_, dst_cache.cache_id, src_cache.cache_id, dst_batch_index, src_batch_index, offset,
                            size);
  }

  /// Copies blocks `src_blocks` to each list of `dst_blocks_list`: within one
  /// cache, or between a HOST and a DEVICE cache (llmdd_swap_blocks).
  Status CopyKvBlocks(const Cache &src_cache, const Cache &dst_cache, const std::vector<uint64_t> &src_blocks,
                      const std::vector<std::vector<uint64_t>> &dst_blocks_list) {
    if (inst_ == nullptr) {
      return NotInitialized("CopyKvBlocks");
    }
    std::vector<llmdd_block_pair_t> pairs;
    for (size_t l = 0; l < dst_blocks_list.size(); ++l) {
      const std::vector<uint64_t> &dst = dst_blocks_list[l];
      if (dst.size() != src_blocks.size()) {
        return detail::Fail(LLM_PARAM_INVALID, "CopyKvBlocks: dst_blocks_list[" + std::to_string(l) + "] has " +
                                                   std::to_string(dst.size()) + " blocks, src_blocks has " +
                                                   std::to_string(src_blocks.size()));
      }
      for (size_t j = 0; j < dst.size(); ++j) {
        pairs.push_back(llmdd_block_pair_t{src_blocks[j], dst[j]});
      }
    }
    if (src_cache.cache_id == dst_cache.cache_id) {
      return llmdd_copy_blocks(inst_, src_cache.cache_id, pairs.data(), pairs.size());
    }
    return llmdd_swap_blocks(inst_, src_cache.cache_id, nullptr, dst_cache.cache_id, nullptr, pairs.data(),
                             pairs.size());
  }

  /// Pushes slot `src_batch_index` of `src_cache` into the remote slot
  /// `dst_cache_index`, layer by layer (`size` must be -1).
  Status PushKvCache(const Cache &src_cache, const CacheIndex &dst_cache_index, uint32_t src_batch_index = 0U,
                     int64_t size = -1, const KvCacheExtParam &ext_param = {}) {
    if (inst_ == nullptr) {
      return NotInitialized("PushKvCache");
    }
    if (src_cache.cache_desc.placement != CachePlacement::kDevice) {
      return NotDevice("PushKvCache");
    }
    if (size != -1) {
      return detail::Fail(LLM_PARAM_INVALID, "PushKvCache: size must be -1 (got " + std::to_string(size) + ")");
    }
    llmdd_layer_range_t layers;
    const Status chk = CheckPush(src_cache, ext_param, "PushKvCache", layers);
    if (chk != LLM_SUCCESS) {
      return chk;
    }
    const llmdd_cache_key_t key =
        llmdd_cache_key_by_id(dst_cache_index.cluster_id, dst_cache_index.cache_id, dst_cache_index.batch_index);
    return llmdd_push_cache(inst_, &key, src_cache.cache_id, src_batch_index, size, &layers);
  }

  /// Pushes blocks `src_blocks` of `src_cache` into blocks `dst_blocks` of the
  /// remote cache `dst_cache_index` (batch_index 0), layer by layer.
  Status PushKvBlocks(const Cache &src_cache, const CacheIndex &dst_cache_index,
                      const std::vector<uint64_t> &src_blocks, const std::vector<uint64_t> &dst_blocks,
                      const KvCacheExtParam &ext_param = {}) {
    if (inst_ == nullptr) {
      return NotInitialized("PushKvBlocks");
    }
    if (src_cache.cache_desc.placement != CachePlacement::kDevice) {
      return NotDevice("PushKvBlocks");
    }
    if (src_blocks.empty()) {
      return detail::Fail(LLM_PARAM_INVALID, "PushKvBlocks: src_blocks is empty (push from a non-block cache is "
                                             "not supported)");
    }
    if (src_blocks.size() != dst_blocks.size()) {
      return detail::Fail(LLM_PARAM_INVALID, "PushKvBlocks: " + std::to_string(src_blocks.size()) +
                                                 " src_blocks but " + std::to_string(dst_blocks.size()) +
                                                 " dst_blocks");
    }
    if (dst_cache_index.batch_index != 0U) {
      return detail::Fail(LLM_PARAM_INVALID, "PushKvBlocks: dst_cache_index.batch_index must be 0 (got " +
                                                 std::to_string(dst_cache_index.batch_index) + ")");
    }
    llmdd_layer_range_t layers;
    const Status chk = CheckPush(src_cache, ext_param, "PushKvBlocks", layers);
    if (chk != LLM_SUCCESS) {
      return chk;
    }
    const llmdd_cache_key_t key = llmdd_cache_key_by_id(dst_cache_index.cluster_id, dst_cache_index.cache_id, 0U);
    return llmdd_push_blocks(inst_, &key, src_cache.cache_id, src_blocks.data(), src_blocks.size(),
                             dst_blocks.data(), dst_blocks.size(), &layers);
  }

  /// Registers `addrs` (one per tensor, each `prod(shape)` elements) as a
  /// cache usable as batch slots and as blocks; `cache_id` on success.
  Status RegisterKvCache(const CacheDesc &cache_desc, const std::vector<uint64_t> &addrs, const RegisterCfg &cfg,
                         int64_t &cache_id) {
    (void)cfg;
    if (inst_ == nullptr) {
      return NotInitialized("RegisterKvCache");
    }
    const llmdd_cache_desc_t d = detail::Desc(cache_desc);
    llmdd_cache_t c = llmdd_cache_init();
    const Status ret = llmdd_register_kv_cache(inst_, &d, addrs.data(), addrs.size(), &c);
    if (ret == LLM_SUCCESS) {
      cache_id = c.cache_id;
    }
    return ret;
  }

  /// Unregisters a cache (its memory stays the caller's); needs no live link.
  Status UnregisterKvCache(int64_t cache_id) {
    if (inst_ == nullptr) {
      return NotInitialized("UnregisterKvCache");
    }
    return llmdd_unregister_cache(inst_, cache_id);
  }

  // ---- llmdd extensions (not in CANN's API): link states and statistics,
  // over the C calls of the same names (docs/operating.md, docs/cpp.md).

  /// The statistics of the link to `cluster_id` (LLM_NOT_YET_LINK if none).
  Status GetLinkStats(uint64_t cluster_id, llmdd_link_stats_t &stats) const {
    if (inst_ == nullptr) {
      return NotInitialized("GetLinkStats");
    }
    return llmdd_get_link_stats(inst_, cluster_id, &stats);
  }

  /// Zeroes the statistics of the link to `cluster_id`.
  Status ResetLinkStats(uint64_t cluster_id) {
    if (inst_ == nullptr) {
      return NotInitialized("ResetLinkStats");
    }
    return llmdd_reset_link_stats(inst_, cluster_id);
  }

  /// The state of the link to `cluster_id` (an LLMDD_LINK_STATE_*) and, when
  /// it is LLMDD_LINK_STATE_FAILED, why (else empty).
  Status QueryLinkState(uint64_t cluster_id, uint32_t &state, std::string &reason) const {
    if (inst_ == nullptr) {
      return NotInitialized("QueryLinkState");
    }
    char why[512];
    const Status ret = llmdd_query_link_state(inst_, cluster_id, &state, why, sizeof why);
    if (ret == LLM_SUCCESS) {
      reason = why;
    }
    return ret;
  }

  /// Every link that is not UNLINKED, by cluster id.
  Status ListLinks(std::vector<llmdd_link_entry_t> &links) const {
    if (inst_ == nullptr) {
      return NotInitialized("ListLinks");
    }
    std::vector<llmdd_link_entry_t> v(16);
    for (;;) {
      size_t needed = 0;
      const Status ret = llmdd_list_links(inst_, v.data(), v.size(), &needed);
      if (ret != LLM_SUCCESS) {
        return ret;
      }
      if (needed <= v.size()) {
        v.resize(needed);
        links.swap(v);
        return LLM_SUCCESS;
      }
      v.resize(needed);
    }
  }

 private:
  Status NotInitialized(const char *call) const {
    return detail::Fail(LLM_FAILED, std::string(call) + ": LlmDataDist of cluster " + std::to_string(cluster_id_) +
                                        " is not initialized (invalid role)");
  }

  static Status NotDevice(const char *call) {
    return detail::Fail(LLM_PARAM_INVALID,
                        std::string(call) + ": only a device cache can be pushed (src_cache.cache_desc.placement)");
  }

  /// The reference's layer-range checks of a push, then the layers PushData walks.
  static Status CheckPush(const Cache &src, const KvCacheExtParam &p, const char *call, llmdd_layer_range_t &out) {
    const Status chk = detail::CheckExt(p, true, call);
    if (chk != LLM_SUCCESS) {
      return chk;
    }
    return detail::PushLayers(src, p, call, out);
  }

  llmdd_instance_t *inst_ = nullptr;
  uint64_t cluster_id_;
  LlmRole role_;
};

}  // namespace llm_datadist

#endif  // LLMDD_LLM_DATADIST_LLM_DATADIST_H
