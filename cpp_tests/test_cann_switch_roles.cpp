// The CANN sample pair prompt_switch_roles.cpp / decoder_switch_roles.cpp,
// adapted: written against llm_datadist/llm_datadist.h only, device memory
// comes from the acl/acl.h stand-in (the runtime's on the acl backend, host
// memory on the host backend), the two sides use devices 0 and 2, ports come
// from the kernel, and control messages replace the samples' sleeps. The prompt
// listens; the decoder (not listening) dials it, pulls blocks 1..3 and batch 0,
// unlinks and becomes the prompt (SetRole with a listen endpoint); the prompt
// becomes the decoder (SetRole without one: it stops listening), dials back
// with the default timeout, pushes blocks 5..7 and batch 4 and finalizes
// without unlinking. The decoder checks every byte after each phase.
#include "cann_sample.h"

using namespace llm_datadist;
using namespace cann_sample;

namespace {
constexpr char kRegistered = 'R';  // prompt -> decoder: cache registered
constexpr char kSwitched = 'S';    // decoder -> prompt: pulled, unlinked, listening
constexpr char kPushed = 'P';      // prompt -> decoder: push done
Ports g_ports;

int32_t SetRole(LlmDataDist &dd, LlmRole role, const uint16_t *listen_port) {
  std::map<AscendString, AscendString> options;
  if (listen_port != nullptr) {
    options[OPTION_LISTEN_IP_INFO] = (std::string(kIp) + ":" + std::to_string(*listen_port)).c_str();
  }
  Status ret = dd.SetRole(role, options);
  if (ret != LLM_SUCCESS) {
    std::printf("[ERROR] SetRole failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
    return -1;
  }
  return 0;
}

int RunPromptSample() {
  LlmDataDist dd(kPromptClusterId, LlmRole::kPrompt);
  if (Initialize(dd, kPromptDeviceId, &g_ports.prompt_listen) != 0) return -1;
  int32_t control = CreateControlServer(kIp, g_ports.prompt_control);
  std::vector<void *> buffers;
  int64_t cache_id = -1;
  int rc = -1;
  std::vector<Status> rets;
  if (control >= 0 && RegisterCache(dd, buffers, cache_id, true) == 0 &&
      Notify(kIp, g_ports.decoder_control, kRegistered) == 0 && WaitMessage(control, kSwitched) == 0 &&
      SetRole(dd, LlmRole::kDecoder, nullptr) == 0) {
    Status ret = dd.LinkLlmClusters({Peer(kDecoderClusterId, g_ports.decoder_listen, g_ports.decoder_listen)}, rets);
    if (ret != LLM_SUCCESS) {
      std::printf("[ERROR] LinkLlmClusters failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
    } else if (PushCache(dd, cache_id) == 0) {
      rc = Notify(kIp, g_ports.decoder_control, kPushed);
    }
  }
  if (control >= 0) close(control);
  FinalizeThenFree(dd, buffers);  // as the sample: with the link still up
  return rc;
}

int RunDecoderSample() {
  LlmDataDist dd(kDecoderClusterId, LlmRole::kDecoder);
  if (Initialize(dd, kDecoderDeviceId, nullptr) != 0) return -1;
  int32_t control = CreateControlServer(kIp, g_ports.decoder_control);
  std::vector<void *> buffers;
  int64_t cache_id = -1;
  int rc = -1;
  std::vector<Status> rets;
  if (control >= 0 && RegisterCache(dd, buffers, cache_id, false) == 0 && cache_id == 1 &&
      WaitMessage(control, kRegistered) == 0) {
    Status ret = dd.LinkLlmClusters({Peer(kPromptClusterId, g_ports.prompt_listen, g_ports.prompt_listen)}, rets);
    if (ret != LLM_SUCCESS) {
      std::printf("[ERROR] LinkLlmClusters failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
    } else if (PullCache(dd, cache_id) == 0 && CheckBuffers(buffers, 0, 4) == 0) {
      ret = dd.UnlinkLlmClusters({Peer(kPromptClusterId, g_ports.prompt_listen, 0)}, rets);
      if (ret != LLM_SUCCESS) {
        std::printf("[ERROR] UnlinkLlmClusters failed, ret = %u, errmsg: %s\n", ret, GetRecentErrMsg());
      } else if (SetRole(dd, LlmRole::kPrompt, &g_ports.decoder_listen) == 0 &&
                 Notify(kIp, g_ports.prompt_control, kSwitched) == 0 && WaitMessage(control, kPushed) == 0) {
        rc = CheckBuffers(buffers, 0, 8);
      }
    }
  }
  if (control >= 0) close(control);
  FinalizeThenFree(dd, buffers);
  return rc;
}
}  // namespace

int main() {
  g_ports = PickPorts();
  return RunPair("test_cann_switch_roles", RunPromptSample, RunDecoderSample);
}
