/* Every bad input of the four async functions returns the documented status
 * and a last-error message naming the problem (checked with strstr). A
 * rejected llmdd_transfer_cache_async creates no task (task_out untouched),
 * never calls the synchronizer, and moves no byte (the decoder's memory
 * stays zero). Runs once in remote-cache-accessible mode (BY_CACHE_KEY) and
 * once in request/response mode (BY_ADDRS). */
#include "t_async.h"
#include "t_dataplane.h"

#define P_ID 67
#define D_ID 68
#define NT 8 /* 4 layers */
#define NB 8
#define BLK 4096
#define PI LLMDD_PARAM_INVALID

/* ---------- decoder ---------- */
static t_mem d_k, d_b;

static void d_setup(t_peer *self, llmdd_instance_t *d) {
  d_k = t_mem_new(NT, (uint64_t)NB * BLK);
  d_b = t_mem_new(NT, 2ull * BLK);
  t_async_dst(self, d, &d_k, NB, BLK, &d_b, 2, BLK);
}

/* cmd 1: 1 if all memory is still zero; cmd 2: zero it. */
static uint64_t d_cmd(t_peer *self, llmdd_instance_t *d, uint64_t c) {
  (void)self;
  (void)d;
  if (c == 2) {
    t_mem_zero(&d_k);
    t_mem_zero(&d_b);
    return 1;
  }
  for (uint32_t t = 0; t < NT; t++)
    if (!t_all(d_k.p[t], d_k.T, 0) || !t_all(d_b.p[t], d_b.T, 0)) return 0;
  return 1;
}

/* ---------- prompt ---------- */
static t_gate g_gate;
static llmdd_task_t *const SENTINEL = (llmdd_task_t *)(uintptr_t)0x5151;

/* Expects llmdd_transfer_cache_async(args...) to fail with `st` and a message
 * containing `msg`, creating no task and calling no synchronizer. */
#define BAD_ASYNC(st, msg, inst, src, cfgs, ncfg, sb, nsb, db, ndb, bms)                                 \
  do {                                                                                                    \
    llmdd_task_t *t_out_ = SENTINEL;                                                                      \
    CHECK_STATUS(llmdd_transfer_cache_async(inst, src, t_gate_sync, &g_gate, cfgs, ncfg, sb, nsb, db, ndb, \
                                            bms, &t_out_),                                                \
                 st);                                                                                     \
    const char *m_ = llmdd_last_error_message();                                                          \
    if (!strstr(m_, msg)) fprintf(stderr, "%s:%d: message %s lacks \"%s\"\n", __FILE__, __LINE__, m_, msg); \
    CHECK(strstr(m_, msg) != NULL);                                                                       \
    CHECK(t_out_ == SENTINEL);                                                                            \
  } while (0)

#define BAD(st, msg, expr)                                                                                \
  do {                                                                                                    \
    CHECK_STATUS(expr, st);                                                                               \
    const char *m_ = llmdd_last_error_message();                                                          \
    if (!strstr(m_, msg)) fprintf(stderr, "%s:%d: message %s lacks \"%s\"\n", __FILE__, __LINE__, m_, msg); \
    CHECK(strstr(m_, msg) != NULL);                                                                       \
  } while (0)

typedef struct {
  int64_t kb, bb, host, odd; /* prompt caches: blocks, batch, HOST blocks, 3-tensor blocks */
  int64_t dk, db;            /* decoder caches */
  uint64_t dk_addrs[NT], db_addrs[NT];
} ids;

static void register_sources(llmdd_instance_t *p, ids *id, t_mem *kb, t_mem *bb, t_mem *host, t_mem *odd) {
  llmdd_cache_t c;
  llmdd_cache_desc_t kd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, NB, BLK);
  llmdd_cache_desc_t bd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, 2, BLK);
  llmdd_cache_desc_t hd = t_desc2(LLMDD_PLACEMENT_HOST, NT, NB, BLK);
  llmdd_cache_desc_t od = t_desc2(LLMDD_PLACEMENT_DEVICE, 3, NB, BLK);
  REQUIRE_OK(llmdd_register_blocks_cache(p, &kd, kb->addrs, NT, NULL, -1, &c));
  id->kb = c.cache_id;
  REQUIRE_OK(llmdd_register_cache(p, &bd, bb->addrs, NT, NULL, 0, -1, &c));
  id->bb = c.cache_id;
  REQUIRE_OK(llmdd_register_blocks_cache(p, &hd, host->addrs, NT, NULL, -1, &c));
  id->host = c.cache_id;
  REQUIRE_OK(llmdd_register_blocks_cache(p, &od, odd->addrs, 3, NULL, -1, &c));
  id->odd = c.cache_id;
}

static const uint64_t B2[2] = {0, 1}, B1[1] = {2}, BIG[1] = {99}, B3[3] = {0, 1, 2}, B67[2] = {6, 7};

/* Inputs whose checks do not depend on the access mode. */
static void common_errors(llmdd_instance_t *p, const ids *id, llmdd_transfer_config_t good) {
  llmdd_transfer_config_t c = good;
  /* NULLs and counts */
  BAD_ASYNC(PI, "instance is NULL", NULL, id->kb, &good, 1, B2, 2, B2, 2, 0);
  {
    llmdd_task_t *t = SENTINEL;
    BAD(PI, "sync (the layer synchronizer) is NULL",
        llmdd_transfer_cache_async(p, id->kb, NULL, &g_gate, &good, 1, B2, 2, B2, 2, 0, &t));
    CHECK(t == SENTINEL);
    BAD(PI, "task_out (output) is NULL",
        llmdd_transfer_cache_async(p, id->kb, t_gate_sync, &g_gate, &good, 1, B2, 2, B2, 2, 0, NULL));
  }
  BAD_ASYNC(PI, "configs must be a non-NULL array", p, id->kb, NULL, 1, B2, 2, B2, 2, 0);
  BAD_ASYNC(PI, "configs must be a non-NULL array", p, id->kb, &good, 0, B2, 2, B2, 2, 0);
  BAD_ASYNC(PI, "src_blocks is NULL but its length is 2", p, id->kb, &good, 1, NULL, 2, B2, 2, 0);
  BAD_ASYNC(PI, "dst_blocks is NULL but its length is 2", p, id->kb, &good, 1, B2, 2, NULL, 2, 0);
  /* the source cache */
  BAD_ASYNC(LLMDD_KV_CACHE_NOT_EXIST, "local cache 999 does not exist", p, 999, &good, 1, B2, 2, B2, 2, 0);
  BAD_ASYNC(PI, "placement HOST", p, id->host, &good, 1, B2, 2, B2, 2, 0);
  BAD_ASYNC(PI, "even num_tensors", p, id->odd, &good, 1, B2, 2, B2, 2, 0);
  /* config fields */
  c = good;
  c.reserved[31] = 1;
  BAD_ASYNC(PI, "configs[0].reserved must be zero", p, id->kb, &c, 1, B2, 2, B2, 2, 0);
  c = good;
  c.kind = 7;
  BAD_ASYNC(PI, "configs[0].kind 7 is neither", p, id->kb, &c, 1, B2, 2, B2, 2, 0);
  c = good;
  c.layers.tensor_num_per_layer = 3;
  BAD_ASYNC(PI, "tensor_num_per_layer = 3 is not supported", p, id->kb, &c, 1, B2, 2, B2, 2, 0);
  c = good;
  c.layers.tensor_num_per_layer = 1;
  BAD_ASYNC(PI, "tensor_num_per_layer = 1 is not supported", p, id->kb, &c, 1, B2, 2, B2, 2, 0);
  c = good;
  c.layers.src_begin = 2;
  c.layers.src_end = 9;
  BAD_ASYNC(PI, "src layer range [2, 9) exceeds the source cache's 4 layers", p, id->kb, &c, 1, B2, 2, B2, 2, 0);
  c = good;
  c.layers.src_begin = 3;
  c.layers.src_end = 3;
  BAD_ASYNC(PI, "configs[0].layers: src layer range [3, 3)", p, id->kb, &c, 1, B2, 2, B2, 2, 0);
  c = good;
  c.layers.src_begin = -5;
  BAD_ASYNC(PI, "configs[0].layers: src layer range [-5", p, id->kb, &c, 1, B2, 2, B2, 2, 0);
  /* blocks arguments */
  BAD_ASYNC(PI, "src_blocks has 2 entries but dst_blocks has 0", p, id->kb, &good, 1, B2, 2, NULL, 0, 0);
  BAD_ASYNC(PI, "src_blocks has 2 entries but dst_blocks has 1", p, id->kb, &good, 1, B2, 2, B1, 1, 0);
  BAD_ASYNC(PI, "src_blocks[0] = 99 is out of range", p, id->kb, &good, 1, BIG, 1, B1, 1, 0);
  BAD_ASYNC(PI, "dst_block_memory_size = 2048 must equal the local block size of 4096", p, id->kb, &good, 1, B2, 2,
            B2, 2, 2048);
  BAD_ASYNC(PI, "needs a blocks (paged) local cache", p, id->bb, &good, 1, B2, 2, B2, 2, 0);
  BAD_ASYNC(PI, "requires dst_block_memory_size", p, id->bb, &good, 1, NULL, 0, B2, 2, 0);
  BAD_ASYNC(PI, "dst_block_memory_size = 4096 is only valid with dst_blocks", p, id->bb, &good, 1, NULL, 0, NULL,
            0, BLK);
  /* Without block indices a blocks source is one batch (stride one block):
   * slot 1 does not exist (by key, a BlocksCacheKey destination says so first). */
  c = good;
  c.src_batch_index = 1;
  BAD_ASYNC(PI, "src_batch_index = 1", p, id->kb, &c, 1, NULL, 0, NULL, 0, 0);
  BAD_ASYNC(PI, "dst_blocks has 3 entries but the local slot of 4096 bytes fills at most 2", p, id->bb, &good, 1,
            NULL, 0, B3, 3, 2048);
  c = good;
  c.src_batch_index = 5;
  BAD_ASYNC(PI, "src_batch_index = 5", p, id->bb, &c, 1, NULL, 0, B2, 2, 2048);
  /* a bad second config fails the whole call */
  llmdd_transfer_config_t two[2] = {good, good};
  two[1].layers.src_begin = 0;
  two[1].layers.src_end = 7;
  BAD_ASYNC(PI, "configs[1]: src layer range [0, 7)", p, id->kb, two, 2, B2, 2, B2, 2, 0);
}

static void task_errors(llmdd_instance_t *p, const ids *id, llmdd_transfer_config_t good) {
  llmdd_task_t *task = NULL;
  t_gate open;
  t_gate_init(&open, 1, -1);
  REQUIRE_OK(llmdd_transfer_cache_async(p, id->kb, t_gate_sync, &open, &good, 1, B2, 2, B2, 2, 0, &task));
  uint64_t junk[16];
  memset(junk, 0x5a, sizeof junk);
  llmdd_task_t *foreign = (llmdd_task_t *)junk;
  uint32_t res[2] = {7, 7};
  BAD(PI, "task is NULL", llmdd_task_synchronize(NULL, -1));
  BAD(PI, "not a live llmdd task", llmdd_task_synchronize(foreign, -1));
  BAD(PI, "timeout_ms must be -1 (wait forever) or >= 0 (got -2)", llmdd_task_synchronize(task, -2));
  BAD(PI, "timeout_ms must be -1", llmdd_task_synchronize(task, INT64_MIN));
  BAD(PI, "task is NULL", llmdd_task_get_results(NULL, -1, res, 1));
  BAD(PI, "not a live llmdd task", llmdd_task_get_results(foreign, -1, res, 1));
  BAD(PI, "results (output) is NULL", llmdd_task_get_results(task, -1, NULL, 1));
  BAD(PI, "num_results = 2 but the task has 1 configs", llmdd_task_get_results(task, -1, res, 2));
  BAD(PI, "num_results = 0 but the task has 1 configs", llmdd_task_get_results(task, -1, res, 0));
  BAD(PI, "timeout_ms must be -1 (wait forever) or >= 0 (got -3)", llmdd_task_get_results(task, -3, res, 1));
  CHECK(res[0] == 7 && res[1] == 7); /* rejected calls write nothing */
  CHECK_OK(llmdd_task_synchronize(task, -1));
  CHECK_OK(llmdd_task_get_results(task, -1, res, 1));
  CHECK(res[0] == LLMDD_SUCCESS && res[1] == 7);
  llmdd_task_free(NULL);   /* no-op */
  llmdd_task_free(foreign); /* not a task: ignored, memory untouched */
  for (int i = 0; i < 16; i++) CHECK(junk[i] == 0x5a5a5a5a5a5a5a5aull);
  llmdd_task_free(task);
  t_gate_destroy(&open);
}

static void run(int by_key) {
  const char *mode = by_key ? "remote-accessible" : "request/response";
  t_peer peer;
  memset(&peer, 0, sizeof peer);
  peer.cluster = D_ID;
  peer.port = t_free_port();
  peer.opts = t_opts_make(0, by_key, NULL, NULL);
  peer.setup = d_setup;
  peer.cmd = d_cmd;
  t_chan_pair ch = t_chan_new();
  pid_t pid = t_peer_start(&peer, &ch);
  ids id;
  t_async_recv_dst(ch.parent, NT, &id.dk, &id.db, id.dk_addrs, id.db_addrs);

  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, P_ID, &p));
  /* before init */
  {
    llmdd_transfer_config_t c = t_cfg_key(llmdd_blocks_cache_key(D_ID, 0), -1, -1, -1, -1, 0);
    BAD_ASYNC(LLMDD_FAILED, "not initialized", p, 1, &c, 1, B2, 2, B2, 2, 0);
  }
  REQUIRE_OK(t_init(p, NULL, peer.opts.o, peer.opts.n));
  t_mem kb = t_mem_new(NT, (uint64_t)NB * BLK), bb = t_mem_new(NT, 2ull * BLK);
  t_mem host = t_mem_new(NT, (uint64_t)NB * BLK), odd = t_mem_new(3, (uint64_t)NB * BLK);
  t_mem_fill(&kb, 91);
  t_mem_fill(&bb, 92);
  register_sources(p, &id, &kb, &bb, &host, &odd);
  t_gate_init(&g_gate, 1, -1);

  /* Not linked yet. */
  llmdd_transfer_config_t key_all = t_cfg_key(llmdd_blocks_cache_key(D_ID, 0), -1, -1, -1, -1, 0);
  uint64_t addrs[NT];
  memcpy(addrs, id.dk_addrs, sizeof addrs);
  llmdd_transfer_config_t addr_all = t_cfg_addrs(D_ID, addrs, NT, -1, -1, 0);
  llmdd_transfer_config_t good = by_key ? key_all : addr_all;
  BAD_ASYNC(LLMDD_NOT_YET_LINK, "no link to cluster 68", p, id.kb, &good, 1, B2, 2, B2, 2, 0);
  REQUIRE_OK(t_link(p, D_ID, peer.port));

  common_errors(p, &id, good);
  llmdd_transfer_config_t c;
  if (by_key) {
    BAD_ASYNC(PI, "LLMDD_TRANSFER_BY_ADDRS (TransferConfig) is only available in request/response mode", p, id.kb,
              &addr_all, 1, B2, 2, B2, 2, 0);
    c = t_cfg_key(llmdd_blocks_cache_key(999, 0), -1, -1, -1, -1, 0);
    BAD_ASYNC(LLMDD_NOT_YET_LINK, "no link to cluster 999", p, id.kb, &c, 1, B2, 2, B2, 2, 0);
    c = t_cfg_key(llmdd_blocks_cache_key(P_ID, 0), -1, -1, -1, -1, 0);
    BAD_ASYNC(PI, "own cluster", p, id.kb, &c, 1, B2, 2, B2, 2, 0);
    c = t_cfg_key(llmdd_blocks_cache_key(D_ID, 0), 0, 2, 0, 3, 0);
    BAD_ASYNC(PI, "src layer range [0, 2) has 2 layers but dst layer range [0, 3) has 3", p, id.kb, &c, 1, B2, 2,
              B2, 2, 0);
    c = t_cfg_key(llmdd_blocks_cache_key(D_ID, 0), 0, 3, 2, 5, 0);
    BAD_ASYNC(PI, "dst layer range [2, 5) exceeds the 4 layers of the destination cache", p, id.kb, &c, 1, B2, 2,
              B2, 2, 0);
    c = t_cfg_key(llmdd_blocks_cache_key(D_ID, 0), 0, 2, -1, -1, 0);
    BAD_ASYNC(PI, "has 2 layers but dst layer range [0, 4) has 4", p, id.kb, &c, 1, B2, 2, B2, 2, 0);
    c = t_cfg_key(llmdd_cache_key(D_ID, 5, 0, LLMDD_ID_UNSET), -1, -1, -1, -1, 0);
    BAD_ASYNC(PI, "cache_key must be LLMDD_KEY_BLOCKS or LLMDD_KEY_ID_AND_INDEX", p, id.kb, &c, 1, B2, 2, B2, 2, 0);
    c = key_all;
    c.cache_key.kind = 9;
    BAD_ASYNC(PI, "configs[0].cache_key: cache key kind 9", p, id.kb, &c, 1, B2, 2, B2, 2, 0);
    c = t_cfg_key(llmdd_cache_key_by_id(D_ID, 777, 0), -1, -1, -1, -1, 0);
    BAD_ASYNC(LLMDD_KV_CACHE_NOT_EXIST, "peer has no remote-accessible cache 777", p, id.kb, &c, 1, B2, 2, B2, 2, 0);
    BAD_ASYNC(PI, "dst_blocks[0] = 99 is out of range for a destination cache of 8 blocks", p, id.kb, &key_all, 1,
              B1, 1, BIG, 1, 0);
    c = t_cfg_key(llmdd_blocks_cache_key(D_ID, 0), -1, -1, -1, -1, 1);
    BAD_ASYNC(PI, "src_batch_index = 1 must be 0 with a BlocksCacheKey", p, id.bb, &c, 1, NULL, 0, B2, 2, 2048);
    BAD_ASYNC(PI, "the destination block size is 4096 bytes but the transfer uses 2048-byte blocks", p, id.bb,
              &key_all, 1, NULL, 0, B2, 2, 2048);
    c = t_cfg_key(llmdd_cache_key_by_id(D_ID, id.db, 1), -1, -1, -1, -1, 0);
    BAD_ASYNC(PI, "dst_blocks given but the destination cache is not a blocks cache", p, id.bb, &c, 1, NULL, 0, B2,
              2, 2048);
    c = t_cfg_key(llmdd_cache_key_by_id(D_ID, id.dk, 1), -1, -1, -1, -1, 0);
    BAD_ASYNC(PI, "a blocks destination needs cache_key.batch_index 0 (got 1)", p, id.kb, &c, 1, B2, 2, B2, 2, 0);
    /* Without dst_blocks a blocks destination is one batch of stride one block. */
    c = t_cfg_key(llmdd_cache_key_by_id(D_ID, id.dk, 1), -1, -1, -1, -1, 0);
    BAD_ASYNC(PI, "a blocks destination without dst_blocks is one batch of stride one block: cache_key.batch_index must be 0 (got 1)", p, id.bb, &c, 1, NULL, 0, NULL, 0, 0);
  } else {
    BAD_ASYNC(PI, "LLMDD_TRANSFER_BY_CACHE_KEY (TransferWithCacheKeyConfig) needs remote-cache-accessible mode", p,
              id.kb, &key_all, 1, B2, 2, B2, 2, 0);
    c = t_cfg_addrs(999, addrs, NT, -1, -1, 0);
    BAD_ASYNC(LLMDD_NOT_YET_LINK, "no link to cluster 999", p, id.kb, &c, 1, B2, 2, B2, 2, 0);
    c = t_cfg_addrs(P_ID, addrs, NT, -1, -1, 0);
    BAD_ASYNC(PI, "dst_cluster_id 67 is this instance's own cluster id", p, id.kb, &c, 1, B2, 2, B2, 2, 0);
    c = t_cfg_addrs(D_ID, addrs, NT - 1, -1, -1, 0);
    BAD_ASYNC(PI, "num_dst_addrs = 7 but the src layer range [0, 4) selects 4 layers", p, id.kb, &c, 1, B2, 2, B2, 2,
              0);
    c = t_cfg_addrs(D_ID, addrs, 4, 1, 2, 0);
    BAD_ASYNC(PI, "num_dst_addrs = 4 but the src layer range [1, 2) selects 1 layers", p, id.kb, &c, 1, B2, 2, B2,
              2, 0);
    c = t_cfg_addrs(D_ID, NULL, NT, -1, -1, 0);
    BAD_ASYNC(PI, "configs[0].dst_addrs is NULL but its length is 8", p, id.kb, &c, 1, B2, 2, B2, 2, 0);
    c = addr_all;
    c.layers.dst_begin = 0;
    c.layers.dst_end = 4;
    BAD_ASYNC(PI, "a dst layer range is not used with LLMDD_TRANSFER_BY_ADDRS", p, id.kb, &c, 1, B2, 2, B2, 2, 0);
    /* destinations outside what the decoder registered */
    uint64_t out[NT];
    memcpy(out, addrs, sizeof out);
    out[5] += BLK; /* block 7 of this tensor would end one block past it */
    c = t_cfg_addrs(D_ID, out, NT, -1, -1, 0);
    BAD_ASYNC(PI, "outside every cache cluster 68 registered", p, id.kb, &c, 1, B2, 2, B67, 2, 0);
    memcpy(out, addrs, sizeof out);
    out[2] = 0x1000;
    c = t_cfg_addrs(D_ID, out, NT, -1, -1, 0);
    BAD_ASYNC(PI, "destination [0x1000, +8192) from dst_addrs is outside every cache", p, id.kb, &c, 1, B2, 2, B2,
              2, 0);
    memcpy(out, addrs, sizeof out);
    out[0] = id.db_addrs[0] + BLK; /* slot 1 of the batch cache: 2 blocks run past its end */
    c = t_cfg_addrs(D_ID, out, NT, -1, -1, 0);
    BAD_ASYNC(PI, "outside every cache cluster 68 registered", p, id.kb, &c, 1, B2, 2, B2, 2, 0);
  }
  CHECK(t_gate_calls(&g_gate) == 0); /* no rejected call ever ran a synchronizer */
  CHECK(t_peer_call(ch.parent, 1) == 1); /* and none moved a byte */
  task_errors(p, &id, good);
  CHECK(t_gate_calls(&g_gate) == 0);
  t_gate_destroy(&g_gate);
  printf("[%s] bad inputs rejected before anything started\n", mode);

  CHECK_OK(t_unlink(p, D_ID, peer.port));
  t_peer_stop(ch.parent, pid);
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
  t_mem_free(&kb);
  t_mem_free(&bb);
  t_mem_free(&host);
  t_mem_free(&odd);
}

int main(void) {
  run(1);
  run(0);
  return t_finish("test_async_bad_input");
}
