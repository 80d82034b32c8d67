/* Helpers for the data-plane C tests: tensor images (actual memory and an
 * expected model), a generic forked peer that serves commands over a pipe,
 * option sets for both transports, and linking shortcuts. */
#ifndef T_DATAPLANE_H
#define T_DATAPLANE_H

#include "llmdd_test.h"

/* ---------- tensor images ---------- */

typedef struct {
  uint32_t n;      /* tensors */
  uint64_t T;      /* bytes per tensor */
  uint8_t *p[64];  /* tensor memory */
  uint64_t addrs[64];
} t_mem;

static inline t_mem t_mem_new(uint32_t n, uint64_t T) {
  t_mem m;
  memset(&m, 0, sizeof m);
  m.n = n;
  m.T = T;
  for (uint32_t t = 0; t < n; t++) {
    void *q = NULL;
    /* 2 MB aligned: on the acl re-runs this plain memory stands for device
     * memory, and HCCS needs memory not from aclrtMalloc to start 2 MB aligned. */
    if (posix_memalign(&q, 2u << 20, T ? T : 1) != 0) {
      perror("posix_memalign");
      exit(2);
    }
    memset(q, 0, T);
    m.p[t] = q;
    m.addrs[t] = (uint64_t)(uintptr_t)q;
  }
  return m;
}

static inline void t_mem_free(t_mem *m) {
  for (uint32_t t = 0; t < m->n; t++) free(m->p[t]);
  memset(m, 0, sizeof *m);
}

static inline void t_mem_fill(t_mem *m, uint32_t seed) {
  for (uint32_t t = 0; t < m->n; t++) t_fill(m->p[t], m->T, seed, t, 0);
}

static inline void t_mem_zero(t_mem *m) {
  for (uint32_t t = 0; t < m->n; t++) memset(m->p[t], 0, m->T);
}

static inline void t_mem_assign(t_mem *dst, const t_mem *src) {
  for (uint32_t t = 0; t < dst->n; t++) memcpy(dst->p[t], src->p[t], dst->T);
}

/* Image of tensor memory described by raw addresses (an allocated cache). */
static inline void t_mem_from_addrs(t_mem *m, uint32_t n, uint64_t T, const uint64_t *addrs) {
  memset(m, 0, sizeof *m);
  m->n = n;
  m->T = T;
  for (uint32_t t = 0; t < n; t++) {
    m->p[t] = (uint8_t *)(uintptr_t)addrs[t];
    m->addrs[t] = addrs[t];
  }
}

/* Model of one copy: len bytes of src tensor ts at soff to dst tensor td at doff. */
static inline void t_mem_copy(t_mem *dst, uint32_t td, uint64_t doff, const t_mem *src, uint32_t ts,
                              uint64_t soff, uint64_t len) {
  if (td >= dst->n || ts >= src->n || doff + len > dst->T || soff + len > src->T) {
    fprintf(stderr, "t_mem_copy: model out of range (test bug)\n");
    exit(2);
  }
  memmove(dst->p[td] + doff, src->p[ts] + soff, len);
}

/* memcmp of two images; prints the first mismatch. `what` labels the case. */
static inline int t_mem_eq_(const t_mem *a, const t_mem *b, const char *what, const char *file,
                            int line) {
  for (uint32_t t = 0; t < a->n; t++) {
    if (memcmp(a->p[t], b->p[t], a->T) != 0) {
      uint64_t i = 0;
      while (a->p[t][i] == b->p[t][i]) i++;
      fprintf(stderr, "[pid %d] %s:%d: [%s] tensor %u differs at byte %llu (got %u, want %u)\n",
              (int)getpid(), file, line, what, t, (unsigned long long)i, a->p[t][i], b->p[t][i]);
      return 0;
    }
  }
  return 1;
}
#define CHECK_MEM(actual, expected, what) CHECK(t_mem_eq_((actual), (expected), (what), __FILE__, __LINE__))

/* Tensor pairs (ts[i], td[i]) selected by a layer range (§1.6, §4.3). */
static inline uint32_t t_pairs(const llmdd_layer_range_t *lr, uint32_t ns, uint32_t nd, uint32_t *ts,
                               uint32_t *td) {
  uint32_t n = (lr && lr->tensor_num_per_layer) ? lr->tensor_num_per_layer : 2;
  int sall = !lr || lr->src_begin < 0, dall = !lr || lr->dst_begin < 0;
  uint32_t s0 = sall ? 0 : (uint32_t)lr->src_begin * n, d0 = dall ? 0 : (uint32_t)lr->dst_begin * n;
  uint32_t m = sall ? (dall ? ns : nd) : (uint32_t)(lr->src_end - lr->src_begin) * n;
  if (!sall && !dall) m = (uint32_t)(lr->src_end - lr->src_begin) * n;
  if (sall && !dall) m = (uint32_t)(lr->dst_end - lr->dst_begin) * n;
  (void)ns;
  for (uint32_t i = 0; i < m; i++) {
    ts[i] = s0 + i;
    td[i] = d0 + i;
  }
  return m;
}

static inline llmdd_layer_range_t t_lr(int32_t sb, int32_t se, int32_t db, int32_t de, uint32_t n) {
  llmdd_layer_range_t r = llmdd_layer_range(sb, se, db, de, n);
  return r;
}

/* ---------- options ---------- */

#define T_POOL_DEV "{\"memory_size\":67108864}"

/* Builds extra init options: transport (tr 0 = default same-host, 1 = TCP),
 * remote-cache-accessible mode, optional device/host pools. */
typedef struct {
  llmdd_option_t o[8];
  size_t n;
} t_opts;

static inline t_opts t_opts_make(int tcp, int remote_acc, const char *dev_pool, const char *host_pool) {
  t_opts r;
  memset(&r, 0, sizeof r);
  if (tcp) r.o[r.n++] = (llmdd_option_t){"llmdd.SameHost", "off"};
  if (remote_acc) r.o[r.n++] = (llmdd_option_t){"llm.EnableRemoteCacheAccessible", "1"};
  if (dev_pool) r.o[r.n++] = (llmdd_option_t){"llm.MemPoolConfig", dev_pool};
  if (host_pool) r.o[r.n++] = (llmdd_option_t){"llm.HostMemPoolConfig", host_pool};
  return r;
}

static inline const char *t_tr_name(int tcp) { return tcp ? "tcp" : "samehost"; }

/* ---------- a forked peer (prompt/server) driven over a pipe ---------- */

typedef struct t_peer {
  uint64_t cluster;
  uint16_t port;
  t_opts opts;
  t_chan ch;
  /* Registers caches etc.; may t_send values the parent expects. */
  void (*setup)(struct t_peer *self, llmdd_instance_t *inst);
  /* Handles a non-zero command; its return value is sent back. */
  uint64_t (*cmd)(struct t_peer *self, llmdd_instance_t *inst, uint64_t cmd);
  void *user;
} t_peer;

static inline int t_peer_main(void *arg) {
  t_peer *self = (t_peer *)arg;
  t_failures = 0; /* counts inherited from the parent are not ours */
  t_checks = 0;
  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, self->cluster, &p));
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", self->port);
  REQUIRE_OK(t_init(p, listen, self->opts.o, self->opts.n));
  if (self->setup) self->setup(self, p);
  for (;;) {
    uint64_t c = t_recv(self->ch, 60000);
    if (c == 0) break;
    uint64_t r = self->cmd ? self->cmd(self, p, c) : 0;
    t_send(self->ch, r);
  }
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
  return t_failures ? 1 : 0;
}

/* Forks a peer; returns its pid. `peer->ch` must be the child end. */
static inline pid_t t_peer_start(t_peer *peer, t_chan_pair *pair) {
  peer->ch = pair->child;
  pid_t pid = t_fork(t_peer_main, peer);
  return pid;
}

/* Sends a command to the peer and returns its answer. */
static inline uint64_t t_peer_call(t_chan parent, uint64_t cmd) {
  t_send(parent, cmd);
  return t_recv(parent, 60000);
}

/* Ends the peer and checks it exited cleanly. */
static inline void t_peer_stop(t_chan parent, pid_t pid) {
  t_send(parent, 0);
  int rc = t_wait(pid, 30000);
  if (rc != 0) fprintf(stderr, "peer %d exited with %d\n", (int)pid, rc);
  CHECK(rc == 0);
}

/* The timeout of a link or unlink that must succeed: it returns as soon as
 * it does, so the bound only needs to outlast a busy machine's delays (the
 * acl re-runs build HCCL communicators on the simulator during link setup). */
#define T_LINK_MS 30000

static inline uint32_t t_link(llmdd_instance_t *d, uint64_t cluster, uint16_t port) {
  llmdd_ip_info_t ip = llmdd_ip_info("127.0.0.1", port);
  llmdd_cluster_info_t cl = t_cluster(cluster, &ip);
  uint32_t ret = 99;
  uint32_t s = llmdd_link_clusters(d, &cl, 1, T_LINK_MS, &ret);
  return s;
}

static inline uint32_t t_unlink(llmdd_instance_t *d, uint64_t cluster, uint16_t port) {
  llmdd_ip_info_t ip = llmdd_ip_info("127.0.0.1", port);
  llmdd_cluster_info_t cl = t_cluster(cluster, &ip);
  uint32_t ret = 99;
  return llmdd_unlink_clusters(d, &cl, 1, T_LINK_MS, false, &ret);
}

/* A 2-dim UINT8 desc: dim0 x dim1 bytes per tensor. */
static inline llmdd_cache_desc_t t_desc2(uint32_t placement, uint32_t n, int64_t d0, int64_t d1) {
  int64_t dims[2] = {d0, d1};
  return t_desc(placement, LLMDD_DT_UINT8, n, 2, dims);
}

#endif
