/* TEST INFRASTRUCTURE: a stand-in for the ACL calls the CANN LLM-DataDist
 * samples make (aclrtMalloc, aclrtFree, aclrtMemcpy, aclGetRecentErrMsg), so
 * those samples build against llmdd with only the device-memory allocation
 * swapped.
 *
 * Where the memory comes from:
 *   - LLMDD_ASCEND_LIB_DIR names an Ascend runtime (the acl backend's runtime,
 *     the simulator in CTest's *_acl runs): aclrtMalloc, aclrtFree and
 *     aclrtMemcpy are that runtime's own, from its libascendcl.so, which is the
 *     library llmdd loads, so the buffers are the runtime's device memory, on
 *     the device llmdd's Initialize made current on this thread, exactly as in
 *     a sample linked with the real libascendcl.so;
 *   - otherwise (host backend) "device" buffers are zeroed host memory.
 * The error text is llmdd's last-error message. */
#ifndef LLMDD_TEST_ACL_SHIM_H
#define LLMDD_TEST_ACL_SHIM_H

#include <dlfcn.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "llmdd.h"

typedef int aclError;
#define ACL_ERROR_NONE 0
#define ACL_ERROR_INVALID_PARAM 100000
#define ACL_ERROR_UNINITIALIZE 100001
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

/* The runtime's entry points when LLMDD_ASCEND_LIB_DIR names one. */
typedef struct acl_shim_runtime {
  int wanted; /* LLMDD_ASCEND_LIB_DIR is set */
  void *lib;  /* its libascendcl.so; NULL when it did not load */
  aclError (*malloc_)(void **dev_ptr, size_t size, aclrtMemMallocPolicy policy);
  aclError (*free_)(void *dev_ptr);
  aclError (*memcpy_)(void *dst, size_t dest_max, const void *src, size_t count, aclrtMemcpyKind kind);
} acl_shim_runtime;

static acl_shim_runtime acl_shim_rt;
static pthread_once_t acl_shim_once = PTHREAD_ONCE_INIT;

static void acl_shim_load(void) {
  const char *dir = getenv("LLMDD_ASCEND_LIB_DIR");
  if (dir == NULL || dir[0] == '\0') return;
  acl_shim_rt.wanted = 1;
  char path[4096];
  snprintf(path, sizeof path, "%s/libascendcl.so", dir);
  void *lib = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (lib == NULL) {
    fprintf(stderr, "acl.h stand-in: cannot load the Ascend runtime %s: %s\n", path, dlerror());
    return;
  }
  /* memcpy: object to function pointer without a cast C or C++ warns about. */
  void *sym = dlsym(lib, "aclrtMalloc");
  memcpy(&acl_shim_rt.malloc_, &sym, sizeof sym);
  sym = dlsym(lib, "aclrtFree");
  memcpy(&acl_shim_rt.free_, &sym, sizeof sym);
  sym = dlsym(lib, "aclrtMemcpy");
  memcpy(&acl_shim_rt.memcpy_, &sym, sizeof sym);
  if (acl_shim_rt.malloc_ == NULL || acl_shim_rt.free_ == NULL || acl_shim_rt.memcpy_ == NULL) {
    fprintf(stderr, "acl.h stand-in: %s lacks aclrtMalloc, aclrtFree or aclrtMemcpy\n", path);
    dlclose(lib);
    return;
  }
  acl_shim_rt.lib = lib; /* kept open: its memory outlives any one call */
}

/* The runtime to forward to, or NULL for host memory; sets *err when one was
 * named but did not load. */
static inline const acl_shim_runtime *acl_shim(aclError *err) {
  pthread_once(&acl_shim_once, acl_shim_load);
  *err = (acl_shim_rt.wanted && acl_shim_rt.lib == NULL) ? ACL_ERROR_UNINITIALIZE : ACL_ERROR_NONE;
  return acl_shim_rt.lib != NULL ? &acl_shim_rt : NULL;
}

static inline aclError aclrtMalloc(void **dev_ptr, size_t size, aclrtMemMallocPolicy policy) {
  aclError err = ACL_ERROR_NONE;
  const acl_shim_runtime *rt = acl_shim(&err);
  if (err != ACL_ERROR_NONE) return err;
  if (rt != NULL) return rt->malloc_(dev_ptr, size, policy);
  if (dev_ptr == NULL || size == 0) return ACL_ERROR_INVALID_PARAM;
  *dev_ptr = calloc(1, size);
  return *dev_ptr == NULL ? ACL_ERROR_BAD_ALLOC : ACL_ERROR_NONE;
}

static inline aclError aclrtFree(void *dev_ptr) {
  aclError err = ACL_ERROR_NONE;
  const acl_shim_runtime *rt = acl_shim(&err);
  if (err != ACL_ERROR_NONE) return err;
  if (rt != NULL) return rt->free_(dev_ptr);
  free(dev_ptr);
  return ACL_ERROR_NONE;
}

static inline aclError aclrtMemcpy(void *dst, size_t dest_max, const void *src, size_t count,
                                   aclrtMemcpyKind kind) {
  aclError err = ACL_ERROR_NONE;
  const acl_shim_runtime *rt = acl_shim(&err);
  if (err != ACL_ERROR_NONE) return err;
  if (rt != NULL) return rt->memcpy_(dst, dest_max, src, count, kind);
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
