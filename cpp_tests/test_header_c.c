/* Header hygiene, in C (-Wall -Wextra -Werror):
 * - status constants are uint32_t-typed hex literals (0x5010B005U), so a status
 *   kept in a uint32_t compares without warnings and one kept in an int
 *   compares true (LLMDD_FAILED used to be a `long` 4294967295, for which
 *   `int rc == LLMDD_FAILED` was false);
 * - the LLMDD_OPTION_* macros are the option keys and init accepts them;
 * - every struct that may grow has a reserved tail that must be zero on input
 *   (PARAM_INVALID naming the struct otherwise) and is zero on output. */
#include "llmdd_test.h"

/* The ABI sizes on LP64 (reserved tails included). */
_Static_assert(sizeof(llmdd_ip_info_t) == 32, "llmdd_ip_info_t");
_Static_assert(sizeof(llmdd_layer_range_t) == 32, "llmdd_layer_range_t");
_Static_assert(sizeof(llmdd_mem_info_t) == 32, "llmdd_mem_info_t");
_Static_assert(sizeof(llmdd_cache_key_t) == 64, "llmdd_cache_key_t");
_Static_assert(sizeof(llmdd_cluster_info_t) == 80, "llmdd_cluster_info_t");

#define IS_UINT(x) _Generic((x), unsigned int: 1, default: 0)

_Static_assert(sizeof(LLMDD_FAILED) == 4, "LLMDD_FAILED is 32-bit");
_Static_assert(LLMDD_FAILED == 0xFFFFFFFFu, "LLMDD_FAILED value");
_Static_assert(LLMDD_PARAM_INVALID == 0x5010B005u, "LLMDD_PARAM_INVALID value");

static void option_macros(void) {
  CHECK(strcmp(LLMDD_OPTION_DEVICE_ID, "llm.DeviceId") == 0);
  CHECK(strcmp(LLMDD_OPTION_LISTEN_IP_INFO, "llm.ListenIpInfo") == 0);
  CHECK(strcmp(LLMDD_OPTION_SYNC_KV_CACHE_WAIT_TIME, "llm.SyncKvCacheWaitTime") == 0);
  CHECK(strcmp(LLMDD_OPTION_MAX_REGISTERED_ADDRS, "llmdd.MaxRegisteredAddrs") == 0);
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", t_free_port());
  llmdd_option_t opts[] = {
      {LLMDD_OPTION_DEVICE_ID, "0"},
      {LLMDD_OPTION_LISTEN_IP_INFO, listen},
      {LLMDD_OPTION_SYNC_KV_CACHE_WAIT_TIME, "2000"},
      {LLMDD_OPTION_ENABLE_REMOTE_CACHE_ACCESSIBLE, "1"},
      {LLMDD_OPTION_MAX_LINKS, "8"},
      {LLMDD_OPTION_STRICT_OPTIONS, "1"},
  };
  llmdd_instance_t *inst = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &inst));
  CHECK_OK(llmdd_init(inst, opts, sizeof opts / sizeof opts[0]));
  llmdd_destroy(inst);
}

#define CHECK_RESERVED(expr, what)                                            \
  do {                                                                        \
    CHECK_STATUS(expr, LLMDD_PARAM_INVALID);                                  \
    CHECK(strstr(llmdd_last_error_message(), what ".reserved must be zero")); \
  } while (0)

static void reserved_tails(void) {
  llmdd_instance_t *p = NULL, *d = NULL;
  uint16_t port = t_local_pair(&p, &d);

  llmdd_ip_info_t ip = llmdd_ip_info("127.0.0.1", port);
  llmdd_cluster_info_t cl = t_cluster(1, &ip);
  ip.reserved[3] = 1;
  CHECK_RESERVED(llmdd_link_clusters(d, &cl, 1, 3000, NULL), "clusters[0].remote_ip_infos[0]");
  ip.reserved[3] = 0;
  cl.reserved[31] = 1;
  CHECK_RESERVED(llmdd_link_clusters(d, &cl, 1, 3000, NULL), "clusters[0]");
  cl.reserved[31] = 0;
  CHECK_OK(llmdd_link_clusters(d, &cl, 1, 3000, NULL));

  int64_t dims[2] = {4, 64};
  llmdd_cache_desc_t desc = t_desc(LLMDD_PLACEMENT_DEVICE, LLMDD_DT_UINT8, 2, 2, dims);
  uint8_t *mem = calloc(4, 4 * 64);
  uint64_t pa[2] = {(uint64_t)(uintptr_t)mem, (uint64_t)(uintptr_t)(mem + 256)};
  uint64_t da[2] = {(uint64_t)(uintptr_t)(mem + 512), (uint64_t)(uintptr_t)(mem + 768)};
  llmdd_cache_t pc, dc;
  memset(&pc, 0xAB, sizeof pc);
  CHECK_OK(llmdd_register_blocks_cache(p, &desc, pa, 2, NULL, -1, &pc));
  CHECK(t_all(pc.reserved, sizeof pc.reserved, 0)); /* output tail is zero */
  CHECK_OK(llmdd_register_blocks_cache(d, &desc, da, 2, NULL, -1, &dc));
  uint64_t b[1] = {1};
  llmdd_cache_key_t key = llmdd_cache_key_by_id(1, pc.cache_id, 0);
  key.reserved[0] = 9;
  CHECK_RESERVED(llmdd_pull_blocks(d, &key, dc.cache_id, b, 1, b, 1, NULL), "cache key");
  key.reserved[0] = 0;
  llmdd_layer_range_t lr = llmdd_layer_range(-1, -1, -1, -1, 2);
  lr.reserved[11] = 1;
  CHECK_RESERVED(llmdd_pull_blocks(d, &key, dc.cache_id, b, 1, b, 1, &lr), "layer range");
  lr.reserved[11] = 0;
  CHECK_OK(llmdd_pull_blocks(d, &key, dc.cache_id, b, 1, b, 1, &lr));

  llmdd_mem_info_t mi = {.mem_type = LLMDD_MEM_TYPE_DEVICE, .addr = pa[0], .size = 256};
  mi.reserved[7] = 1;
  CHECK_RESERVED(llmdd_remap_registered_memory(p, &mi, 1), "mem_infos[0]");
  llmdd_host_cache_t hc = llmdd_host_cache_init();
  hc.desc = desc;
  hc.desc.placement = LLMDD_PLACEMENT_HOST;
  hc.tensor_addrs = da;
  hc.num_tensor_addrs = 2;
  hc.reserved[0] = 1;
  llmdd_block_pair_t pair = {0, 0};
  CHECK_RESERVED(llmdd_swap_blocks(p, pc.cache_id, NULL, -1, &hc, &pair, 1), "dst_host");

  CHECK_OK(llmdd_finalize(d));
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(d);
  llmdd_destroy(p);
  free(mem);
}

int main(void) {
  option_macros();
  reserved_tails();
  CHECK(IS_UINT(LLMDD_SUCCESS) && IS_UINT(LLMDD_FAILED) && IS_UINT(LLMDD_PARAM_INVALID));
  CHECK(IS_UINT(LLMDD_TIMEOUT) && IS_UINT(LLMDD_DEVICE_MEM_ERROR) && IS_UINT(LLMDD_TASK_RESULT_NOT_STARTED));

  llmdd_instance_t *inst = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &inst));
  uint32_t backend = 0;
  /* Not initialized: LLMDD_FAILED. */
  uint32_t u = llmdd_get_backend(inst, &backend);
  CHECK(u == LLMDD_FAILED);
  int rc = llmdd_get_backend(inst, &backend);
  /* GCC's -Wsign-compare flags int == 0xFFFFFFFFU (any unsigned typing of the
   * constant does); the comparison itself must hold. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wsign-compare"
  CHECK(rc == LLMDD_FAILED);
#pragma GCC diagnostic pop
  /* Codes that fit in an int compare with an int without any warning. */
  int pi = llmdd_get_backend(NULL, &backend);
  CHECK(pi == LLMDD_PARAM_INVALID);
  switch (llmdd_get_backend(inst, &backend)) {
    case LLMDD_FAILED: CHECK(1); break;
    default: CHECK(0);
  }
  llmdd_destroy(inst);
  return t_finish("test_header_c");
}
