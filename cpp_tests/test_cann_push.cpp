// The CANN sample pair prompt_push_cache_and_blocks.cpp /
// decoder_push_cache_and_blocks.cpp, adapted: written against
// llm_datadist/llm_datadist.h only, device memory comes from the acl/acl.h
// stand-in (the runtime's on the acl backend, host memory on the host backend),
// the two sides use devices 0 and 2, ports come from the kernel, and control
// messages replace the samples' sleeps. Both ends listen; the prompt dials and
// pushes blocks 5..7 one layer at a time (tensor_num_per_layer 1, layer ranges
// (i, i)) and batch 4 as one layer of 4 tensors, unlinks and tells the decoder,
// which checks every byte of its buffers.
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
  std::vector<Status> rets;
  if (control >= 0 && RegisterCache(dd, buffers, cache_id, true) == 0 && WaitMessage(control, kRegistered) == 0) {
    Status ret = dd.LinkLlmClusters({Peer(kDecoderClusterId, g_ports.decoder_listen, g_ports.prompt_listen)}, rets,
                                    5000);
    if (ret != LLM_SUCCESS) {
      std::printf("[ERROR] LinkLlmClusters failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
    } else {
      int pushed = PushCache(dd, cache_id);
      ret = dd.UnlinkLlmClusters({Peer(kDecoderClusterId, g_ports.decoder_listen, 0)}, rets, 5000);
      if (ret != LLM_SUCCESS) {
        std::printf("[ERROR] UnlinkLlmClusters failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
      } else if (pushed == 0) {
        rc = Notify(kIp, g_ports.decoder_control, kUnlinkDone);
      }
    }
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
  if (control >= 0 && RegisterCache(dd, buffers, cache_id, false) == 0 && cache_id == 1 &&
      Notify(kIp, g_ports.prompt_control, kRegistered) == 0 && WaitMessage(control, kUnlinkDone) == 0) {
    rc = CheckBuffers(buffers, 4, 8);
  }
  if (control >= 0) close(control);
  Release(dd, cache_id, buffers);
  return rc;
}
}  // namespace

int main() {
  g_ports = PickPorts();
  return RunPair("test_cann_push", RunPromptSample, RunDecoderSample);
}
