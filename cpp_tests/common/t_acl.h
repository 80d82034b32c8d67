/* Helpers for the acl-backend tests (test_acl_*.c): memory of the simulated
 * Ascend runtime, init options that select the acl backend, and device tensor
 * sets compared with host models.
 *
 * The simulator (cpp_tests/sim_ascend, TEST INFRASTRUCTURE) is built by CMake
 * into LLMDD_SIM_DIR. Tests allocate "device" memory the way an application
 * would: aclrtMalloc / aclrtMallocHost of the runtime, here dlopen'd from that
 * directory (the same library llmdd loads, so both share one runtime). The
 * few ACL prototypes are restated below; llmdd itself is used only through
 * include/llmdd.h. */
#ifndef T_ACL_H
#define T_ACL_H

#include <dlfcn.h>

#include "t_dataplane.h"

#ifndef LLMDD_SIM_DIR
#error "LLMDD_SIM_DIR must name the directory of the simulated runtime (set by CMake)"
#endif

/* aclrtMemcpyKind values. */
#define T_H2H 0
#define T_H2D 1
#define T_D2H 2

typedef struct {
  void *lib;
  int (*set_device)(int32_t dev);
  int (*malloc_dev)(void **p, size_t size, int policy);
  int (*malloc_host)(void **p, size_t size);
  int (*free_dev)(void *p);
  int (*free_host)(void *p);
  int (*memcpy_)(void *dst, size_t dst_max, const void *src, size_t count, int kind);
} t_acl_rt;

static t_acl_rt g_acl;

/* Loads the simulator's libascendcl.so (once per process). */
static inline void t_acl_load(void) {
  if (g_acl.lib) return;
  g_acl.lib = dlopen(LLMDD_SIM_DIR "/libascendcl.so", RTLD_NOW | RTLD_LOCAL);
  if (!g_acl.lib) {
    fprintf(stderr, "cannot load the simulator: %s\n", dlerror());
    exit(2);
  }
#define T_SYM(field, name)                                             \
  do {                                                                 \
    *(void **)(&g_acl.field) = dlsym(g_acl.lib, name);                 \
    if (!g_acl.field) {                                                \
      fprintf(stderr, "simulator lacks %s\n", name);                   \
      exit(2);                                                         \
    }                                                                  \
  } while (0)
  T_SYM(set_device, "aclrtSetDevice");
  T_SYM(malloc_dev, "aclrtMalloc");
  T_SYM(malloc_host, "aclrtMallocHost");
  T_SYM(free_dev, "aclrtFree");
  T_SYM(free_host, "aclrtFreeHost");
  T_SYM(memcpy_, "aclrtMemcpy");
#undef T_SYM
}

/* CHECKs that the simulator recorded no contract violation in this process
 * (teardown-path violations, whose codes llmdd cannot report). */
static inline void t_acl_check_violations(void) {
  t_acl_load();
  int (*f)(char *, size_t) = NULL;
  *(void **)(&f) = dlsym(g_acl.lib, "sim_ascend_violations");
  char last[512] = "";
  int n = f ? f(last, sizeof last) : -1;
  if (n != 0) fprintf(stderr, "[pid %d] simulator contract violations: %d (last: %s)\n", (int)getpid(), n, last);
  CHECK(n == 0);
}

/* Unloads the simulator (balances t_acl_load; llmdd holds its own reference). */
static inline void t_acl_unload(void) {
  if (g_acl.lib) dlclose(g_acl.lib);
  memset(&g_acl, 0, sizeof g_acl);
}

/* ---------- device (or pinned host) tensor sets ---------- */

typedef struct {
  uint32_t n;
  uint64_t T;
  uint32_t placement; /* LLMDD_PLACEMENT_DEVICE: aclrtMalloc; HOST: aclrtMallocHost */
  uint64_t addrs[64];
} t_dev;

/* n tensors of T bytes from the runtime, zero-filled, on the device of the
 * process's last t_init (ACL allocates on the calling thread's device). */
static inline t_dev t_dev_new(uint32_t placement, uint32_t n, uint64_t T) {
  t_acl_load();
  g_acl.set_device(t_last_device);
  t_dev d;
  memset(&d, 0, sizeof d);
  d.n = n;
  d.T = T;
  d.placement = placement;
  uint8_t *zero = calloc(1, T);
  for (uint32_t t = 0; t < n; t++) {
    void *p = NULL;
    int rc = placement == LLMDD_PLACEMENT_DEVICE ? g_acl.malloc_dev(&p, T, 0) : g_acl.malloc_host(&p, T);
    if (rc != 0 || !p) {
      fprintf(stderr, "runtime allocation of %llu bytes failed (%d)\n", (unsigned long long)T, rc);
      exit(2);
    }
    d.addrs[t] = (uint64_t)(uintptr_t)p;
    g_acl.memcpy_(p, T, zero, T, placement == LLMDD_PLACEMENT_DEVICE ? T_H2D : T_H2H);
  }
  free(zero);
  return d;
}

static inline void t_dev_free(t_dev *d) {
  g_acl.set_device(t_last_device);
  for (uint32_t t = 0; t < d->n; t++) {
    void *p = (void *)(uintptr_t)d->addrs[t];
    if (d->placement == LLMDD_PLACEMENT_DEVICE)
      g_acl.free_dev(p);
    else
      g_acl.free_host(p);
  }
  memset(d, 0, sizeof *d);
}

/* Copies a host image (same n and T) into the tensors (aclrtMemcpy H2D). */
static inline void t_dev_upload(const t_dev *d, const t_mem *img) {
  g_acl.set_device(t_last_device);
  for (uint32_t t = 0; t < d->n; t++)
    g_acl.memcpy_((void *)(uintptr_t)d->addrs[t], d->T, img->p[t], d->T,
                  d->placement == LLMDD_PLACEMENT_DEVICE ? T_H2D : T_H2H);
}

/* Copies the tensors into a host image (aclrtMemcpy D2H). */
static inline void t_dev_download(const t_dev *d, t_mem *img) {
  g_acl.set_device(t_last_device);
  for (uint32_t t = 0; t < d->n; t++)
    g_acl.memcpy_(img->p[t], d->T, (const void *)(uintptr_t)d->addrs[t], d->T,
                  d->placement == LLMDD_PLACEMENT_DEVICE ? T_D2H : T_H2H);
}

/* Uploads addresses given by the library (an allocated cache). */
static inline t_dev t_dev_wrap(uint32_t placement, uint32_t n, uint64_t T, const uint64_t *addrs) {
  t_dev d;
  memset(&d, 0, sizeof d);
  d.n = n;
  d.T = T;
  d.placement = placement;
  for (uint32_t t = 0; t < n; t++) d.addrs[t] = addrs[t];
  return d;
}

/* CHECK that the tensors equal the model image `want`. */
#define CHECK_DEV(dev, want, what)                                      \
  do {                                                                  \
    t_mem t_got_ = t_mem_new((dev)->n, (dev)->T);                       \
    t_dev_download((dev), &t_got_);                                     \
    CHECK(t_mem_eq_(&t_got_, (want), (what), __FILE__, __LINE__));      \
    t_mem_free(&t_got_);                                                \
  } while (0)

/* ---------- options ---------- */

/* Init options on the acl backend: the simulator named by llmdd.AscendLibDir
 * (`via_env` 0) or found through LLMDD_ASCEND_LIB_DIR (`via_env` 1, the
 * caller sets the variable). */
static inline t_opts t_acl_opts(int via_env, int remote_acc, const char *dev_pool, const char *host_pool) {
  t_opts r = t_opts_make(0, remote_acc, dev_pool, host_pool);
  r.o[r.n++] = (llmdd_option_t){"llmdd.Backend", "acl"};
  if (!via_env) r.o[r.n++] = (llmdd_option_t){"llmdd.AscendLibDir", LLMDD_SIM_DIR};
  return r;
}

/* The backend an initialized instance runs on. */
static inline uint32_t t_backend(llmdd_instance_t *inst) {
  uint32_t b = 99;
  if (llmdd_get_backend(inst, &b) != LLMDD_SUCCESS) return 99;
  return b;
}

/* True if the last error message contains `needle`. */
static inline int t_msg_has(const char *needle) { return strstr(llmdd_last_error_message(), needle) != NULL; }

#endif
