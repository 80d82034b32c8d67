// The C++ layer (llm_datadist/llm_datadist.h) against CANN's API contract:
// constants and defaults, AscendString, every status of the argument checks
// the reference makes before calling the engine (with a message in
// llmdd_last_error_message()), calls before Initialize, the forced options
// of Initialize, link results, and the calls CANN's C++ API leaves
// unimplemented that llmdd implements (AllocateCache, CopyKvCache,
// CopyKvBlocks). One process; two instances where a peer is needed.
#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <vector>

#include "cann_sample.h"
#include "llm_datadist/llm_datadist.h"
#include "llm_datadist/llm_engine_types.h"
#include "llm_datadist/llm_error_codes.h"

using namespace llm_datadist;

static int g_checks = 0, g_failures = 0;
#define CHECK(c)                                                                       \
  do {                                                                                 \
    g_checks++;                                                                        \
    if (!(c)) {                                                                        \
      g_failures++;                                                                    \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s (last error: %s)\n", __FILE__, __LINE__, #c, \
                   llmdd_last_error_message());                                        \
    }                                                                                  \
  } while (0)
// A status and a message naming what was wrong.
#define CHECK_ERR(expr, status, sub)                                                         \
  do {                                                                                       \
    Status s_ = (expr);                                                                      \
    CHECK(s_ == (status));                                                                   \
    CHECK(std::strstr(llmdd_last_error_message(), (sub)) != nullptr);                        \
  } while (0)

using cann_sample::FreePort;

static std::map<AscendString, AscendString> Opts(const std::string &listen = "") {
  std::map<AscendString, AscendString> o;
  o[OPTION_DEVICE_ID] = "0";
  if (!listen.empty()) o[OPTION_LISTEN_IP_INFO] = listen.c_str();
  return o;
}

static void Constants() {
  static_assert(std::is_same<Status, uint32_t>::value, "Status is uint32_t");
  static_assert(LLM_SUCCESS == LLMDD_SUCCESS && LLM_FAILED == LLMDD_FAILED, "");
  static_assert(LLM_PARAM_INVALID == LLMDD_PARAM_INVALID && LLM_OUT_OF_MEMORY == LLMDD_OUT_OF_MEMORY, "");
  static_assert(LLM_FEATURE_NOT_ENABLED == 0x5010B019U && LLM_LINK_BUSY == 0x5010B01BU, "");
  static_assert(ge::LLM_CACHE_INCOMPATIBLE == 0x5010B014U && ge::LLM_WAIT_PROC_TIMEOUT == LLM_WAIT_PROC_TIMEOUT, "");
  static_assert(DT_FLOAT8_E4M3FN == 36 && DT_INT4 == 29 && DT_BF16 == 27 && DT_UNDEFINED == 28, "");
  static_assert(static_cast<int32_t>(LlmRole::kPrompt) == LLMDD_ROLE_PROMPT, "");
  static_assert(static_cast<uint32_t>(CachePlacement::kDevice) == LLMDD_PLACEMENT_DEVICE, "");
  CHECK(std::strcmp(OPTION_LISTEN_IP_INFO, LLMDD_OPTION_LISTEN_IP_INFO) == 0);
  CHECK(std::strcmp(OPTION_SYNC_CACHE_WAIT_TIME, "llm.SyncKvCacheWaitTime") == 0);
  CHECK(std::strcmp(OPTION_ENABLE_SET_ROLE, "llm.EnableSwitchRole") == 0);
  CHECK(std::strcmp(llm::LLM_OPTION_ROLE, "llm.Role") == 0 && std::strcmp(llm::kDecoder, "Decoder") == 0);

  CacheDesc d{};
  CHECK(d.placement == CachePlacement::kDevice && d.data_type == DT_UNDEFINED && d.num_tensors == 0 &&
        d.shape.empty());
  Cache c{};
  CHECK(c.cache_id == -1 && c.tensor_addrs.empty());
  KvCacheExtParam p{};
  CHECK(p.src_layer_range.first == -1 && p.dst_layer_range.second == -1 && p.tensor_num_per_layer == 2);
  IpInfo ip;
  CHECK(ip.port == 0 && ip.ip.GetLength() == 0 && std::strcmp(ip.ip.GetString(), "") == 0);
  ClusterInfo ci;
  CHECK(ci.remote_cluster_id == 0 && ci.remote_role_type == 0);
}

static void Strings() {
  AscendString a("llm.DeviceId"), b("llm.ListenIpInfo"), n(nullptr), part("abcdef", 3);
  CHECK(a < b && b > a && a <= a && a >= a && a != b && a == "llm.DeviceId" && a != "x");
  CHECK(std::strcmp(n.GetString(), "") == 0 && n == AscendString() && !(n == nullptr));
  CHECK(part == "abc" && part.GetLength() == 3 && AscendString("xxabc").Find(part) == 2);
  std::unordered_map<AscendString, int> m;
  m[a] = 1;
  CHECK(m.count(AscendString("llm.DeviceId")) == 1 && a.Hash() == AscendString("llm.DeviceId").Hash());
}

static void Uninitialized() {
  LlmDataDist dd(9, LlmRole::kDecoder);
  std::vector<Status> rets{77};
  Cache c{};
  CacheIndex idx = {};
  ClusterInfo peer;
  peer.remote_cluster_id = 2;
  CHECK_ERR(dd.LinkLlmClusters({peer}, rets), LLM_FAILED, "not initialized");
  CHECK(rets.size() == 1 && rets[0] == 77);  // untouched
  CHECK_ERR(dd.PullKvBlocks(idx, c, {1}, {1}), LLM_FAILED, "not initialized");
  CHECK_ERR(dd.UnregisterKvCache(1), LLM_FAILED, "not initialized");
  CHECK_ERR(dd.SetRole(LlmRole::kPrompt), LLM_FAILED, "not initialized");
  dd.Finalize();  // harmless

  LlmDataDist bad(9, LlmRole::kEnd);
  CHECK_ERR(bad.Initialize(Opts()), LLM_PARAM_INVALID, "invalid role");
  CHECK_ERR(bad.UnregisterKvCache(1), LLM_FAILED, "not initialized");
  bad.Finalize();
}

static void Checks() {
  LlmDataDist dd(1, LlmRole::kPrompt);
  std::map<AscendString, AscendString> o = Opts();
  o["llm.EnableCacheManager"] = "0";  // C++ Initialize always runs the cache manager
  o["ge.exec.deviceId"] = "3";        // OPTION_DEVICE_ID wins
  CHECK(dd.Initialize(o) == LLM_SUCCESS);
  CHECK(dd.Initialize(o) == LLM_SUCCESS);  // again: success

  std::vector<int32_t> mem(4 * 8 * 16);
  std::vector<uint64_t> addrs;
  for (int t = 0; t < 4; ++t) addrs.push_back(reinterpret_cast<uint64_t>(&mem[t * 128]));
  CacheDesc desc{};
  desc.num_tensors = 4;
  desc.data_type = DT_INT32;
  desc.shape = {8, 16};
  int64_t id = -1;
  CHECK_ERR(dd.RegisterKvCache(desc, {addrs[0]}, {}, id), LLM_PARAM_INVALID, "tensor");
  CHECK(id == -1);
  CacheDesc deep = desc;
  deep.shape.assign(40, 1);
  CHECK_ERR(dd.RegisterKvCache(deep, addrs, {}, id), LLM_PARAM_INVALID, "num_dims");
  CHECK(dd.RegisterKvCache(desc, addrs, {}, id) == LLM_SUCCESS && id == 1);

  Cache src{};
  src.cache_id = id;
  CacheIndex dst = {};
  dst.cluster_id = 2;
  dst.cache_id = 1;
  KvCacheExtParam zero_n{};
  zero_n.tensor_num_per_layer = 0;
  CHECK_ERR(dd.PullKvCache(dst, src, 0, -1, zero_n), LLM_PARAM_INVALID, "tensor_num_per_layer must be > 0");
  KvCacheExtParam backwards{};
  backwards.src_layer_range = {3, 1};
  CHECK_ERR(dd.PullKvBlocks(dst, src, {1}, {1}, backwards), LLM_PARAM_INVALID, "invalid src_layer_range");
  CHECK_ERR(dd.PullKvCache(dst, src, 0, 0), LLM_PARAM_INVALID, "size must be -1 or > 0");
  CacheIndex slot1 = dst;
  slot1.batch_index = 1;
  CHECK_ERR(dd.PullKvBlocks(slot1, src, {1}, {1}), LLM_PARAM_INVALID, "batch_index must be 0");

  KvCacheExtParam uneven{};
  uneven.src_layer_range = {0, 1};
  uneven.dst_layer_range = {0, 0};
  CHECK_ERR(dd.PushKvBlocks(src, dst, {1}, {1}, uneven), LLM_PARAM_INVALID, "differ in size");
  CHECK_ERR(dd.PushKvCache(src, dst, 0, 64), LLM_PARAM_INVALID, "size must be -1");
  CHECK_ERR(dd.PushKvBlocks(src, dst, {}, {}), LLM_PARAM_INVALID, "src_blocks is empty");
  CHECK_ERR(dd.PushKvBlocks(src, dst, {1, 2}, {1}), LLM_PARAM_INVALID, "2 src_blocks but 1 dst_blocks");
  CHECK_ERR(dd.PushKvBlocks(src, slot1, {1}, {1}), LLM_PARAM_INVALID, "batch_index must be 0");
  // Every layer (-1) is counted from the caller's cache_desc.num_tensors, as
  // the reference does; a Cache{} without it cannot push "all layers".
  CHECK_ERR(dd.PushKvBlocks(src, dst, {1}, {1}), LLM_PARAM_INVALID, "num_tensors > 0");
  Cache host = src;
  host.cache_desc.placement = CachePlacement::kHost;
  CHECK_ERR(dd.PushKvCache(host, dst), LLM_PARAM_INVALID, "only a device cache can be pushed");
  // Checks passed: the engine answers (no link to cluster 2).
  src.cache_desc.num_tensors = 4;
  CHECK_ERR(dd.PushKvBlocks(src, dst, {1}, {1}), LLM_NOT_YET_LINK, "no link to cluster 2");

  // Reference: not supported; llmdd: a pool makes it work (none configured here).
  Cache alloc{};
  CHECK_ERR(dd.AllocateCache(desc, alloc), LLM_FEATURE_NOT_ENABLED, "pool");
  CHECK_ERR(dd.DeallocateCache(12345), LLM_FEATURE_NOT_ENABLED, "pool");  // as the reference
  CHECK(dd.UnregisterKvCache(777) == LLM_SUCCESS);  // unknown id: success
  CHECK_ERR(dd.SetRole(LlmRole::kEnd), LLM_PARAM_INVALID, "role");
  dd.Finalize();
}

static void LinkResults() {
  LlmDataDist dd(1, LlmRole::kDecoder);
  CHECK(dd.Initialize(Opts()) == LLM_SUCCESS);
  ClusterInfo c;
  c.remote_cluster_id = 2;
  IpInfo ip;
  ip.ip = "127.0.0.1";
  ip.port = FreePort();  // nothing listens there
  c.remote_ip_infos.push_back(ip);
  std::vector<Status> rets{5, 5, 5};
  CHECK_ERR(dd.LinkLlmClusters({c}, rets, 0), LLM_PARAM_INVALID, "timeout");
  CHECK(rets.size() == 3 && rets[0] == 5);  // an argument error leaves rets alone
  CHECK(dd.LinkLlmClusters({c}, rets) == LLM_LINK_FAILED);  // default timeout (1000 ms)
  CHECK(rets.size() == 1 && rets[0] == LLM_LINK_FAILED);
  c.remote_ip_infos[0].ip = "";
  CHECK(dd.LinkLlmClusters({c, c}, rets) != LLM_SUCCESS && rets.size() == 2);
  CHECK(dd.UnlinkLlmClusters({c}, rets, 1000, true) == LLM_SUCCESS && rets[0] == LLM_SUCCESS);
  dd.Finalize();
}

static void Implemented() {
  LlmDataDist dd(1, LlmRole::kPrompt);
  std::map<AscendString, AscendString> o = Opts();
  o["llm.MemPoolConfig"] = "{\"memory_size\": 1048576}";
  CHECK(dd.Initialize(o) == LLM_SUCCESS);
  CacheDesc desc{};
  desc.num_tensors = 2;
  desc.data_type = DT_FLOAT8_E4M3FN;  // 1 byte per element
  desc.shape = {4, 64};
  Cache a{};
  CHECK(dd.AllocateCache(desc, a) == LLM_SUCCESS && a.cache_id > 0 && a.tensor_addrs.size() == 2);
  CHECK(a.cache_desc.data_type == DT_FLOAT8_E4M3FN);

  std::vector<uint8_t> mem(2 * 256);
  for (size_t i = 0; i < mem.size(); ++i) mem[i] = static_cast<uint8_t>(i * 7 + 1);
  std::vector<uint64_t> addrs{reinterpret_cast<uint64_t>(&mem[0]), reinterpret_cast<uint64_t>(&mem[256])};
  Cache r{};
  CHECK(dd.RegisterKvCache(desc, addrs, {}, r.cache_id) == LLM_SUCCESS);
  // CopyKvCache: slot 2 of the registered cache to slot 0 of the allocated one.
  CHECK(dd.CopyKvCache(r, a, 2, 0) == LLM_SUCCESS);
  for (int t = 0; t < 2; ++t) {
    const uint8_t *out = reinterpret_cast<const uint8_t *>(a.tensor_addrs[t]);
    CHECK(std::memcmp(out, &mem[t * 256 + 2 * 64], 64) == 0);
  }
  // CopyKvBlocks within one cache, to two destination lists.
  CHECK(dd.CopyKvBlocks(r, r, {0}, {{1}, {3}}) == LLM_SUCCESS);
  for (int t = 0; t < 2; ++t) {
    CHECK(std::memcmp(&mem[t * 256 + 64], &mem[t * 256], 64) == 0);
    CHECK(std::memcmp(&mem[t * 256 + 192], &mem[t * 256], 64) == 0);
  }
  CHECK_ERR(dd.CopyKvBlocks(r, r, {0, 1}, {{2}}), LLM_PARAM_INVALID, "dst_blocks_list[0] has 1 blocks");
  CHECK(dd.DeallocateCache(a.cache_id) == LLM_SUCCESS);
  CHECK(dd.DeallocateCache(a.cache_id) == LLM_SUCCESS);  // already freed: success
  CHECK(dd.DeallocateCache(12345) == LLM_SUCCESS);       // unknown id: success
  dd.Finalize();
}

// The llmdd extensions: link states and statistics of an in-process pair.
static void LinkStats() {
  const uint16_t port = FreePort();
  LlmDataDist p(1, LlmRole::kPrompt), d(2, LlmRole::kDecoder);
  CHECK(p.Initialize(Opts("127.0.0.1:" + std::to_string(port))) == LLM_SUCCESS);
  CHECK(d.Initialize(Opts()) == LLM_SUCCESS);
  CacheDesc desc{};
  desc.num_tensors = 2;
  desc.data_type = DT_UINT8;
  desc.shape = {4, 64};
  std::vector<uint8_t> src(2 * 256, 9), dst(2 * 256, 0);
  int64_t sid = 0, did = 0;
  CHECK(p.RegisterKvCache(desc, {reinterpret_cast<uint64_t>(&src[0]), reinterpret_cast<uint64_t>(&src[256])}, {},
                          sid) == LLM_SUCCESS);
  CHECK(d.RegisterKvCache(desc, {reinterpret_cast<uint64_t>(&dst[0]), reinterpret_cast<uint64_t>(&dst[256])}, {},
                          did) == LLM_SUCCESS);
  uint32_t state = 99;
  std::string why = "x";
  CHECK(d.QueryLinkState(1, state, why) == LLM_SUCCESS && state == LLMDD_LINK_STATE_UNLINKED && why.empty());
  ClusterInfo c;
  c.remote_cluster_id = 1;
  IpInfo ip;
  ip.ip = "127.0.0.1";
  ip.port = port;
  c.remote_ip_infos.push_back(ip);
  std::vector<Status> rets;
  CHECK(d.LinkLlmClusters({c}, rets) == LLM_SUCCESS);
  CHECK(d.QueryLinkState(1, state, why) == LLM_SUCCESS && state == LLMDD_LINK_STATE_LINKED);
  std::vector<llmdd_link_entry_t> links;
  CHECK(d.ListLinks(links) == LLM_SUCCESS && links.size() == 1 && links[0].remote_cluster_id == 1);
  CacheIndex idx{};
  idx.cluster_id = 1;
  idx.cache_id = sid;
  Cache dc{};
  dc.cache_id = did;
  CHECK(d.PullKvBlocks(idx, dc, {1, 2}, {1, 2}) == LLM_SUCCESS);
  CHECK(dst[64] == 9 && dst[256 + 128] == 9 && dst[0] == 0);
  llmdd_link_stats_t st;
  CHECK(d.GetLinkStats(1, st) == LLM_SUCCESS);
  CHECK(st.ops[LLMDD_DIR_PULL][st.path] == 1 && st.bytes[LLMDD_DIR_PULL][st.path] == 2 * 2 * 64);
  CHECK(d.ResetLinkStats(1) == LLM_SUCCESS && d.GetLinkStats(1, st) == LLM_SUCCESS);
  CHECK(st.ops[LLMDD_DIR_PULL][st.path] == 0);
  CHECK(d.UnlinkLlmClusters({c}, rets) == LLM_SUCCESS);
  CHECK(d.QueryLinkState(1, state, why) == LLM_SUCCESS && state == LLMDD_LINK_STATE_UNLINKED);
  CHECK_ERR(d.GetLinkStats(1, st), LLM_NOT_YET_LINK, "no link");
  CHECK(d.ListLinks(links) == LLM_SUCCESS && links.empty());
  LlmDataDist bad(9, LlmRole::kEnd);
  CHECK_ERR(bad.QueryLinkState(1, state, why), LLM_FAILED, "not initialized");
  d.Finalize();
  p.Finalize();
}

int main() {
  Constants();
  Strings();
  Uninitialized();
  Checks();
  LinkResults();
  Implemented();
  LinkStats();
  std::printf("test_cann_api: %d passed, %d failed\n", g_checks - g_failures, g_failures);
  return g_failures == 0 ? 0 : 1;
}
