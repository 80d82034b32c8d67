/* llmdd: the role names and engine option keys of CANN's
 * llm_datadist/llm_engine_types.h (namespace llm). */
#ifndef LLMDD_LLM_DATADIST_LLM_ENGINE_TYPES_H
#define LLMDD_LLM_DATADIST_LLM_ENGINE_TYPES_H

namespace llm {
// Role names, as the value of LLM_OPTION_ROLE.
constexpr const char kPrompt[] = "Prompt";
constexpr const char kDecoder[] = "Decoder";

constexpr const char LLM_OPTION_CLUSTER_INFO[] = "llm.ClusterInfo";
constexpr const char LLM_OPTION_ROLE[] = "llm.Role";
constexpr const char LLM_OPTION_SYNC_KV_CACHE_WAIT_TIME[] = "llm.SyncKvCacheWaitTime";
constexpr const char LLM_OPTION_OUTPUT_MAX_SIZE[] = "llm.OutputMaxSize";
constexpr const char LLM_OPTION_ENABLE_SWITCH_ROLE[] = "llm.EnableSwitchRole";
constexpr const char LLM_OPTION_BUF_POOL_CFG[] = "llm.BufPoolCfg";
}  // namespace llm

#endif  // LLMDD_LLM_DATADIST_LLM_ENGINE_TYPES_H
