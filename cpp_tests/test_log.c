/* Log routing through the C ABI (llmdd_set_log_callback, llmdd_set_log_filter):
 * - the stderr format (UTC time, level, pid:tid and thread name, module), one
 *   line per write even with several threads logging at once;
 * - a callback receives the lines of a link and unlink between two instances
 *   over 127.0.0.1, including lines produced on library threads, with the
 *   filter's levels and llmdd module names;
 * - filter changes (level, per module) take effect; bad filters are refused
 *   and change nothing;
 * - from inside the callback, changing the callback is refused, while setting
 *   the filter and calling llmdd functions that log neither deadlock nor
 *   recurse (their lines go to stderr);
 * - replacing or removing the callback while other threads produce lines:
 *   the previous one has no call running once the setter returns and is never
 *   called again (its user data is freed at once under AddressSanitizer);
 * - LLMDD_LOG with unknown words: one warning, the rest applies. */
#include "llmdd_test.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

static long t_gettid(void) { return (long)syscall(SYS_gettid); }

/* ---------------------------------------------------------------- collector */

#define MAX_RECS 4096

typedef struct {
  uint32_t level;
  long tid;
  char module[96];
  char message[256];
} rec_t;

static struct {
  pthread_mutex_t mu;
  rec_t recs[MAX_RECS];
  size_t n;
  int bad_strings; /* NULL or unterminated-looking strings, or newlines */
} g_col = {PTHREAD_MUTEX_INITIALIZER, {{0}}, 0, 0};

static void col_reset(void) {
  pthread_mutex_lock(&g_col.mu);
  g_col.n = 0;
  g_col.bad_strings = 0;
  pthread_mutex_unlock(&g_col.mu);
}

static void collect(uint32_t level, const char *module, const char *message, void *ud) {
  (void)ud;
  pthread_mutex_lock(&g_col.mu);
  if (!module || !message || strchr(message, '\n') || strchr(module, '\n')) g_col.bad_strings++;
  if (g_col.n < MAX_RECS && module && message) {
    rec_t *r = &g_col.recs[g_col.n++];
    r->level = level;
    r->tid = t_gettid();
    snprintf(r->module, sizeof r->module, "%s", module);
    snprintf(r->message, sizeof r->message, "%s", message);
  }
  pthread_mutex_unlock(&g_col.mu);
}

/* A prompt listening on 127.0.0.1 and a decoder in this process: link,
 * unlink, finalize. Library threads (accept, connection) log on the way. */
static void link_cycle(uint64_t base_id) {
  uint16_t port = t_free_port();
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
  llmdd_instance_t *p = NULL, *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, base_id, &p));
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, base_id + 1, &d));
  REQUIRE_OK(t_init(p, listen, NULL, 0));
  REQUIRE_OK(t_init(d, NULL, NULL, 0));
  llmdd_ip_info_t ip = llmdd_ip_info("127.0.0.1", port);
  llmdd_cluster_info_t c = t_cluster(base_id, &ip);
  uint32_t ret = 99;
  CHECK_OK(llmdd_link_clusters(d, &c, 1, 5000, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  ret = 99;
  CHECK_OK(llmdd_unlink_clusters(d, &c, 1, 5000, false, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  CHECK_OK(llmdd_finalize(d));
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(d);
  llmdd_destroy(p);
}

/* One instance initialized and destroyed on this thread (init logs the
 * backend choice at info level). */
static uint32_t init_cycle(uint64_t id) {
  llmdd_instance_t *inst = NULL;
  uint32_t s = llmdd_create(LLMDD_ROLE_DECODER, id, &inst);
  if (s == LLMDD_SUCCESS) s = t_init(inst, NULL, NULL, 0);
  llmdd_destroy(inst);
  return s;
}

/* ------------------------------------------------- stderr capture */

static struct {
  int rd, saved;
  pthread_t reader;
  char buf[1 << 20];
  size_t len;
} g_cap;

static void *drain(void *arg) {
  (void)arg;
  for (;;) {
    ssize_t r = read(g_cap.rd, g_cap.buf + g_cap.len, sizeof g_cap.buf - 1 - g_cap.len);
    if (r <= 0) break;
    g_cap.len += (size_t)r;
  }
  g_cap.buf[g_cap.len] = '\0';
  return NULL;
}

/* Sends fd 2 into a pipe until capture_end (no CHECK in between: it prints). */
static void capture_begin(void) {
  int p[2];
  if (pipe(p) != 0) {
    perror("pipe");
    exit(2);
  }
  fflush(stderr);
  g_cap.saved = dup(2);
  g_cap.rd = p[0];
  g_cap.len = 0;
  pthread_create(&g_cap.reader, NULL, drain, NULL);
  dup2(p[1], 2);
  close(p[1]);
}

static void capture_end(void) {
  dup2(g_cap.saved, 2);
  close(g_cap.saved);
  pthread_join(g_cap.reader, NULL);
  close(g_cap.rd);
}

/* Checks one stderr line
 * `2025-06-01T08:15:42.123456Z  INFO [pid:tid thread] llmdd::module: message`;
 * returns 1 if well formed, with the tid and thread name. */
static int check_line(const char *line, long *tid, char *thread, size_t thread_len) {
  int y, mo, da, h, mi, s, us, n = 0;
  if (sscanf(line, "%4d-%2d-%2dT%2d:%2d:%2d.%6dZ%n", &y, &mo, &da, &h, &mi, &s, &us, &n) != 7 ||
      n != 27 || line[4] != '-' || line[10] != 'T' || line[19] != '.' || line[27] != ' ')
    return 0;
  struct tm tm;
  memset(&tm, 0, sizeof tm);
  tm.tm_year = y - 1900;
  tm.tm_mon = mo - 1;
  tm.tm_mday = da;
  tm.tm_hour = h;
  tm.tm_min = mi;
  tm.tm_sec = s;
  double skew = difftime(timegm(&tm), time(NULL));
  if (skew < -120 || skew > 5) return 0; /* UTC, and about now */
  const char *lv = line + 28;
  if (strncmp(lv, "ERROR ", 6) && strncmp(lv, " WARN ", 6) && strncmp(lv, " INFO ", 6) &&
      strncmp(lv, "DEBUG ", 6) && strncmp(lv, "TRACE ", 6))
    return 0;
  int pid = 0, m = 0;
  char fmt[32];
  snprintf(fmt, sizeof fmt, "[%%d:%%ld %%%zu[^]]]%%n", thread_len - 1);
  if (sscanf(lv + 6, fmt, &pid, tid, thread, &m) != 3 || m == 0 || pid != (int)getpid()) return 0;
  const char *mod = lv + 6 + m;
  if (*mod++ != ' ') return 0;
  const char *colon = strstr(mod, ": ");
  if (strncmp(mod, "llmdd::", 7) != 0 || !colon || colon[2] == '\0') return 0;
  for (const char *c = mod; c < colon; c++)
    if (!(*c == ':' || *c == '_' || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
      return 0;
  return 1;
}

typedef struct {
  int lines, good, from_main, from_producers;
} cap_stats;

/* Parses every captured line (destructively). */
static cap_stats captured_lines(void) {
  char self_name[16] = {0};
  prctl(PR_GET_NAME, self_name, 0, 0, 0);
  cap_stats st = {0, 0, 0, 0};
  for (char *line = g_cap.buf, *nl; (nl = strchr(line, '\n')); line = nl + 1) {
    *nl = '\0';
    long tid = 0;
    char thread[64] = {0};
    st.lines++;
    if (check_line(line, &tid, thread, sizeof thread)) {
      st.good++;
      if (tid == t_gettid() && strcmp(thread, self_name) == 0) st.from_main++;
      if (tid != t_gettid() && strcmp(thread, "log-producer") == 0) st.from_producers++;
    } else {
      fprintf(stderr, "malformed stderr line: <%s>\n", line);
    }
  }
  return st;
}

/* ------------------------------------------------------ 1. stderr format */

static atomic_int g_init_failures;
static char g_init_failure[512];

static void *init_loop(void *arg) {
  uint64_t base = (uint64_t)(uintptr_t)arg;
  prctl(PR_SET_NAME, "log-producer", 0, 0, 0);
  for (uint64_t i = 0; i < 15; i++) {
    uint32_t s = init_cycle(base + i);
    if (s != LLMDD_SUCCESS && atomic_fetch_add(&g_init_failures, 1) == 0)
      snprintf(g_init_failure, sizeof g_init_failure, "%s: %s", llmdd_status_name(s), llmdd_last_error_message());
  }
  return NULL;
}

static void stderr_format(void) {
  CHECK_OK(llmdd_set_log_filter("info"));
  pthread_t producers[3];
  capture_begin();
  uint32_t s = init_cycle(100);
  for (int i = 0; i < 3; i++)
    pthread_create(&producers[i], NULL, init_loop, (void *)(uintptr_t)(200 + 100 * i));
  for (int i = 0; i < 3; i++) pthread_join(producers[i], NULL);
  capture_end();
  CHECK_OK(s);
  if (atomic_load(&g_init_failures)) printf("%d producer init(s) failed, first: %s\n", atomic_load(&g_init_failures), g_init_failure);
  CHECK(atomic_load(&g_init_failures) == 0);
  size_t len = g_cap.len;
  int ends_with_newline = len > 0 && g_cap.buf[len - 1] == '\n';
  cap_stats st = captured_lines();
  printf("stderr: %d lines, %d well formed, %d from this thread, %d from 3 producer threads\n",
         st.lines, st.good, st.from_main, st.from_producers);
  CHECK(ends_with_newline);
  CHECK(st.lines >= 46); /* at least one line per init */
  CHECK(st.good == st.lines);
  CHECK(st.from_main >= 1);
  CHECK(st.from_producers >= 45);
}

/* -------------------------------------------- 2. callback and filters */

/* How many records satisfy `pred` (all records in *total). */
static size_t count_recs(int (*pred)(const rec_t *, const void *), const void *arg,
                         size_t *total) {
  size_t k = 0;
  pthread_mutex_lock(&g_col.mu);
  for (size_t i = 0; i < g_col.n; i++) k += pred(&g_col.recs[i], arg) ? 1 : 0;
  if (total) *total = g_col.n;
  pthread_mutex_unlock(&g_col.mu);
  return k;
}

static int is_llmdd_line(const rec_t *r, const void *a) {
  (void)a;
  return strncmp(r->module, "llmdd::", 7) == 0 && r->message[0] != '\0';
}
static int above_level(const rec_t *r, const void *a) { return r->level > *(const uint32_t *)a; }
static int valid_level(const rec_t *r, const void *a) {
  (void)a;
  return r->level >= LLMDD_LOG_LEVEL_ERROR && r->level <= LLMDD_LOG_LEVEL_TRACE;
}
static int info_from_library(const rec_t *r, const void *main_tid) {
  return r->level == LLMDD_LOG_LEVEL_INFO && r->tid != *(const long *)main_tid;
}
static int within_module(const rec_t *r, const void *mod) {
  size_t n = strlen((const char *)mod);
  return strncmp(r->module, (const char *)mod, n) == 0 &&
         (r->module[n] == '\0' || strncmp(r->module + n, "::", 2) == 0);
}

static void callback_and_filters(void) {
  long main_tid = t_gettid();
  size_t total = 0;
  uint32_t info = LLMDD_LOG_LEVEL_INFO, warn = LLMDD_LOG_LEVEL_WARN;

  /* "info": the lines of a link cycle arrive, some from library threads. */
  col_reset();
  CHECK_OK(llmdd_set_log_filter("info"));
  CHECK_OK(llmdd_set_log_callback(collect, NULL));
  link_cycle(10);
  size_t from_lib = count_recs(info_from_library, &main_tid, &total);
  printf("filter info: %zu lines, %zu info lines from library threads\n", total, from_lib);
  CHECK(total >= 4);
  CHECK(from_lib >= 1);
  CHECK(count_recs(is_llmdd_line, NULL, NULL) == total);
  CHECK(count_recs(valid_level, NULL, NULL) == total);
  CHECK(count_recs(above_level, &info, NULL) == 0);
  CHECK(g_col.bad_strings == 0);
  /* The module of a library thread's line, for the per-module filters below. */
  char lib_module[96] = {0};
  pthread_mutex_lock(&g_col.mu);
  for (size_t i = 0; i < g_col.n && i < 6; i++)
    printf("  [%u] %s: %s\n", g_col.recs[i].level, g_col.recs[i].module, g_col.recs[i].message);
  for (size_t i = 0; i < g_col.n && !lib_module[0]; i++)
    if (info_from_library(&g_col.recs[i], &main_tid))
      snprintf(lib_module, sizeof lib_module, "%s", g_col.recs[i].module);
  pthread_mutex_unlock(&g_col.mu);
  CHECK(lib_module[0] != '\0');

  /* "warn": no info lines. Bad filters are refused, name the word, and keep "warn". */
  CHECK_OK(llmdd_set_log_filter("warn"));
  CHECK_STATUS(llmdd_set_log_filter(NULL), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_set_log_filter("info,bogus"), LLMDD_PARAM_INVALID);
  CHECK(strstr(llmdd_last_error_message(), "\"bogus\"") != NULL);
  const char *bad[] = {"llmdd::transport=loud", "transport=debug", "info,llmdd::=debug",
                       "info;debug", "llmdd::a b=info"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    CHECK_STATUS(llmdd_set_log_filter(bad[i]), LLMDD_PARAM_INVALID);
  col_reset();
  link_cycle(20);
  CHECK(count_recs(above_level, &warn, &total) == 0);
  printf("filter warn (after refused filters): %zu lines\n", total);

  /* "off": nothing at all. */
  CHECK_OK(llmdd_set_log_filter("off"));
  col_reset();
  link_cycle(30);
  count_recs(valid_level, NULL, &total);
  CHECK(total == 0);

  /* "off,MODULE=info": only that module's lines. */
  char spec[160];
  snprintf(spec, sizeof spec, "off,%s=info", lib_module);
  CHECK_OK(llmdd_set_log_filter(spec));
  col_reset();
  link_cycle(40);
  size_t in_mod = count_recs(within_module, lib_module, &total);
  printf("filter %s: %zu lines, %zu from that module\n", spec, total, in_mod);
  CHECK(total >= 1 && in_mod == total);
  CHECK(count_recs(above_level, &info, NULL) == 0);

  /* "info,MODULE=off": every module's lines but that one's. */
  snprintf(spec, sizeof spec, " INFO , %s = off ", lib_module);
  CHECK_OK(llmdd_set_log_filter(spec));
  col_reset();
  link_cycle(50);
  in_mod = count_recs(within_module, lib_module, &total);
  printf("filter \"%s\": %zu lines, %zu from that module\n", spec, total, in_mod);
  CHECK(total >= 1 && in_mod == 0);

  CHECK_OK(llmdd_set_log_callback(NULL, NULL));
  CHECK_OK(llmdd_set_log_filter("warn"));
}

/* -------------------------------------------------------- 3. reentrancy */

static struct {
  pthread_t main;
  atomic_int depth, max_depth, calls, done;
  uint32_t set_status, unset_status, filter_status, nested_init;
  char set_msg[256];
} g_re;

static void reenter(uint32_t level, const char *module, const char *message, void *ud) {
  (void)level, (void)module, (void)message, (void)ud;
  int d = atomic_fetch_add(&g_re.depth, 1) + 1;
  if (d > atomic_load(&g_re.max_depth)) atomic_store(&g_re.max_depth, d);
  atomic_fetch_add(&g_re.calls, 1);
  if (pthread_equal(pthread_self(), g_re.main) && !atomic_exchange(&g_re.done, 1)) {
    g_re.set_status = llmdd_set_log_callback(collect, NULL);
    snprintf(g_re.set_msg, sizeof g_re.set_msg, "%s", llmdd_last_error_message());
    g_re.unset_status = llmdd_set_log_callback(NULL, NULL);
    g_re.filter_status = llmdd_set_log_filter("info");
    /* Logs at info on this thread: the line goes to stderr, not back here. */
    g_re.nested_init = init_cycle(61);
  }
  atomic_fetch_sub(&g_re.depth, 1);
}

static void reentrancy(void) {
  g_re.main = pthread_self();
  CHECK_OK(llmdd_set_log_filter("warn"));
  CHECK_OK(llmdd_set_log_callback(reenter, NULL));
  CHECK_OK(llmdd_set_log_filter("info"));
  capture_begin();
  uint32_t outer = init_cycle(60);
  int calls_after_first = atomic_load(&g_re.calls);
  /* The refused calls changed nothing: the callback is still reenter. */
  uint32_t again = init_cycle(62);
  int calls_after_second = atomic_load(&g_re.calls);
  uint32_t unset = llmdd_set_log_callback(NULL, NULL);
  capture_end();
  cap_stats st = captured_lines();
  printf("reentrancy: %d callback calls, max depth %d, set inside: %s (%s); %d stderr lines\n",
         calls_after_second, atomic_load(&g_re.max_depth), llmdd_status_name(g_re.set_status),
         g_re.set_msg, st.lines);
  CHECK_OK(outer);
  CHECK_OK(again);
  CHECK_OK(unset);
  CHECK(atomic_load(&g_re.done) == 1);
  CHECK(g_re.set_status == LLMDD_PARAM_INVALID);
  CHECK(strstr(g_re.set_msg, "inside the log callback") != NULL);
  CHECK(g_re.unset_status == LLMDD_PARAM_INVALID);
  CHECK(g_re.filter_status == LLMDD_SUCCESS);
  CHECK(g_re.nested_init == LLMDD_SUCCESS);
  CHECK(atomic_load(&g_re.max_depth) == 1);
  CHECK(calls_after_first >= 1);
  CHECK(calls_after_second > calls_after_first);
  /* The nested init's lines went to stderr, from this thread. */
  CHECK(st.lines >= 1 && st.good == st.lines && st.from_main == st.lines);
  CHECK_OK(llmdd_set_log_filter("warn"));
}

/* ------------------------------------------- 4. replacing under load */

typedef struct {
  atomic_int inflight, closed;
  atomic_long calls;
} load_ud;

static atomic_int g_late, g_stop;

static void loaded(uint32_t level, const char *module, const char *message, void *ud) {
  (void)level, (void)module, (void)message;
  load_ud *u = (load_ud *)ud;
  atomic_fetch_add(&u->inflight, 1);
  if (atomic_load(&u->closed)) atomic_fetch_add(&g_late, 1);
  usleep(100);
  atomic_fetch_add(&u->calls, 1);
  atomic_fetch_sub(&u->inflight, 1);
}

static void *produce(void *arg) {
  uint64_t id = (uint64_t)(uintptr_t)arg;
  while (!atomic_load(&g_stop)) init_cycle(id++);
  return NULL;
}

#define ROUNDS 12
static load_ud *g_kept[ROUNDS];

/* The previous callback's user data: nothing of it may still run. Under
 * AddressSanitizer it is freed at once, so any later call is a reported
 * use-after-free; otherwise the `closed` mark catches a late call. */
static void retire(load_ud *u, int round) {
  if (atomic_load(&u->inflight) != 0) {
    fprintf(stderr, "round %d: a call of the replaced callback is still running\n", round);
    CHECK(0);
  }
  atomic_store(&u->closed, 1);
#if defined(__SANITIZE_ADDRESS__)
  free(u);
#else
  g_kept[round] = u;
#endif
}

static void replace_under_load(void) {
  CHECK_OK(llmdd_set_log_filter("info"));
  /* While no callback is set, the producers' lines go to stderr: captured and
   * checked too (a CHECK failing meanwhile shows up as a malformed line). */
  capture_begin();
  pthread_t producers[3];
  for (int i = 0; i < 3; i++)
    pthread_create(&producers[i], NULL, produce, (void *)(uintptr_t)(1000 + 100000 * i));
  load_ud *prev = NULL;
  int prev_round = 0;
  long total_calls = 0;
  for (int r = 0; r < ROUNDS; r++) {
    load_ud *u = (load_ud *)calloc(1, sizeof *u);
    CHECK_OK(llmdd_set_log_callback(loaded, u));
    if (prev) retire(prev, prev_round);
    double end = t_now_ms() + 20000;
    while (atomic_load(&u->calls) < 3 && t_now_ms() < end) usleep(200);
    CHECK(atomic_load(&u->calls) >= 3);
    total_calls += atomic_load(&u->calls);
    if (r % 2 == 1) {
      /* Removal while the producers log. */
      CHECK_OK(llmdd_set_log_callback(NULL, NULL));
      retire(u, r);
      prev = NULL;
    } else {
      prev = u;
      prev_round = r;
    }
  }
  if (prev) {
    CHECK_OK(llmdd_set_log_callback(NULL, NULL));
    retire(prev, prev_round);
  }
  CHECK_OK(llmdd_set_log_filter("off"));
  usleep(20000); /* time for a late call to show */
  atomic_store(&g_stop, 1);
  for (int i = 0; i < 3; i++) pthread_join(producers[i], NULL);
  capture_end();
  cap_stats st = captured_lines();
  printf("replace under load: %d rounds, %ld callback calls, %d late calls, "
         "%d stderr lines between callbacks (%d well formed)\n",
         ROUNDS, total_calls, atomic_load(&g_late), st.lines, st.good);
  CHECK(atomic_load(&g_late) == 0);
  CHECK(st.good == st.lines);
  for (int r = 0; r < ROUNDS; r++) free(g_kept[r]);
  CHECK_OK(llmdd_set_log_filter("warn"));
}

/* ----------------------------------------------- 5. LLMDD_LOG (child) */

static int count_str(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle)) n++;
  return n;
}

/* A fresh process whose LLMDD_LOG has unknown words: one warning names them
 * all, and the words it understood apply (info). */
static int env_child(void *arg) {
  (void)arg;
  setenv("LLMDD_LOG", "bogus, info ,llmdd::x=loud", 1);
  capture_begin();
  uint32_t s1 = init_cycle(5); /* the first llmdd call installs the logger */
  uint32_t s2 = init_cycle(6);
  capture_end();
  CHECK_OK(s1);
  CHECK_OK(s2);
  int warnings = count_str(g_cap.buf, "LLMDD_LOG: ignoring");
  const char *w = strstr(g_cap.buf, "LLMDD_LOG: ignoring");
  const char *eol = w ? strchr(w, '\n') : NULL;
  int infos = count_str(g_cap.buf, " INFO [");
  printf("LLMDD_LOG with unknown words: %d warning(s), %d info lines\n", warnings, infos);
  CHECK(warnings == 1);
  const char *bol = w;
  while (bol && bol > g_cap.buf && bol[-1] != '\n') bol--;
  CHECK(bol && eol && w - bol > 33 && strncmp(bol + 28, " WARN ", 6) == 0);
  CHECK(bol && strstr(bol, "] llmdd::log: LLMDD_LOG: ignoring") == w - strlen("] llmdd::log: "));
  CHECK(w && strstr(w, "\"bogus\"") && strstr(w, "\"bogus\"") < eol);
  CHECK(w && strstr(w, "\"llmdd::x=loud\"") && strstr(w, "\"llmdd::x=loud\"") < eol);
  CHECK(infos >= 2);
  cap_stats st = captured_lines();
  CHECK(st.good == st.lines);
  return t_failures ? 1 : 0;
}

int main(void) {
  /* Before any llmdd call in this process, as t_fork requires. */
  pid_t child = t_fork(env_child, NULL);
  CHECK(t_wait(child, 60000) == 0);
  stderr_format();
  callback_and_filters();
  reentrancy();
  replace_under_load();
  return t_finish("test_log");
}
