/* Rank-table linking (spec flow 4 style): three processes on 127.0.0.1 form
 * one comm domain with llmdd_link, wait for LLMDD_MEM_STATUS_OK, and then
 * each pulls blocks from the next one (1 <- 2 <- 3 <- 1), verifies every
 * byte, and unlinks.
 *
 * Each process owns a paged KV cache of 8 layers x {K, V} = 16 tensors,
 * 64 blocks x 16 KiB each (1 MiB per tensor), registered under
 * BlocksCacheKey(own cluster id), and pulls 16 blocks of every tensor
 * (4 MiB) from its neighbour into other block slots.
 *
 * The rank table (HCCL format) gives each member's control endpoint: the
 * server's host_ip and the device's host_port (docs/rank-table.md).
 *
 * Build: cmake -S . -B build && cmake --build build && ./build/examples/rank_table_link
 * Exits 0 only when every member linked and every pulled byte is right.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "example_common.h"
#include "llmdd.h"

enum { MEMBERS = 3, TENSORS = 16, BLOCKS = 64, PULL_BLOCKS = 16 };
#define BLOCK_BYTES ((uint64_t)16 * 1024)
#define TENSOR_BYTES (BLOCK_BYTES * BLOCKS)

#define DIE_IF(cond, what)                                                                     \
  do {                                                                                         \
    if (cond) {                                                                                \
      fprintf(stderr, "[cluster %llu] %s failed: %s\n", (unsigned long long)g_cluster, what,   \
              llmdd_last_error_message());                                                     \
      exit(1);                                                                                 \
    }                                                                                          \
  } while (0)

static uint64_t g_cluster;
static char g_table[2048];

/* The byte member `cluster` holds at offset `off` of tensor `t`. */
static uint8_t kv_byte(uint64_t cluster, uint32_t t, uint64_t off) {
  uint64_t x = off * 0x9E3779B97F4A7C15ull ^ ((uint64_t)t << 48) ^ (cluster << 56);
  return (uint8_t)((x ^ (x >> 31)) >> 24);
}

/* Blocks until one byte arrives on fd (at most 30 s). */
static int recv_byte(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  unsigned char b = 0;
  if (poll(&p, 1, 30000) != 1 || read(fd, &b, 1) != 1) return -1;
  return b;
}

static void send_byte(int fd, unsigned char b) {
  if (write(fd, &b, 1) != 1) exit(1);
}

static llmdd_cache_desc_t kv_desc(void) {
  llmdd_cache_desc_t d;
  memset(&d, 0, sizeof d);
  d.placement = LLMDD_PLACEMENT_DEVICE; /* host-addressable on the host backend */
  d.data_type = LLMDD_DT_FLOAT16;
  d.num_tensors = TENSORS;
  d.num_dims = 2;
  d.shape[0] = BLOCKS;
  d.shape[1] = (int64_t)BLOCK_BYTES / 2;
  d.seq_len_dim_index = -1;
  return d;
}

/* One member: rank `rank` of the comm, cluster id rank + 1. */
static int member(uint32_t rank, int from_parent, int to_parent) {
  g_cluster = rank + 1;
  const llmdd_cluster_rank_t ranks[MEMBERS] = {{1, 0}, {2, 1}, {3, 2}};
  llmdd_instance_t *inst = NULL;
  DIE_IF(llmdd_create(rank == 0 ? LLMDD_ROLE_PROMPT : LLMDD_ROLE_DECODER, g_cluster, &inst),
         "llmdd_create");
  /* Member 3 moves its bytes over TCP; the others use the same-host path. */
  llmdd_option_t opts[4] = {{"llm.DeviceId", "0"},
                            {"llm.EnableCacheManager", "1"},
                            {"llm.LinkTotalTime", "20"},
                            {"llmdd.SameHost", "off"}};
  DIE_IF(llmdd_init(inst, opts, rank == 2 ? 4 : 3), "llmdd_init");

  /* Source cache (what this member computed) and an empty destination. */
  uint8_t *src[TENSORS], *dst[TENSORS];
  uint64_t src_addrs[TENSORS], dst_addrs[TENSORS];
  for (uint32_t t = 0; t < TENSORS; t++) {
    src[t] = malloc(TENSOR_BYTES);
    dst[t] = calloc(1, TENSOR_BYTES);
    if (!src[t] || !dst[t]) return 1;
    for (uint64_t i = 0; i < TENSOR_BYTES; i++) src[t][i] = kv_byte(g_cluster, t, i);
    src_addrs[t] = (uint64_t)(uintptr_t)src[t];
    dst_addrs[t] = (uint64_t)(uintptr_t)dst[t];
  }
  llmdd_cache_desc_t d = kv_desc();
  llmdd_cache_key_t own = llmdd_blocks_cache_key(g_cluster, 0);
  llmdd_cache_t src_cache, dst_cache;
  DIE_IF(llmdd_register_blocks_cache(inst, &d, src_addrs, TENSORS, &own, -1, &src_cache),
         "register source");
  DIE_IF(llmdd_register_blocks_cache(inst, &d, dst_addrs, TENSORS, NULL, -1, &dst_cache),
         "register destination");
  send_byte(to_parent, 'r');
  if (recv_byte(from_parent) != 'g') return 1;

  /* Every member calls llmdd_link with the same members and table. */
  double t0 = (ex_now_ms() / 1e3);
  uint64_t comm = 0;
  DIE_IF(llmdd_link(inst, "kv-domain", ranks, MEMBERS, g_table, &comm), "llmdd_link");
  uint32_t st = LLMDD_MEM_STATUS_PREPARING;
  while (st == LLMDD_MEM_STATUS_PREPARING && (ex_now_ms() / 1e3) - t0 < 25) {
    DIE_IF(llmdd_query_register_mem_status(inst, comm, &st), "query_register_mem_status");
    if (st == LLMDD_MEM_STATUS_PREPARING) usleep(1000);
  }
  if (st != LLMDD_MEM_STATUS_OK) {
    fprintf(stderr, "[cluster %llu] comm %llu did not become OK (status %u): %s\n",
            (unsigned long long)g_cluster, (unsigned long long)comm, st,
            llmdd_last_error_message());
    return 1;
  }
  double linked_ms = ((ex_now_ms() / 1e3) - t0) * 1e3;
  send_byte(to_parent, 'l');
  if (recv_byte(from_parent) != 'p') return 1; /* everyone is OK */

  /* Pull 16 blocks of every tensor from the next member. */
  uint64_t from = (uint64_t)((rank + 1) % MEMBERS) + 1;
  uint64_t src_blocks[PULL_BLOCKS], dst_blocks[PULL_BLOCKS];
  for (uint32_t j = 0; j < PULL_BLOCKS; j++) {
    src_blocks[j] = 3 * j + 1;           /* scattered in the source */
    dst_blocks[j] = BLOCKS - 1 - 2 * j;  /* elsewhere in the destination */
  }
  llmdd_cache_key_t key = llmdd_blocks_cache_key(from, 0);
  double p0 = (ex_now_ms() / 1e3);
  DIE_IF(llmdd_pull_blocks(inst, &key, dst_cache.cache_id, src_blocks, PULL_BLOCKS, dst_blocks,
                           PULL_BLOCKS, NULL),
         "llmdd_pull_blocks");
  double pull_s = (ex_now_ms() / 1e3) - p0;
  int ok = 1;
  for (uint32_t t = 0; t < TENSORS && ok; t++) {
    /* Every destination block: the pulled bytes, or still zero. */
    for (uint64_t b = 0; b < BLOCKS && ok; b++) {
      int pulled = -1;
      for (uint32_t j = 0; j < PULL_BLOCKS; j++)
        if (dst_blocks[j] == b) pulled = (int)j;
      for (uint64_t i = 0; i < BLOCK_BYTES; i++) {
        uint8_t want =
            pulled < 0 ? 0 : kv_byte(from, t, src_blocks[pulled] * BLOCK_BYTES + i);
        if (dst[t][b * BLOCK_BYTES + i] != want) {
          fprintf(stderr, "[cluster %llu] tensor %u block %llu byte %llu is wrong\n",
                  (unsigned long long)g_cluster, t, (unsigned long long)b,
                  (unsigned long long)i);
          ok = 0;
          break;
        }
      }
    }
  }
  uint64_t bytes = (uint64_t)TENSORS * PULL_BLOCKS * BLOCK_BYTES;
  printf("cluster %llu (rank %u): comm %llu OK after %.1f ms; pulled %llu KiB from cluster %llu "
         "(%s) in %.2f ms = %.2f GB/s, %s\n",
         (unsigned long long)g_cluster, rank, (unsigned long long)comm, linked_ms,
         (unsigned long long)(bytes >> 10), (unsigned long long)from,
         rank == 2 ? "tcp" : "same-host", pull_s * 1e3, bytes / pull_s / 1e9,
         ok ? "verified" : "MISMATCH");
  fflush(stdout);
  send_byte(to_parent, ok ? 'v' : 'x');
  if (recv_byte(from_parent) != 'u') return 1; /* everyone has pulled */

  DIE_IF(llmdd_unlink(inst, comm), "llmdd_unlink");
  DIE_IF(llmdd_finalize(inst), "llmdd_finalize");
  llmdd_destroy(inst);
  for (uint32_t t = 0; t < TENSORS; t++) {
    free(src[t]);
    free(dst[t]);
  }
  return ok ? 0 : 1;
}

/* Sends `b` to every member, then waits for each to answer `want`. */
static int step(int to[], int from[], unsigned char b, unsigned char want) {
  int ok = 1;
  if (b)
    for (int i = 0; i < MEMBERS; i++) send_byte(to[i], b);
  for (int i = 0; i < MEMBERS; i++) ok &= recv_byte(from[i]) == want;
  return ok;
}

int main(void) {
  uint16_t ports[MEMBERS], dports[MEMBERS];
  for (int i = 0; i < MEMBERS; i++) {
    ports[i] = ex_free_port();
    dports[i] = ex_free_port();
  }
  /* One server (host_ip), three devices; host_port is each member's TCP
   * endpoint, device_ip/device_port its HCCL endpoint (used on the acl backend,
   * which requires host_port). */
  snprintf(g_table, sizeof g_table,
           "{\"version\": \"1.0\", \"server_count\": \"1\", \"status\": \"completed\","
           " \"server_list\": [{\"server_id\": \"node0\", \"host_ip\": \"127.0.0.1\", \"device\": ["
           "{\"device_id\": \"0\", \"device_ip\": \"127.0.0.1\", \"rank_id\": \"0\", \"host_port\": \"%u\", \"device_port\": \"%u\"},"
           "{\"device_id\": \"1\", \"device_ip\": \"127.0.0.1\", \"rank_id\": \"1\", \"host_port\": \"%u\", \"device_port\": \"%u\"},"
           "{\"device_id\": \"2\", \"device_ip\": \"127.0.0.1\", \"rank_id\": \"2\", \"host_port\": \"%u\", \"device_port\": \"%u\"}"
           "]}]}",
           ports[0], dports[0], ports[1], dports[1], ports[2], dports[2]);
  int to[MEMBERS], from[MEMBERS];
  pid_t pids[MEMBERS];
  for (int i = 0; i < MEMBERS; i++) {
    int down[2], up[2];
    if (pipe(down) != 0 || pipe(up) != 0) return 1;
    fflush(stdout);
    pids[i] = fork();
    if (pids[i] < 0) return 1;
    if (pids[i] == 0) {
      close(down[1]);
      close(up[0]);
      int rc = member((uint32_t)i, down[0], up[1]);
      fflush(stdout);
      _exit(rc);
    }
    close(down[0]);
    close(up[1]);
    to[i] = down[1];
    from[i] = up[0];
  }
  int ok = step(to, from, 0, 'r');              /* all registered */
  double t0 = (ex_now_ms() / 1e3);
  ok = ok && step(to, from, 'g', 'l');          /* all linked (OK) */
  printf("comm of %d members linked in %.1f ms\n", MEMBERS, ((ex_now_ms() / 1e3) - t0) * 1e3);
  ok = ok && step(to, from, 'p', 'v');          /* all pulled and verified */
  if (ok)
    for (int i = 0; i < MEMBERS; i++) send_byte(to[i], 'u');
  int rc_all = 0;
  for (int i = 0; i < MEMBERS; i++) {
    int st = 0;
    if (!ok) kill(pids[i], SIGKILL);
    waitpid(pids[i], &st, 0);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) rc_all = 1;
  }
  if (!ok) rc_all = 1;
  printf("%s (%.2f s)\n", rc_all == 0 ? "rank-table link example: OK" : "rank-table link example: FAILED",
         (ex_now_ms() / 1e3) - t0);
  return rc_all;
}
