/*
 * sim_hccl_wrapper.c -- TEST INFRASTRUCTURE ONLY. A simulated CANN 9.0
 * libhccl.so: the collective-ops library whose one-sided API is a set of
 * forwarding wrappers (as in hicann/hccl v9.0.0 src/common/hcomm_dlsym/). Each
 * wrapper calls libhcomm.so's symbol when libhcomm.so (looked for in this
 * library's own directory) exports it, and otherwise a stub that answers
 * HCCL_E_NOT_SUPPORTED ((HcclResult)(-2)). HcommIsSupport<Name>() says which.
 * Not Huawei code.
 *
 * Injection: SIM_ASCEND_HCCL_STUBS=1 (read once, at the first call) makes every
 * wrapper a stub even when libhcomm.so is there: what an application that loads
 * only libhccl.so sees on a 9.0 install whose libhcomm.so lacks the API.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_internal.h"

static void *g_hcomm;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void open_hcomm(void)
{
    const char *stubs = getenv("SIM_ASCEND_HCCL_STUBS");
    if (stubs != NULL && stubs[0] != '\0' && strcmp(stubs, "0") != 0) {
        return;
    }
    Dl_info info;
    if (dladdr((void *)open_hcomm, &info) == 0 || info.dli_fname == NULL) {
        return;
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s", info.dli_fname);
    char *slash = strrchr(path, '/');
    if (slash == NULL) {
        return;
    }
    snprintf(slash + 1, sizeof(path) - (size_t)(slash + 1 - path), "libhcomm.so");
    g_hcomm = dlopen(path, RTLD_NOW | RTLD_LOCAL);
}

static void *target(const char *name)
{
    pthread_once(&g_once, open_hcomm);
    return g_hcomm != NULL ? dlsym(g_hcomm, name) : NULL;
}

#define NOT_SUPPORTED ((HcclResult)HCCL_E_NOT_SUPPORTED)

/* One forwarding wrapper and its HcommIsSupport<name> query. */
#define WRAP(ret, name, params, args)                                                                              \
    typedef ret(*name##_t) params;                                                                                 \
    SIM_EXPORT ret name params                                                                                     \
    {                                                                                                              \
        name##_t f = (name##_t)target(#name);                                                                      \
        if (f == NULL) {                                                                                           \
            fprintf(stderr, "sim_ascend: [HcclWrapper] " #name " not supported\n");                               \
            return NOT_SUPPORTED;                                                                                  \
        }                                                                                                          \
        return f args;                                                                                             \
    }                                                                                                              \
    SIM_EXPORT bool HcommIsSupport##name(void)                                                                     \
    {                                                                                                              \
        return target(#name) != NULL;                                                                              \
    }

WRAP(HcclResult, HcclCommInitClusterInfoMemConfig,
     (const char *rankTableString, uint32_t rank, HcclCommConfig *config, HcclComm *comm),
     (rankTableString, rank, config, comm))
WRAP(HcclResult, HcclCommDestroy, (HcclComm comm), (comm))
WRAP(HcclResult, HcclRegisterGlobalMem, (const HcclMem *mem, void **memHandle), (mem, memHandle))
WRAP(HcclResult, HcclDeregisterGlobalMem, (void *memHandle), (memHandle))
WRAP(HcclResult, HcclCommBindMem, (HcclComm comm, void *memHandle), (comm, memHandle))
WRAP(HcclResult, HcclCommUnbindMem, (HcclComm comm, void *memHandle), (comm, memHandle))
WRAP(HcclResult, HcclCommPrepare, (HcclComm comm, const HcclPrepareConfig *prepareConfig, const int timeout),
     (comm, prepareConfig, timeout))
WRAP(HcclResult, HcclBatchPut,
     (HcclComm comm, uint32_t remoteRank, HcclOneSideOpDesc *desc, uint32_t descNum, aclrtStream stream),
     (comm, remoteRank, desc, descNum, stream))
WRAP(HcclResult, HcclBatchGet,
     (HcclComm comm, uint32_t remoteRank, HcclOneSideOpDesc *desc, uint32_t descNum, aclrtStream stream),
     (comm, remoteRank, desc, descNum, stream))

typedef const char *(*err_t)(HcclResult);

SIM_EXPORT const char *HcclGetErrorString(HcclResult code)
{
    err_t f = (err_t)target("HcclGetErrorString");
    if ((int)code == HCCL_E_NOT_SUPPORTED) {
        return "not supported (libhccl.so compatibility stub: libhcomm.so lacks this API)";
    }
    return f != NULL ? f(code) : "unknown hccl error";
}
