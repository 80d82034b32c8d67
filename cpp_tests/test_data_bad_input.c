/* Bad inputs of the data-plane calls: each returns the documented status and
 * moves no byte (the decoder's destination memory stays all-zero). Covers
 * pull_blocks / pull_cache argument, key, kind, layer-range and block-size
 * errors over both transports, registration validation, and
 * remap_registered_memory validation. */
#include "t_dataplane.h"

#define P_ID 31
#define D_ID 32
#define NT 8
#define BLK 4096
#define S 8192

static void p_setup(t_peer *self, llmdd_instance_t *p) {
  static t_mem blocks, batch, small;
  blocks = t_mem_new(NT, 64ull * BLK);
  batch = t_mem_new(NT, 4ull * S);
  small = t_mem_new(NT, 16ull * 2048);
  t_mem_fill(&blocks, 41);
  t_mem_fill(&batch, 42);
  t_mem_fill(&small, 43);
  llmdd_cache_desc_t kd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 64, BLK);
  llmdd_cache_desc_t bd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 4, S);
  llmdd_cache_desc_t sd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 16, 2048);
  llmdd_cache_key_t k0 = llmdd_blocks_cache_key(P_ID, 0), k3 = llmdd_blocks_cache_key(P_ID, 3);
  llmdd_cache_key_t rk = llmdd_cache_key(P_ID, 401, 0, LLMDD_ID_UNSET);
  llmdd_cache_t c;
  REQUIRE_OK(llmdd_register_blocks_cache(p, &kd, blocks.addrs, NT, &k0, -1, &c));
  t_send(self->ch, (uint64_t)c.cache_id);
  REQUIRE_OK(llmdd_register_cache(p, &bd, batch.addrs, NT, &rk, 1, -1, &c));
  int64_t batch_id = c.cache_id;
  /* Registered before the decoder may link (the acl backend refuses
   * remote-accessible memory registered while links exist). */
  REQUIRE_OK(llmdd_register_blocks_cache(p, &sd, small.addrs, NT, &k3, -1, &c));
  t_send(self->ch, (uint64_t)batch_id);
}

static t_mem g_blk, g_bat;

static int all_zero(void) {
  for (uint32_t t = 0; t < NT; t++)
    if (!t_all(g_blk.p[t], g_blk.T, 0) || !t_all(g_bat.p[t], g_bat.T, 0)) return 0;
  return 1;
}

#define BAD(expr, st)                \
  do {                               \
    CHECK_STATUS(expr, st);          \
    CHECK(all_zero());               \
  } while (0)

static void registration_errors(llmdd_instance_t *d) {
  t_mem m = t_mem_new(4, 4096);
  llmdd_cache_t c;
  const uint32_t PI = LLMDD_PARAM_INVALID;
  llmdd_cache_desc_t ok = t_desc2(LLMDD_PLACEMENT_DEVICE, 4, 4, 1024);
  CHECK_STATUS(llmdd_register_cache(d, &ok, m.addrs, 3, NULL, 0, -1, &c), PI);
  CHECK_STATUS(llmdd_register_blocks_cache(d, &ok, m.addrs, 5, NULL, -1, &c), PI);
  CHECK_STATUS(llmdd_register_cache(d, &ok, m.addrs, 0, NULL, 0, -1, &c), PI);
  uint64_t zero_addrs[4] = {m.addrs[0], 0, m.addrs[2], m.addrs[3]};
  CHECK_STATUS(llmdd_register_cache(d, &ok, zero_addrs, 4, NULL, 0, -1, &c), PI);
  CHECK_STATUS(llmdd_register_blocks_cache(d, &ok, zero_addrs, 4, NULL, -1, &c), PI);
  llmdd_cache_desc_t b = ok;
  b.shape[1] = 0;
  CHECK_STATUS(llmdd_register_cache(d, &b, m.addrs, 4, NULL, 0, -1, &c), PI);
  b.shape[1] = -1;
  CHECK_STATUS(llmdd_register_cache(d, &b, m.addrs, 4, NULL, 0, -1, &c), PI);
  b = ok;
  b.shape[0] = -4;
  CHECK_STATUS(llmdd_register_blocks_cache(d, &b, m.addrs, 4, NULL, -1, &c), PI);
  b = ok;
  b.num_dims = 0;
  CHECK_STATUS(llmdd_register_cache(d, &b, m.addrs, 4, NULL, 0, -1, &c), PI);
  b = ok;
  b.num_dims = 32;
  for (int i = 2; i < 32; i++) b.shape[i] = 1;
  CHECK_STATUS(llmdd_register_cache(d, &b, m.addrs, 4, NULL, 0, -1, &c), PI);
  b = ok;
  b.data_type = 99;
  CHECK_STATUS(llmdd_register_cache(d, &b, m.addrs, 4, NULL, 0, -1, &c), PI);
  b = ok;
  b.placement = 2;
  CHECK_STATUS(llmdd_register_cache(d, &b, m.addrs, 4, NULL, 0, -1, &c), PI);
  CHECK_STATUS(llmdd_register_cache(d, &ok, m.addrs, 4, NULL, 0, 2, &c), PI);
  CHECK_STATUS(llmdd_register_blocks_cache(d, &ok, m.addrs, 4, NULL, 2, &c), PI);
  b = ok;
  b.num_tensors = 0;
  CHECK_STATUS(llmdd_register_cache(d, &b, m.addrs, 0, NULL, 0, -1, &c), PI);
  /* after all that, the memory is still registrable */
  CHECK_OK(llmdd_register_cache(d, &ok, m.addrs, 4, NULL, 0, -1, &c));
  CHECK_OK(llmdd_unregister_cache(d, c.cache_id));
  t_mem_free(&m);

  llmdd_mem_info_t mi_ok = {.mem_type = LLMDD_MEM_TYPE_DEVICE, .addr = 0x10000, .size = 4096};
  llmdd_mem_info_t mi_host = {.mem_type = LLMDD_MEM_TYPE_HOST, .addr = 0x10000, .size = 4096};
  llmdd_mem_info_t mi_a0 = {.mem_type = LLMDD_MEM_TYPE_DEVICE, .addr = 0, .size = 4096};
  llmdd_mem_info_t mi_s0 = {.mem_type = LLMDD_MEM_TYPE_DEVICE, .addr = 0x10000, .size = 0};
  llmdd_mem_info_t mi_t7 = {.mem_type = 7, .addr = 0x10000, .size = 4096};
  llmdd_mem_info_t two_bad[2] = {mi_ok, mi_s0};
  CHECK_STATUS(llmdd_remap_registered_memory(d, &mi_host, 1), PI);
  CHECK_STATUS(llmdd_remap_registered_memory(d, &mi_a0, 1), PI);
  CHECK_STATUS(llmdd_remap_registered_memory(d, &mi_s0, 1), PI);
  CHECK_STATUS(llmdd_remap_registered_memory(d, &mi_t7, 1), PI);
  CHECK_STATUS(llmdd_remap_registered_memory(d, two_bad, 2), PI);
  CHECK_STATUS(llmdd_remap_registered_memory(d, &mi_ok, 1), LLMDD_FEATURE_NOT_ENABLED);
}

static void run(int tcp) {
  t_peer peer;
  memset(&peer, 0, sizeof peer);
  peer.cluster = P_ID;
  peer.port = t_free_port();
  peer.opts = t_opts_make(tcp, 0, NULL, NULL);
  peer.setup = p_setup;
  t_chan_pair ch = t_chan_new();
  pid_t pid = t_peer_start(&peer, &ch);
  int64_t pk = (int64_t)t_recv(ch.parent, 30000);
  int64_t pb = (int64_t)t_recv(ch.parent, 30000);

  llmdd_instance_t *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID, &d));
  REQUIRE_OK(t_init(d, NULL, peer.opts.o, peer.opts.n));
  if (tcp == 0) registration_errors(d);
  g_blk = t_mem_new(NT, 32ull * BLK);
  g_bat = t_mem_new(NT, 2ull * S);
  llmdd_cache_desc_t kd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 32, BLK);
  llmdd_cache_desc_t bd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 2, S);
  llmdd_cache_t kc, bc;
  REQUIRE_OK(llmdd_register_blocks_cache(d, &kd, g_blk.addrs, NT, NULL, -1, &kc));
  REQUIRE_OK(llmdd_register_cache(d, &bd, g_bat.addrs, NT, NULL, 0, -1, &bc));
  const int64_t K = kc.cache_id, B = bc.cache_id;

  /* before linking: not linked */
  llmdd_cache_key_t bk = llmdd_blocks_cache_key(P_ID, 0);
  llmdd_cache_key_t rk = llmdd_cache_key(P_ID, 401, 0, LLMDD_ID_UNSET);
  uint64_t s2[2] = {1, 2}, d2[2] = {3, 4}, s3[3] = {1, 2, 3}, d3[3] = {3, 4, 5};
  const uint32_t PI = LLMDD_PARAM_INVALID, NE = LLMDD_KV_CACHE_NOT_EXIST, NL = LLMDD_NOT_YET_LINK;
  BAD(llmdd_pull_blocks(d, &bk, K, s2, 2, d2, 2, NULL), NL);
  BAD(llmdd_pull_cache(d, &rk, B, 0, -1, NULL), NL);
  REQUIRE_OK(t_link(d, P_ID, peer.port));

  /* pull_blocks */
  uint64_t big_src[2] = {1, 64}, big_dst[2] = {3, 32};
  BAD(llmdd_pull_blocks(d, &bk, K, big_src, 2, d2, 2, NULL), PI);
  BAD(llmdd_pull_blocks(d, &bk, K, s2, 2, big_dst, 2, NULL), PI);
  BAD(llmdd_pull_blocks(d, &bk, K, s2, 2, d3, 3, NULL), PI);
  BAD(llmdd_pull_blocks(d, &bk, K, s3, 3, d2, 2, NULL), PI);
  BAD(llmdd_pull_blocks(d, &bk, K, NULL, 0, NULL, 0, NULL), PI);
  BAD(llmdd_pull_blocks(d, &bk, K, s2, 2, NULL, 0, NULL), PI);
  BAD(llmdd_pull_blocks(d, &bk, 999, s2, 2, d2, 2, NULL), NE);
  llmdd_cache_key_t m7 = llmdd_blocks_cache_key(P_ID, 7);
  BAD(llmdd_pull_blocks(d, &m7, K, s2, 2, d2, 2, NULL), NE);
  llmdd_cache_key_t id999 = llmdd_cache_key_by_id(P_ID, 999, 0);
  BAD(llmdd_pull_blocks(d, &id999, K, s2, 2, d2, 2, NULL), NE);
  llmdd_cache_key_t own = llmdd_blocks_cache_key(D_ID, 0);
  BAD(llmdd_pull_blocks(d, &own, K, s2, 2, d2, 2, NULL), PI);
  llmdd_cache_key_t other = llmdd_blocks_cache_key(99, 0);
  BAD(llmdd_pull_blocks(d, &other, K, s2, 2, d2, 2, NULL), NL);
  BAD(llmdd_pull_blocks(d, &bk, B, s2, 2, d2, 2, NULL), PI); /* into a batch cache */
  llmdd_layer_range_t bad_lr[] = {
      llmdd_layer_range(2, 2, 2, 2, 0), llmdd_layer_range(3, 2, 3, 2, 0), llmdd_layer_range(3, 5, 0, 2, 0),
      llmdd_layer_range(0, 2, 3, 5, 0), llmdd_layer_range(0, 2, 0, 1, 0), llmdd_layer_range(0, 1, 0, 1, 3),
      llmdd_layer_range(0, 1, 0, 1, 9), llmdd_layer_range(8, 9, 0, 1, 1), llmdd_layer_range(-1, -1, 0, 1, 0),
  };
  for (size_t i = 0; i < sizeof bad_lr / sizeof bad_lr[0]; i++) {
    int before = t_failures;
    BAD(llmdd_pull_blocks(d, &bk, K, s2, 2, d2, 2, &bad_lr[i]), PI);
    if (t_failures != before) fprintf(stderr, "  (layer range case %zu)\n", i);
  }
  llmdd_cache_key_t m3 = llmdd_blocks_cache_key(P_ID, 3); /* block size 2048 != 4096 */
  BAD(llmdd_pull_blocks(d, &m3, K, s2, 2, d2, 2, NULL), PI);
  llmdd_cache_key_t kid1 = llmdd_cache_key_by_id(P_ID, pk, 1); /* blocks need batch_index 0 */
  BAD(llmdd_pull_blocks(d, &kid1, K, s2, 2, d2, 2, NULL), PI);
  llmdd_cache_key_t bslot = llmdd_cache_key_by_id(P_ID, pb, 0);
  BAD(llmdd_pull_blocks(d, &bslot, K, NULL, 0, d3, 3, NULL), PI); /* 3 chunks of a 2-chunk slot */
  BAD(llmdd_pull_blocks(d, &rk, K, s2, 2, d2, 2, NULL), PI);      /* src_blocks with a CacheKey */
  llmdd_cache_key_t bslot9 = llmdd_cache_key_by_id(P_ID, pb, 9);
  /* a peer slot that does not exist: the header documents KV_CACHE_NOT_EXIST
   * for "the peer's key/id/slot" */
  BAD(llmdd_pull_blocks(d, &bslot9, K, NULL, 0, d2, 2, NULL), NE);

  /* pull_cache */
  BAD(llmdd_pull_cache(d, &rk, B, 2, -1, NULL), PI);
  llmdd_cache_key_t slot4 = llmdd_cache_key_by_id(P_ID, pb, 4);
  BAD(llmdd_pull_cache(d, &slot4, B, 0, -1, NULL), NE);
  BAD(llmdd_pull_cache(d, &rk, B, 0, S + 1, NULL), PI);
  BAD(llmdd_pull_cache(d, &rk, B, 0, 0, NULL), PI);
  BAD(llmdd_pull_cache(d, &rk, B, 0, -2, NULL), PI);
  BAD(llmdd_pull_cache(d, &rk, K, 0, -1, NULL), PI); /* into a blocks cache */
  BAD(llmdd_pull_cache(d, &rk, 999, 0, -1, NULL), NE);
  llmdd_cache_key_t unk = llmdd_cache_key(P_ID, 402, 0, LLMDD_ID_UNSET);
  BAD(llmdd_pull_cache(d, &unk, B, 0, -1, NULL), NE);
  llmdd_cache_key_t unk_model = llmdd_cache_key(P_ID, 401, 6, LLMDD_ID_UNSET);
  BAD(llmdd_pull_cache(d, &unk_model, B, 0, -1, NULL), NE);
  llmdd_cache_key_t none = llmdd_cache_key(P_ID, LLMDD_ID_UNSET, 0, LLMDD_ID_UNSET);
  BAD(llmdd_pull_cache(d, &none, B, 0, -1, NULL), PI);
  llmdd_cache_key_t both = llmdd_cache_key(P_ID, 401, 0, 5);
  BAD(llmdd_pull_cache(d, &both, B, 0, -1, NULL), PI);
  BAD(llmdd_pull_cache(d, &id999, B, 0, -1, NULL), NE);
  llmdd_cache_key_t own_r = llmdd_cache_key(D_ID, 401, 0, LLMDD_ID_UNSET);
  BAD(llmdd_pull_cache(d, &own_r, B, 0, -1, NULL), PI);
  llmdd_cache_key_t other_r = llmdd_cache_key(99, 401, 0, LLMDD_ID_UNSET);
  BAD(llmdd_pull_cache(d, &other_r, B, 0, -1, NULL), NL);
  BAD(llmdd_pull_cache(d, &bk, B, 0, -1, NULL), PI); /* a BlocksCacheKey */
  for (size_t i = 0; i < sizeof bad_lr / sizeof bad_lr[0]; i++) BAD(llmdd_pull_cache(d, &rk, B, 0, -1, &bad_lr[i]), PI);

  /* the key was not consumed and the data plane still works */
  CHECK_OK(llmdd_pull_cache(d, &rk, B, 1, -1, NULL));
  CHECK_OK(llmdd_pull_blocks(d, &bk, K, s2, 2, d2, 2, NULL));
  for (uint32_t t = 0; t < NT; t++) {
    CHECK(t_verify(g_bat.p[t] + S, S, 42, t, 0));
    CHECK(t_verify(g_blk.p[t] + 3 * BLK, 2 * BLK, 41, t, 1 * BLK));
  }

  CHECK_OK(t_unlink(d, P_ID, peer.port));
  t_peer_stop(ch.parent, pid);
  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(d);
  t_mem_free(&g_blk);
  t_mem_free(&g_bat);
}

int main(void) {
  for (int tcp = 0; tcp < 2; tcp++) run(tcp);
  return t_finish("test_data_bad_input");
}
