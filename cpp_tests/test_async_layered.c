/* Layer-wise async push (spec §8 flow 5) with real overlap, over the
 * same-host path and over TCP. The prompt (client) links to the decoder
 * (server), both remote-cache-accessible, and pushes a 32-layer (64-tensor)
 * paged cache with llmdd_transfer_cache_async. Its layer synchronizer blocks
 * until the test releases layer i; before releasing i+1 the decoder process
 * confirms, by polling its own memory, that layer i arrived byte-exact and
 * reports the arrival time. Checks: every layer arrives intact and in order,
 * the synchronizer is called once per layer in ascending order with timeout
 * -1, and llmdd_task_synchronize returns within one layer's transfer time
 * (+10 ms, measured in the same run, plus twice the largest scheduling delay
 * seen in the run: two threads must wake) of releasing the last layer. Over TCP the
 * decoder is also stopped (SIGSTOP) while layer STOP_LAYER is released: that
 * layer cannot complete, yet the synchronizer for the next layer must be
 * called, which proves the callback for L+1 overlaps the transfer of L.
 * Prints the per-layer times and the synchronize figure for both transports. */
#include <sched.h>

#include "t_async.h"
#include "t_dataplane.h"

#define P_ID 61
#define D_ID 62
#define LAYERS 32
#define NT (2 * LAYERS)
#define NB 64                   /* blocks per tensor */
#define BLK (32 * 1024)         /* bytes per block */
#define K 32                    /* blocks pushed per tensor: 1 MiB, 2 MiB per layer */
#define SEED 71
#define STOP_LAYER 10           /* TCP: decoder stopped while this layer is released */

static uint64_t SB[K], DB[K];

static void block_maps(void) {
  for (int j = 0; j < K; j++) {
    SB[j] = (uint64_t)((j * 5 + 3) % NB); /* scattered source blocks */
    DB[j] = (uint64_t)(j < K / 2 ? j + 1 : NB - K + j); /* two runs at the destination */
  }
}

/* ---------- decoder (server, receiver) ---------- */

static t_mem d_mem;
static uint8_t *d_want; /* expected bytes of one layer: 2 tensors x K blocks */

#define CMD_PREP (1ull << 56)   /* | layer: compute the expected bytes of a layer */
#define CMD_POLL (2ull << 56)   /* | layer: wait for it, reply arrival time in us */
#define CMD_VERIFY (3ull << 56) /* whole memory vs model; reply 1 if equal */

static void d_setup(t_peer *self, llmdd_instance_t *d) {
  d_mem = t_mem_new(NT, (uint64_t)NB * BLK);
  d_want = malloc(2ull * K * BLK);
  t_async_dst(self, d, &d_mem, NB, BLK, NULL, 0, 0);
}

static int layer_arrived(uint32_t l) {
  T_BARRIER();
  for (uint32_t k = 0; k < 2; k++)
    for (int j = 0; j < K; j++)
      if (memcmp(d_mem.p[2 * l + k] + DB[j] * BLK, d_want + ((uint64_t)k * K + j) * BLK, BLK) != 0) return 0;
  return 1;
}

static uint64_t d_cmd(t_peer *self, llmdd_instance_t *d, uint64_t c) {
  (void)self;
  (void)d;
  uint64_t op = c & (0xffull << 56), l = c & 0xffff;
  if (op == CMD_PREP) {
    for (uint32_t k = 0; k < 2; k++)
      for (int j = 0; j < K; j++)
        t_fill(d_want + ((uint64_t)k * K + j) * BLK, BLK, SEED, (uint32_t)(2 * l + k), SB[j] * BLK);
    return 1;
  }
  if (op == CMD_POLL) {
    double end = t_now_ms() + 20000;
    while (!layer_arrived((uint32_t)l)) {
      if (t_now_ms() > end) return 0;
      sched_yield();
    }
    return (uint64_t)(t_now_ms() * 1000.0);
  }
  if (op == CMD_VERIFY) {
    uint64_t bad = 0;
    for (uint32_t t = 0; t < NT; t++) {
      for (int b = 0; b < NB; b++) {
        int j = -1;
        for (int x = 0; x < K; x++)
          if ((int)DB[x] == b) j = x;
        const uint8_t *p = d_mem.p[t] + (uint64_t)b * BLK;
        if (j < 0)
          bad += !t_all(p, BLK, 0);
        else
          bad += !t_verify(p, BLK, SEED, t, SB[j] * BLK);
      }
    }
    if (bad) fprintf(stderr, "[decoder] %llu blocks differ from the model\n", (unsigned long long)bad);
    return bad == 0;
  }
  return 0;
}

/* ---------- prompt (client, sender) ---------- */

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void run(int tcp) {
  const char *tr = t_tr_name(tcp);
  t_peer peer;
  memset(&peer, 0, sizeof peer);
  peer.cluster = D_ID;
  peer.port = t_free_port();
  peer.opts = t_opts_make(tcp, 1, NULL, NULL);
  peer.opts.o[peer.opts.n++] = (llmdd_option_t){"llm.SyncKvCacheWaitTime", "10000"};
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
  t_gate_init(&g, 0, -1);
  llmdd_transfer_config_t cfg = t_cfg_key(llmdd_blocks_cache_key(D_ID, 0), -1, -1, -1, -1, 0);
  llmdd_task_t *task = NULL;
  REQUIRE_OK(llmdd_transfer_cache_async(p, sc.cache_id, t_gate_sync, &g, &cfg, 1, SB, K, DB, K, 0, &task));

  double rel[LAYERS], arr[LAYERS], per[LAYERS];
  int overlapped = 0, lost = 0;
  double sync_ms = -1, sched_max = 0;
  for (int i = 0; i < LAYERS && !lost; i++) {
    CHECK(t_peer_call(ch.parent, CMD_PREP | (uint64_t)i) == 1);
    double late = t_sched_delay_ms();
    if (late > sched_max) sched_max = late;
    /* The synchronizer for layer i is called without the test doing anything
     * but releasing layer i-1: it overlaps that layer's transfer. */
    CHECK(t_gate_wait_calls(&g, i + 1, 10000));
    if (i > 0 && g.t_enter[i] < arr[i - 1]) overlapped++;
    int stop = tcp && i == STOP_LAYER;
    if (stop) {
      int st = 0;
      kill(pid, SIGSTOP);
      CHECK(waitpid(pid, &st, WUNTRACED) == pid && WIFSTOPPED(st));
    }
    rel[i] = t_now_ms();
    t_gate_release(&g, i + 1);
    if (stop) {
      /* Layer i cannot complete (the server cannot answer the write), yet
       * the synchronizer for layer i+1 runs. */
      int entered = t_gate_wait_calls(&g, i + 2, 3000);
      CHECK(entered);
      printf("[%s] decoder stopped during layer %d: synchronizer for layer %d %s\n", tr, i, i + 1,
             entered ? "was called meanwhile (overlap)" : "was NOT called");
      kill(pid, SIGCONT);
    }
    t_send(ch.parent, CMD_POLL | (uint64_t)i);
    if (i == LAYERS - 1) {
      CHECK_OK(llmdd_task_synchronize(task, -1));
      sync_ms = t_now_ms() - rel[i];
    }
    uint64_t a = t_recv(ch.parent, 60000);
    if (a == 0) {
      fprintf(stderr, "[%s] layer %d did not arrive intact\n", tr, i);
      CHECK(a != 0);
      lost = 1;
      break;
    }
    arr[i] = a / 1000.0;
    per[i] = arr[i] - rel[i];
    if (stop) per[i] = -1; /* not a transfer time */
  }
  if (lost) {
    t_gate_open(&g);
    CHECK_OK(llmdd_task_synchronize(task, -1));
  } else {
    double sorted[LAYERS];
    int n = 0;
    for (int i = 0; i < LAYERS; i++)
      if (per[i] >= 0) sorted[n++] = per[i];
    qsort(sorted, n, sizeof(double), cmp_double);
    double med = sorted[n / 2], max = sorted[n - 1];
    double mib = 2.0 * K * BLK / 1048576.0;
    printf("[%s] %d layers x %.1f MiB: release->arrival per layer (%d timed) median %.3f ms (%.2f GB/s), min %.3f ms, max %.3f ms\n",
           tr, LAYERS, mib, n, med, 2.0 * K * BLK / (med * 1e6), sorted[0], max);
    printf("[%s] last layer released -> llmdd_task_synchronize returned: %.3f ms (limit: max layer %.3f ms + 10 ms"
           " + 2 x largest scheduling delay %.3f ms)\n",
           tr, sync_ms, max, sched_max);
    printf("[%s] synchronizer for layer L+1 entered before the decoder saw layer L: %d of %d layers\n", tr,
           overlapped, LAYERS - 1);
    CHECK(sync_ms >= 0 && sync_ms <= max + 10.0 + 2 * sched_max);
  }
  uint32_t res = 0;
  CHECK_OK(llmdd_task_get_results(task, 0, &res, 1));
  CHECK(res == LLMDD_SUCCESS);
  CHECK(g.calls == LAYERS);
  CHECK(g.bad_timeout == 0);
  CHECK(g.out_of_order == 0);
  for (int i = 0; i < g.calls && i < LAYERS; i++) CHECK(g.layers[i] == (uint32_t)i);
  CHECK(t_peer_call(ch.parent, CMD_VERIFY) == 1);
  llmdd_task_free(task);
  t_gate_destroy(&g);

  CHECK_OK(t_unlink(p, D_ID, peer.port));
  t_peer_stop(ch.parent, pid);
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
  t_mem_free(&src);
}

int main(void) {
  block_maps();
  for (int tcp = 0; tcp < 2; tcp++) run(tcp);
  return t_finish("test_async_layered");
}
