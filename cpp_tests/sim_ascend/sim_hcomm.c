/*
 * sim_hcomm.c -- TEST INFRASTRUCTURE ONLY. The HCCL half of a simulated Ascend
 * runtime: the one-sided service of hcomm (HcclCommInitClusterInfoMemConfig,
 * global memory, bind, prepare, batch get/put).
 *
 * This is not Huawei code and talks to no hardware. It implements the HCCL C
 * symbols llmdd's `acl` backend resolves (src/sys/ascend_decls.h) between
 * processes of one host, and holds the caller to every contract of the real
 * library that it can model, answering with the real HcclResult codes, so that a
 * backend bug fails the tests here as it would fail on an A2/A3 machine. The
 * contracts and their public sources are listed in docs/ascend.md and
 * ../shared/notes/ascend-contracts.md.
 *
 * Builds: libhcomm.so (the CANN >= 8.5 layout), or the same code as libhccl.so
 * (the pre-8.5 layout, where libhccl.so held the one-sided service);
 * -DSIM_OMIT_BATCH_GET drops the HcclBatchGet export.
 * It finds the simulated ACL runtime (sim_acl.c) in its own directory.
 *
 * Model:
 *   - A communicator is built from a rank table (JSON). Each rank's traffic goes
 *     over abstract UNIX sockets named after the communicator name and the table:
 *     no IP traffic at all. device_ip is checked as an address, never dialled:
 *     device N's NIC address is 192.0.2.(N+1) (sim_internal.h).
 *   - HcclCommPrepare connects every pair once (the lower rank dials) and exchanges
 *     the memory each side bound; batch get/put become process_vm_readv /
 *     process_vm_writev against the peer's pid when the stream is synchronized.
 *   - Transport per pair: HCCS (intra-server: A2 same server_id, A3 same super pod;
 *     with a 1.0 table on A3 every pair) unless HCCL_INTRA_ROCE_ENABLE=1 or the peer is
 *     elsewhere, then RDMA. Over HCCS, host memory is not exported.
 *
 * Contracts enforced (HcclResult code):
 *   rank table  version "1.0" or "1.2"; status "completed"; server_count equal to
 *               the servers listed; string fields; rank_id 0..n-1 once each;
 *               device_id below the device count and unique per server; device_ip
 *               an IP literal, unique in the table; 1.2: super_device_id per device
 *               and super_pod_list (E_PARA). This rank's device_id must be the
 *               physical id of the calling thread's device (E_UNAVAIL) and its
 *               device_ip that device's NIC address (E_PARA); on A3 with 1.2 its
 *               super ids must be the device's (E_PARA).
 *   init        a current device (E_RUNTIME); a config from HcclCommConfigInit
 *               (magic word, E_PARA); a non-empty name not in use on the device
 *               (E_PARA); no other init running in the process (E_UNAVAIL: HCCL's
 *               init is not parallel-safe; the sim holds it SIM_ASCEND_INIT_MS,
 *               default 20 ms, so overlap is seen).
 *   memory      HcclRegisterGlobalMem needs a current device; device <= 64 GB, host
 *               <= 1 TB; an identical range returns the same handle (no reference
 *               count); an overlapping one is E_PARA. Deregistering a bound handle is
 *               E_PARA (violation). Binding a handle twice, or one of another
 *               device, is E_PARA. Memory bound after Prepare is accepted but never
 *               reaches the peer (Prepare is one-shot).
 *   prepare     a current device, the communicator's (E_RUNTIME); full mesh;
 *               timeout in s (0: 120 s, -1: forever). Over HCCS every bound device
 *               region must lie inside an aclrtMalloc allocation or start 2 MB
 *               aligned (E_PARA: "link may fail"). A3 with a 1.0 table cannot reach a
 *               peer on another server (E_INTERNAL: the IPC path needs
 *               super_device_id). SIM_ASCEND_PREPARE_DELAY_MS delays the connection
 *               set-up (a slow fabric).
 *   batch       <= 256 descriptors (E_PARA); after Prepare (E_NOT_FOUND); a stream of
 *               the communicator's device (E_PARA); each descriptor's local range
 *               inside one region bound before Prepare and its remote range inside
 *               one region the peer exported to this rank (E_INTERNAL); the
 *               descriptors before a failing one stay queued.
 *   destroy     no memory still bound (E_PARA, violation).
 * Violations on teardown paths (whose codes callers ignore) are also recorded in
 * the ACL library's violation log (sim_ascend_violations()).
 *
 * HcclGetErrorString appends the simulator's reason for the calling thread's last
 * failure to the code's generic text (real HCCL writes such detail to its log).
 *
 * Test hook: sim_ascend_nic_listeners(phy) counts the device-NIC listeners the
 * process opened on device `phy`, keyed by (device_ip, device_port; 16666 when the
 * table gives none), as real HCCL keys them; like HCCL it keeps them until every
 * global memory registration of the process is gone.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sim_internal.h"
#include "sim_json.h"

#define SIM_MAX_RANKS 64
#define SIM_COMM_MAGIC 0x434f4d32u /* "COM2" */
#define SIM_GMEM_MAGIC 0x474d454du /* "GMEM" */
#define SIM_WIRE_MAGIC 0x53494d49u /* "SIMI" */
#define SIM_DEFAULT_PORT 16666
#define SIM_2MB (2ull << 20)

/* ------------------------------------------------------------ the runtime */

static const struct sim_acl_api *g_acl;
static pthread_once_t g_acl_once = PTHREAD_ONCE_INIT;

static void find_acl(void)
{
    Dl_info info;
    if (dladdr((void *)find_acl, &info) == 0 || info.dli_fname == NULL) {
        return;
    }
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s", info.dli_fname);
    char *slash = strrchr(dir, '/');
    if (slash == NULL) {
        return;
    }
    *slash = '\0';
    static const char *names[] = {"libacl_rt.so", "libascendcl.so"};
    for (int i = 0; i < 2 && g_acl == NULL; i++) {
        char path[4200];
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
        if (h == NULL) {
            continue;
        }
        const struct sim_acl_api *(*get)(void) = (const struct sim_acl_api *(*)(void))dlsym(h, "sim_ascend_acl_api");
        if (get != NULL && get()->version == SIM_ACL_API_VERSION) {
            g_acl = get(); /* keeps the handle: the runtime stays loaded */
        } else {
            dlclose(h);
        }
    }
}

static const struct sim_acl_api *acl(void)
{
    pthread_once(&g_acl_once, find_acl);
    return g_acl;
}

static __thread char t_err[512];
static __thread int t_err_code;

static HcclResult fail(HcclResult code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static HcclResult fail(HcclResult code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(t_err, sizeof(t_err), fmt, ap);
    va_end(ap);
    t_err_code = (int)code;
    if (getenv("SIM_ASCEND_TRACE") != NULL) {
        fprintf(stderr, "sim_ascend hccl (pid %d): code %d: %s\n", (int)getpid(), (int)code, t_err);
    }
    return code;
}

static void violation(const char *what)
{
    if (acl() != NULL) {
        acl()->violation("%s", what);
    }
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Physical id of the calling thread's device, -1 if none (or no runtime). */
static int current_device(void)
{
    return acl() != NULL ? acl()->current_device() : -1;
}

/* --------------------------------------------------------- global memory */

struct sim_gmem {
    uint32_t magic;
    int phy;
    HcclMem mem;
    int bound; /* communicators it is bound to */
    struct sim_gmem *next;
};

struct listener {
    int phy;
    char ip[64];
    int port;
    struct listener *next;
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sim_gmem *g_gmems;
static struct listener *g_listeners;
static int g_init_busy;

static int gmem_live(const struct sim_gmem *g)
{
    for (const struct sim_gmem *x = g_gmems; x != NULL; x = x->next) {
        if (x == g) {
            return x->magic == SIM_GMEM_MAGIC;
        }
    }
    return 0;
}

/* Adds the device-NIC listener (phy, ip, port) if new. g_mu held. */
static void listener_add(int phy, const char *ip, int port)
{
    for (struct listener *l = g_listeners; l != NULL; l = l->next) {
        if (l->phy == phy && l->port == port && strcmp(l->ip, ip) == 0) {
            return;
        }
    }
    struct listener *l = calloc(1, sizeof(*l));
    if (l == NULL) {
        return;
    }
    l->phy = phy;
    snprintf(l->ip, sizeof(l->ip), "%s", ip);
    l->port = port;
    l->next = g_listeners;
    g_listeners = l;
}

/* Test hook: device-NIC listeners this process opened on device `phy`. */
SIM_EXPORT int sim_ascend_nic_listeners(int phy)
{
    int n = 0;
    pthread_mutex_lock(&g_mu);
    for (struct listener *l = g_listeners; l != NULL; l = l->next) {
        n += l->phy == phy;
    }
    pthread_mutex_unlock(&g_mu);
    return n;
}

SIM_EXPORT HcclResult HcclRegisterGlobalMem(const HcclMem *mem, void **memHandle)
{
    if (mem == NULL || memHandle == NULL) {
        return fail(HCCL_E_PTR, "HcclRegisterGlobalMem: null argument");
    }
    if (mem->addr == NULL || mem->size == 0 || mem->type >= HCCL_MEM_TYPE_NUM) {
        return fail(HCCL_E_PARA, "HcclRegisterGlobalMem: empty region or bad type %d", (int)mem->type);
    }
    uint64_t limit = mem->type == HCCL_MEM_TYPE_DEVICE ? (64ull << 30) : (1ull << 40);
    if (mem->size > limit) {
        return fail(HCCL_E_PARA, "HcclRegisterGlobalMem: %llu bytes exceed the %s limit",
                    (unsigned long long)mem->size, mem->type == HCCL_MEM_TYPE_DEVICE ? "64 GB device" : "1 TB host");
    }
    int phy = current_device();
    if (phy < 0) {
        return fail(HCCL_E_RUNTIME, "HcclRegisterGlobalMem: no current device on this thread");
    }
    uint64_t a = (uint64_t)(uintptr_t)mem->addr, n = mem->size;
    pthread_mutex_lock(&g_mu);
    for (struct sim_gmem *g = g_gmems; g != NULL; g = g->next) {
        uint64_t ga = (uint64_t)(uintptr_t)g->mem.addr, gn = g->mem.size;
        if (g->phy != phy || a + n <= ga || ga + gn <= a) {
            continue;
        }
        if (ga == a && gn == n && g->mem.type == mem->type) {
            *memHandle = g; /* identical range: the same handle, no reference count */
            pthread_mutex_unlock(&g_mu);
            return HCCL_SUCCESS;
        }
        pthread_mutex_unlock(&g_mu);
        return fail(HCCL_E_PARA, "HcclRegisterGlobalMem: [0x%llx, +%llu) overlaps the registered [0x%llx, +%llu)",
                    (unsigned long long)a, (unsigned long long)n, (unsigned long long)ga, (unsigned long long)gn);
    }
    struct sim_gmem *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        pthread_mutex_unlock(&g_mu);
        return fail(HCCL_E_MEMORY, "out of host memory");
    }
    g->magic = SIM_GMEM_MAGIC;
    g->phy = phy;
    g->mem = *mem;
    g->next = g_gmems;
    g_gmems = g;
    pthread_mutex_unlock(&g_mu);
    *memHandle = g;
    return HCCL_SUCCESS;
}

SIM_EXPORT HcclResult HcclDeregisterGlobalMem(void *memHandle)
{
    struct sim_gmem *g = memHandle;
    pthread_mutex_lock(&g_mu);
    if (g == NULL || !gmem_live(g)) {
        pthread_mutex_unlock(&g_mu);
        violation("HcclDeregisterGlobalMem of a handle that is not registered (deregistered twice? an identical "
                  "range registered twice shares one handle)");
        return fail(HCCL_E_PARA, "HcclDeregisterGlobalMem: not a registered handle");
    }
    if (g->bound > 0) {
        int b = g->bound;
        pthread_mutex_unlock(&g_mu);
        char msg[200];
        snprintf(msg, sizeof(msg), "HcclDeregisterGlobalMem while bound to %d communicator(s)", b);
        violation(msg);
        return fail(HCCL_E_PARA, "HcclDeregisterGlobalMem: still bound to %d comm(s); please unbind from all bound "
                                 "comm first",
                    b);
    }
    struct sim_gmem **pp = &g_gmems;
    while (*pp != g) {
        pp = &(*pp)->next;
    }
    *pp = g->next;
    g->magic = 0;
    free(g);
    if (g_gmems == NULL) {
        /* HCCL closes its NIC listeners and netdevs with the last registration. */
        while (g_listeners != NULL) {
            struct listener *l = g_listeners;
            g_listeners = l->next;
            free(l);
        }
    }
    pthread_mutex_unlock(&g_mu);
    return HCCL_SUCCESS;
}

/* ------------------------------------------------------------- rank table */

struct rank_info {
    int present;
    char server_id[128];
    int device_id;
    char device_ip[64];
    int port; /* 0: none given */
    long super_device_id; /* -1: none */
    char super_pod_id[64];
};

struct table {
    int v12;
    uint32_t nranks;
    struct rank_info r[SIM_MAX_RANKS];
};

static int digits(const char *s, long lo, long hi, long *out)
{
    if (s == NULL || s[0] == '\0' || strlen(s) > 10) {
        return -1;
    }
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
    }
    long v = strtol(s, NULL, 10);
    if (v < lo || v > hi) {
        return -1;
    }
    *out = v;
    return 0;
}

static int is_ip(const char *s)
{
    unsigned char buf[16];
    return s != NULL && (inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1);
}

static HcclResult parse_table(const char *json, struct table *t)
{
    memset(t, 0, sizeof(*t));
    size_t len = strlen(json);
    if (len > (1u << 20)) {
        return fail(HCCL_E_PARA, "rank table larger than 1 MiB");
    }
    struct jnode *root = jparse(json, len);
    if (root == NULL || root->t != J_OBJ) {
        jfree(root);
        return fail(HCCL_E_PARA, "rank table is not a JSON object");
    }
    HcclResult rc = HCCL_SUCCESS;
    const char *version = jstr(root, "version");
    const char *status = jstr(root, "status");
    const char *count = jstr(root, "server_count");
    const struct jnode *servers = jget(root, "server_list");
    long nservers = 0;
    if (version == NULL || (strcmp(version, "1.0") != 0 && strcmp(version, "1.2") != 0)) {
        rc = fail(HCCL_E_PARA, "rank table version %s%s%s is not \"1.0\" or \"1.2\"", version ? "\"" : "",
                  version ? version : "(missing)", version ? "\"" : "");
    } else if (status == NULL || strcmp(status, "completed") != 0) {
        rc = fail(HCCL_E_PARA, "rank table status must be \"completed\"");
    } else if (servers == NULL || servers->t != J_ARR || jlen(servers) == 0) {
        rc = fail(HCCL_E_PARA, "rank table server_list must be a non-empty array");
    } else if (digits(count, 1, 4096, &nservers) != 0 || (size_t)nservers != jlen(servers)) {
        rc = fail(HCCL_E_PARA, "rank table server_count %s does not match the %zu server(s) listed",
                  count ? count : "(missing or not a string)", jlen(servers));
    }
    t->v12 = version != NULL && strcmp(version, "1.2") == 0;
    for (const struct jnode *s = rc == HCCL_SUCCESS ? servers->kids : NULL; s != NULL && rc == HCCL_SUCCESS;
         s = s->next) {
        const char *sid = jstr(s, "server_id");
        const struct jnode *devs = jget(s, "device");
        if (sid == NULL || sid[0] == '\0' || strlen(sid) >= 128) {
            rc = fail(HCCL_E_PARA, "a server_list entry has no server_id string");
            break;
        }
        if (devs == NULL || devs->t != J_ARR || jlen(devs) == 0) {
            rc = fail(HCCL_E_PARA, "server %s has no device array", sid);
            break;
        }
        for (const struct jnode *d = devs->kids; d != NULL; d = d->next) {
            long rank, dev, port = 0, sdid = -1;
            const char *ip = jstr(d, "device_ip");
            const char *p = jstr(d, "device_port");
            if (digits(jstr(d, "rank_id"), 0, SIM_MAX_RANKS - 1, &rank) != 0) {
                rc = fail(HCCL_E_PARA, "server %s: a device has no rank_id string below %d", sid, SIM_MAX_RANKS);
                break;
            }
            if (digits(jstr(d, "device_id"), 0, 1L << 30, &dev) != 0) {
                rc = fail(HCCL_E_PARA, "rank %ld: device_id must be a string of digits", rank);
                break;
            }
            if (!is_ip(ip) || strlen(ip) >= 64) {
                rc = fail(HCCL_E_PARA, "rank %ld: device_ip %s is not an IP address", rank, ip ? ip : "(missing)");
                break;
            }
            if (jget(d, "device_port") != NULL && digits(p, 1, 65535, &port) != 0) {
                rc = fail(HCCL_E_PARA, "rank %ld: device_port must be a string 1..65535", rank);
                break;
            }
            if (t->v12 && digits(jstr(d, "super_device_id"), 0, 1L << 30, &sdid) != 0) {
                rc = fail(HCCL_E_PARA, "rank %ld: a 1.2 table needs super_device_id", rank);
                break;
            }
            if (t->r[rank].present) {
                rc = fail(HCCL_E_PARA, "rank_id %ld appears twice", rank);
                break;
            }
            struct rank_info *ri = &t->r[rank];
            ri->present = 1;
            snprintf(ri->server_id, sizeof(ri->server_id), "%s", sid);
            ri->device_id = (int)dev;
            snprintf(ri->device_ip, sizeof(ri->device_ip), "%s", ip);
            ri->port = (int)port;
            ri->super_device_id = sdid;
            if ((uint32_t)rank + 1 > t->nranks) {
                t->nranks = (uint32_t)rank + 1;
            }
        }
    }
    if (rc == HCCL_SUCCESS && t->v12) {
        const struct jnode *pods = jget(root, "super_pod_list");
        if (pods == NULL || pods->t != J_ARR || jlen(pods) == 0) {
            rc = fail(HCCL_E_PARA, "a 1.2 table needs super_pod_list");
        }
        for (const struct jnode *pod = rc == HCCL_SUCCESS ? pods->kids : NULL; pod != NULL && rc == HCCL_SUCCESS;
             pod = pod->next) {
            const char *pid = jstr(pod, "super_pod_id");
            const struct jnode *ps = jget(pod, "server_list");
            if (pid == NULL || pid[0] == '\0' || strlen(pid) >= 64 || ps == NULL || ps->t != J_ARR) {
                rc = fail(HCCL_E_PARA, "a super_pod_list entry needs super_pod_id and server_list");
                break;
            }
            for (const struct jnode *e = ps->kids; e != NULL; e = e->next) {
                const char *sid = jstr(e, "server_id");
                for (uint32_t r = 0; sid != NULL && r < t->nranks; r++) {
                    if (t->r[r].present && strcmp(t->r[r].server_id, sid) == 0) {
                        if (t->r[r].super_pod_id[0] != '\0' && strcmp(t->r[r].super_pod_id, pid) != 0) {
                            rc = fail(HCCL_E_PARA, "server %s is in two super pods", sid);
                        }
                        snprintf(t->r[r].super_pod_id, sizeof(t->r[r].super_pod_id), "%s", pid);
                    }
                }
            }
        }
        for (uint32_t r = 0; rc == HCCL_SUCCESS && r < t->nranks; r++) {
            if (t->r[r].present && t->r[r].super_pod_id[0] == '\0') {
                rc = fail(HCCL_E_PARA, "server %s of rank %u is in no super pod", t->r[r].server_id, r);
            }
        }
    }
    jfree(root);
    if (rc != HCCL_SUCCESS) {
        return rc;
    }
    int ndev = acl() != NULL ? acl()->device_count() : SIM_DEFAULT_DEVICES;
    for (uint32_t r = 0; r < t->nranks; r++) {
        if (!t->r[r].present) {
            return fail(HCCL_E_PARA, "rank_id %u is missing (ranks must be 0..n-1)", r);
        }
        if (t->r[r].device_id >= ndev) {
            return fail(HCCL_E_PARA, "rank %u: device_id %d is not below the device count %d", r, t->r[r].device_id,
                        ndev);
        }
        for (uint32_t q = 0; q < r; q++) {
            if (strcmp(t->r[q].server_id, t->r[r].server_id) == 0 && t->r[q].device_id == t->r[r].device_id) {
                return fail(HCCL_E_PARA, "device id repeat for one server: ranks %u and %u are both device %d of "
                                         "server %s",
                            q, r, t->r[r].device_id, t->r[r].server_id);
            }
            if (strcmp(t->r[q].device_ip, t->r[r].device_ip) == 0) {
                return fail(HCCL_E_PARA, "ranks %u and %u share device_ip %s (each device has its own NIC address)",
                            q, r, t->r[r].device_ip);
            }
        }
    }
    return HCCL_SUCCESS;
}

/* Pair (a, b) runs over HCCS (intra-server), where host memory is not exported. */
static int hccs(const struct table *t, uint32_t a, uint32_t b)
{
    if (sim_env_flag("HCCL_INTRA_ROCE_ENABLE")) {
        return 0;
    }
    int a3 = acl() != NULL && acl()->is_a3();
    if (a3) {
        return t->v12 ? strcmp(t->r[a].super_pod_id, t->r[b].super_pod_id) == 0 : 1;
    }
    return strcmp(t->r[a].server_id, t->r[b].server_id) == 0;
}

/* -------------------------------------------------------- communicators */

struct sim_region {
    uint64_t pid;
    uint64_t addr;
    uint64_t size;
    uint32_t type;
    uint32_t pad;
};

struct sim_peer {
    int fd;
    int prepared;
    struct sim_region *regions; /* what the peer exported to us */
    uint32_t nregions;
};

struct sim_comm {
    uint32_t magic;
    uint32_t rank;
    int phy;
    char name[COMM_NAME_MAX_LENGTH];
    uint64_t key; /* hash of name and table: names the sockets */
    struct table t;
    int listen_fd;
    int prepared;
    pthread_mutex_t mu;
    struct sim_peer peers[SIM_MAX_RANKS];
    struct sim_gmem *bound[1024];
    int late[1024]; /* bound after Prepare: never exported */
    size_t nbound;
    struct sim_region local[1024]; /* regions bound before Prepare (local MRs) */
    size_t nlocal;
    struct sim_comm *next;
};

static struct sim_comm *g_comms; /* guarded by g_mu */

static int comm_valid(HcclComm c)
{
    return c != NULL && ((struct sim_comm *)c)->magic == SIM_COMM_MAGIC;
}

static uint64_t fnv(uint64_t h, const char *s)
{
    for (; *s; s++) {
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    }
    return h;
}

static socklen_t sock_name(uint64_t key, uint32_t rank, struct sockaddr_un *a)
{
    memset(a, 0, sizeof(*a));
    a->sun_family = AF_UNIX;
    int n = snprintf(a->sun_path + 1, sizeof(a->sun_path) - 1, "sim_ascend/%016llx/%u", (unsigned long long)key, rank);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

static const char *generic_error(HcclResult code)
{
    switch ((int)code) {
    case HCCL_SUCCESS: return "success";
    case HCCL_E_PARA: return "parameter error";
    case HCCL_E_PTR: return "empty pointer";
    case HCCL_E_MEMORY: return "memory error";
    case HCCL_E_INTERNAL: return "internal error";
    case HCCL_E_NOT_SUPPORT: return "not support feature";
    case HCCL_E_NOT_FOUND: return "not found specific resource";
    case HCCL_E_UNAVAIL: return "resource unavailable";
    case HCCL_E_SYSCALL: return "call system interface error";
    case HCCL_E_TIMEOUT: return "timeout";
    case HCCL_E_TCP_CONNECT: return "tcp connect fail";
    case HCCL_E_TCP_TRANSFER: return "tcp transfer fail";
    case HCCL_E_RUNTIME: return "call runtime api fail";
    case HCCL_E_REMOTE: return "error cqe";
    default: return "unknown hccl error";
    }
}

/* The code's generic text; for the calling thread's last failure, followed by the
 * simulator's reason (real HCCL writes such detail to its log only). */
SIM_EXPORT const char *HcclGetErrorString(HcclResult code)
{
    static __thread char buf[700];
    if ((int)code != HCCL_SUCCESS && (int)code == t_err_code && t_err[0] != '\0') {
        snprintf(buf, sizeof(buf), "%s; sim_ascend: %s", generic_error(code), t_err);
        return buf;
    }
    return generic_error(code);
}

SIM_EXPORT HcclResult HcclCommInitClusterInfoMemConfig(const char *rankTableString, uint32_t rank,
                                                       HcclCommConfig *config, HcclComm *comm)
{
    if (rankTableString == NULL || config == NULL || comm == NULL) {
        return fail(HCCL_E_PTR, "HcclCommInitClusterInfoMemConfig: null argument");
    }
    int phy = current_device();
    if (phy < 0) {
        return fail(HCCL_E_RUNTIME, "HcclCommInitClusterInfoMemConfig: no current device on this thread");
    }
    uint32_t magic;
    memcpy(&magic, config->reserved + sizeof(size_t), sizeof(magic));
    if (magic != HCCL_COMM_CONFIG_MAGIC_WORD) {
        return fail(HCCL_E_PARA, "config was not initialised by HcclCommConfigInit (magic word)");
    }
    char name[COMM_NAME_MAX_LENGTH];
    memcpy(name, config->hcclCommName, sizeof(name));
    name[sizeof(name) - 1] = '\0';
    if (name[0] == '\0') {
        return fail(HCCL_E_PARA, "hcclCommName is empty");
    }
    pthread_mutex_lock(&g_mu);
    if (g_init_busy) {
        pthread_mutex_unlock(&g_mu);
        return fail(HCCL_E_UNAVAIL, "another HcclCommInitClusterInfoMemConfig is running in this process (not "
                                    "parallel-safe)");
    }
    for (struct sim_comm *c = g_comms; c != NULL; c = c->next) {
        if (c->phy == phy && strcmp(c->name, name) == 0) {
            pthread_mutex_unlock(&g_mu);
            return fail(HCCL_E_PARA, "comm Name exist: %s on device %d", name, phy);
        }
    }
    g_init_busy = 1;
    pthread_mutex_unlock(&g_mu);
    usleep((useconds_t)sim_env_long("SIM_ASCEND_INIT_MS", 20) * 1000u);

    HcclResult rc = HCCL_SUCCESS;
    struct sim_comm *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        rc = fail(HCCL_E_MEMORY, "out of host memory");
    }
    if (rc == HCCL_SUCCESS) {
        c->listen_fd = -1;
        rc = parse_table(rankTableString, &c->t);
    }
    if (rc == HCCL_SUCCESS && rank >= c->t.nranks) {
        rc = fail(HCCL_E_PARA, "rank %u is not in the %u-rank table", rank, c->t.nranks);
    }
    char nic[64];
    sim_nic_ip(phy, nic, sizeof(nic));
    if (rc == HCCL_SUCCESS && c->t.r[rank].device_id != phy) {
        rc = fail(HCCL_E_UNAVAIL, "ranktable config devId[%d], but local devId[%d] (device_id must be the physical "
                                  "id)",
                  c->t.r[rank].device_id, phy);
    }
    if (rc == HCCL_SUCCESS && strcmp(c->t.r[rank].device_ip, nic) != 0) {
        rc = fail(HCCL_E_PARA, "rank %u: device_ip %s is not the NIC address of device %d (%s, hccn.conf "
                               "address_%d)",
                  rank, c->t.r[rank].device_ip, phy, nic, phy);
    }
    if (rc == HCCL_SUCCESS && c->t.v12 && acl()->is_a3()) {
        long sdid = sim_env_long("SIM_ASCEND_SUPER_DEVICE_BASE", 0) + phy;
        char pod[64];
        snprintf(pod, sizeof(pod), "%ld", sim_env_long("SIM_ASCEND_SUPER_POD_ID", 0));
        if (c->t.r[rank].super_device_id != sdid || strcmp(c->t.r[rank].super_pod_id, pod) != 0) {
            rc = fail(HCCL_E_PARA, "rank %u: super_device_id %ld / super_pod_id %s are not this device's (%ld / %s)",
                      rank, c->t.r[rank].super_device_id, c->t.r[rank].super_pod_id, sdid, pod);
        }
    }
    if (rc == HCCL_SUCCESS) {
        c->key = fnv(fnv(0xcbf29ce484222325ull, name), rankTableString);
        c->rank = rank;
        c->phy = phy;
        snprintf(c->name, sizeof(c->name), "%s", name);
        for (uint32_t r = 0; r < SIM_MAX_RANKS; r++) {
            c->peers[r].fd = -1;
        }
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct sockaddr_un a;
        socklen_t alen = sock_name(c->key, rank, &a);
        if (fd < 0 || bind(fd, (struct sockaddr *)&a, alen) != 0 || listen(fd, SIM_MAX_RANKS) != 0) {
            rc = fail(HCCL_E_TCP_CONNECT, "cannot listen for rank %u of %s: %s", rank, name, strerror(errno));
            if (fd >= 0) {
                close(fd);
            }
        } else {
            c->listen_fd = fd;
        }
    }
    pthread_mutex_lock(&g_mu);
    g_init_busy = 0;
    if (rc == HCCL_SUCCESS) {
        pthread_mutex_init(&c->mu, NULL);
        c->magic = SIM_COMM_MAGIC;
        c->next = g_comms;
        g_comms = c;
        listener_add(phy, c->t.r[rank].device_ip, c->t.r[rank].port != 0 ? c->t.r[rank].port : SIM_DEFAULT_PORT);
    }
    pthread_mutex_unlock(&g_mu);
    if (rc != HCCL_SUCCESS) {
        free(c);
        return rc;
    }
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
        return fail(HCCL_E_PARA, "HcclCommDestroy: not a communicator");
    }
    struct sim_comm *c = comm;
    pthread_mutex_lock(&c->mu);
    size_t nb = c->nbound;
    pthread_mutex_unlock(&c->mu);
    if (nb > 0) {
        char msg[200];
        snprintf(msg, sizeof(msg), "HcclCommDestroy(%s) with %zu region(s) still bound", c->name, nb);
        violation(msg);
        return fail(HCCL_E_PARA, "HcclCommDestroy: %zu region(s) still bound; unbind them first", nb);
    }
    pthread_mutex_lock(&g_mu);
    struct sim_comm **pp = &g_comms;
    while (*pp != NULL && *pp != c) {
        pp = &(*pp)->next;
    }
    if (*pp != NULL) {
        *pp = c->next;
    }
    pthread_mutex_unlock(&g_mu);
    c->magic = 0;
    for (uint32_t r = 0; r < c->t.nranks; r++) {
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

SIM_EXPORT HcclResult HcclCommBindMem(HcclComm comm, void *memHandle)
{
    struct sim_gmem *g = memHandle;
    if (!comm_valid(comm)) {
        return fail(HCCL_E_PARA, "HcclCommBindMem: not a communicator");
    }
    struct sim_comm *c = comm;
    pthread_mutex_lock(&g_mu);
    if (g == NULL || !gmem_live(g)) {
        pthread_mutex_unlock(&g_mu);
        return fail(HCCL_E_PARA, "HcclCommBindMem: not a registered handle");
    }
    if (g->phy != c->phy) {
        pthread_mutex_unlock(&g_mu);
        return fail(HCCL_E_PARA, "HcclCommBindMem: memory registered on device %d, communicator on device %d",
                    g->phy, c->phy);
    }
    pthread_mutex_lock(&c->mu);
    HcclResult rc = HCCL_SUCCESS;
    for (size_t i = 0; i < c->nbound; i++) {
        if (c->bound[i] == g) {
            rc = fail(HCCL_E_PARA, "HcclCommBindMem: this handle is already bound to %s", c->name);
        }
    }
    if (rc == HCCL_SUCCESS && c->nbound >= sizeof(c->bound) / sizeof(c->bound[0])) {
        rc = fail(HCCL_E_UNAVAIL, "too many bound regions");
    }
    if (rc == HCCL_SUCCESS) {
        c->late[c->nbound] = c->prepared;
        c->bound[c->nbound++] = g;
        g->bound++;
    }
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_unlock(&g_mu);
    return rc;
}

SIM_EXPORT HcclResult HcclCommUnbindMem(HcclComm comm, void *memHandle)
{
    if (!comm_valid(comm) || memHandle == NULL) {
        return fail(HCCL_E_PARA, "HcclCommUnbindMem: bad argument");
    }
    struct sim_comm *c = comm;
    HcclResult rc = fail(HCCL_E_PARA, "HcclCommUnbindMem: the handle is not bound to %s", c->name);
    pthread_mutex_lock(&g_mu);
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < c->nbound; i++) {
        if (c->bound[i] == memHandle) {
            c->bound[i]->bound--;
            c->nbound--;
            c->bound[i] = c->bound[c->nbound];
            c->late[i] = c->late[c->nbound];
            rc = HCCL_SUCCESS;
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    pthread_mutex_unlock(&g_mu);
    return rc;
}

/* ----------------------------------------------------------- prepare */

struct wire_header {
    uint32_t magic;
    uint32_t rank;
    int32_t status; /* HCCL_SUCCESS, or why this side cannot talk to the peer */
    uint32_t count;
};

static HcclResult io_all(int fd, void *buf, size_t len, int64_t deadline, int sending)
{
    char *p = buf;
    while (len > 0) {
        int64_t left = deadline < 0 ? 1000 : deadline - now_ms();
        if (left <= 0) {
            return fail(HCCL_E_TIMEOUT, "timed out talking to a peer");
        }
        struct pollfd pfd = {fd, sending ? POLLOUT : POLLIN, 0};
        int pr = poll(&pfd, 1, (int)(left > 1000 ? 1000 : left));
        if (pr < 0 && errno == EINTR) {
            continue;
        }
        if (pr == 0) {
            continue;
        }
        if (pr < 0) {
            return fail(HCCL_E_TCP_TRANSFER, "poll: %s", strerror(errno));
        }
        ssize_t n = sending ? send(fd, p, len, MSG_NOSIGNAL) : recv(fd, p, len, 0);
        if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
            continue;
        }
        if (n <= 0) {
            return fail(HCCL_E_TCP_TRANSFER, "the peer closed the connection");
        }
        p += n;
        len -= (size_t)n;
    }
    return HCCL_SUCCESS;
}

/* Connects rank c->rank with peer r (the lower rank dials). c->mu held. */
static HcclResult connect_peer(struct sim_comm *c, uint32_t r, int64_t deadline)
{
    if (c->peers[r].fd >= 0) {
        return HCCL_SUCCESS;
    }
    if (c->rank < r) {
        struct sockaddr_un a;
        socklen_t alen = sock_name(c->key, r, &a);
        for (;;) {
            int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0) {
                return fail(HCCL_E_SYSCALL, "socket: %s", strerror(errno));
            }
            if (connect(fd, (struct sockaddr *)&a, alen) == 0) {
                uint32_t me = c->rank;
                HcclResult rc = io_all(fd, &me, sizeof(me), deadline, 1);
                if (rc != HCCL_SUCCESS) {
                    close(fd);
                    return rc;
                }
                c->peers[r].fd = fd;
                return HCCL_SUCCESS;
            }
            close(fd);
            if (deadline >= 0 && now_ms() >= deadline) {
                return fail(HCCL_E_TIMEOUT, "rank %u of %s did not come up in time", r, c->name);
            }
            usleep(5000);
        }
    }
    while (c->peers[r].fd < 0) {
        int64_t left = deadline < 0 ? 1000 : deadline - now_ms();
        if (left <= 0) {
            return fail(HCCL_E_TIMEOUT, "rank %u of %s did not connect in time", r, c->name);
        }
        struct pollfd pfd = {c->listen_fd, POLLIN, 0};
        int pr = poll(&pfd, 1, (int)(left > 1000 ? 1000 : left));
        if (pr <= 0) {
            if (pr < 0 && errno != EINTR) {
                return fail(HCCL_E_TCP_CONNECT, "poll: %s", strerror(errno));
            }
            continue;
        }
        int fd = accept4(c->listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        uint32_t who = UINT32_MAX;
        if (io_all(fd, &who, sizeof(who), deadline, 0) != HCCL_SUCCESS || who >= c->t.nranks || who == c->rank ||
            c->peers[who].fd >= 0) {
            close(fd);
            continue;
        }
        c->peers[who].fd = fd;
    }
    return HCCL_SUCCESS;
}

/* What this rank exports to peer r, or why it cannot talk to it. c->mu held. */
static HcclResult exports_for(struct sim_comm *c, uint32_t r, struct sim_region *out, uint32_t *n)
{
    *n = 0;
    int over_hccs = hccs(&c->t, c->rank, r);
    if (acl()->is_a3() && !c->t.v12 && over_hccs && strcmp(c->t.r[c->rank].server_id, c->t.r[r].server_id) != 0) {
        return fail(HCCL_E_INTERNAL, "rank %u is on server %s: with a 1.0 table on A3 every peer is taken for the "
                                     "super pod (IPC/HCCS), and that path needs super_device_id (rank table 1.2)",
                    r, c->t.r[r].server_id);
    }
    for (size_t i = 0; i < c->nbound; i++) {
        const struct sim_gmem *g = c->bound[i];
        if (c->late[i]) {
            continue;
        }
        uint64_t addr = (uint64_t)(uintptr_t)g->mem.addr;
        if (over_hccs && g->mem.type == HCCL_MEM_TYPE_HOST) {
            continue; /* HCCS cannot reach host memory: not exported */
        }
        if (over_hccs && addr % SIM_2MB != 0 && !acl()->device_alloc_contains(c->phy, addr, g->mem.size)) {
            return fail(HCCL_E_PARA, "device region 0x%llx (+%llu) for HCCS rank %u neither lies in an aclrtMalloc "
                                     "allocation nor starts 2 MB aligned: link may fail",
                        (unsigned long long)addr, (unsigned long long)g->mem.size, r);
        }
        out[*n].pid = (uint64_t)getpid();
        out[*n].addr = addr;
        out[*n].size = g->mem.size;
        out[*n].type = (uint32_t)g->mem.type;
        (*n)++;
    }
    return HCCL_SUCCESS;
}

static HcclResult prepare_peer(struct sim_comm *c, uint32_t r, int64_t deadline)
{
    struct sim_region mine[1024];
    uint32_t n = 0;
    /* A reason not to talk to the peer is still sent to it, so both sides fail. */
    HcclResult why = exports_for(c, r, mine, &n);
    char why_msg[sizeof(t_err)];
    snprintf(why_msg, sizeof(why_msg), "%s", t_err);
    HcclResult rc = connect_peer(c, r, deadline);
    struct wire_header h = {SIM_WIRE_MAGIC, c->rank, (int32_t)why, why == HCCL_SUCCESS ? n : 0};
    if (rc == HCCL_SUCCESS) {
        rc = io_all(c->peers[r].fd, &h, sizeof(h), deadline, 1);
    }
    if (rc == HCCL_SUCCESS && h.count > 0) {
        rc = io_all(c->peers[r].fd, mine, h.count * sizeof(mine[0]), deadline, 1);
    }
    struct wire_header th;
    if (rc == HCCL_SUCCESS) {
        rc = io_all(c->peers[r].fd, &th, sizeof(th), deadline, 0);
    }
    if (rc == HCCL_SUCCESS && (th.magic != SIM_WIRE_MAGIC || th.rank != r || th.count > 1024)) {
        rc = fail(HCCL_E_INTERNAL, "garbled prepare message from rank %u", r);
    }
    struct sim_region *theirs = NULL;
    if (rc == HCCL_SUCCESS) {
        theirs = calloc(th.count + 1, sizeof(*theirs));
        rc = theirs != NULL ? HCCL_SUCCESS : fail(HCCL_E_MEMORY, "out of host memory");
    }
    if (rc == HCCL_SUCCESS && th.count > 0) {
        rc = io_all(c->peers[r].fd, theirs, th.count * sizeof(*theirs), deadline, 0);
    }
    if (why != HCCL_SUCCESS) {
        free(theirs);
        snprintf(t_err, sizeof(t_err), "%s", why_msg);
        return why;
    }
    if (rc == HCCL_SUCCESS && th.status != HCCL_SUCCESS) {
        rc = fail(HCCL_E_REMOTE, "rank %u refused the link (its code %d)", r, th.status);
    }
    if (rc != HCCL_SUCCESS) {
        free(theirs);
        return rc;
    }
    free(c->peers[r].regions);
    c->peers[r].regions = theirs;
    c->peers[r].nregions = th.count;
    c->peers[r].prepared = 1;
    return HCCL_SUCCESS;
}

SIM_EXPORT HcclResult HcclCommPrepare(HcclComm comm, const HcclPrepareConfig *prepareConfig, const int timeout)
{
    if (!comm_valid(comm) || prepareConfig == NULL) {
        return fail(HCCL_E_PTR, "HcclCommPrepare: bad argument");
    }
    if (prepareConfig->topoType != HCCL_TOPO_FULLMESH || timeout < -1) {
        return fail(HCCL_E_PARA, "HcclCommPrepare: topology %d / timeout %d", (int)prepareConfig->topoType, timeout);
    }
    struct sim_comm *c = comm;
    int phy = current_device();
    if (phy != c->phy) {
        return fail(HCCL_E_RUNTIME, "HcclCommPrepare: the thread's current device is %d, the communicator's %d",
                    phy, c->phy);
    }
    pthread_mutex_lock(&c->mu);
    if (c->prepared) {
        pthread_mutex_unlock(&c->mu);
        return HCCL_SUCCESS; /* one-shot: memory bound since then is not exchanged */
    }
    int64_t deadline = timeout < 0 ? -1 : now_ms() + (int64_t)(timeout == 0 ? 120 : timeout) * 1000;
    long delay = sim_env_long("SIM_ASCEND_PREPARE_DELAY_MS", 0);
    if (delay > 0) {
        usleep((useconds_t)delay * 1000u);
    }
    c->nlocal = 0;
    for (size_t i = 0; i < c->nbound; i++) {
        c->local[c->nlocal].addr = (uint64_t)(uintptr_t)c->bound[i]->mem.addr;
        c->local[c->nlocal].size = c->bound[i]->mem.size;
        c->local[c->nlocal].type = (uint32_t)c->bound[i]->mem.type;
        c->nlocal++;
    }
    HcclResult rc = HCCL_SUCCESS;
    for (uint32_t r = 0; r < c->t.nranks && rc == HCCL_SUCCESS; r++) {
        if (r != c->rank) {
            rc = prepare_peer(c, r, deadline);
        }
    }
    if (rc == HCCL_SUCCESS) {
        c->prepared = 1;
    }
    pthread_mutex_unlock(&c->mu);
    return rc;
}

/* ------------------------------------------------------------- batches */

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

/* Bytes one process_vm_readv/writev of a batch moves at most: the
 * synchronize deadline is checked between them. */
#define SIM_BATCH_CHUNK (4u << 20)

static aclError run_batch(void *ctx, int64_t deadline_ms)
{
    struct batch_ctx *b = ctx;
    for (uint32_t i = 0; i < b->n; i++) {
        uint64_t done = 0;
        while (done < b->e[i].len) {
            if (deadline_ms >= 0 && now_ms() >= deadline_ms) {
                return ACL_ERROR_RT_STREAM_SYNC_TIMEOUT;
            }
            uint64_t len = b->e[i].len - done;
            size_t chunk = (size_t)(len < SIM_BATCH_CHUNK ? len : SIM_BATCH_CHUNK);
            struct iovec l = {(void *)(uintptr_t)(b->e[i].local + done), chunk};
            struct iovec r = {(void *)(uintptr_t)(b->e[i].remote + done), chunk};
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

static int inside(const struct sim_region *regs, uint32_t n, uint64_t addr, uint64_t len)
{
    for (uint32_t i = 0; i < n; i++) {
        if (addr >= regs[i].addr && len <= regs[i].size && addr - regs[i].addr <= regs[i].size - len) {
            return 1;
        }
    }
    return 0;
}

static HcclResult submit_batch(HcclComm comm, uint32_t remoteRank, HcclOneSideOpDesc *desc, uint32_t descNum,
                               aclrtStream stream, int put)
{
    const char *what = put ? "HcclBatchPut" : "HcclBatchGet";
    if (!comm_valid(comm) || (descNum > 0 && desc == NULL)) {
        return fail(HCCL_E_PTR, "%s: bad argument", what);
    }
    if (descNum > SIM_MAX_DESC_NUM) {
        return fail(HCCL_E_PARA, "%s: descNum %u exceeds specification[%u]", what, descNum, SIM_MAX_DESC_NUM);
    }
    struct sim_comm *c = comm;
    if (remoteRank >= c->t.nranks || remoteRank == c->rank) {
        return fail(HCCL_E_PARA, "%s: remote rank %u of %u (own rank %u)", what, remoteRank, c->t.nranks, c->rank);
    }
    if (current_device() != c->phy) {
        return fail(HCCL_E_RUNTIME, "%s: the thread's current device is %d, the communicator's %d", what,
                    current_device(), c->phy);
    }
    if (acl()->stream_device(stream) != c->phy) {
        return fail(HCCL_E_PARA, "%s: the stream is not a stream of device %d", what, c->phy);
    }
    struct batch_ctx *b = calloc(1, sizeof(*b) + (size_t)descNum * sizeof(struct batch_entry));
    if (b == NULL) {
        return fail(HCCL_E_MEMORY, "out of host memory");
    }
    pthread_mutex_lock(&c->mu);
    const struct sim_peer *p = &c->peers[remoteRank];
    HcclResult rc = HCCL_SUCCESS;
    uint32_t ok = 0;
    if (!c->prepared || !p->prepared) {
        rc = fail(HCCL_E_NOT_FOUND, "%s: the communicator %s is not prepared (HcclCommPrepare first)", what,
                  c->name);
    }
    for (; rc == HCCL_SUCCESS && ok < descNum; ok++) {
        uint64_t es = elem_size(desc[ok].dataType);
        if (es == 0 || desc[ok].count == 0 || desc[ok].count > UINT64_MAX / es) {
            rc = fail(HCCL_E_PARA, "%s: descriptor %u has data type %d, count %llu", what, ok,
                      (int)desc[ok].dataType, (unsigned long long)desc[ok].count);
            break;
        }
        uint64_t len = desc[ok].count * es;
        uint64_t local = (uint64_t)(uintptr_t)desc[ok].localAddr;
        uint64_t remote = (uint64_t)(uintptr_t)desc[ok].remoteAddr;
        if (!inside(c->local, (uint32_t)c->nlocal, local, len)) {
            rc = fail(HCCL_E_INTERNAL, "%s: descriptor %u: local [0x%llx, +%llu) is not inside one region bound "
                                       "before HcclCommPrepare",
                      what, ok, (unsigned long long)local, (unsigned long long)len);
            break;
        }
        if (!inside(p->regions, p->nregions, remote, len)) {
            rc = fail(HCCL_E_INTERNAL, "%s: descriptor %u: remote [0x%llx, +%llu) is not inside one region rank %u "
                                       "exported (Can't find remoteBuffer by key)",
                      what, ok, (unsigned long long)remote, (unsigned long long)len, remoteRank);
            break;
        }
        b->e[ok].local = local;
        b->e[ok].remote = remote;
        b->e[ok].len = len;
    }
    b->pid = p->nregions > 0 ? (pid_t)p->regions[0].pid : 0;
    pthread_mutex_unlock(&c->mu);
    if (ok == 0) {
        free(b);
        return rc;
    }
    /* The descriptors before a failing one stay queued, as on the device. */
    struct sim_op *op = calloc(1, sizeof(*op));
    if (op == NULL) {
        free(b);
        return fail(HCCL_E_MEMORY, "out of host memory");
    }
    b->put = put;
    b->n = ok;
    op->hang = sim_env_flag("SIM_ASCEND_HANG_TRANSFER");
    op->run = run_batch;
    op->drop = free;
    op->ctx = b;
    acl()->stream_push(stream, op);
    return rc;
}

SIM_EXPORT HcclResult HcclBatchPut(HcclComm comm, uint32_t remoteRank, HcclOneSideOpDesc *desc, uint32_t descNum,
                                   aclrtStream stream)
{
    if (acl() == NULL) {
        return fail(HCCL_E_RUNTIME, "no simulated ACL runtime next to this library");
    }
    return submit_batch(comm, remoteRank, desc, descNum, stream, 1);
}

#ifndef SIM_OMIT_BATCH_GET
SIM_EXPORT HcclResult HcclBatchGet(HcclComm comm, uint32_t remoteRank, HcclOneSideOpDesc *desc, uint32_t descNum,
                                   aclrtStream stream)
{
    if (acl() == NULL) {
        return fail(HCCL_E_RUNTIME, "no simulated ACL runtime next to this library");
    }
    return submit_batch(comm, remoteRank, desc, descNum, stream, 0);
}
#endif
