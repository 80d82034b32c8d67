/* The main job: a prompt (prefill) process and a decoder process on 127.0.0.1
 * move a realistic paged KV cache with llmdd, verify every byte, and print what
 * moved and how fast.
 *
 * Model shape: 32 layers x {K, V} = 64 tensors, each a paged cache of 128
 * blocks x (16 tokens x 8 heads x 128 dims x fp16) = 32 KiB per block, 4 MiB
 * per tensor, 256 MiB per process. The prompt registers its cache under a
 * BlocksCacheKey and listens; the decoder links to it and pulls one request's
 * 48 blocks (768 tokens) into different block slots, 8 layers at a time
 * (4 layer ranges), first over the same-host path, then over TCP.
 *
 * Build: cmake -S . -B build && cmake --build build && ./build/examples/kv_transfer
 * Usage: kv_transfer [--transport both|same-host|tcp] [--rounds N]
 */
#define _GNU_SOURCE
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "example_common.h"
#include "llmdd.h"

enum { LAYERS = 32, TENSORS = 2 * LAYERS, BLOCKS = 128, TOKENS = 16, HEADS = 8, DIMS = 128 };
#define BLOCK_BYTES ((uint64_t)TOKENS * HEADS * DIMS * 2)
#define TENSOR_BYTES (BLOCK_BYTES * BLOCKS)
enum { REQ_BLOCKS = 48, LAYERS_PER_STEP = 8 };
static const uint64_t PROMPT_ID = 1001, DECODER_ID = 2002;

#define DIE_IF(cond, what)                                                                     \
  do {                                                                                         \
    if (cond) {                                                                                \
      fprintf(stderr, "%s failed: %s\n", what, llmdd_last_error_message());                    \
      exit(1);                                                                                 \
    }                                                                                          \
  } while (0)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* What the prompt wrote at byte `off` of tensor `t` (its "prefill" output). */
static uint8_t kv_byte(uint32_t t, uint64_t off) {
  uint64_t x = off * 0x9E3779B97F4A7C15ull ^ ((uint64_t)t << 48);
  return (uint8_t)((x ^ (x >> 31)) >> 24);
}

static llmdd_cache_desc_t kv_desc(void) {
  llmdd_cache_desc_t d;
  memset(&d, 0, sizeof d);
  d.placement = LLMDD_PLACEMENT_DEVICE; /* host-addressable on the host backend */
  d.data_type = LLMDD_DT_FLOAT16;
  d.num_tensors = TENSORS;
  d.num_dims = 4;
  d.shape[0] = BLOCKS;
  d.shape[1] = TOKENS;
  d.shape[2] = HEADS;
  d.shape[3] = DIMS;
  d.seq_len_dim_index = -1;
  return d;
}

static uint8_t *alloc_cache(uint64_t *addrs) {
  uint8_t *mem = aligned_alloc(4096, TENSOR_BYTES * TENSORS);
  DIE_IF(mem == NULL, "allocating the KV cache");
  for (int t = 0; t < TENSORS; t++) addrs[t] = (uint64_t)(uintptr_t)(mem + t * TENSOR_BYTES);
  return mem;
}

static void init(llmdd_instance_t *inst, const char *listen, int tcp_only) {
  llmdd_config_t *cfg = NULL;
  DIE_IF(llmdd_config_new(&cfg), "llmdd_config_new");
  DIE_IF(llmdd_config_set_device_id(cfg, 0), "set_device_id");
  DIE_IF(llmdd_config_set_enable_cache_manager(cfg, true), "set_enable_cache_manager");
  DIE_IF(llmdd_config_set_sync_kv_timeout(cfg, 5000), "set_sync_kv_timeout");
  if (listen) DIE_IF(llmdd_config_set_listen_ip_info(cfg, listen), "set_listen_ip_info");
  if (tcp_only) DIE_IF(llmdd_config_set_option(cfg, "llmdd.SameHost", "off"), "set_option");
  const llmdd_option_t *opts = NULL;
  size_t n = 0;
  DIE_IF(llmdd_config_generate_options(cfg, &opts, &n), "generate_options");
  DIE_IF(llmdd_init(inst, opts, n), "llmdd_init");
  llmdd_config_free(cfg);
}

/* Prompt: fill the cache as prefill would, register it, listen, wait. */
static int run_prompt(const char *listen, int tcp_only, int ready_fd, int done_fd) {
  llmdd_instance_t *p = NULL;
  DIE_IF(llmdd_create(LLMDD_ROLE_PROMPT, PROMPT_ID, &p), "llmdd_create");
  init(p, listen, tcp_only);
  uint64_t addrs[TENSORS];
  uint8_t *mem = alloc_cache(addrs);
  for (int t = 0; t < TENSORS; t++)
    for (uint64_t i = 0; i < TENSOR_BYTES; i++) mem[t * TENSOR_BYTES + i] = kv_byte(t, i);
  llmdd_cache_desc_t d = kv_desc();
  llmdd_cache_key_t key = llmdd_blocks_cache_key(PROMPT_ID, 0);
  llmdd_cache_t cache;
  DIE_IF(llmdd_register_blocks_cache(p, &d, addrs, TENSORS, &key, -1, &cache), "register_blocks_cache");
  char c = 'r';
  if (write(ready_fd, &c, 1) != 1) return 1;
  struct pollfd pf = {done_fd, POLLIN, 0};
  poll(&pf, 1, 120000);
  llmdd_finalize(p);
  llmdd_destroy(p);
  free(mem);
  return 0;
}

static int run_decoder(uint16_t port, int tcp_only, int rounds, const char *label) {
  llmdd_instance_t *d = NULL;
  DIE_IF(llmdd_create(LLMDD_ROLE_DECODER, DECODER_ID, &d), "llmdd_create");
  init(d, NULL, tcp_only);
  uint64_t addrs[TENSORS];
  uint8_t *mem = alloc_cache(addrs);
  memset(mem, 0, TENSOR_BYTES * TENSORS);
  llmdd_cache_desc_t desc = kv_desc();
  llmdd_cache_t cache;
  DIE_IF(llmdd_register_blocks_cache(d, &desc, addrs, TENSORS, NULL, -1, &cache), "register_blocks_cache");

  llmdd_ip_info_t ip = llmdd_ip_info("127.0.0.1", port);
  llmdd_cluster_info_t cl;
  memset(&cl, 0, sizeof cl);
  cl.remote_cluster_id = PROMPT_ID;
  cl.remote_ip_infos = &ip;
  cl.num_remote_ip_infos = 1;
  uint32_t ret = 0;
  double t0 = now_s();
  DIE_IF(llmdd_link_clusters(d, &cl, 1, 3000, &ret), "link_clusters");
  double link_ms = (now_s() - t0) * 1e3;

  /* The request's blocks on the prompt (scattered, as a paged allocator
   * leaves them) and where the decoder's allocator put them. */
  uint64_t src[REQ_BLOCKS], dst[REQ_BLOCKS];
  for (int j = 0; j < REQ_BLOCKS; j++) {
    src[j] = (uint64_t)((j * 37 + 5) % BLOCKS);
    dst[j] = (uint64_t)(j < 24 ? 10 + j : 70 + j);
  }
  llmdd_cache_key_t key = llmdd_blocks_cache_key(PROMPT_ID, 0);
  const uint64_t bytes_per_round = (uint64_t)REQ_BLOCKS * BLOCK_BYTES * TENSORS;
  double best = 1e9, total = 0;
  for (int r = 0; r < rounds; r++) {
    double s = now_s();
    for (int l = 0; l < LAYERS; l += LAYERS_PER_STEP) {
      llmdd_layer_range_t range = llmdd_layer_range(l, l + LAYERS_PER_STEP, l, l + LAYERS_PER_STEP, 2);
      DIE_IF(llmdd_pull_blocks(d, &key, cache.cache_id, src, REQ_BLOCKS, dst, REQ_BLOCKS, &range),
             "pull_blocks");
    }
    double e = now_s() - s;
    total += e;
    if (e < best) best = e;
  }
  /* Verify every pulled byte, and that nothing else was touched. */
  uint64_t bad = 0;
  for (int t = 0; t < TENSORS; t++) {
    uint8_t *base = mem + t * TENSOR_BYTES;
    for (int j = 0; j < REQ_BLOCKS; j++)
      for (uint64_t i = 0; i < BLOCK_BYTES; i++)
        bad += base[dst[j] * BLOCK_BYTES + i] != kv_byte(t, src[j] * BLOCK_BYTES + i);
    for (uint64_t b = 0; b < BLOCKS; b++) {
      int target = 0;
      for (int j = 0; j < REQ_BLOCKS; j++) target |= dst[j] == b;
      if (!target)
        for (uint64_t i = 0; i < BLOCK_BYTES; i++) bad += base[b * BLOCK_BYTES + i] != 0;
    }
  }
  DIE_IF(llmdd_unlink_clusters(d, &cl, 1, 3000, false, &ret), "unlink_clusters");
  printf("[%s] linked in %.2f ms; pulled %d blocks x %d tensors (%d layers x K/V, %d layers per call) = %.1f MiB per request\n",
         label, link_ms, REQ_BLOCKS, TENSORS, LAYERS, LAYERS_PER_STEP, bytes_per_round / 1048576.0);
  printf("[%s] %d rounds: best %.2f ms (%.2f GB/s), mean %.2f ms (%.2f GB/s); verification: %s\n", label,
         rounds, best * 1e3, bytes_per_round / best / 1e9, total / rounds * 1e3,
         bytes_per_round / (total / rounds) / 1e9, bad == 0 ? "all bytes correct" : "MISMATCH");
  llmdd_finalize(d);
  llmdd_destroy(d);
  free(mem);
  return bad == 0 ? 0 : 1;
}

static int run_pair(int tcp_only, int rounds, const char *label) {
  int ready[2], done[2];
  if (pipe(ready) || pipe(done)) return 1;
  /* Ask the kernel for a free port, then hand it to the prompt. */
  uint16_t port = ex_free_port();
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) _exit(run_prompt(listen, tcp_only, ready[1], done[0]));
  char c;
  struct pollfd pf = {ready[0], POLLIN, 0};
  if (poll(&pf, 1, 60000) != 1 || read(ready[0], &c, 1) != 1) {
    fprintf(stderr, "prompt process did not start\n");
    return 1;
  }
  int rc = run_decoder(port, tcp_only, rounds, label);
  if (write(done[1], "d", 1) != 1) rc = 1;
  int st = 0;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) rc = 1;
  return rc;
}

int main(int argc, char **argv) {
  const char *transport = "both";
  int rounds = 5;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (!strcmp(argv[i], "--transport")) transport = argv[i + 1];
    else if (!strcmp(argv[i], "--rounds")) rounds = atoi(argv[i + 1]);
  }
  if (rounds < 1) rounds = 1;
  printf("%s: prompt -> decoder KV-cache transfer on 127.0.0.1\n", llmdd_version());
  printf("cache: %d layers x K/V = %d tensors, %d blocks x %llu KiB (16 tok x 8 heads x 128 dims fp16), %.0f MiB per process\n",
         LAYERS, TENSORS, BLOCKS, (unsigned long long)(BLOCK_BYTES / 1024),
         (double)TENSOR_BYTES * TENSORS / 1048576.0);
  int rc = 0;
  if (strcmp(transport, "tcp") != 0) rc |= run_pair(0, rounds, "same-host");
  if (strcmp(transport, "same-host") != 0) rc |= run_pair(1, rounds, "tcp");
  printf(rc == 0 ? "OK\n" : "FAILED\n");
  return rc;
}
