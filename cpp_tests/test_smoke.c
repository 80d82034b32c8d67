/* Smoke test: version, status names, create/init/finalize/destroy, and a
 * prompt/decoder pair in two processes pulling blocks over 127.0.0.1. */
#include "llmdd_test.h"

static uint16_t g_port;

static int prompt(void *arg) {
  t_chan c = *(t_chan *)arg;
  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &p));
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", g_port);
  REQUIRE_OK(t_init(p, listen, NULL, 0));
  int64_t dims[2] = {8, 4096};
  llmdd_cache_desc_t d = t_desc(LLMDD_PLACEMENT_DEVICE, LLMDD_DT_UINT8, 2, 2, dims);
  uint8_t *buf[2];
  uint64_t addrs[2];
  for (int t = 0; t < 2; t++) {
    buf[t] = malloc(8 * 4096);
    t_fill(buf[t], 8 * 4096, 1, t, 0);
    addrs[t] = (uint64_t)(uintptr_t)buf[t];
  }
  llmdd_cache_key_t key = llmdd_blocks_cache_key(1, 0);
  llmdd_cache_t cache;
  REQUIRE_OK(llmdd_register_blocks_cache(p, &d, addrs, 2, &key, -1, &cache));
  t_send(c, 1);          /* ready */
  t_recv(c, 30000);      /* decoder done */
  llmdd_finalize(p);
  llmdd_destroy(p);
  for (int t = 0; t < 2; t++) free(buf[t]);
  return t_failures ? 1 : 0;
}

int main(void) {
  CHECK(strncmp(llmdd_version(), "llmdd ", 6) == 0);
  CHECK(strcmp(llmdd_status_name(LLMDD_PARAM_INVALID), "LLM_PARAM_INVALID") == 0);
  CHECK(LLMDD_PARAM_INVALID == 0x5010B005u);
  g_port = t_free_port();
  t_chan_pair ch = t_chan_new();
  pid_t child = t_fork(prompt, &ch.child);
  t_recv(ch.parent, 30000);

  llmdd_instance_t *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, 2, &d));
  REQUIRE_OK(t_init(d, NULL, NULL, 0));
  int64_t dims[2] = {8, 4096};
  llmdd_cache_desc_t desc = t_desc(LLMDD_PLACEMENT_DEVICE, LLMDD_DT_UINT8, 2, 2, dims);
  uint8_t *buf[2];
  uint64_t addrs[2];
  for (int t = 0; t < 2; t++) {
    buf[t] = calloc(8, 4096);
    addrs[t] = (uint64_t)(uintptr_t)buf[t];
  }
  llmdd_cache_t cache;
  REQUIRE_OK(llmdd_register_blocks_cache(d, &desc, addrs, 2, NULL, -1, &cache));
  llmdd_ip_info_t ip = llmdd_ip_info("127.0.0.1", g_port);
  llmdd_cluster_info_t cl = t_cluster(1, &ip);
  uint32_t rets[1] = {99};
  CHECK_OK(llmdd_link_clusters(d, &cl, 1, 3000, rets));
  CHECK(rets[0] == LLMDD_SUCCESS);
  llmdd_cache_key_t key = llmdd_blocks_cache_key(1, 0);
  uint64_t src[3] = {1, 2, 7}, dst[3] = {0, 5, 6};
  CHECK_OK(llmdd_pull_blocks(d, &key, cache.cache_id, src, 3, dst, 3, NULL));
  for (int t = 0; t < 2; t++)
    for (int j = 0; j < 3; j++)
      CHECK(t_verify(buf[t] + dst[j] * 4096, 4096, 1, t, src[j] * 4096));
  CHECK_OK(llmdd_unlink_clusters(d, &cl, 1, 3000, false, rets));
  t_send(ch.parent, 1);
  CHECK(t_wait(child, 30000) == 0);
  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(d);
  for (int t = 0; t < 2; t++) free(buf[t]);
  return t_finish("test_smoke");
}
