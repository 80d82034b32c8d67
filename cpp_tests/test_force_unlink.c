/* Forced unlink: on the client only (the client can relink; the server
 * replaces its stale side), on both ends, of a never-linked cluster
 * (success), and a non-forced unlink called on the side that did not dial
 * (PARAM_INVALID). Prompt (server) in a child process, decoder (client) here. */
#include "llmdd_test_blocks.h"

static uint16_t g_port;

static int prompt(void *arg) {
  t_chan c = *(t_chan *)arg;
  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &p));
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", g_port);
  REQUIRE_OK(t_init(p, listen, NULL, 0));
  t_blk src, scratch;
  REQUIRE_OK(t_blk_register(p, &src, 1, 1));
  REQUIRE_OK(t_blk_register(p, &scratch, 0, 0));
  /* No link to cluster 2 yet: a non-forced unlink succeeds. */
  CHECK_OK(t_unlink1(p, 2, "127.0.0.1", 1, false, NULL));
  uint32_t ret = 99;
  CHECK_OK(t_unlink1(p, 999, NULL, 0, true, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  t_send(c, 1); /* ready */
  t_serve_commands(p, &scratch, c);
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
  t_blk_free(&src);
  t_blk_free(&scratch);
  return t_failures ? 1 : 0;
}

static uint32_t ask(t_chan c, uint64_t cmd) {
  t_send(c, cmd);
  return (uint32_t)t_recv(c, 20000);
}

int main(void) {
  g_port = t_free_port();
  t_chan_pair ch = t_chan_new();
  pid_t child = t_fork(prompt, &ch.child);
  t_recv(ch.parent, 20000);
  t_chan pc = ch.parent;

  llmdd_instance_t *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, 2, &d));
  REQUIRE_OK(t_init(d, NULL, NULL, 0));
  t_blk src, scratch;
  REQUIRE_OK(t_blk_register(d, &src, 2, 2));
  REQUIRE_OK(t_blk_register(d, &scratch, 0, 0));

  /* Never linked: forced unlink succeeds (with or without an endpoint). */
  uint32_t ret = 99;
  CHECK_OK(t_unlink1(d, 1, NULL, 0, true, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  llmdd_ip_info_t ip = llmdd_ip_info("127.0.0.1", g_port);
  llmdd_cluster_info_t cl = t_cluster(1, &ip);
  CHECK_OK(llmdd_unlink_clusters(d, &cl, 1, 3000, true, NULL));

  /* Forced unlink on the client only, then relink. */
  CHECK_OK(t_link1(d, 1, "127.0.0.1", g_port, 3000, &ret));
  CHECK_OK(t_blk_pull_verify(d, &scratch, 1));
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_SUCCESS);
  /* The server did not dial this link: its non-forced unlink is refused and
   * the link stays usable. */
  CHECK(ask(pc, TCMD_UNLINK(2)) == LLMDD_PARAM_INVALID);
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_SUCCESS);
  ret = 99;
  CHECK_OK(t_unlink1(d, 1, NULL, 0, true, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  CHECK_STATUS(t_blk_pull(d, &scratch, 1), LLMDD_NOT_YET_LINK);
  ret = 99;
  CHECK_OK(t_link1(d, 1, "127.0.0.1", g_port, 3000, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  CHECK_OK(t_blk_pull_verify(d, &scratch, 1));
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_SUCCESS);

  /* Forced unlink on both ends. */
  CHECK_OK(t_unlink1(d, 1, NULL, 0, true, &ret));
  CHECK(ask(pc, TCMD_FORCE_UNLINK(2)) == LLMDD_SUCCESS);
  CHECK_STATUS(t_blk_pull(d, &scratch, 1), LLMDD_NOT_YET_LINK);
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_NOT_YET_LINK);
  /* Forced unlink again on both ends (no link left) still succeeds. */
  CHECK_OK(t_unlink1(d, 1, NULL, 0, true, &ret));
  CHECK(ask(pc, TCMD_FORCE_UNLINK(2)) == LLMDD_SUCCESS);

  /* Forced unlink on the server only: the server has no link any more; a
   * forced unlink on the client cleans up its side and a fresh link works. */
  CHECK_OK(t_link1(d, 1, "127.0.0.1", g_port, 3000, &ret));
  CHECK(ask(pc, TCMD_FORCE_UNLINK(2)) == LLMDD_SUCCESS);
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_NOT_YET_LINK);
  CHECK_OK(t_unlink1(d, 1, NULL, 0, true, &ret));
  CHECK_OK(t_link1(d, 1, "127.0.0.1", g_port, 3000, &ret));
  CHECK_OK(t_blk_pull_verify(d, &scratch, 1));
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_SUCCESS);
  CHECK_OK(t_unlink1(d, 1, "127.0.0.1", g_port, false, &ret));
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_NOT_YET_LINK);

  t_send(pc, TCMD_QUIT);
  CHECK(t_wait(child, 20000) == 0);
  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(d);
  t_blk_free(&src);
  t_blk_free(&scratch);
  return t_finish("test_force_unlink");
}
