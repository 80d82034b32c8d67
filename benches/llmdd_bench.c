/* llmdd_bench: the benchmark tool. Three modes (`--help` lists every option):
 *
 *   loopback   (default) forks a target and runs the initiator against it on
 *              127.0.0.1, and measures this machine's limit (memcpy, or TCP
 *              over loopback) in the same run. With no measurement option it
 *              runs the standard suite (bench_suite.c), as it always has.
 *   target     listens on --listen IP:PORT, registers (or allocates) one cache
 *              per block size, fills it with a known pattern and serves until
 *              SIGINT/SIGTERM or --duration elapses. It prints the initiator's
 *              command line: the layout travels on that line, nowhere else.
 *   initiator  links to the target at --connect IP:PORT and drives the
 *              transfers: pull/push, block size, blocks per call, threads, calls
 *              or bytes or duration; verifies the bytes that arrived.
 *
 * Both sides agree on layout by key, not by a side channel: a blocks cache of
 * block size B is the target's blocks key (cluster, model_id = B), so a block
 * size the target does not serve fails the first call with the library's
 * message. Contiguous caches are named by (cache id, slot): the target prints
 * its ids. Uses only the public C ABI (llmdd.h).
 */
#include "bench_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

enum { MAX_SIZES = 16, MAX_OPTIONS = 16, MAX_THREADS = 64, MAX_RUNS = 9 };
enum mode { MODE_LOOPBACK, MODE_TARGET, MODE_INITIATOR };
enum shape { SHAPE_BLOCKS, SHAPE_CONTIGUOUS };
enum op { OP_PULL = 1, OP_PUSH = 2 };
/* Calls of all threads together that one row may time when only --duration
 * bounds it (each thread keeps its share of latency samples). */
#define DURATION_MAX_CALLS (1u << 22)

static const char *const MODE_NAMES[] = {"loopback", "target", "initiator"};
static const char *const SHAPE_NAMES[] = {"blocks", "contiguous"};

/* Everything the command line says. */
typedef struct {
  enum mode mode;
  const char *listen, *connect;
  uint64_t cluster, target_cluster;
  unsigned ops, transports;
  enum shape shape;
  uint64_t sizes[MAX_SIZES];
  int nsizes;
  uint64_t buffer, blocks_per_call, calls, bytes, warmup;
  double duration;
  int threads, runs, json, verify, link_timeout_ms;
  int64_t target_ids[MAX_SIZES];
  int ntarget_ids;
  llmdd_option_t extra[MAX_OPTIONS];
  int nextra;
  char host[64]; /* --connect split into IP and port */
  uint16_t port;
  int measuring; /* a measurement option was given (else loopback runs the suite) */
} opts_t;

static void usage(FILE *f) {
  fprintf(f,
          "usage: llmdd_bench [--mode loopback|target|initiator] [options]\n"
          "\n"
          "Modes:\n"
          "  loopback (default)  target and initiator processes on 127.0.0.1, next to the limit\n"
          "                      measured in the same run; with no measurement option: the\n"
          "                      standard suite (every transport, block size, latency, async)\n"
          "  target              --listen IP:PORT; serves until SIGINT/SIGTERM or --duration\n"
          "  initiator           --connect IP:PORT of a target; drives the transfers, then prints\n"
          "                      the link's statistics (llmdd_get_link_stats)\n"
          "\n"
          "Layout (give the target and the initiator the same values; the target prints\n"
          "the initiator's command line):\n"
          "  --block-size LIST      block sizes, e.g. 16K,64K,256K,1M,2M (default); K/M/G = KiB/MiB/GiB\n"
          "  --buffer-size BYTES    bytes per block size on each side (default 128M); the\n"
          "                         initiator's must not exceed the target's\n"
          "  --cache blocks|contiguous   blocks: pull/push_blocks of a paged cache (default);\n"
          "                         contiguous: pull/push_cache of one batch slot per call\n"
          "  --transport LIST       same-host (registered memory: one-sided on one host, TCP\n"
          "                         between hosts), pool (the target allocates from its memfd\n"
          "                         pool), tcp (llmdd.SameHost=off); default: all in loopback,\n"
          "                         same-host otherwise\n"
          "  --cluster-id N         this side's cluster id (default: target 11, initiator and\n"
          "                         loopback's initiator 22)\n"
          "  --target-cluster-id N  the target's cluster id (initiator, loopback; default 11)\n"
          "  --target-cache-ids LIST  the target's cache ids, one per block size (initiator,\n"
          "                         contiguous only: printed by the target)\n"
          "  --option KEY=VALUE     an llmdd init option for this side (repeatable, e.g.\n"
          "                         llmdd.LinkSecretFile=/path, llmdd.DataConnections=4)\n"
          "\n"
          "Measurement (initiator and loopback):\n"
          "  --op LIST              pull, push or pull,push (default)\n"
          "  --blocks-per-call N    blocks per pull/push_blocks call (default: the thread's\n"
          "                         whole share of the buffer, one call per pass)\n"
          "  --calls N              timed calls per thread and row\n"
          "  --bytes BYTES          timed bytes per row, all threads together\n"
          "  --duration SECONDS     timed seconds per row (target: serve this long, 0 = until\n"
          "                         a signal); the first limit reached ends a row; default:\n"
          "                         --bytes of 5 buffers\n"
          "  --warmup N             untimed calls per thread before each row (default 1)\n"
          "  --threads N            concurrent callers sharing one instance and one link,\n"
          "                         each on its own slice of the buffer (default 1)\n"
          "  --verify / --no-verify check every byte that moved (default on; untimed)\n"
          "  --runs N               passes of the limit (and of each suite row), 1..9 (default 5)\n"
          "  --link-timeout MS      llmdd_link_clusters timeout (default 5000)\n"
          "  --json                 one JSON object per line per measurement instead of a table\n"
          "  -h, --help             this text\n");
}

static _Noreturn void bad(const char *fmt, const char *arg) {
  fprintf(stderr, "llmdd_bench: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, "\n(llmdd_bench --help lists the options)\n");
  exit(2);
}

static _Noreturn void bad2(const char *name, const char *what, const char *arg) {
  fprintf(stderr, "llmdd_bench: %s: %s: '%s'\n(llmdd_bench --help lists the options)\n", name, what, arg);
  exit(2);
}

/* A decimal count with an optional K/M/G (binary) suffix; 0 < value < 2^48. */
static uint64_t parse_size(const char *name, const char *s) {
  char *end = (char *)s;
  errno = 0;
  unsigned long long v = *s >= '0' && *s <= '9' ? strtoull(s, &end, 10) : 0;
  if (errno || v == 0) bad2(name, "not a positive number", s);
  unsigned shift = 0;
  if (*end == 'K' || *end == 'k') shift = 10;
  if (*end == 'M' || *end == 'm') shift = 20;
  if (*end == 'G' || *end == 'g') shift = 30;
  if (shift) end++;
  if (*end || v >= (1ull << 48) >> shift) bad2(name, "not a positive number below 2^48", s);
  return (uint64_t)v << shift;
}

/* Splits a comma list into `out`, each item parsed by `parse_size`. */
static int parse_list(const char *name, const char *s, uint64_t *out, int max) {
  char buf[256];
  if (strlen(s) >= sizeof buf) bad("%s: list too long", name);
  strcpy(buf, s);
  int n = 0;
  for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (n == max) bad("%s: too many items", name);
    out[n++] = parse_size(name, t);
  }
  if (n == 0) bad("%s: empty list", name);
  return n;
}

static unsigned parse_names(const char *name, const char *s, const char *const *names, const unsigned *bits,
                            int nnames) {
  char buf[128];
  if (strlen(s) >= sizeof buf) bad("%s: list too long", name);
  strcpy(buf, s);
  unsigned set = 0;
  for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    int i = 0;
    while (i < nnames && strcmp(t, names[i])) i++;
    if (i == nnames) bad2(name, "unknown value", t);
    set |= bits[i];
  }
  if (!set) bad("%s: empty list", name);
  return set;
}

static int parse_int(const char *name, const char *s, int lo, int hi) {
  uint64_t v = parse_size(name, s);
  if (v < (uint64_t)lo || v > (uint64_t)hi) bad2(name, "out of range", s);
  return (int)v;
}

/* Splits IP:PORT (IPv6 as [IP]:PORT) into `host` (NUL-terminated) and a port. */
static uint16_t split_address(const char *name, const char *s, char host[64]) {
  const char *colon = strrchr(s, ':');
  size_t n = colon ? (size_t)(colon - s) : 0;
  if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
    s++;
    n -= 2;
  }
  if (!colon || n == 0 || n >= 64) bad2(name, "expected IP:PORT", s);
  memcpy(host, s, n);
  host[n] = '\0';
  return (uint16_t)parse_int(name, colon + 1, 1, 65535);
}

static void parse(int argc, char **argv, opts_t *o) {
  enum {
    O_MODE = 256, O_LISTEN, O_CONNECT, O_CLUSTER, O_TCLUSTER, O_OP, O_TRANSPORT, O_CACHE, O_BLOCK, O_BUFFER,
    O_BPC, O_CALLS, O_BYTES, O_DURATION, O_WARMUP, O_THREADS, O_VERIFY, O_NOVERIFY, O_RUNS, O_JSON,
    O_LINKTO, O_TIDS, O_OPTION
  };
  static const struct option longs[] = {
      {"mode", required_argument, 0, O_MODE},          {"listen", required_argument, 0, O_LISTEN},
      {"connect", required_argument, 0, O_CONNECT},    {"cluster-id", required_argument, 0, O_CLUSTER},
      {"target-cluster-id", required_argument, 0, O_TCLUSTER},
      {"op", required_argument, 0, O_OP},              {"transport", required_argument, 0, O_TRANSPORT},
      {"cache", required_argument, 0, O_CACHE},        {"block-size", required_argument, 0, O_BLOCK},
      {"buffer-size", required_argument, 0, O_BUFFER}, {"blocks-per-call", required_argument, 0, O_BPC},
      {"calls", required_argument, 0, O_CALLS},        {"bytes", required_argument, 0, O_BYTES},
      {"duration", required_argument, 0, O_DURATION},  {"warmup", required_argument, 0, O_WARMUP},
      {"threads", required_argument, 0, O_THREADS},    {"verify", no_argument, 0, O_VERIFY},
      {"no-verify", no_argument, 0, O_NOVERIFY},       {"runs", required_argument, 0, O_RUNS},
      {"json", no_argument, 0, O_JSON},                {"link-timeout", required_argument, 0, O_LINKTO},
      {"target-cache-ids", required_argument, 0, O_TIDS},
      {"option", required_argument, 0, O_OPTION},      {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  static const char *const transport_names[] = {"same-host", "pool", "same-host-pool", "tcp"};
  static const unsigned transport_bits[] = {BENCH_SAME_HOST, BENCH_POOL, BENCH_POOL, BENCH_TCP};
  static const char *const op_names[] = {"pull", "push"};
  static const unsigned op_bits[] = {OP_PULL, OP_PUSH};
  static const uint64_t default_sizes[] = {16 << 10, 64 << 10, 256 << 10, 1 << 20, 2 << 20};
  memset(o, 0, sizeof *o);
  o->ops = OP_PULL | OP_PUSH;
  o->buffer = 128ull << 20;
  o->warmup = 1;
  o->threads = 1;
  o->runs = 5;
  o->verify = 1;
  o->link_timeout_ms = 5000;
  o->target_cluster = 11;
  int have_cluster = 0, have_duration = 0, c;
  opterr = 0;
  while ((c = getopt_long(argc, argv, ":h", longs, NULL)) != -1) {
    if (c != O_MODE && c != O_TRANSPORT && c != O_RUNS && c != 'h') o->measuring = 1;
    switch (c) {
    case 'h': usage(stdout); exit(0);
    case O_MODE:
      if (!strcmp(optarg, "loopback")) o->mode = MODE_LOOPBACK;
      else if (!strcmp(optarg, "target")) o->mode = MODE_TARGET;
      else if (!strcmp(optarg, "initiator")) o->mode = MODE_INITIATOR;
      else bad("--mode: unknown mode '%s' (loopback, target or initiator)", optarg);
      break;
    case O_LISTEN: o->listen = optarg; break;
    case O_CONNECT: o->connect = optarg; break;
    case O_CLUSTER: o->cluster = parse_size("--cluster-id", optarg); have_cluster = 1; break;
    case O_TCLUSTER: o->target_cluster = parse_size("--target-cluster-id", optarg); break;
    case O_OP: o->ops = parse_names("--op", optarg, op_names, op_bits, 2); break;
    case O_TRANSPORT: o->transports = parse_names("--transport", optarg, transport_names, transport_bits, 4); break;
    case O_CACHE:
      if (!strcmp(optarg, "blocks")) o->shape = SHAPE_BLOCKS;
      else if (!strcmp(optarg, "contiguous")) o->shape = SHAPE_CONTIGUOUS;
      else bad("--cache: unknown shape '%s' (blocks or contiguous)", optarg);
      break;
    case O_BLOCK: o->nsizes = parse_list("--block-size", optarg, o->sizes, MAX_SIZES); break;
    case O_BUFFER: o->buffer = parse_size("--buffer-size", optarg); break;
    case O_BPC: o->blocks_per_call = parse_size("--blocks-per-call", optarg); break;
    case O_CALLS: o->calls = parse_size("--calls", optarg); break;
    case O_BYTES: o->bytes = parse_size("--bytes", optarg); break;
    case O_DURATION: {
      char *end;
      errno = 0;
      o->duration = strtod(optarg, &end);
      if (errno || end == optarg || *end || !(o->duration >= 0 && o->duration <= 86400))
        bad("--duration: not a number of seconds in 0..86400: '%s'", optarg);
      have_duration = 1;
      break;
    }
    case O_WARMUP:
      o->warmup = strcmp(optarg, "0") ? parse_size("--warmup", optarg) : 0;
      break;
    case O_THREADS: o->threads = parse_int("--threads", optarg, 1, MAX_THREADS); break;
    case O_VERIFY: o->verify = 1; break;
    case O_NOVERIFY: o->verify = 0; break;
    case O_RUNS: o->runs = parse_int("--runs", optarg, 1, MAX_RUNS); break;
    case O_JSON: o->json = 1; break;
    case O_LINKTO: o->link_timeout_ms = parse_int("--link-timeout", optarg, 1, 600000); break;
    case O_TIDS: {
      uint64_t ids[MAX_SIZES];
      o->ntarget_ids = parse_list("--target-cache-ids", optarg, ids, MAX_SIZES);
      for (int i = 0; i < o->ntarget_ids; i++) o->target_ids[i] = (int64_t)ids[i];
      break;
    }
    case O_OPTION: {
      char *eq = strchr(optarg, '=');
      if (!eq || eq == optarg) bad("--option: expected KEY=VALUE, got '%s'", optarg);
      if (o->nextra == MAX_OPTIONS) bad("--option: more than 16 options%s", "");
      *eq = '\0';
      o->extra[o->nextra++] = (llmdd_option_t){optarg, eq + 1};
      break;
    }
    case ':': bad("%s needs a value", argv[optind - 1]);
    default: bad("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) bad("unexpected argument '%s'", argv[optind]);

  /* What each mode takes. */
  if (o->mode == MODE_TARGET) {
    if (!o->listen) bad("target mode needs --listen IP:PORT%s", "");
    char host[64];
    split_address("--listen", o->listen, host);
    if (o->connect) bad("--connect is for the initiator%s", "");
    if (o->calls || o->bytes || o->blocks_per_call || o->ntarget_ids)
      bad("--calls, --bytes, --blocks-per-call and --target-cache-ids are for the initiator%s", "");
  } else if (o->mode == MODE_INITIATOR) {
    if (!o->connect) bad("initiator mode needs --connect IP:PORT (the target's --listen)%s", "");
    if (o->listen) bad("--listen is for the target%s", "");
    o->port = split_address("--connect", o->connect, o->host);
  } else if (o->listen || o->connect) {
    bad("--listen and --connect are for target and initiator modes (loopback picks a port)%s", "");
  }
  if (!have_cluster) o->cluster = o->mode == MODE_TARGET ? 11 : 22;
  if (o->cluster == o->target_cluster && o->mode != MODE_TARGET)
    bad("--cluster-id must differ from the target's cluster id%s", "");
  if (!o->transports) o->transports = o->mode == MODE_LOOPBACK ? (BENCH_SAME_HOST | BENCH_POOL | BENCH_TCP)
                                                                 : BENCH_SAME_HOST;
  if (o->mode != MODE_LOOPBACK && (o->transports & (o->transports - 1)))
    bad("--transport: one transport per target/initiator run%s", "");
  if (!o->nsizes) {
    memcpy(o->sizes, default_sizes, sizeof default_sizes);
    o->nsizes = 5;
  }
  for (int i = 0; i < o->nsizes; i++) {
    if (o->sizes[i] % 8) bad("--block-size: each size must be a multiple of 8 bytes%s", "");
    if (o->buffer < o->sizes[i] * (uint64_t)o->threads)
      bad("--buffer-size: must hold at least one block per thread of every block size%s", "");
    for (int j = 0; j < i; j++)
      if (o->sizes[i] == o->sizes[j]) bad("--block-size: a size is listed twice%s", "");
  }
  if (o->shape == SHAPE_CONTIGUOUS && o->blocks_per_call > 1)
    bad("--blocks-per-call: a contiguous call moves one slot (use --cache blocks)%s", "");
  if (o->mode == MODE_INITIATOR && o->shape == SHAPE_CONTIGUOUS && o->ntarget_ids != o->nsizes)
    bad("--target-cache-ids: contiguous caches need one id per block size (the target prints them)%s", "");
  if (o->mode != MODE_INITIATOR && o->ntarget_ids) bad("--target-cache-ids is for the initiator%s", "");
  if (o->mode != MODE_TARGET && have_duration && o->duration <= 0)
    bad("--duration: a row needs a positive duration%s", "");
  if (!o->calls && !o->bytes && !have_duration) o->bytes = 5 * o->buffer;
}

/* ---- the pattern every side can compute: word k of block r of size `bs` in generation `gen`. */

static inline uint64_t pattern_word(uint64_t bs, uint64_t r, uint64_t k, uint64_t gen) {
  uint64_t x = bs * 0x9E3779B97F4A7C15ull ^ r * 0xC2B2AE3D27D4EB4Full ^ gen * 0xD6E8FEB86659FD93ull;
  return x + k * 0x165667B19E3779F9ull;
}

static void fill_block(uint8_t *m, uint64_t bs, uint64_t r, uint64_t gen) {
  uint64_t *w = (uint64_t *)m;
  for (uint64_t k = 0; k < bs / 8; k++) w[k] = pattern_word(bs, r, k, gen);
}

/* Index of the first word of block `m` that differs from the pattern, or -1. */
static int64_t check_block(const uint8_t *m, uint64_t bs, uint64_t r, uint64_t gen) {
  const uint64_t *w = (const uint64_t *)m;
  for (uint64_t k = 0; k < bs / 8; k++)
    if (w[k] != pattern_word(bs, r, k, gen)) return (int64_t)k;
  return -1;
}

/* ---- instances */

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) {
  (void)sig;
  g_stop = 1;
}

static uint64_t round_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static void init_instance(llmdd_instance_t *inst, const opts_t *o, unsigned transport, const char *listen) {
  llmdd_option_t opt[8 + MAX_OPTIONS];
  size_t n = 0;
  char pool[128];
  opt[n++] = (llmdd_option_t){"llm.DeviceId", "0"};
  opt[n++] = (llmdd_option_t){"llm.EnableCacheManager", "1"};
  opt[n++] = (llmdd_option_t){"llm.EnableRemoteCacheAccessible", "1"};
  opt[n++] = (llmdd_option_t){"llm.SyncKvCacheWaitTime", "30000"};
  if (listen) opt[n++] = (llmdd_option_t){"llm.ListenIpInfo", listen};
  if (transport == BENCH_TCP) opt[n++] = (llmdd_option_t){"llmdd.SameHost", "off"};
  if (transport == BENCH_POOL && listen) {
    /* One pool page of slack per cache beside its rounded-up size. */
    uint64_t size = (uint64_t)o->nsizes * (round_up(o->buffer, 2 << 20) + (2 << 20));
    snprintf(pool, sizeof pool, "{\"memory_size\":%" PRIu64 ",\"page_shift\":21}", size);
    opt[n++] = (llmdd_option_t){"llm.MemPoolConfig", pool};
  }
  for (int i = 0; i < o->nextra; i++) opt[n++] = o->extra[i];
  DIE_IF(llmdd_init(inst, opt, n), "llmdd_init");
}

static const char *transport_name(unsigned t) {
  return t == BENCH_SAME_HOST ? "same-host" : t == BENCH_POOL ? "pool" : "tcp";
}

static void print_list(FILE *f, const uint64_t *v, int n) {
  for (int i = 0; i < n; i++) fprintf(f, "%s%" PRIu64, i ? "," : "", v[i]);
}

/* The target: registers (or allocates from its pool) one cache per block size,
 * fills it with generation 0 of the pattern, tells `ready_fd` (loopback) or
 * stdout (by hand) and serves until `stop_fd` is readable or closed, a signal,
 * or --duration. */
static int run_target(const opts_t *o, unsigned transport, const char *listen, int ready_fd, int stop_fd) {
  llmdd_instance_t *p;
  DIE_IF(llmdd_create(LLMDD_ROLE_PROMPT, o->cluster, &p), "llmdd_create");
  init_instance(p, o, transport, listen);
  int64_t ids[MAX_SIZES];
  uint8_t *owned[MAX_SIZES] = {0};
  for (int s = 0; s < o->nsizes; s++) {
    uint64_t bs = o->sizes[s], rows = o->buffer / bs;
    llmdd_cache_desc_t d = bench_desc(1, rows, bs);
    llmdd_cache_key_t key = llmdd_blocks_cache_key(o->cluster, bs);
    llmdd_cache_t c;
    if (transport == BENCH_POOL) {
      if (o->shape == SHAPE_BLOCKS) DIE_IF(llmdd_allocate_blocks_cache(p, &d, &key, &c), "allocate_blocks_cache");
      else DIE_IF(llmdd_allocate_cache(p, &d, NULL, 0, &c), "allocate_cache");
    } else {
      uint8_t *m = owned[s] = aligned_alloc(2 << 20, round_up(rows * bs, 2 << 20));
      if (!m) DIE_IF(1, "aligned_alloc");
      uint64_t a = (uint64_t)(uintptr_t)m;
      if (o->shape == SHAPE_BLOCKS)
        DIE_IF(llmdd_register_blocks_cache(p, &d, &a, 1, &key, -1, &c), "register_blocks_cache");
      else
        DIE_IF(llmdd_register_cache(p, &d, &a, 1, NULL, 0, -1, &c), "register_cache");
    }
    uint8_t *m = (uint8_t *)(uintptr_t)c.tensor_addrs[0];
    for (uint64_t r = 0; r < rows; r++) fill_block(m + r * bs, bs, r, 0);
    ids[s] = c.cache_id;
  }
  if (ready_fd >= 0) {
    if (write(ready_fd, ids, sizeof ids) != (ssize_t)sizeof ids) return 1;
  } else {
    if (o->json) {
      printf("{\"event\":\"target_ready\",\"listen\":\"%s\",\"cluster_id\":%" PRIu64
             ",\"transport\":\"%s\",\"cache\":\"%s\",\"buffer_size\":%" PRIu64 ",\"block_sizes\":[",
             listen, o->cluster, transport_name(transport), SHAPE_NAMES[o->shape], o->buffer);
      print_list(stdout, o->sizes, o->nsizes);
      printf("],\"cache_ids\":[");
      for (int s = 0; s < o->nsizes; s++) printf("%s%" PRId64, s ? "," : "", ids[s]);
      printf("]}\n");
    } else {
      printf("%s target ready: cluster %" PRIu64 " on %s, %s, %s caches of %" PRIu64 " bytes, block sizes ",
             llmdd_version(), o->cluster, listen, transport_name(transport), SHAPE_NAMES[o->shape], o->buffer);
      print_list(stdout, o->sizes, o->nsizes);
      printf("\nrun on the initiator (with --connect set to an address of this host that it reaches):\n"
             "  llmdd_bench --mode initiator --connect %s --target-cluster-id %" PRIu64
             " --transport %s --cache %s --buffer-size %" PRIu64 " --block-size ",
             listen, o->cluster, transport_name(transport), SHAPE_NAMES[o->shape], o->buffer);
      print_list(stdout, o->sizes, o->nsizes);
      if (o->shape == SHAPE_CONTIGUOUS) {
        printf(" --target-cache-ids ");
        for (int s = 0; s < o->nsizes; s++) printf("%s%" PRId64, s ? "," : "", ids[s]);
      }
      printf("\n");
    }
    fflush(stdout);
  }
  double end = o->duration > 0 ? bench_now() + o->duration : 0;
  while (!g_stop && (end == 0 || bench_now() < end)) {
    struct pollfd pf = {stop_fd, POLLIN, 0};
    if (poll(stop_fd >= 0 ? &pf : NULL, stop_fd >= 0 ? 1 : 0, 100) > 0) break;
  }
  llmdd_finalize(p);
  llmdd_destroy(p);
  for (int s = 0; s < o->nsizes; s++) free(owned[s]);
  if (ready_fd < 0) fprintf(stderr, "llmdd_bench: target stopped\n");
  return 0;
}

/* ---- the initiator's measurement */

/* One thread's slice: local blocks [begin, begin + len) and the remote block
 * each maps to; the index arrays repeat their first `bpc` entries at the end so
 * that every call's window is contiguous. */
typedef struct {
  llmdd_instance_t *inst;
  const opts_t *o;
  int op;
  uint64_t bs, bpc, len, max_calls, warmup;
  int64_t local_id, remote_id;
  uint64_t *lidx, *ridx;
  double *lat;
  uint64_t done;
  double deadline_s;
  double t0, t1;
  pthread_barrier_t *barrier;
  uint32_t status;
  char error[256];
  uint64_t ops[2], bytes[2]; /* every call that succeeded (warmup and verification too), by direction */
} worker_t;

static uint32_t transfer(const worker_t *w, int op, uint64_t off, uint64_t n) {
  uint64_t target = w->o->target_cluster;
  /* Every tensor, one tensor per layer (each cache has one tensor). */
  llmdd_layer_range_t all = llmdd_layer_range(-1, -1, -1, -1, 1);
  if (w->o->shape == SHAPE_BLOCKS) {
    llmdd_cache_key_t key = llmdd_blocks_cache_key(target, w->bs);
    if (op == OP_PULL) return llmdd_pull_blocks(w->inst, &key, w->local_id, w->ridx + off, n, w->lidx + off, n, &all);
    return llmdd_push_blocks(w->inst, &key, w->local_id, w->lidx + off, n, w->ridx + off, n, &all);
  }
  llmdd_cache_key_t key = llmdd_cache_key_by_id(target, w->remote_id, (uint32_t)w->ridx[off]);
  if (op == OP_PULL) return llmdd_pull_cache(w->inst, &key, w->local_id, (uint32_t)w->lidx[off], -1, &all);
  return llmdd_push_cache(w->inst, &key, w->local_id, (uint32_t)w->lidx[off], -1, &all);
}

/* One call of `n` blocks from window `off`, counted on success. */
static uint32_t call(worker_t *w, int op, uint64_t off, uint64_t n) {
  uint32_t st = transfer(w, op, off, n);
  if (st == LLMDD_SUCCESS) {
    w->ops[op == OP_PUSH]++;
    w->bytes[op == OP_PUSH] += n * w->bs;
  }
  return st;
}

static void *worker(void *arg) {
  worker_t *w = arg;
  uint64_t off = 0, i;
  for (i = 0; i < w->warmup && !w->status; i++, off = (off + w->bpc) % w->len) w->status = call(w, w->op, off, w->bpc);
  pthread_barrier_wait(w->barrier);
  w->t0 = bench_now();
  double deadline = w->deadline_s > 0 ? w->t0 + w->deadline_s : 0;
  for (i = 0; i < w->max_calls && !w->status; i++, off = (off + w->bpc) % w->len) {
    double a = bench_now();
    w->status = call(w, w->op, off, w->bpc);
    double b = bench_now();
    w->lat[i] = (b - a) * 1e6;
    if (deadline && b >= deadline) {
      i++;
      break;
    }
  }
  w->t1 = bench_now();
  w->done = w->status ? 0 : i;
  if (w->status) snprintf(w->error, sizeof w->error, "%s", llmdd_last_error_message());
  return NULL;
}

/* A local cache per block size, and the scattered local → remote map. */
typedef struct {
  llmdd_cache_t cache;
  uint64_t rows, stride;
  uint8_t *mem;
} local_t;

static uint64_t gcd(uint64_t a, uint64_t b) {
  while (b) {
    uint64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

/* Local block j maps to remote block (j * stride) mod rows: a permutation
 * with no two neighbours adjacent, so nothing coalesces. */
static uint64_t scatter_stride(uint64_t rows) {
  if (rows < 3) return 1;
  uint64_t s = 7919 % rows;
  while (s < 2 || gcd(s, rows) != 1) s = (s + 1) % rows;
  return s;
}

/* Runs every thread's `op` over the first `touched[t]` blocks of its slice,
 * unmeasured: the verification passes. */
static void untimed(worker_t *ws, int nthreads, int op, const uint64_t *touched) {
  for (int t = 0; t < nthreads; t++) {
    uint64_t step = ws[t].bpc;
    for (uint64_t off = 0; off < touched[t]; off += step) {
      uint64_t n = touched[t] - off < step ? touched[t] - off : step;
      DIE_IF(call(&ws[t], op, off, n), op == OP_PULL ? "verification pull" : "verification push");
    }
  }
}

/* Fills (gen >= 0) or zeroes (gen < 0) the local blocks of every slice. */
static void prepare(worker_t *ws, int nthreads, const local_t *l, int64_t gen) {
  for (int t = 0; t < nthreads; t++)
    for (uint64_t i = 0; i < ws[t].len; i++) {
      uint8_t *m = l->mem + ws[t].lidx[i] * ws[t].bs;
      if (gen < 0) memset(m, 0, ws[t].bs);
      else fill_block(m, ws[t].bs, ws[t].ridx[i], (uint64_t)gen);
    }
}

typedef struct {
  const char *transport;
  const char *limit_name;
  double limit_gbps; /* 0: none measured (two hosts) */
} context_t;

static void print_header(const opts_t *o, const context_t *cx) {
  if (o->json) return;
  printf("\n%s, %s cache, %d thread%s, %" PRIu64 " bytes per block size on each side", cx->transport,
         SHAPE_NAMES[o->shape], o->threads, o->threads > 1 ? "s sharing one link" : "", o->buffer);
  if (cx->limit_gbps > 0) printf("; %s = %.2f GB/s in this run", cx->limit_name, cx->limit_gbps);
  printf("\n| op | block | blocks/call | calls | p50 us | p99 us | max us | GB/s | of limit | verified |\n"
         "|---|---|---|---|---|---|---|---|---|---|\n");
}

static void human_size(char *buf, size_t n, uint64_t b) {
  if (b >= (1 << 20) && b % (1 << 20) == 0) snprintf(buf, n, "%" PRIu64 " MiB", b >> 20);
  else if (b >= 1024 && b % 1024 == 0) snprintf(buf, n, "%" PRIu64 " KiB", b >> 10);
  else snprintf(buf, n, "%" PRIu64 " B", b);
}

/* Operations and bytes by direction (pull, push). */
typedef struct {
  uint64_t ops[2], bytes[2];
} counts_t;

/* One row: `op` at block size index `s`, all threads, then its verification;
 * every successful call is added to `total`. */
static void measure(llmdd_instance_t *inst, const opts_t *o, const context_t *cx, int s, int op, local_t *l,
                    int64_t remote_id, counts_t *total) {
  uint64_t bs = o->sizes[s];
  int T = o->threads;
  uint64_t share = l->rows / (uint64_t)T;
  uint64_t bpc = o->blocks_per_call ? o->blocks_per_call : (o->shape == SHAPE_BLOCKS ? share : 1);
  if (bpc > share) {
    fprintf(stderr, "llmdd_bench: --blocks-per-call %" PRIu64 " exceeds a thread's share of %" PRIu64
            " blocks of %" PRIu64 " bytes (raise --buffer-size)\n", bpc, share, bs);
    exit(2);
  }
  uint64_t max_calls = DURATION_MAX_CALLS / (uint64_t)T;
  if (o->calls) max_calls = o->calls;
  if (o->bytes) {
    uint64_t per_thread = (o->bytes + (uint64_t)T - 1) / (uint64_t)T;
    uint64_t c = (per_thread + bpc * bs - 1) / (bpc * bs);
    if (c < max_calls || !o->calls) max_calls = c;
  }
  worker_t ws[MAX_THREADS];
  pthread_barrier_t barrier;
  pthread_barrier_init(&barrier, NULL, (unsigned)T);
  for (int t = 0; t < T; t++) {
    worker_t *w = &ws[t];
    *w = (worker_t){.inst = inst, .o = o, .op = op, .bs = bs, .bpc = bpc, .len = share, .max_calls = max_calls,
                    .warmup = o->warmup, .local_id = l->cache.cache_id, .remote_id = remote_id,
                    .deadline_s = o->duration, .barrier = &barrier};
    w->lidx = malloc((share + bpc) * sizeof(uint64_t));
    w->ridx = malloc((share + bpc) * sizeof(uint64_t));
    w->lat = malloc(max_calls * sizeof(double));
    if (!w->lidx || !w->ridx || !w->lat) DIE_IF(1, "malloc");
    for (uint64_t i = 0; i < share + bpc; i++) {
      w->lidx[i] = (uint64_t)t * share + i % share;
      w->ridx[i] = w->lidx[i] * l->stride % l->rows;
    }
  }
  /* Pushes always carry the pattern, so the target's bytes stay generation 0
   * unless this row verifies (then generation 1, put back afterwards). */
  int push_gen = o->verify ? 1 : 0;
  if (op == OP_PUSH) prepare(ws, T, l, push_gen);
  else if (o->verify) prepare(ws, T, l, -1);
  pthread_t th[MAX_THREADS];
  for (int t = 0; t < T; t++)
    if (pthread_create(&th[t], NULL, worker, &ws[t])) DIE_IF(1, "pthread_create");
  for (int t = 0; t < T; t++) pthread_join(th[t], NULL);
  pthread_barrier_destroy(&barrier);
  const char *opname = op == OP_PULL ? "pull" : "push";
  double t0 = ws[0].t0, t1 = ws[0].t1;
  uint64_t calls = 0, touched[MAX_THREADS];
  for (int t = 0; t < T; t++) {
    if (ws[t].status) {
      fprintf(stderr, "llmdd_bench: %s of %" PRIu64 "-byte blocks failed: %s: %s\n", opname, bs,
              llmdd_status_name(ws[t].status), ws[t].error);
      if (o->mode == MODE_INITIATOR)
        fprintf(stderr, "(does the target serve --block-size %" PRIu64 ", --cache %s and a --buffer-size of at "
                "least %" PRIu64 "?)\n", bs, SHAPE_NAMES[o->shape], o->buffer);
      exit(1);
    }
    if (ws[t].t0 < t0) t0 = ws[t].t0;
    if (ws[t].t1 > t1) t1 = ws[t].t1;
    calls += ws[t].done;
    uint64_t moved = (ws[t].done + ws[t].warmup) * bpc;
    touched[t] = moved < share ? moved : share;
  }
  /* Verification, untimed: a pull must have brought generation 0; a push is
   * read back (into zeroed blocks) and must be generation 1, then put back. */
  if (o->verify) {
    if (op == OP_PUSH) {
      prepare(ws, T, l, -1);
      untimed(ws, T, OP_PULL, touched);
    }
    uint64_t gen = op == OP_PUSH ? 1 : 0;
    for (int t = 0; t < T; t++)
      for (uint64_t i = 0; i < touched[t]; i++) {
        int64_t k = check_block(l->mem + ws[t].lidx[i] * bs, bs, ws[t].ridx[i], gen);
        if (k >= 0) {
          fprintf(stderr, "llmdd_bench: verification failed after %s: local block %" PRIu64 " (remote block %" PRIu64
                  ", %" PRIu64 " bytes) differs at byte %" PRId64 "\n",
                  opname, ws[t].lidx[i], ws[t].ridx[i], bs, k * 8);
          exit(1);
        }
      }
    if (op == OP_PUSH) {
      prepare(ws, T, l, 0);
      untimed(ws, T, OP_PUSH, touched);
    }
  }
  /* Latency percentiles over every thread's calls. */
  double *all = malloc((calls ? calls : 1) * sizeof(double));
  if (!all) DIE_IF(1, "malloc");
  uint64_t n = 0;
  for (int t = 0; t < T; t++) {
    memcpy(all + n, ws[t].lat, ws[t].done * sizeof(double));
    n += ws[t].done;
  }
  qsort(all, n, sizeof(double), bench_cmp_d);
  double p50 = n ? all[n / 2] : 0, p99 = n ? all[n * 99 / 100] : 0, mx = n ? all[n - 1] : 0;
  uint64_t bytes = calls * bpc * bs;
  double secs = t1 - t0, gbps = secs > 0 ? (double)bytes / secs / 1e9 : 0;
  char block[32];
  human_size(block, sizeof block, bs);
  if (o->json) {
    printf("{\"mode\":\"%s\",\"transport\":\"%s\",\"cache\":\"%s\",\"op\":\"%s\",\"block_size\":%" PRIu64
           ",\"blocks_per_call\":%" PRIu64 ",\"threads\":%d,\"buffer_size\":%" PRIu64 ",\"warmup\":%" PRIu64
           ",\"calls\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"seconds\":%.6f,\"gbps\":%.3f,\"p50_us\":%.2f"
           ",\"p99_us\":%.2f,\"max_us\":%.2f,",
           MODE_NAMES[o->mode], cx->transport, SHAPE_NAMES[o->shape], opname, bs, bpc, T, o->buffer, o->warmup,
           calls, bytes, secs, gbps, p50, p99, mx);
    if (cx->limit_gbps > 0) printf("\"limit\":\"%s\",\"limit_gbps\":%.3f,", cx->limit_name, cx->limit_gbps);
    else printf("\"limit\":null,\"limit_gbps\":null,");
    printf("\"verified\":%s,\"version\":\"%s\"}\n", o->verify ? "true" : "false", llmdd_version());
  } else {
    char pct[16] = "-";
    if (cx->limit_gbps > 0) snprintf(pct, sizeof pct, "%.0f %%", 100 * gbps / cx->limit_gbps);
    printf("| %s | %s | %" PRIu64 " | %" PRIu64 " | %.1f | %.1f | %.1f | %.2f | %s | %s |\n", opname, block, bpc, calls,
           p50, p99, mx, gbps, pct, o->verify ? "yes" : "no");
  }
  fflush(stdout);
  free(all);
  for (int t = 0; t < T; t++) {
    for (int d = 0; d < 2; d++) {
      total->ops[d] += ws[t].ops[d];
      total->bytes[d] += ws[t].bytes[d];
    }
    free(ws[t].lidx);
    free(ws[t].ridx);
    free(ws[t].lat);
  }
}

/* ---- the link's own statistics (llmdd_get_link_stats), after the rows */

static const char *path_name(uint32_t p) {
  return p == LLMDD_PATH_SAME_PROCESS ? "same-process"
         : p == LLMDD_PATH_SAME_HOST  ? "same-host"
         : p == LLMDD_PATH_TCP        ? "tcp"
         : p == LLMDD_PATH_HCCL       ? "hccl"
                                      : "unknown";
}

/* Prints the link's statistics next to what this run counted itself (every
 * successful call: warmup, timed and verification), and exits 1 if the two
 * disagree or the link counted a failure: the counters must be exact. */
static void report_link_stats(llmdd_instance_t *d, const opts_t *o, const counts_t *mine) {
  llmdd_link_stats_t st;
  DIE_IF(llmdd_get_link_stats(d, o->target_cluster, &st), "llmdd_get_link_stats");
  uint64_t ops[2] = {0, 0}, bytes[2] = {0, 0};
  for (int dir = 0; dir < 2; dir++)
    for (int k = 0; k < LLMDD_PATH_COUNT; k++) {
      ops[dir] += st.ops[dir][k];
      bytes[dir] += st.bytes[dir][k];
    }
  int exact = ops[0] == mine->ops[0] && ops[1] == mine->ops[1] && bytes[0] == mine->bytes[0] &&
              bytes[1] == mine->bytes[1] && st.failed_ops == 0;
  if (o->json) {
    printf("{\"event\":\"link_stats\",\"cluster_id\":%" PRIu64 ",\"path\":\"%s\"", st.remote_cluster_id,
           path_name(st.path));
    for (int dir = 0; dir < 2; dir++) {
      const char *n = dir ? "push" : "pull";
      printf(",\"%s_ops\":%" PRIu64 ",\"%s_bytes\":%" PRIu64 ",\"%s_p50_us\":%.2f,\"%s_p99_us\":%.2f,"
             "\"%s_max_us\":%.2f,\"%s_ops_counted_by_bench\":%" PRIu64 ",\"%s_bytes_counted_by_bench\":%" PRIu64,
             n, ops[dir], n, bytes[dir], n, st.latency_p50_ns[dir] / 1e3, n, st.latency_p99_ns[dir] / 1e3, n,
             st.latency_max_ns[dir] / 1e3, n, mine->ops[dir], n, mine->bytes[dir]);
    }
    printf(",\"failed_ops\":%" PRIu64 ",\"in_flight\":%" PRIu64 ",\"exact\":%s}\n", st.failed_ops, st.in_flight,
           exact ? "true" : "false");
  } else {
    printf("\nlink statistics (llmdd_get_link_stats: cluster %" PRIu64 ", path %s; every call of this run,"
           " warmup and verification included)\n"
           "| op | ops | bytes | p50 us | p99 us | max us | counted by the bench |\n|---|---|---|---|---|---|---|\n",
           st.remote_cluster_id, path_name(st.path));
    for (int dir = 0; dir < 2; dir++)
      printf("| %s | %" PRIu64 " | %" PRIu64 " | %.1f | %.1f | %.1f | %" PRIu64 " ops, %" PRIu64 " bytes |\n",
             dir ? "push" : "pull", ops[dir], bytes[dir], st.latency_p50_ns[dir] / 1e3,
             st.latency_p99_ns[dir] / 1e3, st.latency_max_ns[dir] / 1e3, mine->ops[dir], mine->bytes[dir]);
    printf("failed operations %" PRIu64 ", in flight %" PRIu64 "%s%s\n", st.failed_ops, st.in_flight,
           st.failed_ops ? "; last error: " : "", st.failed_ops ? st.last_error_message : "");
  }
  fflush(stdout);
  if (!exact) {
    fprintf(stderr, "llmdd_bench: the link's statistics differ from what this run moved\n");
    exit(1);
  }
}

/* The initiator: links to the target at `connect` (IP:PORT), registers its own
 * caches, runs every row (block size x op), unlinks. */
static void run_initiator(const opts_t *o, const context_t *cx, const char *host, uint16_t port,
                          const int64_t *remote_ids) {
  unsigned transport = !strcmp(cx->transport, "tcp") ? BENCH_TCP : BENCH_SAME_HOST;

  llmdd_instance_t *d;
  DIE_IF(llmdd_create(LLMDD_ROLE_DECODER, o->cluster, &d), "llmdd_create");
  init_instance(d, o, transport, NULL);
  local_t locals[MAX_SIZES];
  for (int s = 0; s < o->nsizes; s++) {
    uint64_t bs = o->sizes[s], rows = o->buffer / bs;
    llmdd_cache_desc_t desc = bench_desc(1, rows, bs);
    uint8_t *m = aligned_alloc(2 << 20, round_up(rows * bs, 2 << 20));
    if (!m) DIE_IF(1, "aligned_alloc");
    memset(m, 0, rows * bs);
    uint64_t a = (uint64_t)(uintptr_t)m;
    llmdd_cache_t *c = &locals[s].cache;
    if (o->shape == SHAPE_BLOCKS)
      DIE_IF(llmdd_register_blocks_cache(d, &desc, &a, 1, NULL, -1, c), "register_blocks_cache");
    else
      DIE_IF(llmdd_register_cache(d, &desc, &a, 1, NULL, 0, -1, c), "register_cache");
    locals[s].rows = rows;
    locals[s].stride = scatter_stride(rows);
    locals[s].mem = m;
  }
  llmdd_ip_info_t ip = llmdd_ip_info(host, port);
  llmdd_cluster_info_t cl;
  memset(&cl, 0, sizeof cl);
  cl.remote_cluster_id = o->target_cluster;
  cl.remote_ip_infos = &ip;
  cl.num_remote_ip_infos = 1;
  uint32_t ret;
  DIE_IF(llmdd_link_clusters(d, &cl, 1, o->link_timeout_ms, &ret), "llmdd_link_clusters");
  print_header(o, cx);
  counts_t total = {{0, 0}, {0, 0}};
  for (int s = 0; s < o->nsizes; s++)
    for (int op = OP_PULL; op <= OP_PUSH; op <<= 1)
      if (o->ops & (unsigned)op) measure(d, o, cx, s, op, &locals[s], remote_ids ? remote_ids[s] : -1, &total);
  report_link_stats(d, o, &total);
  DIE_IF(llmdd_unlink_clusters(d, &cl, 1, 5000, false, &ret), "llmdd_unlink_clusters");
  llmdd_finalize(d);
  llmdd_destroy(d);
  for (int s = 0; s < o->nsizes; s++) free(locals[s].mem);
}

/* ---- limits measured in the same run (loopback) */

typedef struct {
  uint16_t port;
  uint64_t bytes;
  int runs;
} tcp_sender_t;

static void *tcp_sender(void *arg) {
  tcp_sender_t *s = arg;
  uint8_t *buf = malloc(1 << 20);
  if (!buf) return NULL;
  memset(buf, 7, 1 << 20);
  for (int r = 0; r < s->runs; r++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(s->port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a)) break;
    for (uint64_t sent = 0; sent < s->bytes;) {
      size_t n = s->bytes - sent < (1 << 20) ? (size_t)(s->bytes - sent) : (1 << 20);
      ssize_t w = send(fd, buf, n, MSG_NOSIGNAL);
      if (w <= 0) break;
      sent += (uint64_t)w;
    }
    close(fd);
  }
  free(buf);
  return NULL;
}

/* Median GB/s of one TCP connection over loopback receiving `bytes` into a buffer. */
static double tcp_gbps(uint64_t bytes, int runs) {
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) || listen(lfd, 1) ||
      getsockname(lfd, (struct sockaddr *)&a, &len))
    DIE_IF(1, "the TCP reference's socket");
  tcp_sender_t s = {ntohs(a.sin_port), bytes, runs};
  pthread_t th;
  if (pthread_create(&th, NULL, tcp_sender, &s)) DIE_IF(1, "pthread_create");
  uint8_t *buf = malloc(bytes);
  if (!buf) DIE_IF(1, "malloc");
  memset(buf, 0, bytes);
  double r[MAX_RUNS];
  for (int i = 0; i < runs; i++) {
    int fd = accept(lfd, NULL, NULL);
    if (fd < 0) DIE_IF(1, "accept");
    double t = bench_now();
    uint64_t got = 0;
    while (got < bytes) {
      ssize_t n = recv(fd, buf + got, bytes - got, 0);
      if (n <= 0) break;
      got += (uint64_t)n;
    }
    r[i] = (double)got / (bench_now() - t) / 1e9;
    close(fd);
  }
  pthread_join(th, NULL);
  close(lfd);
  free(buf);
  return bench_median(r, runs);
}

/* The floor of a one-block same-host pull: process_vm_readv alone of `bs`
 * bytes of the target's memory at `remote` (the same block every call, as a
 * re-posted request reads), `calls` times; prints p50 and p99. */
static void pvr_floor(const opts_t *o, pid_t pid, const uint8_t *remote, uint64_t bs, uint64_t calls) {
  uint8_t *dst = aligned_alloc(4096, round_up(bs, 4096));
  double *lat = malloc(calls * sizeof(double));
  if (!dst || !lat) DIE_IF(1, "malloc");
  memset(dst, 0, bs);
  struct iovec l = {dst, bs}, r = {(void *)remote, bs};
  for (uint64_t i = 0; i < calls + 1; i++) {
    double t0 = bench_now();
    if (process_vm_readv(pid, &l, 1, &r, 1, 0) != (ssize_t)bs) DIE_IF(1, "process_vm_readv");
    if (i) lat[i - 1] = (bench_now() - t0) * 1e6;
  }
  qsort(lat, calls, sizeof(double), bench_cmp_d);
  char block[32];
  human_size(block, sizeof block, bs);
  if (o->json)
    printf("{\"event\":\"limit\",\"limit\":\"process_vm_readv alone, one block\",\"block_size\":%" PRIu64
           ",\"calls\":%" PRIu64 ",\"p50_us\":%.2f,\"p99_us\":%.2f}\n", bs, calls, lat[calls / 2], lat[calls * 99 / 100]);
  else
    printf("limit: process_vm_readv alone, one %s block (the same one each call), p50 %.1f us, p99 %.1f us (%" PRIu64
           " calls)\n", block, lat[calls / 2], lat[calls * 99 / 100], calls);
  fflush(stdout);
  free(lat);
  free(dst);
}

/* Loopback: per transport, fork a target, measure the limit, run the initiator. */
static int run_loopback(opts_t *o) {
  uint64_t target_cluster = o->target_cluster;
  if (!o->json)
    printf("%s benchmark, loopback: target and initiator processes on 127.0.0.1\n", llmdd_version());
  double mc = 0, tcp = 0;
  for (unsigned t = BENCH_SAME_HOST; t <= BENCH_TCP; t <<= 1) {
    if (!(o->transports & t)) continue;
    context_t cx = {transport_name(t), "memcpy 1 thread", 0};
    if (t == BENCH_TCP) {
      if (tcp == 0) tcp = tcp_gbps(o->buffer, o->runs);
      cx.limit_name = "TCP over loopback, 1 connection";
      cx.limit_gbps = tcp;
    } else {
      if (mc == 0) mc = bench_memcpy_gbps(o->buffer, o->runs);
      cx.limit_gbps = mc;
    }
    int ready[2], stop[2];
    if (pipe(ready) || pipe(stop)) DIE_IF(1, "pipe");
    char listen[64];
    uint16_t port = bench_free_port();
    snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
    /* Single-block same-host pulls: also time process_vm_readv alone on a
     * block of the target's own memory (written by the target after the fork). */
    uint64_t probe_bytes = 0;
    uint8_t *probe = NULL;
    if (t == BENCH_SAME_HOST && o->blocks_per_call == 1 && (o->ops & OP_PULL) && o->shape == SHAPE_BLOCKS) {
      for (int s = 0; s < o->nsizes; s++)
        if (o->sizes[s] > probe_bytes) probe_bytes = o->sizes[s];
      probe = aligned_alloc(4096, round_up(probe_bytes, 4096));
      if (!probe) DIE_IF(1, "aligned_alloc");
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) DIE_IF(1, "fork");
    if (pid == 0) {
      if (probe) memset(probe, 0x5a, probe_bytes);
      close(ready[0]);
      close(stop[1]);
      opts_t to = *o;
      to.cluster = target_cluster;
      _exit(run_target(&to, t, listen, ready[1], stop[0]));
    }
    close(ready[1]);
    close(stop[0]);
    int64_t ids[MAX_SIZES];
    struct pollfd pf = {ready[0], POLLIN, 0};
    if (poll(&pf, 1, 120000) != 1 || read(ready[0], ids, sizeof ids) != (ssize_t)sizeof ids) {
      fprintf(stderr, "llmdd_bench: the target process did not come up\n");
      kill(pid, SIGKILL);
      waitpid(pid, NULL, 0);
      return 1;
    }
    run_initiator(o, &cx, "127.0.0.1", port, ids);
    if (probe) {
      uint64_t calls = o->calls ? o->calls : 3000;
      for (int s = 0; s < o->nsizes; s++) pvr_floor(o, pid, probe, o->sizes[s], calls);
      free(probe);
    }
    close(stop[1]);
    int st;
    waitpid(pid, &st, 0);
    close(ready[0]);
    if (!WIFEXITED(st) || WEXITSTATUS(st)) {
      fprintf(stderr, "llmdd_bench: the target process failed\n");
      return 1;
    }
  }
  return 0;
}

int main(int argc, char **argv) {
  opts_t o;
  parse(argc, argv, &o);
  if (o.mode == MODE_LOOPBACK && !o.measuring) return bench_suite(o.runs, o.transports);
  if (o.mode == MODE_LOOPBACK) return run_loopback(&o);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, NULL);
  sigaction(SIGTERM, &sa, NULL);
  if (o.mode == MODE_TARGET) return run_target(&o, o.transports, o.listen, -1, -1);
  context_t cx = {transport_name(o.transports), NULL, 0};
  if (!o.json) printf("%s benchmark, initiator: linking to cluster %" PRIu64 " at %s\n", llmdd_version(),
                      o.target_cluster, o.connect);
  run_initiator(&o, &cx, o.host, o.port, o.shape == SHAPE_CONTIGUOUS ? o.target_ids : NULL);
  return 0;
}
