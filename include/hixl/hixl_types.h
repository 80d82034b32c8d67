/* llmdd: HIXL's types (CANN hixl/hixl_types.h), header-only, so code written
 * for hixl::Hixl builds against llmdd. Names, values, layouts and defaults are
 * HIXL's; AscendString is llmdd's ge::AscendString (llm_datadist/llmdd_ge.h),
 * so this header and llmdd's llm_datadist.h can share a translation unit.
 * Deviations: docs/hixl.md. C++11 or later. */
#ifndef LLMDD_HIXL_HIXL_TYPES_H
#define LLMDD_HIXL_HIXL_TYPES_H

#include <cstddef>
#include <cstdint>

#include "llm_datadist/llmdd_ge.h"
#include "llmdd.h"

#ifdef FUNC_VISIBILITY
#define ASCEND_FUNC_VISIBILITY __attribute__((visibility("default")))
#else
#define ASCEND_FUNC_VISIBILITY
#endif

namespace hixl {
using Status = uint32_t;
using AscendString = ge::AscendString;
using TransferReq = void *;

// options
constexpr const char OPTION_ENABLE_USE_FABRIC_MEM[] = "EnableUseFabricMem";
constexpr const char OPTION_RDMA_TRAFFIC_CLASS[] = "RdmaTrafficClass";
constexpr const char OPTION_RDMA_SERVICE_LEVEL[] = "RdmaServiceLevel";
constexpr const char OPTION_BUFFER_POOL[] = "BufferPool";
constexpr const char OPTION_GLOBAL_RESOURCE_CONFIG[] = "GlobalResourceConfig";
constexpr const char OPTION_AUTO_CONNECT[] = "AutoConnect";
constexpr const char OPTION_LOCAL_COMM_RES[] = "LocalCommRes";

// status codes (equal to llmdd.h's LLMDD_HIXL_*)
constexpr Status SUCCESS = 0U;
constexpr Status PARAM_INVALID = 103900U;
constexpr Status TIMEOUT = 103901U;
constexpr Status NOT_CONNECTED = 103902U;
constexpr Status ALREADY_CONNECTED = 103903U;
constexpr Status NOTIFY_FAILED = 103904U;
constexpr Status UNSUPPORTED = 103905U;
constexpr Status FAILED = 503900U;
constexpr Status RESOURCE_EXHAUSTED = 203900U;

enum FeatureType : int32_t {
  AUTO_CONNECT = 0,
  CLIENT_SERVER_COMM = 1,
};

constexpr int32_t FEATURE_SUPPORTED = 1;
constexpr int32_t FEATURE_NOT_SUPPORTED = 0;

using MemHandle = void *;

enum MemType { MEM_DEVICE, MEM_HOST };

enum TransferOp { READ, WRITE };

struct MemDesc {
  uintptr_t addr;
  size_t len;
  uint8_t reserved[128] = {};
};

struct TransferOpDesc {
  uintptr_t local_addr;
  uintptr_t remote_addr;
  size_t len;
};

enum class TransferStatus { WAITING, COMPLETED, TIMEOUT, FAILED };

struct TransferArgs {
  const void *user_data = nullptr;
  uint8_t reserved[120] = {};
};

struct GetTransferStatusArgs {
  uint32_t max_query_count = UINT32_MAX;
  bool skip_waiting = false;
  uint8_t reserved[123] = {};
};

struct TransferResult {
  TransferReq req = nullptr;
  const void *user_data = nullptr;
  TransferStatus status = TransferStatus::WAITING;
  uint8_t reserved[108] = {};
};

struct NotifyDesc {
  AscendString name;
  AscendString notify_msg;
};

enum class AsyncConnectStatus {
  NOT_CONNECT,
  CONNECT_PENDING,
  CONNECTING,
  CONNECTED,
  CONNECT_FAILED,
  DISCONNECT_PENDING,
  DISCONNECTING
};

// The C ABI is passed these values and layouts unchanged.
static_assert(sizeof(TransferOpDesc) == sizeof(llmdd_engine_desc_t), "TransferOpDesc layout");
static_assert(offsetof(TransferOpDesc, local_addr) == offsetof(llmdd_engine_desc_t, local_addr), "layout");
static_assert(offsetof(TransferOpDesc, remote_addr) == offsetof(llmdd_engine_desc_t, remote_addr), "layout");
static_assert(offsetof(TransferOpDesc, len) == offsetof(llmdd_engine_desc_t, len), "layout");
static_assert(static_cast<uint32_t>(READ) == LLMDD_ENGINE_READ && static_cast<uint32_t>(WRITE) == LLMDD_ENGINE_WRITE,
              "TransferOp values");
static_assert(static_cast<uint32_t>(MEM_DEVICE) == LLMDD_ENGINE_MEM_DEVICE &&
                  static_cast<uint32_t>(MEM_HOST) == LLMDD_ENGINE_MEM_HOST,
              "MemType values");
static_assert(static_cast<uint32_t>(AsyncConnectStatus::DISCONNECTING) == LLMDD_ENGINE_DISCONNECTING,
              "AsyncConnectStatus values");
static_assert(static_cast<uint32_t>(TransferStatus::FAILED) == LLMDD_ENGINE_REQ_FAILED, "TransferStatus values");
static_assert(PARAM_INVALID == LLMDD_HIXL_PARAM_INVALID && FAILED == LLMDD_HIXL_FAILED &&
                  RESOURCE_EXHAUSTED == LLMDD_HIXL_RESOURCE_EXHAUSTED && NOTIFY_FAILED == LLMDD_HIXL_NOTIFY_FAILED,
              "status values");
}  // namespace hixl

#endif  // LLMDD_HIXL_HIXL_TYPES_H
