/* pull_blocks, byte-exact over both transports: blocks -> blocks by
 * BlocksCacheKey and by cache id, all layers / layer ranges / one layer /
 * tensor_num_per_layer 1 and 4, adjacent and scattered block lists, and
 * contiguous -> blocks (a batch slot cut into block-sized chunks, short tail).
 * Every case compares the whole destination with a model, so bytes outside
 * the target blocks/tensors must stay untouched. */
#include "t_dataplane.h"

#define P_ID 1
#define D_ID 2
#define NT 8
#define BLK 4096
#define P_BLOCKS 64
#define D_BLOCKS 32
#define SLOT 10000 /* not a multiple of BLK: 4096 + 4096 + 1808 */
#define BATCH 4

static void p_setup(t_peer *self, llmdd_instance_t *p) {
  static t_mem blocks, batch;
  blocks = t_mem_new(NT, (uint64_t)P_BLOCKS * BLK);
  batch = t_mem_new(NT, (uint64_t)BATCH * SLOT);
  t_mem_fill(&blocks, 11);
  t_mem_fill(&batch, 12);
  llmdd_cache_desc_t bd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, P_BLOCKS, BLK);
  llmdd_cache_key_t bk = llmdd_blocks_cache_key(P_ID, 0);
  llmdd_cache_t bc, cc;
  REQUIRE_OK(llmdd_register_blocks_cache(p, &bd, blocks.addrs, NT, &bk, -1, &bc));
  llmdd_cache_desc_t cd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, BATCH, SLOT);
  llmdd_cache_key_t keys[2] = {llmdd_cache_key(P_ID, LLMDD_ID_UNSET, 0, LLMDD_ID_UNSET),
                               llmdd_cache_key(P_ID, 101, 0, LLMDD_ID_UNSET)};
  REQUIRE_OK(llmdd_register_cache(p, &cd, batch.addrs, NT, keys, 2, -1, &cc));
  t_send(self->ch, (uint64_t)bc.cache_id);
  t_send(self->ch, (uint64_t)cc.cache_id);
}

static llmdd_instance_t *g_d;
static int64_t g_dst_id;
static t_mem g_act, g_exp, g_srcb, g_srcc;
static const char *g_tr;

static void bb_case(const char *what, llmdd_cache_key_t key, const uint64_t *src, const uint64_t *dst,
                    size_t k, const llmdd_layer_range_t *lr) {
  char label[128];
  snprintf(label, sizeof label, "%s/%s", g_tr, what);
  t_mem_zero(&g_act);
  t_mem_zero(&g_exp);
  uint32_t s = llmdd_pull_blocks(g_d, &key, g_dst_id, src, k, dst, k, lr);
  if (s != LLMDD_SUCCESS)
    fprintf(stderr, "[%s] pull_blocks: %s (%s)\n", label, llmdd_status_name(s), llmdd_last_error_message());
  CHECK(s == LLMDD_SUCCESS);
  uint32_t ts[64], td[64];
  uint32_t m = t_pairs(lr, NT, NT, ts, td);
  for (uint32_t i = 0; i < m; i++)
    for (size_t j = 0; j < k; j++) t_mem_copy(&g_exp, td[i], dst[j] * BLK, &g_srcb, ts[i], src[j] * BLK, BLK);
  CHECK_MEM(&g_act, &g_exp, label);
}

static void cb_case(const char *what, llmdd_cache_key_t key, uint32_t slot, const uint64_t *dst, size_t k,
                    const llmdd_layer_range_t *lr) {
  char label[128];
  snprintf(label, sizeof label, "%s/%s", g_tr, what);
  t_mem_zero(&g_act);
  t_mem_zero(&g_exp);
  uint32_t s = llmdd_pull_blocks(g_d, &key, g_dst_id, NULL, 0, dst, k, lr);
  if (s != LLMDD_SUCCESS)
    fprintf(stderr, "[%s] pull_blocks: %s (%s)\n", label, llmdd_status_name(s), llmdd_last_error_message());
  CHECK(s == LLMDD_SUCCESS);
  uint32_t ts[64], td[64];
  uint32_t m = t_pairs(lr, NT, NT, ts, td);
  for (uint32_t i = 0; i < m; i++)
    for (size_t j = 0; j < k; j++) {
      uint64_t off = j * BLK, len = SLOT - off < BLK ? SLOT - off : BLK;
      t_mem_copy(&g_exp, td[i], dst[j] * BLK, &g_srcc, ts[i], (uint64_t)slot * SLOT + off, len);
    }
  CHECK_MEM(&g_act, &g_exp, label);
}

static void run(int tcp) {
  g_tr = t_tr_name(tcp);
  t_peer peer;
  memset(&peer, 0, sizeof peer);
  peer.cluster = P_ID;
  peer.port = t_free_port();
  peer.opts = t_opts_make(tcp, 0, NULL, NULL);
  peer.setup = p_setup;
  t_chan_pair ch = t_chan_new();
  pid_t pid = t_peer_start(&peer, &ch);
  int64_t blocks_id = (int64_t)t_recv(ch.parent, 30000);
  int64_t batch_id = (int64_t)t_recv(ch.parent, 30000);
  CHECK(blocks_id == 1 && batch_id == 2);

  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID, &g_d));
  REQUIRE_OK(t_init(g_d, NULL, peer.opts.o, peer.opts.n));
  g_act = t_mem_new(NT, (uint64_t)D_BLOCKS * BLK);
  g_exp = t_mem_new(NT, (uint64_t)D_BLOCKS * BLK);
  llmdd_cache_desc_t dd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, D_BLOCKS, BLK);
  llmdd_cache_t dc;
  REQUIRE_OK(llmdd_register_blocks_cache(g_d, &dd, g_act.addrs, NT, NULL, -1, &dc));
  g_dst_id = dc.cache_id;
  REQUIRE_OK(t_link(g_d, P_ID, peer.port));

  llmdd_cache_key_t bk = llmdd_blocks_cache_key(P_ID, 0);
  uint64_t s1[] = {1, 2, 7, 63}, d1[] = {0, 5, 6, 31};
  bb_case("all-layers scattered", bk, s1, d1, 4, NULL);
  uint64_t s2[] = {10, 11, 12, 13}, d2[] = {3, 4, 5, 6};
  bb_case("all-layers adjacent run", bk, s2, d2, 4, NULL);
  uint64_t s3[] = {5, 6, 40, 41, 42}, d3[] = {9, 8, 20, 21, 30};
  bb_case("mixed runs, reversed", bk, s3, d3, 5, NULL);
  llmdd_layer_range_t all = t_lr(-1, -1, -1, -1, 0);
  bb_case("explicit all (-1)", bk, s1, d1, 4, &all);
  llmdd_layer_range_t r13 = t_lr(1, 3, 1, 3, 0);
  bb_case("layers [1,3)->[1,3)", bk, s1, d1, 4, &r13);
  llmdd_layer_range_t r24 = t_lr(2, 4, 0, 2, 0);
  bb_case("layers [2,4)->[0,2)", bk, s2, d2, 4, &r24);
  llmdd_layer_range_t r1 = t_lr(3, 4, 1, 2, 2);
  bb_case("single layer 3->1", bk, s3, d3, 5, &r1);
  llmdd_layer_range_t n1 = t_lr(5, 7, 0, 2, 1);
  bb_case("tensor_num_per_layer 1 [5,7)->[0,2)", bk, s1, d1, 4, &n1);
  llmdd_layer_range_t n4 = t_lr(1, 2, 0, 1, 4);
  bb_case("tensor_num_per_layer 4 [1,2)->[0,1)", bk, s2, d2, 4, &n4);
  uint64_t s4[] = {0}, d4[] = {31};
  bb_case("one block", bk, s4, d4, 1, NULL);
  bb_case("by cache id", llmdd_cache_key_by_id(P_ID, blocks_id, 0), s3, d3, 5, NULL);
  bb_case("by cache id, layers [0,1)->[3,4)", llmdd_cache_key_by_id(P_ID, blocks_id, 0), s1, d1, 4,
          &(llmdd_layer_range_t){0, 1, 3, 4, 0, {0}});

  uint64_t c3[] = {7, 3, 20};
  cb_case("contig->blocks slot 2 by id", llmdd_cache_key_by_id(P_ID, batch_id, 2), 2, c3, 3, NULL);
  uint64_t c2[] = {30, 31};
  cb_case("contig->blocks slot 0, 2 of 3 chunks", llmdd_cache_key_by_id(P_ID, batch_id, 0), 0, c2, 2, NULL);
  cb_case("contig->blocks by req key (slot 1)", llmdd_cache_key(P_ID, 101, 0, LLMDD_ID_UNSET), 1, c3, 3, NULL);
  cb_case("contig->blocks req key again (registered: not consumed)",
          llmdd_cache_key(P_ID, 101, 0, LLMDD_ID_UNSET), 1, c2, 2, NULL);
  cb_case("contig->blocks slot 3 layers [1,2)->[3,4)", llmdd_cache_key_by_id(P_ID, batch_id, 3), 3, c3, 3,
          &(llmdd_layer_range_t){1, 2, 3, 4, 0, {0}});

  CHECK_OK(t_unlink(g_d, P_ID, peer.port));
  t_peer_stop(ch.parent, pid);
  CHECK_OK(llmdd_finalize(g_d));
  llmdd_destroy(g_d);
  g_d = NULL;
  t_mem_free(&g_act);
  t_mem_free(&g_exp);
}

int main(void) {
  g_srcb = t_mem_new(NT, (uint64_t)P_BLOCKS * BLK);
  g_srcc = t_mem_new(NT, (uint64_t)BATCH * SLOT);
  t_mem_fill(&g_srcb, 11);
  t_mem_fill(&g_srcc, 12);
  for (int tcp = 0; tcp < 2; tcp++) run(tcp);
  t_mem_free(&g_srcb);
  t_mem_free(&g_srcc);
  return t_finish("test_pull_blocks");
}
