/* The acl backend inside one process against the simulated Ascend runtime:
 * memory pools in ACL memory (device pool from aclrtMalloc, host pool from
 * aclrtMallocHost) carved by allocate_cache / allocate_blocks_cache, local
 * copies through aclrtMemcpyAsync (copy_cache, copy_blocks, swap_blocks in both
 * directions, including an unregistered host description), registered device
 * memory from aclrtMalloc, pool exhaustion, and injected allocation failure
 * (SIM_ASCEND_FAIL_MALLOC: pool creation at init is LLMDD_OUT_OF_MEMORY naming
 * the ACL call). Byte-exact against models. */
#include "t_acl.h"

#define NT 2
#define BLK 4096
#define NB 8
#define S 8192
#define DEV_POOL "{\"memory_size\":262144,\"page_shift\":12}"
#define HOST_POOL "{\"memory_size\":131072,\"page_shift\":12}"

static llmdd_instance_t *new_acl(uint64_t cluster, const char *dev_pool, const char *host_pool, uint32_t *status) {
  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, cluster, &p));
  t_opts o = t_acl_opts(0, 0, dev_pool, host_pool);
  *status = t_init(p, NULL, o.o, o.n);
  return p;
}

static void pools_and_copies(void) {
  uint32_t s;
  llmdd_instance_t *p = new_acl(71, DEV_POOL, HOST_POOL, &s);
  REQUIRE_OK(s);
  CHECK(t_backend(p) == LLMDD_BACKEND_ACL);

  /* Blocks caches from both pools. */
  llmdd_cache_desc_t kd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, NB, BLK);
  llmdd_cache_desc_t hd = t_desc2(LLMDD_PLACEMENT_HOST, NT, NB, BLK);
  llmdd_cache_t ck, chk;
  REQUIRE_OK(llmdd_allocate_blocks_cache(p, &kd, NULL, &ck));
  REQUIRE_OK(llmdd_allocate_blocks_cache(p, &hd, NULL, &chk));
  t_dev dk = t_dev_wrap(LLMDD_PLACEMENT_DEVICE, NT, (uint64_t)NB * BLK, ck.tensor_addrs);
  t_dev hk = t_dev_wrap(LLMDD_PLACEMENT_HOST, NT, (uint64_t)NB * BLK, chk.tensor_addrs);
  t_mem mk = t_mem_new(NT, dk.T), mh = t_mem_new(NT, hk.T);
  t_mem_fill(&mk, 81);
  t_dev_upload(&dk, &mk);
  t_dev_upload(&hk, &mh); /* zeros */

  /* copy_blocks on device memory. */
  llmdd_block_pair_t pairs[2] = {{1, 2}, {3, 0}};
  CHECK_OK(llmdd_copy_blocks(p, ck.cache_id, pairs, 2));
  for (uint32_t t = 0; t < NT; t++) {
    t_mem_copy(&mk, t, 2 * BLK, &mk, t, 1 * BLK, BLK);
    t_mem_copy(&mk, t, 0, &mk, t, 3 * BLK, BLK);
  }
  CHECK_DEV(&dk, &mk, "copy_blocks on device memory");

  /* swap out (DEVICE -> HOST pool cache), then swap in from an unregistered host description. */
  llmdd_block_pair_t out[2] = {{0, 5}, {6, 1}};
  CHECK_OK(llmdd_swap_blocks(p, ck.cache_id, NULL, chk.cache_id, NULL, out, 2));
  for (uint32_t t = 0; t < NT; t++) {
    t_mem_copy(&mh, t, 5 * BLK, &mk, t, 0, BLK);
    t_mem_copy(&mh, t, 1 * BLK, &mk, t, 6 * BLK, BLK);
  }
  CHECK_DEV(&hk, &mh, "swap_blocks DEVICE -> HOST");
  t_mem cpu = t_mem_new(NT, (uint64_t)NB * BLK);
  t_mem_fill(&cpu, 82);
  llmdd_host_cache_t hc = {.desc = hd, .tensor_addrs = cpu.addrs, .num_tensor_addrs = NT};
  llmdd_block_pair_t in[2] = {{7, 4}, {2, 3}};
  CHECK_OK(llmdd_swap_blocks(p, -1, &hc, ck.cache_id, NULL, in, 2));
  for (uint32_t t = 0; t < NT; t++) {
    t_mem_copy(&mk, t, 4 * BLK, &cpu, t, 7 * BLK, BLK);
    t_mem_copy(&mk, t, 3 * BLK, &cpu, t, 2 * BLK, BLK);
  }
  CHECK_DEV(&dk, &mk, "swap_blocks HOST description -> DEVICE");
  CHECK_STATUS(llmdd_swap_blocks(p, ck.cache_id, NULL, ck.cache_id, NULL, in, 2), LLMDD_PARAM_INVALID);

  /* copy_cache between batch caches: one allocated, one registered from aclrtMalloc. */
  llmdd_cache_desc_t bd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 2, S);
  llmdd_cache_t ca, cr;
  REQUIRE_OK(llmdd_allocate_cache(p, &bd, NULL, 0, &ca));
  t_dev da = t_dev_wrap(LLMDD_PLACEMENT_DEVICE, NT, 2ull * S, ca.tensor_addrs);
  t_dev dr = t_dev_new(LLMDD_PLACEMENT_DEVICE, NT, 2ull * S);
  REQUIRE_OK(llmdd_register_cache(p, &bd, dr.addrs, NT, NULL, 0, -1, &cr));
  t_mem ma = t_mem_new(NT, da.T), mr = t_mem_new(NT, dr.T);
  t_mem_fill(&ma, 83);
  t_dev_upload(&da, &ma);
  CHECK_OK(llmdd_copy_cache(p, cr.cache_id, ca.cache_id, 1, 0, 100, 500));
  for (uint32_t t = 0; t < NT; t++) t_mem_copy(&mr, t, S + 100, &ma, t, 100, 500);
  CHECK_DEV(&dr, &mr, "copy_cache allocated -> registered (offset 100, size 500)");
  CHECK_OK(llmdd_copy_cache(p, ca.cache_id, cr.cache_id, 0, 1, 0, -1));
  for (uint32_t t = 0; t < NT; t++) t_mem_copy(&ma, t, 0, &mr, t, S, S);
  CHECK_DEV(&da, &ma, "copy_cache registered -> allocated (whole slot)");

  /* The device pool (256 KiB) runs out: OUT_OF_MEMORY, nothing leaked. */
  llmdd_cache_desc_t big = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 64, BLK);
  llmdd_cache_t cbig;
  CHECK_STATUS(llmdd_allocate_blocks_cache(p, &big, NULL, &cbig), LLMDD_OUT_OF_MEMORY);
  CHECK_OK(llmdd_deallocate_cache(p, ca.cache_id));
  CHECK_OK(llmdd_deallocate_blocks_cache(p, ck.cache_id));
  CHECK_OK(llmdd_deallocate_blocks_cache(p, chk.cache_id));
  llmdd_cache_desc_t fits = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 32, BLK);
  CHECK_OK(llmdd_allocate_blocks_cache(p, &fits, NULL, &cbig));

  CHECK_OK(llmdd_unregister_cache(p, cr.cache_id));
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
  t_dev_free(&dr);
  t_mem_free(&mk);
  t_mem_free(&mh);
  t_mem_free(&cpu);
  t_mem_free(&ma);
  t_mem_free(&mr);
}

static void injected_malloc_failure(void) {
  uint32_t s;
  setenv("SIM_ASCEND_FAIL_MALLOC", "1", 1);
  llmdd_instance_t *p = new_acl(72, DEV_POOL, NULL, &s);
  CHECK_STATUS(s, LLMDD_OUT_OF_MEMORY);
  CHECK(t_msg_has("aclrtMalloc"));
  printf("device pool under SIM_ASCEND_FAIL_MALLOC: %s (%s)\n", llmdd_status_name(s), llmdd_last_error_message());
  llmdd_destroy(p);
  p = new_acl(73, NULL, HOST_POOL, &s);
  CHECK_STATUS(s, LLMDD_OUT_OF_MEMORY);
  CHECK(t_msg_has("aclrtMallocHost"));
  llmdd_destroy(p);
  /* Without pools nothing is allocated at init: it succeeds, and allocate
   * reports that no pool exists. */
  p = new_acl(74, NULL, NULL, &s);
  CHECK_OK(s);
  llmdd_cache_desc_t kd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, NB, BLK);
  llmdd_cache_t c;
  CHECK_STATUS(llmdd_allocate_blocks_cache(p, &kd, NULL, &c), LLMDD_FEATURE_NOT_ENABLED);
  llmdd_destroy(p);
  unsetenv("SIM_ASCEND_FAIL_MALLOC");
  p = new_acl(75, DEV_POOL, NULL, &s);
  CHECK_OK(s);
  CHECK_OK(llmdd_allocate_blocks_cache(p, &kd, NULL, &c));
  llmdd_destroy(p);
}

int main(void) {
  t_acl_load();
  pools_and_copies();
  injected_malloc_failure();
  t_acl_check_violations();
  t_acl_unload();
  return t_finish("test_acl_local");
}
