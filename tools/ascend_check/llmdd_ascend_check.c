/* llmdd_ascend_check -- bring-up check for the acl backend on a real Ascend host.
 *
 * Reports what llmdd will see (CANN versions, the libraries it loads, logical ->
 * physical device ids, NIC addresses, SoC), then runs a two-process pull and
 * push over HCCL between two devices on this host and prints GB/s, verifying
 * every byte that arrived. docs/ascend.md ("Bring-up check") says how to run it
 * and what to send back. Exit status 0 only if every step passed.
 *
 *   llmdd_ascend_check [--devices A,B] [--mib N] [--iters K] [--lib-dir DIR]
 *
 * --devices  logical devices of the prompt (server) and decoder (client); 0,1
 * --mib      MiB per tensor (2 tensors per side, 64 KiB blocks); 64
 * --iters    timed pulls and pushes; 5
 * --lib-dir  llmdd.AscendLibDir (else LLMDD_ASCEND_LIB_DIR, else llmdd's search)
 *
 * Device memory comes from the runtime's own aclrtMalloc (dlopen'd here; llmdd
 * itself is used only through include/llmdd.h). CTest runs it against the
 * simulated runtime with a tiny size, which proves the program and its flow,
 * not the hardware. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dlfcn.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "llmdd.h"

#define BLOCK (64u << 10)
#define NT 2

typedef struct {
  void *base, *rt;
  int (*set_device)(int32_t);
  int (*device_count)(uint32_t *);
  int (*phy_id)(int32_t, int32_t *);
  const char *(*soc)(void);
  int (*version)(char *, char *);
  int (*malloc_dev)(void **, size_t, int);
  int (*free_dev)(void *);
  int (*memcpy_)(void *, size_t, const void *, size_t, int);
} acl_t;

static acl_t g;
static const char *g_lib_dir;
static int g_failures;

static double now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *open_lib(const char *name) {
  char path[4096];
  const char *dir = g_lib_dir ? g_lib_dir : getenv("LLMDD_ASCEND_LIB_DIR");
  if (dir && dir[0]) {
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return dlopen(path, RTLD_NOW | RTLD_LOCAL);
  }
  void *h = dlopen(name, RTLD_NOW | RTLD_LOCAL);
  const char *roots[] = {getenv("ASCEND_HOME_PATH"), getenv("ASCEND_TOOLKIT_HOME"), "/usr/local/Ascend/cann",
                         "/usr/local/Ascend/ascend-toolkit/latest"};
  for (size_t i = 0; !h && i < sizeof roots / sizeof roots[0]; i++) {
    if (!roots[i] || !roots[i][0]) continue;
    snprintf(path, sizeof path, "%s/lib64/%s", roots[i], name);
    h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  }
  return h;
}

static void *sym(const char *name) {
  void *p = g.base ? dlsym(g.base, name) : NULL;
  if (!p && g.rt) p = dlsym(g.rt, name);
  return p;
}

static void lib_path(void *h, const char *fn, char *out, size_t cap) {
  Dl_info info;
  void *p = h ? dlsym(h, fn) : NULL;
  snprintf(out, cap, "%s", p && dladdr(p, &info) && info.dli_fname ? info.dli_fname : "(not found)");
}

/* Loads the ACL runtime for device memory and the report. */
static int load_acl(void) {
  g.base = open_lib("libascendcl.so");
  if (!g.base || !dlsym(g.base, "aclrtMalloc")) g.rt = open_lib("libacl_rt.so");
  if (!g.base && !g.rt) return -1;
#define S(f, n) *(void **)(&g.f) = sym(n)
  S(set_device, "aclrtSetDevice");
  S(device_count, "aclrtGetDeviceCount");
  S(phy_id, "aclrtGetPhyDevIdByLogicDevId");
  S(soc, "aclrtGetSocName");
  S(version, "aclsysGetVersionStr");
  S(malloc_dev, "aclrtMalloc");
  S(free_dev, "aclrtFree");
  S(memcpy_, "aclrtMemcpy");
#undef S
  return g.set_device && g.malloc_dev && g.free_dev && g.memcpy_ ? 0 : -1;
}

/* address_<phy> of the hccn.conf llmdd reads (LLMDD_HCCN_CONF, else /etc). */
static void nic_ip(int phy, char *out, size_t cap) {
  const char *path = getenv("LLMDD_HCCN_CONF");
  if (!path || !path[0]) path = "/etc/hccn.conf";
  snprintf(out, cap, "(no address_%d in %s)", phy, path);
  FILE *f = fopen(path, "r");
  if (!f) return;
  char line[256], key[32];
  snprintf(key, sizeof key, "address_%d=", phy);
  while (fgets(line, sizeof line, f)) {
    if (strncmp(line, key, strlen(key)) == 0) {
      snprintf(out, cap, "%s", line + strlen(key));
      out[strcspn(out, "\r\n")] = '\0';
      break;
    }
  }
  fclose(f);
}

static void log_cb(uint32_t level, const char *module, const char *message, void *user) {
  (void)level;
  (void)module;
  (void)user;
  if (strstr(message, "acl backend") || strstr(message, "HCCL communicator"))
    printf("  llmdd: %s\n", message);
}

static void report(int dev_a, int dev_b) {
  printf("== runtime\n");
  char p[4096];
  lib_path(g.base, "aclInit", p, sizeof p);
  printf("  libascendcl.so: %s\n", p);
  lib_path(g.rt, "aclrtMalloc", p, sizeof p);
  printf("  libacl_rt.so:   %s\n", g.rt ? p : "(not needed)");
  const char *pkgs[] = {"cann", "runtime", "hcomm", "hccl", "driver"};
  for (size_t i = 0; i < sizeof pkgs / sizeof pkgs[0]; i++) {
    char v[128] = "(unknown)";
    char name[16];
    snprintf(name, sizeof name, "%s", pkgs[i]);
    if (g.version && g.version(name, v) != 0) snprintf(v, sizeof v, "(unknown)");
    printf("  version %-8s %s\n", pkgs[i], v);
  }
  printf("  SoC: %s\n", g.soc && g.soc() ? g.soc() : "(unknown)");
  uint32_t n = 0;
  if (g.device_count) g.device_count(&n);
  const char *vis = getenv("ASCEND_RT_VISIBLE_DEVICES");
  printf("== devices (%u visible; ASCEND_RT_VISIBLE_DEVICES=%s)\n", n, vis ? vis : "(unset)");
  for (uint32_t d = 0; d < n; d++) {
    int32_t phy = -1;
    if (g.phy_id) g.phy_id((int32_t)d, &phy);
    char ip[128];
    nic_ip(phy, ip, sizeof ip);
    printf("  logical %u -> physical %d, NIC %s%s\n", d, (int)phy, ip,
           (int)d == dev_a ? " (prompt)" : (int)d == dev_b ? " (decoder)" : "");
  }
}

/* ---------- the transfer ---------- */

static uint8_t pattern(uint64_t i, int t) { return (uint8_t)((i * 2654435761u) >> 13) ^ (uint8_t)(t * 37); }

typedef struct {
  void *p[NT];
  uint64_t addrs[NT];
  uint64_t bytes;
} mem_t;

/* NT tensors of `bytes` on `dev`: the first `fill` bytes patterned, the rest zero. */
static int dev_alloc(mem_t *m, int dev, uint64_t bytes, uint64_t fill) {
  g.set_device(dev);
  m->bytes = bytes;
  uint8_t *host = malloc(bytes);
  if (!host) return -1;
  for (int t = 0; t < NT; t++) {
    if (g.malloc_dev(&m->p[t], bytes, 0) != 0) {
      free(host);
      return -1;
    }
    m->addrs[t] = (uint64_t)(uintptr_t)m->p[t];
    for (uint64_t i = 0; i < bytes; i++) host[i] = i < fill ? pattern(i, t) : 0;
    g.memcpy_(m->p[t], bytes, host, bytes, 1 /* H2D */);
  }
  free(host);
  return 0;
}

/* Counts the bytes of [off, off+len) of every tensor that differ from the pattern. */
static uint64_t dev_verify(const mem_t *m, int dev, uint64_t off, uint64_t len) {
  g.set_device(dev);
  uint8_t *host = malloc(m->bytes);
  uint64_t bad = 0;
  for (int t = 0; t < NT && host; t++) {
    g.memcpy_(host, m->bytes, m->p[t], m->bytes, 2 /* D2H */);
    for (uint64_t i = 0; i < len; i++) bad += host[off + i] != pattern(i, t);
  }
  free(host);
  return host ? bad : m->bytes;
}

static uint32_t init(llmdd_instance_t *inst, int dev, const char *listen) {
  char d[16];
  snprintf(d, sizeof d, "%d", dev);
  llmdd_option_t o[6];
  size_t n = 0;
  o[n++] = (llmdd_option_t){"llm.DeviceId", d};
  o[n++] = (llmdd_option_t){"llm.EnableCacheManager", "1"};
  o[n++] = (llmdd_option_t){"llm.EnableRemoteCacheAccessible", "1"};
  o[n++] = (llmdd_option_t){"llmdd.Backend", "acl"};
  if (listen) o[n++] = (llmdd_option_t){"llm.ListenIpInfo", listen};
  if (g_lib_dir) o[n++] = (llmdd_option_t){"llmdd.AscendLibDir", g_lib_dir};
  return llmdd_init(inst, o, n);
}

static uint32_t reg(llmdd_instance_t *inst, mem_t *m, uint64_t blocks, uint64_t cluster, int keyed, int64_t *id) {
  llmdd_cache_desc_t d;
  memset(&d, 0, sizeof d);
  d.placement = LLMDD_PLACEMENT_DEVICE;
  d.num_tensors = NT;
  d.data_type = LLMDD_DT_UINT8;
  d.num_dims = 2;
  d.shape[0] = (int64_t)blocks;
  d.shape[1] = BLOCK;
  d.seq_len_dim_index = -1;
  llmdd_cache_key_t k = llmdd_blocks_cache_key(cluster, 0);
  llmdd_cache_t out;
  uint32_t s = llmdd_register_blocks_cache(inst, &d, m->addrs, NT, keyed ? &k : NULL, -1, &out);
  *id = out.cache_id;
  return s;
}

#define STEP(what, expr)                                                                              \
  do {                                                                                                \
    uint32_t s_ = (expr);                                                                             \
    if (s_ != LLMDD_SUCCESS) {                                                                        \
      fprintf(stderr, "FAILED: %s: %s (%s)\n", (what), llmdd_status_name(s_), llmdd_last_error_message()); \
      return 1;                                                                                       \
    }                                                                                                 \
  } while (0)

static int prompt(int dev, uint16_t port, uint64_t blocks, int ready_fd, int done_fd) {
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
  llmdd_instance_t *p = NULL;
  STEP("llmdd_create (prompt)", llmdd_create(LLMDD_ROLE_PROMPT, 1, &p));
  STEP("llmdd_init (prompt)", init(p, dev, listen));
  /* Blocks [0, blocks) are pulled; the decoder pushes them into [blocks, 2 blocks). */
  mem_t m;
  if (dev_alloc(&m, dev, 2 * blocks * BLOCK, blocks * BLOCK) != 0) {
    fprintf(stderr, "FAILED: aclrtMalloc on device %d\n", dev);
    return 1;
  }
  int64_t id = 0;
  STEP("register (prompt)", reg(p, &m, 2 * blocks, 1, 1, &id));
  char c = 1;
  if (write(ready_fd, &c, 1) != 1) return 1;
  struct pollfd pf = {done_fd, POLLIN, 0};
  poll(&pf, 1, 600000);
  /* The decoder pushed the pattern into the second half: check it all. */
  uint64_t bad = dev_verify(&m, dev, blocks * BLOCK, blocks * BLOCK);
  if (bad) fprintf(stderr, "FAILED: %llu bytes of the prompt's cache differ after the push\n", (unsigned long long)bad);
  llmdd_finalize(p);
  llmdd_destroy(p);
  for (int t = 0; t < NT; t++) g.free_dev(m.p[t]);
  return bad ? 1 : 0;
}

static int decoder(int dev, uint16_t port, uint64_t blocks, int iters) {
  llmdd_instance_t *d = NULL;
  STEP("llmdd_create (decoder)", llmdd_create(LLMDD_ROLE_DECODER, 2, &d));
  STEP("llmdd_init (decoder)", init(d, dev, NULL));
  mem_t m;
  if (dev_alloc(&m, dev, blocks * BLOCK, 0) != 0) {
    fprintf(stderr, "FAILED: aclrtMalloc on device %d\n", dev);
    return 1;
  }
  int64_t mine = 0;
  STEP("register (decoder)", reg(d, &m, blocks, 2, 0, &mine));
  llmdd_ip_info_t r = llmdd_ip_info("127.0.0.1", port);
  llmdd_cluster_info_t c;
  memset(&c, 0, sizeof c);
  c.remote_cluster_id = 1;
  c.remote_ip_infos = &r;
  c.num_remote_ip_infos = 1;
  uint32_t ret = 0;
  double t0 = now_ms();
  STEP("llmdd_link_clusters", llmdd_link_clusters(d, &c, 1, 180000, &ret));
  printf("== link: %.0f ms\n", now_ms() - t0);
  uint64_t *idx = malloc(2 * blocks * sizeof *idx);
  for (uint64_t j = 0; j < 2 * blocks; j++) idx[j] = j;
  llmdd_cache_key_t k = llmdd_blocks_cache_key(1, 0);
  double bytes = (double)NT * (double)blocks * BLOCK;
  for (int op = 0; op < 2; op++) {
    double best = 1e30, sum = 0;
    for (int i = 0; i < iters; i++) {
      double s = now_ms();
      if (op == 0)
        STEP("llmdd_pull_blocks", llmdd_pull_blocks(d, &k, mine, idx, blocks, idx, blocks, NULL));
      else
        STEP("llmdd_push_blocks", llmdd_push_blocks(d, &k, mine, idx, blocks, idx + blocks, blocks, NULL));
      double e = now_ms() - s;
      sum += e;
      if (e < best) best = e;
    }
    printf("== %s: %d x %.1f MiB, best %.3f ms = %.2f GB/s, mean %.2f GB/s\n", op == 0 ? "pull" : "push", iters,
           bytes / (1 << 20), best, bytes / best / 1e6, bytes * iters / sum / 1e6);
    if (op == 0) {
      uint64_t bad = dev_verify(&m, dev, 0, blocks * BLOCK);
      printf("   pulled bytes verified: %s\n", bad ? "MISMATCH" : "ok");
      if (bad) g_failures++;
    }
  }
  free(idx);
  STEP("llmdd_unlink_clusters", llmdd_unlink_clusters(d, &c, 1, 10000, false, &ret));
  llmdd_finalize(d);
  llmdd_destroy(d);
  for (int t = 0; t < NT; t++) g.free_dev(m.p[t]);
  return g_failures ? 1 : 0;
}

static uint16_t free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  uint16_t port = 0;
  if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  if (fd >= 0) close(fd);
  return port;
}

int main(int argc, char **argv) {
  int dev_a = 0, dev_b = 1, iters = 5;
  double mib = 64;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--devices") && i + 1 < argc && sscanf(argv[i + 1], "%d,%d", &dev_a, &dev_b) == 2) {
      i++;
    } else if (!strcmp(argv[i], "--mib") && i + 1 < argc) {
      mib = atof(argv[++i]);
    } else if (!strcmp(argv[i], "--iters") && i + 1 < argc) {
      iters = atoi(argv[++i]);
    } else if (!strcmp(argv[i], "--lib-dir") && i + 1 < argc) {
      g_lib_dir = argv[++i];
    } else {
      fprintf(stderr, "usage: %s [--devices A,B] [--mib N] [--iters K] [--lib-dir DIR]\n", argv[0]);
      return 2;
    }
  }
  uint64_t blocks = (uint64_t)(mib * (1 << 20)) / BLOCK;
  if (blocks == 0 || iters <= 0 || dev_a == dev_b) {
    fprintf(stderr, "need --mib >= 0.0625, --iters >= 1 and two distinct devices\n");
    return 2;
  }
  if (load_acl() != 0) {
    fprintf(stderr, "FAILED: no ACL runtime (libascendcl.so / libacl_rt.so with aclrtMalloc) found\n");
    return 1;
  }
  report(dev_a, dev_b);
  /* llmdd's own view: the acl backend's bring-up line (libraries, versions,
   * physical id, NIC address) on the prompt's device. */
  printf("== llmdd\n");
  llmdd_set_log_filter("info");
  llmdd_set_log_callback(log_cb, NULL);
  llmdd_instance_t *probe = NULL;
  if (llmdd_create(LLMDD_ROLE_PROMPT, 9, &probe) == LLMDD_SUCCESS) {
    uint32_t s = init(probe, dev_a, NULL);
    if (s != LLMDD_SUCCESS) {
      fprintf(stderr, "FAILED: llmdd_init on the acl backend: %s (%s)\n", llmdd_status_name(s),
              llmdd_last_error_message());
      return 1;
    }
    llmdd_finalize(probe);
    llmdd_destroy(probe);
  }
  fflush(stdout);
  int ready[2], done[2];
  if (pipe(ready) != 0 || pipe(done) != 0) return 1;
  uint16_t port = free_port();
  pid_t pid = fork();
  if (pid == 0) {
    close(ready[0]);
    close(done[1]);
    _exit(prompt(dev_a, port, blocks, ready[1], done[0]));
  }
  close(ready[1]);
  close(done[0]);
  char c = 0;
  struct pollfd pf = {ready[0], POLLIN, 0};
  int rc = 1;
  if (poll(&pf, 1, 120000) == 1 && read(ready[0], &c, 1) == 1) rc = decoder(dev_b, port, blocks, iters);
  else fprintf(stderr, "FAILED: the prompt process did not come up\n");
  close(done[1]);
  int st = 0;
  waitpid(pid, &st, 0);
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) rc = 1;
  printf("== result: %s\n", rc == 0 ? "PASS" : "FAIL");
  return rc;
}
