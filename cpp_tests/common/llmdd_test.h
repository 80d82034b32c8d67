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

/* A TCP port on 127.0.0.1 that was free a moment ago. */
static inline uint16_t t_free_port(void) {
  uint16_t port = 0;
  close(t_bound_socket(0, &port));
  return port;
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

static inline t_chan_pair t_chan_new(void) {
  int a[2], b[2];
  if (pipe(a) != 0 || pipe(b) != 0) {
    perror("pipe");
    exit(2);
  }
  t_chan_pair p = {{b[0], a[1]}, {a[0], b[1]}};
  return p;
}

static inline void t_send(t_chan c, uint64_t v) {
  if (write(c.wr, &v, sizeof v) != (ssize_t)sizeof v) {
    perror("t_send");
    exit(2);
  }
}

/* Receives one value; exits the process after `timeout_ms` without one. */
static inline uint64_t t_recv(t_chan c, int timeout_ms) {
  struct pollfd p = {c.rd, POLLIN, 0};
  uint64_t v = 0;
  if (poll(&p, 1, timeout_ms) != 1 || read(c.rd, &v, sizeof v) != (ssize_t)sizeof v) {
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
 * creating any llmdd instance in the parent. */
static inline pid_t t_fork(int (*fn)(void *), void *arg) {
  fflush(stdout);
  fflush(stderr);
  int idx = ++t_proc_forks;
  pid_t pid = fork();
  if (pid < 0) {
    perror("fork");
    exit(2);
  }
  if (pid == 0) {
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
  static char dev[16];
  t_last_device = t_dev_override >= 0 ? t_dev_override : (2 * t_proc_index + t_dev_inits++) % 16;
  t_dev_override = -1;
  snprintf(dev, sizeof dev, "%d", t_last_device);
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
