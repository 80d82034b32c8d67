/* Status constants are uint32_t-typed hex literals (0x5010B005U), so a status
 * kept in a uint32_t compares without warnings (-Wall -Wextra -Werror) and one
 * kept in an int compares true (LLMDD_FAILED used to be a `long` 4294967295,
 * for which `int rc == LLMDD_FAILED` was false). */
#include "llmdd_test.h"

#define IS_UINT(x) _Generic((x), unsigned int: 1, default: 0)

_Static_assert(sizeof(LLMDD_FAILED) == 4, "LLMDD_FAILED is 32-bit");
_Static_assert(LLMDD_FAILED == 0xFFFFFFFFu, "LLMDD_FAILED value");
_Static_assert(LLMDD_PARAM_INVALID == 0x5010B005u, "LLMDD_PARAM_INVALID value");

int main(void) {
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
  return t_finish("test_status_types");
}
