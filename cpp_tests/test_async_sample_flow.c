/* The flow of CANN's examples/python/llm_datadist/transfer_cache_async_sample.py
 * through the C ABI, two processes on 127.0.0.1:
 *   both: init with listen_ip_info, cache manager and remote-cache-accessible
 *         mode; register_blocks_cache(2 tensors [3, 10] DT_FLOAT, own
 *         BlocksCacheKey(cluster, 0)); barrier;
 *   prompt (cluster 0, listening too) link_clusters to the decoder;
 *         transfer_cache_async(cache, synchronizer -> True,
 *         [TransferWithCacheKeyConfig(BlocksCacheKey(1, 0), range(0, 1), range(0, 1))])
 *         with no block indices; get_results(); barrier;
 *   both: unlink_clusters(force=True); unregister_cache; finalize.
 * The decoder checks that block 0 of both tensors holds the prompt's 1.0f
 * values (one stride of the blocks cache, as the reference moves it) and
 * blocks 1..2 are still 0.
 *
 * The sample's tensors are NPU memory (torch_npu). Here they are t_mem
 * tensors: 2 MB aligned host memory, which on the acl re-run stands for device
 * memory as HCCS accepts it (a device region not from aclrtMalloc must start
 * 2 MB aligned). Each process closes the pipe ends it does not use, so a side
 * that exits early ends the other's waits at once. */
#include "t_dataplane.h"

#define P_ID 0
#define D_ID 1
#define BLOCKS 3
#define KV 10
#define TENSOR_BYTES (BLOCKS * KV * sizeof(float))

static uint16_t g_port_p, g_port_d;

static bool sync_true(void *user, uint32_t layer, int64_t timeout_ms) {
  (void)user;
  (void)layer;
  (void)timeout_ms;
  return true;
}

static void init(llmdd_instance_t *inst, uint16_t port) {
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
  /* t_init adds llm.DeviceId and llm.EnableCacheManager (and the backend). */
  llmdd_option_t o[] = {{LLMDD_OPTION_LISTEN_IP_INFO, listen}, {LLMDD_OPTION_ENABLE_REMOTE_CACHE_ACCESSIBLE, "1"}};
  REQUIRE_OK(t_init(inst, NULL, o, sizeof o / sizeof o[0]));
}

/* Element i of tensor t of `m`. */
static float *elem(t_mem *m, uint32_t t) { return (float *)(void *)m->p[t]; }

/* register_blocks_cache of two [3, 10] float tensors (`m`, allocated here)
 * filled with `value`. */
static llmdd_cache_t register_blocks(llmdd_instance_t *inst, uint64_t cluster, float value, t_mem *m) {
  *m = t_mem_new(2, TENSOR_BYTES);
  for (uint32_t t = 0; t < 2; t++)
    for (int i = 0; i < BLOCKS * KV; i++) elem(m, t)[i] = value;
  llmdd_cache_desc_t d = llmdd_cache_desc_init();
  d.num_tensors = 2;
  d.data_type = LLMDD_DT_FLOAT;
  d.num_dims = 2;
  d.shape[0] = BLOCKS;
  d.shape[1] = KV;
  llmdd_cache_key_t key = llmdd_blocks_cache_key(cluster, 0);
  llmdd_cache_t c = llmdd_cache_init();
  REQUIRE_OK(llmdd_register_blocks_cache(inst, &d, m->addrs, 2, &key, -1, &c));
  return c;
}

static uint32_t force_unlink(llmdd_instance_t *inst, uint64_t remote) {
  llmdd_cluster_info_t c;
  memset(&c, 0, sizeof c);
  c.remote_cluster_id = remote;
  uint32_t ret = 0;
  return llmdd_unlink_clusters(inst, &c, 1, 5000, true, &ret);
}

static int prompt(void *arg) {
  t_chan_pair *pair = (t_chan_pair *)arg;
  t_chan ch = pair->child;
  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, P_ID, &p));
  init(p, g_port_p);
  t_mem m;
  llmdd_cache_t cache = register_blocks(p, P_ID, 1.0f, &m);
  t_send(ch, 1);
  CHECK(t_recv(ch, 30000) == 1); /* barrier: register end */

  llmdd_ip_info_t local = llmdd_ip_info("127.0.0.1", g_port_p);
  llmdd_ip_info_t remote = llmdd_ip_info("127.0.0.1", g_port_d);
  llmdd_cluster_info_t cl;
  memset(&cl, 0, sizeof cl);
  cl.remote_cluster_id = D_ID;
  cl.local_ip_infos = &local;
  cl.num_local_ip_infos = 1;
  cl.remote_ip_infos = &remote;
  cl.num_remote_ip_infos = 1;
  uint32_t ret = 0;
  CHECK_OK(llmdd_link_clusters(p, &cl, 1, 5000, &ret));

  llmdd_transfer_config_t cfg = llmdd_transfer_config_init();
  cfg.kind = LLMDD_TRANSFER_BY_CACHE_KEY;
  cfg.cache_key = llmdd_blocks_cache_key(D_ID, 0);
  cfg.layers = llmdd_layer_range(0, 1, 0, 1, 0);
  llmdd_task_t *task = NULL;
  CHECK_OK(llmdd_transfer_cache_async(p, cache.cache_id, sync_true, NULL, &cfg, 1, NULL, 0, NULL, 0, 0, &task));
  uint32_t results[1] = {LLMDD_FAILED};
  CHECK_OK(llmdd_task_get_results(task, -1, results, 1));
  CHECK(results[0] == LLMDD_SUCCESS);
  llmdd_task_free(task);
  t_send(ch, 2);
  CHECK(t_recv(ch, 30000) == 2); /* barrier: transfer cache end */

  CHECK_OK(force_unlink(p, D_ID));
  CHECK_OK(llmdd_unregister_cache(p, cache.cache_id));
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
  t_mem_free(&m);
  return t_failures ? 1 : 0;
}

int main(void) {
  g_port_p = t_free_port();
  g_port_d = t_free_port();
  t_chan_pair ch = t_chan_new();
  pid_t child = t_fork(prompt, &ch);

  llmdd_instance_t *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID, &d));
  init(d, g_port_d);
  t_mem m;
  llmdd_cache_t cache = register_blocks(d, D_ID, 0.0f, &m);
  CHECK(t_recv(ch.parent, 30000) == 1);
  t_send(ch.parent, 1); /* barrier: register end */
  CHECK(t_recv(ch.parent, 30000) == 2);
  const float *t0 = elem(&m, 0), *t1 = elem(&m, 1);
  for (int i = 0; i < BLOCKS * KV; i++) {
    float want = i < KV ? 1.0f : 0.0f;
    if (t0[i] != want || t1[i] != want) fprintf(stderr, "element %d: %g %g, expected %g\n", i, t0[i], t1[i], want);
    CHECK(t0[i] == want && t1[i] == want);
  }
  t_send(ch.parent, 2); /* barrier: transfer cache end */

  CHECK_OK(force_unlink(d, P_ID));
  CHECK_OK(llmdd_unregister_cache(d, cache.cache_id));
  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(d);
  t_mem_free(&m);
  CHECK(t_wait(child, 30000) == 0);
  return t_finish("test_async_sample_flow");
}
