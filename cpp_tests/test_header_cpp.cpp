// The public header compiles as C++ (-Wall -Wextra -Werror, C++17), its
// declarations have C linkage, and the version macros agree with llmdd_version()
// and llmdd_version_number().
#include "llmdd.h"

#include <cstdio>
#include <cstring>
#include <string>
#include <type_traits>

static int failures = 0, checks = 0;
#define CHECK(c)                                                              \
  do {                                                                        \
    checks++;                                                                 \
    if (!(c)) {                                                               \
      failures++;                                                             \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #c); \
    }                                                                         \
  } while (0)

int main() {
  static_assert(LLMDD_VERSION_NUMBER ==
                    ((LLMDD_VERSION_MAJOR << 16) | (LLMDD_VERSION_MINOR << 8) | LLMDD_VERSION_PATCH),
                "LLMDD_VERSION_NUMBER must pack MAJOR/MINOR/PATCH");
  static_assert(std::is_standard_layout<llmdd_cache_desc_t>::value, "POD");
  static_assert(std::is_trivially_copyable<llmdd_cluster_info_t>::value, "POD");
  CHECK(LLMDD_VERSION_NUMBER ==
        ((LLMDD_VERSION_MAJOR << 16) | (LLMDD_VERSION_MINOR << 8) | LLMDD_VERSION_PATCH));

  // The numeric runtime version matches the header this was built with.
  CHECK(llmdd_version_number() == static_cast<uint32_t>(LLMDD_VERSION_NUMBER));
  const char *v = llmdd_version();
  CHECK(v != nullptr);
  std::string want = "llmdd " + std::to_string(LLMDD_VERSION_MAJOR) + "." +
                     std::to_string(LLMDD_VERSION_MINOR) + "." +
                     std::to_string(LLMDD_VERSION_PATCH);
  std::printf("version: %s (number 0x%06x)\n", v, (unsigned)LLMDD_VERSION_NUMBER);
  CHECK(v != nullptr && want == v);

  // C linkage: function pointers of the declared types bind to the exports.
  uint32_t (*create)(uint32_t, uint64_t, llmdd_instance_t **) = &llmdd_create;
  void (*destroy)(llmdd_instance_t *) = &llmdd_destroy;
  llmdd_instance_t *inst = nullptr;
  CHECK(create(LLMDD_ROLE_PROMPT, 7, &inst) == LLMDD_SUCCESS && inst != nullptr);
  uint64_t id = 0;
  CHECK(llmdd_get_cluster_id(inst, &id) == LLMDD_SUCCESS && id == 7);
  destroy(inst);

  // Status constants are uint32_t-typed (unsigned int) hex literals.
  static_assert(std::is_same<decltype(LLMDD_FAILED), unsigned int>::value, "typed status");
  static_assert(std::is_same<decltype(LLMDD_PARAM_INVALID), unsigned int>::value, "typed status");
  static_assert(LLMDD_FAILED == 0xFFFFFFFFu && LLMDD_LINK_FAILED == 0x5010B009u, "values");
  uint32_t failed = LLMDD_FAILED;
  CHECK(failed == 0xFFFFFFFFu);
  int as_int = static_cast<int>(failed);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
  CHECK(as_int == LLMDD_FAILED);  // was false while LLMDD_FAILED was a long
#pragma GCC diagnostic pop
  CHECK(std::strcmp(llmdd_status_name(LLMDD_TIMEOUT), "LLM_TIMEOUT") == 0);
  llmdd_cache_key_t k = llmdd_cache_key(1, 2, 3, LLMDD_ID_UNSET);
  CHECK(k.kind == LLMDD_KEY_CACHE_KEY && k.prefix_id == UINT64_MAX);

  std::printf("test_header_cpp: %d passed, %d failed\n", checks - failures, failures);
  return failures == 0 ? 0 : 1;
}
