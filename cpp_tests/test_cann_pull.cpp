// The CANN sample pair prompt_pull_cache_and_blocks.cpp /
// decoder_pull_cache_and_blocks.cpp, adapted: written against
// llm_datadist/llm_datadist.h only, device memory comes from the acl/acl.h
// stand-in (the runtime's on the acl backend, host memory on the host backend),
// the two sides use devices 0 and 2, ports come from the kernel, and a control
// message replaces the decoder's sleep. Both ends listen; the decoder dials,
// pulls blocks 1..3 and batch 0 of the prompt's cache, checks every byte,
// unlinks and tells the prompt, which then unregisters its cache.
#include "cann_sample.h"

using namespace llm_datadist;
using namespace cann_sample;

namespace {
constexpr char kRegistered = 'R';
constexpr char kUnlinkDone = '1';
Ports g_ports;

int RunPromptSample() {
  LlmDataDist dd(kPromptClusterId, LlmRole::kPrompt);
  if (Initialize(dd, kPromptDeviceId, &g_ports.prompt_listen) != 0) return -1;
  int32_t control = CreateControlServer(kIp, g_ports.prompt_control);
  std::vector<void *> buffers;
  int64_t cache_id = -1;
  int rc = -1;
  // The reference numbers caches from 1: the decoder names this one by id 1.
  if (control >= 0 && RegisterCache(dd, buffers, cache_id, true) == 0 && cache_id == 1 &&
      Notify(kIp, g_ports.decoder_control, kRegistered) == 0 && WaitMessage(control, kUnlinkDone) == 0) {
    rc = 0;
  }
  if (control >= 0) close(control);
  Release(dd, cache_id, buffers);
  return rc;
}

int RunDecoderSample() {
  LlmDataDist dd(kDecoderClusterId, LlmRole::kDecoder);
  if (Initialize(dd, kDecoderDeviceId, &g_ports.decoder_listen) != 0) return -1;
  int32_t control = CreateControlServer(kIp, g_ports.decoder_control);
  std::vector<void *> buffers;
  int64_t cache_id = -1;
  int rc = -1;
  std::vector<Status> rets;
  if (control >= 0 && RegisterCache(dd, buffers, cache_id, false) == 0 && WaitMessage(control, kRegistered) == 0) {
    Status ret = dd.LinkLlmClusters({Peer(kPromptClusterId, g_ports.prompt_listen, g_ports.decoder_listen)}, rets,
                                    5000);
    if (ret != LLM_SUCCESS || rets.size() != 1 || rets[0] != LLM_SUCCESS) {
      std::printf("[ERROR] LinkLlmClusters failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
    } else {
      int pulled = PullCache(dd, cache_id) == 0 ? CheckBuffers(buffers, 0, 4) : -1;
      ret = dd.UnlinkLlmClusters({Peer(kPromptClusterId, g_ports.prompt_listen, 0)}, rets, 5000);
      if (ret != LLM_SUCCESS) {
        std::printf("[ERROR] UnlinkLlmClusters failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
      } else if (pulled == 0) {
        rc = Notify(kIp, g_ports.prompt_control, kUnlinkDone);
      }
    }
  }
  if (control >= 0) close(control);
  // As the sample: finalize without unregistering.
  FinalizeThenFree(dd, buffers);
  return rc;
}
}  // namespace

int main() {
  g_ports = PickPorts();
  return RunPair("test_cann_pull", RunPromptSample, RunDecoderSample);
}
