/* Two listening instances link to each other at the same time (CANN's
 * hixl_transfer_backend_sample does): each link_clusters makes a link of its
 * own, both sides pull byte-exact, each non-forced unlink ends only the link
 * its side made (the peer keeps transferring over its own), a second dial in
 * the same direction is LLMDD_ALREADY_LINK, a non-forced unlink with only the
 * accepted link is LLMDD_PARAM_INVALID, and after both unlinks nothing is
 * linked; then the pair links both ways again and finalizes with live links. */
#include "llmdd_test_blocks.h"

#define A_ID 1
#define B_ID 2
#define WAIT_MS 60000

static uint16_t g_port[2];
static t_chan_pair g_ch;

/* One side: `me` is 0 (A, the parent) or 1 (B, the child). */
static int side(int me, t_chan ch) {
  uint64_t own = me ? B_ID : A_ID, peer = me ? A_ID : B_ID;
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", g_port[me]);
  llmdd_instance_t *inst = NULL;
  REQUIRE_OK(llmdd_create(me ? LLMDD_ROLE_DECODER : LLMDD_ROLE_PROMPT, own, &inst));
  REQUIRE_OK(t_init(inst, listen, NULL, 0));
  t_blk mine, dst;
  REQUIRE_OK(t_blk_register(inst, &mine, own, (uint32_t)own));
  REQUIRE_OK(t_blk_register(inst, &dst, own, 0));
  t_send(ch, 1);
  t_recv(ch, WAIT_MS); /* both listen and have registered */

  /* Both dial at once. */
  uint32_t ret = 0xABCDu;
  CHECK_OK(t_link1(inst, peer, "127.0.0.1", g_port[!me], 10000, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  t_send(ch, 2);
  t_recv(ch, WAIT_MS);
  CHECK_OK(t_blk_pull_verify(inst, &dst, peer));
  /* The same direction again: refused, the link stays usable. */
  CHECK_STATUS(t_link1(inst, peer, "127.0.0.1", g_port[!me], 10000, &ret), LLMDD_ALREADY_LINK);
  CHECK(ret == LLMDD_ALREADY_LINK);
  CHECK_OK(t_blk_pull_verify(inst, &dst, peer));
  t_send(ch, 3);
  t_recv(ch, WAIT_MS);

  /* A ends its link; B's own link to A still carries both directions. */
  if (me == 0) CHECK_OK(t_unlink1(inst, peer, "127.0.0.1", g_port[!me], false, NULL));
  t_send(ch, 4);
  t_recv(ch, WAIT_MS);
  CHECK_OK(t_blk_pull_verify(inst, &dst, peer));
  if (me == 0) {
    /* Only the accepted link is left here: a non-forced unlink is B's to make. */
    CHECK_STATUS(t_unlink1(inst, peer, "127.0.0.1", g_port[!me], false, &ret), LLMDD_PARAM_INVALID);
    CHECK(ret == LLMDD_PARAM_INVALID);
    CHECK_OK(t_blk_pull_verify(inst, &dst, peer));
  }
  t_send(ch, 5);
  t_recv(ch, WAIT_MS);

  /* B ends its link: nothing links the pair any more. */
  if (me == 1) CHECK_OK(t_unlink1(inst, peer, "127.0.0.1", g_port[!me], false, NULL));
  t_send(ch, 6);
  t_recv(ch, WAIT_MS);
  CHECK_STATUS(t_blk_pull(inst, &dst, peer), LLMDD_NOT_YET_LINK);
  t_send(ch, 7);
  t_recv(ch, WAIT_MS);

  /* Linked both ways again (one after the other this time), then finalize
   * with both links live. */
  if (me == 0) CHECK_OK(t_link1(inst, peer, "127.0.0.1", g_port[!me], 10000, NULL));
  t_send(ch, 8);
  t_recv(ch, WAIT_MS);
  if (me == 1) CHECK_OK(t_link1(inst, peer, "127.0.0.1", g_port[!me], 10000, NULL));
  t_send(ch, 9);
  t_recv(ch, WAIT_MS);
  CHECK_OK(t_blk_pull_verify(inst, &dst, peer));
  t_send(ch, 10);
  t_recv(ch, WAIT_MS);
  CHECK_OK(llmdd_finalize(inst));
  llmdd_destroy(inst);
  t_blk_free(&mine);
  t_blk_free(&dst);
  return t_failures ? 1 : 0;
}

static int child(void *arg) {
  (void)arg;
  close(g_ch.parent.rd);
  close(g_ch.parent.wr);
  return side(1, g_ch.child);
}

int main(void) {
  g_port[0] = t_free_port();
  g_port[1] = t_free_port();
  g_ch = t_chan_new();
  pid_t pid = t_fork(child, NULL);
  close(g_ch.child.rd);
  close(g_ch.child.wr);
  int rc = side(0, g_ch.parent);
  CHECK(rc == 0);
  CHECK(t_wait(pid, WAIT_MS) == 0);
  return t_finish("test_mutual_link");
}
