/* The initialisers of the structs whose zero value is not the C++ default
 * (llmdd_*_init): their fields, and that they work where a zeroed struct does
 * not (a zeroed layer range selects no layer; a zeroed description is HOST).
 * Two instances in this process on 127.0.0.1. */
#include "llmdd_test_blocks.h"

static void values(void) {
  llmdd_cache_desc_t d = llmdd_cache_desc_init();
  CHECK(d.placement == LLMDD_PLACEMENT_DEVICE);
  CHECK(d.data_type == LLMDD_DT_UNDEFINED);
  CHECK(d.num_tensors == 0 && d.num_dims == 0);
  CHECK(d.batch_dim_index == 0 && d.seq_len_dim_index == -1);
  CHECK(t_all(d.reserved, sizeof d.reserved, 0));

  llmdd_cache_t c = llmdd_cache_init();
  CHECK(c.cache_id == -1 && c.tensor_addrs == NULL && c.num_tensor_addrs == 0);
  CHECK(c.desc.placement == LLMDD_PLACEMENT_DEVICE && c.desc.seq_len_dim_index == -1);

  llmdd_host_cache_t h = llmdd_host_cache_init();
  CHECK(h.desc.placement == LLMDD_PLACEMENT_HOST && h.tensor_addrs == NULL);

  llmdd_cache_key_t k = llmdd_cache_key_init();
  CHECK(k.kind == LLMDD_KEY_CACHE_KEY);
  CHECK(k.req_id == LLMDD_ID_UNSET && k.prefix_id == LLMDD_ID_UNSET);
  CHECK(k.model_id == 0 && k.cache_id == -1 && k.batch_index == 0);

  llmdd_layer_range_t r = llmdd_layer_range_init();
  CHECK(r.src_begin == -1 && r.dst_begin == -1 && r.tensor_num_per_layer == 2);

  llmdd_transfer_config_t t = llmdd_transfer_config_init();
  CHECK(t.kind == LLMDD_TRANSFER_BY_ADDRS && t.dst_addrs == NULL && t.num_dst_addrs == 0);
  CHECK(t.layers.src_begin == -1 && t.layers.dst_begin == -1);
  CHECK(t.cache_key.prefix_id == LLMDD_ID_UNSET && t.src_batch_index == 0);
  CHECK(t_all(t.reserved, sizeof t.reserved, 0));
}

static void in_use(void) {
  llmdd_instance_t *p = NULL, *d = NULL;
  uint16_t port = t_local_pair(&p, &d);
  t_blk src, dst;
  REQUIRE_OK(t_blk_register(p, &src, 1, 1));

  /* A description from the initialiser registers as DEVICE memory. */
  llmdd_cache_desc_t desc = llmdd_cache_desc_init();
  desc.num_tensors = 2;
  desc.data_type = LLMDD_DT_UINT8;
  desc.num_dims = 2;
  desc.shape[0] = TB_BLOCKS;
  desc.shape[1] = TB_BLOCK_BYTES;
  for (int i = 0; i < 2; i++) {
    dst.buf[i] = calloc(TB_BLOCKS, TB_BLOCK_BYTES);
    dst.addrs[i] = (uint64_t)(uintptr_t)dst.buf[i];
  }
  llmdd_cache_t out = llmdd_cache_init();
  REQUIRE_OK(llmdd_register_blocks_cache(d, &desc, dst.addrs, 2, NULL, -1, &out));
  CHECK(out.cache_id > 0 && out.desc.placement == LLMDD_PLACEMENT_DEVICE);
  dst.cache = out;

  uint32_t ret = 0;
  REQUIRE_OK(t_link1(d, 1, "127.0.0.1", port, 3000, &ret));
  llmdd_cache_key_t key = llmdd_blocks_cache_key(1, 0);
  /* Zeroed: [0, 0) selects no layer. */
  llmdd_layer_range_t zero;
  memset(&zero, 0, sizeof zero);
  CHECK_STATUS(llmdd_pull_blocks(d, &key, out.cache_id, TB_SRC, 3, TB_DST, 3, &zero),
               LLMDD_PARAM_INVALID);
  /* The initialiser selects every layer, like C++ KvCacheExtParam{}. */
  llmdd_layer_range_t all = llmdd_layer_range_init();
  CHECK_OK(llmdd_pull_blocks(d, &key, out.cache_id, TB_SRC, 3, TB_DST, 3, &all));
  CHECK(t_blk_verify(&dst, 1));

  CHECK_OK(llmdd_finalize(d));
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(d);
  llmdd_destroy(p);
  t_blk_free(&src);
  t_blk_free(&dst);
}

int main(void) {
  values();
  in_use();
  return t_finish("test_struct_init");
}
