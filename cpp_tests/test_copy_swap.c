/* Local copies: copy_cache (offset, size, batch indices, bounds errors),
 * copy_blocks (pairs, out-of-range: nothing moved), swap_blocks between a
 * registered DEVICE blocks cache and an unregistered host description (swap
 * out, then swap in), same-placement swaps rejected. Byte-exact against a
 * model of every buffer. */
#include "t_dataplane.h"

#define NT 4
#define S 8192
#define BLK 4096

int main(void) {
  const uint32_t PI = LLMDD_PARAM_INVALID;
  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 51, &p));
  REQUIRE_OK(t_init(p, NULL, NULL, 0));
  t_mem A = t_mem_new(NT, 3ull * S), B = t_mem_new(NT, 2ull * S), EB = t_mem_new(NT, 2ull * S);
  t_mem_fill(&A, 61);
  llmdd_cache_t ca, cb, cc, ck;
  llmdd_cache_desc_t da = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 3, S);
  llmdd_cache_desc_t db = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 2, S);
  REQUIRE_OK(llmdd_register_cache(p, &da, A.addrs, NT, NULL, 0, -1, &ca));
  REQUIRE_OK(llmdd_register_cache(p, &db, B.addrs, NT, NULL, 0, -1, &cb));

  /* copy_cache */
  CHECK_OK(llmdd_copy_cache(p, cb.cache_id, ca.cache_id, 1, 2, 1000, 500));
  for (uint32_t t = 0; t < NT; t++) t_mem_copy(&EB, t, S + 1000, &A, t, 2 * S + 1000, 500);
  CHECK_MEM(&B, &EB, "copy_cache 2->1 off 1000 size 500");
  CHECK_OK(llmdd_copy_cache(p, cb.cache_id, ca.cache_id, 0, 1, 100, -1));
  for (uint32_t t = 0; t < NT; t++) t_mem_copy(&EB, t, 100, &A, t, S + 100, S - 100);
  CHECK_MEM(&B, &EB, "copy_cache 1->0 off 100 size -1");
  CHECK_OK(llmdd_copy_cache(p, cb.cache_id, ca.cache_id, 1, 0, 0, -1));
  for (uint32_t t = 0; t < NT; t++) t_mem_copy(&EB, t, S, &A, t, 0, S);
  CHECK_MEM(&B, &EB, "copy_cache 0->1 whole slot");
  t_mem_zero(&B);
  t_mem_zero(&EB);
  CHECK_STATUS(llmdd_copy_cache(p, cb.cache_id, ca.cache_id, 2, 0, 0, -1), PI);  /* dst index */
  CHECK_STATUS(llmdd_copy_cache(p, cb.cache_id, ca.cache_id, 0, 3, 0, -1), PI);  /* src index */
  CHECK_STATUS(llmdd_copy_cache(p, cb.cache_id, ca.cache_id, 0, 0, S, -1), PI);  /* offset */
  CHECK_STATUS(llmdd_copy_cache(p, cb.cache_id, ca.cache_id, 0, 0, 100, S - 99), PI);
  CHECK_STATUS(llmdd_copy_cache(p, cb.cache_id, ca.cache_id, 0, 0, 0, S + 1), PI);
  CHECK_STATUS(llmdd_copy_cache(p, cb.cache_id, ca.cache_id, 0, 0, 0, 0), PI);
  CHECK_STATUS(llmdd_copy_cache(p, 999, ca.cache_id, 0, 0, 0, -1), LLMDD_KV_CACHE_NOT_EXIST);
  CHECK_STATUS(llmdd_copy_cache(p, cb.cache_id, 999, 0, 0, 0, -1), LLMDD_KV_CACHE_NOT_EXIST);
  t_mem C2 = t_mem_new(2, 2ull * S);
  llmdd_cache_desc_t dc2 = t_desc2(LLMDD_PLACEMENT_DEVICE, 2, 2, S);
  REQUIRE_OK(llmdd_register_cache(p, &dc2, C2.addrs, 2, NULL, 0, -1, &cc));
  CHECK_STATUS(llmdd_copy_cache(p, cc.cache_id, ca.cache_id, 0, 0, 0, -1), PI); /* tensor counts */
  CHECK(t_all(C2.p[0], C2.T, 0) && t_all(C2.p[1], C2.T, 0));
  CHECK_MEM(&B, &EB, "copy_cache errors moved nothing");

  /* copy_blocks */
  t_mem K = t_mem_new(NT, 16ull * BLK), EK = t_mem_new(NT, 16ull * BLK);
  t_mem_fill(&K, 62);
  t_mem_fill(&EK, 62);
  llmdd_cache_desc_t dk = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 16, BLK);
  REQUIRE_OK(llmdd_register_blocks_cache(p, &dk, K.addrs, NT, NULL, -1, &ck));
  CHECK_STATUS(llmdd_copy_cache(p, ck.cache_id, ca.cache_id, 0, 0, 0, -1), PI); /* blocks as batch dst */
  llmdd_block_pair_t pairs[3] = {{1, 5}, {2, 6}, {15, 0}};
  CHECK_OK(llmdd_copy_blocks(p, ck.cache_id, pairs, 3));
  for (uint32_t t = 0; t < NT; t++)
    for (int j = 0; j < 3; j++) t_mem_copy(&EK, t, pairs[j].dst * BLK, &EK, t, pairs[j].src * BLK, BLK);
  CHECK_MEM(&K, &EK, "copy_blocks");
  llmdd_block_pair_t bad1[2] = {{1, 2}, {16, 3}}, bad2[2] = {{1, 2}, {3, 16}};
  CHECK_STATUS(llmdd_copy_blocks(p, ck.cache_id, bad1, 2), PI);
  CHECK_STATUS(llmdd_copy_blocks(p, ck.cache_id, bad2, 2), PI);
  CHECK_STATUS(llmdd_copy_blocks(p, ca.cache_id, pairs, 3), PI); /* batch cache */
  CHECK_STATUS(llmdd_copy_blocks(p, 999, pairs, 3), LLMDD_KV_CACHE_NOT_EXIST);
  CHECK_MEM(&K, &EK, "copy_blocks errors moved nothing");

  /* swap_blocks: DEVICE registered K <-> unregistered HOST description H */
  t_mem H = t_mem_new(NT, 8ull * BLK), EH = t_mem_new(NT, 8ull * BLK);
  llmdd_host_cache_t hc;
  memset(&hc, 0, sizeof hc);
  hc.desc = t_desc2(LLMDD_PLACEMENT_HOST, NT, 8, BLK);
  hc.tensor_addrs = H.addrs;
  hc.num_tensor_addrs = NT;
  llmdd_block_pair_t out[3] = {{1, 0}, {2, 1}, {9, 7}};
  CHECK_OK(llmdd_swap_blocks(p, ck.cache_id, NULL, -1, &hc, out, 3));
  for (uint32_t t = 0; t < NT; t++)
    for (int j = 0; j < 3; j++) t_mem_copy(&EH, t, out[j].dst * BLK, &EK, t, out[j].src * BLK, BLK);
  CHECK_MEM(&H, &EH, "swap out");
  CHECK_MEM(&K, &EK, "swap out leaves the device side");
  llmdd_block_pair_t in[2] = {{0, 12}, {7, 13}};
  CHECK_OK(llmdd_swap_blocks(p, -1, &hc, ck.cache_id, NULL, in, 2));
  for (uint32_t t = 0; t < NT; t++)
    for (int j = 0; j < 2; j++) t_mem_copy(&EK, t, in[j].dst * BLK, &EH, t, in[j].src * BLK, BLK);
  CHECK_MEM(&K, &EK, "swap in");
  CHECK_MEM(&H, &EH, "swap in leaves the host side");
  /* errors: same placement, out of range, block size mismatch */
  t_mem K2 = t_mem_new(NT, 4ull * BLK);
  llmdd_cache_desc_t dk2 = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 4, BLK);
  llmdd_cache_t ck2;
  REQUIRE_OK(llmdd_register_blocks_cache(p, &dk2, K2.addrs, NT, NULL, -1, &ck2));
  llmdd_block_pair_t one[1] = {{0, 1}};
  CHECK_STATUS(llmdd_swap_blocks(p, ck.cache_id, NULL, ck2.cache_id, NULL, one, 1), PI);
  CHECK_STATUS(llmdd_swap_blocks(p, -1, &hc, -1, &hc, one, 1), PI);
  llmdd_block_pair_t oor1[1] = {{8, 0}}, oor2[1] = {{0, 16}};
  CHECK_STATUS(llmdd_swap_blocks(p, -1, &hc, ck.cache_id, NULL, oor1, 1), PI);
  CHECK_STATUS(llmdd_swap_blocks(p, -1, &hc, ck.cache_id, NULL, oor2, 1), PI);
  llmdd_host_cache_t hbad = hc;
  hbad.desc = t_desc2(LLMDD_PLACEMENT_HOST, NT, 16, BLK / 2); /* block size 2048 */
  CHECK_STATUS(llmdd_swap_blocks(p, -1, &hbad, ck.cache_id, NULL, one, 1), PI);
  llmdd_host_cache_t hdev = hc;
  hdev.desc.placement = LLMDD_PLACEMENT_DEVICE; /* a host description must be HOST */
  CHECK_STATUS(llmdd_swap_blocks(p, -1, &hdev, ck.cache_id, NULL, one, 1), PI);
  llmdd_host_cache_t hn = hc;
  hn.num_tensor_addrs = NT - 1;
  CHECK_STATUS(llmdd_swap_blocks(p, -1, &hn, ck.cache_id, NULL, one, 1), PI);
  CHECK_MEM(&K, &EK, "swap errors: device side untouched");
  CHECK_MEM(&H, &EH, "swap errors: host side untouched");
  CHECK(t_all(K2.p[0], K2.T, 0));

  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
  t_mem *bufs[] = {&A, &B, &EB, &C2, &K, &EK, &H, &EH, &K2};
  for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) t_mem_free(bufs[i]);
  return t_finish("test_copy_swap");
}
