/* The prompt runs out of file descriptors (setrlimit RLIMIT_NOFILE in its
 * process, a few left): decoders keep linking until one is refused, and that
 * one gets LLM_LINK_FAILED naming the cause at once (not after its 30 s link
 * timeout); a flood of further connections is refused, with at most 10 log
 * lines per 10 s (the process-wide budget of refusal lines); the decoder linked before keeps pulling verified bytes all along; once
 * links are unlinked, new links work again. TCP (llmdd.SameHost=off). */
#include "t_faults.h"

#include <fcntl.h>
#include <sys/resource.h>

#define P_ID 51
#define D_BASE 60
#define MAX_DECODERS 12
#define CMD_LIMIT 1
#define CMD_RESTORE 2
#define CMD_LOG_LINES 3
/* The budget of refusal log lines (src/log/rate.rs): lines per window, ms. */
#define LOG_LINES_PER_WINDOW 10
#define LOG_WINDOW_MS 10000.0

static char g_log[64];
/* g_log opened for reading before the limit: counting its lines then needs no
 * new descriptor, which the prompt may not have while it still holds flood
 * connections the decoder closed a moment ago. */
static FILE *g_log_rd;
static struct rlimit g_old;
static int g_fill[4096], g_nfill;

static uint64_t p_cmd(t_peer *self, llmdd_instance_t *p, uint64_t cmd) {
  (void)self;
  (void)p;
  if (cmd == CMD_LIMIT) {
    /* Leave exactly 8 descriptor numbers free below the new soft limit: the
     * limit is above the highest open descriptor (this process may inherit
     * high ones), and /dev/null fillers take the numbers beyond the 8. */
    if (!g_log_rd) g_log_rd = fopen(g_log, "r");
    int n = tf_fd_count(), highest = 0;
    DIR *dir = opendir("/proc/self/fd");
    struct dirent *e;
    while (dir && (e = readdir(dir)) != NULL)
      if (e->d_name[0] != '.' && atoi(e->d_name) > highest) highest = atoi(e->d_name);
    if (dir) closedir(dir);
    getrlimit(RLIMIT_NOFILE, &g_old);
    struct rlimit l = g_old;
    l.rlim_cur = (rlim_t)(n + 8 > highest + 1 ? n + 8 : highest + 1);
    if (setrlimit(RLIMIT_NOFILE, &l) != 0) perror("setrlimit");
    while (g_nfill < (int)(sizeof g_fill / sizeof g_fill[0]) && (int)l.rlim_cur - n - g_nfill > 8) {
      int f = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (f < 0) break;
      g_fill[g_nfill++] = f;
    }
    return (uint64_t)l.rlim_cur - (uint64_t)n - (uint64_t)g_nfill;
  }
  if (cmd == CMD_RESTORE) {
    while (g_nfill > 0) close(g_fill[--g_nfill]);
    return (uint64_t)setrlimit(RLIMIT_NOFILE, &g_old);
  }
  if (cmd == CMD_LOG_LINES) {
    FILE *f = g_log_rd;
    char line[2048];
    uint64_t lines = 0;
    if (f) rewind(f);
    while (f && fgets(line, sizeof line, f))
      if (strstr(line, "refused a connection")) lines++;
    if (!f) fprintf(stderr, "cannot read %s\n", g_log);
    return lines;
  }
  return 0;
}

static void p_setup(t_peer *self, llmdd_instance_t *p) {
  static t_blk small;
  REQUIRE_OK(t_blk_register(p, &small, self->cluster, (uint32_t)self->cluster));
  t_send(self->ch, 1);
}

/* The prompt process logs at warn level into g_log. */
static int prompt_main(void *arg) {
  setenv("LLMDD_LOG", "warn", 1);
  int fd = open(g_log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0 || dup2(fd, 2) < 0) {
    perror("log file");
    return 2;
  }
  close(fd);
  return t_peer_main(arg);
}

/* Connects to 127.0.0.1:port; *refused is set if the server answers with a
 * frame at once (a connection it takes in waits silently for a Hello).
 * Returns the socket, left open. */
static int flood_one(uint16_t port, int *refused) {
  int s = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  *refused = 0;
  if (s >= 0 && connect(s, (struct sockaddr *)&a, sizeof a) == 0) {
    struct pollfd p = {s, POLLIN, 0};
    char buf[256];
    *refused = poll(&p, 1, 200) == 1 && read(s, buf, sizeof buf) > 0;
  }
  return s;
}

int main(void) {
  double t_start = t_now_ms();
  snprintf(g_log, sizeof g_log, "/tmp/llmdd-fd-limit-%d.log", (int)getpid());
  t_peer pp;
  memset(&pp, 0, sizeof pp);
  pp.cluster = P_ID;
  pp.port = t_free_port();
  pp.opts = t_opts_make(1, 0, NULL, NULL);
  pp.setup = p_setup;
  pp.cmd = p_cmd;
  t_chan_pair cp = t_chan_new();
  pp.ch = cp.child;
  pid_t ppid = t_fork(prompt_main, &pp);
  CHECK(t_recv(cp.parent, 60000) == 1);

  llmdd_instance_t *d[MAX_DECODERS + 2];
  t_blk scratch;
  llmdd_option_t tcp = {"llmdd.SameHost", "off"};
  for (int i = 0; i < MAX_DECODERS + 2; i++) {
    REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_BASE + (uint64_t)i, &d[i]));
    REQUIRE_OK(t_init(d[i], NULL, &tcp, 1));
  }
  REQUIRE_OK(t_blk_register(d[0], &scratch, 0, 0));
  REQUIRE_OK(t_link(d[0], P_ID, pp.port));
  CHECK_OK(t_blk_pull_verify(d[0], &scratch, P_ID));

  uint64_t free_fds = t_peer_call(cp.parent, CMD_LIMIT);
  printf("prompt limited to %llu free file descriptors\n", (unsigned long long)free_fds);
  int linked = 1, refused = -1;
  for (int i = 1; i <= MAX_DECODERS; i++) {
    double t0 = t_now_ms();
    uint32_t s = t_link(d[i], P_ID, pp.port);
    double el = t_now_ms() - t0;
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", llmdd_last_error_message());
    CHECK_OK(t_blk_pull_verify(d[0], &scratch, P_ID));
    if (s == LLMDD_SUCCESS) {
      linked++;
      continue;
    }
    printf("decoder %d: link refused after %.1f ms: %s (%s)\n", i, el, llmdd_status_name(s), msg);
    CHECK(s == LLMDD_LINK_FAILED);
    CHECK(strstr(msg, "file descriptors") != NULL);
    CHECK(el < T_LINK_MS / 3); /* refused at once, not after the link timeout */
    refused = i;
    break;
  }
  CHECK(refused > 0);

  /* A flood of connections, kept open: beyond the few descriptors left
   * (those of the refused link's connections, now closed), each is refused
   * at once. */
  int flood[50], answered = 0;
  for (int i = 0; i < 50; i++) {
    int r = 0;
    flood[i] = flood_one(pp.port, &r);
    answered += r;
  }
  printf("%d of 50 flooding connections got a refusal at once\n", answered);
  CHECK(answered >= 50 - (int)free_fds);
  for (int i = 0; i < 50; i++)
    if (flood[i] >= 0) close(flood[i]);
  CHECK_OK(t_blk_pull_verify(d[0], &scratch, P_ID));
  uint64_t lines = t_peer_call(cp.parent, CMD_LOG_LINES);
  /* A window starts with its first line, so this long a run spans at most
   * this many windows (every line of the prompt counted from its start). */
  uint64_t windows = 1 + (uint64_t)((t_now_ms() - t_start) / LOG_WINDOW_MS);
  printf("prompt log: %llu 'refused a connection' lines for %d refusals (%llu window(s) of %.0f s)\n",
         (unsigned long long)lines, answered + 1, (unsigned long long)windows, LOG_WINDOW_MS / 1000);
  CHECK(lines >= 1 && lines <= LOG_LINES_PER_WINDOW * windows);

  /* Unlinking frees descriptors: a new link works (under the same limit). */
  for (int i = 1; i < linked; i++) CHECK_OK(t_unlink(d[i], P_ID, pp.port));
  double t0 = t_now_ms();
  uint32_t s;
  do {
    s = t_link(d[MAX_DECODERS + 1], P_ID, pp.port);
    if (s == LLMDD_SUCCESS) break;
    usleep(20000);
  } while (t_now_ms() - t0 < 20000); /* returns once the prompt has seen the unlinks */
  CHECK_OK(s);
  CHECK_OK(t_blk_pull_verify(d[0], &scratch, P_ID));
  CHECK_OK(t_unlink(d[MAX_DECODERS + 1], P_ID, pp.port));
  CHECK_OK(t_unlink(d[0], P_ID, pp.port));

  CHECK(t_peer_call(cp.parent, CMD_RESTORE) == 0);
  t_peer_stop(cp.parent, ppid);
  for (int i = 0; i < MAX_DECODERS + 2; i++) {
    CHECK_OK(llmdd_finalize(d[i]));
    llmdd_destroy(d[i]);
  }
  t_blk_free(&scratch);
  if (t_failures == 0) unlink(g_log);
  return t_finish("test_fd_limit");
}
