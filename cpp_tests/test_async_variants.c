/* llmdd_transfer_cache_async in every layout, over both transports:
 * blocks -> blocks, contiguous -> blocks (dst_block_memory_size, short last
 * chunk), contiguous -> contiguous; by cache key (BlocksCacheKey and
 * CacheKeyByIdAndIndex, remote-cache-accessible mode) and by raw addresses
 * (TransferConfig, request/response mode: the decoder sends its tensor
 * addresses over the pipe); layer sub-ranges with s0 != 0 and d0 != s0;
 * several configs in one task. The decoder compares its whole memory with a
 * model after each case, so untouched bytes must stay zero. */
#include "t_async.h"
#include "t_dataplane.h"

#define P_ID 63
#define D_ID 64
#define NT 8 /* 4 layers */
#define BLK 4096
#define NBLK 16
#define S1 8192 /* source batch stride */
#define S2 6144 /* second source batch stride (1.5 destination blocks) */
#define SD 8192 /* destination batch stride */

enum { SRC_BLOCKS, SRC_BATCH, SRC_BATCH2 };
enum { DST_BLOCKS, DST_BATCH };

typedef struct {
  const char *name;
  int by_key;    /* 1: BY_CACHE_KEY (remote-accessible run); 0: BY_ADDRS (request/response run) */
  int src, dst;  /* SRC_*, DST_* */
  int key_by_id; /* blocks destination named by LLMDD_KEY_ID_AND_INDEX */
  uint32_t src_bi, dst_bi;
  int ncfg;
  int32_t lr[2][4]; /* per config: src begin, end, dst begin, end (-1 = all); BY_ADDRS: the mapping */
  size_t k;
  uint64_t sblk[4], dblk[4];
  uint64_t bms;
} acase;

static const acase CASES[] = {
    {"key blocks->blocks [1,3)->[2,4)", 1, SRC_BLOCKS, DST_BLOCKS, 0, 0, 0, 1, {{1, 3, 2, 4}}, 3, {0, 3, 7}, {15, 2, 9}, 0},
    {"key-by-id blocks->blocks all, bms=block", 1, SRC_BLOCKS, DST_BLOCKS, 1, 0, 0, 1, {{-1, -1, -1, -1}}, 3, {4, 5, 6}, {10, 11, 12}, BLK},
    {"key two configs [0,1)->[1,2), [3,4)->[0,1)", 1, SRC_BLOCKS, DST_BLOCKS, 0, 0, 0, 2, {{0, 1, 1, 2}, {3, 4, 0, 1}}, 2, {1, 2}, {3, 4}, 0},
    {"key-by-id contiguous->blocks slot 1 [2,4)->[0,2)", 1, SRC_BATCH, DST_BLOCKS, 1, 1, 0, 1, {{2, 4, 0, 2}}, 2, {0}, {5, 1}, BLK},
    {"key contiguous->blocks short last chunk", 1, SRC_BATCH2, DST_BLOCKS, 0, 0, 0, 1, {{-1, -1, -1, -1}}, 2, {0}, {14, 0}, BLK},
    {"key contiguous->contiguous [1,2)->[3,4) slot 0->2", 1, SRC_BATCH, DST_BATCH, 0, 0, 2, 1, {{1, 2, 3, 4}}, 0, {0}, {0}, 0},
    {"key contiguous 6144->8192 slot 1->0, all", 1, SRC_BATCH2, DST_BATCH, 0, 1, 0, 1, {{-1, -1, -1, -1}}, 0, {0}, {0}, 0},
    {"addrs contiguous->contiguous [1,3)->[2,4) slot 1->2", 0, SRC_BATCH, DST_BATCH, 0, 1, 2, 1, {{1, 3, 2, 4}}, 0, {0}, {0}, 0},
    {"addrs blocks->blocks [0,2)->[2,4)", 0, SRC_BLOCKS, DST_BLOCKS, 0, 0, 0, 1, {{0, 2, 2, 4}}, 3, {9, 1, 2}, {0, 7, 8}, 0},
    {"addrs contiguous->blocks all, short chunk", 0, SRC_BATCH2, DST_BLOCKS, 0, 1, 0, 1, {{-1, -1, -1, -1}}, 2, {0}, {7, 3}, BLK},
    {"addrs two configs [0,1)->[3,4), [2,4)->[0,2)", 0, SRC_BLOCKS, DST_BLOCKS, 0, 0, 0, 2, {{0, 1, 3, 4}, {2, 4, 0, 2}}, 2, {11, 12}, {13, 14}, 0},
};
#define NCASES (sizeof CASES / sizeof CASES[0])

/* Source images (prompt memory; the decoder's copies build the model). */
static t_mem g_pk, g_pb, g_pb2;

static const t_mem *src_img(int src) { return src == SRC_BLOCKS ? &g_pk : src == SRC_BATCH ? &g_pb : &g_pb2; }
static uint64_t src_stride(int src) { return src == SRC_BLOCKS ? BLK : src == SRC_BATCH ? S1 : S2; }

/* Source layers [*s0, *s1) of config c and its first destination layer. */
static void cfg_layers(const acase *ac, int c, uint32_t *s0, uint32_t *s1, uint32_t *d0) {
  const int32_t *r = ac->lr[c];
  *s0 = r[0] < 0 ? 0 : (uint32_t)r[0];
  *s1 = r[0] < 0 ? NT / 2 : (uint32_t)r[1];
  *d0 = r[2] < 0 ? *s0 : (uint32_t)r[2];
}

/* ---------- decoder ---------- */
static t_mem d_k, d_b, e_k, e_b;

static void d_setup(t_peer *self, llmdd_instance_t *d) {
  d_k = t_mem_new(NT, (uint64_t)NBLK * BLK);
  d_b = t_mem_new(NT, 3ull * SD);
  e_k = t_mem_new(NT, (uint64_t)NBLK * BLK);
  e_b = t_mem_new(NT, 3ull * SD);
  t_async_dst(self, d, &d_k, NBLK, BLK, &d_b, 3, SD);
}

/* cmd 1: zero memory; cmd 100+i: compare with the model of case i. */
static uint64_t d_cmd(t_peer *self, llmdd_instance_t *d, uint64_t c) {
  (void)self;
  (void)d;
  if (c == 1) {
    t_mem_zero(&d_k);
    t_mem_zero(&d_b);
    return 1;
  }
  if (c < 100 || c >= 100 + NCASES) return 0;
  const acase *ac = &CASES[c - 100];
  t_mem_zero(&e_k);
  t_mem_zero(&e_b);
  const t_mem *src = src_img(ac->src);
  uint64_t ss = src_stride(ac->src);
  for (int ci = 0; ci < ac->ncfg; ci++) {
    uint32_t s0, s1, d0;
    cfg_layers(ac, ci, &s0, &s1, &d0);
    for (uint32_t s = s0; s < s1; s++)
      for (uint32_t k = 0; k < 2; k++) {
        uint32_t ts = 2 * s + k, td = 2 * (d0 + s - s0) + k;
        if (ac->src == SRC_BLOCKS) {
          for (size_t j = 0; j < ac->k; j++)
            t_mem_copy(&e_k, td, ac->dblk[j] * BLK, src, ts, ac->sblk[j] * BLK, BLK);
        } else if (ac->dst == DST_BLOCKS) {
          for (size_t j = 0; j < ac->k; j++) {
            uint64_t off = j * ac->bms, len = ss - off < ac->bms ? ss - off : ac->bms;
            t_mem_copy(&e_k, td, ac->dblk[j] * ac->bms, src, ts, ac->src_bi * ss + off, len);
          }
        } else {
          t_mem_copy(&e_b, td, (uint64_t)ac->dst_bi * SD, src, ts, ac->src_bi * ss, ss);
        }
      }
  }
  char label[160];
  snprintf(label, sizeof label, "%s: blocks cache", ac->name);
  int ok = t_mem_eq_(&d_k, &e_k, label, __FILE__, __LINE__);
  snprintf(label, sizeof label, "%s: batch cache", ac->name);
  ok &= t_mem_eq_(&d_b, &e_b, label, __FILE__, __LINE__);
  return (uint64_t)ok;
}

/* ---------- prompt ---------- */
static void run(int tcp, int by_key) {
  char tr[64];
  snprintf(tr, sizeof tr, "%s/%s", t_tr_name(tcp), by_key ? "by-key" : "by-addrs");
  t_peer peer;
  memset(&peer, 0, sizeof peer);
  peer.cluster = D_ID;
  peer.port = t_free_port();
  peer.opts = t_opts_make(tcp, by_key, NULL, NULL);
  peer.setup = d_setup;
  peer.cmd = d_cmd;
  t_chan_pair ch = t_chan_new();
  pid_t pid = t_peer_start(&peer, &ch);
  int64_t dk_id, db_id;
  uint64_t dk_addrs[NT], db_addrs[NT];
  t_async_recv_dst(ch.parent, NT, &dk_id, &db_id, dk_addrs, db_addrs);

  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, P_ID, &p));
  REQUIRE_OK(t_init(p, NULL, peer.opts.o, peer.opts.n));
  llmdd_cache_desc_t kd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, NBLK, BLK);
  llmdd_cache_desc_t bd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 2, S1);
  llmdd_cache_desc_t bd2 = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 2, S2);
  llmdd_cache_t kc, bc, bc2;
  REQUIRE_OK(llmdd_register_blocks_cache(p, &kd, g_pk.addrs, NT, NULL, -1, &kc));
  REQUIRE_OK(llmdd_register_cache(p, &bd, g_pb.addrs, NT, NULL, 0, -1, &bc));
  REQUIRE_OK(llmdd_register_cache(p, &bd2, g_pb2.addrs, NT, NULL, 0, -1, &bc2));
  REQUIRE_OK(t_link(p, D_ID, peer.port));

  for (size_t i = 0; i < NCASES; i++) {
    const acase *ac = &CASES[i];
    if (ac->by_key != by_key) continue;
    CHECK(t_peer_call(ch.parent, 1) == 1);
    llmdd_transfer_config_t cfg[2];
    uint64_t addrs[2][NT];
    for (int c = 0; c < ac->ncfg; c++) {
      const int32_t *r = ac->lr[c];
      if (by_key) {
        llmdd_cache_key_t key = ac->dst == DST_BATCH ? llmdd_cache_key_by_id(D_ID, db_id, ac->dst_bi)
                                : ac->key_by_id    ? llmdd_cache_key_by_id(D_ID, dk_id, 0)
                                                   : llmdd_blocks_cache_key(D_ID, 0);
        cfg[c] = t_cfg_key(key, r[0], r[1], r[2], r[3], ac->src_bi);
      } else {
        uint32_t s0, s1, d0;
        cfg_layers(ac, c, &s0, &s1, &d0);
        size_t n = 0;
        for (uint32_t s = s0; s < s1; s++)
          for (uint32_t k = 0; k < 2; k++) {
            uint32_t td = 2 * (d0 + s - s0) + k;
            addrs[c][n++] = ac->dst == DST_BLOCKS ? dk_addrs[td] : db_addrs[td] + (uint64_t)ac->dst_bi * SD;
          }
        cfg[c] = t_cfg_addrs(D_ID, addrs[c], n, r[0], r[1], ac->src_bi);
      }
    }
    int64_t src_id = ac->src == SRC_BLOCKS ? kc.cache_id : ac->src == SRC_BATCH ? bc.cache_id : bc2.cache_id;
    const uint64_t *sb = ac->src == SRC_BLOCKS ? ac->sblk : NULL;
    const uint64_t *db = ac->dst == DST_BLOCKS ? ac->dblk : NULL;
    size_t nsb = sb ? ac->k : 0, ndb = db ? ac->k : 0;
    t_gate g;
    t_gate_init(&g, 1, -1);
    llmdd_task_t *task = NULL;
    uint32_t s = llmdd_transfer_cache_async(p, src_id, t_gate_sync, &g, cfg, (size_t)ac->ncfg, sb, nsb, db, ndb,
                                            ac->bms, &task);
    if (s != LLMDD_SUCCESS)
      fprintf(stderr, "[%s/%s] transfer_cache_async: %s (%s)\n", tr, ac->name, llmdd_status_name(s),
              llmdd_last_error_message());
    CHECK(s == LLMDD_SUCCESS);
    if (s != LLMDD_SUCCESS) continue;
    CHECK_OK(llmdd_task_synchronize(task, -1));
    uint32_t res[2] = {99, 99};
    CHECK_OK(llmdd_task_get_results(task, -1, res, (size_t)ac->ncfg));
    for (int c = 0; c < ac->ncfg; c++) CHECK(res[c] == LLMDD_SUCCESS);
    llmdd_task_free(task);
    CHECK(g.bad_timeout == 0 && g.out_of_order == 0);
    t_gate_destroy(&g);
    uint64_t ok = t_peer_call(ch.parent, 100 + i);
    if (!ok) fprintf(stderr, "[%s/%s] decoder memory differs from the model\n", tr, ac->name);
    CHECK(ok == 1);
  }

  CHECK_OK(t_unlink(p, D_ID, peer.port));
  t_peer_stop(ch.parent, pid);
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
}

int main(void) {
  g_pk = t_mem_new(NT, (uint64_t)NBLK * BLK);
  g_pb = t_mem_new(NT, 2ull * S1);
  g_pb2 = t_mem_new(NT, 2ull * S2);
  t_mem_fill(&g_pk, 51);
  t_mem_fill(&g_pb, 52);
  t_mem_fill(&g_pb2, 53);
  for (int tcp = 0; tcp < 2; tcp++)
    for (int by_key = 1; by_key >= 0; by_key--) run(tcp, by_key);
  t_mem_free(&g_pk);
  t_mem_free(&g_pb);
  t_mem_free(&g_pb2);
  return t_finish("test_async_variants");
}
