/* Header hygiene, in C (-Wall -Wextra -Werror):
 * - status constants are uint32_t-typed hex literals (0x5010B005U), so a status
 *   kept in a uint32_t compares without warnings and one kept in an int
 *   compares true (LLMDD_FAILED used to be a `long` 4294967295, for which
 *   `int rc == LLMDD_FAILED` was false);
 * - the LLMDD_OPTION_* macros are the option keys and init accepts them. */
#include "llmdd_test.h"

#define IS_UINT(x) _Generic((x), unsigned int: 1, default: 0)

_Static_assert(sizeof(LLMDD_FAILED) == 4, "LLMDD_FAILED is 32-bit");
_Static_assert(LLMDD_FAILED == 0xFFFFFFFFu, "LLMDD_FAILED value");
_Static_assert(LLMDD_PARAM_INVALID == 0x5010B005u, "LLMDD_PARAM_INVALID value");

static void option_macros(void) {
  CHECK(strcmp(LLMDD_OPTION_DEVICE_ID, "llm.DeviceId") == 0);
  CHECK(strcmp(LLMDD_OPTION_LISTEN_IP_INFO, "llm.ListenIpInfo") == 0);
  CHECK(strcmp(LLMDD_OPTION_SYNC_KV_CACHE_WAIT_TIME, "llm.SyncKvCacheWaitTime") == 0);
  CHECK(strcmp(LLMDD_OPTION_MAX_REGISTERED_ADDRS, "llmdd.MaxRegisteredAddrs") == 0);
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", t_free_port());
  llmdd_option_t opts[] = {
      {LLMDD_OPTION_DEVICE_ID, "0"},
      {LLMDD_OPTION_LISTEN_IP_INFO, listen},
      {LLMDD_OPTION_SYNC_KV_CACHE_WAIT_TIME, "2000"},
      {LLMDD_OPTION_ENABLE_REMOTE_CACHE_ACCESSIBLE, "1"},
      {LLMDD_OPTION_MAX_LINKS, "8"},
      {LLMDD_OPTION_STRICT_OPTIONS, "1"},
  };
  llmdd_instance_t *inst = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &inst));
  CHECK_OK(llmdd_init(inst, opts, sizeof opts / sizeof opts[0]));
  llmdd_destroy(inst);
}

int main(void) {
  option_macros();
  CHECK(IS_UINT(LLMDD_SUCCESS) && IS_UINT(LLMDD_FAILED) && IS_UINT(LLMDD_PARAM_INVALID));
  CHECK(IS_UINT(LLMDD_TIMEOUT) && IS_UINT(LLMDD_DEVICE_MEM_ERROR) && IS_UINT(LLMDD_TASK_RESULT_NOT_STARTED));

  llmdd_instance_t *inst = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &inst));
  uint32_t backend = 0;
  /* Not initialized: LLMDD_FAILED. */
  uint32_t u = llmdd_get_backend(inst, &backend);
  CHECK(u == LLMDD_FAILED);
  int rc = llmdd_get_backend(inst, &backend);
  /* GCC's -Wsign-compare flags int == 0xFFFFFFFFU (any unsigned typing of the
   * constant does); the comparison itself must hold. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
  CHECK(rc == LLMDD_FAILED);
#pragma GCC diagnostic pop
  /* Codes that fit in an int compare with an int without any warning. */
  int pi = llmdd_get_backend(NULL, &backend);
  CHECK(pi == LLMDD_PARAM_INVALID);
  switch (llmdd_get_backend(inst, &backend)) {
    case LLMDD_FAILED: CHECK(1); break;
    default: CHECK(0);
  }
  llmdd_destroy(inst);
  return t_finish("test_header_c");
}
