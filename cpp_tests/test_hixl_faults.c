/* The transfer engine's C ABI (llmdd_engine_*) under bad input and faults:
 * every NULL / dead / foreign handle and bad argument gets a status and a
 * message; a server SIGKILLed mid-transfer makes the request fail with a
 * status (never hang) and the connection read CONNECT_FAILED; a stopped
 * server times the transfer out; requests cancelled before they start never
 * move a byte; both engines may connect to each other; a notification queue
 * holds a bounded number; a notification too big for the caller's buffer
 * stays queued. Same-host and TCP paths. */
#include "t_proc.h"

#define BIG (32u << 20)
#define BLK 4096u

static void name_of(char *out, size_t n) { snprintf(out, n, "127.0.0.1:%u", t_free_port()); }

static llmdd_engine_t *mk(const char *name, int tcp) {
  llmdd_option_t o[2] = {{"llmdd.SameHost", "0"}, {"AutoConnect", "0"}};
  llmdd_engine_t *e = NULL;
  REQUIRE_OK(llmdd_engine_create(name, tcp ? o : o + 1, tcp ? 2 : 1, &e));
  return e;
}

static void bad_input(void) {
  char a[64], b[64];
  name_of(a, sizeof a);
  name_of(b, sizeof b);
  llmdd_engine_t *e = NULL, *f = NULL;
  CHECK_STATUS(llmdd_engine_create(NULL, NULL, 0, &e), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_create(a, NULL, 0, NULL), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_create("not-an-ip:1", NULL, 0, &e), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_create(a, NULL, 3, &e), LLMDD_PARAM_INVALID);
  llmdd_option_t unknown = {"NoSuchOption", "1"};
  CHECK_STATUS(llmdd_engine_create(a, &unknown, 1, &e), LLMDD_PARAM_INVALID);
  llmdd_option_t bad_flag = {"AutoConnect", "yes"};
  CHECK_STATUS(llmdd_engine_create(a, &bad_flag, 1, &e), LLMDD_PARAM_INVALID);
  /* The acl backend without an Ascend runtime to load. */
  llmdd_option_t acl[2] = {{"llmdd.Backend", "acl"}, {"llmdd.AscendLibDir", "/nonexistent/llmdd-no-runtime"}};
  CHECK_STATUS(llmdd_engine_create(a, acl, 2, &e), LLMDD_FEATURE_NOT_ENABLED);
  e = mk(a, 0);
  f = mk(b, 0);
  /* Same name twice: the port is taken. */
  llmdd_engine_t *g = NULL;
  CHECK_STATUS(llmdd_engine_create(a, NULL, 0, &g), LLMDD_FAILED);
  CHECK_STATUS(llmdd_engine_connect(NULL, b, 1000), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_connect((llmdd_engine_t *)(uintptr_t)0x1235, b, 1000), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_connect(e, NULL, 1000), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_connect(e, a, 1000), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_connect(e, "127.0.0.1", 1000), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_connect(e, b, -5), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_disconnect(e, b, 1000), LLMDD_NOT_YET_LINK);

  static uint8_t mem[1 << 16], other[1 << 16];
  llmdd_engine_mem_t *m = NULL, *fm = NULL;
  CHECK_STATUS(llmdd_engine_register_mem(e, 0, 16, LLMDD_ENGINE_MEM_HOST, &m), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_register_mem(e, (uintptr_t)mem, 0, LLMDD_ENGINE_MEM_HOST, &m), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_register_mem(e, (uintptr_t)mem, 16, 7, &m), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_register_mem(e, UINTPTR_MAX - 4, 16, LLMDD_ENGINE_MEM_HOST, &m), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_register_mem(e, (uintptr_t)mem, 16, LLMDD_ENGINE_MEM_HOST, NULL), LLMDD_PARAM_INVALID);
  CHECK_OK(llmdd_engine_register_mem(e, (uintptr_t)mem, sizeof mem, LLMDD_ENGINE_MEM_HOST, &m));
  CHECK_STATUS(llmdd_engine_register_mem(e, (uintptr_t)mem + 8, 16, LLMDD_ENGINE_MEM_HOST, &fm), LLMDD_PARAM_INVALID);
  CHECK_OK(llmdd_engine_register_mem(f, (uintptr_t)other, sizeof other, LLMDD_ENGINE_MEM_DEVICE, &fm));
  CHECK_STATUS(llmdd_engine_deregister_mem(e, fm), LLMDD_PARAM_INVALID); /* another engine's */
  CHECK_STATUS(llmdd_engine_deregister_mem(e, NULL), LLMDD_PARAM_INVALID);

  llmdd_engine_desc_t d = {(uintptr_t)mem, (uintptr_t)other, 16};
  CHECK_STATUS(llmdd_engine_transfer(e, b, 0, &d, 1, 1000, NULL, NULL), LLMDD_NOT_YET_LINK);
  CHECK_OK(llmdd_engine_connect(e, b, 5000));
  CHECK_STATUS(llmdd_engine_connect(e, b, 5000), LLMDD_ALREADY_LINK);
  CHECK_STATUS(llmdd_engine_transfer(e, b, 2, &d, 1, 1000, NULL, NULL), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_transfer(e, b, 0, NULL, 1, 1000, NULL, NULL), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_transfer(e, b, 0, &d, 0, 1000, NULL, NULL), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_transfer(e, b, 0, &d, 1, 1000, NULL, "msg without name"), LLMDD_PARAM_INVALID);
  llmdd_engine_desc_t over = {(uintptr_t)mem, UINTPTR_MAX - 8, 16};
  CHECK_STATUS(llmdd_engine_transfer(e, b, 0, &over, 1, 1000, NULL, NULL), LLMDD_PARAM_INVALID);
  llmdd_engine_desc_t past = {(uintptr_t)mem, (uintptr_t)other + sizeof other - 15, 16};
  CHECK_STATUS(llmdd_engine_transfer(e, b, 0, &past, 1, 1000, NULL, NULL), LLMDD_PARAM_INVALID);
  CHECK(strstr(llmdd_last_error_message(), "remote") != NULL);
  CHECK_OK(llmdd_engine_transfer(e, b, LLMDD_ENGINE_READ, &d, 1, 1000, NULL, NULL));

  /* Requests: NULL, dead, another engine's. */
  llmdd_engine_req_t *r = NULL;
  uint32_t st = 99, res = 99;
  CHECK_STATUS(llmdd_engine_transfer_async(e, b, 0, &d, 1, 1000, NULL, NULL, NULL, NULL), LLMDD_PARAM_INVALID);
  CHECK_OK(llmdd_engine_transfer_async(e, b, 0, &d, 1, 1000, NULL, NULL, (void *)7, &r));
  CHECK_STATUS(llmdd_engine_req_status(f, r, &st, &res), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_req_status(e, NULL, &st, &res), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_req_status(e, r, NULL, &res), LLMDD_PARAM_INVALID);
  CHECK_OK(llmdd_engine_req_wait(e, r, 10000, &st, &res));
  CHECK(st == LLMDD_ENGINE_REQ_COMPLETED && res == 0);
  CHECK_STATUS(llmdd_engine_req_status(e, r, &st, &res), LLMDD_PARAM_INVALID); /* released */
  size_t n = 9;
  CHECK_STATUS(llmdd_engine_poll(e, 8, false, NULL, 4, &n), LLMDD_PARAM_INVALID);
  CHECK_OK(llmdd_engine_poll(e, 8, false, NULL, 0, &n));
  CHECK(n == 0);

  /* Connect states. */
  char reason[256];
  CHECK_STATUS(llmdd_engine_connect_status(e, b, NULL, NULL, 0), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_connect_status(e, b, &st, NULL, 5), LLMDD_PARAM_INVALID);
  CHECK_OK(llmdd_engine_connect_status(e, b, &st, reason, sizeof reason));
  CHECK(st == LLMDD_ENGINE_CONNECTED);
  llmdd_engine_peer_t peers[2];
  CHECK_OK(llmdd_engine_connect_statuses(e, peers, 2, &n));
  CHECK(n == 1 && strcmp(peers[0].remote, b) == 0 && peers[0].state == LLMDD_ENGINE_CONNECTED);

  /* Notifications: sizes, a bounded queue, a too-small buffer keeps it. */
  char longname[LLMDD_ENGINE_NOTIFY_NAME_MAX + 2];
  memset(longname, 'n', sizeof longname - 1);
  longname[sizeof longname - 1] = 0;
  CHECK_STATUS(llmdd_engine_send_notify(e, b, longname, "m", 1000), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_send_notify(e, b, NULL, "m", 1000), LLMDD_PARAM_INVALID);
  uint32_t last = LLMDD_SUCCESS;
  int sent = 0;
  for (; sent < 5000; sent++) {
    last = llmdd_engine_send_notify(e, b, "n", "0123456789", 1000);
    if (last != LLMDD_SUCCESS) break;
  }
  CHECK(sent == 4096);
  CHECK_STATUS(last, LLMDD_OUT_OF_MEMORY);
  CHECK(llmdd_engine_hixl_status(last) == LLMDD_HIXL_RESOURCE_EXHAUSTED);
  char nb[4], mb[4];
  bool got = false;
  CHECK_STATUS(llmdd_engine_next_notify(f, nb, sizeof nb, mb, sizeof mb, &got), LLMDD_PARAM_INVALID);
  char nb2[LLMDD_ENGINE_NOTIFY_NAME_MAX + 1], mb2[LLMDD_ENGINE_NOTIFY_MSG_MAX + 1];
  int taken = 0;
  for (;;) {
    CHECK_OK(llmdd_engine_next_notify(f, nb2, sizeof nb2, mb2, sizeof mb2, &got));
    if (!got) break;
    taken++;
  }
  CHECK(taken == 4096);

  int32_t v = -1;
  CHECK_OK(llmdd_engine_capability(LLMDD_ENGINE_FEATURE_AUTO_CONNECT, &v));
  CHECK(v == 1);
  CHECK_OK(llmdd_engine_capability(99, &v));
  CHECK(v == 0);
  CHECK_STATUS(llmdd_engine_capability(-1, &v), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_capability(0, NULL), LLMDD_PARAM_INVALID);
  CHECK(llmdd_engine_hixl_status(LLMDD_NOT_YET_LINK) == LLMDD_HIXL_NOT_CONNECTED);
  CHECK(llmdd_engine_hixl_status(LLMDD_ALREADY_LINK) == LLMDD_HIXL_ALREADY_CONNECTED);
  CHECK(llmdd_engine_hixl_status(LLMDD_TIMEOUT) == LLMDD_HIXL_TIMEOUT);
  CHECK(llmdd_engine_hixl_status(LLMDD_LINK_FAILED) == LLMDD_HIXL_FAILED);
  CHECK(llmdd_engine_hixl_status(LLMDD_SUCCESS) == LLMDD_HIXL_SUCCESS);

  CHECK_OK(llmdd_engine_deregister_mem(e, m));
  CHECK_STATUS(llmdd_engine_deregister_mem(e, m), LLMDD_PARAM_INVALID);
  llmdd_engine_destroy(e);
  llmdd_engine_destroy(e); /* dead handle: no-op */
  CHECK_STATUS(llmdd_engine_connect(e, b, 1000), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_engine_deregister_mem(f, fm), LLMDD_SUCCESS);
  llmdd_engine_destroy(f);
  llmdd_engine_destroy(NULL);
}

/* The server side of a fault scenario: registers BIG bytes of pattern 5,
 * reports the address and its name, then serves until killed / told to go. */
typedef struct {
  t_chan ch;
  int tcp;
  char name[64];
  int connect_back; /* also connect to the client (mutual connections) */
  char client[64];
} server_args;

static int server_main(void *p) {
  server_args *a = (server_args *)p;
  t_failures = 0; /* counts of this process only (fork copied the parent's) */
  llmdd_engine_t *e = mk(a->name, a->tcp);
  uint8_t *buf = (uint8_t *)malloc(BIG);
  t_fill(buf, BIG, 5, 0, 0);
  llmdd_engine_mem_t *m = NULL;
  REQUIRE_OK(llmdd_engine_register_mem(e, (uintptr_t)buf, BIG, LLMDD_ENGINE_MEM_DEVICE, &m));
  t_send(a->ch, (uint64_t)(uintptr_t)buf);
  uint64_t cmd = t_recv(a->ch, 60000);
  if (cmd == 2 && a->connect_back) {
    /* The client connected to us; connect back and read its buffer. */
    uint64_t remote = t_recv(a->ch, 60000);
    CHECK_OK(llmdd_engine_connect(e, a->client, 5000));
    llmdd_engine_desc_t d = {(uintptr_t)buf, (uintptr_t)remote, 1 << 20};
    CHECK_OK(llmdd_engine_transfer(e, a->client, LLMDD_ENGINE_READ, &d, 1, 10000, "back", "read"));
    CHECK(t_verify(buf, 1 << 20, 6, 0, 0));
    CHECK_OK(llmdd_engine_disconnect(e, a->client, 1000));
    t_send(a->ch, (uint64_t)t_failures);
    cmd = t_recv(a->ch, 60000);
  }
  llmdd_engine_destroy(e);
  free(buf);
  return t_failures == 0 ? 0 : 1;
}

static pid_t start_server(server_args *a, t_chan_pair *cp, uint64_t *remote) {
  *cp = t_chan_new();
  a->ch = cp->child;
  pid_t pid = t_fork(server_main, a);
  *remote = t_recv(cp->parent, 30000);
  return pid;
}

static llmdd_engine_desc_t *big_descs(uint8_t *local, uint64_t remote, size_t *n) {
  *n = BIG / BLK;
  llmdd_engine_desc_t *d = (llmdd_engine_desc_t *)calloc(*n, sizeof *d);
  for (size_t i = 0; i < *n; i++) d[i] = (llmdd_engine_desc_t){(uintptr_t)local + i * BLK, (uintptr_t)remote + i * BLK, BLK};
  return d;
}

static void killed_mid_transfer(int tcp) {
  server_args a;
  memset(&a, 0, sizeof a);
  a.tcp = tcp;
  name_of(a.name, sizeof a.name);
  t_chan_pair cp;
  uint64_t remote = 0;
  pid_t pid = start_server(&a, &cp, &remote);
  char me[64];
  name_of(me, sizeof me);
  llmdd_engine_t *e = mk(me, tcp);
  uint8_t *buf = (uint8_t *)malloc(BIG);
  llmdd_engine_mem_t *m = NULL;
  REQUIRE_OK(llmdd_engine_register_mem(e, (uintptr_t)buf, BIG, LLMDD_ENGINE_MEM_HOST, &m));
  REQUIRE_OK(llmdd_engine_connect(e, a.name, 5000));
  size_t n = 0;
  llmdd_engine_desc_t *d = big_descs(buf, remote, &n);
  CHECK_OK(llmdd_engine_transfer(e, a.name, LLMDD_ENGINE_READ, d, n, 20000, NULL, NULL));
  CHECK(t_verify(buf, BIG, 5, 0, 0));

  /* A stopped server: the transfer times out (TCP; a same-host read of a
   * stopped process still succeeds, it needs no cooperation). */
  if (tcp) {
    t_stop(pid);
    double t0 = t_now_ms();
    CHECK_STATUS(llmdd_engine_transfer(e, a.name, LLMDD_ENGINE_READ, d, n, 300, NULL, NULL), LLMDD_TIMEOUT);
    CHECK(t_now_ms() - t0 < 5000);
    t_cont(pid);
  }

  /* Kill it while requests run: each ends with a status, none hangs. */
  llmdd_engine_req_t *r[8];
  int posted = 0;
  for (int i = 0; i < 8; i++) {
    if (llmdd_engine_transfer_async(e, a.name, LLMDD_ENGINE_READ, d, n, 20000, NULL, NULL, NULL, &r[posted]) ==
        LLMDD_SUCCESS)
      posted++;
  }
  CHECK(posted > 0);
  t_kill9(pid);
  int failed = 0;
  double t0 = t_now_ms();
  for (int i = 0; i < posted; i++) {
    uint32_t st = 0, res = 0;
    CHECK_OK(llmdd_engine_req_wait(e, r[i], 30000, &st, &res));
    CHECK(st != LLMDD_ENGINE_REQ_WAITING);
    if (st != LLMDD_ENGINE_REQ_COMPLETED) {
      failed++;
      CHECK(res != LLMDD_SUCCESS);
    }
  }
  CHECK(t_now_ms() - t0 < 30000);
  /* Afterwards: the link reads CONNECT_FAILED (or the table lost it), and a
   * transfer fails at once with a status. */
  uint32_t st = 0;
  char reason[256] = {0};
  double t1 = t_now_ms();
  uint32_t again = LLMDD_SUCCESS;
  for (int i = 0; i < 200 && again == LLMDD_SUCCESS; i++) {
    again = llmdd_engine_transfer(e, a.name, LLMDD_ENGINE_READ, d, 1, 2000, NULL, NULL);
    if (again == LLMDD_SUCCESS) usleep(10000);
  }
  CHECK(again != LLMDD_SUCCESS);
  CHECK(t_now_ms() - t1 < 10000);
  CHECK_OK(llmdd_engine_connect_status(e, a.name, &st, reason, sizeof reason));
  CHECK(st == LLMDD_ENGINE_CONNECT_FAILED || st == LLMDD_ENGINE_CONNECTED);
  if (st == LLMDD_ENGINE_CONNECT_FAILED) CHECK(reason[0] != 0);
  printf("%s: %d of %d requests failed after the kill (%s)\n", tcp ? "tcp" : "same host", failed, posted,
         llmdd_last_error_message());
  free(d);
  llmdd_engine_destroy(e);
  free(buf);
}

static void cancel_and_mutual(int tcp) {
  server_args a;
  memset(&a, 0, sizeof a);
  a.tcp = tcp;
  a.connect_back = 1;
  name_of(a.name, sizeof a.name);
  name_of(a.client, sizeof a.client);
  t_chan_pair cp;
  uint64_t remote = 0;
  pid_t pid = start_server(&a, &cp, &remote);
  llmdd_engine_t *e = mk(a.client, tcp);
  uint8_t *buf = (uint8_t *)malloc(BIG);
  memset(buf, 0, BIG);
  llmdd_engine_mem_t *m = NULL;
  REQUIRE_OK(llmdd_engine_register_mem(e, (uintptr_t)buf, BIG, LLMDD_ENGINE_MEM_HOST, &m));
  REQUIRE_OK(llmdd_engine_connect(e, a.name, 5000));
  size_t n = 0;
  llmdd_engine_desc_t *d = big_descs(buf, remote, &n);
  /* 16 requests, all cancelled at once: the ones not started never start. */
  llmdd_engine_req_t *r[16];
  for (int i = 0; i < 16; i++)
    REQUIRE_OK(llmdd_engine_transfer_async(e, a.name, LLMDD_ENGINE_READ, d, n, 30000, NULL, NULL, (void *)(uintptr_t)i, &r[i]));
  for (int i = 0; i < 16; i++) CHECK_OK(llmdd_engine_req_cancel(e, r[i]));
  int cancelled = 0, done = 0;
  double t0 = t_now_ms();
  while (done < 16 && t_now_ms() - t0 < 30000) {
    llmdd_engine_result_t res[16];
    size_t k = 0;
    CHECK_OK(llmdd_engine_poll(e, 16, true, res, 16, &k));
    for (size_t i = 0; i < k; i++) {
      done++;
      if (res[i].status == LLMDD_ENGINE_REQ_FAILED) cancelled++;
      else CHECK(res[i].status == LLMDD_ENGINE_REQ_COMPLETED);
    }
  }
  CHECK(done == 16);
  CHECK(cancelled > 0);
  size_t left = 1;
  CHECK_OK(llmdd_engine_outstanding(e, &left));
  CHECK(left == 0);

  /* Mutual connections: the server connects back to us and reads our buffer. */
  t_fill(buf, 1 << 20, 6, 0, 0);
  t_send(cp.parent, 2);
  t_send(cp.parent, (uint64_t)(uintptr_t)buf);
  CHECK(t_recv(cp.parent, 30000) == 0);
  char nb[LLMDD_ENGINE_NOTIFY_NAME_MAX + 1], mb[LLMDD_ENGINE_NOTIFY_MSG_MAX + 1];
  bool got = false;
  CHECK_OK(llmdd_engine_next_notify(e, nb, sizeof nb, mb, sizeof mb, &got));
  CHECK(got && strcmp(nb, "back") == 0 && strcmp(mb, "read") == 0);
  /* Our own connection still works after the server disconnected its side:
   * the server's first MiB now holds what it read from us (pattern 6). */
  memset(buf, 0, 1 << 20);
  CHECK_OK(llmdd_engine_transfer(e, a.name, LLMDD_ENGINE_READ, d, 256, 10000, NULL, NULL));
  CHECK(t_verify(buf, 256 * BLK, 6, 0, 0));
  CHECK_OK(llmdd_engine_disconnect(e, a.name, 2000));
  t_send(cp.parent, 3);
  CHECK(t_wait(pid, 30000) == 0);
  free(d);
  llmdd_engine_destroy(e);
  free(buf);
}

int main(void) {
  bad_input();
  killed_mid_transfer(1);
  killed_mid_transfer(0);
  cancel_and_mutual(1);
  cancel_and_mutual(0);
  return t_finish("test_hixl_faults");
}
