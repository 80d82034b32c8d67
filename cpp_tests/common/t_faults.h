/* Helpers for the TCP fault scenarios (stop, kill, unlink during a transfer,
 * fd limits): a 512 MiB source cache with a sparse pattern (one checked byte
 * per 4 KiB page), its destination, a pull running in a background thread,
 * and the process's open file descriptor count. Uses only the public header. */
#ifndef T_FAULTS_H
#define T_FAULTS_H

#include "llmdd_test_blocks.h"
#include "t_dataplane.h"

#include <pthread.h>
#include <sys/mman.h>

#define TF_BLOCKS 256
#define TF_BLOCK (1024ull * 1024ull) /* 2 tensors x 256 x 1 MiB = 512 MiB */
#define TF_LEN ((uint64_t)TF_BLOCKS * TF_BLOCK)
#define TF_MODEL 1 /* the big cache is blocks key (cluster, 1) */

static inline uint8_t *tf_alloc(uint64_t len) {
  void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    exit(2);
  }
  return p;
}

static inline uint8_t tf_byte(uint32_t seed, uint32_t t, uint64_t off) {
  return (uint8_t)(seed * 7 + t * 3 + (off >> 12));
}

/* Registers the big source cache of `cluster`, filled sparsely with `seed`. */
static inline void tf_register_src(llmdd_instance_t *p, uint64_t cluster, uint32_t seed) {
  uint64_t addrs[2];
  for (uint32_t t = 0; t < 2; t++) {
    uint8_t *m = tf_alloc(TF_LEN);
    for (uint64_t off = 0; off < TF_LEN; off += 4096) m[off] = tf_byte(seed, t, off);
    addrs[t] = (uint64_t)(uintptr_t)m;
  }
  llmdd_cache_desc_t d = t_desc2(LLMDD_PLACEMENT_DEVICE, 2, TF_BLOCKS, (int64_t)TF_BLOCK);
  llmdd_cache_key_t k = llmdd_blocks_cache_key(cluster, TF_MODEL);
  llmdd_cache_t c;
  REQUIRE_OK(llmdd_register_blocks_cache(p, &d, addrs, 2, &k, -1, &c));
}

/* The big destination cache of a decoder. */
typedef struct {
  uint8_t *buf[2];
  int64_t id;
} tf_dst;

static inline tf_dst tf_register_dst(llmdd_instance_t *d) {
  tf_dst r;
  uint64_t addrs[2];
  for (uint32_t t = 0; t < 2; t++) {
    r.buf[t] = tf_alloc(TF_LEN);
    addrs[t] = (uint64_t)(uintptr_t)r.buf[t];
  }
  llmdd_cache_desc_t desc = t_desc2(LLMDD_PLACEMENT_DEVICE, 2, TF_BLOCKS, (int64_t)TF_BLOCK);
  llmdd_cache_t c;
  REQUIRE_OK(llmdd_register_blocks_cache(d, &desc, addrs, 2, NULL, -1, &c));
  r.id = c.cache_id;
  return r;
}

/* True if every checked byte of the destination holds `seed`'s pattern. */
static inline int tf_verify(const tf_dst *dst, uint32_t seed) {
  for (uint32_t t = 0; t < 2; t++)
    for (uint64_t off = 0; off < TF_LEN; off += 4096)
      if (dst->buf[t][off] != tf_byte(seed, t, off)) return 0;
  return 1;
}

static inline void tf_zero(tf_dst *dst) {
  for (uint32_t t = 0; t < 2; t++)
    for (uint64_t off = 0; off < TF_LEN; off += 4096) dst->buf[t][off] = 0;
}

/* A pull of the whole big cache of `remote` in a background thread. */
typedef struct {
  llmdd_instance_t *d;
  uint64_t remote;
  tf_dst *dst;
  pthread_t th;
  int done;
  uint32_t status;
  double t_start, t_end;
  char message[512];
} tf_bg;

static void *tf_bg_main(void *arg) {
  tf_bg *b = (tf_bg *)arg;
  static uint64_t idx[TF_BLOCKS];
  for (uint64_t i = 0; i < TF_BLOCKS; i++) idx[i] = i;
  llmdd_cache_key_t k = llmdd_blocks_cache_key(b->remote, TF_MODEL);
  uint32_t s = llmdd_pull_blocks(b->d, &k, b->dst->id, idx, TF_BLOCKS, idx, TF_BLOCKS, NULL);
  b->t_end = t_now_ms();
  snprintf(b->message, sizeof b->message, "%s", llmdd_last_error_message());
  b->status = s;
  __atomic_store_n(&b->done, 1, __ATOMIC_SEQ_CST);
  return NULL;
}

static inline void tf_bg_start(tf_bg *b, llmdd_instance_t *d, uint64_t remote, tf_dst *dst) {
  memset(b, 0, sizeof *b);
  b->d = d;
  b->remote = remote;
  b->dst = dst;
  tf_zero(dst);
  b->t_start = t_now_ms();
  if (pthread_create(&b->th, NULL, tf_bg_main, b) != 0) {
    perror("pthread_create");
    exit(2);
  }
}

static inline int tf_bg_done(tf_bg *b) { return __atomic_load_n(&b->done, __ATOMIC_SEQ_CST); }

/* Waits (up to 5 s) until the pull's first bytes have landed, so that what
 * follows happens in the middle of the transfer; false if it finished first
 * (then the scenario was not exercised). */
static inline int tf_bg_wait_moving(tf_bg *b) {
  volatile uint8_t *first = b->dst->buf[0];
  double end = t_now_ms() + 5000;
  while (!tf_bg_done(b) && first[0] == 0 && t_now_ms() < end) usleep(200);
  return !tf_bg_done(b) && first[0] != 0;
}

/* Joins the pull; false (and a message) if it is still running after `ms`. */
static inline int tf_bg_join(tf_bg *b, double ms) {
  double end = t_now_ms() + ms;
  while (!tf_bg_done(b) && t_now_ms() < end) usleep(1000);
  if (!tf_bg_done(b)) {
    fprintf(stderr, "[pid %d] the big pull is still running %.0f ms later\n", (int)getpid(), ms);
    return 0;
  }
  pthread_join(b->th, NULL);
  return 1;
}

/* A prompt's t_peer setup: the small t_blk cache (key (cluster, 0), seed =
 * cluster) and the big one (key (cluster, TF_MODEL)); reports 1 when ready. */
static inline void tf_prompt_setup(t_peer *self, llmdd_instance_t *p) {
  static t_blk small;
  REQUIRE_OK(t_blk_register(p, &small, self->cluster, (uint32_t)self->cluster));
  tf_register_src(p, self->cluster, (uint32_t)self->cluster);
  t_send(self->ch, 1);
}

/* A TCP decoder with sync_kv_timeout `sync_ms`, the big destination cache and
 * a t_blk scratch cache. */
static inline llmdd_instance_t *tf_decoder(uint64_t id, const char *sync_ms, tf_dst *big, t_blk *scratch) {
  llmdd_instance_t *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, id, &d));
  llmdd_option_t o[2] = {{"llmdd.SameHost", "off"}, {"llm.SyncKvCacheWaitTime", sync_ms}};
  REQUIRE_OK(t_init(d, NULL, o, 2));
  *big = tf_register_dst(d);
  REQUIRE_OK(t_blk_register(d, scratch, 0, 0));
  return d;
}

/* Open file descriptors of this process. */
static inline int tf_fd_count(void) {
  return t_count_dir("/proc/self/fd") - 1; /* the directory's own descriptor */
}

#endif
