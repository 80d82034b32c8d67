/* Rank-table comms that cannot complete end FAILED instead of hanging
 * (llm.LinkTotalTime = 1 s), and unlink works on FAILED and PREPARING comms:
 * - comm {1:0, 2:1, 3:2}: cluster 3 never joins; clusters 1 (this process,
 *   rank 0) and 2 (child, rank 1) see PREPARING, then FAILED within ~1 s,
 *   with the reason in the last-error message; transfers -> NOT_YET_LINK;
 * - comm {9:0, 2:1} in the child at the same time: rank 1 dials an endpoint
 *   where nothing listens -> FAILED ("could not link to cluster 9");
 * - after unlinking, clusters 1 and 2 link again and pull (recovery);
 * - unlink of a PREPARING comm (peer absent) succeeds at once. */
#include "llmdd_test_blocks.h"
#include "t_rank_table.h"

static char g_table[1024];
static char g_table_pair[1024];
static char g_table_nine[1024];
static const llmdd_cluster_rank_t g_three[3] = {{1, 0}, {2, 1}, {3, 2}};
static const llmdd_cluster_rank_t g_pair[2] = {{1, 0}, {2, 1}};
static const llmdd_cluster_rank_t g_nine[2] = {{9, 0}, {2, 1}};
static llmdd_option_t g_opts[1] = {{"llm.LinkTotalTime", "1"}};

/* Waits for FAILED and checks the reason mentions `why`. */
static void expect_failed(llmdd_instance_t *inst, uint64_t comm, const char *why) {
  double t0 = t_now_ms();
  int saw = 0;
  uint32_t st = t_wait_comm(inst, comm, 8000, &saw);
  double ms = t_now_ms() - t0;
  CHECK(st == LLMDD_MEM_STATUS_FAILED);
  CHECK(ms < 5000);
  uint32_t st2 = 99;
  CHECK_OK(llmdd_query_register_mem_status(inst, comm, &st2));
  CHECK(st2 == LLMDD_MEM_STATUS_FAILED);
  const char *msg = llmdd_last_error_message();
  if (!strstr(msg, why) || !strstr(msg, "FAILED")) {
    t_failures++;
    fprintf(stderr, "[pid %d] FAILED reason lacks \"%s\": %s\n", (int)getpid(), why, msg);
  }
  printf("[pid %d] comm %llu FAILED after %.0f ms: %s\n", (int)getpid(), (unsigned long long)comm,
         ms, msg);
}

static int child(void *arg) {
  t_chan c = *(t_chan *)arg;
  t_failures = 0;
  t_checks = 0;
  llmdd_instance_t *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, 2, &d));
  t_use_device(1); /* cluster 2 is rank 1 in every table */
  REQUIRE_OK(t_init(d, NULL, g_opts, 1));
  t_blk src, scratch;
  REQUIRE_OK(t_blk_register(d, &src, 2, 2));
  REQUIRE_OK(t_blk_register(d, &scratch, 0, 0));
  t_recv(c, 20000); /* the parent has linked */
  uint64_t id = 0, id9 = 0;
  CHECK_OK(llmdd_link(d, "three", g_three, 3, g_table, &id));
  CHECK_OK(llmdd_link(d, "nine", g_nine, 2, g_table_nine, &id9));
  CHECK(id == 1 && id9 == 2);
  expect_failed(d, id, "cluster 3 (rank 2)");
  expect_failed(d, id9, "could not link to cluster 9");
  CHECK_ERR(t_blk_pull(d, &scratch, 1), LLMDD_NOT_YET_LINK, "FAILED");
  CHECK_OK(llmdd_unlink(d, id));
  CHECK_OK(llmdd_unlink(d, id9));
  CHECK_ERR(t_blk_pull(d, &scratch, 1), LLMDD_NOT_YET_LINK, "no link to cluster 1");
  t_send(c, 1);
  /* Recovery: a fresh comm with cluster 1 only. */
  t_recv(c, 20000);
  CHECK_OK(llmdd_link(d, "pair", g_pair, 2, g_table_pair, &id));
  CHECK(id == 3);
  CHECK(t_wait_comm(d, id, 10000, NULL) == LLMDD_MEM_STATUS_OK);
  CHECK_OK(t_blk_pull_verify(d, &scratch, 1));
  t_send(c, 1);
  t_recv(c, 20000); /* parent pulled */
  CHECK_OK(llmdd_unlink(d, id));
  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(d);
  t_blk_free(&src);
  t_blk_free(&scratch);
  return t_failures ? 1 : 0;
}

int main(void) {
  uint16_t ports[3] = {t_free_port(), t_free_port(), t_free_port()};
  t_rank_table(g_table, sizeof g_table, ports, 3);
  uint16_t pair[2] = {t_free_port(), t_free_port()};
  t_rank_table(g_table_pair, sizeof g_table_pair, pair, 2);
  uint16_t nine[2] = {t_free_port(), t_free_port()}; /* nothing listens on nine[0] */
  t_rank_table(g_table_nine, sizeof g_table_nine, nine, 2);

  t_chan_pair ch = t_chan_new();
  pid_t pid = t_fork(child, &ch.child);

  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &p));
  t_use_device(0); /* cluster 1 is rank 0 */
  REQUIRE_OK(t_init(p, NULL, g_opts, 1));
  t_blk src, scratch;
  REQUIRE_OK(t_blk_register(p, &src, 1, 1));
  REQUIRE_OK(t_blk_register(p, &scratch, 0, 0));

  uint64_t id = 0;
  CHECK_OK(llmdd_link(p, "three", g_three, 3, g_table, &id));
  CHECK(id == 1);
  uint32_t st = 99;
  CHECK_OK(llmdd_query_register_mem_status(p, id, &st));
  CHECK(st == LLMDD_MEM_STATUS_PREPARING); /* nobody else has linked yet */
  CHECK(llmdd_last_error_message()[0] == '\0');
  CHECK_ERR(t_blk_pull(p, &scratch, 2), LLMDD_NOT_YET_LINK, "PREPARING");
  t_send(ch.parent, 1);
  expect_failed(p, id, "cluster 3 (rank 2)");
  CHECK_ERR(t_blk_pull(p, &scratch, 2), LLMDD_NOT_YET_LINK, "FAILED");
  /* The FAILED comm keeps its members until unlinked. */
  uint64_t other = 0;
  CHECK_ERR(llmdd_link(p, "again", g_pair, 2, g_table_pair, &other), LLMDD_ALREADY_LINK,
            "already a member of comm 1");
  CHECK_OK(llmdd_unlink(p, id));
  CHECK_ERR(llmdd_query_register_mem_status(p, id, &st), LLMDD_NOT_YET_LINK, "no comm with id 1");
  CHECK_ERR(llmdd_unlink(p, id), LLMDD_NOT_YET_LINK, "no comm with id 1");
  t_recv(ch.parent, 20000); /* child unlinked too */

  /* Recovery between clusters 1 and 2. */
  CHECK_OK(llmdd_link(p, "pair", g_pair, 2, g_table_pair, &id));
  CHECK(id == 2);
  t_send(ch.parent, 1);
  CHECK(t_wait_comm(p, id, 10000, NULL) == LLMDD_MEM_STATUS_OK);
  t_recv(ch.parent, 20000); /* child pulled */
  CHECK_OK(t_blk_pull_verify(p, &scratch, 2));
  t_send(ch.parent, 1);
  CHECK_OK(llmdd_unlink(p, id));

  /* Unlink of a PREPARING comm: cluster 3 never comes. */
  double t0 = t_now_ms();
  CHECK_OK(llmdd_link(p, "three", g_three, 3, g_table, &id));
  CHECK_OK(llmdd_query_register_mem_status(p, id, &st));
  CHECK(st == LLMDD_MEM_STATUS_PREPARING);
  CHECK_OK(llmdd_unlink(p, id));
  CHECK(t_now_ms() - t0 < 500);
  CHECK_STATUS(llmdd_query_register_mem_status(p, id, &st), LLMDD_NOT_YET_LINK);

  int rc = t_wait(pid, 30000);
  CHECK(rc == 0);
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
  t_blk_free(&src);
  t_blk_free(&scratch);
  return t_finish("test_rank_table_fail");
}
