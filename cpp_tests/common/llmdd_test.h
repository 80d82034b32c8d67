/* Tiny test harness for the llmdd C tests: checks that print the status name
 * and the library's last-error message, process helpers for prompt/decoder
 * scenarios on 127.0.0.1, and patterned data. Uses only the public header. */
#ifndef LLMDD_TEST_H
#define LLMDD_TEST_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llmdd.h"
#include "t_sim.h"

static int t_failures = 0;
static int t_checks = 0;

#define CHECK(cond)                                                                      \
  do {                                                                                   \
    t_checks++;                                                                          \
    if (!(cond)) {                                                                       \
      t_failures++;                                                                      \
      fprintf(stderr, "[pid %d] %s:%d: CHECK failed: %s\n", (int)getpid(), __FILE__,     \
              __LINE__, #cond);                                                          \
    }                                                                                    \
  } while (0)

/* Expects `expr` (an llmdd call) to return `expected`; prints both names and
 * the last-error message on mismatch. Also checks a failure has a message. */
#define CHECK_STATUS(expr, expected)                                                     \
  do {                                                                                   \
    uint32_t t_s_ = (uint32_t)(expr);                                                    \
    uint32_t t_e_ = (uint32_t)(expected);                                                \
    t_checks++;                                                                          \
    if (t_s_ != t_e_) {                                                                  \
      t_failures++;                                                                      \
      fprintf(stderr, "[pid %d] %s:%d: %s returned %s, expected %s (%s)\n",             \
              (int)getpid(), __FILE__, __LINE__, #expr, llmdd_status_name(t_s_),         \
              llmdd_status_name(t_e_), llmdd_last_error_message());                      \
    } else if (t_e_ != LLMDD_SUCCESS && llmdd_last_error_message()[0] == '\0') {         \
      t_failures++;                                                                      \
      fprintf(stderr, "[pid %d] %s:%d: %s failed without a message\n", (int)getpid(),   \
              __FILE__, __LINE__, #expr);                                                \
    }                                                                                    \
  } while (0)

#define CHECK_OK(expr) CHECK_STATUS(expr, LLMDD_SUCCESS)

/* Aborts the current process's scenario when a precondition fails. */
#define REQUIRE_OK(expr)                                                                 \
  do {                                                                                   \
    uint32_t t_r_ = (uint32_t)(expr);                                                    \
    if (t_r_ != LLMDD_SUCCESS) {                                                         \
      fprintf(stderr, "[pid %d] %s:%d: %s returned %s (%s); aborting scenario\n",        \
              (int)getpid(), __FILE__, __LINE__, #expr, llmdd_status_name(t_r_),         \
              llmdd_last_error_message());                                               \
      exit(2);                                                                           \
    }                                                                                    \
  } while (0)

/* Prints the closing line CTest logs show and returns the exit code. */
static inline int t_finish(const char *name) {
  int v = t_sim_violations();
  t_checks++;
  if (v) {
    t_failures++;
    fprintf(stderr, "[pid %d] the simulated runtime recorded %d contract violation(s)\n", (int)getpid(), v);
  }
  printf("%s: %d passed, %d failed\n", name, t_checks - t_failures, t_failures);
  fflush(stdout);
  return t_failures == 0 ? 0 : 1;
}

static inline double t_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* How much later than asked a 1 ms sleep of this thread woke up, in ms: the
 * scheduling delay the machine adds right now. A test whose subject is a
 * latency bound adds the largest value seen in the same run to its slack. */
static inline double t_sched_delay_ms(void) {
  double t0 = t_now_ms();
  usleep(1000);
  double late = t_now_ms() - t0 - 1.0;
  return late > 0 ? late : 0;
}

/* A TCP socket bound to 127.0.0.1 on a port the kernel picks (*port), and
 * listening with `backlog` if it is > 0. */
static inline int t_bound_socket(int backlog, uint16_t *port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      (backlog > 0 && listen(fd, backlog) != 0) ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    perror("t_bound_socket");
    exit(2);
  }
  *port = ntohs(a.sin_port);
  return fd;
}

/* A TCP port on 127.0.0.1 that stays free for this test until llmdd binds it.
 * A port found free and closed again can be taken by any process before llmdd
 * binds it (another test, or the source port of any outgoing connection), and
 * init or link then fails with "Address already in use" on a busy machine. So
 * a socket bound to it with SO_REUSEADDR, never listening, holds it until the
 * process ends (close-on-exec; forked children share it): the kernel gives a
 * held port to no other bind(0) nor connect(), while llmdd's listener (which
 * sets SO_REUSEADDR) can still bind it. A connection to it is refused until
 * then. */
static inline uint16_t t_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  int one = 1;
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
      bind(fd, (struct sockaddr *)&a, sizeof a) != 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) != 0) {
    perror("t_free_port");
    exit(2);
  }
  return ntohs(a.sin_port); /* fd stays open: it holds the port */
}

/* Entries of a directory such as /proc/self/task (-1 if unreadable). */
static inline int t_count_dir(const char *path) {
  DIR *d = opendir(path);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (e->d_name[0] != '.') n++;
  closedir(d);
  return n;
}

/* A bidirectional channel between a parent and a forked child. */
typedef struct {
  int rd, wr;
} t_chan;

typedef struct {
  t_chan parent, child;
} t_chan_pair;

/* The channels this process made, in order. A channel belongs to the first
 * child t_fork starts after it was made (the k-th channel not yet given to a
 * child goes to the next fork), and t_fork closes every end the two sides do
 * not use: the parent keeps only the parent end, that child only the child
 * end, other children neither. So when one side exits early, the other's
 * t_recv sees the pipe closed at once instead of waiting out its timeout
 * (a copy of the write end left open in either process, or in a sibling,
 * would hide the exit). */
#define T_MAX_CHANS 32
static t_chan_pair t_chans[T_MAX_CHANS];
static int t_chans_made = 0;
static int t_chans_given = 0;

static inline t_chan_pair t_chan_new(void) {
  int a[2], b[2];
  /* A write to a child that exited must fail in t_send (which says so), not
   * kill the writer silently with SIGPIPE. */
  signal(SIGPIPE, SIG_IGN);
  if (t_chans_made == T_MAX_CHANS || pipe(a) != 0 || pipe(b) != 0) {
    perror("t_chan_new");
    exit(2);
  }
  for (int i = 0; i < 2; i++) { /* no exec'd program holds an end either */
    fcntl(a[i], F_SETFD, FD_CLOEXEC);
    fcntl(b[i], F_SETFD, FD_CLOEXEC);
  }
  t_chan_pair p = {{b[0], a[1]}, {a[0], b[1]}};
  t_chans[t_chans_made++] = p;
  return p;
}

static inline void t_close_end(t_chan *c) {
  if (c->rd >= 0) close(c->rd);
  if (c->wr >= 0) close(c->wr);
  c->rd = c->wr = -1;
}

/* Closes this process's end `c` of a channel once the scenario is over (close
 * a channel's descriptors only this way: t_fork closes what the registry says
 * is open, and a descriptor closed behind its back may be reused by then). */
static inline void t_chan_close(t_chan c) {
  for (int i = 0; i < t_chans_made; i++) {
    t_chan *ends[2] = {&t_chans[i].parent, &t_chans[i].child};
    for (int e = 0; e < 2; e++)
      if (ends[e]->rd == c.rd && ends[e]->wr == c.wr && c.rd >= 0) {
        t_close_end(ends[e]);
        return;
      }
  }
}

static inline void t_send(t_chan c, uint64_t v) {
  if (write(c.wr, &v, sizeof v) != (ssize_t)sizeof v) {
    fprintf(stderr, "[pid %d] t_send: %s (has the peer exited?)\n", (int)getpid(), strerror(errno));
    exit(2);
  }
}

/* Receives one value; exits the process after `timeout_ms` without one, or
 * at once when the peer has exited (closed its end). */
static inline uint64_t t_recv(t_chan c, int timeout_ms) {
  struct pollfd p = {c.rd, POLLIN, 0};
  uint64_t v = 0;
  int r = poll(&p, 1, timeout_ms);
  ssize_t n = r == 1 ? read(c.rd, &v, sizeof v) : -1;
  if (n != (ssize_t)sizeof v) {
    if (r == 1 && n == 0)
      fprintf(stderr, "[pid %d] t_recv: the peer exited (its end of the channel closed)\n",
              (int)getpid());
    else
      fprintf(stderr, "[pid %d] t_recv: peer did not answer within %d ms\n", (int)getpid(),
              timeout_ms);
    exit(3);
  }
  return v;
}

/* Device ids (what t_init puts in llm.DeviceId). HCCL needs the two ends of a
 * link on distinct devices, so every instance gets its own: the main process is
 * index 0, forked children 1, 2, ... in fork order, and the k-th default t_init
 * of process i uses device (2 i + k) mod 16 (the acl re-runs simulate 16
 * devices). t_use_device(d) makes the next t_init use d instead (a rank-table
 * member: its rank, the device t_rank_table gives that rank). */
static int t_proc_index = 0;
static int t_proc_forks = 0;
static int t_dev_inits = 0;
static int t_dev_override = -1;
static int t_last_device = 0;

static inline void t_use_device(int d) { t_dev_override = d; }

/* Forks; the child runs fn(arg) and exits with its return value. Call before
 * creating any llmdd instance in the parent. The oldest channel not yet given
 * to a child is this child's (see t_chan_new): the child keeps only its end
 * of it, the parent only its own end. */
static inline pid_t t_fork(int (*fn)(void *), void *arg) {
  fflush(stdout);
  fflush(stderr);
  int idx = ++t_proc_forks;
  int own = t_chans_given < t_chans_made ? t_chans_given++ : -1;
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    exit(2);
  }
  if (pid > 0 && own >= 0) t_close_end(&t_chans[own].child);
  if (pid == 0) {
    for (int i = 0; i < t_chans_made; i++) {
      t_close_end(&t_chans[i].parent);
      if (i != own) t_close_end(&t_chans[i].child);
    }
    t_chans_made = t_chans_given = 0; /* the child's own channels start afresh */
    t_failures = t_checks = 0;          /* its exit code reports its own checks */
    t_proc_index = idx;
    t_dev_inits = 0;
    t_dev_override = -1;
    int rc = fn(arg);
    fflush(stdout);
    fflush(stderr);
    _exit(rc);
  }
  return pid;
}

/* Waits for a child up to `timeout_ms` (then kills it); returns its exit
 * code, or 128+signal. */
static inline int t_wait(pid_t pid, int timeout_ms) {
  double end = t_now_ms() + timeout_ms;
  int st = 0;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (t_now_ms() > end) {
      fprintf(stderr, "child %d did not exit in %d ms; killing it\n", (int)pid, timeout_ms);
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return 124;
    }
    usleep(2000);
  }
  if (WIFEXITED(st)) return WEXITSTATUS(st);
  if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
  return 255;
}

/* Options for llmdd_init. `listen` may be NULL (client). llm.DeviceId follows
 * the rule above. With the environment variable LLMDD_TEST_BACKEND set (CTest's
 * *_acl re-runs), llmdd.Backend is set to its value. */
static inline uint32_t t_init(llmdd_instance_t *inst, const char *listen, const llmdd_option_t *extra,
                              size_t n_extra) {
  llmdd_option_t opts[32];
  size_t n = 0;
  /* On this call's stack: threads may call t_init at once (test_log), and
   * llmdd_init reads the options only during the call. */
  char dev[16];
  int device = t_dev_override >= 0 ? t_dev_override : (2 * t_proc_index + t_dev_inits++) % 16;
  t_dev_override = -1;
  t_last_device = device;
  snprintf(dev, sizeof dev, "%d", device);
  opts[n++] = (llmdd_option_t){"llm.DeviceId", dev};
  opts[n++] = (llmdd_option_t){"llm.EnableCacheManager", "1"};
  if (listen) opts[n++] = (llmdd_option_t){"llm.ListenIpInfo", listen};
  const char *backend = getenv("LLMDD_TEST_BACKEND");
  if (backend && backend[0]) opts[n++] = (llmdd_option_t){"llmdd.Backend", backend};
  for (size_t i = 0; i < n_extra && n < 32; i++) opts[n++] = extra[i];
  return llmdd_init(inst, opts, n);
}

/* Two initialized instances in this process: a listening prompt (cluster 1)
 * and a decoder (cluster 2) that is not. Returns the prompt's port. */
static inline uint16_t t_local_pair(llmdd_instance_t **p, llmdd_instance_t **d) {
  uint16_t port = t_free_port();
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, p));
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, 2, d));
  REQUIRE_OK(t_init(*p, listen, NULL, 0));
  REQUIRE_OK(t_init(*d, NULL, NULL, 0));
  return port;
}

/* A cache description with the given dims. */
static inline llmdd_cache_desc_t t_desc(uint32_t placement, uint32_t dtype, uint32_t num_tensors,
                                        uint32_t num_dims, const int64_t *dims) {
  llmdd_cache_desc_t d;
  memset(&d, 0, sizeof d);
  d.placement = placement;
  d.data_type = dtype;
  d.num_tensors = num_tensors;
  d.num_dims = num_dims;
  for (uint32_t i = 0; i < num_dims && i < 32; i++) d.shape[i] = dims[i];
  d.batch_dim_index = 0;
  d.seq_len_dim_index = -1;
  return d;
}

/* One cluster entry pointing at 127.0.0.1:port. `ip` storage must outlive use. */
static inline llmdd_cluster_info_t t_cluster(uint64_t remote_id, llmdd_ip_info_t *remote_ip) {
  llmdd_cluster_info_t c;
  memset(&c, 0, sizeof c);
  c.remote_cluster_id = remote_id;
  c.remote_ip_infos = remote_ip;
  c.num_remote_ip_infos = 1;
  return c;
}

/* The patterned byte at `offset` of tensor `t` for data set `seed`. */
static inline uint8_t t_pattern(uint32_t seed, uint32_t t, uint64_t offset) {
  uint64_t x = (offset * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)t << 40) ^ ((uint64_t)seed << 52);
  x ^= x >> 29;
  return (uint8_t)(x * 0xBF58476D1CE4E5B9ull >> 56);
}

static inline void t_fill(uint8_t *p, uint64_t len, uint32_t seed, uint32_t t, uint64_t base_off) {
  for (uint64_t i = 0; i < len; i++) p[i] = t_pattern(seed, t, base_off + i);
}

/* True if p[0..len) equals the pattern starting at base_off. */
static inline int t_verify(const uint8_t *p, uint64_t len, uint32_t seed, uint32_t t,
                           uint64_t base_off) {
  for (uint64_t i = 0; i < len; i++)
    if (p[i] != t_pattern(seed, t, base_off + i)) return 0;
  return 1;
}

static inline int t_all(const uint8_t *p, uint64_t len, uint8_t v) {
  for (uint64_t i = 0; i < len; i++)
    if (p[i] != v) return 0;
  return 1;
}

#endif
