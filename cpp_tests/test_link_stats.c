/* Per-link statistics and the link-state query (llmdd extensions), with
 * prompts in child processes on 127.0.0.1 and the decoder in this process:
 *
 * A. Counters are exact for known transfers on every path: same-host
 *    (registered memory: process_vm_readv), same-host from a memory pool
 *    (mapped pool: memcpy), TCP (llmdd.SameHost=off; pulls and pushes, and
 *    what the serving side counts), and same process. On the acl re-run
 *    every link is HCCL, and the test expects that path instead.
 * B. Error counts are exact after injected failures: a key naming no cache
 *    on the peer (LLM_KV_CACHE_NOT_EXIST, counted by the peer as refused),
 *    a block index out of range (LLM_PARAM_INVALID), and transfers over the
 *    link of a killed peer (LLM_LINK_FAILED); the last error's status,
 *    message and time follow.
 * C. The state follows LINKING (a server that accepts and never answers) →
 *    FAILED (that link_clusters failed) → UNLINKED (unlink), then link →
 *    LINKED → peer killed → FAILED with a reason → unlink → UNLINKED;
 *    llmdd_list_links lists what is not UNLINKED.
 * D. Reset zeroes one link's counters, or every link's. */
#include "llmdd_test_blocks.h"
#include "t_dataplane.h"

#include <pthread.h>

#define D_ID 2
#define SH_ID 11   /* same host, registered memory */
#define POOL_ID 12 /* same host, memory pool */
#define TCP_ID 13  /* TCP, remote-cache-accessible (pushes) */
#define KILL_ID 14 /* killed mid-test */
#define PULL_BYTES (3ull * 2 * TB_BLOCK_BYTES) /* t_blk_pull: 3 blocks x 2 tensors */

/* Commands to a prompt: a field of its stats of the link to the decoder. */
#define CMD_FIELD(f) ((5ull << 56) | (uint64_t)(f))
enum { F_SERVED_READS = 1, F_SERVED_READ_BYTES, F_SERVED_WRITES, F_SERVED_WRITE_BYTES, F_REFUSED, F_OPS };
#define NO_STATS 0xFFFFFFFFFFFFFFFFull

static int on_acl(void) {
  const char *b = getenv("LLMDD_TEST_BACKEND");
  return b && strcmp(b, "acl") == 0;
}

static uint64_t prompt_cmd(t_peer *self, llmdd_instance_t *p, uint64_t cmd) {
  (void)self;
  if (cmd >> 56 != 5) return NO_STATS;
  llmdd_link_stats_t st;
  if (llmdd_get_link_stats(p, D_ID, &st) != LLMDD_SUCCESS) return NO_STATS;
  switch (cmd & 0xFF) {
    case F_SERVED_READS: return st.served_requests[LLMDD_DIR_PULL];
    case F_SERVED_READ_BYTES: return st.served_bytes[LLMDD_DIR_PULL];
    case F_SERVED_WRITES: return st.served_requests[LLMDD_DIR_PUSH];
    case F_SERVED_WRITE_BYTES: return st.served_bytes[LLMDD_DIR_PUSH];
    case F_REFUSED: return st.served_refused;
    case F_OPS: {
      uint64_t n = st.failed_ops;
      for (int d = 0; d < 2; d++)
        for (int k = 0; k < LLMDD_PATH_COUNT; k++) n += st.ops[d][k];
      return n;
    }
  }
  return NO_STATS;
}

static t_blk g_src; /* the prompt's registered source (child memory) */

static void registered_setup(t_peer *self, llmdd_instance_t *p) {
  REQUIRE_OK(t_blk_register(p, &g_src, self->cluster, (uint32_t)self->cluster));
}

/* The same blocks cache (pattern, key) allocated from the prompt's pool. */
static void pool_setup(t_peer *self, llmdd_instance_t *p) {
  int64_t dims[2] = {TB_BLOCKS, TB_BLOCK_BYTES};
  llmdd_cache_desc_t d = t_desc(LLMDD_PLACEMENT_DEVICE, LLMDD_DT_UINT8, 2, 2, dims);
  llmdd_cache_key_t key = llmdd_blocks_cache_key(self->cluster, 0);
  llmdd_cache_t c;
  REQUIRE_OK(llmdd_allocate_blocks_cache(p, &d, &key, &c));
  for (uint32_t t = 0; t < 2; t++)
    t_fill((uint8_t *)(uintptr_t)c.tensor_addrs[t], TB_BLOCKS * TB_BLOCK_BYTES,
           (uint32_t)self->cluster, t, 0);
}

typedef struct {
  t_peer peer;
  t_chan_pair ch;
  pid_t pid;
} prompt;

static void start(prompt *pr, uint64_t id, t_opts opts, void (*setup)(t_peer *, llmdd_instance_t *)) {
  memset(pr, 0, sizeof *pr);
  pr->peer.cluster = id;
  pr->peer.port = t_free_port();
  pr->peer.opts = opts;
  pr->peer.setup = setup;
  pr->peer.cmd = prompt_cmd;
  pr->ch = t_chan_new();
  pr->pid = t_peer_start(&pr->peer, &pr->ch);
}

static uint64_t field(prompt *pr, int f) { return t_peer_call(pr->ch.parent, CMD_FIELD(f)); }

static llmdd_link_stats_t stats_of(llmdd_instance_t *d, uint64_t cluster) {
  llmdd_link_stats_t st;
  memset(&st, 0xA5, sizeof st);
  CHECK_OK(llmdd_get_link_stats(d, cluster, &st));
  return st;
}

static uint32_t state_of(llmdd_instance_t *d, uint64_t cluster, char *why, size_t n) {
  uint32_t s = 99;
  CHECK_OK(llmdd_query_link_state(d, cluster, &s, why, n));
  return s;
}

static uint64_t sum_ops(const llmdd_link_stats_t *st, int dir) {
  uint64_t n = 0;
  for (int k = 0; k < LLMDD_PATH_COUNT; k++) n += st->ops[dir][k];
  return n;
}

/* Exactly `n` pulls and `m` pushes of `bytes` each on `path`, nothing else. */
static void check_counts(const llmdd_link_stats_t *st, uint32_t path, uint64_t n, uint64_t m,
                         uint64_t bytes, const char *what) {
  int ok = 1;
  for (uint32_t k = 0; k < LLMDD_PATH_COUNT; k++) {
    ok &= st->ops[LLMDD_DIR_PULL][k] == (k == path ? n : 0);
    ok &= st->bytes[LLMDD_DIR_PULL][k] == (k == path ? n * bytes : 0);
    ok &= st->ops[LLMDD_DIR_PUSH][k] == (k == path ? m : 0);
    ok &= st->bytes[LLMDD_DIR_PUSH][k] == (k == path ? m * bytes : 0);
  }
  ok &= st->latency_count[LLMDD_DIR_PULL] == n && st->latency_count[LLMDD_DIR_PUSH] == m;
  for (int dir = 0; dir < 2; dir++) {
    uint64_t c = st->latency_count[dir];
    ok &= c == 0 ? (st->latency_p50_ns[dir] == 0 && st->latency_max_ns[dir] == 0)
                 : (st->latency_p50_ns[dir] > 0 && st->latency_p50_ns[dir] <= st->latency_p99_ns[dir] &&
                    st->latency_p99_ns[dir] <= st->latency_max_ns[dir]);
  }
  ok &= st->in_flight == 0 && st->version == LLMDD_LINK_STATS_VERSION && st->path == path;
  for (size_t i = 0; i < sizeof st->reserved; i++) ok &= st->reserved[i] == 0;
  if (!ok)
    fprintf(stderr, "[%s] path %u: pulls %llu/%llu B, pushes %llu/%llu B, timed %llu+%llu, p50 %llu ns\n",
            what, st->path, (unsigned long long)st->ops[0][path], (unsigned long long)st->bytes[0][path],
            (unsigned long long)st->ops[1][path], (unsigned long long)st->bytes[1][path],
            (unsigned long long)st->latency_count[0], (unsigned long long)st->latency_count[1],
            (unsigned long long)st->latency_p50_ns[0]);
  CHECK(ok);
}

static uint32_t path_or_hccl(uint32_t p) { return on_acl() ? LLMDD_PATH_HCCL : p; }

/* n verified pulls of the peer's blocks, then `m` pushes of them back. */
static void transfers(llmdd_instance_t *d, t_blk *dst, uint64_t remote, int n, int m) {
  for (int i = 0; i < n; i++) CHECK_OK(t_blk_pull_verify(d, dst, remote));
  llmdd_cache_key_t key = llmdd_blocks_cache_key(remote, 0);
  for (int i = 0; i < m; i++)
    CHECK_OK(llmdd_push_blocks(d, &key, dst->cache.cache_id, TB_DST, 3, TB_SRC, 3, NULL));
}

static void case_paths_and_errors(prompt *sh, prompt *pool, prompt *tcp, llmdd_instance_t *d,
                                  llmdd_instance_t *d_ra, t_blk *dst, t_blk *dst_ra) {
  /* Same host, registered memory: 5 pulls, then 2 failures of each kind. */
  CHECK_OK(t_link(d, SH_ID, sh->peer.port));
  transfers(d, dst, SH_ID, 5, 0);
  llmdd_cache_key_t missing = llmdd_blocks_cache_key(SH_ID, 99);
  for (int i = 0; i < 2; i++)
    CHECK_STATUS(llmdd_pull_blocks(d, &missing, dst->cache.cache_id, TB_SRC, 3, TB_DST, 3, NULL),
                 LLMDD_KV_CACHE_NOT_EXIST);
  llmdd_cache_key_t key = llmdd_blocks_cache_key(SH_ID, 0);
  uint64_t far[3] = {0, 1, 100};
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t before = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
  CHECK_STATUS(llmdd_pull_blocks(d, &key, dst->cache.cache_id, TB_SRC, 3, far, 3, NULL),
               LLMDD_PARAM_INVALID);
  llmdd_link_stats_t st = stats_of(d, SH_ID);
  check_counts(&st, path_or_hccl(LLMDD_PATH_SAME_HOST), 5, 0, PULL_BYTES, "same host");
  CHECK(st.remote_cluster_id == SH_ID && st.dialed == 1 && st.comm_id == 0);
  CHECK(st.state == LLMDD_LINK_STATE_LINKED);
  CHECK(st.failed_ops == 3);
  CHECK(st.errors[llmdd_stats_error_slot(LLMDD_KV_CACHE_NOT_EXIST)] == 2);
  CHECK(st.errors[llmdd_stats_error_slot(LLMDD_PARAM_INVALID)] == 1);
  CHECK(st.last_error_status == LLMDD_PARAM_INVALID);
  CHECK(strstr(st.last_error_message, "100") != NULL);
  CHECK(st.last_error_unix_ns >= before && st.last_error_unix_ns >= st.since_unix_ns);
  CHECK(st.linked_unix_ns > 0 && st.linked_unix_ns <= st.since_unix_ns);
  /* The prompt served no byte (one-sided copies) and refused the two lookups. */
  CHECK(field(sh, F_SERVED_READS) == 0 && field(sh, F_SERVED_READ_BYTES) == 0);
  CHECK(field(sh, F_REFUSED) == 2);
  CHECK(field(sh, F_OPS) == 0);

  /* Same host, from the prompt's pool (mapped here): 4 pulls. */
  CHECK_OK(t_link(d, POOL_ID, pool->peer.port));
  transfers(d, dst, POOL_ID, 4, 0);
  st = stats_of(d, POOL_ID);
  check_counts(&st, path_or_hccl(LLMDD_PATH_SAME_HOST), 4, 0, PULL_BYTES, "pool");
  CHECK(st.failed_ops == 0 && st.last_error_status == LLMDD_SUCCESS &&
        st.last_error_message[0] == '\0' && st.last_error_unix_ns == 0);

  /* TCP, remote-cache-accessible: 3 pulls and 2 pushes; the prompt serves one
   * Read or Write request per transfer (6 KiB: no striping). */
  CHECK_OK(t_link(d_ra, TCP_ID, tcp->peer.port));
  transfers(d_ra, dst_ra, TCP_ID, 3, 2);
  st = stats_of(d_ra, TCP_ID);
  check_counts(&st, path_or_hccl(LLMDD_PATH_TCP), 3, 2, PULL_BYTES, "tcp");
  CHECK(st.failed_ops == 0);
  if (!on_acl()) {
    CHECK(field(tcp, F_SERVED_READS) == 3 && field(tcp, F_SERVED_READ_BYTES) == 3 * PULL_BYTES);
    CHECK(field(tcp, F_SERVED_WRITES) == 2 && field(tcp, F_SERVED_WRITE_BYTES) == 2 * PULL_BYTES);
  } else {
    CHECK(field(tcp, F_SERVED_READS) == 0 && field(tcp, F_SERVED_WRITES) == 0);
  }
  CHECK(field(tcp, F_REFUSED) == 0);
  /* A key of no cache: refused here (remote-accessible mode has the table). */
  llmdd_cache_key_t none = llmdd_blocks_cache_key(TCP_ID, 99);
  CHECK_STATUS(llmdd_pull_blocks(d_ra, &none, dst_ra->cache.cache_id, TB_SRC, 3, TB_DST, 3, NULL),
               LLMDD_KV_CACHE_NOT_EXIST);
  st = stats_of(d_ra, TCP_ID);
  CHECK(st.failed_ops == 1 && st.errors[llmdd_stats_error_slot(LLMDD_KV_CACHE_NOT_EXIST)] == 1);

  /* D. Reset: one link, then all. */
  CHECK_OK(llmdd_reset_link_stats(d, SH_ID));
  st = stats_of(d, SH_ID);
  check_counts(&st, path_or_hccl(LLMDD_PATH_SAME_HOST), 0, 0, PULL_BYTES, "reset");
  CHECK(st.failed_ops == 0 && st.last_error_status == 0 && st.last_error_message[0] == '\0');
  for (int i = 0; i < LLMDD_STATS_ERROR_SLOTS; i++) CHECK(st.errors[i] == 0);
  CHECK(st.since_unix_ns > st.linked_unix_ns);
  st = stats_of(d, POOL_ID);
  CHECK(sum_ops(&st, LLMDD_DIR_PULL) == 4); /* untouched */
  transfers(d, dst, SH_ID, 1, 0);
  st = stats_of(d, SH_ID);
  check_counts(&st, path_or_hccl(LLMDD_PATH_SAME_HOST), 1, 0, PULL_BYTES, "after reset");
  CHECK_OK(llmdd_reset_all_link_stats(d));
  st = stats_of(d, SH_ID);
  check_counts(&st, path_or_hccl(LLMDD_PATH_SAME_HOST), 0, 0, PULL_BYTES, "reset all");
  st = stats_of(d, POOL_ID);
  check_counts(&st, path_or_hccl(LLMDD_PATH_SAME_HOST), 0, 0, PULL_BYTES, "reset all (pool)");
  CHECK_STATUS(llmdd_reset_link_stats(d, 999), LLMDD_NOT_YET_LINK);
}

/* Both ends in this process: the same-process path (memcpy). */
static void case_same_process(llmdd_instance_t *d, t_blk *dst) {
  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 21, &p));
  uint16_t port = t_free_port();
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
  REQUIRE_OK(t_init(p, listen, NULL, 0));
  t_blk src;
  REQUIRE_OK(t_blk_register(p, &src, 21, 21));
  CHECK_OK(t_link(d, 21, port));
  transfers(d, dst, 21, 3, 0);
  llmdd_link_stats_t st = stats_of(d, 21);
  check_counts(&st, path_or_hccl(LLMDD_PATH_SAME_PROCESS), 3, 0, PULL_BYTES, "same process");
  /* The accepting side counts nothing it did not start. */
  st = stats_of(p, D_ID);
  check_counts(&st, path_or_hccl(LLMDD_PATH_SAME_PROCESS), 0, 0, PULL_BYTES, "accepting side");
  CHECK(st.dialed == 0 && st.state == LLMDD_LINK_STATE_LINKED);
  CHECK_OK(t_unlink(d, 21, port));
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
  t_blk_free(&src);
}

static int listed(llmdd_instance_t *d, uint64_t cluster, uint32_t *state, uint32_t *dialed) {
  llmdd_link_entry_t e[16];
  size_t n = 0;
  CHECK_OK(llmdd_list_links(d, e, 16, &n));
  for (size_t i = 0; i < n && i < 16; i++)
    if (e[i].remote_cluster_id == cluster) {
      if (state) *state = e[i].state;
      if (dialed) *dialed = e[i].dialed;
      return 1;
    }
  return 0;
}

typedef struct {
  llmdd_instance_t *d;
  uint16_t port;
  uint32_t status;
} dial_arg;

static void *dial_main(void *a) {
  dial_arg *x = (dial_arg *)a;
  x->status = t_link1(x->d, 31, "127.0.0.1", x->port, 1500, NULL);
  return NULL;
}

/* C, first half: LINKING while the dial waits on a server that never
 * answers, FAILED once it gave up, UNLINKED after an unlink. */
static void case_linking_then_failed(llmdd_instance_t *d) {
  uint16_t port = 0;
  int srv = t_bound_socket(8, &port); /* accepts (backlog), never answers */
  char why[256];
  CHECK(state_of(d, 31, why, sizeof why) == LLMDD_LINK_STATE_UNLINKED && why[0] == '\0');
  dial_arg x = {d, port, 99};
  pthread_t th;
  if (pthread_create(&th, NULL, dial_main, &x) != 0) exit(2);
  int seen = 0;
  uint32_t ls = 0, dialed = 0;
  for (double t0 = t_now_ms(); !seen && t_now_ms() - t0 < 1000; usleep(1000))
    seen = state_of(d, 31, NULL, 0) == LLMDD_LINK_STATE_LINKING;
  CHECK(seen);
  CHECK(listed(d, 31, &ls, &dialed) && ls == LLMDD_LINK_STATE_LINKING && dialed == 1);
  llmdd_link_stats_t st;
  CHECK_STATUS(llmdd_get_link_stats(d, 31, &st), LLMDD_NOT_YET_LINK);
  pthread_join(th, NULL);
  CHECK(x.status == LLMDD_LINK_FAILED);
  CHECK(state_of(d, 31, why, sizeof why) == LLMDD_LINK_STATE_FAILED);
  printf("failed link_clusters: \"%s\"\n", why);
  CHECK(strstr(why, "link_clusters failed") != NULL);
  CHECK(listed(d, 31, &ls, NULL) && ls == LLMDD_LINK_STATE_FAILED);
  /* A reason cut to a small buffer stays NUL-terminated. */
  char small[8];
  memset(small, 'x', sizeof small);
  CHECK(state_of(d, 31, small, sizeof small) == LLMDD_LINK_STATE_FAILED);
  CHECK(small[7] == '\0' && strlen(small) == 7);
  CHECK_OK(t_unlink1(d, 31, NULL, 0, true, NULL));
  CHECK(state_of(d, 31, why, sizeof why) == LLMDD_LINK_STATE_UNLINKED && why[0] == '\0');
  CHECK(!listed(d, 31, NULL, NULL));
  close(srv);
}

/* C, second half: LINKED, the peer killed → FAILED (transfers counted as
 * LINK_FAILED), unlink → UNLINKED and no stats. */
static void case_killed(prompt *k, llmdd_instance_t *d, t_blk *dst) {
  CHECK(state_of(d, KILL_ID, NULL, 0) == LLMDD_LINK_STATE_UNLINKED);
  CHECK_OK(t_link(d, KILL_ID, k->peer.port));
  uint32_t ls = 0, dialed = 0;
  CHECK(state_of(d, KILL_ID, NULL, 0) == LLMDD_LINK_STATE_LINKED);
  CHECK(listed(d, KILL_ID, &ls, &dialed) && ls == LLMDD_LINK_STATE_LINKED && dialed == 1);
  transfers(d, dst, KILL_ID, 2, 0);
  kill(k->pid, SIGKILL);
  CHECK(t_wait(k->pid, 5000) == 128 + SIGKILL);
  char why[256] = "";
  uint32_t s = 0;
  for (double t0 = t_now_ms(); t_now_ms() - t0 < 5000; usleep(2000))
    if ((s = state_of(d, KILL_ID, why, sizeof why)) == LLMDD_LINK_STATE_FAILED) break;
  CHECK(s == LLMDD_LINK_STATE_FAILED && why[0] != '\0');
  printf("killed peer: \"%s\"\n", why);
  CHECK(listed(d, KILL_ID, &ls, NULL) && ls == LLMDD_LINK_STATE_FAILED);
  usleep(100000); /* the death watch marks the link dead (it sees the exit first) */
  for (int i = 0; i < 2; i++) CHECK_STATUS(t_blk_pull(d, dst, KILL_ID), LLMDD_LINK_FAILED);
  llmdd_link_stats_t st = stats_of(d, KILL_ID);
  CHECK(st.state == LLMDD_LINK_STATE_FAILED);
  CHECK(sum_ops(&st, LLMDD_DIR_PULL) == 2);
  CHECK(st.failed_ops == 2 && st.errors[llmdd_stats_error_slot(LLMDD_LINK_FAILED)] == 2);
  CHECK(st.last_error_status == LLMDD_LINK_FAILED && strstr(st.last_error_message, "dead") != NULL);
  CHECK(st.in_flight == 0);
  CHECK_OK(t_unlink1(d, KILL_ID, "127.0.0.1", k->peer.port, false, NULL));
  CHECK(state_of(d, KILL_ID, why, sizeof why) == LLMDD_LINK_STATE_UNLINKED && why[0] == '\0');
  CHECK_STATUS(llmdd_get_link_stats(d, KILL_ID, &st), LLMDD_NOT_YET_LINK);
  CHECK(!listed(d, KILL_ID, NULL, NULL));
}

static void case_bad_input(llmdd_instance_t *d) {
  llmdd_link_stats_t st;
  uint32_t s;
  size_t n = 0;
  char why[4];
  CHECK_STATUS(llmdd_get_link_stats(NULL, SH_ID, &st), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_get_link_stats(d, SH_ID, NULL), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_query_link_state(d, SH_ID, NULL, why, sizeof why), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_query_link_state(d, SH_ID, &s, NULL, 4), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_list_links(d, NULL, 4, &n), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_list_links(d, NULL, 0, NULL), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_reset_link_stats(NULL, 1), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_reset_all_link_stats(NULL), LLMDD_PARAM_INVALID);
  /* Counting only, and a buffer too small: the first entries and the count. */
  CHECK_OK(llmdd_list_links(d, NULL, 0, &n));
  CHECK(n == 2); /* same host and pool (the TCP link is d_ra's; 21 and 31 are unlinked) */
  llmdd_link_entry_t one[1];
  memset(one, 0xA5, sizeof one);
  size_t n2 = 0;
  CHECK_OK(llmdd_list_links(d, one, 1, &n2));
  CHECK(n2 == n && one[0].remote_cluster_id == SH_ID && one[0].comm_id == 0);
  for (size_t i = 0; i < sizeof one[0].reserved; i++) CHECK(one[0].reserved[i] == 0);
  /* Not initialized: LLMDD_FAILED. */
  llmdd_instance_t *u = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, 77, &u));
  CHECK_STATUS(llmdd_get_link_stats(u, SH_ID, &st), LLMDD_FAILED);
  CHECK_STATUS(llmdd_query_link_state(u, SH_ID, &s, NULL, 0), LLMDD_FAILED);
  CHECK_STATUS(llmdd_list_links(u, NULL, 0, &n), LLMDD_FAILED);
  CHECK_STATUS(llmdd_reset_all_link_stats(u), LLMDD_FAILED);
  llmdd_destroy(u);
  CHECK(llmdd_stats_error_slot(LLMDD_FAILED) == 0);
  CHECK(llmdd_stats_error_slot(LLMDD_TIMEOUT) == 0x1A);
  CHECK(llmdd_stats_error_slot(LLMDD_SUSPECT_REMOTE_ERROR) == 30);
  CHECK(llmdd_stats_error_slot(12345) == 31);
}

int main(void) {
  prompt sh, pool, tcp, kill9;
  start(&sh, SH_ID, t_opts_make(0, 0, NULL, NULL), registered_setup);
  start(&pool, POOL_ID, t_opts_make(0, 0, T_POOL_DEV, NULL), pool_setup);
  start(&tcp, TCP_ID, t_opts_make(1, 1, NULL, NULL), registered_setup);
  start(&kill9, KILL_ID, t_opts_make(0, 0, NULL, NULL), registered_setup);

  llmdd_instance_t *d = NULL, *d_ra = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID, &d));
  REQUIRE_OK(t_init(d, NULL, NULL, 0));
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID, &d_ra));
  t_opts ra = t_opts_make(1, 1, NULL, NULL);
  REQUIRE_OK(t_init(d_ra, NULL, ra.o, ra.n));
  t_blk dst, dst_ra;
  REQUIRE_OK(t_blk_register(d, &dst, 0, 0));
  REQUIRE_OK(t_blk_register(d_ra, &dst_ra, 0, 0));

  case_linking_then_failed(d);
  case_paths_and_errors(&sh, &pool, &tcp, d, d_ra, &dst, &dst_ra);
  case_same_process(d, &dst);
  case_bad_input(d);
  case_killed(&kill9, d, &dst);

  CHECK_OK(t_unlink(d, SH_ID, sh.peer.port));
  CHECK_OK(t_unlink(d, POOL_ID, pool.peer.port));
  CHECK_OK(t_unlink(d_ra, TCP_ID, tcp.peer.port));
  t_peer_stop(sh.ch.parent, sh.pid);
  t_peer_stop(pool.ch.parent, pool.pid);
  t_peer_stop(tcp.ch.parent, tcp.pid);
  CHECK_OK(llmdd_finalize(d));
  CHECK_OK(llmdd_finalize(d_ra));
  llmdd_destroy(d);
  llmdd_destroy(d_ra);
  t_blk_free(&dst);
  t_blk_free(&dst_ra);
  return t_finish("test_link_stats");
}
