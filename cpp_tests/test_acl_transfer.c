/* The acl backend end to end in two processes against the simulated Ascend
 * runtime: prompt (server) and decoder (client) on 127.0.0.1, caches in memory
 * from aclrtMalloc / aclrtMallocHost (and a device pool for allocate_cache),
 * transfers over an HCCL communicator.
 *
 * Request/response run: pull_blocks (all layers, a layer range, contiguous ->
 * blocks), pull_cache by request key with a layer range, a one-shot key of a
 * pool-allocated cache (consumed), and the placement rules of spec §4.3:
 * D->H and H->D blocks->blocks / equal-layout pull_cache work; H->D with
 * unequal layouts, H->D contiguous->blocks and H->H are FEATURE_NOT_ENABLED
 * with nothing written. Registering remote-accessible memory after the link is
 * PARAM_INVALID; local-only memory registered later is refused on that link.
 *
 * Remote-accessible run: push_blocks and push_cache (layer ranges, slots),
 * H->D push_cache works, H->D push_blocks and H->H push are refused, D->H
 * push_blocks works; the prompt's memory is then pulled back whole and
 * compared with a model, so untouched bytes are checked too.
 *
 * Both processes are on one (simulated) server, so HCCL would connect them
 * over HCCS, which reaches no host memory: the matrix runs with
 * HCCL_INTRA_ROCE_ENABLE=1 (RDMA within the server, exported to both
 * processes). A last step relinks the decoder without it: over HCCS the pulls
 * from remote HOST memory are refused (FEATURE_NOT_ENABLED) before any byte
 * moves, while DEVICE ones still work.
 *
 * The prompt finds the simulator through llmdd.AscendLibDir, the decoder
 * through LLMDD_ASCEND_LIB_DIR. */
#include "t_acl.h"

#define P_ID 61
#define D_ID 62
#define NT 4
#define BLK 4096
#define PKB 32    /* prompt blocks */
#define DKB 16    /* decoder blocks */
#define SLOT 10000 /* not a multiple of BLK: chunks 4096, 4096, 1808 */
#define NB 3      /* batch slots */
#define POOL "{\"memory_size\":1048576,\"page_shift\":12}"
#define FNE LLMDD_FEATURE_NOT_ENABLED

enum { SEED_PK = 11, SEED_PB = 12, SEED_HK = 13, SEED_HB = 14, SEED_POOL = 15, SEED_DK = 21, SEED_DB = 22 };

/* Prompt caches, in the order their ids are sent to the parent. */
enum { C_PK, C_PB, C_HK, C_HB, C_POOL, NC };

/* ---------- prompt ---------- */

static t_dev p_dev[NC];

static void p_setup(t_peer *self, llmdd_instance_t *p) {
  const uint32_t D = LLMDD_PLACEMENT_DEVICE, H = LLMDD_PLACEMENT_HOST;
  struct {
    uint32_t placement;
    int blocks;
    uint32_t seed;
  } spec[4] = {{D, 1, SEED_PK}, {D, 0, SEED_PB}, {H, 1, SEED_HK}, {H, 0, SEED_HB}};
  llmdd_cache_t c[NC];
  for (int i = 0; i < 4; i++) {
    uint64_t T = spec[i].blocks ? (uint64_t)PKB * BLK : (uint64_t)NB * SLOT;
    p_dev[i] = t_dev_new(spec[i].placement, NT, T);
    t_mem img = t_mem_new(NT, T);
    t_mem_fill(&img, spec[i].seed);
    t_dev_upload(&p_dev[i], &img);
    t_mem_free(&img);
    /* HOST memory is not remote-accessible by default: say so explicitly. */
    if (spec[i].blocks) {
      llmdd_cache_desc_t d = t_desc2(spec[i].placement, NT, PKB, BLK);
      llmdd_cache_key_t k = llmdd_blocks_cache_key(P_ID, spec[i].placement == D ? 0 : 1);
      REQUIRE_OK(llmdd_register_blocks_cache(p, &d, p_dev[i].addrs, NT, &k, 1, &c[i]));
    } else {
      llmdd_cache_desc_t d = t_desc2(spec[i].placement, NT, NB, SLOT);
      /* PB: req 101 -> slot 1; HB: req 102 -> slot 0. */
      llmdd_cache_key_t keys[2] = {llmdd_cache_key(P_ID, spec[i].placement == D ? LLMDD_ID_UNSET : 102, 0, LLMDD_ID_UNSET),
                                   llmdd_cache_key(P_ID, 101, 0, LLMDD_ID_UNSET)};
      REQUIRE_OK(llmdd_register_cache(p, &d, p_dev[i].addrs, NT, keys, spec[i].placement == D ? 2 : 1, 1, &c[i]));
    }
  }
  /* A pool-allocated cache with a one-shot key (req 201 -> slot 0). */
  llmdd_cache_desc_t ad = t_desc2(D, NT, 2, SLOT);
  llmdd_cache_key_t ak = llmdd_cache_key(P_ID, 201, 0, LLMDD_ID_UNSET);
  REQUIRE_OK(llmdd_allocate_cache(p, &ad, &ak, 1, &c[C_POOL]));
  p_dev[C_POOL] = t_dev_wrap(D, NT, 2ull * SLOT, c[C_POOL].tensor_addrs);
  t_mem img = t_mem_new(NT, 2ull * SLOT);
  t_mem_fill(&img, SEED_POOL);
  t_dev_upload(&p_dev[C_POOL], &img);
  t_mem_free(&img);
  for (int i = 0; i < NC; i++) t_send(self->ch, (uint64_t)c[i].cache_id);
}

static uint64_t p_cmd(t_peer *self, llmdd_instance_t *p, uint64_t c) {
  (void)self;
  (void)p;
  (void)c;
  return 0;
}

/* ---------- decoder ---------- */

static llmdd_instance_t *g_d;
static const char *g_run;
static uint16_t g_port;

/* Checks a call's status, printing the message on a mismatch. */
#define EXPECT(label, expr, want)                                                               \
  do {                                                                                          \
    uint32_t e_s_ = (expr);                                                                     \
    if (e_s_ != (uint32_t)(want))                                                               \
      fprintf(stderr, "[%s/%s] got %s, want %s (%s)\n", g_run, (label), llmdd_status_name(e_s_), \
              llmdd_status_name(want), llmdd_last_error_message());                             \
    CHECK(e_s_ == (uint32_t)(want));                                                            \
  } while (0)

/* Model images of the prompt's initial contents. */
static t_mem m_pk, m_pb, m_hk, m_hb, m_pool;

static void models(void) {
  m_pk = t_mem_new(NT, (uint64_t)PKB * BLK);
  m_hk = t_mem_new(NT, (uint64_t)PKB * BLK);
  m_pb = t_mem_new(NT, (uint64_t)NB * SLOT);
  m_hb = t_mem_new(NT, (uint64_t)NB * SLOT);
  m_pool = t_mem_new(NT, 2ull * SLOT);
  t_mem_fill(&m_pk, SEED_PK);
  t_mem_fill(&m_pb, SEED_PB);
  t_mem_fill(&m_hk, SEED_HK);
  t_mem_fill(&m_hb, SEED_HB);
  t_mem_fill(&m_pool, SEED_POOL);
}

typedef struct {
  t_dev dk, db, db2, hk, hb; /* pull targets (DEVICE blocks/batch, HOST blocks/batch) */
  llmdd_cache_t cdk, cdb, cdb2, chk, chb;
  t_mem exp_k, exp_b;
} dec;

static void dec_zero(dec *x) {
  t_mem z = t_mem_new(NT, x->dk.T);
  t_dev_upload(&x->dk, &z);
  t_dev_upload(&x->hk, &z);
  t_mem_free(&z);
  z = t_mem_new(NT, x->db.T);
  t_dev_upload(&x->db, &z);
  t_dev_upload(&x->hb, &z);
  t_mem_free(&z);
  t_mem_zero(&x->exp_k);
  t_mem_zero(&x->exp_b);
}

static void pull_run(dec *x, const int64_t *pid) {
  g_run = "pull";
  const uint64_t s1[] = {1, 2, 31}, d1[] = {0, 5, 15};
  llmdd_cache_key_t pk = llmdd_blocks_cache_key(P_ID, 0), hk = llmdd_blocks_cache_key(P_ID, 1);

  /* D->D blocks, all layers. */
  dec_zero(x);
  EXPECT("D->D blocks", llmdd_pull_blocks(g_d, &pk, x->cdk.cache_id, s1, 3, d1, 3, NULL), LLMDD_SUCCESS);
  for (uint32_t t = 0; t < NT; t++)
    for (int j = 0; j < 3; j++) t_mem_copy(&x->exp_k, t, d1[j] * BLK, &m_pk, t, s1[j] * BLK, BLK);
  CHECK_DEV(&x->dk, &x->exp_k, "pull D->D blocks");

  /* D->D blocks, layer 1 -> layer 0. */
  dec_zero(x);
  llmdd_layer_range_t l10 = t_lr(1, 2, 0, 1, 0);
  EXPECT("D->D blocks layers", llmdd_pull_blocks(g_d, &pk, x->cdk.cache_id, s1, 3, d1, 3, &l10), LLMDD_SUCCESS);
  for (uint32_t i = 0; i < 2; i++)
    for (int j = 0; j < 3; j++) t_mem_copy(&x->exp_k, i, d1[j] * BLK, &m_pk, 2 + i, s1[j] * BLK, BLK);
  CHECK_DEV(&x->dk, &x->exp_k, "pull D->D blocks layer 1 -> 0");

  /* D->D contiguous -> blocks: slot 2 of PB cut into 3 chunks. */
  dec_zero(x);
  const uint64_t c3[] = {3, 4, 7};
  llmdd_cache_key_t pb2 = llmdd_cache_key_by_id(P_ID, pid[C_PB], 2);
  EXPECT("D->D contig->blocks", llmdd_pull_blocks(g_d, &pb2, x->cdk.cache_id, NULL, 0, c3, 3, NULL), LLMDD_SUCCESS);
  for (uint32_t t = 0; t < NT; t++)
    for (uint64_t j = 0; j < 3; j++) {
      uint64_t off = j * BLK, len = SLOT - off < BLK ? SLOT - off : BLK;
      t_mem_copy(&x->exp_k, t, c3[j] * BLK, &m_pb, t, 2ull * SLOT + off, len);
    }
  CHECK_DEV(&x->dk, &x->exp_k, "pull D->D contiguous -> blocks");

  /* D->D pull_cache by request key (slot 1), layer 0 -> layer 1, into slot 0. */
  dec_zero(x);
  llmdd_cache_key_t r101 = llmdd_cache_key(P_ID, 101, 0, LLMDD_ID_UNSET);
  llmdd_layer_range_t l01 = t_lr(0, 1, 1, 2, 0);
  EXPECT("D->D cache", llmdd_pull_cache(g_d, &r101, x->cdb.cache_id, 0, -1, &l01), LLMDD_SUCCESS);
  for (uint32_t i = 0; i < 2; i++) t_mem_copy(&x->exp_b, 2 + i, 0, &m_pb, i, SLOT, SLOT);
  CHECK_DEV(&x->db, &x->exp_b, "pull_cache D->D req key, layers");

  /* One-shot key of a pool-allocated cache: pulled once, then gone. */
  dec_zero(x);
  llmdd_cache_key_t r201 = llmdd_cache_key(P_ID, 201, 0, LLMDD_ID_UNSET);
  EXPECT("pool key", llmdd_pull_cache(g_d, &r201, x->cdb.cache_id, 2, -1, NULL), LLMDD_SUCCESS);
  for (uint32_t t = 0; t < NT; t++) t_mem_copy(&x->exp_b, t, 2ull * SLOT, &m_pool, t, 0, SLOT);
  CHECK_DEV(&x->db, &x->exp_b, "pull_cache from the device pool");
  EXPECT("pool key consumed", llmdd_pull_cache(g_d, &r201, x->cdb.cache_id, 2, -1, NULL), LLMDD_KV_CACHE_NOT_EXIST);

  /* D->H blocks. */
  dec_zero(x);
  EXPECT("D->H blocks", llmdd_pull_blocks(g_d, &pk, x->chk.cache_id, s1, 3, d1, 3, NULL), LLMDD_SUCCESS);
  for (uint32_t t = 0; t < NT; t++)
    for (int j = 0; j < 3; j++) t_mem_copy(&x->exp_k, t, d1[j] * BLK, &m_pk, t, s1[j] * BLK, BLK);
  CHECK_DEV(&x->hk, &x->exp_k, "pull D->H blocks");

  /* H->D blocks -> blocks. */
  dec_zero(x);
  EXPECT("H->D blocks", llmdd_pull_blocks(g_d, &hk, x->cdk.cache_id, s1, 3, d1, 3, NULL), LLMDD_SUCCESS);
  for (uint32_t t = 0; t < NT; t++)
    for (int j = 0; j < 3; j++) t_mem_copy(&x->exp_k, t, d1[j] * BLK, &m_hk, t, s1[j] * BLK, BLK);
  CHECK_DEV(&x->dk, &x->exp_k, "pull H->D blocks");

  /* H->D pull_cache, equal layouts (req 102 -> HB slot 0). */
  dec_zero(x);
  llmdd_cache_key_t r102 = llmdd_cache_key(P_ID, 102, 0, LLMDD_ID_UNSET);
  EXPECT("H->D cache equal", llmdd_pull_cache(g_d, &r102, x->cdb.cache_id, 1, -1, NULL), LLMDD_SUCCESS);
  for (uint32_t t = 0; t < NT; t++) t_mem_copy(&x->exp_b, t, SLOT, &m_hb, t, 0, SLOT);
  CHECK_DEV(&x->db, &x->exp_b, "pull_cache H->D equal layouts");

  /* Refused combinations write nothing. */
  dec_zero(x);
  EXPECT("H->D cache unequal", llmdd_pull_cache(g_d, &r102, x->cdb2.cache_id, 0, -1, NULL), FNE);
  CHECK(t_msg_has("equal cache layouts"));
  llmdd_cache_key_t hb0 = llmdd_cache_key_by_id(P_ID, pid[C_HB], 0);
  EXPECT("H->D contig->blocks", llmdd_pull_blocks(g_d, &hb0, x->cdk.cache_id, NULL, 0, c3, 3, NULL), FNE);
  EXPECT("H->H blocks", llmdd_pull_blocks(g_d, &hk, x->chk.cache_id, s1, 3, d1, 3, NULL), FNE);
  CHECK(t_msg_has("HOST to HOST"));
  EXPECT("H->H cache", llmdd_pull_cache(g_d, &r102, x->chb.cache_id, 0, -1, NULL), FNE);
  CHECK_DEV(&x->dk, &x->exp_k, "refused pulls wrote nothing (device blocks)");
  CHECK_DEV(&x->hk, &x->exp_k, "refused pulls wrote nothing (host blocks)");
  CHECK_DEV(&x->hb, &x->exp_b, "refused pulls wrote nothing (host batch)");

  /* The same link over HCCS (this side: no HCCL_INTRA_ROCE_ENABLE): remote
   * HOST memory is refused, remote DEVICE memory still moves. */
  unsetenv("HCCL_INTRA_ROCE_ENABLE");
  CHECK_OK(t_unlink(g_d, P_ID, g_port));
  REQUIRE_OK(t_link(g_d, P_ID, g_port));
  dec_zero(x);
  EXPECT("HCCS H->D blocks", llmdd_pull_blocks(g_d, &hk, x->cdk.cache_id, s1, 3, d1, 3, NULL), FNE);
  CHECK(t_msg_has("HCCS"));
  CHECK_DEV(&x->dk, &x->exp_k, "a refused HCCS pull wrote nothing");
  EXPECT("HCCS D->D blocks", llmdd_pull_blocks(g_d, &pk, x->cdk.cache_id, s1, 3, d1, 3, NULL), LLMDD_SUCCESS);
  for (uint32_t t = 0; t < NT; t++)
    for (int j = 0; j < 3; j++) t_mem_copy(&x->exp_k, t, d1[j] * BLK, &m_pk, t, s1[j] * BLK, BLK);
  CHECK_DEV(&x->dk, &x->exp_k, "pull D->D blocks over HCCS");
  setenv("HCCL_INTRA_ROCE_ENABLE", "1", 1);

  /* Registration after the link: remote-accessible refused, local-only
   * accepted but not usable on this link. */
  t_dev late = t_dev_new(LLMDD_PLACEMENT_DEVICE, NT, (uint64_t)DKB * BLK);
  llmdd_cache_desc_t kd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, DKB, BLK);
  llmdd_cache_t lc;
  EXPECT("late remote-accessible", llmdd_register_blocks_cache(g_d, &kd, late.addrs, NT, NULL, -1, &lc),
         LLMDD_PARAM_INVALID);
  EXPECT("late local-only", llmdd_register_blocks_cache(g_d, &kd, late.addrs, NT, NULL, 0, &lc), LLMDD_SUCCESS);
  EXPECT("pull into late cache", llmdd_pull_blocks(g_d, &pk, lc.cache_id, s1, 3, d1, 3, NULL),
         LLMDD_PARAM_INVALID);
  CHECK(t_msg_has("registered after the link"));
  t_dev_free(&late);
}

/* Mirrors of the prompt's caches in decoder device memory, for pulling the
 * whole prompt state back after the pushes. */
typedef struct {
  t_dev k, hk, b;
  llmdd_cache_t ck, chk, cb;
} mirror;

static void push_run(dec *x, mirror *m, const int64_t *pid) {
  g_run = "push";
  t_mem sk = t_mem_new(NT, x->dk.T), sb = t_mem_new(NT, x->db.T);
  t_mem_fill(&sk, SEED_DK);
  t_mem_fill(&sb, SEED_DB);
  llmdd_cache_key_t pk = llmdd_blocks_cache_key(P_ID, 0);
  llmdd_cache_key_t hk_id = llmdd_cache_key_by_id(P_ID, pid[C_HK], 0);
  const uint64_t s1[] = {0, 3, 15}, d1[] = {31, 2, 9};

  /* D->D push_blocks, layer 1 -> 1. */
  llmdd_layer_range_t l11 = t_lr(1, 2, 1, 2, 0);
  EXPECT("D->D push_blocks", llmdd_push_blocks(g_d, &pk, x->cdk.cache_id, s1, 3, d1, 3, &l11), LLMDD_SUCCESS);
  for (uint32_t t = 2; t < 4; t++)
    for (int j = 0; j < 3; j++) t_mem_copy(&m_pk, t, d1[j] * BLK, &sk, t, s1[j] * BLK, BLK);

  /* D->D push_cache slot 1 -> slot 2, all layers. */
  llmdd_cache_key_t pb2 = llmdd_cache_key_by_id(P_ID, pid[C_PB], 2);
  EXPECT("D->D push_cache", llmdd_push_cache(g_d, &pb2, x->cdb.cache_id, 1, -1, NULL), LLMDD_SUCCESS);
  for (uint32_t t = 0; t < NT; t++) t_mem_copy(&m_pb, t, 2ull * SLOT, &sb, t, SLOT, SLOT);

  /* H->D push_cache (contiguous -> contiguous) works: HOST slot 0 -> PB slot 0, layer 0 -> 1. */
  llmdd_cache_key_t pb0 = llmdd_cache_key_by_id(P_ID, pid[C_PB], 0);
  llmdd_layer_range_t l01 = t_lr(0, 1, 1, 2, 0);
  EXPECT("H->D push_cache", llmdd_push_cache(g_d, &pb0, x->chb.cache_id, 0, -1, &l01), LLMDD_SUCCESS);
  for (uint32_t i = 0; i < 2; i++) t_mem_copy(&m_pb, 2 + i, 0, &sb, i, 0, SLOT);

  /* D->H push_blocks works. */
  EXPECT("D->H push_blocks", llmdd_push_blocks(g_d, &hk_id, x->cdk.cache_id, s1, 3, d1, 3, NULL), LLMDD_SUCCESS);
  for (uint32_t t = 0; t < NT; t++)
    for (int j = 0; j < 3; j++) t_mem_copy(&m_hk, t, d1[j] * BLK, &sk, t, s1[j] * BLK, BLK);

  /* Refused: H->D push_blocks, H->H push_cache and push_blocks. */
  EXPECT("H->D push_blocks", llmdd_push_blocks(g_d, &pk, x->chk.cache_id, s1, 3, d1, 3, NULL), FNE);
  CHECK(t_msg_has("contiguous to contiguous"));
  llmdd_cache_key_t hb0 = llmdd_cache_key_by_id(P_ID, pid[C_HB], 0);
  EXPECT("H->H push_cache", llmdd_push_cache(g_d, &hb0, x->chb.cache_id, 0, -1, NULL), FNE);
  EXPECT("H->H push_blocks", llmdd_push_blocks(g_d, &hk_id, x->chk.cache_id, s1, 3, d1, 3, NULL), FNE);

  /* Pull the prompt's caches back whole (remote-accessible pulls by id and
   * blocks key) and compare with the models: pushed bytes landed, nothing else moved. */
  uint64_t all[PKB];
  for (uint64_t j = 0; j < PKB; j++) all[j] = j;
  EXPECT("pull back PK", llmdd_pull_blocks(g_d, &pk, m->ck.cache_id, all, PKB, all, PKB, NULL), LLMDD_SUCCESS);
  CHECK_DEV(&m->k, &m_pk, "prompt device blocks after the pushes");
  EXPECT("pull back HK", llmdd_pull_blocks(g_d, &hk_id, m->chk.cache_id, all, PKB, all, PKB, NULL), LLMDD_SUCCESS);
  CHECK_DEV(&m->hk, &m_hk, "prompt host blocks after the pushes");
  for (uint32_t slot = 0; slot < NB; slot++) {
    llmdd_cache_key_t k = llmdd_cache_key_by_id(P_ID, pid[C_PB], slot);
    EXPECT("pull back PB", llmdd_pull_cache(g_d, &k, m->cb.cache_id, slot, -1, NULL), LLMDD_SUCCESS);
  }
  CHECK_DEV(&m->b, &m_pb, "prompt device batch after the pushes");
  t_mem_free(&sk);
  t_mem_free(&sb);
}

static void run(int remote_acc) {
  t_peer peer;
  memset(&peer, 0, sizeof peer);
  peer.cluster = P_ID;
  peer.port = t_free_port();
  g_port = peer.port;
  peer.opts = t_acl_opts(0, remote_acc, POOL, NULL);
  peer.setup = p_setup;
  peer.cmd = p_cmd;
  t_chan_pair ch = t_chan_new();
  pid_t pid = t_peer_start(&peer, &ch);
  int64_t ids[NC];
  for (int i = 0; i < NC; i++) ids[i] = (int64_t)t_recv(ch.parent, 30000);

  setenv("LLMDD_ASCEND_LIB_DIR", LLMDD_SIM_DIR, 1);
  t_opts o = t_acl_opts(1, remote_acc, NULL, NULL);
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID, &g_d));
  REQUIRE_OK(t_init(g_d, NULL, o.o, o.n));
  CHECK(t_backend(g_d) == LLMDD_BACKEND_ACL);
  unsetenv("LLMDD_ASCEND_LIB_DIR");

  models();
  dec x;
  memset(&x, 0, sizeof x);
  const uint32_t D = LLMDD_PLACEMENT_DEVICE, H = LLMDD_PLACEMENT_HOST;
  x.dk = t_dev_new(D, NT, (uint64_t)DKB * BLK);
  x.hk = t_dev_new(H, NT, (uint64_t)DKB * BLK);
  x.db = t_dev_new(D, NT, (uint64_t)NB * SLOT);
  x.hb = t_dev_new(H, NT, (uint64_t)NB * SLOT);
  x.db2 = t_dev_new(D, NT, 2ull * SLOT);
  x.exp_k = t_mem_new(NT, x.dk.T);
  x.exp_b = t_mem_new(NT, x.db.T);
  llmdd_cache_desc_t kd = t_desc2(D, NT, DKB, BLK), hkd = t_desc2(H, NT, DKB, BLK);
  llmdd_cache_desc_t bd = t_desc2(D, NT, NB, SLOT), hbd = t_desc2(H, NT, NB, SLOT), b2d = t_desc2(D, NT, 2, SLOT);
  REQUIRE_OK(llmdd_register_blocks_cache(g_d, &kd, x.dk.addrs, NT, NULL, -1, &x.cdk));
  REQUIRE_OK(llmdd_register_blocks_cache(g_d, &hkd, x.hk.addrs, NT, NULL, -1, &x.chk));
  REQUIRE_OK(llmdd_register_cache(g_d, &bd, x.db.addrs, NT, NULL, 0, -1, &x.cdb));
  REQUIRE_OK(llmdd_register_cache(g_d, &hbd, x.hb.addrs, NT, NULL, 0, -1, &x.chb));
  REQUIRE_OK(llmdd_register_cache(g_d, &b2d, x.db2.addrs, NT, NULL, 0, -1, &x.cdb2));
  mirror m;
  memset(&m, 0, sizeof m);
  if (remote_acc) { /* registered before the link, like every remote-accessible cache */
    m.k = t_dev_new(D, NT, (uint64_t)PKB * BLK);
    m.hk = t_dev_new(D, NT, (uint64_t)PKB * BLK);
    m.b = t_dev_new(D, NT, (uint64_t)NB * SLOT);
    llmdd_cache_desc_t mkd = t_desc2(D, NT, PKB, BLK);
    REQUIRE_OK(llmdd_register_blocks_cache(g_d, &mkd, m.k.addrs, NT, NULL, -1, &m.ck));
    REQUIRE_OK(llmdd_register_blocks_cache(g_d, &mkd, m.hk.addrs, NT, NULL, -1, &m.chk));
    REQUIRE_OK(llmdd_register_cache(g_d, &bd, m.b.addrs, NT, NULL, 0, -1, &m.cb));
  }
  REQUIRE_OK(t_link(g_d, P_ID, peer.port));

  if (!remote_acc) {
    pull_run(&x, ids);
  } else {
    /* Sources for the pushes: decoder blocks/batch (device and host) hold seeds 21/22. */
    t_mem sk = t_mem_new(NT, x.dk.T), sb = t_mem_new(NT, x.db.T);
    t_mem_fill(&sk, SEED_DK);
    t_mem_fill(&sb, SEED_DB);
    t_dev_upload(&x.dk, &sk);
    t_dev_upload(&x.hk, &sk);
    t_dev_upload(&x.db, &sb);
    t_dev_upload(&x.hb, &sb);
    t_mem_free(&sk);
    t_mem_free(&sb);
    push_run(&x, &m, ids);
  }

  CHECK_OK(t_unlink(g_d, P_ID, peer.port));
  t_peer_stop(ch.parent, pid);
  CHECK_OK(llmdd_finalize(g_d));
  llmdd_destroy(g_d);
  g_d = NULL;
  t_dev_free(&x.dk);
  t_dev_free(&x.hk);
  t_dev_free(&x.db);
  t_dev_free(&x.hb);
  t_dev_free(&x.db2);
  if (remote_acc) {
    t_dev_free(&m.k);
    t_dev_free(&m.hk);
    t_dev_free(&m.b);
  }
  t_mem_free(&x.exp_k);
  t_mem_free(&x.exp_b);
  t_mem_free(&m_pk);
  t_mem_free(&m_pb);
  t_mem_free(&m_hk);
  t_mem_free(&m_hb);
  t_mem_free(&m_pool);
}

int main(void) {
  /* RDMA within the server for both processes (inherited by the prompt). */
  setenv("HCCL_INTRA_ROCE_ENABLE", "1", 1);
  t_acl_load();
  run(0);
  run(1);
  t_acl_check_violations();
  t_acl_unload();
  return t_finish("test_acl_transfer");
}
