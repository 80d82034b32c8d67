/* Helpers for the layer-wise async transfer tests: a layer synchronizer whose
 * layers the test releases one at a time (or refuses at a chosen layer), and
 * builders for llmdd_transfer_config_t. Uses only the public header. */
#ifndef T_ASYNC_H
#define T_ASYNC_H

#include <pthread.h>

#include "llmdd_test.h"
#include "t_dataplane.h"

#define T_GATE_MAX 256

/* A synchronizer the test drives: the callback for layer L returns true once
 * `released > L` (or at once when `open`), false at `fail_layer`. */
typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int released;     /* layers < released are approved */
  int open;         /* approve every layer at once */
  int fail_layer;   /* refuse this layer (-1: none) */
  int calls;        /* number of callback invocations */
  int bad_timeout;  /* calls whose timeout_ms was not -1 */
  int out_of_order; /* calls whose layer was not above the previous one */
  uint32_t layers[T_GATE_MAX];
  double t_enter[T_GATE_MAX]; /* t_now_ms() when the callback for call i began */
} t_gate;

static inline void t_gate_init(t_gate *g, int open, int fail_layer) {
  memset(g, 0, sizeof *g);
  pthread_mutex_init(&g->mu, NULL);
  pthread_cond_init(&g->cv, NULL);
  g->open = open;
  g->fail_layer = fail_layer;
}

static inline void t_gate_destroy(t_gate *g) {
  pthread_mutex_destroy(&g->mu);
  pthread_cond_destroy(&g->cv);
}

/* The llmdd_layer_sync_fn. */
static inline bool t_gate_sync(void *user, uint32_t layer, int64_t timeout_ms) {
  t_gate *g = (t_gate *)user;
  pthread_mutex_lock(&g->mu);
  if (timeout_ms != -1) g->bad_timeout++;
  if (g->calls > 0 && layer <= g->layers[(g->calls - 1) % T_GATE_MAX]) g->out_of_order++;
  g->layers[g->calls % T_GATE_MAX] = layer;
  g->t_enter[g->calls % T_GATE_MAX] = t_now_ms();
  g->calls++;
  pthread_cond_broadcast(&g->cv);
  bool ok = (int)layer != g->fail_layer;
  while (ok && !g->open && g->released <= (int)layer) pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
  return ok;
}

/* Approves layers < n. */
static inline void t_gate_release(t_gate *g, int n) {
  pthread_mutex_lock(&g->mu);
  if (n > g->released) g->released = n;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

static inline void t_gate_open(t_gate *g) {
  pthread_mutex_lock(&g->mu);
  g->open = 1;
  pthread_cond_broadcast(&g->cv);
  pthread_mutex_unlock(&g->mu);
}

static inline int t_gate_calls(t_gate *g) {
  pthread_mutex_lock(&g->mu);
  int n = g->calls;
  pthread_mutex_unlock(&g->mu);
  return n;
}

/* Waits until the callback has been entered `n` times; false after timeout_ms. */
static inline int t_gate_wait_calls(t_gate *g, int n, int timeout_ms) {
  double end = t_now_ms() + timeout_ms;
  pthread_mutex_lock(&g->mu);
  while (g->calls < n && t_now_ms() < end) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += 5 * 1000000;
    if (ts.tv_nsec >= 1000000000) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000;
    }
    pthread_cond_timedwait(&g->cv, &g->mu, &ts);
  }
  int ok = g->calls >= n;
  pthread_mutex_unlock(&g->mu);
  return ok;
}

/* A BY_CACHE_KEY config for half-open source/destination layer ranges (-1 = all). */
static inline llmdd_transfer_config_t t_cfg_key(llmdd_cache_key_t key, int32_t sb, int32_t se, int32_t db,
                                                int32_t de, uint32_t src_bi) {
  llmdd_transfer_config_t c;
  memset(&c, 0, sizeof c);
  c.kind = LLMDD_TRANSFER_BY_CACHE_KEY;
  c.cache_key = key;
  c.layers.src_begin = sb;
  c.layers.src_end = se;
  c.layers.dst_begin = db;
  c.layers.dst_end = de;
  c.src_batch_index = src_bi;
  return c;
}

/* A BY_ADDRS config: `n` destination addresses for source layers [sb, se). */
static inline llmdd_transfer_config_t t_cfg_addrs(uint64_t cluster, const uint64_t *addrs, size_t n, int32_t sb,
                                                  int32_t se, uint32_t src_bi) {
  llmdd_transfer_config_t c;
  memset(&c, 0, sizeof c);
  c.kind = LLMDD_TRANSFER_BY_ADDRS;
  c.dst_cluster_id = cluster;
  c.dst_addrs = addrs;
  c.num_dst_addrs = n;
  c.layers.src_begin = sb;
  c.layers.src_end = se;
  c.layers.dst_begin = -1;
  c.layers.dst_end = -1;
  c.src_batch_index = src_bi;
  return c;
}

/* Compiler barrier for polling memory another process writes. */
#define T_BARRIER() __asm__ __volatile__("" ::: "memory")

/* ---------- the decoder peer and the prompt of the two-process tests ---------- */

/* Decoder setup: registers `k` (nblocks x blk per tensor) as a blocks cache
 * keyed BlocksCacheKey(self->cluster, 0) and, when `b` is not NULL, `b`
 * (slots x slot_bytes) as a batch cache; sends the blocks cache id, then (with
 * `b`) the batch cache id and every tensor address of k and of b. */
static inline void t_async_dst(t_peer *self, llmdd_instance_t *d, t_mem *k, uint64_t nblocks,
                               uint64_t blk, t_mem *b, uint64_t slots, uint64_t slot_bytes) {
  uint32_t n = k->n;
  llmdd_cache_desc_t kd = t_desc2(LLMDD_PLACEMENT_DEVICE, n, (int64_t)nblocks, (int64_t)blk);
  llmdd_cache_key_t key = llmdd_blocks_cache_key(self->cluster, 0);
  llmdd_cache_t kc, bc;
  REQUIRE_OK(llmdd_register_blocks_cache(d, &kd, k->addrs, n, &key, -1, &kc));
  t_send(self->ch, (uint64_t)kc.cache_id);
  if (!b) return;
  llmdd_cache_desc_t bd = t_desc2(LLMDD_PLACEMENT_DEVICE, n, (int64_t)slots, (int64_t)slot_bytes);
  REQUIRE_OK(llmdd_register_cache(d, &bd, b->addrs, n, NULL, 0, -1, &bc));
  t_send(self->ch, (uint64_t)bc.cache_id);
  for (uint32_t t = 0; t < n; t++) t_send(self->ch, k->addrs[t]);
  for (uint32_t t = 0; t < n; t++) t_send(self->ch, b->addrs[t]);
}

/* Receives what t_async_dst sent with a batch cache: ids and n addresses each. */
static inline void t_async_recv_dst(t_chan c, uint32_t n, int64_t *k_id, int64_t *b_id,
                                    uint64_t *k_addrs, uint64_t *b_addrs) {
  *k_id = (int64_t)t_recv(c, 30000);
  *b_id = (int64_t)t_recv(c, 30000);
  for (uint32_t t = 0; t < n; t++) k_addrs[t] = t_recv(c, 30000);
  for (uint32_t t = 0; t < n; t++) b_addrs[t] = t_recv(c, 30000);
}

/* Prompt side: creates and inits cluster `id` with the peer's options,
 * registers `src` (nblocks x blk) as an unkeyed blocks cache into *cache, and
 * links to the peer. */
static inline llmdd_instance_t *t_async_prompt(uint64_t id, const t_peer *peer, t_mem *src,
                                               uint64_t nblocks, uint64_t blk,
                                               llmdd_cache_t *cache) {
  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, id, &p));
  REQUIRE_OK(t_init(p, NULL, peer->opts.o, peer->opts.n));
  llmdd_cache_desc_t desc = t_desc2(LLMDD_PLACEMENT_DEVICE, src->n, (int64_t)nblocks, (int64_t)blk);
  REQUIRE_OK(llmdd_register_blocks_cache(p, &desc, src->addrs, src->n, NULL, -1, cache));
  REQUIRE_OK(t_link(p, peer->cluster, peer->port));
  return p;
}

#endif
