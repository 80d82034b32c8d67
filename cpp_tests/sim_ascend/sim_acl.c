/*
 * sim_acl.c -- TEST INFRASTRUCTURE ONLY. The ACL half of a simulated Ascend runtime.
 *
 * This is not Huawei code and not a driver. It exports the ACL C symbols that
 * llmdd's `acl` backend resolves (src/sys/ascend_decls.h) and implements them
 * over ordinary host memory, so the backend can be tested end to end on a
 * machine without CANN or an NPU. Nothing here talks to hardware. It is held to
 * the public ACL contracts it can model, and answers a violation with the real
 * error code, so that a backend bug fails the tests here as it would fail on a
 * real machine (../../docs/ascend.md, "The simulated runtime").
 *
 * Builds (cpp_tests/sim_ascend/build.sh, CMake, tests/common/sim.rs):
 *   libascendcl.so  this file
 *   libacl_rt.so    this file (the CANN 9.1+ layout: the aclrt* runtime calls)
 *   libascendcl.so  with -DSIM_ACL_BASE_ONLY: only aclInit / aclFinalize /
 *                   aclsysGetVersionStr, like an acl-compat libascendcl.so that
 *                   lacks the runtime symbols (they then live in libacl_rt.so)
 *
 * The simulated machine:
 *   - SIM_ASCEND_DEVICE_COUNT physical devices (default 8). ASCEND_RT_VISIBLE_DEVICES
 *     ("3,1") maps logical ids to physical ones as on a real host; logical ids are
 *     what aclrtSetDevice takes, aclrtGetPhyDevIdByLogicDevId maps them.
 *   - SoC SIM_ASCEND_SOC (default "Ascend910B3", an A2). An Ascend910_93xx name makes
 *     it an A3: aclrtGetDeviceInfo then answers ACL_DEV_ATTR_SUPER_POD_DEVICE_ID
 *     (SIM_ASCEND_SUPER_DEVICE_BASE + physical id) and ACL_DEV_ATTR_SUPER_POD_ID
 *     (SIM_ASCEND_SUPER_POD_ID, default 0); on an A2 both are not supported.
 *   - Device memory is host memory: aclrtMalloc / aclrtMallocHost are page-aligned
 *     allocations, tracked (per physical device) so that aclrtFree of anything else
 *     fails and HCCL can ask whether a range came from aclrtMalloc.
 *   - Streams are FIFO queues whose operations run, in order, inside
 *     aclrtSynchronizeStream(WithTimeout). (A device runs them at once; llmdd only
 *     observes completion at synchronize time, so the difference is not visible.)
 *
 * Contracts enforced (real code in parentheses):
 *   - every aclrt* call that needs a context has a current device on the calling
 *     thread (ACL_ERROR_RT_CONTEXT_NULL 107002); aclrtSetDevice takes logical ids
 *     below the visible count (ACL_ERROR_RT_INVALID_DEVICEID 107001);
 *   - aclrtMemcpyAsync device-to-device needs both addresses 64-byte aligned
 *     (ACL_ERROR_RT_ADDR_UNALIGNED 107008; the rule is public, its code the sim's
 *     choice), and a stream of the current device (ACL_ERROR_RT_STREAM_CONTEXT 107003);
 *   - aclrtFree / aclrtFreeHost take only what aclrtMalloc / aclrtMallocHost gave
 *     (ACL_ERROR_INVALID_PARAM);
 *   - aclrtDestroyStream needs the stream's tasks finished (synchronized, aborted
 *     with aclrtStreamAbort, or use aclrtDestroyStreamForce). A real runtime may
 *     block in its teardown; the sim refuses with ACL_ERROR_RT_INTERNAL_ERROR 507000
 *     and records a contract violation, since callers ignore destroy's result.
 *
 * Contract violations on teardown paths (whose error codes callers tend to ignore)
 * are printed on stderr and counted; sim_ascend_violations() returns the count and
 * the last message (the tests assert it stays 0).
 *
 * Failure injection (environment, read at call time):
 *   SIM_ASCEND_FAIL_MALLOC=1    aclrtMalloc / aclrtMallocHost return
 *                               ACL_ERROR_RT_MEMORY_ALLOCATION (207001).
 *   SIM_ASCEND_HANG_TRANSFER=1  aclrtMemcpyAsync (and HcclBatchGet / HcclBatchPut)
 *                               queue an operation that never completes: a
 *                               synchronize waits out its timeout and returns
 *                               ACL_ERROR_RT_STREAM_SYNC_TIMEOUT (507046).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sim_internal.h"

static __thread char t_err[512];

static aclError acl_fail(aclError code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static aclError acl_fail(aclError code, const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    snprintf(t_err, sizeof(t_err), "sim_ascend: %s (code %d)", msg, code);
    return code;
}

/* ------------------------------------------------------------- violations */

static pthread_mutex_t g_viol_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_violations;
static char g_last_violation[512];

__attribute__((unused)) static void violation(const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    pthread_mutex_lock(&g_viol_mu);
    g_violations++;
    snprintf(g_last_violation, sizeof(g_last_violation), "%s", msg);
    pthread_mutex_unlock(&g_viol_mu);
    fprintf(stderr, "sim_ascend: CONTRACT VIOLATION (pid %d): %s\n", (int)getpid(), msg);
}

/* Number of contract violations recorded in this process; copies the last
 * message into buf (may be NULL). Test hook, not an ACL function. */
SIM_EXPORT int sim_ascend_violations(char *buf, size_t cap)
{
    pthread_mutex_lock(&g_viol_mu);
    int n = g_violations;
    if (buf != NULL && cap > 0) {
        snprintf(buf, cap, "%s", g_last_violation);
    }
    pthread_mutex_unlock(&g_viol_mu);
    return n;
}

__attribute__((destructor)) static void report_violations(void)
{
    if (g_violations > 0) {
        fprintf(stderr, "sim_ascend: %d contract violation(s) in pid %d; last: %s\n", g_violations, (int)getpid(),
                g_last_violation);
    }
}

/* ------------------------------------------------------------------ base */

static pthread_mutex_t g_init_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_initialized;

SIM_EXPORT aclError aclInit(const char *configPath)
{
    (void)configPath;
    pthread_mutex_lock(&g_init_mu);
    int again = g_initialized;
    g_initialized = 1;
    pthread_mutex_unlock(&g_init_mu);
    return again ? acl_fail(ACL_ERROR_REPEAT_INITIALIZE, "aclInit called twice") : ACL_SUCCESS;
}

SIM_EXPORT aclError aclFinalize(void)
{
    pthread_mutex_lock(&g_init_mu);
    int was = g_initialized;
    g_initialized = 0;
    pthread_mutex_unlock(&g_init_mu);
    return was ? ACL_SUCCESS : acl_fail(ACL_ERROR_REPEAT_FINALIZE, "aclFinalize without aclInit");
}

/* Package versions of the simulated install: SIM_ASCEND_CANN_VERSION (default
 * "9.0.0-sim") for every package name. */
SIM_EXPORT aclError aclsysGetVersionStr(char *pkgName, char *versionStr)
{
    if (pkgName == NULL || versionStr == NULL) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "aclsysGetVersionStr: null argument");
    }
    static const char *known[] = {"runtime", "hcomm", "hccl", "cann", "toolkit", "driver", NULL};
    for (int i = 0; known[i] != NULL; i++) {
        if (strcmp(pkgName, known[i]) == 0) {
            const char *v = getenv("SIM_ASCEND_CANN_VERSION");
            snprintf(versionStr, ACL_PKG_VERSION_MAX_SIZE, "%s", v != NULL && v[0] != '\0' ? v : "9.0.0-sim");
            return ACL_SUCCESS;
        }
    }
    return acl_fail(ACL_ERROR_INVALID_FILE, "no version.info for package %s", pkgName);
}

#ifndef SIM_ACL_BASE_ONLY
/* --------------------------------------------------------------- devices */

static pthread_once_t g_dev_once = PTHREAD_ONCE_INIT;
static int g_phys_count = SIM_DEFAULT_DEVICES;
static int g_visible[SIM_MAX_DEVICES]; /* logical -> physical */
static int g_visible_count;
static char g_soc[64];
static int g_a3;
static __thread int32_t t_logical = -1;

static void devices_init(void)
{
    long n = sim_env_long("SIM_ASCEND_DEVICE_COUNT", SIM_DEFAULT_DEVICES);
    g_phys_count = n < 1 ? 1 : (n > SIM_MAX_DEVICES ? SIM_MAX_DEVICES : (int)n);
    const char *vis = getenv("ASCEND_RT_VISIBLE_DEVICES");
    g_visible_count = 0;
    if (vis != NULL && vis[0] != '\0') {
        const char *p = vis;
        while (*p != '\0' && g_visible_count < SIM_MAX_DEVICES) {
            char *end = NULL;
            long id = strtol(p, &end, 10);
            if (end == p) {
                break;
            }
            if (id >= 0 && id < g_phys_count) {
                g_visible[g_visible_count++] = (int)id;
            }
            p = *end == ',' ? end + 1 : end;
            if (*end != ',') {
                break;
            }
        }
    } else {
        for (int i = 0; i < g_phys_count; i++) {
            g_visible[g_visible_count++] = i;
        }
    }
    const char *soc = getenv("SIM_ASCEND_SOC");
    snprintf(g_soc, sizeof(g_soc), "%s", soc != NULL && soc[0] != '\0' ? soc : "Ascend910B3");
    g_a3 = strncmp(g_soc, "Ascend910_93", 12) == 0;
}

static int logical_ok(int32_t id)
{
    pthread_once(&g_dev_once, devices_init);
    return id >= 0 && id < g_visible_count;
}

/* Physical id of the calling thread's device, -1 if none is set. */
static int current_phys(void)
{
    pthread_once(&g_dev_once, devices_init);
    return t_logical >= 0 && t_logical < g_visible_count ? g_visible[t_logical] : -1;
}

#define NEED_DEVICE(what)                                                                                   \
    do {                                                                                                    \
        if (current_phys() < 0) {                                                                           \
            return acl_fail(ACL_ERROR_RT_CONTEXT_NULL, "%s: no current device on this thread (call "        \
                                                       "aclrtSetDevice first)", (what));                     \
        }                                                                                                   \
    } while (0)

SIM_EXPORT const char *aclGetRecentErrMsg(void)
{
    return t_err[0] != '\0' ? t_err : NULL;
}

SIM_EXPORT aclError aclrtSetDevice(int32_t deviceId)
{
    if (!logical_ok(deviceId)) {
        return acl_fail(ACL_ERROR_RT_INVALID_DEVICEID, "device id %d is not below the %d visible device(s)",
                        (int)deviceId, g_visible_count);
    }
    t_logical = deviceId;
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtResetDevice(int32_t deviceId)
{
    if (!logical_ok(deviceId)) {
        return acl_fail(ACL_ERROR_RT_INVALID_DEVICEID, "device id %d is not below the %d visible device(s)",
                        (int)deviceId, g_visible_count);
    }
    if (t_logical == deviceId) {
        t_logical = -1;
    }
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtGetDeviceCount(uint32_t *count)
{
    if (count == NULL) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "aclrtGetDeviceCount(NULL)");
    }
    pthread_once(&g_dev_once, devices_init);
    *count = (uint32_t)g_visible_count;
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtGetPhyDevIdByLogicDevId(const int32_t logicDevId, int32_t *const phyDevId)
{
    if (phyDevId == NULL) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "aclrtGetPhyDevIdByLogicDevId: null out-pointer");
    }
    if (!logical_ok(logicDevId)) {
        return acl_fail(ACL_ERROR_RT_INVALID_DEVICEID, "logical device id %d is not visible", (int)logicDevId);
    }
    *phyDevId = g_visible[logicDevId];
    return ACL_SUCCESS;
}

SIM_EXPORT const char *aclrtGetSocName(void)
{
    pthread_once(&g_dev_once, devices_init);
    return g_soc;
}

SIM_EXPORT aclError aclrtGetDeviceInfo(uint32_t deviceId, aclrtDevAttr attr, int64_t *value)
{
    if (value == NULL) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "aclrtGetDeviceInfo: null out-pointer");
    }
    if (!logical_ok((int32_t)deviceId)) {
        return acl_fail(ACL_ERROR_RT_INVALID_DEVICEID, "logical device id %u is not visible", deviceId);
    }
    if (!g_a3 || (attr != ACL_DEV_ATTR_SUPER_POD_DEVICE_ID && attr != ACL_DEV_ATTR_SUPER_POD_ID)) {
        return acl_fail(ACL_ERROR_RT_FEATURE_NOT_SUPPORT, "device attribute %d is not supported on %s", (int)attr,
                        g_soc);
    }
    *value = attr == ACL_DEV_ATTR_SUPER_POD_ID ? sim_env_long("SIM_ASCEND_SUPER_POD_ID", 0)
                                               : sim_env_long("SIM_ASCEND_SUPER_DEVICE_BASE", 0) + g_visible[deviceId];
    return ACL_SUCCESS;
}

/* ---------------------------------------------------------------- memory */

struct alloc {
    struct alloc *next;
    uint64_t addr;
    uint64_t size;
    int phy;
    int host;
};

static pthread_mutex_t g_mem_mu = PTHREAD_MUTEX_INITIALIZER;
static struct alloc *g_allocs;

static aclError sim_alloc(void **ptr, size_t size, int host, const char *what)
{
    if (ptr == NULL || size == 0) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "%s: null out-pointer or zero size", what);
    }
    NEED_DEVICE(what);
    if (sim_env_flag("SIM_ASCEND_FAIL_MALLOC")) {
        return acl_fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "%s: injected allocation failure", what);
    }
    void *p = NULL;
    struct alloc *a = calloc(1, sizeof(*a));
    if (a == NULL || posix_memalign(&p, 4096, size) != 0) {
        free(a);
        return acl_fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "%s: out of host memory", what);
    }
    a->addr = (uint64_t)(uintptr_t)p;
    a->size = size;
    a->phy = current_phys();
    a->host = host;
    pthread_mutex_lock(&g_mem_mu);
    a->next = g_allocs;
    g_allocs = a;
    pthread_mutex_unlock(&g_mem_mu);
    *ptr = p;
    return ACL_SUCCESS;
}

static aclError sim_free(void *p, int host, const char *what)
{
    if (p == NULL) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "%s(NULL)", what);
    }
    pthread_mutex_lock(&g_mem_mu);
    struct alloc **pp = &g_allocs;
    while (*pp != NULL && !((*pp)->addr == (uint64_t)(uintptr_t)p && (*pp)->host == host)) {
        pp = &(*pp)->next;
    }
    struct alloc *a = *pp;
    if (a != NULL) {
        *pp = a->next;
    }
    pthread_mutex_unlock(&g_mem_mu);
    if (a == NULL) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "%s(%p): not an address from %s", what, p,
                        host ? "aclrtMallocHost" : "aclrtMalloc");
    }
    free(a);
    free(p);
    return ACL_SUCCESS;
}

static int device_alloc_contains(int phy, uint64_t addr, uint64_t len)
{
    int found = 0;
    pthread_mutex_lock(&g_mem_mu);
    for (struct alloc *a = g_allocs; a != NULL; a = a->next) {
        if (!a->host && a->phy == phy && addr >= a->addr && len <= a->size && addr - a->addr <= a->size - len) {
            found = 1;
            break;
        }
    }
    pthread_mutex_unlock(&g_mem_mu);
    return found;
}

SIM_EXPORT aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy policy)
{
    if (policy > ACL_MEM_MALLOC_NORMAL_ONLY_P2P) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "aclrtMalloc: unknown malloc policy %d", (int)policy);
    }
    return sim_alloc(devPtr, size, 0, "aclrtMalloc");
}

SIM_EXPORT aclError aclrtMallocHost(void **hostPtr, size_t size)
{
    return sim_alloc(hostPtr, size, 1, "aclrtMallocHost");
}

SIM_EXPORT aclError aclrtFree(void *devPtr)
{
    return sim_free(devPtr, 0, "aclrtFree");
}

SIM_EXPORT aclError aclrtFreeHost(void *hostPtr)
{
    return sim_free(hostPtr, 1, "aclrtFreeHost");
}

static aclError check_copy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                           const char *what)
{
    if (kind > ACL_MEMCPY_DEFAULT) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "%s: unknown memcpy kind %d", what, (int)kind);
    }
    if (count > destMax) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "%s: count %zu exceeds destMax %zu", what, count, destMax);
    }
    if (count > 0 && (dst == NULL || src == NULL)) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "%s: null pointer", what);
    }
    NEED_DEVICE(what);
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind)
{
    aclError rc = check_copy(dst, destMax, src, count, kind, "aclrtMemcpy");
    if (rc != ACL_SUCCESS) {
        return rc;
    }
    if (count > 0) {
        memmove(dst, src, count);
    }
    return ACL_SUCCESS;
}

/* --------------------------------------------------------------- streams */

#define SIM_STREAM_MAGIC 0x53544d32u /* "STM2" */

struct sim_stream {
    uint32_t magic;
    int phy;
    pthread_mutex_t mu;
    struct sim_op *head;
    struct sim_op *tail;
};

static int stream_valid(aclrtStream s)
{
    return s != NULL && ((struct sim_stream *)s)->magic == SIM_STREAM_MAGIC;
}

static int stream_device(aclrtStream s)
{
    return stream_valid(s) ? ((struct sim_stream *)s)->phy : -1;
}

static void stream_push(aclrtStream stream, struct sim_op *op)
{
    struct sim_stream *s = stream;
    op->next = NULL;
    pthread_mutex_lock(&s->mu);
    if (s->tail != NULL) {
        s->tail->next = op;
    } else {
        s->head = op;
    }
    s->tail = op;
    pthread_mutex_unlock(&s->mu);
}

static void free_op(struct sim_op *op)
{
    if (op->drop != NULL) {
        op->drop(op->ctx);
    }
    free(op);
}

/* Unlinks every queued operation of `s` (locked by the caller) and returns them. */
static struct sim_op *take_ops(struct sim_stream *s)
{
    struct sim_op *op = s->head;
    s->head = s->tail = NULL;
    return op;
}

static void free_ops(struct sim_op *op)
{
    while (op != NULL) {
        struct sim_op *next = op->next;
        free_op(op);
        op = next;
    }
}

struct copy_ctx {
    void *dst;
    const void *src;
    size_t len;
};

static aclError run_copy(void *ctx, int64_t deadline_ms)
{
    (void)deadline_ms; /* one host memmove: never long */
    struct copy_ctx *c = ctx;
    if (c->len > 0) {
        memmove(c->dst, c->src, c->len);
    }
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                                     aclrtStream stream)
{
    aclError rc = check_copy(dst, destMax, src, count, kind, "aclrtMemcpyAsync");
    if (rc != ACL_SUCCESS) {
        return rc;
    }
    if (!stream_valid(stream)) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "aclrtMemcpyAsync: invalid stream");
    }
    if (stream_device(stream) != current_phys()) {
        return acl_fail(ACL_ERROR_RT_STREAM_CONTEXT, "aclrtMemcpyAsync: the stream belongs to device %d, the "
                                                     "thread's current device is %d",
                        stream_device(stream), current_phys());
    }
    if (kind == ACL_MEMCPY_DEVICE_TO_DEVICE && (((uintptr_t)dst | (uintptr_t)src) % 64) != 0) {
        return acl_fail(ACL_ERROR_RT_ADDR_UNALIGNED, "aclrtMemcpyAsync device to device needs 64-byte aligned "
                                                     "addresses (dst %p, src %p)",
                        dst, src);
    }
    struct sim_op *op = calloc(1, sizeof(*op));
    struct copy_ctx *c = calloc(1, sizeof(*c));
    if (op == NULL || c == NULL) {
        free(op);
        free(c);
        return acl_fail(ACL_ERROR_BAD_ALLOC, "out of host memory");
    }
    c->dst = dst;
    c->src = src;
    c->len = count;
    op->hang = sim_env_flag("SIM_ASCEND_HANG_TRANSFER");
    op->run = run_copy;
    op->drop = free;
    op->ctx = c;
    stream_push(stream, op);
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtCreateStream(aclrtStream *stream)
{
    if (stream == NULL) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "aclrtCreateStream: null out-pointer");
    }
    NEED_DEVICE("aclrtCreateStream");
    struct sim_stream *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return acl_fail(ACL_ERROR_BAD_ALLOC, "out of host memory");
    }
    s->magic = SIM_STREAM_MAGIC;
    s->phy = current_phys();
    pthread_mutex_init(&s->mu, NULL);
    *stream = s;
    return ACL_SUCCESS;
}

static void stream_free(struct sim_stream *s)
{
    s->magic = 0;
    pthread_mutex_destroy(&s->mu);
    free(s);
}

SIM_EXPORT aclError aclrtDestroyStream(aclrtStream stream)
{
    if (!stream_valid(stream)) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "aclrtDestroyStream: invalid stream");
    }
    struct sim_stream *s = stream;
    pthread_mutex_lock(&s->mu);
    int pending = s->head != NULL;
    pthread_mutex_unlock(&s->mu);
    if (pending) {
        violation("aclrtDestroyStream(%p) with unfinished tasks: synchronize, aclrtStreamAbort or "
                  "aclrtDestroyStreamForce first",
                  stream);
        return acl_fail(ACL_ERROR_RT_INTERNAL_ERROR, "aclrtDestroyStream: the stream still has unfinished tasks");
    }
    stream_free(s);
    return ACL_SUCCESS;
}

/* Drops every queued operation of a live stream (abort / force-destroy). */
static void drop_pending(struct sim_stream *s)
{
    pthread_mutex_lock(&s->mu);
    struct sim_op *ops = take_ops(s);
    pthread_mutex_unlock(&s->mu);
    free_ops(ops);
}

SIM_EXPORT aclError aclrtDestroyStreamForce(aclrtStream stream)
{
    if (!stream_valid(stream)) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "aclrtDestroyStreamForce: invalid stream");
    }
    drop_pending(stream);
    stream_free(stream);
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtStreamAbort(aclrtStream stream)
{
    if (!stream_valid(stream)) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "aclrtStreamAbort: invalid stream");
    }
    drop_pending(stream);
    return ACL_SUCCESS;
}

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

SIM_EXPORT aclError aclrtSynchronizeStreamWithTimeout(aclrtStream stream, int32_t timeout)
{
    if (!stream_valid(stream)) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "aclrtSynchronizeStreamWithTimeout: invalid stream");
    }
    if (timeout < -1) {
        return acl_fail(ACL_ERROR_RT_PARAM_INVALID, "aclrtSynchronizeStreamWithTimeout: timeout %d < -1",
                        (int)timeout);
    }
    struct sim_stream *s = stream;
    int64_t deadline = now_us() + (int64_t)timeout * 1000;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        struct sim_op *op = s->head;
        if (op == NULL) {
            pthread_mutex_unlock(&s->mu);
            return ACL_SUCCESS;
        }
        if (op->hang) {
            pthread_mutex_unlock(&s->mu);
            /* The op stays queued: the stream is stuck, as a hung device stream would be. */
            for (;;) {
                int64_t left = timeout < 0 ? 10000 : deadline - now_us();
                if (left <= 0) {
                    return acl_fail(ACL_ERROR_RT_STREAM_SYNC_TIMEOUT, "stream sync timed out after %d ms",
                                    (int)timeout);
                }
                usleep((useconds_t)(left > 10000 ? 10000 : left));
                pthread_mutex_lock(&s->mu);
                int aborted = s->head != op;
                pthread_mutex_unlock(&s->mu);
                if (aborted) {
                    return acl_fail(ACL_ERROR_RT_STREAM_ABORT, "the stream was aborted");
                }
            }
        }
        s->head = op->next;
        if (s->head == NULL) {
            s->tail = NULL;
        }
        pthread_mutex_unlock(&s->mu);
        aclError rc = op->run(op->ctx, timeout < 0 ? -1 : deadline / 1000);
        free_op(op);
        if (rc == ACL_ERROR_RT_STREAM_SYNC_TIMEOUT) {
            return acl_fail(rc, "stream sync timed out after %d ms (a queued transfer was still running)",
                            (int)timeout);
        }
        if (rc != ACL_SUCCESS) {
            return acl_fail(rc, "a queued operation failed");
        }
    }
}

SIM_EXPORT aclError aclrtSynchronizeStream(aclrtStream stream)
{
    return aclrtSynchronizeStreamWithTimeout(stream, -1);
}

/* ------------------------------------------------------- the HCCL bridge */

static int device_count(void)
{
    pthread_once(&g_dev_once, devices_init);
    return g_phys_count;
}

static int is_a3(void)
{
    pthread_once(&g_dev_once, devices_init);
    return g_a3;
}

static const struct sim_acl_api g_api = {
    SIM_ACL_API_VERSION, current_phys, device_count, is_a3, stream_device, stream_push, device_alloc_contains,
    violation,
};

/* The runtime state the simulated HCCL libraries use (sim_internal.h). */
SIM_EXPORT const struct sim_acl_api *sim_ascend_acl_api(void)
{
    return &g_api;
}
#endif /* SIM_ACL_BASE_ONLY */
