/* Switch role (spec flow 6): the same two processes first run
 * prompt(server) -> decoder(client) and then swap, so the data flows the
 * other way without restarting either process.
 *   1. A (PROMPT, listening) serves; B (DECODER) links, pulls blocks, unlinks.
 *   2. A switch_role(DECODER) with no options: stops listening (client).
 *      B switch_role(PROMPT, {llm.ListenIpInfo}): starts listening (server).
 *   3. A links to B; B pushes its blocks into A's cache over that link.
 * Both run in remote-cache-accessible mode (push needs it). Runs on
 * 127.0.0.1; exits 0 when every byte arrived. */
#include "example_common.h"

enum { TENSORS = 8, BLOCKS = 16 };
#define BLOCK_BYTES 4096u
static const uint64_t A_ID = 1, B_ID = 2;
static const uint64_t SRC_BLOCKS[2] = {3, 4}, DST_BLOCKS[2] = {8, 9};
static const llmdd_option_t BASE[] = {{"llm.DeviceId", "0"},
                                      {"llm.EnableCacheManager", "1"},
                                      {"llm.EnableRemoteCacheAccessible", "1"}};

typedef struct {
  uint16_t port_a, port_b;
} ports;

/* Registers a keyed blocks cache patterned with `seed` (0 = zeros). */
static llmdd_cache_t blocks_cache(llmdd_instance_t *inst, uint64_t own, uint64_t *addrs,
                                  uint32_t seed) {
  ex_tensors(addrs, TENSORS, (uint64_t)BLOCKS * BLOCK_BYTES, seed);
  llmdd_cache_desc_t d = ex_desc(TENSORS, BLOCKS, BLOCK_BYTES);
  llmdd_cache_key_t key = llmdd_blocks_cache_key(own, 0);
  llmdd_cache_t c;
  OK(llmdd_register_blocks_cache(inst, &d, addrs, TENSORS, &key, -1, &c));
  return c;
}

static uint64_t check(const uint64_t *addrs, uint32_t seed) {
  uint64_t bad = 0;
  for (int t = 0; t < TENSORS; t++)
    for (int j = 0; j < 2; j++)
      bad += ex_mismatch(addrs[t], t, DST_BLOCKS[j] * BLOCK_BYTES, BLOCK_BYTES, seed,
                         SRC_BLOCKS[j] * BLOCK_BYTES);
  return bad;
}

/* Process B: first the decoder (client), then the prompt (server). */
static int process_b(ex_chan *ch, void *arg) {
  ports *pt = (ports *)arg;
  llmdd_instance_t *b;
  OK(llmdd_create(LLMDD_ROLE_DECODER, B_ID, &b));
  OK(llmdd_init(b, BASE, 3));
  uint64_t addrs[TENSORS];
  llmdd_cache_t cache = blocks_cache(b, B_ID, addrs, 0);
  ex_recv(ch); /* A is up */

  /* 1. B pulls from A. */
  llmdd_ip_info_t ip;
  llmdd_cluster_info_t cl = ex_cluster(A_ID, &ip, pt->port_a);
  uint32_t ret;
  OK(llmdd_link_clusters(b, &cl, 1, 3000, &ret));
  llmdd_cache_key_t akey = llmdd_blocks_cache_key(A_ID, 0);
  OK(llmdd_pull_blocks(b, &akey, cache.cache_id, SRC_BLOCKS, 2, DST_BLOCKS, 2, NULL));
  uint64_t bad = check(addrs, A_ID);
  printf("1. B (decoder) pulled 2 blocks x %d tensors from A: %s\n", TENSORS,
         bad ? "MISMATCH" : "all bytes correct");
  OK(llmdd_unlink_clusters(b, &cl, 1, 3000, false, &ret));
  ex_send(ch, 1);

  /* 2. B becomes the prompt and listens. */
  ex_recv(ch); /* A switched */
  char listen[32];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", pt->port_b);
  llmdd_option_t lo = {"llm.ListenIpInfo", listen};
  OK(llmdd_switch_role(b, LLMDD_ROLE_PROMPT, &lo, 1));
  /* New prompt content: overwrite our cache with pattern B. */
  for (int t = 0; t < TENSORS; t++)
    for (uint64_t i = 0; i < (uint64_t)BLOCKS * BLOCK_BYTES; i++)
      ((uint8_t *)(uintptr_t)addrs[t])[i] = ex_byte(B_ID, t, i);
  ex_send(ch, 2);

  /* 3. A linked to us; push into A's cache (its BlocksCacheKey). */
  ex_recv(ch);
  OK(llmdd_push_blocks(b, &akey, cache.cache_id, SRC_BLOCKS, 2, DST_BLOCKS, 2, NULL));
  printf("3. B (now prompt, server) pushed 2 blocks x %d tensors to A\n", TENSORS);
  ex_send(ch, 3);
  ex_recv(ch); /* A unlinked */
  OK(llmdd_finalize(b));
  llmdd_destroy(b);
  ex_free(addrs, TENSORS);
  return bad ? 1 : 0;
}

int main(void) {
  ports pt = {ex_free_port(), ex_free_port()};
  ex_chan ch;
  pid_t pid = ex_fork(&ch, process_b, &pt);

  llmdd_instance_t *a;
  OK(llmdd_create(LLMDD_ROLE_PROMPT, A_ID, &a));
  char listen[32];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", pt.port_a);
  llmdd_option_t opts[] = {BASE[0], BASE[1], BASE[2], {"llm.ListenIpInfo", listen}};
  OK(llmdd_init(a, opts, 4));
  uint64_t addrs[TENSORS];
  llmdd_cache_t cache = blocks_cache(a, A_ID, addrs, A_ID);
  (void)cache;
  ex_send(&ch, 0);
  ex_recv(&ch); /* 1. B pulled and unlinked */

  /* 2. A becomes the decoder: no listen option -> stops listening. */
  OK(llmdd_switch_role(a, LLMDD_ROLE_DECODER, NULL, 0));
  uint32_t role;
  OK(llmdd_get_role(a, &role));
  printf("2. A is now %s, B is now the listening prompt\n",
         role == LLMDD_ROLE_DECODER ? "DECODER (client)" : "?");
  ex_send(&ch, 0);
  ex_recv(&ch); /* B listens */

  /* 3. A dials B; B pushes. */
  llmdd_ip_info_t ip;
  llmdd_cluster_info_t cl = ex_cluster(B_ID, &ip, pt.port_b);
  uint32_t ret;
  OK(llmdd_link_clusters(a, &cl, 1, 3000, &ret));
  ex_send(&ch, 0);
  ex_recv(&ch); /* pushed */
  uint64_t bad = check(addrs, B_ID);
  printf("3. A received B's blocks: %s\n", bad ? "MISMATCH" : "all bytes correct");
  OK(llmdd_unlink_clusters(a, &cl, 1, 3000, false, &ret));
  ex_send(&ch, 0);
  OK(llmdd_finalize(a));
  llmdd_destroy(a);
  ex_free(addrs, TENSORS);
  return ex_join(pid) && !bad ? 0 : 1;
}
