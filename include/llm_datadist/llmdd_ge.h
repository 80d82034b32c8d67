/* llmdd: the part of CANN's metadef namespace `ge` that llm_datadist.h uses
 * (Status, AscendString, DataType and its DT_* values, SUCCESS/FAILED),
 * header-only, so code written for CANN builds without the CANN toolkit.
 *
 * CANN's own llm_datadist.h takes these from external/ge_common/api_error_codes.h
 * and graph/{ascend_string,types}.h, which need libgraph. Do not include those
 * CANN headers in the same translation unit as llmdd's (see docs/cpp.md). */
#ifndef LLMDD_LLM_DATADIST_GE_H
#define LLMDD_LLM_DATADIST_GE_H

#if defined(INC_EXTERNAL_GRAPH_ASCEND_STRING_H_) || defined(INC_EXTERNAL_GRAPH_TYPES_H_)
#error "CANN's graph headers are already included: llmdd's llm_datadist headers define ge::AscendString and ge::DataType themselves (docs/cpp.md)"
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>

namespace ge {

using char_t = char;

/// A status code: `SUCCESS`, `FAILED` or one of the `LLM_*` codes.
using Status = uint32_t;

constexpr Status SUCCESS = 0x0U;
constexpr Status FAILED = 0xFFFFFFFFU;

/// Element type of a tensor, with CANN's numbering (code 5 is reserved).
enum DataType {
  DT_FLOAT = 0,
  DT_FLOAT16 = 1,
  DT_INT8 = 2,
  DT_INT32 = 3,
  DT_UINT8 = 4,
  DT_INT16 = 6,
  DT_UINT16 = 7,
  DT_UINT32 = 8,
  DT_INT64 = 9,
  DT_UINT64 = 10,
  DT_DOUBLE = 11,
  DT_BOOL = 12,
  DT_STRING = 13,
  DT_DUAL_SUB_INT8 = 14,
  DT_DUAL_SUB_UINT8 = 15,
  DT_COMPLEX64 = 16,
  DT_COMPLEX128 = 17,
  DT_QINT8 = 18,
  DT_QINT16 = 19,
  DT_QINT32 = 20,
  DT_QUINT8 = 21,
  DT_QUINT16 = 22,
  DT_RESOURCE = 23,
  DT_STRING_REF = 24,
  DT_DUAL = 25,
  DT_VARIANT = 26,
  DT_BF16 = 27,
  DT_UNDEFINED = 28,
  DT_INT4 = 29,
  DT_UINT1 = 30,
  DT_INT2 = 31,
  DT_UINT2 = 32,
  DT_COMPLEX32 = 33,
  DT_HIFLOAT8 = 34,
  DT_FLOAT8_E5M2 = 35,
  DT_FLOAT8_E4M3FN = 36,
  DT_FLOAT8_E8M0 = 37,
  DT_FLOAT6_E3M2 = 38,
  DT_FLOAT6_E2M3 = 39,
  DT_FLOAT4_E2M1 = 40,
  DT_FLOAT4_E1M2 = 41,
  DT_HIFLOAT4 = 42,
  DT_MAX
};

/// An immutable string used for option keys/values and IP literals. A
/// default-constructed one is empty (GetString() gives "", never NULL).
class AscendString {
 public:
  AscendString() = default;
  ~AscendString() = default;
  AscendString(const char_t *const name) {  // NOLINT: implicit, as in CANN
    if (name != nullptr) {
      name_ = std::make_shared<std::string>(name);
    }
  }
  AscendString(const char_t *const name, size_t length) {
    if (name != nullptr) {
      name_ = std::make_shared<std::string>(name, length);
    }
  }

  const char_t *GetString() const { return name_ ? name_->c_str() : ""; }
  size_t GetLength() const { return name_ ? name_->size() : 0U; }
  /// Position of `s` in this string, or std::string::npos.
  size_t Find(const AscendString &s) const { return View().find(s.View()); }
  size_t Hash() const { return std::hash<std::string>()(View()); }

  bool operator<(const AscendString &d) const { return View() < d.View(); }
  bool operator>(const AscendString &d) const { return View() > d.View(); }
  bool operator<=(const AscendString &d) const { return View() <= d.View(); }
  bool operator>=(const AscendString &d) const { return View() >= d.View(); }
  bool operator==(const AscendString &d) const { return View() == d.View(); }
  bool operator!=(const AscendString &d) const { return View() != d.View(); }
  bool operator==(const char_t *const d) const { return d != nullptr && View() == d; }
  bool operator!=(const char_t *const d) const { return !(*this == d); }

 private:
  const std::string &View() const {
    static const std::string empty;
    return name_ ? *name_ : empty;
  }
  std::shared_ptr<std::string> name_;
};

}  // namespace ge

namespace std {
template <>
struct hash<ge::AscendString> {
  size_t operator()(const ge::AscendString &s) const { return s.Hash(); }
};
}  // namespace std

#endif  // LLMDD_LLM_DATADIST_GE_H
