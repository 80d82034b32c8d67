/* Push flow (spec flow 2): both instances run in remote-cache-accessible mode
 * (llm.LocalCommRes = "" turns it on). The prompt registers its caches and
 * listens; the decoder links and pushes
 *   - blocks {0,1,2} of its paged cache into prompt blocks {4,9,10} by
 *     BlocksCacheKey, all layers, and
 *   - batch slot 0 of its contiguous cache, layers [1,4), into prompt slot 2,
 *     layers [0,3), by CacheKeyByIdAndIndex,
 * then both sides force-unlink. The prompt checks every byte it received and
 * that nothing else changed. Runs on 127.0.0.1; exits 0 on success. */
#include "example_common.h"

enum { LAYERS = 4, TENSORS = 2 * LAYERS, BLOCKS = 16, BATCH = 4 };
#define BLOCK_BYTES 4096u
#define SLOT_BYTES 8192u
static const uint64_t PROMPT = 1, DECODER = 2;
static const uint64_t SRC_BLOCKS[3] = {0, 1, 2}, DST_BLOCKS[3] = {4, 9, 10};
static const llmdd_option_t BASE[] = {{"llm.DeviceId", "0"}, {"llm.LocalCommRes", ""}};

/* Checks what the decoder pushed into the prompt's caches. */
static uint64_t check_prompt(const ex_kv *kv) {
  uint64_t bad = 0;
  for (int t = 0; t < TENSORS; t++) {
    for (uint64_t b = 0; b < BLOCKS; b++) {
      uint64_t seed = 0, src = 0;
      for (int j = 0; j < 3; j++)
        if (DST_BLOCKS[j] == b) seed = DECODER, src = SRC_BLOCKS[j] * BLOCK_BYTES;
      bad += ex_mismatch(kv->blocks[t], t, b * BLOCK_BYTES, BLOCK_BYTES, (uint32_t)seed, src);
    }
    /* Slot 2 of tensor t = decoder tensor t + 2 (one layer later), slot 0. */
    int src_t = t + 2;
    if (src_t < TENSORS) {
      const uint8_t *p = (const uint8_t *)(uintptr_t)kv->batch[t] + 2 * SLOT_BYTES;
      for (uint64_t i = 0; i < SLOT_BYTES; i++) bad += p[i] != ex_byte(DECODER, src_t, i);
    } else {
      bad += ex_mismatch(kv->batch[t], t, 2 * SLOT_BYTES, SLOT_BYTES, 0, 0); /* last layer */
    }
    bad += ex_mismatch(kv->batch[t], t, 0, 2 * SLOT_BYTES, 0, 0);
    bad += ex_mismatch(kv->batch[t], t, 3 * SLOT_BYTES, SLOT_BYTES, 0, 0);
  }
  return bad;
}

static int prompt(ex_chan *ch, void *listen) {
  llmdd_instance_t *p;
  OK(llmdd_create(LLMDD_ROLE_PROMPT, PROMPT, &p));
  llmdd_option_t opts[] = {BASE[0], BASE[1], {"llm.ListenIpInfo", (const char *)listen}};
  OK(llmdd_init(p, opts, 3));
  llmdd_cache_key_t key = llmdd_blocks_cache_key(PROMPT, 0);
  ex_kv kv;
  ex_kv_register(p, &kv, TENSORS, BLOCKS, BLOCK_BYTES, BATCH, SLOT_BYTES, 0, &key);
  ex_send(ch, (uint64_t)kv.batch_cache.cache_id);
  ex_recv(ch); /* pushes done */
  uint64_t bad = check_prompt(&kv);
  printf("prompt received the pushed blocks and layers: %s\n",
         bad ? "MISMATCH" : "all bytes correct");
  /* Force unlink drops our side only; the decoder does the same on its side. */
  llmdd_cluster_info_t cl = {0};
  cl.remote_cluster_id = DECODER;
  uint32_t ret;
  OK(llmdd_unlink_clusters(p, &cl, 1, 3000, true, &ret));
  OK(llmdd_finalize(p));
  llmdd_destroy(p);
  ex_kv_free(&kv);
  return bad ? 1 : 0;
}

int main(void) {
  uint16_t port = ex_free_port();
  char listen[32];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
  ex_chan ch;
  pid_t pid = ex_fork(&ch, prompt, listen);
  int64_t p_batch = (int64_t)ex_recv(&ch);

  llmdd_instance_t *d;
  OK(llmdd_create(LLMDD_ROLE_DECODER, DECODER, &d));
  OK(llmdd_init(d, BASE, 2));
  ex_kv kv;
  ex_kv_register(d, &kv, TENSORS, BLOCKS, BLOCK_BYTES, BATCH, SLOT_BYTES, DECODER, NULL);

  llmdd_ip_info_t ip;
  llmdd_cluster_info_t cl = ex_cluster(PROMPT, &ip, port);
  uint32_t ret;
  OK(llmdd_link_clusters(d, &cl, 1, 3000, &ret));

  double t0 = ex_now_ms();
  llmdd_cache_key_t bkey = llmdd_blocks_cache_key(PROMPT, 0);
  OK(llmdd_push_blocks(d, &bkey, kv.blocks_cache.cache_id, SRC_BLOCKS, 3, DST_BLOCKS, 3, NULL));
  /* Layers [1,4) of our slot 0 -> layers [0,3) of the prompt's slot 2. */
  llmdd_cache_key_t ckey = llmdd_cache_key_by_id(PROMPT, p_batch, 2);
  llmdd_layer_range_t layers = llmdd_layer_range(1, 4, 0, 3, 2);
  OK(llmdd_push_cache(d, &ckey, kv.batch_cache.cache_id, 0, -1, &layers));
  double ms = ex_now_ms() - t0;
  uint64_t moved = (uint64_t)TENSORS * 3 * BLOCK_BYTES + 6ull * SLOT_BYTES;
  printf("decoder pushed %llu bytes in %.3f ms\n", (unsigned long long)moved, ms);
  ex_send(&ch, 1);

  cl.remote_ip_infos = NULL; /* a forced unlink needs only the cluster id */
  cl.num_remote_ip_infos = 0;
  OK(llmdd_unlink_clusters(d, &cl, 1, 3000, true, &ret));
  OK(llmdd_finalize(d));
  llmdd_destroy(d);
  ex_kv_free(&kv);
  return ex_join(pid) ? 0 : 1;
}
