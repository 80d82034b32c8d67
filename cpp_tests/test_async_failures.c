/* How layer-wise async tasks end, over both transports (prompt = client
 * pushing by BlocksCacheKey into the decoder = server, remote-accessible):
 * - the synchronizer refuses layer k: configs containing k get PARAM_INVALID,
 *   a config finished before k succeeds, a config after k is NOT_STARTED;
 *   layers before k arrived, none from k on; no callback after k;
 * - synchronize / get_results time out while layers are held back (the task
 *   keeps running), then succeed once they are released;
 * - a transfer fails (link dropped mid-task): that config gets the transfer's
 *   status, a config cut short gets FAILED;
 * - llmdd_task_free on a running task waits for the running callback, and no
 *   callback or byte follows;
 * - llmdd_finalize with a running task cancels it the same way; the task
 *   handle still answers (FAILED) after the instance is destroyed. */
#include "t_async.h"
#include "t_dataplane.h"

#define P_ID 65
#define D_ID 66
#define LAYERS 8
#define NT (2 * LAYERS)
#define NB 8
#define BLK 4096
#define SEED 81

static const uint64_t SB[2] = {1, 6}, DB[2] = {3, 4};

/* ---------- decoder ---------- */
static t_mem d_mem;

#define CMD_ZERO (1ull << 56)
#define CMD_VERIFY (2ull << 56) /* | per destination layer L, nibble L: source layer + 1, or 0 = all zero */
#define CMD_POLL (3ull << 56)   /* | destination layer | source layer << 8: wait until it arrived */

/* CMD_VERIFY argument: destination layer L holds source layer L for each bit L of `mask`. */
static uint64_t ident(unsigned mask) {
  uint64_t m = 0;
  for (int l = 0; l < LAYERS; l++)
    if (mask >> l & 1) m |= (uint64_t)(l + 1) << (4 * l);
  return m;
}

static void d_setup(t_peer *self, llmdd_instance_t *d) {
  d_mem = t_mem_new(NT, (uint64_t)NB * BLK);
  t_async_dst(self, d, &d_mem, NB, BLK, NULL, 0, 0);
}

/* Destination layer l holds the pushed blocks of source layer `from`, or only
 * zeros when `from` < 0. */
static int layer_ok(uint32_t l, int from) {
  T_BARRIER();
  for (uint32_t k = 0; k < 2; k++) {
    uint32_t t = 2 * l + k;
    for (uint64_t b = 0; b < NB; b++) {
      const uint8_t *p = d_mem.p[t] + b * BLK;
      int j = b == DB[0] ? 0 : b == DB[1] ? 1 : -1;
      if (from >= 0 && j >= 0) {
        if (!t_verify(p, BLK, SEED, (uint32_t)(2 * from) + k, SB[j] * BLK)) return 0;
      } else if (!t_all(p, BLK, 0)) {
        return 0;
      }
    }
  }
  return 1;
}

static uint64_t d_cmd(t_peer *self, llmdd_instance_t *d, uint64_t c) {
  (void)self;
  (void)d;
  uint64_t op = c & (0xffull << 56), arg = c & 0xffffffff;
  if (op == CMD_ZERO) {
    t_mem_zero(&d_mem);
    return 1;
  }
  if (op == CMD_VERIFY) {
    int ok = 1;
    for (uint32_t l = 0; l < LAYERS; l++) {
      int from = (int)((arg >> (4 * l)) & 0xf) - 1;
      if (!layer_ok(l, from)) {
        fprintf(stderr, "[decoder] layer %u: expected %s %d\n", l, from >= 0 ? "source layer" : "zeros", from);
        ok = 0;
      }
    }
    return (uint64_t)ok;
  }
  if (op == CMD_POLL) {
    double end = t_now_ms() + 20000;
    while (!layer_ok((uint32_t)(arg & 0xff), (int)(arg >> 8 & 0xff)))
      if (t_now_ms() > end) return 0;
    return 1;
  }
  return 0;
}

/* ---------- prompt ---------- */

/* Releases `n` layers `delay_ms` after `*go` becomes non-zero. */
typedef struct {
  t_gate *g;
  volatile int *go;
  int n, delay_ms;
} releaser;

static void *release_later(void *arg) {
  releaser *r = (releaser *)arg;
  while (!*r->go) usleep(1000);
  usleep((useconds_t)r->delay_ms * 1000);
  t_gate_release(r->g, r->n);
  return NULL;
}

static llmdd_task_t *start(llmdd_instance_t *p, int64_t src, t_gate *g, const llmdd_transfer_config_t *cfg,
                           size_t n) {
  llmdd_task_t *task = NULL;
  uint32_t s = llmdd_transfer_cache_async(p, src, t_gate_sync, g, cfg, n, SB, 2, DB, 2, 0, &task);
  if (s != LLMDD_SUCCESS) {
    fprintf(stderr, "transfer_cache_async: %s (%s)\n", llmdd_status_name(s), llmdd_last_error_message());
    exit(2);
  }
  return task;
}

static llmdd_transfer_config_t cfg_layers(int32_t b, int32_t e) {
  return t_cfg_key(llmdd_blocks_cache_key(D_ID, 0), b, e, b, e, 0);
}

static void run(int tcp) {
  const char *tr = t_tr_name(tcp);
  t_peer peer;
  memset(&peer, 0, sizeof peer);
  peer.cluster = D_ID;
  peer.port = t_free_port();
  peer.opts = t_opts_make(tcp, 1, NULL, NULL);
  peer.setup = d_setup;
  peer.cmd = d_cmd;
  t_chan_pair ch = t_chan_new();
  pid_t pid = t_peer_start(&peer, &ch);
  (void)t_recv(ch.parent, 30000);

  t_mem src = t_mem_new(NT, (uint64_t)NB * BLK);
  t_mem_fill(&src, SEED);
  llmdd_cache_t sc;
  llmdd_instance_t *p = t_async_prompt(P_ID, &peer, &src, NB, BLK, &sc);
  t_gate g;
  uint32_t res[3];

  /* A: the synchronizer refuses layer 5. */
  {
    t_gate_init(&g, 1, 5);
    llmdd_transfer_config_t cfg[3] = {cfg_layers(0, 3), cfg_layers(2, 6), cfg_layers(6, 8)};
    llmdd_task_t *task = start(p, sc.cache_id, &g, cfg, 3);
    CHECK_STATUS(llmdd_task_synchronize(task, -1), LLMDD_PARAM_INVALID);
    CHECK(strstr(llmdd_last_error_message(), "returned false for layer 5") != NULL);
    CHECK_OK(llmdd_task_get_results(task, -1, res, 3));
    CHECK(res[0] == LLMDD_SUCCESS);
    CHECK(res[1] == LLMDD_PARAM_INVALID);
    CHECK(res[2] == LLMDD_TASK_RESULT_NOT_STARTED);
    usleep(50 * 1000);
    CHECK(t_gate_calls(&g) == 6); /* layers 0..5, never after 5 */
    CHECK(g.layers[5] == 5);
    llmdd_task_free(task);
    CHECK(t_peer_call(ch.parent, CMD_VERIFY | ident(0x1F)) == 1); /* layers 0..4 arrived, 5..7 did not */
    t_gate_destroy(&g);
    printf("[%s] refusal at layer 5: results SUCCESS, PARAM_INVALID, NOT_STARTED\n", tr);
  }

  /* B: synchronize / get_results time out while layers are held back. */
  {
    CHECK(t_peer_call(ch.parent, CMD_ZERO) == 1);
    t_gate_init(&g, 0, -1);
    llmdd_transfer_config_t cfg[2] = {cfg_layers(0, 4), cfg_layers(4, 8)};
    llmdd_task_t *task = start(p, sc.cache_id, &g, cfg, 2);
    double t0 = t_now_ms();
    CHECK_STATUS(llmdd_task_synchronize(task, 50), LLMDD_TIMEOUT);
    CHECK(t_now_ms() - t0 >= 45);
    CHECK(strstr(llmdd_last_error_message(), "still running") != NULL);
    res[0] = res[1] = 7;
    CHECK_STATUS(llmdd_task_get_results(task, 0, res, 2), LLMDD_TIMEOUT);
    CHECK(res[0] == LLMDD_TIMEOUT && res[1] == LLMDD_TIMEOUT);
    CHECK_STATUS(llmdd_task_get_results(task, 20, res, 2), LLMDD_TIMEOUT);
    t_gate_release(&g, 4);
    CHECK(t_peer_call(ch.parent, CMD_POLL | 3 | 3 << 8) == 1);
    CHECK_STATUS(llmdd_task_synchronize(task, 0), LLMDD_TIMEOUT); /* layers 4.. still held */
    t_gate_open(&g);
    CHECK_OK(llmdd_task_synchronize(task, -1));
    CHECK_OK(llmdd_task_synchronize(task, 0));
    CHECK_OK(llmdd_task_get_results(task, 0, res, 2));
    CHECK(res[0] == LLMDD_SUCCESS && res[1] == LLMDD_SUCCESS);
    llmdd_task_free(task);
    CHECK(t_peer_call(ch.parent, CMD_VERIFY | ident(0xFF)) == 1);
    t_gate_destroy(&g);
  }

  /* C: llmdd_task_free on a running task. */
  {
    CHECK(t_peer_call(ch.parent, CMD_ZERO) == 1);
    t_gate_init(&g, 0, -1);
    llmdd_transfer_config_t cfg = cfg_layers(-1, -1);
    llmdd_task_t *task = start(p, sc.cache_id, &g, &cfg, 1);
    t_gate_release(&g, 2);
    CHECK(t_peer_call(ch.parent, CMD_POLL | 1 | 1 << 8) == 1);
    CHECK(t_gate_wait_calls(&g, 3, 10000)); /* the callback for layer 2 is running */
    volatile int go = 0;
    releaser r = {&g, &go, 3, 100};
    pthread_t th;
    pthread_create(&th, NULL, release_later, &r);
    go = 1;
    double t0 = t_now_ms();
    llmdd_task_free(task);
    double waited = t_now_ms() - t0;
    pthread_join(th, NULL);
    CHECK(waited >= 80); /* it waited for the running callback */
    usleep(50 * 1000);
    CHECK(t_gate_calls(&g) == 3); /* no callback after free */
    CHECK(t_peer_call(ch.parent, CMD_VERIFY | ident(0x03)) == 1); /* layer 2 was approved after cancel: not sent */
    t_gate_destroy(&g);
    printf("[%s] llmdd_task_free waited %.1f ms for the running callback\n", tr, waited);
  }

  /* D: a transfer fails (our side of the link dropped mid-task). */
  {
    CHECK(t_peer_call(ch.parent, CMD_ZERO) == 1);
    t_gate_init(&g, 0, -1);
    /* config 1 sends source layers 1, 2 to destination layers 5, 6 */
    llmdd_transfer_config_t cfg[2] = {cfg_layers(0, 4), t_cfg_key(llmdd_blocks_cache_key(D_ID, 0), 1, 3, 5, 7, 0)};
    llmdd_task_t *task = start(p, sc.cache_id, &g, cfg, 2);
    t_gate_release(&g, 2);
    /* Layer 1 of config 1 moves after config 0's: once it is there, layer 1 is done. */
    CHECK(t_peer_call(ch.parent, CMD_POLL | 5 | 1 << 8) == 1);
    CHECK(t_gate_wait_calls(&g, 3, 10000));
    llmdd_cluster_info_t cl;
    memset(&cl, 0, sizeof cl);
    cl.remote_cluster_id = D_ID;
    uint32_t ret = 0;
    CHECK_OK(llmdd_unlink_clusters(p, &cl, 1, 3000, true, &ret));
    t_gate_open(&g);
    CHECK_STATUS(llmdd_task_synchronize(task, -1), LLMDD_NOT_YET_LINK);
    CHECK(strstr(llmdd_last_error_message(), "config 0, layer 2") != NULL);
    CHECK_OK(llmdd_task_get_results(task, -1, res, 2));
    CHECK(res[0] == LLMDD_NOT_YET_LINK);
    CHECK(res[1] == LLMDD_FAILED); /* started (layer 1 moved), cut short */
    llmdd_task_free(task);
    CHECK(t_gate_calls(&g) <= 4); /* layer 3's callback may overlap layer 2's failure, none later */
    CHECK(t_peer_call(ch.parent, CMD_VERIFY | ident(0x03) | 2ull << 20) == 1); /* 0, 1, and 1 -> 5 */
    t_gate_destroy(&g);
    REQUIRE_OK(t_link(p, D_ID, peer.port));
  }

  /* E: llmdd_finalize with a running task. */
  {
    CHECK(t_peer_call(ch.parent, CMD_ZERO) == 1);
    t_gate_init(&g, 0, -1);
    llmdd_transfer_config_t cfg = cfg_layers(-1, -1);
    llmdd_task_t *task = start(p, sc.cache_id, &g, &cfg, 1);
    t_gate_release(&g, 1);
    CHECK(t_peer_call(ch.parent, CMD_POLL | 0) == 1);
    CHECK(t_gate_wait_calls(&g, 2, 10000));
    volatile int go = 0;
    releaser r = {&g, &go, 2, 100};
    pthread_t th;
    pthread_create(&th, NULL, release_later, &r);
    go = 1;
    double t0 = t_now_ms();
    CHECK_OK(llmdd_finalize(p));
    double waited = t_now_ms() - t0;
    pthread_join(th, NULL);
    CHECK(waited >= 80);
    usleep(50 * 1000);
    CHECK(t_gate_calls(&g) == 2);
    llmdd_destroy(p);
    /* The task outlives its instance and reports the cancellation. */
    CHECK_STATUS(llmdd_task_synchronize(task, 0), LLMDD_FAILED);
    CHECK(strstr(llmdd_last_error_message(), "cancelled") != NULL);
    CHECK_OK(llmdd_task_get_results(task, 0, res, 1));
    CHECK(res[0] == LLMDD_FAILED);
    llmdd_task_free(task);
    CHECK(t_peer_call(ch.parent, CMD_VERIFY | ident(0x01)) == 1);
    t_gate_destroy(&g);
    printf("[%s] llmdd_finalize waited %.1f ms for the running callback and cancelled the task\n", tr, waited);
  }

  t_peer_stop(ch.parent, pid);
  t_mem_free(&src);
}

int main(void) {
  for (int tcp = 0; tcp < 2; tcp++) run(tcp);
  return t_finish("test_async_failures");
}
