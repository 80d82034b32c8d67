/* link_clusters / unlink_clusters lifecycle between a prompt (server, child
 * process) and a decoder (client, this process): both sides see the link,
 * non-force unlink drops both sides, relink, ALREADY_LINK, several instances
 * in one process, the link timeout against a closed port and a silent peer,
 * and IPv6 ([::1]) when available. */
#include "llmdd_test_blocks.h"

#include <netinet/in.h>

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

/* A free port on [::1], or 0 if IPv6 loopback is unavailable. */
static uint16_t free_port6(void) {
  int fd = socket(AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_in6 a;
  memset(&a, 0, sizeof a);
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  socklen_t len = sizeof a;
  uint16_t port = 0;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin6_port);
  close(fd);
  return port;
}

static void link_timeouts(llmdd_instance_t *d) {
  /* Closed port: nothing listens there. */
  uint16_t closed = t_free_port();
  uint32_t ret = 0;
  double t0 = t_now_ms();
  /* A timeout far above the bound: failing by refusal, not by timing out, is
   * what is checked, with room for a busy machine's scheduling delay. */
  CHECK_STATUS(t_link1(d, 50, "127.0.0.1", closed, 30000, &ret), LLMDD_LINK_FAILED);
  double el = t_now_ms() - t0;
  printf("link to closed port: %.1f ms\n", el);
  CHECK(ret == LLMDD_LINK_FAILED);
  CHECK(el < 10000);

  /* Silent peer: listen() but never accept or answer. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && listen(fd, 16) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0);
  uint16_t silent = ntohs(a.sin_port);
  ret = 0;
  t0 = t_now_ms();
  CHECK_STATUS(t_link1(d, 51, "127.0.0.1", silent, 500, &ret), LLMDD_LINK_FAILED);
  el = t_now_ms() - t0;
  printf("link to silent peer: %.1f ms\n", el);
  CHECK(ret == LLMDD_LINK_FAILED);
  CHECK(el < 1500);
  close(fd);
}

static void link_ipv6(llmdd_instance_t *d, t_blk *scratch) {
  uint16_t port = free_port6();
  if (port == 0) {
    printf("IPv6 loopback unavailable; skipping the [::1] case\n");
    return;
  }
  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 20, &p));
  char listen[64];
  snprintf(listen, sizeof listen, "[::1]:%u", port);
  uint32_t s = t_init(p, listen, NULL, 0);
  if (s != LLMDD_SUCCESS) {
    printf("cannot listen on %s (%s: %s); skipping the [::1] case\n", listen,
           llmdd_status_name(s), llmdd_last_error_message());
    llmdd_destroy(p);
    return;
  }
  t_blk src;
  REQUIRE_OK(t_blk_register(p, &src, 20, 20));
  uint32_t ret = 99;
  CHECK_OK(t_link1(d, 20, "::1", port, 3000, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  CHECK_OK(t_blk_pull_verify(d, scratch, 20));
  CHECK_OK(t_unlink1(d, 20, "::1", port, false, &ret));
  CHECK_STATUS(t_blk_pull(d, scratch, 20), LLMDD_NOT_YET_LINK);
  /* The bracketed form is accepted as an IP literal too. */
  CHECK_OK(t_link1(d, 20, "[::1]", port, 3000, &ret));
  CHECK_OK(t_unlink1(d, 20, "[::1]", port, false, &ret));
  printf("IPv6 case ran on %s\n", listen);
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
  t_blk_free(&src);
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

  /* Before any link both directions fail with NOT_YET_LINK. */
  CHECK_STATUS(t_blk_pull(d, &scratch, 1), LLMDD_NOT_YET_LINK);
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_NOT_YET_LINK);

  /* Link: both sides see it. */
  uint32_t ret = 99;
  CHECK_OK(t_link1(d, 1, "127.0.0.1", g_port, 3000, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  CHECK_OK(t_blk_pull_verify(d, &scratch, 1));
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_SUCCESS);

  /* Non-force unlink from the client drops both sides. */
  ret = 99;
  CHECK_OK(t_unlink1(d, 1, "127.0.0.1", g_port, false, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  CHECK_STATUS(t_blk_pull(d, &scratch, 1), LLMDD_NOT_YET_LINK);
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_NOT_YET_LINK);
  /* Unlinking again (not linked) succeeds. */
  CHECK_OK(t_unlink1(d, 1, "127.0.0.1", g_port, false, &ret));

  /* Relink works (not ALREADY_LINK), then a duplicate link is ALREADY_LINK. */
  ret = 99;
  CHECK_OK(t_link1(d, 1, "127.0.0.1", g_port, 3000, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  CHECK_OK(t_blk_pull_verify(d, &scratch, 1));
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_SUCCESS);
  ret = 99;
  CHECK_STATUS(t_link1(d, 1, "127.0.0.1", g_port, 3000, &ret), LLMDD_ALREADY_LINK);
  CHECK(ret == LLMDD_ALREADY_LINK);
  /* The existing link survives the rejected duplicate. */
  CHECK_OK(t_blk_pull_verify(d, &scratch, 1));
  CHECK_OK(t_unlink1(d, 1, "127.0.0.1", g_port, false, &ret));
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_NOT_YET_LINK);

  /* Several instances in one process: a second decoder (cluster 3) and an
   * in-process prompt (cluster 10); decoder 3 links to both prompts in one call. */
  llmdd_instance_t *d3 = NULL, *p10 = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, 3, &d3));
  REQUIRE_OK(t_init(d3, NULL, NULL, 0));
  t_blk src3, scratch3;
  REQUIRE_OK(t_blk_register(d3, &src3, 3, 3));
  REQUIRE_OK(t_blk_register(d3, &scratch3, 0, 0));
  uint16_t port10 = t_free_port();
  char listen10[64];
  snprintf(listen10, sizeof listen10, "127.0.0.1:%u", port10);
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 10, &p10));
  REQUIRE_OK(t_init(p10, listen10, NULL, 0));
  t_blk src10, scratch10;
  REQUIRE_OK(t_blk_register(p10, &src10, 10, 10));
  REQUIRE_OK(t_blk_register(p10, &scratch10, 0, 0));

  CHECK_OK(t_link1(d, 1, "127.0.0.1", g_port, 3000, &ret));
  llmdd_ip_info_t ip1 = llmdd_ip_info("127.0.0.1", g_port), ip10 = llmdd_ip_info("127.0.0.1", port10);
  llmdd_cluster_info_t two[2] = {t_cluster(1, &ip1), t_cluster(10, &ip10)};
  uint32_t rets[2] = {99, 99};
  CHECK_OK(llmdd_link_clusters(d3, two, 2, 3000, rets));
  CHECK(rets[0] == LLMDD_SUCCESS && rets[1] == LLMDD_SUCCESS);
  CHECK_OK(t_link1(d, 10, "127.0.0.1", port10, 3000, &ret));
  CHECK_OK(t_blk_pull_verify(d, &scratch, 1));
  CHECK_OK(t_blk_pull_verify(d3, &scratch3, 1));
  CHECK_OK(t_blk_pull_verify(d, &scratch, 10));
  CHECK_OK(t_blk_pull_verify(d3, &scratch3, 10));
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_SUCCESS);
  CHECK(ask(pc, TCMD_PULL(3)) == LLMDD_SUCCESS);
  CHECK_OK(t_blk_pull_verify(p10, &scratch10, 2));
  CHECK_OK(t_blk_pull_verify(p10, &scratch10, 3));
  /* Unlinking decoder 3 leaves decoder 2's links intact. */
  rets[0] = rets[1] = 99;
  CHECK_OK(llmdd_unlink_clusters(d3, two, 2, 3000, false, rets));
  CHECK(rets[0] == LLMDD_SUCCESS && rets[1] == LLMDD_SUCCESS);
  CHECK(ask(pc, TCMD_PULL(3)) == LLMDD_NOT_YET_LINK);
  CHECK_STATUS(t_blk_pull(p10, &scratch10, 3), LLMDD_NOT_YET_LINK);
  CHECK(ask(pc, TCMD_PULL(2)) == LLMDD_SUCCESS);
  CHECK_OK(t_blk_pull_verify(p10, &scratch10, 2));
  CHECK_OK(t_blk_pull_verify(d, &scratch, 1));
  CHECK_OK(t_unlink1(d, 1, "127.0.0.1", g_port, false, &ret));
  CHECK_OK(t_unlink1(d, 10, "127.0.0.1", port10, false, &ret));
  CHECK_OK(llmdd_finalize(d3));
  llmdd_destroy(d3);
  CHECK_OK(llmdd_finalize(p10));
  llmdd_destroy(p10);
  t_blk_free(&src3);
  t_blk_free(&scratch3);
  t_blk_free(&src10);
  t_blk_free(&scratch10);

  link_timeouts(d);
  link_ipv6(d, &scratch);

  t_send(pc, TCMD_QUIT);
  CHECK(t_wait(child, 20000) == 0);
  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(d);
  t_blk_free(&src);
  t_blk_free(&scratch);
  return t_finish("test_link");
}
