/* One decoder linked to two prompt processes; 8 threads per link (16 in all)
 * pull different block sets concurrently for many iterations, each verifying
 * its own destination blocks byte-exactly; at the end the whole destination
 * is compared with the model. Both transports. */
#include "t_dataplane.h"

#include <pthread.h>

#define NT 8
#define BLK 4096
#define PBLK 64
#define THREADS_PER_LINK 8
#define WORKERS (2 * THREADS_PER_LINK)
#define PER 8 /* dst blocks per worker */
#define ITERS 60

static const uint64_t P_IDS[2] = {61, 62};
static const uint32_t SEEDS[2] = {71, 72};

static void p_setup(t_peer *self, llmdd_instance_t *p) {
  static t_mem m;
  uint32_t which = self->cluster == P_IDS[0] ? 0 : 1;
  m = t_mem_new(NT, (uint64_t)PBLK * BLK);
  t_mem_fill(&m, SEEDS[which]);
  llmdd_cache_desc_t d = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, PBLK, BLK);
  llmdd_cache_key_t k = llmdd_blocks_cache_key(self->cluster, 0);
  llmdd_cache_t c;
  REQUIRE_OK(llmdd_register_blocks_cache(p, &d, m.addrs, NT, &k, -1, &c));
  t_send(self->ch, 1);
}

static llmdd_instance_t *g_d;
static int64_t g_dst;
static t_mem g_act;
static uint64_t g_last_src[WORKERS][PER]; /* last source block of each dst block */
static uint32_t g_last_link[WORKERS];
static int g_worker_fail[WORKERS];
static uint64_t g_pulls[WORKERS];

static void *worker(void *arg) {
  int w = (int)(intptr_t)arg;
  uint32_t link = (uint32_t)w % 2;
  uint64_t rng = 0x1234567ull * (uint64_t)(w + 1);
  llmdd_cache_key_t key = llmdd_blocks_cache_key(P_IDS[link], 0);
  for (int it = 0; it < ITERS && !g_worker_fail[w]; it++) {
    uint64_t k = 1 + (uint64_t)(it % PER), src[PER], dst[PER];
    for (uint64_t j = 0; j < k; j++) {
      rng = rng * 6364136223846793005ull + 1442695040888963407ull;
      src[j] = (rng >> 33) % PBLK;
      dst[j] = (uint64_t)w * PER + ((uint64_t)it + j) % PER;
    }
    uint32_t s = llmdd_pull_blocks(g_d, &key, g_dst, src, k, dst, k, NULL);
    if (s != LLMDD_SUCCESS) {
      fprintf(stderr, "worker %d iter %d: %s (%s)\n", w, it, llmdd_status_name(s), llmdd_last_error_message());
      g_worker_fail[w] = 1;
      break;
    }
    g_pulls[w]++;
    for (uint64_t j = 0; j < k; j++) {
      for (uint32_t t = 0; t < NT; t++)
        if (!t_verify(g_act.p[t] + dst[j] * BLK, BLK, SEEDS[link], t, src[j] * BLK)) {
          fprintf(stderr, "worker %d iter %d: tensor %u dst block %llu wrong\n", w, it, t,
                  (unsigned long long)dst[j]);
          g_worker_fail[w] = 1;
        }
      g_last_src[w][dst[j] - (uint64_t)w * PER] = src[j];
    }
    g_last_link[w] = link;
  }
  return NULL;
}

static void run(int tcp) {
  t_peer peers[2];
  t_chan_pair ch[2];
  pid_t pids[2];
  for (int i = 0; i < 2; i++) {
    memset(&peers[i], 0, sizeof peers[i]);
    peers[i].cluster = P_IDS[i];
    peers[i].port = t_free_port();
    peers[i].opts = t_opts_make(tcp, 0, NULL, NULL);
    peers[i].setup = p_setup;
    ch[i] = t_chan_new();
    pids[i] = t_peer_start(&peers[i], &ch[i]);
  }
  for (int i = 0; i < 2; i++) CHECK(t_recv(ch[i].parent, 30000) == 1);
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, 60, &g_d));
  REQUIRE_OK(t_init(g_d, NULL, peers[0].opts.o, peers[0].opts.n));
  g_act = t_mem_new(NT, (uint64_t)WORKERS * PER * BLK);
  llmdd_cache_desc_t d = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, WORKERS * PER, BLK);
  llmdd_cache_t c;
  REQUIRE_OK(llmdd_register_blocks_cache(g_d, &d, g_act.addrs, NT, NULL, -1, &c));
  g_dst = c.cache_id;
  for (int i = 0; i < 2; i++) REQUIRE_OK(t_link(g_d, P_IDS[i], peers[i].port));
  memset(g_last_src, 0xff, sizeof g_last_src);
  memset(g_worker_fail, 0, sizeof g_worker_fail);
  memset(g_pulls, 0, sizeof g_pulls);

  double t0 = t_now_ms();
  pthread_t th[WORKERS];
  for (int w = 0; w < WORKERS; w++) pthread_create(&th[w], NULL, worker, (void *)(intptr_t)w);
  for (int w = 0; w < WORKERS; w++) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 60;
    int rc = pthread_timedjoin_np(th[w], NULL, &ts);
    if (rc != 0) {
      fprintf(stderr, "worker %d did not finish in 60 s\n", w);
      exit(4);
    }
  }
  double ms = t_now_ms() - t0;
  uint64_t total = 0;
  for (int w = 0; w < WORKERS; w++) {
    CHECK(!g_worker_fail[w]);
    CHECK(g_pulls[w] == ITERS);
    total += g_pulls[w];
  }
  printf("%s: %llu concurrent pulls in %.1f ms\n", t_tr_name(tcp), (unsigned long long)total, ms);
  /* whole destination = model (every block written at least once, by its owner) */
  t_mem exp = t_mem_new(NT, g_act.T);
  for (int w = 0; w < WORKERS; w++)
    for (int j = 0; j < PER; j++) {
      uint64_t src = g_last_src[w][j];
      if (src == UINT64_MAX) continue;
      for (uint32_t t = 0; t < NT; t++)
        t_fill(exp.p[t] + ((uint64_t)w * PER + j) * BLK, BLK, SEEDS[w % 2], t, src * BLK);
    }
  CHECK_MEM(&g_act, &exp, t_tr_name(tcp));
  t_mem_free(&exp);

  for (int i = 0; i < 2; i++) CHECK_OK(t_unlink(g_d, P_IDS[i], peers[i].port));
  for (int i = 0; i < 2; i++) t_peer_stop(ch[i].parent, pids[i]);
  CHECK_OK(llmdd_finalize(g_d));
  llmdd_destroy(g_d);
  t_mem_free(&g_act);
}

int main(void) {
  for (int tcp = 0; tcp < 2; tcp++) run(tcp);
  return t_finish("test_concurrency");
}
