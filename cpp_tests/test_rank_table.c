/* Rank-table linking (llmdd_link / llmdd_query_register_mem_status /
 * llmdd_unlink) between THREE processes on 127.0.0.1 (clusters 1, 2, 3 with
 * ranks 0, 1, 2; cluster 3 moves bytes over TCP, the others same-host):
 * - staged link calls make PREPARING deterministic: rank 0 links alone, then
 *   rank 1 (still waiting for rank 2); transfers before OK -> NOT_YET_LINK;
 * - then rank 2 links, every member reaches OK, and every member pulls from
 *   both others (byte-exact, untouched blocks stay zero);
 * - unlink on all; query/unlink/pull afterwards -> NOT_YET_LINK;
 * - relink (all at once) gets comm id 2 and works again;
 * - spec flow 4: rank-table pull with pools (allocate_cache with CacheKey req
 *   0/1, pull_cache into batch slots 0/1, remove_cache_key, deallocate).
 * The parent only coordinates over pipes. */
#include "llmdd_test_blocks.h"
#include "t_rank_table.h"

#define N 3
#define OP(op, arg) (((uint64_t)(op) << 56) | (uint64_t)(arg))
enum {
  C_LINK = 1,     /* link comm "rt"; reply: comm id | status-after-link << 32 | pull status bit */
  C_PROBE,        /* reply: current status | (pull from arg == NOT_YET_LINK) << 8 */
  C_WAIT_OK,      /* arg = comm id; reply: final status | saw PREPARING << 8 */
  C_PULL_ALL,     /* pull from both others and verify; reply: failures */
  C_UNLINK,       /* arg = comm id; reply: failures */
  C_CHECK_GONE,   /* arg = comm id; reply: failures */
  C_FLOW4_P,      /* flow 4, prompt side; reply: failures */
  C_FLOW4_D,      /* flow 4, decoder side; reply: failures */
  C_FLOW4_LINK,   /* link comm "link" {1:0, 2:1}; reply: comm id */
  C_FLOW4_DONE_P, /* prompt side cleanup after the decoder pulled */
};

static uint16_t g_ports[N];
static char g_table[2048];
static char g_table2[1024]; /* flow 4: ranks 0,1 only */
static const llmdd_cluster_rank_t g_ranks[N] = {{1, 0}, {2, 1}, {3, 2}};
static const llmdd_cluster_rank_t g_ranks2[2] = {{1, 0}, {2, 1}};

typedef struct {
  int idx; /* 0..2 */
  t_chan ch;
} member_arg;

/* Flow 4 cache: 2 tensors, batch 2, 4 KiB per slot. */
static llmdd_cache_desc_t flow4_desc(void) {
  int64_t dims[2] = {2, 4096};
  return t_desc(LLMDD_PLACEMENT_DEVICE, LLMDD_DT_UINT8, 2, 2, dims);
}

/* Pulls blocks {1,2,7} of `from` into {0,5,6} and checks every byte of the
 * destination: pulled blocks hold the peer's pattern, the rest stays zero. */
static int pull_check(llmdd_instance_t *inst, t_blk *scratch, uint64_t from) {
  int bad = 0;
  uint32_t s = t_blk_pull_verify(inst, scratch, from);
  if (s != LLMDD_SUCCESS) {
    fprintf(stderr, "[pid %d] pull from %llu: %s (%s)\n", (int)getpid(), (unsigned long long)from,
            llmdd_status_name(s), llmdd_last_error_message());
    bad++;
  }
  for (int t = 0; t < 2; t++)
    for (int b = 0; b < TB_BLOCKS; b++)
      if (b != 0 && b != 5 && b != 6 &&
          !t_all(scratch->buf[t] + (size_t)b * TB_BLOCK_BYTES, TB_BLOCK_BYTES, 0)) {
        fprintf(stderr, "[pid %d] untouched block %d changed\n", (int)getpid(), b);
        bad++;
      }
  return bad;
}

static int member(void *argp) {
  member_arg *a = (member_arg *)argp;
  t_failures = 0;
  t_checks = 0;
  uint64_t me = (uint64_t)a->idx + 1;
  llmdd_instance_t *inst = NULL;
  REQUIRE_OK(llmdd_create(a->idx == 0 ? LLMDD_ROLE_PROMPT : LLMDD_ROLE_DECODER, me, &inst));
  llmdd_option_t extra[2] = {{"llm.MemPoolConfig", "{\"memory_size\":4194304}"},
                             {"llmdd.SameHost", "off"}};
  t_use_device(a->idx); /* rank idx is device idx in the table */
  REQUIRE_OK(t_init(inst, NULL, extra, a->idx == 2 ? 2 : 1));
  t_blk src, scratch;
  REQUIRE_OK(t_blk_register(inst, &src, me, (uint32_t)me));
  REQUIRE_OK(t_blk_register(inst, &scratch, 0, 0));
  int64_t f4_cache = -1;
  t_send(a->ch, 1); /* ready */
  for (;;) {
    uint64_t cmd = t_recv(a->ch, 50000);
    if (cmd == 0) break;
    uint64_t op = cmd >> 56, arg = cmd & ((1ull << 56) - 1);
    int before = t_failures;
    uint64_t reply = 0;
    switch (op) {
      case C_LINK: {
        uint64_t id = 0;
        CHECK_OK(llmdd_link(inst, "rt", g_ranks, N, g_table, &id));
        uint32_t st = 99;
        CHECK_OK(llmdd_query_register_mem_status(inst, id, &st));
        uint32_t p = t_blk_pull(inst, &scratch, arg);
        reply = id | ((uint64_t)st << 32) | ((uint64_t)(p == LLMDD_NOT_YET_LINK) << 40);
        if (p != LLMDD_NOT_YET_LINK && st == LLMDD_MEM_STATUS_PREPARING)
          fprintf(stderr, "[pid %d] pull while PREPARING gave %s\n", (int)getpid(),
                  llmdd_status_name(p));
        break;
      }
      case C_PROBE: {
        uint32_t st = 99;
        CHECK_OK(llmdd_query_register_mem_status(inst, 1, &st));
        uint32_t p = t_blk_pull(inst, &scratch, arg);
        if (p == LLMDD_NOT_YET_LINK) CHECK(strstr(llmdd_last_error_message(), "PREPARING") != NULL);
        reply = st | ((uint64_t)(p == LLMDD_NOT_YET_LINK) << 8);
        break;
      }
      case C_WAIT_OK: {
        int saw = 0;
        uint32_t st = t_wait_comm(inst, arg, 15000, &saw);
        reply = st | ((uint64_t)saw << 8);
        break;
      }
      case C_PULL_ALL:
        for (uint64_t from = 1; from <= N; from++)
          if (from != me) t_failures += pull_check(inst, &scratch, from);
        reply = (uint64_t)(t_failures - before);
        break;
      case C_UNLINK:
        CHECK_OK(llmdd_unlink(inst, arg));
        reply = (uint64_t)(t_failures - before);
        break;
      case C_CHECK_GONE: {
        uint32_t st = 77;
        CHECK_ERR(llmdd_query_register_mem_status(inst, arg, &st), LLMDD_NOT_YET_LINK, "no comm");
        CHECK(st == 77);
        CHECK_ERR(llmdd_unlink(inst, arg), LLMDD_NOT_YET_LINK, "no comm");
        CHECK_STATUS(t_blk_pull(inst, &scratch, me == 1 ? 2 : 1), LLMDD_NOT_YET_LINK);
        reply = (uint64_t)(t_failures - before);
        break;
      }
      case C_FLOW4_LINK: {
        uint64_t id = 0;
        CHECK_OK(llmdd_link(inst, "link", g_ranks2, 2, g_table2, &id));
        reply = id;
        break;
      }
      case C_FLOW4_P: { /* allocate with CacheKey(1, req 0) / (1, req 1) and fill both slots */
        llmdd_cache_desc_t d = flow4_desc();
        llmdd_cache_key_t keys[2] = {llmdd_cache_key(1, 0, 0, LLMDD_ID_UNSET),
                                     llmdd_cache_key(1, 1, 0, LLMDD_ID_UNSET)};
        llmdd_cache_t c;
        CHECK_OK(llmdd_allocate_cache(inst, &d, keys, 2, &c));
        f4_cache = c.cache_id;
        for (size_t t = 0; t < c.num_tensor_addrs; t++)
          t_fill((uint8_t *)(uintptr_t)c.tensor_addrs[t], 2 * 4096, 40, (uint32_t)t, 0);
        reply = (uint64_t)(t_failures - before);
        break;
      }
      case C_FLOW4_D: { /* allocate, pull req 0 -> slot 0 and req 1 -> slot 1 */
        llmdd_cache_desc_t d = flow4_desc();
        llmdd_cache_t c;
        CHECK_OK(llmdd_allocate_cache(inst, &d, NULL, 0, &c));
        for (size_t t = 0; t < c.num_tensor_addrs; t++)
          memset((void *)(uintptr_t)c.tensor_addrs[t], 0, 2 * 4096);
        llmdd_cache_key_t k0 = llmdd_cache_key(1, 0, 0, LLMDD_ID_UNSET);
        llmdd_cache_key_t k1 = llmdd_cache_key(1, 1, 0, LLMDD_ID_UNSET);
        CHECK_OK(llmdd_pull_cache(inst, &k0, c.cache_id, 0, -1, NULL));
        CHECK_OK(llmdd_pull_cache(inst, &k1, c.cache_id, 1, -1, NULL));
        for (size_t t = 0; t < c.num_tensor_addrs; t++)
          CHECK(t_verify((const uint8_t *)(uintptr_t)c.tensor_addrs[t], 2 * 4096, 40, (uint32_t)t, 0));
        /* Request keys on allocated caches are one-shot. */
        CHECK_STATUS(llmdd_pull_cache(inst, &k0, c.cache_id, 0, -1, NULL), LLMDD_KV_CACHE_NOT_EXIST);
        CHECK_OK(llmdd_deallocate_cache(inst, c.cache_id));
        reply = (uint64_t)(t_failures - before);
        break;
      }
      case C_FLOW4_DONE_P: {
        llmdd_cache_key_t k0 = llmdd_cache_key(1, 0, 0, LLMDD_ID_UNSET);
        CHECK_OK(llmdd_remove_cache_key(inst, &k0)); /* already pulled: no-op */
        CHECK_OK(llmdd_deallocate_cache(inst, f4_cache));
        reply = (uint64_t)(t_failures - before);
        break;
      }
      default:
        reply = 1000;
    }
    t_send(a->ch, reply);
  }
  CHECK_OK(llmdd_finalize(inst));
  llmdd_destroy(inst);
  t_blk_free(&src);
  t_blk_free(&scratch);
  return t_failures ? 1 : 0;
}

static t_chan g_ch[N];

static uint64_t call(int i, uint64_t cmd) {
  t_send(g_ch[i], cmd);
  return t_recv(g_ch[i], 40000);
}

/* Sends `cmd` to every member first, then collects the replies. */
static void call_all(uint64_t cmd, uint64_t *replies) {
  for (int i = 0; i < N; i++) t_send(g_ch[i], cmd);
  for (int i = 0; i < N; i++) replies[i] = t_recv(g_ch[i], 40000);
}

int main(void) {
  for (int i = 0; i < N; i++) g_ports[i] = t_free_port();
  t_rank_table(g_table, sizeof g_table, g_ports, N);
  uint16_t p2[2] = {t_free_port(), t_free_port()};
  t_rank_table(g_table2, sizeof g_table2, p2, 2);
  pid_t pids[N];
  member_arg args[N];
  for (int i = 0; i < N; i++) {
    t_chan_pair cp = t_chan_new();
    args[i].idx = i;
    args[i].ch = cp.child;
    g_ch[i] = cp.parent;
    pids[i] = t_fork(member, &args[i]);
  }
  for (int i = 0; i < N; i++) t_recv(g_ch[i], 20000);
  double t0 = t_now_ms();

  /* Rank 0 links alone: PREPARING, transfers refused. */
  uint64_t r = call(0, OP(C_LINK, 2));
  CHECK((r & 0xffffffffu) == 1);
  CHECK(((r >> 32) & 0xff) == LLMDD_MEM_STATUS_PREPARING);
  CHECK((r >> 40) & 1);
  /* Rank 1 links (dials rank 0); both still wait for rank 2. */
  r = call(1, OP(C_LINK, 1));
  CHECK((r & 0xffffffffu) == 1);
  CHECK(((r >> 32) & 0xff) == LLMDD_MEM_STATUS_PREPARING);
  CHECK((r >> 40) & 1);
  r = call(0, OP(C_PROBE, 2));
  CHECK((r & 0xff) == LLMDD_MEM_STATUS_PREPARING);
  CHECK((r >> 8) & 1);
  /* Rank 2 links; everyone reaches OK. */
  r = call(2, OP(C_LINK, 1));
  CHECK((r & 0xffffffffu) == 1);
  uint64_t rs[N];
  call_all(OP(C_WAIT_OK, 1), rs);
  for (int i = 0; i < N; i++) CHECK((rs[i] & 0xff) == LLMDD_MEM_STATUS_OK);
  CHECK((rs[0] >> 8) & 1); /* ranks 0 and 1 were PREPARING before OK */
  CHECK((rs[1] >> 8) & 1);
  printf("three members linked in %.1f ms (staged)\n", t_now_ms() - t0);
  call_all(OP(C_PULL_ALL, 0), rs);
  for (int i = 0; i < N; i++) CHECK(rs[i] == 0);
  call_all(OP(C_UNLINK, 1), rs);
  for (int i = 0; i < N; i++) CHECK(rs[i] == 0);
  call_all(OP(C_CHECK_GONE, 1), rs);
  for (int i = 0; i < N; i++) CHECK(rs[i] == 0);

  /* Relink, all at once: new comm id 2. */
  t0 = t_now_ms();
  call_all(OP(C_LINK, 0), rs); /* arg 0: the pull targets the own cluster, ignored */
  for (int i = 0; i < N; i++) CHECK((rs[i] & 0xffffffffu) == 2);
  call_all(OP(C_WAIT_OK, 2), rs);
  for (int i = 0; i < N; i++) CHECK((rs[i] & 0xff) == LLMDD_MEM_STATUS_OK);
  printf("relinked in %.1f ms\n", t_now_ms() - t0);
  call_all(OP(C_PULL_ALL, 0), rs);
  for (int i = 0; i < N; i++) CHECK(rs[i] == 0);
  call_all(OP(C_UNLINK, 2), rs);
  for (int i = 0; i < N; i++) CHECK(rs[i] == 0);

  /* Spec flow 4 between cluster 1 (prompt, rank 0) and 2 (decoder, rank 1). */
  uint64_t id_p = call(0, OP(C_FLOW4_LINK, 0));
  uint64_t id_d = call(1, OP(C_FLOW4_LINK, 0));
  CHECK(id_p == 3 && id_d == 3);
  CHECK((call(0, OP(C_WAIT_OK, id_p)) & 0xff) == LLMDD_MEM_STATUS_OK);
  CHECK((call(1, OP(C_WAIT_OK, id_d)) & 0xff) == LLMDD_MEM_STATUS_OK);
  CHECK(call(0, OP(C_FLOW4_P, 0)) == 0);
  CHECK(call(1, OP(C_FLOW4_D, 0)) == 0);
  CHECK(call(1, OP(C_UNLINK, id_d)) == 0);
  CHECK(call(0, OP(C_UNLINK, id_p)) == 0);
  CHECK(call(0, OP(C_FLOW4_DONE_P, 0)) == 0);

  for (int i = 0; i < N; i++) t_send(g_ch[i], 0);
  for (int i = 0; i < N; i++) {
    int rc = t_wait(pids[i], 30000);
    if (rc != 0) fprintf(stderr, "member %d exited with %d\n", i, rc);
    CHECK(rc == 0);
  }
  return t_finish("test_rank_table");
}
