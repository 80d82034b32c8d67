/*
 * sim_ascend.c -- TEST INFRASTRUCTURE ONLY. A simulated Ascend runtime.
 *
 * This is not Huawei code and not a driver. It exports the ACL and HCCL C symbols
 * that llmdd's `acl` backend resolves (see src/sys/ascend_decls.h) and implements
 * them over ordinary host memory, so the backend can be tested end to end on a
 * machine without CANN or an NPU. Nothing here talks to hardware.
 *
 * One source, two libraries:
 *   cc -shared -fPIC -O2 -o $DIR/libascendcl.so sim_ascend.c -lpthread
 *   cc -shared -fPIC -O2 -DSIM_BUILD_HCCL -o $DIR/libhccl.so sim_ascend.c -lpthread
 * Add -DSIM_OMIT_BATCH_GET to the second command to build an HCCL library that
 * lacks the HcclBatchGet export (tests use it for "symbol absent").
 * cpp_tests/sim_ascend/build.sh does both.
 *
 * Model:
 *   - aclrtMalloc / aclrtMallocHost: page-aligned host allocations.
 *   - aclrtMemcpy: plain memcpy for every kind (after checking count <= destMax).
 *   - streams: FIFO queues; ops run in order inside aclrtSynchronizeStream(WithTimeout).
 *     An op that "never completes" makes the sync wait out its timeout and return
 *     ACL_ERROR_RT_STREAM_SYNC_TIMEOUT (507046). The stream object is shared by the two
 *     libraries (same struct layout, one source), so HCCL ops queue on ACL streams.
 *   - HCCL communicator: built from an HCCL rank table (JSON). The simulator reads
 *     only server_list[].device[].{device_id, device_ip, rank_id} plus one extra field,
 *     device_port (string or number): the loopback TCP port that rank listens on.
 *     device_ip must be 127.0.0.1; anything else is rejected with HCCL_E_PARA. The
 *     simulator never contacts any address but 127.0.0.1.
 *   - HcclCommPrepare / HcclExchangeMemDesc: connect to each peer over loopback TCP
 *     (lower rank connects, higher rank accepts) and exchange (pid, address, size) of
 *     the regions bound to the comm (prepare) or described by HcclRegisterMem
 *     descriptors (exchange). Both ranks must make these calls in the same order.
 *     HcclCommPrepare's timeout is in seconds; HcclExchangeMemDesc's timeout is in
 *     seconds when > 0, else 30 s.
 *   - HcclBatchGet / HcclBatchPut: every remote range must lie inside a region the peer
 *     made known (else HCCL_E_PARA at submit time); the copy runs at stream sync with
 *     process_vm_readv / process_vm_writev against the peer's pid. A failed copy makes
 *     the sync return ACL_ERROR_RT_SUSPECT_REMOTE_ERROR (507057). On comm creation the
 *     process allows any same-user process to access its memory (PR_SET_PTRACER_ANY), so
 *     this works under Yama ptrace_scope=1.
 *
 * Failure injection (environment, read at call time):
 *   SIM_ASCEND_FAIL_MALLOC=1    aclrtMalloc and aclrtMallocHost return
 *                               ACL_ERROR_RT_MEMORY_ALLOCATION (207001).
 *   SIM_ASCEND_HANG_TRANSFER=1  HcclBatchGet / HcclBatchPut / aclrtMemcpyAsync queue an op
 *                               that never completes.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "../../src/sys/ascend_decls.h"

#define SIM_EXPORT __attribute__((visibility("default")))

/* ------------------------------------------------------------------ common */

struct sim_op {
    struct sim_op *next;
    int hang;                 /* never completes */
    aclError (*run)(void *ctx);
    void (*drop)(void *ctx);
    void *ctx;
};

#define SIM_STREAM_MAGIC 0x53544d31u /* "STM1" */

struct sim_stream {
    uint32_t magic;
    pthread_mutex_t mu;
    struct sim_op *head;
    struct sim_op *tail;
};

static int env_flag(const char *name)
{
    const char *v = getenv(name);
    return v != NULL && v[0] != '\0' && strcmp(v, "0") != 0;
}

__attribute__((unused)) static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int stream_valid(aclrtStream s)
{
    return s != NULL && ((struct sim_stream *)s)->magic == SIM_STREAM_MAGIC;
}

static void stream_push(struct sim_stream *s, struct sim_op *op)
{
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

__attribute__((unused)) static void free_op(struct sim_op *op)
{
    if (op->drop != NULL) {
        op->drop(op->ctx);
    }
    free(op);
}

static void free_ctx(void *ctx)
{
    free(ctx);
}

#ifndef SIM_BUILD_HCCL
/* ------------------------------------------------------------------ ACL */

static pthread_mutex_t g_init_mu = PTHREAD_MUTEX_INITIALIZER;
static int g_initialized;
static __thread char t_err[256];
static __thread int32_t t_device = -1;

static aclError acl_fail(aclError code, const char *what)
{
    snprintf(t_err, sizeof(t_err), "sim_ascend: %s (code %d)", what, code);
    return code;
}

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

SIM_EXPORT const char *aclGetRecentErrMsg(void)
{
    return t_err[0] != '\0' ? t_err : NULL;
}

SIM_EXPORT aclError aclrtSetDevice(int32_t deviceId)
{
    if (deviceId < 0 || deviceId >= 16) {
        return acl_fail(ACL_ERROR_RT_INVALID_DEVICEID, "device id out of range 0..15");
    }
    t_device = deviceId;
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtResetDevice(int32_t deviceId)
{
    if (deviceId < 0 || deviceId >= 16) {
        return acl_fail(ACL_ERROR_RT_INVALID_DEVICEID, "device id out of range 0..15");
    }
    if (t_device == deviceId) {
        t_device = -1;
    }
    return ACL_SUCCESS;
}

static aclError sim_alloc(void **ptr, size_t size)
{
    if (ptr == NULL || size == 0) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "null out-pointer or zero size");
    }
    if (env_flag("SIM_ASCEND_FAIL_MALLOC")) {
        return acl_fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "injected allocation failure");
    }
    void *p = NULL;
    if (posix_memalign(&p, 4096, size) != 0) {
        return acl_fail(ACL_ERROR_RT_MEMORY_ALLOCATION, "posix_memalign failed");
    }
    *ptr = p;
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy policy)
{
    if (policy > ACL_MEM_MALLOC_NORMAL_ONLY_P2P) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "unknown malloc policy");
    }
    return sim_alloc(devPtr, size);
}

SIM_EXPORT aclError aclrtMallocHost(void **hostPtr, size_t size)
{
    return sim_alloc(hostPtr, size);
}

SIM_EXPORT aclError aclrtFree(void *devPtr)
{
    if (devPtr == NULL) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "aclrtFree(NULL)");
    }
    free(devPtr);
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtFreeHost(void *hostPtr)
{
    if (hostPtr == NULL) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "aclrtFreeHost(NULL)");
    }
    free(hostPtr);
    return ACL_SUCCESS;
}

static aclError check_copy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind)
{
    if (kind > ACL_MEMCPY_DEFAULT) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "unknown memcpy kind");
    }
    if (count > destMax) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "count exceeds destMax");
    }
    if (count > 0 && (dst == NULL || src == NULL)) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "null pointer in memcpy");
    }
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind)
{
    aclError rc = check_copy(dst, destMax, src, count, kind);
    if (rc != ACL_SUCCESS) {
        return rc;
    }
    if (count > 0) {
        memmove(dst, src, count);
    }
    return ACL_SUCCESS;
}

struct copy_ctx {
    void *dst;
    const void *src;
    size_t len;
};

static aclError run_copy(void *ctx)
{
    struct copy_ctx *c = ctx;
    if (c->len > 0) {
        memmove(c->dst, c->src, c->len);
    }
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                                     aclrtStream stream)
{
    aclError rc = check_copy(dst, destMax, src, count, kind);
    if (rc != ACL_SUCCESS) {
        return rc;
    }
    if (!stream_valid(stream)) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "invalid stream");
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
    op->hang = env_flag("SIM_ASCEND_HANG_TRANSFER");
    op->run = run_copy;
    op->drop = free_ctx;
    op->ctx = c;
    stream_push(stream, op);
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtCreateStream(aclrtStream *stream)
{
    if (stream == NULL) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "null stream out-pointer");
    }
    struct sim_stream *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return acl_fail(ACL_ERROR_BAD_ALLOC, "out of host memory");
    }
    s->magic = SIM_STREAM_MAGIC;
    pthread_mutex_init(&s->mu, NULL);
    *stream = s;
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtDestroyStream(aclrtStream stream)
{
    if (!stream_valid(stream)) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "invalid stream");
    }
    struct sim_stream *s = stream;
    pthread_mutex_lock(&s->mu);
    struct sim_op *op = s->head;
    s->head = s->tail = NULL;
    s->magic = 0;
    pthread_mutex_unlock(&s->mu);
    while (op != NULL) {
        struct sim_op *next = op->next;
        free_op(op);
        op = next;
    }
    pthread_mutex_destroy(&s->mu);
    free(s);
    return ACL_SUCCESS;
}

SIM_EXPORT aclError aclrtSynchronizeStreamWithTimeout(aclrtStream stream, int32_t timeout)
{
    if (!stream_valid(stream)) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "invalid stream");
    }
    if (timeout < -1) {
        return acl_fail(ACL_ERROR_INVALID_PARAM, "timeout must be >= -1");
    }
    struct sim_stream *s = stream;
    int64_t deadline = now_ms() + timeout;
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
                int64_t left = timeout < 0 ? 1000 : deadline - now_ms();
                if (left <= 0) {
                    return acl_fail(ACL_ERROR_RT_STREAM_SYNC_TIMEOUT, "stream sync timed out");
                }
                usleep((useconds_t)(left > 1000 ? 1000 : left) * 1000u);
            }
        }
        s->head = op->next;
        if (s->head == NULL) {
            s->tail = NULL;
        }
        pthread_mutex_unlock(&s->mu);
        aclError rc = op->run(op->ctx);
        free_op(op);
        if (rc != ACL_SUCCESS) {
            return acl_fail(rc, "a queued operation failed");
        }
    }
}

SIM_EXPORT aclError aclrtSynchronizeStream(aclrtStream stream)
{
    return aclrtSynchronizeStreamWithTimeout(stream, -1);
}

#else /* SIM_BUILD_HCCL */
/* ------------------------------------------------------------------ HCCL */

#define SIM_MAX_RANKS 16
#define SIM_COMM_MAGIC 0x434f4d31u /* "COM1" */
#define SIM_GMEM_MAGIC 0x474d454du /* "GMEM" */
#define SIM_WIRE_MAGIC 0x53494d48u /* "SIMH" */
#define SIM_DESC_MAGIC "SIMDESC1"
#define MSG_BOUND 1u
#define MSG_DESCS 2u

struct sim_region {
    uint64_t pid;
    uint64_t addr;
    uint64_t size;
};

struct sim_desc {
    char magic[8];
    struct sim_region region;
    uint32_t local_rank;
    uint32_t remote_rank;
};

struct sim_peer {
    int present;
    int port;
    int fd;
    struct sim_region *regions;
    size_t nregions;
};

struct sim_gmem {
    uint32_t magic;
    HcclMem mem;
};

struct sim_comm {
    uint32_t magic;
    uint32_t rank;
    uint32_t nranks;
    int listen_fd;
    pthread_mutex_t mu;
    struct sim_peer peers[SIM_MAX_RANKS];
    struct sim_gmem *bound[256];
    size_t nbound;
};

struct msg_header {
    uint32_t magic;
    uint32_t type;
    uint32_t count;
    uint32_t rank;
};

static int comm_valid(HcclComm c)
{
    return c != NULL && ((struct sim_comm *)c)->magic == SIM_COMM_MAGIC;
}

/* ---- tiny rank-table reader ---- */

static const char *obj_start(const char *base, const char *p)
{
    int depth = 0;
    while (p > base) {
        p--;
        if (*p == '}') {
            depth++;
        } else if (*p == '{') {
            if (depth == 0) {
                return p;
            }
            depth--;
        }
    }
    return NULL;
}

static const char *obj_end(const char *p)
{
    int depth = 0;
    for (; *p != '\0'; p++) {
        if (*p == '{') {
            depth++;
        } else if (*p == '}') {
            if (--depth == 0) {
                return p;
            }
        }
    }
    return NULL;
}

/* Copies the value of "key" (string or bare number) found in [start, end) into out. */
static int get_field(const char *start, const char *end, const char *key, char *out, size_t outlen)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\"", key);
    size_t plen = strlen(pat);
    for (const char *p = start; p + plen <= end; p++) {
        if (memcmp(p, pat, plen) != 0) {
            continue;
        }
        const char *v = p + plen;
        while (v < end && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')) {
            v++;
        }
        if (v >= end || *v != ':') {
            continue;
        }
        v++;
        while (v < end && (*v == ' ' || *v == '\t' || *v == '\n' || *v == '\r')) {
            v++;
        }
        size_t n = 0;
        if (v < end && *v == '"') {
            v++;
            while (v < end && *v != '"' && n + 1 < outlen) {
                out[n++] = *v++;
            }
        } else {
            while (v < end && ((*v >= '0' && *v <= '9') || *v == '-') && n + 1 < outlen) {
                out[n++] = *v++;
            }
        }
        out[n] = '\0';
        return n > 0 ? 0 : -1;
    }
    return -1;
}

static HcclResult parse_rank_table(const char *json, struct sim_comm *c)
{
    const char *p = json;
    while ((p = strstr(p, "\"rank_id\"")) != NULL) {
        const char *s = obj_start(json, p);
        const char *e = s != NULL ? obj_end(s) : NULL;
        if (s == NULL || e == NULL) {
            return HCCL_E_PARA;
        }
        char rank[16], ip[64], port[16], dev[16];
        if (get_field(s, e, "rank_id", rank, sizeof(rank)) != 0 || get_field(s, e, "device_ip", ip, sizeof(ip)) != 0 ||
            get_field(s, e, "device_port", port, sizeof(port)) != 0 ||
            get_field(s, e, "device_id", dev, sizeof(dev)) != 0) {
            return HCCL_E_PARA;
        }
        long r = strtol(rank, NULL, 10);
        long pt = strtol(port, NULL, 10);
        if (r < 0 || r >= SIM_MAX_RANKS || pt <= 0 || pt > 65535 || c->peers[r].present) {
            return HCCL_E_PARA;
        }
        if (strcmp(ip, "127.0.0.1") != 0) {
            return HCCL_E_PARA; /* the simulator only ever talks to loopback */
        }
        c->peers[r].present = 1;
        c->peers[r].port = (int)pt;
        c->peers[r].fd = -1;
        if ((uint32_t)r + 1 > c->nranks) {
            c->nranks = (uint32_t)r + 1;
        }
        p = e;
    }
    for (uint32_t r = 0; r < c->nranks; r++) {
        if (!c->peers[r].present) {
            return HCCL_E_PARA; /* ranks must be 0..n-1 */
        }
    }
    return c->nranks > 0 ? HCCL_SUCCESS : HCCL_E_PARA;
}

/* ---- socket helpers ---- */

static HcclResult io_all(int fd, void *buf, size_t len, int64_t deadline, int sending)
{
    char *p = buf;
    while (len > 0) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            return HCCL_E_TIMEOUT;
        }
        struct pollfd pfd = {fd, sending ? POLLOUT : POLLIN, 0};
        int pr = poll(&pfd, 1, (int)(left > 1000000 ? 1000000 : left));
        if (pr < 0 && errno == EINTR) {
            continue;
        }
        if (pr <= 0) {
            return pr == 0 ? HCCL_E_TIMEOUT : HCCL_E_TCP_TRANSFER;
        }
        ssize_t n = sending ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (n <= 0) {
            return HCCL_E_TCP_TRANSFER;
        }
        p += n;
        len -= (size_t)n;
    }
    return HCCL_SUCCESS;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a;
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* 127.0.0.1, never anything else */
    return a;
}

static HcclResult connect_peer(struct sim_comm *c, uint32_t r, int64_t deadline)
{
    if (c->peers[r].fd >= 0) {
        return HCCL_SUCCESS;
    }
    if (c->rank < r) {
        struct sockaddr_in a = loopback(c->peers[r].port);
        for (;;) {
            int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                return HCCL_E_SYSCALL;
            }
            if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
                int one = 1;
                setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                struct msg_header h = {SIM_WIRE_MAGIC, 0, 0, c->rank};
                HcclResult rc = io_all(fd, &h, sizeof(h), deadline, 1);
                if (rc != HCCL_SUCCESS) {
                    close(fd);
                    return rc;
                }
                c->peers[r].fd = fd;
                return HCCL_SUCCESS;
            }
            close(fd);
            if (now_ms() >= deadline) {
                return HCCL_E_TIMEOUT;
            }
            usleep(10000);
        }
    }
    /* Higher rank: accept until the wanted peer has connected. */
    while (c->peers[r].fd < 0) {
        int64_t left = deadline - now_ms();
        if (left <= 0) {
            return HCCL_E_TIMEOUT;
        }
        struct pollfd pfd = {c->listen_fd, POLLIN, 0};
        int pr = poll(&pfd, 1, (int)(left > 1000000 ? 1000000 : left));
        if (pr <= 0) {
            if (pr < 0 && errno == EINTR) {
                continue;
            }
            return pr == 0 ? HCCL_E_TIMEOUT : HCCL_E_TCP_CONNECT;
        }
        int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        struct msg_header h;
        if (io_all(fd, &h, sizeof(h), deadline, 0) != HCCL_SUCCESS || h.magic != SIM_WIRE_MAGIC ||
            h.rank >= c->nranks || h.rank == c->rank || c->peers[h.rank].fd >= 0) {
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c->peers[h.rank].fd = fd;
    }
    return HCCL_SUCCESS;
}

static HcclResult send_regions(struct sim_comm *c, uint32_t r, uint32_t type, const struct sim_region *regs,
                               uint32_t n, int64_t deadline)
{
    struct msg_header h = {SIM_WIRE_MAGIC, type, n, c->rank};
    HcclResult rc = io_all(c->peers[r].fd, &h, sizeof(h), deadline, 1);
    if (rc == HCCL_SUCCESS && n > 0) {
        rc = io_all(c->peers[r].fd, (void *)regs, n * sizeof(*regs), deadline, 1);
    }
    return rc;
}

static HcclResult recv_regions(struct sim_comm *c, uint32_t r, uint32_t type, struct sim_region **out,
                               uint32_t *n, int64_t deadline)
{
    struct msg_header h;
    HcclResult rc = io_all(c->peers[r].fd, &h, sizeof(h), deadline, 0);
    if (rc != HCCL_SUCCESS) {
        return rc;
    }
    if (h.magic != SIM_WIRE_MAGIC || h.type != type || h.rank != r || h.count > 65536) {
        return HCCL_E_INTERNAL; /* peers called prepare / exchange in different orders */
    }
    struct sim_region *regs = calloc(h.count + 1, sizeof(*regs));
    if (regs == NULL) {
        return HCCL_E_MEMORY;
    }
    if (h.count > 0) {
        rc = io_all(c->peers[r].fd, regs, h.count * sizeof(*regs), deadline, 0);
        if (rc != HCCL_SUCCESS) {
            free(regs);
            return rc;
        }
    }
    *out = regs;
    *n = h.count;
    return HCCL_SUCCESS;
}

static HcclResult add_peer_regions(struct sim_peer *p, const struct sim_region *regs, uint32_t n)
{
    struct sim_region *grown = realloc(p->regions, (p->nregions + n + 1) * sizeof(*grown));
    if (grown == NULL) {
        return HCCL_E_MEMORY;
    }
    memcpy(grown + p->nregions, regs, n * sizeof(*regs));
    p->regions = grown;
    p->nregions += n;
    return HCCL_SUCCESS;
}

/* ---- API ---- */

SIM_EXPORT const char *HcclGetErrorString(HcclResult code)
{
    switch (code) {
    case HCCL_SUCCESS: return "success";
    case HCCL_E_PARA: return "parameter error";
    case HCCL_E_PTR: return "empty pointer";
    case HCCL_E_MEMORY: return "memory error";
    case HCCL_E_INTERNAL: return "internal error";
    case HCCL_E_NOT_SUPPORT: return "not support feature";
    case HCCL_E_UNAVAIL: return "resource unavailable";
    case HCCL_E_SYSCALL: return "call system interface error";
    case HCCL_E_TIMEOUT: return "timeout";
    case HCCL_E_TCP_CONNECT: return "tcp connect fail";
    case HCCL_E_TCP_TRANSFER: return "tcp transfer fail";
    default: return "unknown hccl error";
    }
}

SIM_EXPORT HcclResult HcclCommInitClusterInfoMemConfig(const char *rankTableString, uint32_t rank,
                                                       HcclCommConfig *config, HcclComm *comm)
{
    if (rankTableString == NULL || config == NULL || comm == NULL) {
        return HCCL_E_PTR;
    }
    uint32_t magic;
    memcpy(&magic, config->reserved + sizeof(size_t), sizeof(magic));
    if (magic != HCCL_COMM_CONFIG_MAGIC_WORD) {
        return HCCL_E_PARA; /* config not initialised like HcclCommConfigInit does */
    }
    struct sim_comm *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return HCCL_E_MEMORY;
    }
    c->listen_fd = -1;
    HcclResult rc = parse_rank_table(rankTableString, c);
    if (rc != HCCL_SUCCESS || rank >= c->nranks) {
        free(c);
        return HCCL_E_PARA;
    }
    c->rank = rank;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        free(c);
        return HCCL_E_SYSCALL;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = loopback(c->peers[rank].port);
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(fd, SIM_MAX_RANKS) != 0) {
        close(fd);
        free(c);
        return HCCL_E_TCP_CONNECT;
    }
    c->listen_fd = fd;
    pthread_mutex_init(&c->mu, NULL);
    c->magic = SIM_COMM_MAGIC;
#ifdef PR_SET_PTRACER
    /* Let the peer process (same user) use process_vm_readv/writev on us. */
    (void)prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
#endif
    *comm = c;
    return HCCL_SUCCESS;
}

SIM_EXPORT HcclResult HcclCommDestroy(HcclComm comm)
{
    if (!comm_valid(comm)) {
        return HCCL_E_PARA;
    }
    struct sim_comm *c = comm;
    c->magic = 0;
    for (uint32_t r = 0; r < c->nranks; r++) {
        if (c->peers[r].fd >= 0) {
            close(c->peers[r].fd);
        }
        free(c->peers[r].regions);
    }
    if (c->listen_fd >= 0) {
        close(c->listen_fd);
    }
    pthread_mutex_destroy(&c->mu);
    free(c);
    return HCCL_SUCCESS;
}

SIM_EXPORT HcclResult HcclRegisterMem(HcclComm comm, uint32_t remoteRank, int type, void *addr, uint64_t size,
                                      HcclMemDesc *desc)
{
    if (!comm_valid(comm) || desc == NULL || addr == NULL || size == 0 ||
        (type != HCCL_MEM_TYPE_DEVICE && type != HCCL_MEM_TYPE_HOST)) {
        return HCCL_E_PARA;
    }
    struct sim_comm *c = comm;
    if (remoteRank >= c->nranks || remoteRank == c->rank) {
        return HCCL_E_PARA;
    }
    struct sim_desc d;
    memset(&d, 0, sizeof(d));
    memcpy(d.magic, SIM_DESC_MAGIC, 8);
    d.region.pid = (uint64_t)getpid();
    d.region.addr = (uint64_t)(uintptr_t)addr;
    d.region.size = size;
    d.local_rank = c->rank;
    d.remote_rank = remoteRank;
    memset(desc, 0, sizeof(*desc));
    memcpy(desc->desc, &d, sizeof(d));
    return HCCL_SUCCESS;
}

SIM_EXPORT HcclResult HcclDeregisterMem(HcclComm comm, HcclMemDesc *desc)
{
    if (!comm_valid(comm) || desc == NULL || memcmp(desc->desc, SIM_DESC_MAGIC, 8) != 0) {
        return HCCL_E_PARA;
    }
    memset(desc, 0, sizeof(*desc));
    return HCCL_SUCCESS;
}

SIM_EXPORT HcclResult HcclExchangeMemDesc(HcclComm comm, uint32_t remoteRank, HcclMemDescs *local, int timeout,
                                          HcclMemDescs *remote, uint32_t *actualNum)
{
    if (!comm_valid(comm) || local == NULL || remote == NULL || actualNum == NULL ||
        (local->arrayLength > 0 && local->array == NULL) || (remote->arrayLength > 0 && remote->array == NULL)) {
        return HCCL_E_PARA;
    }
    struct sim_comm *c = comm;
    if (remoteRank >= c->nranks || remoteRank == c->rank) {
        return HCCL_E_PARA;
    }
    struct sim_region *mine = calloc(local->arrayLength + 1, sizeof(*mine));
    if (mine == NULL) {
        return HCCL_E_MEMORY;
    }
    for (uint32_t i = 0; i < local->arrayLength; i++) {
        struct sim_desc d;
        memcpy(&d, local->array[i].desc, sizeof(d));
        if (memcmp(d.magic, SIM_DESC_MAGIC, 8) != 0 || d.remote_rank != remoteRank) {
            free(mine);
            return HCCL_E_PARA;
        }
        mine[i] = d.region;
    }
    int64_t deadline = now_ms() + (timeout > 0 ? (int64_t)timeout * 1000 : 30000);
    pthread_mutex_lock(&c->mu);
    HcclResult rc = connect_peer(c, remoteRank, deadline);
    struct sim_region *theirs = NULL;
    uint32_t n = 0;
    if (rc == HCCL_SUCCESS) {
        rc = send_regions(c, remoteRank, MSG_DESCS, mine, local->arrayLength, deadline);
    }
    if (rc == HCCL_SUCCESS) {
        rc = recv_regions(c, remoteRank, MSG_DESCS, &theirs, &n, deadline);
    }
    if (rc == HCCL_SUCCESS) {
        rc = add_peer_regions(&c->peers[remoteRank], theirs, n);
    }
    pthread_mutex_unlock(&c->mu);
    free(mine);
    if (rc != HCCL_SUCCESS) {
        free(theirs);
        return rc;
    }
    for (uint32_t i = 0; i < n && i < remote->arrayLength; i++) {
        struct sim_desc d;
        memset(&d, 0, sizeof(d));
        memcpy(d.magic, SIM_DESC_MAGIC, 8);
        d.region = theirs[i];
        d.local_rank = remoteRank;
        d.remote_rank = c->rank;
        memset(&remote->array[i], 0, sizeof(remote->array[i]));
        memcpy(remote->array[i].desc, &d, sizeof(d));
    }
    *actualNum = n;
    free(theirs);
    return HCCL_SUCCESS;
}

SIM_EXPORT HcclResult HcclRegisterGlobalMem(const HcclMem *mem, void **memHandle)
{
    if (mem == NULL || memHandle == NULL || mem->addr == NULL || mem->size == 0 || mem->type >= HCCL_MEM_TYPE_NUM) {
        return HCCL_E_PARA;
    }
    struct sim_gmem *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        return HCCL_E_MEMORY;
    }
    g->magic = SIM_GMEM_MAGIC;
    g->mem = *mem;
    *memHandle = g;
    return HCCL_SUCCESS;
}

SIM_EXPORT HcclResult HcclDeregisterGlobalMem(void *memHandle)
{
    struct sim_gmem *g = memHandle;
    if (g == NULL || g->magic != SIM_GMEM_MAGIC) {
        return HCCL_E_PARA;
    }
    g->magic = 0;
    free(g);
    return HCCL_SUCCESS;
}

SIM_EXPORT HcclResult HcclCommBindMem(HcclComm comm, void *memHandle)
{
    struct sim_gmem *g = memHandle;
    if (!comm_valid(comm) || g == NULL || g->magic != SIM_GMEM_MAGIC) {
        return HCCL_E_PARA;
    }
    struct sim_comm *c = comm;
    pthread_mutex_lock(&c->mu);
    HcclResult rc = HCCL_SUCCESS;
    if (c->nbound >= sizeof(c->bound) / sizeof(c->bound[0])) {
        rc = HCCL_E_UNAVAIL;
    } else {
        c->bound[c->nbound++] = g;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

SIM_EXPORT HcclResult HcclCommUnbindMem(HcclComm comm, void *memHandle)
{
    if (!comm_valid(comm) || memHandle == NULL) {
        return HCCL_E_PARA;
    }
    struct sim_comm *c = comm;
    HcclResult rc = HCCL_E_NOT_FOUND;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->nbound; i++) {
        if (c->bound[i] == memHandle) {
            c->bound[i] = c->bound[--c->nbound];
            rc = HCCL_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

SIM_EXPORT HcclResult HcclCommPrepare(HcclComm comm, const HcclPrepareConfig *prepareConfig, const int timeout)
{
    if (!comm_valid(comm) || prepareConfig == NULL || prepareConfig->topoType != HCCL_TOPO_FULLMESH || timeout < 0) {
        return HCCL_E_PARA;
    }
    struct sim_comm *c = comm;
    int64_t deadline = now_ms() + (int64_t)timeout * 1000;
    pthread_mutex_lock(&c->mu);
    struct sim_region mine[256];
    uint32_t nmine = 0;
    for (size_t i = 0; i < c->nbound; i++) {
        mine[nmine].pid = (uint64_t)getpid();
        mine[nmine].addr = (uint64_t)(uintptr_t)c->bound[i]->mem.addr;
        mine[nmine].size = c->bound[i]->mem.size;
        nmine++;
    }
    HcclResult rc = HCCL_SUCCESS;
    for (uint32_t r = 0; r < c->nranks && rc == HCCL_SUCCESS; r++) {
        if (r == c->rank) {
            continue;
        }
        rc = connect_peer(c, r, deadline);
        if (rc == HCCL_SUCCESS) {
            rc = send_regions(c, r, MSG_BOUND, mine, nmine, deadline);
        }
        struct sim_region *theirs = NULL;
        uint32_t n = 0;
        if (rc == HCCL_SUCCESS) {
            rc = recv_regions(c, r, MSG_BOUND, &theirs, &n, deadline);
        }
        if (rc == HCCL_SUCCESS) {
            rc = add_peer_regions(&c->peers[r], theirs, n);
        }
        free(theirs);
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

struct batch_entry {
    uint64_t local;
    uint64_t remote;
    uint64_t len;
};

struct batch_ctx {
    pid_t pid;
    int put;
    uint32_t n;
    struct batch_entry e[];
};

static aclError run_batch(void *ctx)
{
    struct batch_ctx *b = ctx;
    for (uint32_t i = 0; i < b->n; i++) {
        uint64_t done = 0;
        while (done < b->e[i].len) {
            struct iovec l = {(void *)(uintptr_t)(b->e[i].local + done), (size_t)(b->e[i].len - done)};
            struct iovec r = {(void *)(uintptr_t)(b->e[i].remote + done), (size_t)(b->e[i].len - done)};
            ssize_t n = b->put ? process_vm_writev(b->pid, &l, 1, &r, 1, 0) : process_vm_readv(b->pid, &l, 1, &r, 1, 0);
            if (n <= 0) {
                if (n < 0 && errno == EINTR) {
                    continue;
                }
                return ACL_ERROR_RT_SUSPECT_REMOTE_ERROR;
            }
            done += (uint64_t)n;
        }
    }
    return ACL_SUCCESS;
}

static uint64_t elem_size(HcclDataType t)
{
    switch (t) {
    case HCCL_DATA_TYPE_INT8:
    case HCCL_DATA_TYPE_UINT8: return 1;
    case HCCL_DATA_TYPE_INT16:
    case HCCL_DATA_TYPE_FP16: return 2;
    case HCCL_DATA_TYPE_INT32:
    case HCCL_DATA_TYPE_FP32: return 4;
    case HCCL_DATA_TYPE_INT64:
    case HCCL_DATA_TYPE_UINT64: return 8;
    default: return 0;
    }
}

static int range_ok(const struct sim_peer *p, uint64_t addr, uint64_t len)
{
    for (size_t i = 0; i < p->nregions; i++) {
        const struct sim_region *g = &p->regions[i];
        if (addr >= g->addr && len <= g->size && addr - g->addr <= g->size - len) {
            return 1;
        }
    }
    return 0;
}

static HcclResult submit_batch(HcclComm comm, uint32_t remoteRank, HcclOneSideOpDesc *desc, uint32_t descNum,
                               aclrtStream stream, int put)
{
    if (!comm_valid(comm) || !stream_valid(stream) || (descNum > 0 && desc == NULL)) {
        return HCCL_E_PARA;
    }
    struct sim_comm *c = comm;
    if (remoteRank >= c->nranks || remoteRank == c->rank) {
        return HCCL_E_PARA;
    }
    struct batch_ctx *b = calloc(1, sizeof(*b) + (size_t)descNum * sizeof(struct batch_entry));
    struct sim_op *op = calloc(1, sizeof(*op));
    if (b == NULL || op == NULL) {
        free(b);
        free(op);
        return HCCL_E_MEMORY;
    }
    pthread_mutex_lock(&c->mu);
    const struct sim_peer *p = &c->peers[remoteRank];
    HcclResult rc = p->fd >= 0 && p->nregions > 0 ? HCCL_SUCCESS : HCCL_E_UNAVAIL;
    for (uint32_t i = 0; i < descNum && rc == HCCL_SUCCESS; i++) {
        uint64_t es = elem_size(desc[i].dataType);
        if (es == 0 || desc[i].localAddr == NULL || desc[i].count > UINT64_MAX / es) {
            rc = HCCL_E_PARA;
            break;
        }
        uint64_t len = desc[i].count * es;
        uint64_t remote = (uint64_t)(uintptr_t)desc[i].remoteAddr;
        if (!range_ok(p, remote, len)) {
            rc = HCCL_E_PARA; /* outside anything the peer registered */
            break;
        }
        b->e[i].local = (uint64_t)(uintptr_t)desc[i].localAddr;
        b->e[i].remote = remote;
        b->e[i].len = len;
    }
    b->pid = p->nregions > 0 ? (pid_t)p->regions[0].pid : 0;
    pthread_mutex_unlock(&c->mu);
    if (rc != HCCL_SUCCESS) {
        free(b);
        free(op);
        return rc;
    }
    b->put = put;
    b->n = descNum;
    op->hang = env_flag("SIM_ASCEND_HANG_TRANSFER");
    op->run = run_batch;
    op->drop = free_ctx;
    op->ctx = b;
    stream_push(stream, op);
    return HCCL_SUCCESS;
}

SIM_EXPORT HcclResult HcclBatchPut(HcclComm comm, uint32_t remoteRank, HcclOneSideOpDesc *desc, uint32_t descNum,
                                   aclrtStream stream)
{
    return submit_batch(comm, remoteRank, desc, descNum, stream, 1);
}

#ifndef SIM_OMIT_BATCH_GET
SIM_EXPORT HcclResult HcclBatchGet(HcclComm comm, uint32_t remoteRank, HcclOneSideOpDesc *desc, uint32_t descNum,
                                   aclrtStream stream)
{
    return submit_batch(comm, remoteRank, desc, descNum, stream, 0);
}
#endif

#endif /* SIM_BUILD_HCCL */
