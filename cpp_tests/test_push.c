/* push_cache / push_blocks in remote-cache-accessible mode over both
 * transports: the decoder (client) pushes batch slots and blocks into the
 * prompt's caches, with layer ranges; the prompt process verifies its own
 * memory byte-exactly (including untouched bytes) against a model and reports
 * back through the pipe. Push without remote-accessible mode: PARAM_INVALID,
 * nothing written. */
#include "t_dataplane.h"

#define P_ID 21
#define D_ID 22
#define NT 8
#define S 8192
#define BLK 4096
#define PB 3  /* prompt batch */
#define PK 32 /* prompt blocks */
#define DB 2  /* decoder batch */
#define DK 16 /* decoder blocks */

typedef struct {
  const char *name;
  int blocks;         /* 0: push_cache, 1: push_blocks */
  int by_id;          /* blocks: key by id instead of BlocksCacheKey */
  uint32_t ss, ds;    /* slots (push_cache) */
  int has_lr;
  llmdd_layer_range_t lr;
  size_t k;
  uint64_t sb[6], db[6];
} push_case;

static const push_case CASES[] = {
    {"cache slot 0 -> 1", 0, 0, 0, 1, 0, {0, 0, 0, 0, 0, {0}}, 0, {0}, {0}},
    {"cache slot 1 -> 2", 0, 0, 1, 2, 0, {0, 0, 0, 0, 0, {0}}, 0, {0}, {0}},
    {"cache layers [1,3)->[2,4)", 0, 0, 1, 0, 1, {1, 3, 2, 4, 0, {0}}, 0, {0}, {0}},
    {"cache one layer [0,1)->[3,4)", 0, 0, 0, 2, 1, {0, 1, 3, 4, 0, {0}}, 0, {0}, {0}},
    {"cache explicit all", 0, 0, 1, 1, 1, {-1, -1, -1, -1, 0, {0}}, 0, {0}, {0}},
    {"blocks scattered", 1, 0, 0, 0, 0, {0, 0, 0, 0, 0, {0}}, 4, {0, 3, 15, 7}, {31, 2, 9, 10}},
    {"blocks adjacent", 1, 0, 0, 0, 0, {0, 0, 0, 0, 0, {0}}, 5, {4, 5, 6, 7, 8}, {10, 11, 12, 13, 14}},
    {"blocks by id", 1, 1, 0, 0, 0, {0, 0, 0, 0, 0, {0}}, 3, {1, 2, 9}, {0, 1, 30}},
    {"blocks layers [1,3)->[1,3)", 1, 0, 0, 0, 1, {1, 3, 1, 3, 0, {0}}, 3, {1, 2, 9}, {5, 6, 20}},
    {"blocks n=1 [3,5)->[3,5)", 1, 0, 0, 0, 1, {3, 5, 3, 5, 1, {0}}, 2, {11, 12}, {0, 31}},
};
#define NCASES (sizeof CASES / sizeof CASES[0])

static t_mem g_dsrc_batch, g_dsrc_blocks; /* decoder's source images (seeds 31/32) */

/* ---------- prompt side ---------- */
static t_mem p_batch, p_blocks, p_eb, p_ek;

static void p_setup(t_peer *self, llmdd_instance_t *p) {
  p_batch = t_mem_new(NT, (uint64_t)PB * S);
  p_blocks = t_mem_new(NT, (uint64_t)PK * BLK);
  p_eb = t_mem_new(NT, (uint64_t)PB * S);
  p_ek = t_mem_new(NT, (uint64_t)PK * BLK);
  llmdd_cache_desc_t bd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, PB, S);
  llmdd_cache_desc_t kd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, PK, BLK);
  llmdd_cache_key_t bk = llmdd_blocks_cache_key(P_ID, 0);
  llmdd_cache_t bc, kc;
  REQUIRE_OK(llmdd_register_cache(p, &bd, p_batch.addrs, NT, NULL, 0, -1, &bc));
  REQUIRE_OK(llmdd_register_blocks_cache(p, &kd, p_blocks.addrs, NT, &bk, -1, &kc));
  t_send(self->ch, (uint64_t)bc.cache_id);
  t_send(self->ch, (uint64_t)kc.cache_id);
}

/* cmd 1: zero memory; cmd 100+i: verify case i; cmd 200: verify all zero. */
static uint64_t p_cmd(t_peer *self, llmdd_instance_t *p, uint64_t c) {
  (void)self;
  (void)p;
  t_mem_zero(&p_eb);
  t_mem_zero(&p_ek);
  if (c == 1) {
    t_mem_zero(&p_batch);
    t_mem_zero(&p_blocks);
    return 1;
  }
  if (c >= 100 && c < 100 + NCASES) {
    const push_case *pc = &CASES[c - 100];
    uint32_t ts[64], td[64];
    uint32_t m = t_pairs(pc->has_lr ? &pc->lr : NULL, NT, NT, ts, td);
    for (uint32_t i = 0; i < m; i++) {
      if (!pc->blocks)
        t_mem_copy(&p_eb, td[i], (uint64_t)pc->ds * S, &g_dsrc_batch, ts[i], (uint64_t)pc->ss * S, S);
      else
        for (size_t j = 0; j < pc->k; j++)
          t_mem_copy(&p_ek, td[i], pc->db[j] * BLK, &g_dsrc_blocks, ts[i], pc->sb[j] * BLK, BLK);
    }
  }
  int ok = 1;
  char label[128];
  snprintf(label, sizeof label, "prompt verify cmd %llu batch", (unsigned long long)c);
  ok &= t_mem_eq_(&p_batch, &p_eb, label, __FILE__, __LINE__);
  snprintf(label, sizeof label, "prompt verify cmd %llu blocks", (unsigned long long)c);
  ok &= t_mem_eq_(&p_blocks, &p_ek, label, __FILE__, __LINE__);
  return (uint64_t)ok;
}

/* ---------- decoder side ---------- */
static void run(int tcp, int remote_acc) {
  char tr[64];
  snprintf(tr, sizeof tr, "%s%s", t_tr_name(tcp), remote_acc ? "" : "/no-remote-access");
  t_peer peer;
  memset(&peer, 0, sizeof peer);
  peer.cluster = P_ID;
  peer.port = t_free_port();
  peer.opts = t_opts_make(tcp, remote_acc, NULL, NULL);
  peer.setup = p_setup;
  peer.cmd = p_cmd;
  t_chan_pair ch = t_chan_new();
  pid_t pid = t_peer_start(&peer, &ch);
  int64_t pb_id = (int64_t)t_recv(ch.parent, 30000);
  int64_t pk_id = (int64_t)t_recv(ch.parent, 30000);

  llmdd_instance_t *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID, &d));
  REQUIRE_OK(t_init(d, NULL, peer.opts.o, peer.opts.n));
  llmdd_cache_desc_t bd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, DB, S);
  llmdd_cache_desc_t kd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, DK, BLK);
  llmdd_cache_t bc, kc;
  REQUIRE_OK(llmdd_register_cache(d, &bd, g_dsrc_batch.addrs, NT, NULL, 0, -1, &bc));
  REQUIRE_OK(llmdd_register_blocks_cache(d, &kd, g_dsrc_blocks.addrs, NT, NULL, -1, &kc));
  REQUIRE_OK(t_link(d, P_ID, peer.port));

  if (remote_acc) {
    for (size_t i = 0; i < NCASES; i++) {
      const push_case *pc = &CASES[i];
      CHECK(t_peer_call(ch.parent, 1) == 1);
      const llmdd_layer_range_t *lr = pc->has_lr ? &pc->lr : NULL;
      uint32_t s;
      if (!pc->blocks) {
        llmdd_cache_key_t k = llmdd_cache_key_by_id(P_ID, pb_id, pc->ds);
        s = llmdd_push_cache(d, &k, bc.cache_id, pc->ss, -1, lr);
      } else {
        llmdd_cache_key_t k = pc->by_id ? llmdd_cache_key_by_id(P_ID, pk_id, 0) : llmdd_blocks_cache_key(P_ID, 0);
        s = llmdd_push_blocks(d, &k, kc.cache_id, pc->sb, pc->k, pc->db, pc->k, lr);
      }
      if (s != LLMDD_SUCCESS)
        fprintf(stderr, "[%s/%s] push: %s (%s)\n", tr, pc->name, llmdd_status_name(s), llmdd_last_error_message());
      CHECK(s == LLMDD_SUCCESS);
      uint64_t ok = t_peer_call(ch.parent, 100 + i);
      if (!ok) fprintf(stderr, "[%s/%s] prompt memory mismatch\n", tr, pc->name);
      CHECK(ok == 1);
    }
    /* pull back in remote-accessible mode by cache id: push slot 0 -> 1, then
     * pull prompt slot 1 into decoder slot 1 and compare with slot 0. */
    CHECK(t_peer_call(ch.parent, 1) == 1);
    llmdd_cache_key_t k1 = llmdd_cache_key_by_id(P_ID, pb_id, 1);
    CHECK_OK(llmdd_push_cache(d, &k1, bc.cache_id, 0, -1, NULL));
    CHECK_OK(llmdd_pull_cache(d, &k1, bc.cache_id, 1, -1, NULL));
    for (uint32_t t = 0; t < NT; t++) CHECK(memcmp(g_dsrc_batch.p[t] + S, g_dsrc_batch.p[t], S) == 0);
    t_mem_fill(&g_dsrc_batch, 31);
  } else {
    CHECK(t_peer_call(ch.parent, 1) == 1);
    llmdd_cache_key_t k = llmdd_cache_key_by_id(P_ID, pb_id, 0);
    CHECK_STATUS(llmdd_push_cache(d, &k, bc.cache_id, 0, -1, NULL), LLMDD_PARAM_INVALID);
    llmdd_cache_key_t bk = llmdd_blocks_cache_key(P_ID, 0);
    uint64_t sb[2] = {0, 1}, db[2] = {0, 1};
    CHECK_STATUS(llmdd_push_blocks(d, &bk, kc.cache_id, sb, 2, db, 2, NULL), LLMDD_PARAM_INVALID);
    llmdd_cache_key_t kid = llmdd_cache_key_by_id(P_ID, pk_id, 0);
    CHECK_STATUS(llmdd_push_blocks(d, &kid, kc.cache_id, sb, 2, db, 2, NULL), LLMDD_PARAM_INVALID);
    CHECK(t_peer_call(ch.parent, 200) == 1);
  }

  CHECK_OK(t_unlink(d, P_ID, peer.port));
  t_peer_stop(ch.parent, pid);
  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(d);
}

int main(void) {
  g_dsrc_batch = t_mem_new(NT, (uint64_t)DB * S);
  g_dsrc_blocks = t_mem_new(NT, (uint64_t)DK * BLK);
  t_mem_fill(&g_dsrc_batch, 31);
  t_mem_fill(&g_dsrc_blocks, 32);
  for (int tcp = 0; tcp < 2; tcp++) run(tcp, 1);
  run(1, 0);
  run(0, 0);
  return t_finish("test_push");
}
