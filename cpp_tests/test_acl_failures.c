/* Failure paths of the acl backend against the simulated Ascend runtime, each
 * ending in a documented status, never a hang:
 *  - a transfer that never completes (SIM_ASCEND_HANG_TRANSFER, set in the
 *    decoder only): LLMDD_TIMEOUT within sync_kv_timeout + slack; the link is
 *    then unusable (LLMDD_LINK_FAILED) until unlinked and linked again;
 *  - ends on different backends: link_clusters refused (LLMDD_PARAM_INVALID);
 *  - a runtime without HcclBatchGet: acl init LLMDD_FEATURE_NOT_ENABLED naming
 *    the symbol, auto falls back to host;
 *  - a library directory without the runtime (option and environment
 *    variable): acl init LLMDD_FEATURE_NOT_ENABLED naming the paths tried;
 *    auto falls back to host on both ends and still transfers. */
#include <sys/stat.h>

#include "t_acl.h"
#include "llmdd_test_blocks.h"

#define P_ID 91
#define D_ID 92
#define SYNC_MS 400

static void p_setup(t_peer *self, llmdd_instance_t *p) {
  static t_blk b;
  REQUIRE_OK(t_blk_register(p, &b, self->cluster, (uint32_t)self->cluster));
  t_send(self->ch, (uint64_t)t_backend(p));
}

static pid_t start_prompt(t_peer *peer, t_chan_pair *ch, t_opts opts, uint32_t *backend) {
  memset(peer, 0, sizeof *peer);
  peer->cluster = P_ID;
  peer->port = t_free_port();
  peer->opts = opts;
  peer->setup = p_setup;
  *ch = t_chan_new();
  pid_t pid = t_peer_start(peer, ch);
  *backend = (uint32_t)t_recv(ch->parent, 30000);
  return pid;
}

static void timeout_then_relink(void) {
  t_peer peer;
  t_chan_pair ch;
  uint32_t pb;
  pid_t pid = start_prompt(&peer, &ch, t_acl_opts(0, 0, NULL, NULL), &pb);
  CHECK(pb == LLMDD_BACKEND_ACL);

  /* A host-backend client cannot link to the acl prompt. */
  llmdd_instance_t *h = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID + 100, &h));
  llmdd_option_t host[1] = {{"llmdd.Backend", "host"}};
  REQUIRE_OK(t_init(h, NULL, host, 1));
  uint32_t ret = 0;
  CHECK_STATUS(t_link1(h, P_ID, "127.0.0.1", peer.port, 3000, &ret), LLMDD_PARAM_INVALID);
  CHECK(t_msg_has("different backends"));
  CHECK_OK(llmdd_finalize(h));
  llmdd_destroy(h);

  llmdd_instance_t *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID, &d));
  t_opts o = t_acl_opts(0, 0, NULL, NULL);
  o.o[o.n++] = (llmdd_option_t){"llm.SyncKvCacheWaitTime", "400"};
  REQUIRE_OK(t_init(d, NULL, o.o, o.n));
  t_blk dst;
  REQUIRE_OK(t_blk_register(d, &dst, D_ID, 0));
  REQUIRE_OK(t_link1(d, P_ID, "127.0.0.1", peer.port, 3000, NULL));
  CHECK_OK(t_blk_pull_verify(d, &dst, P_ID));

  setenv("SIM_ASCEND_HANG_TRANSFER", "1", 1);
  double t0 = t_now_ms();
  uint32_t s = t_blk_pull(d, &dst, P_ID);
  double took = t_now_ms() - t0;
  unsetenv("SIM_ASCEND_HANG_TRANSFER");
  CHECK_STATUS(s, LLMDD_TIMEOUT);
  printf("hung transfer: %s after %.1f ms (sync_kv_timeout %d ms): %s\n", llmdd_status_name(s), took, SYNC_MS,
         llmdd_last_error_message());
  CHECK(took >= SYNC_MS - 50 && took < SYNC_MS + 1000);

  /* The link stays unusable until it is re-established. */
  CHECK_STATUS(t_blk_pull(d, &dst, P_ID), LLMDD_LINK_FAILED);
  CHECK(t_msg_has("unlink and link again"));
  CHECK_OK(t_unlink1(d, P_ID, "127.0.0.1", peer.port, false, NULL));
  REQUIRE_OK(t_link1(d, P_ID, "127.0.0.1", peer.port, 3000, NULL));
  CHECK_OK(t_blk_pull_verify(d, &dst, P_ID));
  CHECK_OK(t_unlink1(d, P_ID, "127.0.0.1", peer.port, false, NULL));

  t_peer_stop(ch.parent, pid);
  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(d);
  t_blk_free(&dst);
}

/* init with the given backend and library directory (NULL: none given). */
static uint32_t init_with(llmdd_instance_t *i, const char *backend, const char *dir) {
  llmdd_option_t o[2] = {{"llmdd.Backend", backend}, {"llmdd.AscendLibDir", dir}};
  return t_init(i, NULL, o, dir ? 2 : 1);
}

static void missing_symbol(void) {
  llmdd_instance_t *i = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID, &i));
  uint32_t s = init_with(i, "acl", LLMDD_SIM_NOGET_DIR);
  CHECK_STATUS(s, LLMDD_FEATURE_NOT_ENABLED);
  CHECK(t_msg_has("HcclBatchGet"));
  printf("runtime without HcclBatchGet, acl: %s (%s)\n", llmdd_status_name(s), llmdd_last_error_message());
  CHECK_OK(init_with(i, "auto", LLMDD_SIM_NOGET_DIR));
  CHECK(t_backend(i) == LLMDD_BACKEND_HOST);
  CHECK_OK(llmdd_finalize(i));
  llmdd_destroy(i);
}

static void no_runtime(void) {
  char dir[] = "/tmp/llmdd-no-ascend-XXXXXX";
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    exit(2);
  }
  llmdd_instance_t *i = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID, &i));
  /* By option. */
  uint32_t s = init_with(i, "acl", dir);
  CHECK_STATUS(s, LLMDD_FEATURE_NOT_ENABLED);
  CHECK(t_msg_has(dir) && t_msg_has("libascendcl.so"));
  printf("no runtime in llmdd.AscendLibDir, acl: %s (%s)\n", llmdd_status_name(s), llmdd_last_error_message());
  /* By environment variable. */
  setenv("LLMDD_ASCEND_LIB_DIR", dir, 1);
  s = init_with(i, "acl", NULL);
  CHECK_STATUS(s, LLMDD_FEATURE_NOT_ENABLED);
  CHECK(t_msg_has(dir) && t_msg_has("LLMDD_ASCEND_LIB_DIR"));
  printf("no runtime in LLMDD_ASCEND_LIB_DIR, acl: %s (%s)\n", llmdd_status_name(s), llmdd_last_error_message());
  CHECK_OK(init_with(i, "auto", NULL));
  CHECK(t_backend(i) == LLMDD_BACKEND_HOST);
  printf("no runtime, auto: backend %s\n", t_backend(i) == LLMDD_BACKEND_HOST ? "host" : "acl");
  CHECK_OK(llmdd_finalize(i));

  /* auto on both ends falls back to host and still transfers (a prompt and a
   * decoder process; the environment variable is inherited by the prompt). */
  t_peer peer;
  t_chan_pair ch;
  uint32_t pb;
  t_opts none;
  memset(&none, 0, sizeof none);
  pid_t pid = start_prompt(&peer, &ch, none, &pb);
  CHECK(pb == LLMDD_BACKEND_HOST);
  CHECK_OK(init_with(i, "auto", NULL));
  t_blk dst;
  REQUIRE_OK(t_blk_register(i, &dst, D_ID, 0));
  CHECK_OK(t_link1(i, P_ID, "127.0.0.1", peer.port, 3000, NULL));
  s = t_blk_pull_verify(i, &dst, P_ID);
  CHECK_OK(s);
  printf("no runtime, auto on both ends: pull_blocks %s\n", llmdd_status_name(s));
  CHECK_OK(t_unlink1(i, P_ID, "127.0.0.1", peer.port, false, NULL));
  t_peer_stop(ch.parent, pid);
  unsetenv("LLMDD_ASCEND_LIB_DIR");
  CHECK_OK(llmdd_finalize(i));
  llmdd_destroy(i);
  t_blk_free(&dst);
  rmdir(dir);
}

int main(void) {
  timeout_then_relink();
  missing_symbol();
  no_runtime();
  t_acl_check_violations();
  return t_finish("test_acl_failures");
}
