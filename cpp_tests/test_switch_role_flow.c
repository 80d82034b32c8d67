/* Spec flow 6 (switch role) end to end in two processes, over the same-host
 * path and over TCP, in remote-cache-accessible mode:
 *   1. P (prompt, server) listens; D (decoder, client) links, pulls blocks,
 *      unlinks.
 *   2. P switch_role(DECODER) without options: it stops listening.
 *      D switch_role(PROMPT, llm.ListenIpInfo): it starts listening.
 *   3. P (now the client) links to D; D (now the server) pushes blocks into
 *      P's cache over the link P dialled; P verifies every byte, including
 *      blocks that must stay untouched; P unlinks.
 *   4. D switch_role(MIX) keeping its endpoint; P links again and pulls from
 *      the MIX instance; unlink; both finalize.
 * Parent = P (cluster 1), child = D (cluster 2). */
#include "llmdd_test_blocks.h"

enum { P_ID = 1, D_ID = 2 };

typedef struct {
  int tcp;
  uint16_t port_p, port_d;
  t_chan ch;
} flow_arg;

static llmdd_option_t g_opts[2];
static size_t opts_for(int tcp) {
  size_t n = 0;
  g_opts[n++] = (llmdd_option_t){"llm.EnableRemoteCacheAccessible", "1"};
  if (tcp) g_opts[n++] = (llmdd_option_t){"llmdd.SameHost", "off"};
  return n;
}

/* Step markers exchanged over the pipe. */
enum { S_READY = 99, S_PULLED, S_SWITCHED, S_LISTENING, S_LINKED, S_PUSHED, S_MIX, S_DONE };

static int decoder_main(void *argp) {
  flow_arg *a = (flow_arg *)argp;
  t_failures = 0;
  t_checks = 0;
  llmdd_instance_t *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID, &d));
  size_t n = opts_for(a->tcp);
  REQUIRE_OK(t_init(d, NULL, g_opts, n));
  t_blk src, scratch;
  REQUIRE_OK(t_blk_register(d, &src, D_ID, D_ID)); /* pushed in step 3 */
  REQUIRE_OK(t_blk_register(d, &scratch, 0, 0));   /* pull target of step 1 */

  /* 1. D is the client: link (once P listens), pull, unlink. */
  CHECK(t_recv(a->ch, 30000) == S_READY);
  uint32_t ret = 99;
  CHECK_OK(t_link1(d, P_ID, "127.0.0.1", a->port_p, 3000, &ret));
  CHECK_OK(t_blk_pull_verify(d, &scratch, P_ID));
  CHECK_OK(t_unlink1(d, P_ID, "127.0.0.1", a->port_p, false, &ret));
  t_send(a->ch, S_PULLED);

  /* 2. D becomes the prompt and listens. */
  CHECK(t_recv(a->ch, 30000) == S_SWITCHED);
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", a->port_d);
  llmdd_option_t lo = {"llm.ListenIpInfo", listen};
  CHECK_OK(llmdd_switch_role(d, LLMDD_ROLE_PROMPT, &lo, 1));
  uint32_t role = 0;
  CHECK_OK(llmdd_get_role(d, &role));
  CHECK(role == LLMDD_ROLE_PROMPT);
  /* A server may dial out too, but P stopped listening when it switched. */
  CHECK_STATUS(t_link1(d, P_ID, "127.0.0.1", a->port_p, 300, &ret), LLMDD_LINK_FAILED);
  t_send(a->ch, S_LISTENING);

  /* 3. P linked to us; push our blocks {1,2,7} into P's scratch cache
   *    (named by id) at blocks {0,5,6}, all layers. */
  CHECK(t_recv(a->ch, 30000) == S_LINKED);
  int64_t p_scratch = (int64_t)t_recv(a->ch, 30000);
  llmdd_cache_key_t key = llmdd_cache_key_by_id(P_ID, p_scratch, 0);
  CHECK_OK(llmdd_push_blocks(d, &key, src.cache.cache_id, TB_SRC, 3, TB_DST, 3, NULL));
  /* Pushing to a cluster we are not linked to is NOT_YET_LINK. */
  llmdd_cache_key_t other = llmdd_cache_key_by_id(77, p_scratch, 0);
  CHECK_STATUS(llmdd_push_blocks(d, &other, src.cache.cache_id, TB_SRC, 3, TB_DST, 3, NULL),
               LLMDD_NOT_YET_LINK);
  /* While linked the role cannot change. */
  CHECK_STATUS(llmdd_switch_role(d, LLMDD_ROLE_MIX, &lo, 1), LLMDD_EXIST_LINK);
  t_send(a->ch, S_PUSHED);

  /* 4. After P unlinked: become MIX on the same endpoint. */
  CHECK(t_recv(a->ch, 30000) == S_MIX);
  CHECK_OK(llmdd_switch_role(d, LLMDD_ROLE_MIX, &lo, 1));
  CHECK_OK(llmdd_get_role(d, &role));
  CHECK(role == LLMDD_ROLE_MIX);
  t_send(a->ch, S_MIX);
  CHECK(t_recv(a->ch, 30000) == S_DONE);

  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(d);
  t_blk_free(&src);
  t_blk_free(&scratch);
  return t_failures ? 1 : 0;
}

static void run_flow(int tcp) {
  flow_arg a = {tcp, t_free_port(), t_free_port(), {0, 0}};
  t_chan_pair ch = t_chan_new();
  a.ch = ch.child;
  pid_t pid = t_fork(decoder_main, &a);

  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, P_ID, &p));
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", a.port_p);
  size_t n = opts_for(tcp);
  REQUIRE_OK(t_init(p, listen, g_opts, n));
  t_blk src, scratch;
  REQUIRE_OK(t_blk_register(p, &src, P_ID, P_ID));
  REQUIRE_OK(t_blk_register(p, &scratch, 0, 0));
  /* P listens now (init may take a while, e.g. loading the Ascend runtime). */
  t_send(ch.parent, S_READY);

  /* 1. D pulls from us. */
  CHECK(t_recv(ch.parent, 30000) == S_PULLED);

  /* 2. P becomes the decoder: no options -> stops listening. */
  CHECK_OK(llmdd_switch_role(p, LLMDD_ROLE_DECODER, NULL, 0));
  uint32_t role = 0;
  CHECK_OK(llmdd_get_role(p, &role));
  CHECK(role == LLMDD_ROLE_DECODER);
  t_send(ch.parent, S_SWITCHED);
  CHECK(t_recv(ch.parent, 30000) == S_LISTENING);

  /* 3. P dials D; D pushes into P's scratch cache. */
  uint32_t ret = 99;
  CHECK_OK(t_link1(p, D_ID, "127.0.0.1", a.port_d, 3000, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  t_send(ch.parent, S_LINKED);
  t_send(ch.parent, (uint64_t)scratch.cache.cache_id);
  CHECK(t_recv(ch.parent, 30000) == S_PUSHED);
  CHECK(t_blk_verify(&scratch, D_ID));
  /* Blocks outside {0,5,6} were not written. */
  for (int t = 0; t < 2; t++)
    for (uint64_t b = 0; b < TB_BLOCKS; b++)
      if (b != 0 && b != 5 && b != 6)
        CHECK(t_all(scratch.buf[t] + b * TB_BLOCK_BYTES, TB_BLOCK_BYTES, 0));
  /* Our own source cache is untouched by the round trip. */
  CHECK(t_verify(src.buf[0], TB_BLOCKS * TB_BLOCK_BYTES, P_ID, 0, 0));
  CHECK_OK(t_unlink1(p, D_ID, "127.0.0.1", a.port_d, false, &ret));

  /* 4. D is MIX now; link and pull from it. */
  t_send(ch.parent, S_MIX);
  CHECK(t_recv(ch.parent, 30000) == S_MIX);
  CHECK_OK(t_link1(p, D_ID, "127.0.0.1", a.port_d, 3000, &ret));
  CHECK_OK(t_blk_pull_verify(p, &scratch, D_ID));
  CHECK_OK(t_unlink1(p, D_ID, "127.0.0.1", a.port_d, false, &ret));
  t_send(ch.parent, S_DONE);

  CHECK(t_wait(pid, 30000) == 0);
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
  t_blk_free(&src);
  t_blk_free(&scratch);
  t_chan_close(ch.parent); /* t_fork closed the child end here */
  printf("switch-role flow over %s: ok\n", tcp ? "tcp" : "same-host");
}

int main(void) {
  run_flow(0);
  run_flow(1);
  return t_finish("test_switch_role_flow");
}
