/* Layer-wise async tasks run on the prompt instance's worker pool, over both
 * transports (prompt = client pushing by BlocksCacheKey into the decoder =
 * server, remote-accessible). Task k moves source block k of every layer to
 * destination block k, so the decoder checks each task's bytes.
 * - many tasks at once, more than the pool has workers: every task succeeds,
 *   every callback sees its layers in order, every byte lands;
 * - task churn: hundreds of tasks one after another add no thread (counted in
 *   /proc/self/task);
 * - callbacks that block, more of them than workers: all of them run at once,
 *   other tasks' callbacks and transfers still finish, synchronize on a
 *   blocked task times out on time, freeing one waits for its running
 *   callback only;
 * - llmdd_finalize with blocked callbacks: every task is cancelled, finalize
 *   waits for the running callbacks, none is called again, and no library
 *   thread is left. */

#include "t_async.h"
#include "t_dataplane.h"

#define P_ID 75
#define D_ID 76
#define LAYERS 2
#define NT (2 * LAYERS)
#define NB 64
#define BLK 4096
#define SEED 91
#define MANY 40    /* tasks at once, blocks [0, MANY) */
#define BLOCKED 8  /* tasks whose callbacks block, blocks [MANY, MANY + BLOCKED) */
#define OTHERS 8   /* tasks that run meanwhile, blocks [MANY + BLOCKED, NB) */
#define CHURN 300

/* ---------- decoder ---------- */
static t_mem d_mem;

#define CMD_ZERO (1ull << 56)
#define CMD_HAS (2ull << 56)   /* | first | count << 16: blocks hold the source's */
#define CMD_EMPTY (3ull << 56) /* | first | count << 16: blocks are all zero */

static void d_setup(t_peer *self, llmdd_instance_t *d) {
  d_mem = t_mem_new(NT, (uint64_t)NB * BLK);
  t_async_dst(self, d, &d_mem, NB, BLK, NULL, 0, 0);
}

static uint64_t d_cmd(t_peer *self, llmdd_instance_t *d, uint64_t c) {
  (void)self;
  (void)d;
  uint64_t op = c & (0xffull << 56), first = c & 0xffff, count = (c >> 16) & 0xffff;
  if (op == CMD_ZERO) {
    t_mem_zero(&d_mem);
    return 1;
  }
  T_BARRIER();
  for (uint64_t b = first; b < first + count; b++) {
    for (uint32_t t = 0; t < NT; t++) {
      const uint8_t *p = d_mem.p[t] + b * BLK;
      int ok = op == CMD_HAS ? t_verify(p, BLK, SEED, t, b * BLK) : t_all(p, BLK, 0);
      if (!ok) {
        fprintf(stderr, "[decoder] tensor %u block %llu: expected %s\n", t, (unsigned long long)b,
                op == CMD_HAS ? "the source block" : "zeros");
        return 0;
      }
    }
  }
  return 1;
}

static uint64_t blocks(uint64_t op, uint64_t first, uint64_t count) { return op | first | count << 16; }

/* ---------- prompt ---------- */

/* Threads of this process. */
static int threads(void) { return t_count_dir("/proc/self/task"); }

/* Starts a task moving source block k of every layer to destination block k. */
static llmdd_task_t *start(llmdd_instance_t *p, int64_t src, t_gate *g, uint64_t k) {
  llmdd_transfer_config_t cfg = t_cfg_key(llmdd_blocks_cache_key(D_ID, 0), -1, -1, -1, -1, 0);
  llmdd_task_t *task = NULL;
  uint32_t s = llmdd_transfer_cache_async(p, src, t_gate_sync, g, &cfg, 1, &k, 1, &k, 1, 0, &task);
  if (s != LLMDD_SUCCESS) {
    fprintf(stderr, "transfer_cache_async: %s (%s)\n", llmdd_status_name(s), llmdd_last_error_message());
    exit(2);
  }
  return task;
}

/* Opens `g` `delay_ms` after `*go` becomes non-zero. */
typedef struct {
  t_gate *g;
  int n;
  volatile int *go;
  int delay_ms;
} opener;

static void *open_later(void *arg) {
  opener *o = (opener *)arg;
  while (!*o->go) usleep(1000);
  usleep((useconds_t)o->delay_ms * 1000);
  for (int i = 0; i < o->n; i++) t_gate_open(&o->g[i]);
  return NULL;
}

static t_gate many_g[MANY], blocked_g[BLOCKED], other_g[OTHERS], churn_g;

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
  int base = threads();

  t_mem src = t_mem_new(NT, (uint64_t)NB * BLK);
  t_mem_fill(&src, SEED);
  llmdd_cache_t sc;
  llmdd_instance_t *p = t_async_prompt(P_ID, &peer, &src, NB, BLK, &sc);
  uint32_t res = 0;

  /* A: many tasks at once. */
  {
    llmdd_task_t *tasks[MANY];
    for (int k = 0; k < MANY; k++) {
      t_gate_init(&many_g[k], 1, -1);
      tasks[k] = start(p, sc.cache_id, &many_g[k], (uint64_t)k);
    }
    for (int k = 0; k < MANY; k++) {
      CHECK_OK(llmdd_task_synchronize(tasks[k], 30000));
      CHECK_OK(llmdd_task_get_results(tasks[k], 0, &res, 1));
      CHECK(res == LLMDD_SUCCESS);
      llmdd_task_free(tasks[k]);
      CHECK(many_g[k].calls == LAYERS);
      CHECK(many_g[k].out_of_order == 0 && many_g[k].bad_timeout == 0);
      t_gate_destroy(&many_g[k]);
    }
    CHECK(t_peer_call(ch.parent, blocks(CMD_HAS, 0, MANY)) == 1);
    printf("[%s] %d tasks at once: all succeeded, every block arrived (%d threads)\n", tr, MANY, threads());
  }

  /* B: churn. The first tasks may start the pool; later ones add no thread. */
  {
    int warm = 0, most = 0;
    t_gate_init(&churn_g, 1, -1);
    for (int i = 0; i < CHURN; i++) {
      llmdd_task_t *task = start(p, sc.cache_id, &churn_g, (uint64_t)(i % MANY));
      CHECK_OK(llmdd_task_synchronize(task, 30000));
      llmdd_task_free(task);
      int n = threads();
      if (i == 29) warm = n;
      if (i >= 29 && n > most) most = n;
    }
    CHECK(churn_g.calls == CHURN * LAYERS);
    t_gate_destroy(&churn_g);
    CHECK(most <= warm);
    printf("[%s] %d tasks one after another: %d threads after 30, at most %d after that\n", tr, CHURN, warm,
           most);
  }

  /* C: callbacks that block. */
  llmdd_task_t *blocked[BLOCKED];
  {
    for (int k = 0; k < BLOCKED; k++) {
      t_gate_init(&blocked_g[k], 0, -1);
      blocked[k] = start(p, sc.cache_id, &blocked_g[k], (uint64_t)(MANY + k));
    }
    /* Every one of them is inside its callback at the same time. */
    for (int k = 0; k < BLOCKED; k++) CHECK(t_gate_wait_calls(&blocked_g[k], 1, 20000));
    for (int k = 0; k < OTHERS; k++) {
      t_gate_init(&other_g[k], 1, -1);
      llmdd_task_t *task = start(p, sc.cache_id, &other_g[k], (uint64_t)(MANY + BLOCKED + k));
      CHECK_OK(llmdd_task_synchronize(task, 20000));
      llmdd_task_free(task);
      t_gate_destroy(&other_g[k]);
    }
    CHECK(t_peer_call(ch.parent, blocks(CMD_HAS, MANY + BLOCKED, OTHERS)) == 1);
    CHECK(t_peer_call(ch.parent, blocks(CMD_EMPTY, MANY, BLOCKED)) == 1);
    /* A blocked task times out on time, then finishes once released. */
    double t0 = t_now_ms();
    CHECK_STATUS(llmdd_task_synchronize(blocked[0], 50), LLMDD_TIMEOUT);
    CHECK(t_now_ms() - t0 >= 45);
    t_gate_open(&blocked_g[0]);
    CHECK_OK(llmdd_task_synchronize(blocked[0], 20000));
    llmdd_task_free(blocked[0]);
    CHECK(t_peer_call(ch.parent, blocks(CMD_HAS, MANY, 1)) == 1);
    /* Freeing a blocked task waits for its running callback, and only for it. */
    volatile int go = 0;
    opener o = {&blocked_g[1], 1, &go, 100};
    pthread_t th;
    pthread_create(&th, NULL, open_later, &o);
    go = 1;
    t0 = t_now_ms();
    llmdd_task_free(blocked[1]);
    double waited = t_now_ms() - t0;
    pthread_join(th, NULL);
    CHECK(waited >= 80);
    usleep(50 * 1000);
    CHECK(t_gate_calls(&blocked_g[1]) == 1);
    CHECK(t_peer_call(ch.parent, blocks(CMD_EMPTY, MANY + 1, 1)) == 1);
    printf("[%s] %d callbacks blocked at once; %d other tasks finished meanwhile; free waited %.1f ms\n", tr,
           BLOCKED, OTHERS, waited);
  }

  /* D: finalize with the remaining blocked callbacks. */
  {
    volatile int go = 0;
    opener o = {&blocked_g[2], BLOCKED - 2, &go, 100};
    pthread_t th;
    pthread_create(&th, NULL, open_later, &o);
    go = 1;
    double t0 = t_now_ms();
    CHECK_OK(llmdd_finalize(p));
    double waited = t_now_ms() - t0;
    pthread_join(th, NULL);
    CHECK(waited >= 80);
    usleep(50 * 1000);
    for (int k = 2; k < BLOCKED; k++) {
      CHECK(t_gate_calls(&blocked_g[k]) == 1);
      CHECK_STATUS(llmdd_task_synchronize(blocked[k], 0), LLMDD_FAILED);
      CHECK(strstr(llmdd_last_error_message(), "cancelled") != NULL);
      CHECK_OK(llmdd_task_get_results(blocked[k], 0, &res, 1));
      CHECK(res == LLMDD_TASK_RESULT_NOT_STARTED);
      llmdd_task_free(blocked[k]);
      t_gate_destroy(&blocked_g[k]);
    }
    t_gate_destroy(&blocked_g[0]);
    t_gate_destroy(&blocked_g[1]);
    llmdd_destroy(p);
    CHECK(t_peer_call(ch.parent, blocks(CMD_EMPTY, MANY + 2, BLOCKED - 2)) == 1);
    int left = threads();
    CHECK(left == base);
    printf("[%s] finalize waited %.1f ms for %d running callbacks; %d threads left (%d before init)\n", tr,
           waited, BLOCKED - 2, left, base);
  }

  t_peer_stop(ch.parent, pid);
  t_mem_free(&src);
}

int main(void) {
  for (int tcp = 0; tcp < 2; tcp++) run(tcp);
  return t_finish("test_async_pool");
}
