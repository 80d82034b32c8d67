// A C++ consumer of an installed llmdd, written against CANN's C++ API
// (llm_datadist/llm_datadist.h): two LlmDataDist instances in this process on
// 127.0.0.1, RegisterKvCache on both, LinkLlmClusters, PullKvBlocks and
// PullKvCache, every byte checked. Exits 0 only if all of it worked.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "llm_datadist/llm_datadist.h"

using namespace llm_datadist;

static uint16_t FreePort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0) {
    std::exit(2);
  }
  close(fd);
  return ntohs(a.sin_port);
}

static bool Ok(Status s, const char *what) {
  if (s != LLM_SUCCESS) std::fprintf(stderr, "%s: ret = %u (%s)\n", what, s, llmdd_last_error_message());
  return s == LLM_SUCCESS;
}

int main() {
  const uint16_t port = FreePort();
  LlmDataDist prompt(1, LlmRole::kPrompt), decoder(2, LlmRole::kDecoder);
  std::map<AscendString, AscendString> po, dopt;
  po[OPTION_DEVICE_ID] = "0";
  po[OPTION_LISTEN_IP_INFO] = ("127.0.0.1:" + std::to_string(port)).c_str();
  dopt[OPTION_DEVICE_ID] = "0";
  if (!Ok(prompt.Initialize(po), "prompt Initialize") || !Ok(decoder.Initialize(dopt), "decoder Initialize")) {
    return 1;
  }
  CacheDesc desc{};
  desc.num_tensors = 2;
  desc.data_type = DT_INT32;
  desc.shape = {4, 16};
  std::vector<std::vector<int32_t>> src(2, std::vector<int32_t>(64)), dst(2, std::vector<int32_t>(64, 0));
  std::vector<uint64_t> sa, da;
  for (int t = 0; t < 2; ++t) {
    for (int i = 0; i < 64; ++i) src[t][i] = 1000 * t + i;
    sa.push_back(reinterpret_cast<uint64_t>(src[t].data()));
    da.push_back(reinterpret_cast<uint64_t>(dst[t].data()));
  }
  int64_t pid = -1, did = -1;
  if (!Ok(prompt.RegisterKvCache(desc, sa, {}, pid), "RegisterKvCache") ||
      !Ok(decoder.RegisterKvCache(desc, da, {}, did), "RegisterKvCache")) {
    return 1;
  }
  ClusterInfo c;
  c.remote_cluster_id = 1;
  IpInfo ip;
  ip.ip = "127.0.0.1";
  ip.port = port;
  c.remote_ip_infos.push_back(ip);
  std::vector<Status> rets;
  if (!Ok(decoder.LinkLlmClusters({c}, rets), "LinkLlmClusters")) return 1;
  CacheIndex idx = {};
  idx.cluster_id = 1;
  idx.cache_id = pid;
  Cache cache{};
  cache.cache_id = did;
  if (!Ok(decoder.PullKvBlocks(idx, cache, {2, 3}, {2, 3}), "PullKvBlocks") ||
      !Ok(decoder.PullKvCache(idx, cache, 0), "PullKvCache")) {
    return 1;
  }
  for (int t = 0; t < 2; ++t) {
    for (int i = 0; i < 64; ++i) {
      int32_t want = (i < 16 || i >= 32) ? src[t][i] : 0;  // blocks 0, 2, 3
      if (dst[t][i] != want) {
        std::fprintf(stderr, "tensor %d element %d: %d, expected %d\n", t, i, dst[t][i], want);
        return 1;
      }
    }
  }
  if (!Ok(decoder.UnlinkLlmClusters({c}, rets), "UnlinkLlmClusters")) return 1;
  decoder.Finalize();
  prompt.Finalize();
  std::printf("consumer_cpp: ok\n");
  return 0;
}
