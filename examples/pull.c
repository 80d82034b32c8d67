/* Pull flows (spec flows 1 and 3): a prompt process registers its KV cache
 * and listens; a decoder process links to it and pulls
 *   - blocks by BlocksCacheKey (paged cache: prompt blocks {1,2,7} -> decoder
 *     blocks {0,5,6}, all layers), and
 *   - one batch slot of a contiguous cache by CacheKeyByIdAndIndex,
 * then checks every byte and unlinks. Runs on 127.0.0.1; exits 0 on success.
 * Build: cmake -S . -B build && cmake --build build && ./build/examples/pull */
#include "example_common.h"

enum { LAYERS = 4, TENSORS = 2 * LAYERS, BLOCKS = 16, BATCH = 4 };
#define BLOCK_BYTES 4096u
#define SLOT_BYTES 8192u
static const uint64_t PROMPT = 1, DECODER = 2;
static const uint64_t SRC_BLOCKS[3] = {1, 2, 7}, DST_BLOCKS[3] = {0, 5, 6};

/* The prompt: register a blocks cache (keyed) and a batch cache, listen,
 * report the batch cache id, wait until the decoder is done. */
static int prompt(ex_chan *ch, void *listen) {
  llmdd_instance_t *p;
  OK(llmdd_create(LLMDD_ROLE_PROMPT, PROMPT, &p));
  llmdd_option_t opts[] = {{"llm.DeviceId", "0"},
                           {"llm.EnableCacheManager", "1"},
                           {"llm.ListenIpInfo", (const char *)listen}};
  OK(llmdd_init(p, opts, 3));
  llmdd_cache_key_t key = llmdd_blocks_cache_key(PROMPT, 0);
  ex_kv kv;
  ex_kv_register(p, &kv, TENSORS, BLOCKS, BLOCK_BYTES, BATCH, SLOT_BYTES, PROMPT, &key);
  ex_send(ch, (uint64_t)kv.batch_cache.cache_id);
  ex_recv(ch); /* the decoder is done */
  OK(llmdd_finalize(p)); /* unregisters everything */
  llmdd_destroy(p);
  ex_kv_free(&kv);
  return 0;
}

int main(void) {
  uint16_t port = ex_free_port();
  char listen[32];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
  ex_chan ch;
  pid_t pid = ex_fork(&ch, prompt, listen);
  int64_t batch_id = (int64_t)ex_recv(&ch);

  llmdd_instance_t *d;
  OK(llmdd_create(LLMDD_ROLE_DECODER, DECODER, &d));
  llmdd_option_t opts[] = {{"llm.DeviceId", "0"}, {"llm.EnableCacheManager", "1"}};
  OK(llmdd_init(d, opts, 2));
  ex_kv kv;
  ex_kv_register(d, &kv, TENSORS, BLOCKS, BLOCK_BYTES, BATCH, SLOT_BYTES, 0, NULL);

  /* The decoder (client) dials the prompt's listen endpoint. */
  llmdd_ip_info_t ip;
  llmdd_cluster_info_t cl = ex_cluster(PROMPT, &ip, port);
  uint32_t ret;
  OK(llmdd_link_clusters(d, &cl, 1, 3000, &ret));

  double t0 = ex_now_ms();
  /* Flow 1: blocks by BlocksCacheKey, all layers (layers = NULL). */
  llmdd_cache_key_t bkey = llmdd_blocks_cache_key(PROMPT, 0);
  OK(llmdd_pull_blocks(d, &bkey, kv.blocks_cache.cache_id, SRC_BLOCKS, 3, DST_BLOCKS, 3, NULL));
  /* Flow 3: prompt slot 1 of the contiguous cache into our slot 3. */
  llmdd_cache_key_t ckey = llmdd_cache_key_by_id(PROMPT, batch_id, 1);
  OK(llmdd_pull_cache(d, &ckey, kv.batch_cache.cache_id, 3, -1, NULL));
  double ms = ex_now_ms() - t0;

  uint64_t bad = 0;
  for (int t = 0; t < TENSORS; t++) {
    for (int j = 0; j < 3; j++)
      bad += ex_mismatch(kv.blocks[t], t, DST_BLOCKS[j] * BLOCK_BYTES, BLOCK_BYTES, PROMPT,
                         SRC_BLOCKS[j] * BLOCK_BYTES);
    bad += ex_mismatch(kv.batch[t], t, 3 * SLOT_BYTES, SLOT_BYTES, PROMPT, 1 * SLOT_BYTES);
    bad += ex_mismatch(kv.batch[t], t, 0, 3 * SLOT_BYTES, 0, 0); /* slots 0..2 untouched */
  }
  uint64_t moved = (uint64_t)TENSORS * (3 * BLOCK_BYTES + SLOT_BYTES);
  printf("pulled %llu bytes (3 blocks + 1 slot x %d tensors) in %.3f ms: %s\n",
         (unsigned long long)moved, TENSORS, ms, bad ? "MISMATCH" : "all bytes correct");

  OK(llmdd_unlink_clusters(d, &cl, 1, 3000, false, &ret));
  OK(llmdd_finalize(d));
  llmdd_destroy(d);
  ex_kv_free(&kv);
  ex_send(&ch, 0);
  return ex_join(pid) && !bad ? 0 : 1;
}
