// Helpers of the adapted CANN C++ samples (cpp_tests/test_cann_*.cpp): the
// samples' TCP control messages between prompt and decoder, with the ports
// chosen by the kernel instead of fixed ones and a message wherever a sample
// sleeps, and a runner that forks the prompt and waits for both processes.
// Each process knows when the other's side is over (a pipe whose far end
// closes), so a side that fails makes its peer's waits end at once.
// TEST INFRASTRUCTURE; uses only the public headers.
#ifndef LLMDD_CANN_SAMPLE_H
#define LLMDD_CANN_SAMPLE_H

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "acl/acl.h"
#include "llm_datadist/llm_datadist.h"
#include "t_sim.h"

namespace cann_sample {

// Test-run options on top of a sample's own: LLMDD_TEST_BACKEND (CTest's acl
// re-runs) and LLMDD_TEST_TCP=1 (same-host copies off: every byte over TCP).
inline void AddTestOptions(std::map<llm_datadist::AscendString, llm_datadist::AscendString> &options) {
  const char *backend = std::getenv("LLMDD_TEST_BACKEND");
  if (backend != nullptr && backend[0] != '\0') options["llmdd.Backend"] = backend;
  const char *tcp = std::getenv("LLMDD_TEST_TCP");
  if (tcp != nullptr && std::string(tcp) == "1") options["llmdd.SameHost"] = "off";
}

constexpr int kControlTimeoutSec = 60;

// Read end of the pipe from the other process of the pair (RunPair), -1
// outside one. Nothing is ever written to it: it turns readable (EOF) once
// that process's side has returned or the process has died.
static int g_peer_fd = -1;

// Waits up to `ms` for the peer's side to end; true once it has.
inline bool PeerGone(int ms) {
  pollfd p{g_peer_fd, POLLIN, 0};
  int n = poll(&p, g_peer_fd >= 0 ? 1 : 0, ms);
  return n == 1 && (p.revents & (POLLIN | POLLHUP)) != 0;
}

// The ports one sample pair uses, all picked before the fork.
struct Ports {
  uint16_t prompt_listen;
  uint16_t decoder_listen;
  uint16_t prompt_control;
  uint16_t decoder_control;
};

inline const char *GetRecentErrMsg() {
  const char *m = aclGetRecentErrMsg();
  return m == nullptr ? "no error" : m;
}

// A loopback port that stays free until it is bound: a socket bound to it
// with SO_REUSEADDR (never listening) holds it for the life of the process, so
// no other bind(0) or connect() on the machine takes it in between, while
// llmdd's listener and the control server (SO_REUSEADDR both) can bind it.
inline uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
    std::perror("FreePort");
    std::exit(2);
  }
  return ntohs(a.sin_port);  // fd stays open: it holds the port
}

inline Ports PickPorts() {
  Ports p{FreePort(), FreePort(), FreePort(), FreePort()};
  return p;
}

// The samples' control server: listens on ip:port for one-byte messages.
inline int32_t CreateControlServer(const char *ip, uint16_t port) {
  int32_t fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  int32_t reuse = 1;
  (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, sizeof reuse);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1 || bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
      listen(fd, 4) != 0) {
    std::printf("[ERROR] control server on %s:%u failed\n", ip, static_cast<unsigned>(port));
    close(fd);
    return -1;
  }
  return fd;
}

// Waits (kControlTimeoutSec at most) for one connection carrying `expect`;
// fails at once when the peer's side ends without having sent it.
inline int32_t WaitMessage(int32_t listen_fd, char expect) {
  pollfd p[2] = {{listen_fd, POLLIN, 0}, {g_peer_fd, POLLIN, 0}};
  if (poll(p, g_peer_fd >= 0 ? 2 : 1, kControlTimeoutSec * 1000) < 1) {
    std::printf("[ERROR] no control message '%c' within %d s\n", expect, kControlTimeoutSec);
    return -1;
  }
  // A message sent just before the peer ended is already queued: it wins.
  if ((p[0].revents & POLLIN) == 0) {
    std::printf("[ERROR] the peer ended without sending control message '%c'\n", expect);
    return -1;
  }
  int32_t c = accept(listen_fd, nullptr, nullptr);
  if (c < 0) return -1;
  char m = 0;
  pollfd q{c, POLLIN, 0};
  ssize_t n = poll(&q, 1, kControlTimeoutSec * 1000) == 1 ? recv(c, &m, 1, 0) : -1;
  close(c);
  if (n != 1 || m != expect) {
    std::printf("[ERROR] control message: got '%c', expected '%c'\n", m, expect);
    return -1;
  }
  return 0;
}

// Sends `msg` to ip:port, retrying while nothing listens there yet (as the
// samples' NotifyUnlinkDone: 600 tries, 100 ms apart) and the peer's side
// has not ended.
inline int32_t Notify(const char *ip, uint16_t port, char msg) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  if (inet_pton(AF_INET, ip, &a.sin_addr) != 1) return -1;
  for (int retry = 0; retry < 600; ++retry) {
    int32_t fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    if (connect(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) == 0) {
      ssize_t n = send(fd, &msg, 1, MSG_NOSIGNAL);
      close(fd);
      return n == 1 ? 0 : -1;
    }
    close(fd);
    if (PeerGone(100)) {
      std::printf("[ERROR] the peer ended before it listened for control message '%c'\n", msg);
      return -1;
    }
  }
  std::printf("[ERROR] could not notify %s:%u\n", ip, static_cast<unsigned>(port));
  return -1;
}

// Fills an int32 buffer with 0, 1, 2, ... as the prompt samples do.
inline std::vector<int32_t> Iota(size_t n) {
  std::vector<int32_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<int32_t>(i);
  return v;
}

// 0 when a side returned 0 and, on the simulated runtime, no contract
// violation was recorded in its process (teardown paths whose codes the
// library cannot report).
inline int SideResult(const char *side, int rc) {
  int v = t_sim_violations();
  if (v != 0) std::printf("[ERROR] %s: the simulated runtime recorded %d contract violation(s)\n", side, v);
  return (rc == 0 && v == 0) ? 0 : 1;
}

// Runs `prompt` in a child process and `decoder` here; 0 when both return 0.
// Each process holds the write end of a pipe the other reads (g_peer_fd) and
// closes it when its side returns (or dies), which ends the other's waits. A
// process still running after `timeout_s` is killed (counts as failure).
template <typename P, typename D>
int RunPair(const char *name, P prompt, D decoder, int timeout_s = 120) {
  int to_child[2], to_parent[2];
  if (pipe2(to_child, O_CLOEXEC) != 0 || pipe2(to_parent, O_CLOEXEC) != 0) {
    std::perror("pipe2");
    return 2;
  }
  std::fflush(stdout);
  pid_t child = fork();
  if (child < 0) return 2;
  if (child == 0) {
    close(to_child[1]);
    close(to_parent[0]);
    g_peer_fd = to_child[0];
    int rc = SideResult("prompt", prompt());
    std::fflush(stdout);
    std::exit(rc);  // closes to_parent[1]: the decoder's waits end
  }
  close(to_child[0]);
  close(to_parent[1]);
  g_peer_fd = to_parent[0];
  int rc_d = decoder();
  close(to_child[1]);  // the prompt's waits end
  rc_d = SideResult("decoder", rc_d);
  int st = 0;
  timespec t0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  pid_t w = 0;
  for (;;) {
    w = waitpid(child, &st, WNOHANG);
    if (w != 0) break;
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    if (t.tv_sec - t0.tv_sec > timeout_s) {
      kill(child, SIGKILL);
      waitpid(child, &st, 0);
      std::printf("[ERROR] %s: prompt process timed out\n", name);
      return 1;
    }
    usleep(10000);
  }
  bool prompt_ok = w == child && WIFEXITED(st) && WEXITSTATUS(st) == 0;
  std::printf("%s: prompt %s, decoder %s\n", name, prompt_ok ? "ok" : "FAILED", rc_d == 0 ? "ok" : "FAILED");
  return (prompt_ok && rc_d == 0) ? 0 : 1;
}

// ---- the pieces the three sample pairs share (same cache, same transfers)

constexpr uint64_t kPromptClusterId = 0;
constexpr uint64_t kDecoderClusterId = 1;
constexpr uint32_t kNumTensors = 4U;
constexpr size_t kTensorElems = 8 * 16;
constexpr size_t kTensorSize = kTensorElems * sizeof(int32_t);
constexpr size_t kBlockElems = 16;
constexpr uint32_t kPushBatchIndex = 4;
constexpr uint8_t kPushTensorNumPerLayer = 4;
constexpr const char *kIp = "127.0.0.1";
// OPTION_DEVICE_ID of each side, as the samples' README runs two of the pairs:
// distinct devices (HCCL links two devices; one device cannot link to itself).
constexpr const char *kPromptDeviceId = "0";
constexpr const char *kDecoderDeviceId = "2";

using llm_datadist::AscendString;
using llm_datadist::LlmDataDist;
using llm_datadist::Status;

// Initialize with OPTION_DEVICE_ID `device_id` and, when `listen_port` is
// given, OPTION_LISTEN_IP_INFO (plus the test-run options).
inline int Initialize(LlmDataDist &dd, const char *device_id, const uint16_t *listen_port) {
  std::map<AscendString, AscendString> options;
  options[llm_datadist::OPTION_DEVICE_ID] = device_id;
  if (listen_port != nullptr) {
    options[llm_datadist::OPTION_LISTEN_IP_INFO] = (std::string(kIp) + ":" + std::to_string(*listen_port)).c_str();
  }
  AddTestOptions(options);
  Status ret = dd.Initialize(options);
  if (ret != llm_datadist::LLM_SUCCESS) {
    std::printf("[ERROR] Initialize failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
    return -1;
  }
  return 0;
}

// A cluster entry for `id` listening on kIp:`port`, with a local ip info
// when `local_port` is non-zero (as the samples' Link; Unlink omits it).
inline llm_datadist::ClusterInfo Peer(uint64_t id, uint16_t port, uint16_t local_port) {
  llm_datadist::ClusterInfo cluster_info;
  cluster_info.remote_cluster_id = id;
  if (local_port != 0) {
    llm_datadist::IpInfo local_ip_info;
    local_ip_info.ip = kIp;
    local_ip_info.port = local_port;
    cluster_info.local_ip_infos.push_back(local_ip_info);
  }
  llm_datadist::IpInfo remote_ip_info;
  remote_ip_info.ip = kIp;
  remote_ip_info.port = port;
  cluster_info.remote_ip_infos.push_back(remote_ip_info);
  return cluster_info;
}

// RegisterKvCache of kNumTensors "device" buffers of shape [8, 16] int32,
// filled with 0, 1, 2, ... when `fill` (the prompt's), else zero: device
// memory from aclrtMalloc is not zeroed (the checks expect zeros outside what
// arrived, which the samples themselves do not check).
inline int32_t RegisterCache(LlmDataDist &dd, std::vector<void *> &buffers, int64_t &cache_id, bool fill) {
  llm_datadist::CacheDesc cache_desc{};
  cache_desc.num_tensors = kNumTensors;
  cache_desc.data_type = llm_datadist::DT_INT32;
  cache_desc.shape = {8, 16};
  std::vector<uint64_t> tensor_addrs;
  for (uint32_t i = 0U; i < kNumTensors; ++i) {
    void *buffer = nullptr;
    aclError rc = aclrtMalloc(&buffer, kTensorSize, ACL_MEM_MALLOC_HUGE_ONLY);
    if (rc != ACL_ERROR_NONE) {
      std::printf("[ERROR] aclrtMalloc failed, aclError %d\n", rc);
      return -1;
    }
    buffers.push_back(buffer);
    std::vector<int32_t> host = fill ? Iota(kTensorElems) : std::vector<int32_t>(kTensorElems, 0);
    rc = aclrtMemcpy(buffer, kTensorSize, host.data(), kTensorSize, ACL_MEMCPY_HOST_TO_DEVICE);
    if (rc != ACL_ERROR_NONE) {
      std::printf("[ERROR] aclrtMemcpy to the device failed, aclError %d\n", rc);
      return -1;
    }
    tensor_addrs.push_back(reinterpret_cast<uint64_t>(buffer));
  }
  Status ret = dd.RegisterKvCache(cache_desc, tensor_addrs, {}, cache_id);
  if (ret != llm_datadist::LLM_SUCCESS) {
    std::printf("[ERROR] RegisterKvCache failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
    return -1;
  }
  return 0;
}

// Unregisters (when registered), frees the buffers, finalizes (the samples'
// Finalize).
inline void Release(LlmDataDist &dd, int64_t cache_id, const std::vector<void *> &buffers) {
  if (cache_id > 0 && dd.UnregisterKvCache(cache_id) != llm_datadist::LLM_SUCCESS) {
    std::printf("[ERROR] UnregisterKvCache failed: %s\n", GetRecentErrMsg());
  }
  for (void *b : buffers) aclrtFree(b);
  dd.Finalize();
}

// The samples' success path on a side that never unregisters: Finalize
// alone, which releases the cache. (The samples then leak their buffers; the
// tests free them afterwards, never while the cache is still registered.)
inline void FinalizeThenFree(LlmDataDist &dd, const std::vector<void *> &buffers) {
  dd.Finalize();
  for (void *b : buffers) aclrtFree(b);
}

// The decoders' pull: blocks 1..3 with PullKvBlocks, batch 0 with PullKvCache,
// from the prompt's cache 1.
inline int32_t PullCache(LlmDataDist &dd, int64_t cache_id) {
  std::vector<uint64_t> prompt_blocks{1, 2, 3};
  std::vector<uint64_t> decoder_blocks{1, 2, 3};
  llm_datadist::CacheIndex cache_index = {};
  cache_index.cluster_id = kPromptClusterId;
  cache_index.cache_id = 1;
  cache_index.batch_index = 0;
  llm_datadist::Cache cache{};
  cache.cache_id = cache_id;
  Status ret = dd.PullKvBlocks(cache_index, cache, prompt_blocks, decoder_blocks);
  if (ret != llm_datadist::LLM_SUCCESS) {
    std::printf("[ERROR] PullKvBlocks failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
    return -1;
  }
  ret = dd.PullKvCache(cache_index, cache, 0);
  if (ret != llm_datadist::LLM_SUCCESS) {
    std::printf("[ERROR] PullKvCache failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
    return -1;
  }
  return 0;
}

// The prompts' push into the decoder's cache 1: blocks 5..7 one layer at a
// time (tensor_num_per_layer 1, ranges (i, i)), then batch 4 as one layer of
// 4 tensors.
inline int32_t PushCache(LlmDataDist &dd, int64_t cache_id) {
  using llm_datadist::KvCacheExtParam;
  std::vector<uint64_t> prompt_blocks{5, 6, 7};
  std::vector<uint64_t> decoder_blocks{5, 6, 7};
  llm_datadist::Cache cache{};
  cache.cache_id = cache_id;
  llm_datadist::CacheIndex cache_index = {};
  cache_index.cluster_id = kDecoderClusterId;
  cache_index.cache_id = 1;
  for (uint32_t i = 0U; i < kNumTensors; ++i) {
    KvCacheExtParam param{};
    param.src_layer_range = std::pair<int32_t, int32_t>(i, i);
    param.dst_layer_range = std::pair<int32_t, int32_t>(i, i);
    param.tensor_num_per_layer = 1;
    Status ret = dd.PushKvBlocks(cache, cache_index, prompt_blocks, decoder_blocks, param);
    if (ret != llm_datadist::LLM_SUCCESS) {
      std::printf("[ERROR] PushKvBlocks failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
      return -1;
    }
  }
  llm_datadist::CacheIndex cache_index2 = {};
  cache_index2.cluster_id = kDecoderClusterId;
  cache_index2.cache_id = 1;
  cache_index2.batch_index = kPushBatchIndex;
  KvCacheExtParam param2{};
  param2.src_layer_range = std::pair<int32_t, int32_t>(0, 0);
  param2.dst_layer_range = std::pair<int32_t, int32_t>(0, 0);
  param2.tensor_num_per_layer = kPushTensorNumPerLayer;
  Status ret = dd.PushKvCache(cache, cache_index2, kPushBatchIndex, -1, param2);
  if (ret != llm_datadist::LLM_SUCCESS) {
    std::printf("[ERROR] PushKvCache failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
    return -1;
  }
  return 0;
}

// Byte-exact: blocks [from, to) hold the prompt's values, every other is zero.
inline int32_t CheckBuffers(const std::vector<void *> &buffers, size_t from, size_t to) {
  for (void *buffer : buffers) {
    std::vector<int32_t> host(kTensorElems);
    aclError rc = aclrtMemcpy(host.data(), kTensorSize, buffer, kTensorSize, ACL_MEMCPY_DEVICE_TO_HOST);
    if (rc != ACL_ERROR_NONE) {
      std::printf("[ERROR] aclrtMemcpy from the device failed, aclError %d\n", rc);
      return -1;
    }
    for (size_t i = 0; i < kTensorElems; ++i) {
      size_t block = i / kBlockElems;
      int32_t expect = (block >= from && block < to) ? static_cast<int32_t>(i) : 0;
      if (host[i] != expect) {
        std::printf("[ERROR] Buffer check failed, index = %zu, val = %d, expect = %d\n", i, host[i], expect);
        return -1;
      }
    }
  }
  return 0;
}

}  // namespace cann_sample

#endif
