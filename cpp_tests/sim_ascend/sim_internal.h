/*
 * sim_internal.h -- TEST INFRASTRUCTURE ONLY: what the simulated ACL runtime
 * (sim_acl.c) shares with the simulated HCCL libraries (sim_hcomm.c,
 * sim_hccl_wrapper.c). Not Huawei code; see sim_acl.c for the model.
 *
 * The ACL library exports one private entry point, sim_ascend_acl_api(), a
 * table of the runtime state HCCL needs (the calling thread's device, streams,
 * allocations, the contract-violation log). The HCCL library finds it by
 * opening the ACL library of its own directory (libacl_rt.so, else
 * libascendcl.so): the same file the application loaded, so one runtime state.
 */
#ifndef SIM_INTERNAL_H
#define SIM_INTERNAL_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../src/sys/ascend_decls.h"

#define SIM_EXPORT __attribute__((visibility("default")))

/* Devices the simulated machine has unless SIM_ASCEND_DEVICE_COUNT says otherwise. */
#define SIM_DEFAULT_DEVICES 8
#define SIM_MAX_DEVICES 64

/* One queued stream operation. `run` executes it at synchronize time, by
 * `deadline_ms` (CLOCK_MONOTONIC; -1: none) -- an operation that cannot
 * finish by then stops and returns ACL_ERROR_RT_STREAM_SYNC_TIMEOUT, as the
 * synchronize of a real stream returns at its timeout whatever the device is
 * still doing; `drop` frees `ctx` (also when the operation is aborted). */
struct sim_op {
    struct sim_op *next;
    int hang; /* never completes (SIM_ASCEND_HANG_TRANSFER) */
    aclError (*run)(void *ctx, int64_t deadline_ms);
    void (*drop)(void *ctx);
    void *ctx;
};

#define SIM_ACL_API_VERSION 2u

struct sim_acl_api {
    uint32_t version;
    /* Physical id of the calling thread's current device (aclrtSetDevice), -1 if none. */
    int (*current_device)(void);
    /* Physical devices of the machine. */
    int (*device_count)(void);
    /* True on an A3 SoC (Ascend910_93xx): super-pod fields exist. */
    int (*is_a3)(void);
    /* Physical device of a live stream, -1 if `s` is not one. */
    int (*stream_device)(aclrtStream s);
    /* Queues `op` on a live stream. */
    void (*stream_push)(aclrtStream s, struct sim_op *op);
    /* True if [addr, addr+len) lies inside one aclrtMalloc allocation of device `phy`. */
    int (*device_alloc_contains)(int phy, uint64_t addr, uint64_t len);
    /* Records a contract violation whose error code callers tend to ignore
     * (teardown paths); printed on stderr, counted by sim_ascend_violations(). */
    void (*violation)(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
};

/* True if environment variable `name` is set to something other than "" or "0". */
static inline int sim_env_flag(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

/* The integer value of environment variable `name`, `dflt` when unset or not a number. */
static inline long sim_env_long(const char *name, long dflt)
{
    const char *v = getenv(name);
    if (v == NULL || v[0] == '\0') {
        return dflt;
    }
    char *end = NULL;
    long x = strtol(v, &end, 10);
    return end != v && *end == '\0' ? x : dflt;
}

/* The simulated NIC address of physical device `phy`: 192.0.2.(phy+1), from
 * TEST-NET-1 (RFC 5737), which is never routed. Nothing ever connects to it:
 * the simulator moves data between processes through abstract UNIX sockets.
 * cpp_tests/sim_ascend/hccn.conf lists the same addresses as /etc/hccn.conf
 * does on a real host. */
static inline void sim_nic_ip(int phy, char *out, size_t cap)
{
    snprintf(out, cap, "192.0.2.%d", phy + 1);
}

/* The largest descriptor count of one HcclBatchGet / HcclBatchPut (hcomm
 * one_sided_service_adapt.cc MAX_DESC_NUM). */
#define SIM_MAX_DESC_NUM 256u

#endif
