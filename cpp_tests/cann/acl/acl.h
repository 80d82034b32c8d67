/* TEST INFRASTRUCTURE: a host-memory stand-in for the ACL calls the CANN
 * LLM-DataDist samples make (aclrtMalloc, aclrtFree, aclrtMemcpy,
 * aclGetRecentErrMsg), so those samples build against llmdd with only the
 * device-memory allocation swapped for host memory. "Device" buffers are
 * zeroed host memory; the error text is llmdd's last-error message. */
#ifndef LLMDD_TEST_ACL_SHIM_H
#define LLMDD_TEST_ACL_SHIM_H

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "llmdd.h"

typedef int aclError;
#define ACL_ERROR_NONE 0
#define ACL_ERROR_INVALID_PARAM 100000
#define ACL_ERROR_BAD_ALLOC 200000

typedef enum aclrtMemMallocPolicy {
  ACL_MEM_MALLOC_HUGE_FIRST = 0,
  ACL_MEM_MALLOC_HUGE_ONLY = 1,
  ACL_MEM_MALLOC_NORMAL_ONLY = 2,
} aclrtMemMallocPolicy;

typedef enum aclrtMemcpyKind {
  ACL_MEMCPY_HOST_TO_HOST = 0,
  ACL_MEMCPY_HOST_TO_DEVICE = 1,
  ACL_MEMCPY_DEVICE_TO_HOST = 2,
  ACL_MEMCPY_DEVICE_TO_DEVICE = 3,
} aclrtMemcpyKind;

static inline aclError aclrtMalloc(void **dev_ptr, size_t size, aclrtMemMallocPolicy policy) {
  (void)policy;
  if (dev_ptr == NULL || size == 0) return ACL_ERROR_INVALID_PARAM;
  *dev_ptr = calloc(1, size);
  return *dev_ptr == NULL ? ACL_ERROR_BAD_ALLOC : ACL_ERROR_NONE;
}

static inline aclError aclrtFree(void *dev_ptr) {
  free(dev_ptr);
  return ACL_ERROR_NONE;
}

static inline aclError aclrtMemcpy(void *dst, size_t dest_max, const void *src, size_t count,
                                   aclrtMemcpyKind kind) {
  (void)kind;
  if (dst == NULL || src == NULL || count > dest_max) return ACL_ERROR_INVALID_PARAM;
  memcpy(dst, src, count);
  return ACL_ERROR_NONE;
}

/* NULL when the last llmdd call on this thread succeeded. */
static inline const char *aclGetRecentErrMsg(void) {
  const char *m = llmdd_last_error_message();
  return (m != NULL && m[0] != '\0') ? m : NULL;
}

#endif
