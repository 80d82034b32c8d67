/* The llmdd_config_* builder: every setter emits its documented key and value,
 * rejects invalid values (leaving the previous value in place), the generated
 * options initialise instances, and init accepts both spellings of the listen
 * endpoint and device id (C++ llm.ListenIpInfo/llm.DeviceId, Python
 * llm.listenIpInfo/ge.exec.deviceId). */
#include "llmdd_test_blocks.h"

static const char *find(llmdd_config_t *c, const char *key, int *count) {
  const llmdd_option_t *o = NULL;
  size_t n = 0;
  const char *v = NULL;
  *count = 0;
  if (llmdd_config_generate_options(c, &o, &n) != LLMDD_SUCCESS) return NULL;
  for (size_t i = 0; i < n; i++)
    if (strcmp(o[i].key, key) == 0) {
      v = o[i].value;
      (*count)++;
    }
  return v;
}

/* Expects `key` exactly once with `value` (NULL: absent). */
#define CHECK_KEY(c, key, value)                                                    \
  do {                                                                              \
    int n_ = 0;                                                                     \
    const char *v_ = find((c), (key), &n_);                                         \
    const char *want_ = (value);                                                    \
    if (want_ == NULL) {                                                            \
      CHECK(n_ == 0);                                                               \
    } else {                                                                        \
      CHECK(n_ == 1);                                                               \
      CHECK(v_ != NULL && strcmp(v_, want_) == 0);                                  \
      if (v_ && strcmp(v_, want_) != 0)                                             \
        fprintf(stderr, "  %s = \"%s\", expected \"%s\"\n", (key), v_, want_);      \
    }                                                                               \
  } while (0)

static void setters(void) {
  llmdd_config_t *c = NULL;
  REQUIRE_OK(llmdd_config_new(&c));
  const llmdd_option_t *o = NULL;
  size_t n = 99;
  CHECK_OK(llmdd_config_generate_options(c, &o, &n));
  int cnt;
  CHECK(find(c, "llm.listenIpInfo", &cnt) == NULL && cnt == 0);

  CHECK_OK(llmdd_config_set_device_id(c, 3));
  CHECK_KEY(c, "ge.exec.deviceId", "3");
  CHECK_KEY(c, "ge.session_device_id", "3");
  CHECK_STATUS(llmdd_config_set_device_id(c, -1), LLMDD_PARAM_INVALID);
  CHECK_KEY(c, "ge.exec.deviceId", "3");
  CHECK_OK(llmdd_config_set_device_id(c, 0));
  CHECK_KEY(c, "ge.exec.deviceId", "0");

  CHECK_OK(llmdd_config_set_listen_ip_info(c, "127.0.0.1:26000"));
  CHECK_KEY(c, "llm.listenIpInfo", "127.0.0.1:26000");
  CHECK_KEY(c, "llm.ListenIpInfo", NULL);
  const char *bad_listen[] = {"127.0.0.1", "127.0.0.1:0", "300.1.1.1:5", "[::1]", "host:99999",
                              "", "::1:5", "127.0.0.1:-1"};
  for (size_t i = 0; i < sizeof bad_listen / sizeof *bad_listen; i++) {
    CHECK_STATUS(llmdd_config_set_listen_ip_info(c, bad_listen[i]), LLMDD_PARAM_INVALID);
    CHECK_KEY(c, "llm.listenIpInfo", "127.0.0.1:26000");
  }
  CHECK_OK(llmdd_config_set_listen_ip_info(c, "[::1]:26001"));
  CHECK_KEY(c, "llm.listenIpInfo", "[::1]:26001");

  CHECK_OK(llmdd_config_set_sync_kv_timeout(c, 2500));
  CHECK_KEY(c, "llm.SyncKvCacheWaitTime", "2500");
  CHECK_STATUS(llmdd_config_set_sync_kv_timeout(c, 0), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_config_set_sync_kv_timeout(c, -5), LLMDD_PARAM_INVALID);
  CHECK_KEY(c, "llm.SyncKvCacheWaitTime", "2500");

  CHECK_OK(llmdd_config_set_enable_cache_manager(c, false));
  CHECK_KEY(c, "llm.EnableCacheManager", "0");
  CHECK_OK(llmdd_config_set_enable_cache_manager(c, true));
  CHECK_KEY(c, "llm.EnableCacheManager", "1");

  CHECK_OK(llmdd_config_set_enable_remote_cache_accessible(c, true));
  CHECK_KEY(c, "llm.EnableRemoteCacheAccessible", "1");
  CHECK_OK(llmdd_config_set_enable_remote_cache_accessible(c, false));
  CHECK_KEY(c, "llm.EnableRemoteCacheAccessible", "0");

  CHECK_OK(llmdd_config_set_enable_switch_role(c, true));
  CHECK_KEY(c, "llm.EnableSwitchRole", "1");
  CHECK_OK(llmdd_config_set_enable_switch_role(c, false));
  CHECK_KEY(c, "llm.EnableSwitchRole", NULL);
  /* Clearing the flag keeps every other option. */
  CHECK_KEY(c, "llm.SyncKvCacheWaitTime", "2500");
  CHECK_KEY(c, "ge.exec.deviceId", "0");

  CHECK_OK(llmdd_config_set_local_comm_res(c, ""));
  CHECK_KEY(c, "llm.LocalCommRes", "");
  CHECK_STATUS(llmdd_config_set_local_comm_res(c, "{"), LLMDD_PARAM_INVALID);
  CHECK_KEY(c, "llm.LocalCommRes", "");

  CHECK_OK(llmdd_config_set_transfer_backend(c, "hixl"));
  CHECK_KEY(c, "llm.TransferBackend", "hixl");
  CHECK_STATUS(llmdd_config_set_transfer_backend(c, "nccl"), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_config_set_transfer_backend(c, ""), LLMDD_PARAM_INVALID);
  CHECK_KEY(c, "llm.TransferBackend", "hixl");

  CHECK_OK(llmdd_config_set_global_resource_config(c, "{\"a\":1}"));
  CHECK_KEY(c, "llm.GlobalResourceConfig", "{\"a\":1}");
  CHECK_STATUS(llmdd_config_set_global_resource_config(c, "{"), LLMDD_PARAM_INVALID);

  const char *pool = "{\"memory_size\":1048576,\"page_shift\":12}";
  CHECK_OK(llmdd_config_set_mem_pool_cfg(c, pool));
  CHECK_KEY(c, "llm.MemPoolConfig", pool);
  CHECK_STATUS(llmdd_config_set_mem_pool_cfg(c, "{"), LLMDD_PARAM_INVALID);
  CHECK_KEY(c, "llm.MemPoolConfig", pool);

  CHECK_OK(llmdd_config_set_host_mem_pool_cfg(c, pool));
  CHECK_KEY(c, "llm.HostMemPoolConfig", pool);
  CHECK_STATUS(llmdd_config_set_host_mem_pool_cfg(c, "not json"), LLMDD_PARAM_INVALID);

  const char *buf = "{\"buf_cfg\":[],\"buf_pool_size\":1}";
  CHECK_OK(llmdd_config_set_buf_pool_cfg(c, buf));
  CHECK_KEY(c, "llm.BufPoolCfg", buf);
  CHECK_STATUS(llmdd_config_set_buf_pool_cfg(c, "["), LLMDD_PARAM_INVALID);

  CHECK_OK(llmdd_config_set_rdma_traffic_class(c, 132));
  CHECK_KEY(c, "llm.RdmaTrafficClass", "132");
  CHECK_OK(llmdd_config_set_rdma_traffic_class(c, 0));
  CHECK_KEY(c, "llm.RdmaTrafficClass", "0");
  CHECK_STATUS(llmdd_config_set_rdma_traffic_class(c, 3), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_config_set_rdma_traffic_class(c, 256), LLMDD_PARAM_INVALID);
  CHECK_KEY(c, "llm.RdmaTrafficClass", "0");

  CHECK_OK(llmdd_config_set_rdma_service_level(c, 7));
  CHECK_KEY(c, "llm.RdmaServiceLevel", "7");
  CHECK_STATUS(llmdd_config_set_rdma_service_level(c, 8), LLMDD_PARAM_INVALID);
  CHECK_KEY(c, "llm.RdmaServiceLevel", "7");

  CHECK_OK(llmdd_config_set_link_total_time(c, 0));
  CHECK_KEY(c, "llm.LinkTotalTime", "0");
  CHECK_OK(llmdd_config_set_link_total_time(c, 4294967295u));
  CHECK_KEY(c, "llm.LinkTotalTime", "4294967295");

  CHECK_OK(llmdd_config_set_link_retry_count(c, 100));
  CHECK_KEY(c, "llm.LinkRetryCount", "100");
  CHECK_STATUS(llmdd_config_set_link_retry_count(c, 0), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_config_set_link_retry_count(c, 101), LLMDD_PARAM_INVALID);
  CHECK_KEY(c, "llm.LinkRetryCount", "100");

  CHECK_OK(llmdd_config_set_option(c, "ge.someOption", "x y"));
  CHECK_KEY(c, "ge.someOption", "x y");
  CHECK_OK(llmdd_config_set_option(c, "ge.someOption", "z"));
  CHECK_KEY(c, "ge.someOption", "z");
  CHECK_STATUS(llmdd_config_set_option(c, NULL, "v"), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_config_set_option(c, "k", NULL), LLMDD_PARAM_INVALID);

  /* NULL strings and NULL builders. */
  CHECK_STATUS(llmdd_config_set_listen_ip_info(c, NULL), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_config_set_local_comm_res(c, NULL), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_config_set_transfer_backend(c, NULL), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_config_set_mem_pool_cfg(c, NULL), LLMDD_PARAM_INVALID);
  llmdd_config_free(c);
  llmdd_config_free(NULL);
}

/* Options generated by the builder initialise an instance. */
static void generated_init(void) {
  uint16_t port = t_free_port();
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", port);

  llmdd_config_t *pc = NULL, *dc = NULL;
  REQUIRE_OK(llmdd_config_new(&pc));
  CHECK_OK(llmdd_config_set_device_id(pc, 0));
  CHECK_OK(llmdd_config_set_enable_cache_manager(pc, true));
  CHECK_OK(llmdd_config_set_listen_ip_info(pc, listen));
  CHECK_OK(llmdd_config_set_sync_kv_timeout(pc, 2000));
  CHECK_OK(llmdd_config_set_enable_switch_role(pc, true));
  CHECK_OK(llmdd_config_set_rdma_traffic_class(pc, 132));
  CHECK_OK(llmdd_config_set_rdma_service_level(pc, 4));
  CHECK_OK(llmdd_config_set_link_total_time(pc, 30));
  CHECK_OK(llmdd_config_set_link_retry_count(pc, 2));
  CHECK_OK(llmdd_config_set_mem_pool_cfg(pc, "{\"memory_size\":1048576,\"page_shift\":12}"));
  CHECK_OK(llmdd_config_set_host_mem_pool_cfg(pc, "{\"memory_size\":1048576}"));
  CHECK_OK(llmdd_config_set_buf_pool_cfg(pc, "{\"buf_cfg\":[],\"buf_pool_size\":1}"));
  CHECK_OK(llmdd_config_set_global_resource_config(pc, "{}"));
  CHECK_OK(llmdd_config_set_option(pc, "ge.flowGraphMemMaxSize", "1024"));
  const llmdd_option_t *po = NULL;
  size_t pn = 0;
  CHECK_OK(llmdd_config_generate_options(pc, &po, &pn));

  REQUIRE_OK(llmdd_config_new(&dc));
  CHECK_OK(llmdd_config_set_device_id(dc, 0));
  CHECK_OK(llmdd_config_set_enable_cache_manager(dc, true));
  CHECK_OK(llmdd_config_set_enable_remote_cache_accessible(dc, false));
  const llmdd_option_t *dopt = NULL;
  size_t dn = 0;
  CHECK_OK(llmdd_config_generate_options(dc, &dopt, &dn));

  llmdd_instance_t *p = NULL, *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &p));
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, 2, &d));
  CHECK_OK(llmdd_init(p, po, pn));
  CHECK_OK(llmdd_init(d, dopt, dn));
  t_blk src, scratch;
  REQUIRE_OK(t_blk_register(p, &src, 1, 1));
  REQUIRE_OK(t_blk_register(d, &scratch, 0, 0));
  uint32_t ret = 99;
  CHECK_OK(t_link1(d, 1, "127.0.0.1", port, 3000, &ret));
  CHECK_OK(t_blk_pull_verify(d, &scratch, 1));
  CHECK_OK(t_unlink1(d, 1, "127.0.0.1", port, false, &ret));
  /* The pool from llm.MemPoolConfig exists: a small allocation works. */
  int64_t dims[2] = {2, 256};
  llmdd_cache_desc_t desc = t_desc(LLMDD_PLACEMENT_DEVICE, LLMDD_DT_UINT8, 1, 2, dims);
  llmdd_cache_t a;
  CHECK_OK(llmdd_allocate_cache(p, &desc, NULL, 0, &a));
  CHECK_OK(llmdd_finalize(p));
  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(p);
  llmdd_destroy(d);
  t_blk_free(&src);
  t_blk_free(&scratch);
  llmdd_config_free(pc);
  llmdd_config_free(dc);
}

/* init accepts the C++ and the Python spellings (and both agreeing). */
static void spellings(void) {
  const char *listen_keys[3][2] = {{"llm.ListenIpInfo", NULL},
                                   {"llm.listenIpInfo", NULL},
                                   {"llm.ListenIpInfo", "llm.listenIpInfo"}};
  const char *dev_keys[3][2] = {{"llm.DeviceId", NULL},
                                {"ge.exec.deviceId", NULL},
                                {"llm.DeviceId", "ge.exec.deviceId"}};
  for (int i = 0; i < 3; i++) {
    uint16_t port = t_free_port();
    char listen[64];
    snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
    llmdd_option_t o[5];
    size_t n = 0;
    o[n++] = (llmdd_option_t){"llm.EnableCacheManager", "1"};
    for (int k = 0; k < 2; k++) {
      if (dev_keys[i][k]) o[n++] = (llmdd_option_t){dev_keys[i][k], "0"};
      if (listen_keys[i][k]) o[n++] = (llmdd_option_t){listen_keys[i][k], listen};
    }
    llmdd_instance_t *p = NULL, *d = NULL;
    REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &p));
    REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, 2, &d));
    CHECK_OK(llmdd_init(p, o, n));
    /* The decoder uses only the device id spelling of this round. */
    llmdd_option_t od[3];
    size_t m = 0;
    od[m++] = (llmdd_option_t){"llm.EnableCacheManager", "1"};
    for (int k = 0; k < 2; k++)
      if (dev_keys[i][k]) od[m++] = (llmdd_option_t){dev_keys[i][k], "0"};
    CHECK_OK(llmdd_init(d, od, m));
    /* The prompt listens on that endpoint: the decoder links to it. */
    uint32_t ret = 99;
    CHECK_OK(t_link1(d, 1, "127.0.0.1", port, 3000, &ret));
    CHECK_OK(t_unlink1(d, 1, "127.0.0.1", port, false, &ret));
    llmdd_destroy(d);
    llmdd_destroy(p);
  }
}

int main(void) {
  setters();
  generated_init();
  spellings();
  return t_finish("test_config");
}
