/* A non-forced unlink called while a 512 MiB TCP pull runs on the link:
 * 1. With a timeout long enough, the unlink waits: the pull completes with
 *    every checked byte right, then the unlink succeeds (and returns after
 *    the pull); the link is gone on both ends; linking again works.
 * 2. With a 1 ms timeout, the unlink cuts the pull (which fails instead of
 *    hanging), succeeds promptly, and the prompt is left clean: linking
 *    again and pulling works. */
#include "t_faults.h"

#define P_ID 41
#define D_ID 40

static uint32_t unlink_within(llmdd_instance_t *d, uint16_t port, int32_t timeout_ms) {
  llmdd_ip_info_t ip = llmdd_ip_info("127.0.0.1", port);
  llmdd_cluster_info_t cl = t_cluster(P_ID, &ip);
  uint32_t ret = 99;
  uint32_t s = llmdd_unlink_clusters(d, &cl, 1, timeout_ms, false, &ret);
  CHECK(ret == s);
  return s;
}

int main(void) {
  t_peer pp;
  memset(&pp, 0, sizeof pp);
  pp.cluster = P_ID;
  pp.port = t_free_port();
  pp.opts = t_opts_make(1, 0, NULL, NULL);
  pp.setup = tf_prompt_setup;
  t_chan_pair cp = t_chan_new();
  pid_t ppid = t_peer_start(&pp, &cp);
  CHECK(t_recv(cp.parent, 60000) == 1);

  tf_dst big;
  t_blk scratch;
  llmdd_instance_t *d = tf_decoder(D_ID, "30000", &big, &scratch);

  /* 1. The unlink waits for the pull. */
  REQUIRE_OK(t_link(d, P_ID, pp.port));
  tf_bg bg;
  tf_bg_start(&bg, d, P_ID, &big);
  int early = !tf_bg_wait_moving(&bg);
  double t_called = t_now_ms();
  CHECK_OK(unlink_within(d, pp.port, 20000));
  double t_unlinked = t_now_ms();
  CHECK(tf_bg_join(&bg, 5000));
  printf("1: unlink called %.1f ms into the pull, returned after %.1f ms; the pull returned %s after "
         "%.1f ms (%s)\n",
         t_called - bg.t_start, t_unlinked - t_called, llmdd_status_name(bg.status), bg.t_end - bg.t_start,
         bg.message);
  if (early) fprintf(stderr, "1: the pull finished (or never started) before the unlink: scenario not exercised\n");
  CHECK(!early);
  CHECK_OK(bg.status);
  CHECK(tf_verify(&big, P_ID));
  /* The unlink returns once the pull's transfer is done; the pull's thread
   * notes its end time a moment later (it has to be scheduled), hence 20 ms. */
  CHECK(t_unlinked + 20 >= bg.t_end);
  CHECK_STATUS(t_blk_pull(d, &scratch, P_ID), LLMDD_NOT_YET_LINK);
  REQUIRE_OK(t_link(d, P_ID, pp.port)); /* the prompt dropped its side */
  CHECK_OK(t_blk_pull_verify(d, &scratch, P_ID));

  /* 2. A 1 ms unlink cuts the pull. */
  tf_bg_start(&bg, d, P_ID, &big);
  early = !tf_bg_wait_moving(&bg);
  t_called = t_now_ms();
  CHECK_OK(unlink_within(d, pp.port, 1));
  t_unlinked = t_now_ms();
  CHECK(tf_bg_join(&bg, 5000));
  printf("2: a 1 ms unlink returned after %.1f ms; the pull returned %s (%s)\n", t_unlinked - t_called,
         llmdd_status_name(bg.status), bg.message);
  if (early) fprintf(stderr, "2: the pull finished (or never started) before the unlink: scenario not exercised\n");
  CHECK(!early);
  CHECK(bg.status != LLMDD_SUCCESS);
  CHECK(t_unlinked - t_called < 2000);
  REQUIRE_OK(t_link(d, P_ID, pp.port));
  CHECK_OK(t_blk_pull_verify(d, &scratch, P_ID));
  tf_bg_start(&bg, d, P_ID, &big);
  CHECK(tf_bg_join(&bg, 20000));
  CHECK_OK(bg.status);
  CHECK(tf_verify(&big, P_ID));
  CHECK_OK(t_unlink(d, P_ID, pp.port));

  t_peer_stop(cp.parent, ppid);
  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(d);
  t_blk_free(&scratch);
  return t_finish("test_unlink_in_flight");
}
