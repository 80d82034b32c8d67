/* Layer-wise async push (LLM-DataDist transfer_cache_async): a prompt
 * (prefill) process ships each layer's KV cache to the decoder as soon as that
 * layer is computed, so the transfer hides behind the prefill of the next
 * layers. Two processes on 127.0.0.1, first over the same-host path, then TCP.
 *
 * Model: 32 layers x {K, V} = 64 tensors, each a paged cache of 64 blocks x
 * 16 KiB; one request owns 48 blocks. The decoder listens; the prompt links to
 * it (both remote-cache-accessible) and starts the task; its layer
 * synchronizer "computes" layer L (writes its K/V blocks) and returns true.
 * The decoder then checks every byte. Exits 0 only if all bytes are right.
 *
 * Build: cmake -S . -B build && cmake --build build && ./build/examples/async_layered */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "example_common.h"
#include "llmdd.h"

enum { LAYERS = 32, TENSORS = 2 * LAYERS, BLOCKS = 64, REQ = 48 };
#define BLOCK_BYTES (16u * 1024)
#define TENSOR_BYTES ((uint64_t)BLOCKS * BLOCK_BYTES)
static const uint64_t PROMPT = 1, DECODER = 2;
static uint64_t src_blocks[REQ], dst_blocks[REQ];

#define DIE_IF(cond, what)                                                     \
  do {                                                                         \
    if (cond) {                                                                \
      fprintf(stderr, "%s failed: %s\n", what, llmdd_last_error_message());    \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

static uint8_t kv_byte(uint32_t t, uint64_t off) { return (uint8_t)((off * 2654435761u) >> 13 ^ t * 37); }

static void init(llmdd_instance_t *inst, const char *listen, int tcp) {
  llmdd_option_t o[5] = {{"llm.DeviceId", "0"}, {"llm.EnableCacheManager", "1"},
                         {"llm.EnableRemoteCacheAccessible", "1"}};
  size_t n = 3;
  if (listen) o[n++] = (llmdd_option_t){"llm.ListenIpInfo", listen};
  if (tcp) o[n++] = (llmdd_option_t){"llmdd.SameHost", "off"};
  DIE_IF(llmdd_init(inst, o, n), "llmdd_init");
}

static uint8_t *register_cache(llmdd_instance_t *inst, const llmdd_cache_key_t *key, llmdd_cache_t *cache) {
  uint8_t *mem = calloc(TENSORS, TENSOR_BYTES);
  uint64_t addrs[TENSORS];
  for (int t = 0; t < TENSORS; t++) addrs[t] = (uint64_t)(uintptr_t)(mem + t * TENSOR_BYTES);
  llmdd_cache_desc_t d;
  memset(&d, 0, sizeof d);
  d.placement = LLMDD_PLACEMENT_DEVICE; /* host-addressable on the host backend */
  d.data_type = LLMDD_DT_UINT8;
  d.num_tensors = TENSORS;
  d.num_dims = 2;
  d.shape[0] = BLOCKS;
  d.shape[1] = BLOCK_BYTES;
  d.seq_len_dim_index = -1;
  DIE_IF(llmdd_register_blocks_cache(inst, &d, addrs, TENSORS, key, -1, cache), "register_blocks_cache");
  return mem;
}

/* Decoder: listen, receive, then verify every block of every tensor. */
static int decoder(const char *listen, int tcp, int ready_fd, int done_fd) {
  llmdd_instance_t *d = NULL;
  DIE_IF(llmdd_create(LLMDD_ROLE_DECODER, DECODER, &d), "llmdd_create");
  init(d, listen, tcp);
  llmdd_cache_key_t key = llmdd_blocks_cache_key(DECODER, 0);
  llmdd_cache_t cache;
  uint8_t *mem = register_cache(d, &key, &cache);
  char c = 'r';
  if (write(ready_fd, &c, 1) != 1 || read(done_fd, &c, 1) != 1) return 1;
  uint64_t bad = 0;
  for (int t = 0; t < TENSORS; t++)
    for (int b = 0; b < BLOCKS; b++) {
      int j = -1;
      for (int x = 0; x < REQ; x++) j = dst_blocks[x] == (uint64_t)b ? x : j;
      const uint8_t *p = mem + t * TENSOR_BYTES + (uint64_t)b * BLOCK_BYTES;
      for (uint64_t i = 0; i < BLOCK_BYTES; i++)
        bad += p[i] != (j < 0 ? 0 : kv_byte(t, src_blocks[j] * BLOCK_BYTES + i));
    }
  llmdd_finalize(d);
  llmdd_destroy(d);
  free(mem);
  return bad == 0 ? 0 : 1;
}

/* The layer synchronizer: "compute" layer L (write its K and V blocks). */
typedef struct {
  uint8_t *mem;
  double compute_ms;
} prefill;

static bool layer_ready(void *user, uint32_t layer, int64_t timeout_ms) {
  (void)timeout_ms; /* always -1 */
  prefill *pf = user;
  double t0 = ex_now_ms();
  for (uint32_t t = 2 * layer; t < 2 * layer + 2; t++)
    for (int j = 0; j < REQ; j++)
      for (uint64_t i = 0; i < BLOCK_BYTES; i++) {
        uint64_t off = src_blocks[j] * BLOCK_BYTES + i;
        pf->mem[t * TENSOR_BYTES + off] = kv_byte(t, off);
      }
  pf->compute_ms += ex_now_ms() - t0;
  return true;
}

static int run(int tcp) {
  const char *label = tcp ? "tcp" : "same-host";
  uint16_t port = ex_free_port(); /* for the decoder */
  char listen[32];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
  int ready[2], done[2];
  if (pipe(ready) || pipe(done)) return 1;
  fflush(stdout);
  pid_t pid = fork();
  if (pid == 0) {
    close(ready[0]);
    close(done[1]);
    _exit(decoder(listen, tcp, ready[1], done[0]));
  }
  close(ready[1]);
  close(done[0]);
  char c;
  if (read(ready[0], &c, 1) != 1) return 1;
  close(ready[0]);

  llmdd_instance_t *p = NULL;
  DIE_IF(llmdd_create(LLMDD_ROLE_PROMPT, PROMPT, &p), "llmdd_create");
  init(p, NULL, tcp);
  llmdd_cache_t cache;
  prefill pf = {register_cache(p, NULL, &cache), 0};
  llmdd_ip_info_t ip = llmdd_ip_info("127.0.0.1", port);
  llmdd_cluster_info_t cl = {.remote_cluster_id = DECODER, .remote_ip_infos = &ip, .num_remote_ip_infos = 1};
  uint32_t ret;
  DIE_IF(llmdd_link_clusters(p, &cl, 1, 3000, &ret), "link_clusters");

  /* Every layer of the request's blocks goes to the decoder's blocks cache. */
  llmdd_transfer_config_t cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.kind = LLMDD_TRANSFER_BY_CACHE_KEY;
  cfg.cache_key = llmdd_blocks_cache_key(DECODER, 0);
  cfg.layers = llmdd_layer_range_init();
  double t0 = ex_now_ms();
  llmdd_task_t *task = NULL;
  DIE_IF(llmdd_transfer_cache_async(p, cache.cache_id, layer_ready, &pf, &cfg, 1, src_blocks, REQ, dst_blocks, REQ,
                                    0, &task),
         "transfer_cache_async");
  uint32_t st = llmdd_task_synchronize(task, -1);
  double total = ex_now_ms() - t0;
  DIE_IF(st != LLMDD_SUCCESS, "task_synchronize");
  llmdd_task_free(task);
  DIE_IF(llmdd_unlink_clusters(p, &cl, 1, 3000, false, &ret), "unlink_clusters");
  llmdd_finalize(p);
  llmdd_destroy(p);
  free(pf.mem);

  if (write(done[1], "d", 1) != 1) return 1;
  close(done[1]);
  int ws = 0;
  waitpid(pid, &ws, 0);
  int ok = WIFEXITED(ws) && WEXITSTATUS(ws) == 0;
  double mib = (double)LAYERS * 2 * REQ * BLOCK_BYTES / 1048576.0;
  printf("[%s] pushed %d layers x K/V x %d blocks of %u KiB = %.0f MiB while computing them\n", label, LAYERS,
         REQ, BLOCK_BYTES / 1024, mib);
  printf("[%s] prefill compute %.1f ms, compute + push %.1f ms: only %.1f ms of the transfer was not hidden "
         "behind compute; decoder verification: %s\n",
         label, pf.compute_ms, total, total - pf.compute_ms, ok ? "all bytes correct" : "MISMATCH");
  return ok ? 0 : 1;
}

int main(void) {
  for (int j = 0; j < REQ; j++) {
    src_blocks[j] = (uint64_t)((j * 7 + 3) % BLOCKS); /* scattered, as a paged allocator leaves them */
    dst_blocks[j] = (uint64_t)(j < REQ / 2 ? j + 2 : BLOCKS - REQ + j);
  }
  int rc = run(0) | run(1);
  printf(rc == 0 ? "OK\n" : "FAILED\n");
  return rc;
}
