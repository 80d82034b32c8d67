/* llmdd: HIXL's C++ engine (CANN hixl/hixl.h, class hixl::Hixl), header-only
 * over the llmdd_engine_* C ABI of llmdd.h. Code written against HIXL's
 * hixl/hixl.h compiles with -I<prefix>/include and links with -lllmdd; the
 * class, its methods, their argument orders, default arguments and status
 * codes are HIXL's. On llmdd's host backend "device" memory is host memory.
 * What differs and why: docs/hixl.md. Every failing call leaves a message in
 * llmdd_last_error_message() (thread-local). C++11 or later. */
#ifndef LLMDD_HIXL_HIXL_H
#define LLMDD_HIXL_HIXL_H

#include <map>
#include <memory>
#include <vector>

#include "hixl/hixl_types.h"

namespace hixl {
class ASCEND_FUNC_VISIBILITY Hixl {
 public:
  Hixl() = default;
  ~Hixl() { Finalize(); }
  Hixl(const Hixl &) = delete;
  Hixl &operator=(const Hixl &) = delete;

  /// Creates the engine named local_engine ("ip:port" listens on it; "ip"
  /// only dials). A second Initialize of a live engine is a no-op SUCCESS.
  Status Initialize(const AscendString &local_engine, const std::map<AscendString, AscendString> &options) {
    if (engine_ != nullptr) {
      return SUCCESS;
    }
    std::vector<llmdd_option_t> opts;
    opts.reserve(options.size());
    for (const auto &kv : options) {
      opts.push_back(llmdd_option_t{kv.first.GetString(), kv.second.GetString()});
    }
    llmdd_engine_t *e = nullptr;
    const uint32_t r = llmdd_engine_create(local_engine.GetString(), opts.data(), opts.size(), &e);
    if (r != 0U) {
      return Code(r);
    }
    engine_ = e;
    return SUCCESS;
  }

  /// Releases everything: unfinished requests fail, links close. Idempotent.
  void Finalize() {
    if (engine_ != nullptr) {
      llmdd_engine_destroy(engine_);
      engine_ = nullptr;
    }
  }

  Status RegisterMem(const MemDesc &mem, MemType type, MemHandle &mem_handle) {
    if (engine_ == nullptr) {
      return FAILED;
    }
    llmdd_engine_mem_t *h = nullptr;
    const uint32_t r = llmdd_engine_register_mem(engine_, mem.addr, mem.len, static_cast<uint32_t>(type), &h);
    if (r == 0U) {
      mem_handle = h;
    }
    return Code(r);
  }

  Status DeregisterMem(MemHandle mem_handle) {
    if (engine_ == nullptr) {
      return FAILED;
    }
    if (mem_handle == nullptr) {
      return PARAM_INVALID;
    }
    return Code(llmdd_engine_deregister_mem(engine_, static_cast<llmdd_engine_mem_t *>(mem_handle)));
  }

  Status Connect(const AscendString &remote_engine, int32_t timeout_in_millis = 1000) {
    if (engine_ == nullptr) {
      return FAILED;
    }
    return Code(llmdd_engine_connect(engine_, remote_engine.GetString(), timeout_in_millis));
  }

  Status Disconnect(const AscendString &remote_engine, int32_t timeout_in_millis = 1000) {
    if (engine_ == nullptr) {
      return FAILED;
    }
    return Code(llmdd_engine_disconnect(engine_, remote_engine.GetString(), timeout_in_millis));
  }

  Status ConnectAsync(const AscendString &remote_engine, int32_t timeout_in_millis = 1000) {
    if (engine_ == nullptr) {
      return FAILED;
    }
    return Code(llmdd_engine_connect_async(engine_, remote_engine.GetString(), timeout_in_millis));
  }

  Status DisconnectAsync(const AscendString &remote_engine, int32_t timeout_in_millis = 1000) {
    if (engine_ == nullptr) {
      return FAILED;
    }
    return Code(llmdd_engine_disconnect_async(engine_, remote_engine.GetString(), timeout_in_millis));
  }

  Status GetAsyncConnectStatus(const AscendString &remote_engine, AsyncConnectStatus &status) {
    if (engine_ == nullptr) {
      return FAILED;
    }
    uint32_t s = 0U;
    const uint32_t r = llmdd_engine_connect_status(engine_, remote_engine.GetString(), &s, nullptr, 0U);
    if (r == 0U) {
      status = static_cast<AsyncConnectStatus>(s);
    }
    return Code(r);
  }

  Status GetAsyncConnectStatus(std::map<AscendString, AsyncConnectStatus> &statuses) {
    if (engine_ == nullptr) {
      return FAILED;
    }
    size_t n = 0U;
    uint32_t r = llmdd_engine_connect_statuses(engine_, nullptr, 0U, &n);
    std::vector<llmdd_engine_peer_t> peers(n);
    if (r == 0U && n > 0U) {
      r = llmdd_engine_connect_statuses(engine_, peers.data(), peers.size(), &n);
    }
    if (r != 0U) {
      return Code(r);
    }
    statuses.clear();
    for (size_t i = 0U; i < n && i < peers.size(); ++i) {
      statuses[AscendString(peers[i].remote)] = static_cast<AsyncConnectStatus>(peers[i].state);
    }
    return SUCCESS;
  }

  Status TransferSync(const AscendString &remote_engine, TransferOp operation,
                      const std::vector<TransferOpDesc> &op_descs, int32_t timeout_in_millis = 1000) {
    if (engine_ == nullptr) {
      return FAILED;
    }
    return Code(llmdd_engine_transfer(engine_, remote_engine.GetString(), static_cast<uint32_t>(operation),
                                      Descs(op_descs), op_descs.size(), timeout_in_millis, nullptr, nullptr));
  }

  /// Posts the transfer; it must finish within 30 s (HIXL's call takes no
  /// timeout; llm.SyncKvCacheWaitTime among the options sets another).
  Status TransferAsync(const AscendString &remote_engine, TransferOp operation,
                       const std::vector<TransferOpDesc> &op_descs, const TransferArgs &optional_args,
                       TransferReq &req) {
    if (engine_ == nullptr) {
      return FAILED;
    }
    llmdd_engine_req_t *q = nullptr;
    const uint32_t r = llmdd_engine_transfer_async(engine_, remote_engine.GetString(), static_cast<uint32_t>(operation),
                                                   Descs(op_descs), op_descs.size(), -1, nullptr, nullptr,
                                                   optional_args.user_data, &q);
    if (r == 0U) {
      req = q;
    }
    return Code(r);
  }

  /// A request's status; once COMPLETED, TIMEOUT or FAILED is reported the
  /// request is released (querying it again is PARAM_INVALID).
  Status GetTransferStatus(const TransferReq &req, TransferStatus &status) {
    if (engine_ == nullptr || req == nullptr) {
      return FAILED;
    }
    uint32_t s = 0U;
    const uint32_t r = llmdd_engine_req_status(engine_, static_cast<llmdd_engine_req_t *>(req), &s, nullptr);
    if (r != 0U) {
      status = TransferStatus::FAILED;
      return Code(r);
    }
    status = static_cast<TransferStatus>(s);
    return SUCCESS;
  }

  /// Up to args.max_query_count requests in posting order; finished ones are
  /// reported once (and released), waiting ones unless args.skip_waiting.
  Status GetTransferStatus(const GetTransferStatusArgs &args, std::vector<TransferResult> &results) {
    if (engine_ == nullptr) {
      return FAILED;
    }
    size_t n = 0U;
    uint32_t r = llmdd_engine_outstanding(engine_, &n);
    if (r != 0U) {
      return Code(r);
    }
    if (n > args.max_query_count) {
      n = args.max_query_count;
    }
    std::vector<llmdd_engine_result_t> got(n);
    size_t m = 0U;
    if (n > 0U) {
      r = llmdd_engine_poll(engine_, args.max_query_count, args.skip_waiting, got.data(), got.size(), &m);
      if (r != 0U) {
        return Code(r);
      }
    }
    results.clear();
    for (size_t i = 0U; i < m; ++i) {
      TransferResult t;
      t.req = got[i].req;
      t.user_data = got[i].user_data;
      t.status = static_cast<TransferStatus>(got[i].status);
      results.push_back(t);
    }
    return SUCCESS;
  }

  /// name and notify_msg: at most 1024 bytes each, as HIXL.
  Status SendNotify(const AscendString &remote_engine, const NotifyDesc &notify, int32_t timeout_in_millis = 1000) {
    if (engine_ == nullptr) {
      return FAILED;
    }
    const uint32_t r = llmdd_engine_send_notify(engine_, remote_engine.GetString(), notify.name.GetString(),
                                                notify.notify_msg.GetString(), timeout_in_millis);
    const Status s = Code(r);
    if (s == SUCCESS || s == PARAM_INVALID || s == NOT_CONNECTED || s == TIMEOUT) {
      return s;
    }
    return NOTIFY_FAILED;
  }

  /// Appends every received notification (oldest first) and clears them.
  Status GetNotifies(std::vector<NotifyDesc> &notifies) {
    if (engine_ == nullptr) {
      return FAILED;
    }
    std::vector<char> name(LLMDD_ENGINE_NOTIFY_NAME_MAX + 1U);
    std::vector<char> msg(LLMDD_ENGINE_NOTIFY_MSG_MAX + 1U);
    for (;;) {
      bool got = false;
      const uint32_t r = llmdd_engine_next_notify(engine_, name.data(), name.size(), msg.data(), msg.size(), &got);
      if (r != 0U) {
        return Code(r);
      }
      if (!got) {
        return SUCCESS;
      }
      NotifyDesc d;
      d.name = AscendString(name.data());
      d.notify_msg = AscendString(msg.data());
      notifies.push_back(d);
    }
  }

  static Status GetCapability(FeatureType feature_type, int32_t &value) {
    int32_t v = FEATURE_NOT_SUPPORTED;
    const uint32_t r = llmdd_engine_capability(static_cast<int32_t>(feature_type), &v);
    if (r == 0U) {
      value = v;
    }
    return Code(r);
  }

 private:
  static Status Code(uint32_t llmdd_status) { return llmdd_engine_hixl_status(llmdd_status); }
  static const llmdd_engine_desc_t *Descs(const std::vector<TransferOpDesc> &d) {
    return reinterpret_cast<const llmdd_engine_desc_t *>(d.data());
  }
  llmdd_engine_t *engine_ = nullptr;
};
}  // namespace hixl

#endif  // LLMDD_HIXL_HIXL_H
