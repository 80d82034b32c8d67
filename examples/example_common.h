/* Small helpers shared by the examples (not part of the llmdd API): a status
 * check that prints the last error and exits, a free loopback port, patterned
 * tensors, a 2-dim cache description, and a forked peer process synchronised
 * over pipes. */
#ifndef LLMDD_EXAMPLE_COMMON_H
#define LLMDD_EXAMPLE_COMMON_H
#define _GNU_SOURCE
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llmdd.h"

/* Exits with the status name and the last-error message when a call fails. */
#define OK(call)                                                                         \
  do {                                                                                   \
    uint32_t s_ = (call);                                                                \
    if (s_ != LLMDD_SUCCESS) {                                                           \
      fprintf(stderr, "%s: %s (%s)\n", #call, llmdd_status_name(s_),                     \
              llmdd_last_error_message());                                               \
      exit(1);                                                                           \
    }                                                                                    \
  } while (0)

/* A loopback port that stays free until llmdd binds it: a socket bound to it
 * with SO_REUSEADDR (never listening) holds it for the life of the process, so
 * no other bind(0) or connect() on the machine takes it in between, while
 * llmdd's listener (SO_REUSEADDR too) can bind it. Closing it at once would
 * leave the port to whoever asks first. */
static inline uint16_t ex_free_port(void) {
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int one = 1;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) ||
      bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len))
    exit(1);
  return ntohs(a.sin_port); /* fd stays open: it holds the port */
}

static inline double ex_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* The expected byte at `off` of tensor `t` for data set `seed`. */
static inline uint8_t ex_byte(uint32_t seed, int t, uint64_t off) {
  return (uint8_t)(seed * 101 + t * 31 + off * 7 + 1);
}

/* `n` tensors of `bytes` each, patterned with `seed` (0 = zeros). */
static inline void ex_tensors(uint64_t *addrs, int n, uint64_t bytes, uint32_t seed) {
  for (int t = 0; t < n; t++) {
    uint8_t *p = calloc(1, bytes);
    if (!p) exit(1);
    if (seed)
      for (uint64_t i = 0; i < bytes; i++) p[i] = ex_byte(seed, t, i);
    addrs[t] = (uint64_t)(uintptr_t)p;
  }
}

static inline void ex_free(uint64_t *addrs, int n) {
  for (int t = 0; t < n; t++) free((void *)(uintptr_t)addrs[t]);
}

/* Counts bytes of tensor t in [off, off+len) that differ from the pattern of
 * `seed` at source offset `src_off` (seed 0: must be zero). */
static inline uint64_t ex_mismatch(uint64_t addr, int t, uint64_t off, uint64_t len,
                                   uint32_t seed, uint64_t src_off) {
  const uint8_t *p = (const uint8_t *)(uintptr_t)addr + off;
  uint64_t bad = 0;
  for (uint64_t i = 0; i < len; i++) bad += p[i] != (seed ? ex_byte(seed, t, src_off + i) : 0);
  return bad;
}

/* A `num_tensors` x dim0 x dim1 UINT8 cache description. */
static inline llmdd_cache_desc_t ex_desc(uint32_t num_tensors, int64_t dim0, int64_t dim1) {
  llmdd_cache_desc_t d;
  memset(&d, 0, sizeof d);
  d.placement = LLMDD_PLACEMENT_DEVICE; /* host-addressable memory on the host backend */
  d.data_type = LLMDD_DT_UINT8;
  d.num_tensors = num_tensors;
  d.num_dims = 2;
  d.shape[0] = dim0;
  d.shape[1] = dim1;
  d.seq_len_dim_index = -1;
  return d;
}

/* A paged (blocks) cache and a contiguous (batch) cache of one instance,
 * both `n` tensors of patterned memory (seed 0 = zeros) owned by the example. */
#define EX_MAX_TENSORS 64
typedef struct {
  int n;
  uint64_t blocks[EX_MAX_TENSORS], batch[EX_MAX_TENSORS];
  llmdd_cache_t blocks_cache, batch_cache;
} ex_kv;

/* Allocates and registers both caches; `key` (may be NULL) binds the blocks cache. */
static inline void ex_kv_register(llmdd_instance_t *inst, ex_kv *kv, int n, int64_t blocks,
                                  int64_t block_bytes, int64_t slots, int64_t slot_bytes,
                                  uint32_t seed, const llmdd_cache_key_t *key) {
  if (n > EX_MAX_TENSORS) exit(1);
  kv->n = n;
  ex_tensors(kv->blocks, n, (uint64_t)(blocks * block_bytes), seed);
  ex_tensors(kv->batch, n, (uint64_t)(slots * slot_bytes), seed);
  llmdd_cache_desc_t bd = ex_desc(n, blocks, block_bytes);
  llmdd_cache_desc_t cd = ex_desc(n, slots, slot_bytes);
  OK(llmdd_register_blocks_cache(inst, &bd, kv->blocks, n, key, -1, &kv->blocks_cache));
  OK(llmdd_register_cache(inst, &cd, kv->batch, n, NULL, 0, -1, &kv->batch_cache));
}

/* Frees the memory (after the caches were unregistered or the instance finalized). */
static inline void ex_kv_free(ex_kv *kv) {
  ex_free(kv->blocks, kv->n);
  ex_free(kv->batch, kv->n);
}

/* One link_clusters entry for 127.0.0.1:port; `ip` must outlive the call. */
static inline llmdd_cluster_info_t ex_cluster(uint64_t id, llmdd_ip_info_t *ip, uint16_t port) {
  llmdd_cluster_info_t c;
  memset(&c, 0, sizeof c);
  *ip = llmdd_ip_info("127.0.0.1", port);
  c.remote_cluster_id = id;
  c.remote_ip_infos = ip;
  c.num_remote_ip_infos = 1;
  return c;
}

/* Two pipes between a parent and a forked peer; each side sends u64 values. */
typedef struct {
  int to_peer[2], to_parent[2];
  int is_peer;
} ex_chan;

static inline void ex_send(ex_chan *c, uint64_t v) {
  int fd = c->is_peer ? c->to_parent[1] : c->to_peer[1];
  if (write(fd, &v, sizeof v) != sizeof v) exit(1);
}

static inline uint64_t ex_recv(ex_chan *c) {
  int fd = c->is_peer ? c->to_peer[0] : c->to_parent[0];
  uint64_t v;
  if (read(fd, &v, sizeof v) != sizeof v) exit(1); /* the other side died */
  return v;
}

/* Forks `peer(chan, arg)` into a child process; returns its pid. */
static inline pid_t ex_fork(ex_chan *c, int (*peer)(ex_chan *, void *), void *arg) {
  if (pipe(c->to_peer) || pipe(c->to_parent)) exit(1);
  fflush(stdout);
  setvbuf(stdout, NULL, _IOLBF, 0); /* keep the two processes' lines in order */
  pid_t pid = fork();
  if (pid < 0) exit(1);
  if (pid == 0) {
    c->is_peer = 1;
    /* Each side keeps only its own ends, so a side that exits early is seen
     * as EOF by the other (ex_recv exits) instead of a wait forever. */
    close(c->to_peer[1]);
    close(c->to_parent[0]);
    int rc = peer(c, arg);
    fflush(stdout);
    _exit(rc);
  }
  c->is_peer = 0;
  close(c->to_peer[0]);
  close(c->to_parent[1]);
  return pid;
}

/* Waits for the peer; true when it exited with 0. */
static inline int ex_join(pid_t pid) {
  int st = 0;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

#endif
