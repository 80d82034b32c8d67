/* Shared helpers for the link/role tests: a small patterned blocks cache per
 * instance (keyed by its own cluster id, model 0), a pull of three blocks from
 * a peer with verification, one-cluster link/unlink wrappers, and a command
 * loop for a server child process. Uses only the public header. */
#ifndef LLMDD_TEST_BLOCKS_H
#define LLMDD_TEST_BLOCKS_H

#include "llmdd_test.h"

#define TB_BLOCKS 8
#define TB_BLOCK_BYTES 1024

typedef struct {
  uint8_t *buf[2];
  uint64_t addrs[2];
  llmdd_cache_t cache;
} t_blk;

/* Registers a 2-tensor blocks cache filled with pattern `seed`, bound to
 * blocks key (own_cluster, model 0); seed 0: zeros and no key (a pull target). */
static inline uint32_t t_blk_register(llmdd_instance_t *inst, t_blk *b, uint64_t own_cluster,
                                      uint32_t seed) {
  int64_t dims[2] = {TB_BLOCKS, TB_BLOCK_BYTES};
  llmdd_cache_desc_t d = t_desc(LLMDD_PLACEMENT_DEVICE, LLMDD_DT_UINT8, 2, 2, dims);
  for (int t = 0; t < 2; t++) {
    /* 2 MB aligned, as HCCS needs for device memory not from aclrtMalloc. */
    void *q = NULL;
    if (posix_memalign(&q, 2u << 20, TB_BLOCKS * TB_BLOCK_BYTES) != 0) return LLMDD_OUT_OF_MEMORY;
    memset(q, 0, TB_BLOCKS * TB_BLOCK_BYTES);
    b->buf[t] = q;
    if (seed) t_fill(b->buf[t], TB_BLOCKS * TB_BLOCK_BYTES, seed, t, 0);
    b->addrs[t] = (uint64_t)(uintptr_t)b->buf[t];
  }
  llmdd_cache_key_t key = llmdd_blocks_cache_key(own_cluster, 0);
  return llmdd_register_blocks_cache(inst, &d, b->addrs, 2, seed ? &key : NULL, -1, &b->cache);
}

static inline void t_blk_free(t_blk *b) {
  for (int t = 0; t < 2; t++) {
    free(b->buf[t]);
    b->buf[t] = NULL;
  }
}

static const uint64_t TB_SRC[3] = {1, 2, 7};
static const uint64_t TB_DST[3] = {0, 5, 6};

/* Zeroes `dst`, pulls blocks {1,2,7} of the peer's cache (key (remote, 0))
 * into blocks {0,5,6}; returns the status. */
static inline uint32_t t_blk_pull(llmdd_instance_t *inst, t_blk *dst, uint64_t remote) {
  for (int t = 0; t < 2; t++) memset(dst->buf[t], 0, TB_BLOCKS * TB_BLOCK_BYTES);
  llmdd_cache_key_t key = llmdd_blocks_cache_key(remote, 0);
  return llmdd_pull_blocks(inst, &key, dst->cache.cache_id, TB_SRC, 3, TB_DST, 3, NULL);
}

/* True if the pulled blocks hold pattern `seed`. */
static inline int t_blk_verify(const t_blk *dst, uint32_t seed) {
  for (int t = 0; t < 2; t++)
    for (int j = 0; j < 3; j++)
      if (!t_verify(dst->buf[t] + TB_DST[j] * TB_BLOCK_BYTES, TB_BLOCK_BYTES, seed, t,
                    TB_SRC[j] * TB_BLOCK_BYTES))
        return 0;
  return 1;
}

/* Pull + verify in one: returns the status, or LLMDD_FAILED if the data is wrong. */
static inline uint32_t t_blk_pull_verify(llmdd_instance_t *inst, t_blk *dst, uint64_t remote) {
  uint32_t s = t_blk_pull(inst, dst, remote);
  if (s == LLMDD_SUCCESS && !t_blk_verify(dst, (uint32_t)remote)) {
    fprintf(stderr, "[pid %d] data pulled from cluster %llu does not match\n", (int)getpid(),
            (unsigned long long)remote);
    return LLMDD_FAILED;
  }
  return s;
}

/* Links to one cluster at ip:port; stores the per-cluster status in *ret. */
static inline uint32_t t_link1(llmdd_instance_t *inst, uint64_t remote, const char *ip,
                               uint16_t port, int32_t timeout_ms, uint32_t *ret) {
  llmdd_ip_info_t r = llmdd_ip_info(ip, port);
  llmdd_cluster_info_t c = t_cluster(remote, &r);
  uint32_t dummy = 0xABCDu;
  return llmdd_link_clusters(inst, &c, 1, timeout_ms, ret ? ret : &dummy);
}

static inline uint32_t t_unlink1(llmdd_instance_t *inst, uint64_t remote, const char *ip,
                                 uint16_t port, bool force, uint32_t *ret) {
  llmdd_ip_info_t r = llmdd_ip_info(ip, port);
  llmdd_cluster_info_t c = t_cluster(remote, &r);
  if (force) {
    c.remote_ip_infos = NULL;
    c.num_remote_ip_infos = 0;
  }
  uint32_t dummy = 0xABCDu;
  return llmdd_unlink_clusters(inst, &c, 1, 3000, force, ret ? ret : &dummy);
}

/* Commands a parent sends to a server child running t_serve_commands. */
#define TCMD_QUIT 0ull
#define TCMD_PULL(cluster) ((1ull << 56) | (uint64_t)(cluster))
#define TCMD_FORCE_UNLINK(cluster) ((2ull << 56) | (uint64_t)(cluster))
#define TCMD_UNLINK(cluster) ((3ull << 56) | (uint64_t)(cluster))

/* Runs commands until TCMD_QUIT, answering each with a status. */
static inline void t_serve_commands(llmdd_instance_t *inst, t_blk *scratch, t_chan c) {
  for (;;) {
    uint64_t cmd = t_recv(c, 30000);
    if (cmd == TCMD_QUIT) return;
    uint64_t op = cmd >> 56, arg = cmd & ((1ull << 56) - 1);
    uint32_t s = LLMDD_FAILED;
    if (op == 1) s = t_blk_pull_verify(inst, scratch, arg);
    if (op == 2) s = t_unlink1(inst, arg, NULL, 0, true, NULL);
    if (op == 3) s = t_unlink1(inst, arg, "127.0.0.1", 1, false, NULL);
    t_send(c, s);
  }
}

#endif
