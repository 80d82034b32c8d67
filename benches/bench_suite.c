/* llmdd benchmark, standard suite (what `llmdd_bench` runs with no measurement
 * options): a prompt and a decoder process on 127.0.0.1 move 128 MiB as
 * blocks of 16K, 64K, 256K, 1M and 2M, pull and push, over each transport, and
 * report GB/s (median of 5) next to this machine's single-thread memcpy
 * bandwidth measured in the same run, plus p50/p99 latency of single 16 KiB
 * block pulls. Blocks are scattered (a permutation), so nothing coalesces.
 *
 * Transports:
 *   same-host   user-registered memory, one-sided process_vm_readv/writev
 *   same-host-pool  prompt's cache allocated by llmdd from its memfd pool,
 *                   which the decoder maps (memcpy)
 *   tcp         llmdd.SameHost=off: TCP, striped over 2 connections
 *
 * Each transport also runs a layer-wise async push (llmdd_transfer_cache_async)
 * of a 32-layer K/V paged cache (128 MiB, 64 KiB blocks) whose synchronizer
 * approves every layer at once, next to a synchronous llmdd_push_blocks of the
 * same blocks, plus the latency of a one-layer, one-block async task (start,
 * synchronize, free) with 64 KiB and 4 KiB blocks, each next to a synchronous
 * llmdd_push_blocks of the same bytes: the task's own cost is the difference.
 *
 * `llmdd_bench --help` lists the options; --runs and --transport apply here.
 */
#include "bench_common.h"

#include <poll.h>
#include <sys/wait.h>
#include <unistd.h>

#define TOTAL (128ull << 20)
static const uint64_t SIZES[] = {16 << 10, 64 << 10, 256 << 10, 1 << 20, 2 << 20};
enum { NSIZES = 5, LAT_ITERS = 3000 };
/* The async section: 32 layers x K/V, 32 blocks of 64 KiB per tensor. */
enum { A_LAYERS = 32, A_TENSORS = 2 * A_LAYERS, A_BLOCKS = 32, A_LAT_ITERS = 1000 };
#define A_BLOCK (64ull << 10)
#define A_MODEL 100 /* model id of the async destination cache */
/* One-layer caches of small blocks for the latency of a task that moves little. */
enum { S_BLOCKS = 64 };
#define S_BLOCK (4ull << 10)
#define S_MODEL 101
static int RUNS = 5;
static const uint64_t P = 11, D = 22;

/* Registers `n` tensors of `blocks` x `block` bytes as a blocks cache. */
static llmdd_cache_t async_cache(llmdd_instance_t *inst, const llmdd_cache_key_t *key, uint8_t fill, uint32_t n,
                                 uint64_t blocks, uint64_t block) {
  llmdd_cache_desc_t d = bench_desc(n, blocks, block);
  uint64_t addrs[A_TENSORS];
  for (uint32_t t = 0; t < n; t++) {
    uint8_t *m = aligned_alloc(2 << 20, blocks * block);
    memset(m, fill, blocks * block);
    addrs[t] = (uint64_t)(uintptr_t)m;
  }
  llmdd_cache_t c;
  DIE_IF(llmdd_register_blocks_cache(inst, &d, addrs, n, key, -1, &c), "register async cache");
  return c;
}

static bool approve(void *user, uint32_t layer, int64_t timeout_ms) {
  (void)user;
  (void)layer;
  (void)timeout_ms;
  return true;
}

/* Runs one async push task to the prompt's cache of model `model` and waits for it. */
static void async_push(llmdd_instance_t *d, int64_t src, uint64_t model, int32_t layers, const uint64_t *sb,
                       const uint64_t *db, size_t n) {
  llmdd_transfer_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.kind = LLMDD_TRANSFER_BY_CACHE_KEY;
  cfg.cache_key = llmdd_blocks_cache_key(P, model);
  cfg.layers = llmdd_layer_range(0, layers, 0, layers, 2);
  llmdd_task_t *task = NULL;
  DIE_IF(llmdd_transfer_cache_async(d, src, approve, NULL, &cfg, 1, sb, n, db, n, 0, &task),
         "transfer_cache_async");
  DIE_IF(llmdd_task_synchronize(task, 60000), "task_synchronize");
  llmdd_task_free(task);
}

/* p50 and p99 (µs) of one-layer, one-block async tasks (start, synchronize,
 * free) from source `src` to the prompt's cache of model `model` (`blocks`
 * blocks per tensor), then of synchronous push_blocks of the same bytes. */
static void task_latency(llmdd_instance_t *d, int64_t src, uint64_t model, uint64_t blocks, double out[4]) {
  static double lat[A_LAT_ITERS];
  for (int pass = 0; pass < 2; pass++) {
    llmdd_cache_key_t k = llmdd_blocks_cache_key(P, model);
    llmdd_layer_range_t l0 = llmdd_layer_range(0, 1, 0, 1, 2);
    for (int i = 0; i < A_LAT_ITERS; i++) {
      uint64_t one_s = (uint64_t)i % blocks, one_d = (uint64_t)(i * 5) % blocks;
      double a = bench_now();
      if (pass == 0)
        async_push(d, src, model, 1, &one_s, &one_d, 1);
      else
        DIE_IF(llmdd_push_blocks(d, &k, src, &one_s, 1, &one_d, 1, &l0), "push_blocks");
      lat[i] = (bench_now() - a) * 1e6;
    }
    qsort(lat, A_LAT_ITERS, sizeof lat[0], bench_cmp_d);
    out[2 * pass] = lat[A_LAT_ITERS / 2];
    out[2 * pass + 1] = lat[A_LAT_ITERS * 99 / 100];
  }
}

/* Async layer-wise push vs synchronous push_blocks of the same 128 MiB, and
 * the latency of tasks that move one block. */
static void run_async(llmdd_instance_t *d, double mc) {
  llmdd_cache_t src = async_cache(d, NULL, 0x3c, A_TENSORS, A_BLOCKS, A_BLOCK);
  llmdd_cache_t small = async_cache(d, NULL, 0x3d, 2, S_BLOCKS, S_BLOCK);
  uint64_t sb[A_BLOCKS], db[A_BLOCKS];
  for (uint64_t i = 0; i < A_BLOCKS; i++) {
    sb[i] = i;
    db[i] = (i * 7) % A_BLOCKS; /* scattered destination blocks */
  }
  const double bytes = (double)A_TENSORS * A_BLOCKS * A_BLOCK;
  double ra[9], rs[9];
  llmdd_cache_key_t k = llmdd_blocks_cache_key(P, A_MODEL);
  for (int r = 0; r < RUNS; r++) {
    double t = bench_now();
    async_push(d, src.cache_id, A_MODEL, A_LAYERS, sb, db, A_BLOCKS);
    ra[r] = bytes / (bench_now() - t) / 1e9;
    t = bench_now();
    DIE_IF(llmdd_push_blocks(d, &k, src.cache_id, sb, A_BLOCKS, db, A_BLOCKS, NULL), "push_blocks");
    rs[r] = bytes / (bench_now() - t) / 1e9;
  }
  double big[4], tiny[4];
  task_latency(d, src.cache_id, A_MODEL, A_BLOCKS, big);
  task_latency(d, small.cache_id, S_MODEL, S_BLOCKS, tiny);
  double ma = bench_median(ra, RUNS);
  printf("layer-wise async push, 32 layers x K/V x 32 blocks of 64 KiB = 128 MiB: async %.2f GB/s, "
         "push_blocks %.2f GB/s (%.0f %% of memcpy)\n",
         ma, bench_median(rs, RUNS), 100 * ma / mc);
  printf("one-layer one-block async task, K+V x 64 KiB: p50 %.1f us, p99 %.1f us; the same bytes by "
         "push_blocks: p50 %.1f us, p99 %.1f us (%d each)\n",
         big[0], big[1], big[2], big[3], A_LAT_ITERS);
  printf("one-layer one-block async task, K+V x 4 KiB: p50 %.1f us, p99 %.1f us; the same bytes by "
         "push_blocks: p50 %.1f us, p99 %.1f us (%d each)\n",
         tiny[0], tiny[1], tiny[2], tiny[3], A_LAT_ITERS);
}

static llmdd_cache_desc_t desc_for(uint64_t block) { return bench_desc(1, TOTAL / block, block); }

static void init(llmdd_instance_t *inst, const char *listen, int tcp, int pool) {
  llmdd_option_t o[8];
  size_t n = 0;
  o[n++] = (llmdd_option_t){"llm.DeviceId", "0"};
  o[n++] = (llmdd_option_t){"llm.EnableCacheManager", "1"};
  o[n++] = (llmdd_option_t){"llm.EnableRemoteCacheAccessible", "1"};
  o[n++] = (llmdd_option_t){"llm.SyncKvCacheWaitTime", "30000"};
  if (listen) o[n++] = (llmdd_option_t){"llm.ListenIpInfo", listen};
  if (tcp) o[n++] = (llmdd_option_t){"llmdd.SameHost", "off"};
  if (pool) o[n++] = (llmdd_option_t){"llm.MemPoolConfig", "{\"memory_size\":1073741824,\"page_shift\":21}"};
  DIE_IF(llmdd_init(inst, o, n), "llmdd_init");
}

static int prompt(const char *listen, int tcp, int pool, int ready, int done) {
  llmdd_instance_t *p;
  DIE_IF(llmdd_create(LLMDD_ROLE_PROMPT, P, &p), "create");
  init(p, listen, tcp, pool);
  for (int s = 0; s < NSIZES; s++) {
    llmdd_cache_desc_t d = desc_for(SIZES[s]);
    llmdd_cache_key_t k = llmdd_blocks_cache_key(P, (uint64_t)s);
    llmdd_cache_t c;
    if (pool) {
      DIE_IF(llmdd_allocate_blocks_cache(p, &d, &k, &c), "allocate_blocks_cache");
    } else {
      uint8_t *m = aligned_alloc(2 << 20, TOTAL);
      uint64_t a = (uint64_t)(uintptr_t)m;
      DIE_IF(llmdd_register_blocks_cache(p, &d, &a, 1, &k, -1, &c), "register_blocks_cache");
    }
    memset((void *)(uintptr_t)c.tensor_addrs[0], 0x5a + s, TOTAL);
  }
  llmdd_cache_key_t ak = llmdd_blocks_cache_key(P, A_MODEL);
  async_cache(p, &ak, 0, A_TENSORS, A_BLOCKS, A_BLOCK);
  llmdd_cache_key_t sk = llmdd_blocks_cache_key(P, S_MODEL);
  async_cache(p, &sk, 0, 2, S_BLOCKS, S_BLOCK);
  char x = 'r';
  if (write(ready, &x, 1) != 1) return 1;
  struct pollfd pf = {done, POLLIN, 0};
  poll(&pf, 1, 600000);
  llmdd_finalize(p);
  llmdd_destroy(p);
  return 0;
}

static void run(const char *name, int tcp, int pool, double mc) {
  int ready[2], done[2];
  if (pipe(ready) || pipe(done)) exit(1);
  uint16_t port = bench_free_port();
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) _exit(prompt(listen, tcp, pool, ready[1], done[0]));
  char x;
  struct pollfd pf = {ready[0], POLLIN, 0};
  if (poll(&pf, 1, 120000) != 1 || read(ready[0], &x, 1) != 1) exit(1);

  llmdd_instance_t *d;
  DIE_IF(llmdd_create(LLMDD_ROLE_DECODER, D, &d), "create");
  init(d, NULL, tcp, 0);
  llmdd_ip_info_t ip = llmdd_ip_info("127.0.0.1", port);
  llmdd_cluster_info_t cl;
  memset(&cl, 0, sizeof cl);
  cl.remote_cluster_id = P;
  cl.remote_ip_infos = &ip;
  cl.num_remote_ip_infos = 1;
  llmdd_cache_t dc[NSIZES];
  for (int s = 0; s < NSIZES; s++) {
    llmdd_cache_desc_t desc = desc_for(SIZES[s]);
    uint8_t *m = aligned_alloc(2 << 20, TOTAL);
    memset(m, 0, TOTAL);
    uint64_t a = (uint64_t)(uintptr_t)m;
    DIE_IF(llmdd_register_blocks_cache(d, &desc, &a, 1, NULL, -1, &dc[s]), "register");
  }
  uint32_t ret;
  DIE_IF(llmdd_link_clusters(d, &cl, 1, 5000, &ret), "link_clusters");
  printf("\n%s (GB/s, median of %d; memcpy 1 thread = %.2f GB/s in this run)\n", name, RUNS, mc);
  printf("| block | pull | push | pull / memcpy |\n|---|---|---|---|\n");
  for (int s = 0; s < NSIZES; s++) {
    uint64_t n = TOTAL / SIZES[s];
    uint64_t *src = malloc(n * 8), *dst = malloc(n * 8);
    for (uint64_t i = 0; i < n; i++) {
      src[i] = (i * 7919) % n; /* scattered: no two consecutive blocks adjacent */
      dst[i] = i;
    }
    llmdd_cache_key_t k = llmdd_blocks_cache_key(P, (uint64_t)s);
    /* One tensor per cache: one tensor per layer. */
    llmdd_layer_range_t one = llmdd_layer_range(-1, -1, -1, -1, 1);
    double pr[9], pw[9];
    for (int r = 0; r < RUNS; r++) {
      double t = bench_now();
      DIE_IF(llmdd_pull_blocks(d, &k, dc[s].cache_id, src, n, dst, n, &one), "pull_blocks");
      pr[r] = TOTAL / (bench_now() - t) / 1e9;
    }
    const uint8_t *m = (const uint8_t *)(uintptr_t)dc[s].tensor_addrs[0];
    if (m[0] != 0x5a + s || m[TOTAL - 1] != 0x5a + s) {
      fprintf(stderr, "pulled bytes are wrong\n");
      exit(1);
    }
    for (int r = 0; r < RUNS; r++) {
      double t = bench_now();
      DIE_IF(llmdd_push_blocks(d, &k, dc[s].cache_id, dst, n, src, n, &one), "push_blocks");
      pw[r] = TOTAL / (bench_now() - t) / 1e9;
    }
    double mp = bench_median(pr, RUNS);
    printf("| %4llu KiB | %.2f | %.2f | %.0f %% |\n", (unsigned long long)(SIZES[s] >> 10), mp,
           bench_median(pw, RUNS), 100 * mp / mc);
    fflush(stdout);
    free(src);
    free(dst);
  }
  /* Latency of single 16 KiB block pulls. */
  static double lat[LAT_ITERS];
  llmdd_cache_key_t k = llmdd_blocks_cache_key(P, 0);
  for (int i = 0; i < LAT_ITERS; i++) {
    uint64_t s = (uint64_t)(i * 13) % 8192, t = (uint64_t)i % 8192;
    double a = bench_now();
    DIE_IF(llmdd_pull_blocks(d, &k, dc[0].cache_id, &s, 1, &t, 1, NULL), "pull_blocks");
    lat[i] = (bench_now() - a) * 1e6;
  }
  qsort(lat, LAT_ITERS, sizeof lat[0], bench_cmp_d);
  printf("single 16 KiB block pull: p50 %.1f us, p99 %.1f us (%d pulls)\n", lat[LAT_ITERS / 2],
         lat[LAT_ITERS * 99 / 100], LAT_ITERS);
  run_async(d, mc);
  DIE_IF(llmdd_unlink_clusters(d, &cl, 1, 5000, false, &ret), "unlink");
  llmdd_finalize(d);
  llmdd_destroy(d);
  if (write(done[1], "d", 1) != 1) exit(1);
  waitpid(pid, NULL, 0);
}

int bench_suite(int runs, unsigned transports) {
  RUNS = runs;
  printf("%s benchmark: 128 MiB per pass, prompt and decoder processes on 127.0.0.1\n", llmdd_version());
  double mc = bench_memcpy_gbps(TOTAL, RUNS);
  if (transports & BENCH_SAME_HOST) run("same-host (user-registered memory)", 0, 0, mc);
  if (transports & BENCH_POOL) run("same-host-pool (llmdd-allocated memfd pool)", 0, 1, mc);
  if (transports & BENCH_TCP) run("tcp (llmdd.SameHost=off, 2 connections)", 1, 0, mc);
  return 0;
}
