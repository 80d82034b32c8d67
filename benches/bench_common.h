/* Helpers shared by the benchmark's standard suite (bench_suite.c) and its
 * command-line measurements (llmdd_bench.c): clocks, medians, error exits and
 * cache descriptors. Public C ABI only (llmdd.h). */
#ifndef LLMDD_BENCH_COMMON_H
#define LLMDD_BENCH_COMMON_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "llmdd.h"

/* Exits 1 with the library's last error message when `c` holds. */
#define DIE_IF(c, what)                                                                  \
  do {                                                                                   \
    if (c) {                                                                             \
      fprintf(stderr, "llmdd_bench: %s failed: %s\n", what, llmdd_last_error_message()); \
      exit(1);                                                                           \
    }                                                                                    \
  } while (0)

/* Monotonic seconds. */
static inline double bench_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static inline int bench_cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Sorts `v` and returns its median. */
static inline double bench_median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, bench_cmp_d);
  return v[n / 2];
}

/* A UINT8 cache of `n` tensors, each `rows` x `row` bytes (rows = blocks or batch slots). */
static inline llmdd_cache_desc_t bench_desc(uint32_t n, uint64_t rows, uint64_t row) {
  llmdd_cache_desc_t d = llmdd_cache_desc_init();
  d.placement = LLMDD_PLACEMENT_DEVICE;
  d.data_type = LLMDD_DT_UINT8;
  d.num_tensors = n;
  d.num_dims = 2;
  d.shape[0] = (int64_t)rows;
  d.shape[1] = (int64_t)row;
  d.seq_len_dim_index = -1;
  return d;
}

/* A loopback port that is free right now (the kernel's pick; exits if none). */
static inline uint16_t bench_free_port(void) {
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) || getsockname(fd, (struct sockaddr *)&a, &len)) {
    perror("llmdd_bench: picking a free port");
    exit(1);
  }
  close(fd);
  return ntohs(a.sin_port);
}

/* Median GB/s of `runs` single-thread memcpy passes over `bytes` between two
 * distinct buffers: the reference every same-host figure is printed next to. */
static inline double bench_memcpy_gbps(uint64_t bytes, int runs) {
  uint8_t *a = aligned_alloc(4096, bytes), *b = aligned_alloc(4096, bytes);
  if (!a || !b) {
    fprintf(stderr, "llmdd_bench: out of memory for the memcpy reference\n");
    exit(1);
  }
  memset(a, 1, bytes);
  memset(b, 2, bytes);
  double r[16];
  for (int i = 0; i < runs; i++) {
    double s = bench_now();
    memcpy(b, a, bytes);
    r[i] = (double)bytes / (bench_now() - s) / 1e9;
  }
  free(a);
  free(b);
  return bench_median(r, runs);
}

/* Transports, as a bit set. */
enum { BENCH_SAME_HOST = 1, BENCH_POOL = 2, BENCH_TCP = 4 };

/* Runs the standard suite (the default run) over the transports in the set
 * `transports`, each pass `runs` times (1..9). */
int bench_suite(int runs, unsigned transports);

#endif
