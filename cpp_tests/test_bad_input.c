/* The bad-input matrix: NULL for every pointer parameter (PARAM_INVALID with
 * a message), bad init options, cache-manager mode off, init twice, every
 * call before init and after finalize (LLMDD_FAILED, "not initialized"),
 * finalize twice, destroy(NULL), bad roles, link/unlink argument errors
 * (rets untouched) and per-cluster errors (in rets), a listening instance
 * dialling, and the status names and values of spec §5. */
#include "llmdd_test_blocks.h"

#define CHECK_PI(expr) CHECK_STATUS(expr, LLMDD_PARAM_INVALID)
#define CHECK_NOT_INIT(expr)                                                  \
  do {                                                                        \
    CHECK_STATUS(expr, LLMDD_FAILED);                                         \
    CHECK(strstr(llmdd_last_error_message(), "not initialized") != NULL);     \
  } while (0)

#define NOPT(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------ statuses */

static void statuses(void) {
  struct {
    uint32_t code;
    uint32_t value;
    const char *name;
  } t[] = {
      {LLMDD_SUCCESS, 0x0u, "LLM_SUCCESS"},
      {LLMDD_FAILED, 0xFFFFFFFFu, "LLM_FAILED"},
      {LLMDD_WAIT_PROCESS_TIMEOUT, 0x5010B001u, "LLM_WAIT_PROCESS_TIMEOUT"},
      {LLMDD_KV_CACHE_NOT_EXIST, 0x5010B002u, "LLM_KV_CACHE_NOT_EXIST"},
      {LLMDD_REPEAT_REQUEST, 0x5010B003u, "LLM_REPEAT_REQUEST"},
      {LLMDD_REQUEST_ALREADY_COMPLETED, 0x5010B004u, "LLM_REQUEST_ALREADY_COMPLETED"},
      {LLMDD_PARAM_INVALID, 0x5010B005u, "LLM_PARAM_INVALID"},
      {LLMDD_ENGINE_FINALIZED, 0x5010B006u, "LLM_ENGINE_FINALIZED"},
      {LLMDD_NOT_YET_LINK, 0x5010B007u, "LLM_NOT_YET_LINK"},
      {LLMDD_ALREADY_LINK, 0x5010B008u, "LLM_ALREADY_LINK"},
      {LLMDD_LINK_FAILED, 0x5010B009u, "LLM_LINK_FAILED"},
      {LLMDD_UNLINK_FAILED, 0x5010B00Au, "LLM_UNLINK_FAILED"},
      {LLMDD_NOTIFY_PROMPT_UNLINK_FAILED, 0x5010B00Bu, "LLM_NOTIFY_PROMPT_UNLINK_FAILED"},
      {LLMDD_CLUSTER_NUM_EXCEED_LIMIT, 0x5010B00Cu, "LLM_CLUSTER_NUM_EXCEED_LIMIT"},
      {LLMDD_PROCESSING_LINK, 0x5010B00Du, "LLM_PROCESSING_LINK"},
      {LLMDD_DEVICE_OUT_OF_MEMORY, 0x5010B00Eu, "LLM_DEVICE_OUT_OF_MEMORY"},
      {LLMDD_EXIST_LINK, 0x5010B018u, "LLM_EXIST_LINK"},
      {LLMDD_FEATURE_NOT_ENABLED, 0x5010B019u, "LLM_FEATURE_NOT_ENABLED"},
      {LLMDD_TIMEOUT, 0x5010B01Au, "LLM_TIMEOUT"},
      {LLMDD_LINK_BUSY, 0x5010B01Bu, "LLM_LINK_BUSY"},
      {LLMDD_OUT_OF_MEMORY, 0x5010B01Cu, "LLM_OUT_OF_MEMORY"},
      {LLMDD_DEVICE_MEM_ERROR, 507053u, "LLM_DEVICE_MEM_ERROR"},
      {LLMDD_SUSPECT_REMOTE_ERROR, 507057u, "LLM_SUSPECT_REMOTE_ERROR"},
  };
  for (size_t i = 0; i < NOPT(t); i++) {
    CHECK(t[i].code == t[i].value);
    const char *n = llmdd_status_name(t[i].code);
    CHECK(n != NULL && strcmp(n, t[i].name) == 0);
    if (n && strcmp(n, t[i].name) != 0)
      fprintf(stderr, "  status 0x%x: name %s, expected %s\n", t[i].value, n, t[i].name);
  }
  uint32_t unknown[] = {1, 12345, 0x5010B000u, 0x5010B0FFu, 0x5010B01Du, 507000u, 0xFFFFFFFEu};
  for (size_t i = 0; i < NOPT(unknown); i++)
    CHECK(strcmp(llmdd_status_name(unknown[i]), "LLM_FAILED") == 0);
  CHECK(LLMDD_ROLE_PROMPT == 1 && LLMDD_ROLE_DECODER == 2 && LLMDD_ROLE_MIX == 3);
  CHECK(LLMDD_MAX_CLUSTERS_PER_CALL == 16 && LLMDD_DEFAULT_LINK_TIMEOUT_MS == 3000);
}

/* ---------------------------------------------------------- init options */

static void expect_init(const llmdd_option_t *o, size_t n, uint32_t want, const char *what) {
  llmdd_instance_t *i = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &i));
  uint32_t s = llmdd_init(i, o, n);
  t_checks++;
  if (s != want) {
    t_failures++;
    fprintf(stderr, "init with %s: %s, expected %s (%s)\n", what, llmdd_status_name(s),
            llmdd_status_name(want), llmdd_last_error_message());
  } else if (want != LLMDD_SUCCESS && llmdd_last_error_message()[0] == '\0') {
    t_failures++;
    fprintf(stderr, "init with %s failed without a message\n", what);
  }
  if (s != LLMDD_SUCCESS) {
    /* Still not initialized, and a valid init afterwards works. */
    int64_t dims[2] = {2, 64};
    llmdd_cache_desc_t d = t_desc(LLMDD_PLACEMENT_HOST, LLMDD_DT_UINT8, 1, 2, dims);
    llmdd_cache_t c;
    CHECK_NOT_INIT(llmdd_allocate_cache(i, &d, NULL, 0, &c));
    CHECK_OK(t_init(i, NULL, NULL, 0));
  }
  llmdd_destroy(i);
}

/* Base options plus one (key, value) override/addition. */
static void bad_option(const char *key, const char *value, uint32_t want) {
  llmdd_option_t o[3] = {{"llm.DeviceId", "0"}, {"llm.EnableCacheManager", "1"}, {key, value}};
  size_t n = 3;
  for (size_t i = 0; i < 2; i++)
    if (strcmp(o[i].key, key) == 0) {
      o[i].value = value;
      n = 2;
    }
  char what[160];
  snprintf(what, sizeof what, "%s=\"%s\"", key, value);
  expect_init(o, n, want, what);
}

static void init_options(void) {
  char l1[64], l2[64];
  snprintf(l1, sizeof l1, "127.0.0.1:%u", t_free_port());
  snprintf(l2, sizeof l2, "127.0.0.1:%u", t_free_port());

  llmdd_option_t no_dev[] = {{"llm.EnableCacheManager", "1"}};
  expect_init(no_dev, NOPT(no_dev), LLMDD_PARAM_INVALID, "no device id");
  const char *bad_dev[] = {"x", "-1", "0;1", "", "1.5", "99999999999"};
  for (size_t i = 0; i < NOPT(bad_dev); i++) {
    bad_option("llm.DeviceId", bad_dev[i], LLMDD_PARAM_INVALID);
    llmdd_option_t o[] = {{"ge.exec.deviceId", bad_dev[i]}, {"llm.EnableCacheManager", "1"}};
    expect_init(o, NOPT(o), LLMDD_PARAM_INVALID, "bad ge.exec.deviceId");
  }
  bad_option("llmdd.Foo", "1", LLMDD_PARAM_INVALID);
  bad_option("llmdd.StrictOptions", "2", LLMDD_PARAM_INVALID);
  /* Unknown llm. keys are ignored (as the reference), unless strict. */
  bad_option("llm.Foo", "1", LLMDD_SUCCESS);
  llmdd_option_t strict[] = {{"llm.DeviceId", "0"}, {"llmdd.StrictOptions", "1"}, {"llm.Foo", "1"}};
  expect_init(strict, NOPT(strict), LLMDD_PARAM_INVALID, "llm.Foo with llmdd.StrictOptions=1");
  bad_option("llm.listenipinfo", l1, LLMDD_SUCCESS); /* keys are case-sensitive: an unknown key, ignored */
  const char *bad_listen[] = {"127.0.0.1", "127.0.0.1:0", "300.1.1.1:5", "[::1]", "host:99999",
                              "", "127.0.0.1:65536", "localhost:80"};
  for (size_t i = 0; i < NOPT(bad_listen); i++) {
    bad_option("llm.ListenIpInfo", bad_listen[i], LLMDD_PARAM_INVALID);
    bad_option("llm.listenIpInfo", bad_listen[i], LLMDD_PARAM_INVALID);
  }
  llmdd_option_t disagree_listen[] = {{"llm.DeviceId", "0"},
                                      {"llm.EnableCacheManager", "1"},
                                      {"llm.ListenIpInfo", l1},
                                      {"llm.listenIpInfo", l2}};
  expect_init(disagree_listen, NOPT(disagree_listen), LLMDD_PARAM_INVALID,
              "disagreeing listen spellings");
  llmdd_option_t disagree_dev[] = {
      {"llm.DeviceId", "0"}, {"ge.exec.deviceId", "1"}, {"llm.EnableCacheManager", "1"}};
  expect_init(disagree_dev, NOPT(disagree_dev), LLMDD_PARAM_INVALID,
              "disagreeing device id spellings");
  bad_option("llm.SyncKvCacheWaitTime", "0", LLMDD_PARAM_INVALID);
  bad_option("llm.SyncKvCacheWaitTime", "abc", LLMDD_PARAM_INVALID);
  bad_option("llm.SyncKvCacheWaitTime", "-5", LLMDD_PARAM_INVALID);
  bad_option("llm.SyncKvCacheWaitTime", "3000000000", LLMDD_PARAM_INVALID);
  bad_option("llm.EnableRemoteCacheAccessible", "2", LLMDD_PARAM_INVALID);
  bad_option("llm.EnableRemoteCacheAccessible", "true", LLMDD_PARAM_INVALID);
  bad_option("llm.EnableCacheManager", "2", LLMDD_PARAM_INVALID);
  bad_option("llm.RdmaTrafficClass", "3", LLMDD_PARAM_INVALID);
  bad_option("llm.RdmaTrafficClass", "256", LLMDD_PARAM_INVALID);
  bad_option("llm.RdmaServiceLevel", "8", LLMDD_PARAM_INVALID);
  bad_option("llm.LinkRetryCount", "0", LLMDD_PARAM_INVALID);
  bad_option("llm.LinkRetryCount", "101", LLMDD_PARAM_INVALID);
  bad_option("llm.LinkTotalTime", "x", LLMDD_PARAM_INVALID);
  bad_option("llm.MemPoolConfig", "{", LLMDD_PARAM_INVALID);
  bad_option("llm.MemPoolConfig", "{\"memory_size\":0}", LLMDD_PARAM_INVALID);
  bad_option("llm.MemPoolConfig", "{\"memory_size\":1048576,\"page_shift\":9}",
             LLMDD_PARAM_INVALID);
  bad_option("llm.HostMemPoolConfig", "[]", LLMDD_PARAM_INVALID);
  bad_option("llm.TransferBackend", "nccl", LLMDD_PARAM_INVALID);
  bad_option("llm.LocalCommRes", "{", LLMDD_PARAM_INVALID);
  bad_option("ge.flowGraphMemMaxSize", "12a", LLMDD_PARAM_INVALID);
  bad_option("", "1", LLMDD_PARAM_INVALID);
  llmdd_option_t dup[] = {
      {"llm.DeviceId", "0"}, {"llm.EnableCacheManager", "1"}, {"llm.DeviceId", "0"}};
  expect_init(dup, NOPT(dup), LLMDD_PARAM_INVALID, "duplicate key");

  /* Accepted: unknown keys outside llm./llmdd., ignored v1 keys. */
  bad_option("ge.unknownThing", "x", LLMDD_SUCCESS);
  bad_option("llm.EnableSwitchRole", "1", LLMDD_SUCCESS);
  bad_option("llm.BufPoolCfg", "{}", LLMDD_SUCCESS);

  /* Cache-manager mode is implied (as in C++ Initialize); off is refused. */
  llmdd_option_t no_cm[] = {{"llm.DeviceId", "0"}};
  expect_init(no_cm, NOPT(no_cm), LLMDD_SUCCESS, "cache manager implied");
  bad_option("llm.EnableCacheManager", "0", LLMDD_FEATURE_NOT_ENABLED);

  /* NULL options. */
  llmdd_instance_t *i = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &i));
  CHECK_PI(llmdd_init(i, NULL, 2));
  llmdd_option_t nk[] = {{"llm.DeviceId", "0"}, {NULL, "1"}};
  llmdd_option_t nv[] = {{"llm.DeviceId", "0"}, {"llm.EnableCacheManager", NULL}};
  CHECK_PI(llmdd_init(i, nk, 2));
  CHECK_PI(llmdd_init(i, nv, 2));
  CHECK_STATUS(llmdd_init(i, NULL, 0), LLMDD_PARAM_INVALID); /* no device id */
  /* Init twice: the second (even with other options) is a no-op success. */
  CHECK_OK(t_init(i, NULL, NULL, 0));
  CHECK_OK(t_init(i, NULL, NULL, 0));
  CHECK_OK(llmdd_init(i, no_cm, 1));
  CHECK_OK(llmdd_finalize(i));
  CHECK_OK(llmdd_finalize(i));
  /* Init after finalize starts afresh. */
  CHECK_OK(t_init(i, NULL, NULL, 0));
  llmdd_destroy(i);
}

/* ------------------------------------------------ calls when not initialized */

static void not_initialized(llmdd_instance_t *i) {
  int64_t dims[2] = {4, 256};
  llmdd_cache_desc_t d = t_desc(LLMDD_PLACEMENT_DEVICE, LLMDD_DT_UINT8, 1, 2, dims);
  uint8_t *mem = calloc(4, 256);
  uint64_t addr = (uint64_t)(uintptr_t)mem;
  llmdd_cache_t c;
  llmdd_cache_key_t ck = llmdd_cache_key(1, 1, 0, LLMDD_ID_UNSET);
  llmdd_cache_key_t ik = llmdd_cache_key_by_id(1, 1, 0);
  llmdd_cache_key_t bk = llmdd_blocks_cache_key(1, 0);
  uint64_t blocks[1] = {0};
  llmdd_block_pair_t pair = {0, 1};
  llmdd_mem_info_t mi = {.mem_type = LLMDD_MEM_TYPE_DEVICE, .addr = addr, .size = 1024};
  llmdd_ip_info_t ip = llmdd_ip_info("127.0.0.1", 1);
  llmdd_cluster_info_t cl = t_cluster(1, &ip);
  uint32_t ret = 0;

  CHECK_NOT_INIT(llmdd_register_cache(i, &d, &addr, 1, NULL, 0, -1, &c));
  CHECK_NOT_INIT(llmdd_register_kv_cache(i, &d, &addr, 1, &c));
  CHECK_NOT_INIT(llmdd_register_blocks_cache(i, &d, &addr, 1, NULL, -1, &c));
  CHECK_NOT_INIT(llmdd_unregister_cache(i, 1));
  CHECK_NOT_INIT(llmdd_get_cache(i, 1, &c));
  CHECK_NOT_INIT(llmdd_allocate_cache(i, &d, NULL, 0, &c));
  CHECK_NOT_INIT(llmdd_allocate_blocks_cache(i, &d, NULL, &c));
  CHECK_NOT_INIT(llmdd_deallocate_cache(i, 1));
  CHECK_NOT_INIT(llmdd_deallocate_blocks_cache(i, 1));
  CHECK_NOT_INIT(llmdd_remove_cache_key(i, &ck));
  CHECK_NOT_INIT(llmdd_pull_cache(i, &ck, 1, 0, -1, NULL));
  CHECK_NOT_INIT(llmdd_pull_blocks(i, &bk, 1, blocks, 1, blocks, 1, NULL));
  CHECK_NOT_INIT(llmdd_push_cache(i, &ik, 1, 0, -1, NULL));
  CHECK_NOT_INIT(llmdd_push_blocks(i, &bk, 1, blocks, 1, blocks, 1, NULL));
  CHECK_NOT_INIT(llmdd_copy_cache(i, 1, 2, 0, 0, 0, -1));
  CHECK_NOT_INIT(llmdd_copy_blocks(i, 1, &pair, 1));
  CHECK_NOT_INIT(llmdd_swap_blocks(i, 1, NULL, 2, NULL, &pair, 1));
  CHECK_NOT_INIT(llmdd_remap_registered_memory(i, &mi, 1));
  CHECK_NOT_INIT(llmdd_switch_role(i, LLMDD_ROLE_DECODER, NULL, 0));
  CHECK_NOT_INIT(llmdd_link_clusters(i, &cl, 1, 1000, &ret));
  CHECK_NOT_INIT(llmdd_unlink_clusters(i, &cl, 1, 1000, false, &ret));
  CHECK_NOT_INIT(llmdd_unlink_clusters(i, &cl, 1, 1000, true, &ret));
  /* Identity queries need no session. */
  uint64_t id = 0;
  uint32_t role = 0;
  CHECK_OK(llmdd_get_cluster_id(i, &id));
  CHECK_OK(llmdd_get_role(i, &role));
  free(mem);
}

static void lifecycle(void) {
  llmdd_instance_t *i = NULL;
  CHECK_PI(llmdd_create(0, 1, &i));
  CHECK(i == NULL);
  CHECK_PI(llmdd_create(4, 1, &i));
  CHECK_PI(llmdd_create(LLMDD_ROLE_PROMPT, 1, NULL));
  llmdd_destroy(NULL);
  CHECK_PI(llmdd_finalize(NULL));

  REQUIRE_OK(llmdd_create(LLMDD_ROLE_MIX, 77, &i));
  /* Finalize before init is harmless. */
  CHECK_OK(llmdd_finalize(i));
  not_initialized(i);
  REQUIRE_OK(t_init(i, NULL, NULL, 0));
  CHECK_OK(llmdd_finalize(i));
  not_initialized(i);
  CHECK_OK(llmdd_finalize(i));
  llmdd_destroy(i);
}

/* --------------------------------------------------------- NULL pointers */

static void null_pointers(void) {
  llmdd_instance_t *i = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, 2, &i));
  llmdd_option_t pool = {"llm.MemPoolConfig", "{\"memory_size\":1048576,\"page_shift\":12}"};
  llmdd_option_t hpool = {"llm.HostMemPoolConfig", "{\"memory_size\":1048576,\"page_shift\":12}"};
  llmdd_option_t extra[2] = {pool, hpool};
  REQUIRE_OK(t_init(i, NULL, extra, 2));

  int64_t dims[2] = {4, 256};
  llmdd_cache_desc_t d = t_desc(LLMDD_PLACEMENT_DEVICE, LLMDD_DT_UINT8, 1, 2, dims);
  llmdd_cache_desc_t hd = t_desc(LLMDD_PLACEMENT_HOST, LLMDD_DT_UINT8, 1, 2, dims);
  uint8_t *mem = calloc(4, 256), *hmem = calloc(4, 256);
  uint64_t addr = (uint64_t)(uintptr_t)mem, haddr = (uint64_t)(uintptr_t)hmem;
  llmdd_cache_t c, bc;
  REQUIRE_OK(llmdd_register_blocks_cache(i, &d, &addr, 1, NULL, -1, &bc));
  llmdd_cache_key_t ck = llmdd_cache_key(1, 1, 0, LLMDD_ID_UNSET);
  llmdd_cache_key_t ik = llmdd_cache_key_by_id(1, 1, 0);
  llmdd_cache_key_t bk = llmdd_blocks_cache_key(1, 0);
  uint64_t blocks[1] = {0};
  llmdd_block_pair_t pair = {0, 1};
  llmdd_mem_info_t mi = {.mem_type = LLMDD_MEM_TYPE_DEVICE, .addr = addr, .size = 1024};
  llmdd_host_cache_t hc = {.desc = hd, .tensor_addrs = NULL, .num_tensor_addrs = 1};
  uint64_t id = 0;
  uint32_t role = 0, ret = 0;
  llmdd_option_t opt = {"llm.ListenIpInfo", "127.0.0.1:5"};
  llmdd_ip_info_t ip = llmdd_ip_info("127.0.0.1", 1);
  llmdd_cluster_info_t cl = t_cluster(1, &ip);

  /* NULL instance handle. */
  CHECK_PI(llmdd_init(NULL, &opt, 1));
  CHECK_PI(llmdd_finalize(NULL));
  CHECK_PI(llmdd_get_cluster_id(NULL, &id));
  CHECK_PI(llmdd_get_role(NULL, &role));
  CHECK_PI(llmdd_switch_role(NULL, LLMDD_ROLE_PROMPT, NULL, 0));
  CHECK_PI(llmdd_link_clusters(NULL, &cl, 1, 1000, &ret));
  CHECK_PI(llmdd_unlink_clusters(NULL, &cl, 1, 1000, true, &ret));
  CHECK_PI(llmdd_register_cache(NULL, &d, &addr, 1, NULL, 0, -1, &c));
  CHECK_PI(llmdd_register_kv_cache(NULL, &d, &addr, 1, &c));
  CHECK_PI(llmdd_register_blocks_cache(NULL, &d, &addr, 1, NULL, -1, &c));
  CHECK_PI(llmdd_unregister_cache(NULL, bc.cache_id));
  CHECK_PI(llmdd_get_cache(NULL, bc.cache_id, &c));
  CHECK_PI(llmdd_allocate_cache(NULL, &d, NULL, 0, &c));
  CHECK_PI(llmdd_allocate_blocks_cache(NULL, &d, NULL, &c));
  CHECK_PI(llmdd_deallocate_cache(NULL, 1));
  CHECK_PI(llmdd_deallocate_blocks_cache(NULL, 1));
  CHECK_PI(llmdd_remove_cache_key(NULL, &ck));
  CHECK_PI(llmdd_pull_cache(NULL, &ck, bc.cache_id, 0, -1, NULL));
  CHECK_PI(llmdd_pull_blocks(NULL, &bk, bc.cache_id, blocks, 1, blocks, 1, NULL));
  CHECK_PI(llmdd_push_cache(NULL, &ik, bc.cache_id, 0, -1, NULL));
  CHECK_PI(llmdd_push_blocks(NULL, &bk, bc.cache_id, blocks, 1, blocks, 1, NULL));
  CHECK_PI(llmdd_copy_cache(NULL, 1, 2, 0, 0, 0, -1));
  CHECK_PI(llmdd_copy_blocks(NULL, bc.cache_id, &pair, 1));
  CHECK_PI(llmdd_swap_blocks(NULL, 1, NULL, 2, NULL, &pair, 1));
  CHECK_PI(llmdd_remap_registered_memory(NULL, &mi, 1));

  /* NULL out pointers. */
  CHECK_PI(llmdd_get_cluster_id(i, NULL));
  CHECK_PI(llmdd_get_role(i, NULL));
  CHECK_PI(llmdd_register_cache(i, &hd, &haddr, 1, NULL, 0, -1, NULL));
  CHECK_PI(llmdd_register_kv_cache(i, &hd, &haddr, 1, NULL));
  CHECK_PI(llmdd_register_blocks_cache(i, &hd, &haddr, 1, NULL, -1, NULL));
  CHECK_PI(llmdd_get_cache(i, bc.cache_id, NULL));
  CHECK_PI(llmdd_allocate_cache(i, &d, NULL, 0, NULL));
  CHECK_PI(llmdd_allocate_blocks_cache(i, &d, NULL, NULL));

  /* NULL descriptions, address arrays and key arrays. */
  CHECK_PI(llmdd_register_cache(i, NULL, &haddr, 1, NULL, 0, -1, &c));
  CHECK_PI(llmdd_register_kv_cache(i, NULL, &haddr, 1, &c));
  CHECK_PI(llmdd_register_blocks_cache(i, NULL, &haddr, 1, NULL, -1, &c));
  CHECK_PI(llmdd_register_cache(i, &hd, NULL, 1, NULL, 0, -1, &c));
  CHECK_PI(llmdd_register_kv_cache(i, &hd, NULL, 1, &c));
  CHECK_PI(llmdd_register_blocks_cache(i, &hd, NULL, 1, NULL, -1, &c));
  CHECK_PI(llmdd_register_cache(i, &hd, &haddr, 1, NULL, 1, -1, &c));
  CHECK_PI(llmdd_allocate_cache(i, NULL, NULL, 0, &c));
  CHECK_PI(llmdd_allocate_cache(i, &d, NULL, 1, &c));
  CHECK_PI(llmdd_allocate_blocks_cache(i, NULL, NULL, &c));
  /* None of the rejected calls registered anything: host memory is still free. */
  CHECK_OK(llmdd_register_cache(i, &hd, &haddr, 1, NULL, 0, -1, &c));
  CHECK_OK(llmdd_unregister_cache(i, c.cache_id));

  /* NULL keys, block lists, pairs and mem infos. */
  CHECK_PI(llmdd_remove_cache_key(i, NULL));
  CHECK_PI(llmdd_pull_cache(i, NULL, bc.cache_id, 0, -1, NULL));
  CHECK_PI(llmdd_pull_blocks(i, NULL, bc.cache_id, blocks, 1, blocks, 1, NULL));
  CHECK_PI(llmdd_pull_blocks(i, &bk, bc.cache_id, NULL, 1, blocks, 1, NULL));
  CHECK_PI(llmdd_pull_blocks(i, &bk, bc.cache_id, blocks, 1, NULL, 1, NULL));
  CHECK_PI(llmdd_push_cache(i, NULL, bc.cache_id, 0, -1, NULL));
  CHECK_PI(llmdd_push_blocks(i, NULL, bc.cache_id, blocks, 1, blocks, 1, NULL));
  CHECK_PI(llmdd_push_blocks(i, &bk, bc.cache_id, NULL, 1, blocks, 1, NULL));
  CHECK_PI(llmdd_push_blocks(i, &bk, bc.cache_id, blocks, 1, NULL, 1, NULL));
  CHECK_PI(llmdd_copy_blocks(i, bc.cache_id, NULL, 1));
  CHECK_PI(llmdd_swap_blocks(i, bc.cache_id, NULL, 0, NULL, NULL, 1));
  CHECK_PI(llmdd_swap_blocks(i, bc.cache_id, NULL, 0, &hc, &pair, 1)); /* host addrs NULL */
  CHECK_PI(llmdd_remap_registered_memory(i, NULL, 1));

  /* NULL options / clusters / ips. */
  CHECK_PI(llmdd_init(i, NULL, 1)); /* initialized, but NULL with count 1 */
  CHECK_PI(llmdd_switch_role(i, LLMDD_ROLE_PROMPT, NULL, 1));
  llmdd_option_t nk = {NULL, "127.0.0.1:5"}, nv = {"llm.ListenIpInfo", NULL};
  CHECK_PI(llmdd_switch_role(i, LLMDD_ROLE_PROMPT, &nk, 1));
  CHECK_PI(llmdd_switch_role(i, LLMDD_ROLE_PROMPT, &nv, 1));
  CHECK_PI(llmdd_link_clusters(i, NULL, 1, 1000, &ret));
  CHECK_PI(llmdd_unlink_clusters(i, NULL, 1, 1000, false, &ret));
  CHECK_PI(llmdd_unlink_clusters(i, NULL, 1, 1000, true, &ret));
  llmdd_ip_info_t nip = llmdd_ip_info(NULL, 5);
  llmdd_cluster_info_t ncl = t_cluster(1, &nip);
  CHECK_PI(llmdd_link_clusters(i, &ncl, 1, 1000, &ret));
  CHECK_PI(llmdd_unlink_clusters(i, &ncl, 1, 1000, false, &ret));
  llmdd_cluster_info_t nremote = t_cluster(1, NULL);
  CHECK_PI(llmdd_link_clusters(i, &nremote, 1, 1000, &ret));
  llmdd_cluster_info_t nlocal = t_cluster(1, &ip);
  nlocal.num_local_ip_infos = 1;
  CHECK_PI(llmdd_link_clusters(i, &nlocal, 1, 1000, &ret));
  nlocal.local_ip_infos = &nip;
  CHECK_PI(llmdd_link_clusters(i, &nlocal, 1, 1000, &ret));

  /* The config builder. */
  llmdd_config_t *cfg = NULL;
  const llmdd_option_t *oo = NULL;
  size_t on = 0;
  CHECK_PI(llmdd_config_new(NULL));
  CHECK_PI(llmdd_config_set_device_id(NULL, 0));
  CHECK_PI(llmdd_config_set_listen_ip_info(NULL, "127.0.0.1:5"));
  CHECK_PI(llmdd_config_set_sync_kv_timeout(NULL, 1000));
  CHECK_PI(llmdd_config_set_enable_cache_manager(NULL, true));
  CHECK_PI(llmdd_config_set_enable_remote_cache_accessible(NULL, true));
  CHECK_PI(llmdd_config_set_enable_switch_role(NULL, true));
  CHECK_PI(llmdd_config_set_local_comm_res(NULL, ""));
  CHECK_PI(llmdd_config_set_transfer_backend(NULL, "hixl"));
  CHECK_PI(llmdd_config_set_global_resource_config(NULL, "{}"));
  CHECK_PI(llmdd_config_set_mem_pool_cfg(NULL, "{}"));
  CHECK_PI(llmdd_config_set_host_mem_pool_cfg(NULL, "{}"));
  CHECK_PI(llmdd_config_set_buf_pool_cfg(NULL, "{}"));
  CHECK_PI(llmdd_config_set_rdma_traffic_class(NULL, 132));
  CHECK_PI(llmdd_config_set_rdma_service_level(NULL, 4));
  CHECK_PI(llmdd_config_set_link_total_time(NULL, 0));
  CHECK_PI(llmdd_config_set_link_retry_count(NULL, 1));
  CHECK_PI(llmdd_config_set_option(NULL, "k", "v"));
  CHECK_PI(llmdd_config_generate_options(NULL, &oo, &on));
  REQUIRE_OK(llmdd_config_new(&cfg));
  CHECK_PI(llmdd_config_set_listen_ip_info(cfg, NULL));
  CHECK_PI(llmdd_config_set_local_comm_res(cfg, NULL));
  CHECK_PI(llmdd_config_set_transfer_backend(cfg, NULL));
  CHECK_PI(llmdd_config_set_global_resource_config(cfg, NULL));
  CHECK_PI(llmdd_config_set_mem_pool_cfg(cfg, NULL));
  CHECK_PI(llmdd_config_set_host_mem_pool_cfg(cfg, NULL));
  CHECK_PI(llmdd_config_set_buf_pool_cfg(cfg, NULL));
  CHECK_PI(llmdd_config_set_option(cfg, NULL, "v"));
  CHECK_PI(llmdd_config_set_option(cfg, "k", NULL));
  CHECK_PI(llmdd_config_generate_options(cfg, NULL, &on));
  CHECK_PI(llmdd_config_generate_options(cfg, &oo, NULL));
  llmdd_config_free(cfg);

  /* A failed call leaves a message; a following success clears it. */
  CHECK_PI(llmdd_get_role(i, NULL));
  CHECK(llmdd_last_error_message()[0] != '\0');
  CHECK_OK(llmdd_get_role(i, &role));
  CHECK(llmdd_last_error_message()[0] == '\0');

  CHECK_OK(llmdd_finalize(i));
  llmdd_destroy(i);
  free(mem);
  free(hmem);
}

/* ----------------------------------------------- link / unlink arguments */

static void link_args(void) {
  llmdd_instance_t *p = NULL, *d = NULL;
  uint16_t port = t_local_pair(&p, &d);

  const uint32_t SENT = 0xC0FFEEu;
  llmdd_ip_info_t good = llmdd_ip_info("127.0.0.1", port);
  llmdd_cluster_info_t many[17];
  uint32_t rets[17];
  for (int k = 0; k < 17; k++) many[k] = t_cluster(100 + k, &good);

  /* Whole-call argument errors leave rets untouched. */
  for (int f = 0; f < 2; f++) {
    bool force = f == 1;
#define RESET_RETS() for (int k = 0; k < 17; k++) rets[k] = SENT
#define RETS_UNTOUCHED() ({ int u_ = 1; for (int k = 0; k < 17; k++) u_ &= rets[k] == SENT; u_; })
    RESET_RETS();
    CHECK_PI(llmdd_link_clusters(d, many, 0, 1000, rets));
    CHECK(RETS_UNTOUCHED());
    CHECK_PI(llmdd_unlink_clusters(d, many, 0, 1000, force, rets));
    CHECK(RETS_UNTOUCHED());
    CHECK_PI(llmdd_link_clusters(d, NULL, 0, 1000, rets));
    CHECK(RETS_UNTOUCHED());
    CHECK_STATUS(llmdd_link_clusters(d, many, 17, 1000, rets), LLMDD_CLUSTER_NUM_EXCEED_LIMIT);
    CHECK(RETS_UNTOUCHED());
    CHECK_STATUS(llmdd_unlink_clusters(d, many, 17, 1000, force, rets),
                 LLMDD_CLUSTER_NUM_EXCEED_LIMIT);
    CHECK(RETS_UNTOUCHED());
    CHECK_PI(llmdd_link_clusters(d, many, 1, 0, rets));
    CHECK_PI(llmdd_link_clusters(d, many, 1, -5, rets));
    CHECK_PI(llmdd_unlink_clusters(d, many, 1, 0, force, rets));
    CHECK_PI(llmdd_unlink_clusters(d, many, 1, -5, force, rets));
    CHECK(RETS_UNTOUCHED());
  }
  /* 16 clusters is within the limit (they all fail individually: wrong ids). */
  RESET_RETS();
  CHECK(llmdd_link_clusters(d, many, 16, 1000, rets) == LLMDD_LINK_FAILED);
  int all = 1;
  for (int k = 0; k < 16; k++) all &= rets[k] == LLMDD_LINK_FAILED;
  CHECK(all);
  CHECK(rets[16] == SENT);

  /* Per-cluster errors land in rets; the call fails. */
  llmdd_ip_info_t two_ips[2] = {good, good};
  llmdd_ip_info_t abc = llmdd_ip_info("abc", port), dots = llmdd_ip_info("1.2.3", port), empty = llmdd_ip_info("", port),
                  p0 = llmdd_ip_info("127.0.0.1", 0);
  llmdd_cluster_info_t bad[9];
  bad[0] = t_cluster(1, &good);
  bad[0].num_remote_ip_infos = 0;
  bad[0].remote_ip_infos = NULL;
  bad[1] = t_cluster(1, two_ips);
  bad[1].num_remote_ip_infos = 2;
  bad[2] = t_cluster(1, &abc);
  bad[3] = t_cluster(1, &dots);
  bad[4] = t_cluster(1, &empty);
  bad[5] = t_cluster(1, &p0);
  bad[6] = t_cluster(2, &good); /* own cluster id */
  bad[7] = t_cluster(1, &good); /* two local ip infos */
  bad[7].local_ip_infos = two_ips;
  bad[7].num_local_ip_infos = 2;
  bad[8] = t_cluster(1, &good); /* bad local ip */
  bad[8].local_ip_infos = &abc;
  bad[8].num_local_ip_infos = 1;
  for (int k = 0; k < 9; k++) {
    uint32_t r = SENT;
    uint32_t s = llmdd_link_clusters(d, &bad[k], 1, 1000, &r);
    CHECK(s == LLMDD_PARAM_INVALID);
    CHECK(r == LLMDD_PARAM_INVALID);
    if (r != LLMDD_PARAM_INVALID)
      fprintf(stderr, "  bad cluster %d: rets[0] = %s (%s)\n", k, llmdd_status_name(r),
              llmdd_last_error_message());
    CHECK(llmdd_last_error_message()[0] != '\0');
  }
  /* Non-forced unlink validates the endpoint too. */
  for (int k = 0; k < 6; k++) {
    uint32_t r = SENT;
    /* Nothing is linked, so an unlink may also succeed; but a bad endpoint
     * is reported as PARAM_INVALID or ignored, never another error. */
    uint32_t s = llmdd_unlink_clusters(d, &bad[k], 1, 1000, false, &r);
    CHECK(s == r);
    CHECK(s == LLMDD_SUCCESS || s == LLMDD_PARAM_INVALID);
  }
  /* A mixed list: the good one links, the bad ones report PARAM_INVALID. */
  llmdd_cluster_info_t mixed[4] = {bad[2], t_cluster(1, &good), bad[5], bad[6]};
  mixed[0].remote_cluster_id = 31; /* distinct ids: a repeated id is its own error */
  mixed[2].remote_cluster_id = 32;
  uint32_t mr[4] = {SENT, SENT, SENT, SENT};
  uint32_t s = llmdd_link_clusters(d, mixed, 4, 3000, mr);
  CHECK(s == LLMDD_PARAM_INVALID);
  CHECK(mr[0] == LLMDD_PARAM_INVALID && mr[1] == LLMDD_SUCCESS && mr[2] == LLMDD_PARAM_INVALID &&
        mr[3] == LLMDD_PARAM_INVALID);
  /* The same cluster twice in one call. */
  llmdd_cluster_info_t twice[2] = {t_cluster(1, &good), t_cluster(1, &good)};
  uint32_t tr[2] = {SENT, SENT};
  CHECK(llmdd_link_clusters(d, twice, 2, 1000, tr) != LLMDD_SUCCESS);
  CHECK(tr[0] != LLMDD_SUCCESS && tr[1] != LLMDD_SUCCESS);
  /* rets may be NULL. */
  CHECK_STATUS(llmdd_link_clusters(d, &mixed[1], 1, 1000, NULL), LLMDD_ALREADY_LINK);
  CHECK_OK(llmdd_unlink_clusters(d, &mixed[1], 1, 1000, false, NULL));

  /* A listening instance may dial too (nothing listens at dip: LINK_FAILED in
   * rets); unlinking a cluster it has no link to succeeds either way. */
  llmdd_ip_info_t dip = llmdd_ip_info("127.0.0.1", t_free_port());
  llmdd_cluster_info_t to_d = t_cluster(2, &dip);
  uint32_t r = SENT;
  CHECK_STATUS(llmdd_link_clusters(p, &to_d, 1, 1000, &r), LLMDD_LINK_FAILED);
  CHECK(r == LLMDD_LINK_FAILED);
  CHECK_OK(llmdd_unlink_clusters(p, &to_d, 1, 1000, false, &r));
  CHECK_OK(llmdd_unlink_clusters(p, &to_d, 1, 1000, true, &r));

  llmdd_destroy(d);
  llmdd_destroy(p);
}

int main(void) {
  statuses();
  init_options();
  lifecycle();
  null_pointers();
  link_args();
  return t_finish("test_bad_input");
}
