/* A peer killed with SIGKILL while linked.
 * Server side dies: the decoder's pull fails fast (LINK_FAILED, TIMEOUT or
 * NOT_YET_LINK, bounded by sync_kv_timeout=1000 ms + slack), and since the
 * decoder knows the link is dead, a non-forced unlink succeeds.
 * Client side dies: the prompt notices and frees its side; a new
 * decoder process with the same cluster id links and pulls, and the prompt
 * stays healthy. Every instance lives in a child process except case A's
 * decoder, which is created after the last fork. */
#include "llmdd_test_blocks.h"

static uint16_t g_port_a, g_port_b;

#define CMD_WAIT_UNLINKED(cluster) ((3ull << 56) | (uint64_t)(cluster))

/* Prompt for case B: serves pulls and "wait until cluster X is unlinked". */
static int prompt_b(void *arg) {
  t_chan c = *(t_chan *)arg;
  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 5, &p));
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", g_port_b);
  REQUIRE_OK(t_init(p, listen, NULL, 0));
  t_blk src, scratch;
  REQUIRE_OK(t_blk_register(p, &src, 5, 5));
  REQUIRE_OK(t_blk_register(p, &scratch, 0, 0));
  t_send(c, 1);
  for (;;) {
    uint64_t cmd = t_recv(c, 30000);
    if (cmd == TCMD_QUIT) break;
    uint64_t op = cmd >> 56, arg2 = cmd & ((1ull << 56) - 1);
    uint32_t s = LLMDD_FAILED;
    if (op == 1) s = t_blk_pull_verify(p, &scratch, arg2);
    if (op == 3) {
      double t0 = t_now_ms();
      do {
        s = t_blk_pull(p, &scratch, arg2);
        if (s == LLMDD_NOT_YET_LINK) break;
        usleep(20000);
      } while (t_now_ms() - t0 < 20000); /* ends once the prompt has noticed */
      printf("prompt freed the dead client's link after %.1f ms (last pull: %s)\n",
             t_now_ms() - t0, llmdd_status_name(s));
    }
    t_send(c, s);
  }
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
  t_blk_free(&src);
  t_blk_free(&scratch);
  return t_failures ? 1 : 0;
}

/* Decoder with cluster id 2 for case B. The first links once; the second
 * retries until it works (the server may still hold the dead client's link),
 * for 20 s at most: the loops end as soon as they succeed, so their bounds
 * only need to outlast a busy machine (ASan, other processes). */
static int decoder_b(void *arg) {
  t_chan c = *(t_chan *)arg;
  llmdd_instance_t *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, 2, &d));
  REQUIRE_OK(t_init(d, NULL, NULL, 0));
  t_blk src, scratch;
  REQUIRE_OK(t_blk_register(d, &src, 2, 2));
  REQUIRE_OK(t_blk_register(d, &scratch, 0, 0));
  double t0 = t_now_ms();
  uint32_t s, ret = 0;
  do {
    s = t_link1(d, 5, "127.0.0.1", g_port_b, 10000, &ret);
    if (s == LLMDD_SUCCESS) break;
    usleep(50000);
  } while (t_now_ms() - t0 < 20000);
  CHECK_OK(s);
  if (s == LLMDD_SUCCESS) s = t_blk_pull_verify(d, &scratch, 5);
  t_send(c, s);
  uint64_t cmd = t_recv(c, 30000); /* the first decoder is killed here */
  if (cmd == 1) CHECK_OK(t_unlink1(d, 5, "127.0.0.1", g_port_b, false, NULL));
  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(d);
  t_blk_free(&src);
  t_blk_free(&scratch);
  return t_failures ? 1 : 0;
}

/* Prompt for case A: registers, reports ready, and waits to be killed. */
static int prompt_a(void *arg) {
  t_chan c = *(t_chan *)arg;
  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &p));
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", g_port_a);
  REQUIRE_OK(t_init(p, listen, NULL, 0));
  t_blk src;
  REQUIRE_OK(t_blk_register(p, &src, 1, 1));
  t_send(c, 1);
  t_recv(c, 30000);
  llmdd_destroy(p);
  t_blk_free(&src);
  return 0;
}

static uint32_t ask(t_chan c, uint64_t cmd) {
  t_send(c, cmd);
  return (uint32_t)t_recv(c, 20000);
}

static void case_client_dies(void) {
  t_chan_pair pch = t_chan_new();
  pid_t p = t_fork(prompt_b, &pch.child);
  t_recv(pch.parent, 20000);

  t_chan_pair d1ch = t_chan_new();
  pid_t d1 = t_fork(decoder_b, &d1ch.child);
  CHECK((uint32_t)t_recv(d1ch.parent, 20000) == LLMDD_SUCCESS);
  CHECK(ask(pch.parent, TCMD_PULL(2)) == LLMDD_SUCCESS);
  kill(d1, SIGKILL);
  CHECK(t_wait(d1, 5000) == 128 + SIGKILL);

  /* The prompt notices the dead client and frees its side. */
  CHECK(ask(pch.parent, CMD_WAIT_UNLINKED(2)) == LLMDD_NOT_YET_LINK);

  /* A new decoder process with the same cluster id links and pulls. */
  t_chan_pair d2ch = t_chan_new();
  pid_t d2 = t_fork(decoder_b, &d2ch.child);
  CHECK((uint32_t)t_recv(d2ch.parent, 20000) == LLMDD_SUCCESS);
  /* The prompt is healthy: it pulls from the new decoder. */
  CHECK(ask(pch.parent, TCMD_PULL(2)) == LLMDD_SUCCESS);
  t_send(d2ch.parent, 1);
  CHECK(t_wait(d2, 20000) == 0);
  CHECK(ask(pch.parent, TCMD_PULL(2)) == LLMDD_NOT_YET_LINK);
  t_send(pch.parent, TCMD_QUIT);
  CHECK(t_wait(p, 20000) == 0);
}

static void case_server_dies(void) {
  t_chan_pair pch = t_chan_new();
  pid_t p = t_fork(prompt_a, &pch.child);
  t_recv(pch.parent, 20000);

  llmdd_instance_t *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, 2, &d));
  llmdd_option_t sync = {"llm.SyncKvCacheWaitTime", "1000"};
  REQUIRE_OK(t_init(d, NULL, &sync, 1));
  t_blk scratch;
  REQUIRE_OK(t_blk_register(d, &scratch, 0, 0));
  uint32_t ret = 99;
  CHECK_OK(t_link1(d, 1, "127.0.0.1", g_port_a, 3000, &ret));
  CHECK_OK(t_blk_pull_verify(d, &scratch, 1));

  kill(p, SIGKILL);
  CHECK(t_wait(p, 5000) == 128 + SIGKILL);

  double t0 = t_now_ms();
  uint32_t s = t_blk_pull(d, &scratch, 1);
  double el = t_now_ms() - t0;
  printf("pull from the killed prompt: %s after %.1f ms (%s)\n", llmdd_status_name(s), el,
         llmdd_last_error_message());
  CHECK(s == LLMDD_LINK_FAILED || s == LLMDD_TIMEOUT || s == LLMDD_NOT_YET_LINK);
  CHECK(llmdd_last_error_message()[0] != '\0');
  CHECK(el < 1000 + 1500);

  /* The decoder knows its server is gone (its control connection hung up):
   * the link is dead, so a non-forced unlink just drops it (nothing to tell),
   * and a forced one after that has nothing left to do. */
  ret = 99;
  CHECK_OK(t_unlink1(d, 1, "127.0.0.1", g_port_a, false, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  ret = 99;
  CHECK_OK(t_unlink1(d, 1, NULL, 0, true, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  CHECK_STATUS(t_blk_pull(d, &scratch, 1), LLMDD_NOT_YET_LINK);
  CHECK_STATUS(t_link1(d, 1, "127.0.0.1", g_port_a, 500, &ret), LLMDD_LINK_FAILED);

  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(d);
  t_blk_free(&scratch);
}

int main(void) {
  g_port_a = t_free_port();
  g_port_b = t_free_port();
  case_client_dies();
  case_server_dies();
  return t_finish("test_kill_peer");
}
