/* pull_cache (batch -> batch), byte-exact over both transports: by request
 * key, by model id, by prefix key and by cache id + slot; size -1 and an
 * explicit smaller size; layer ranges and tensor_num_per_layer; one-shot
 * consumption of req keys on ALLOCATED caches (also through the id path),
 * persistent keys on registered caches and prefix keys, remove_cache_key. */
#include "t_dataplane.h"

#define P_ID 11
#define D_ID 12
#define NT 8
#define S 8192
#define RB 4 /* registered batch */
#define AB 4 /* allocated batch */
#define DB 3 /* decoder batch */

static llmdd_cache_key_t req(uint64_t r, uint64_t model) { return llmdd_cache_key(P_ID, r, model, LLMDD_ID_UNSET); }
static llmdd_cache_key_t pfx(uint64_t p) { return llmdd_cache_key(P_ID, LLMDD_ID_UNSET, 0, p); }

static void p_setup(t_peer *self, llmdd_instance_t *p) {
  static t_mem reg;
  reg = t_mem_new(NT, (uint64_t)RB * S);
  t_mem_fill(&reg, 21);
  llmdd_cache_desc_t d = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, RB, S);
  llmdd_cache_key_t rk[4] = {req(201, 0), req(203, 5), req(202, 0), pfx(7)};
  llmdd_cache_t rc, ac;
  REQUIRE_OK(llmdd_register_cache(p, &d, reg.addrs, NT, rk, 4, -1, &rc));
  llmdd_cache_desc_t ad = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, AB, S);
  llmdd_cache_key_t ak[4] = {req(301, 0), req(302, 0), req(303, 0), pfx(9)};
  REQUIRE_OK(llmdd_allocate_cache(p, &ad, ak, 4, &ac));
  CHECK(ac.num_tensor_addrs == NT);
  for (uint32_t t = 0; t < NT; t++) t_fill((uint8_t *)(uintptr_t)ac.tensor_addrs[t], (uint64_t)AB * S, 22, t, 0);
  t_send(self->ch, (uint64_t)rc.cache_id);
  t_send(self->ch, (uint64_t)ac.cache_id);
}

static uint64_t p_cmd(t_peer *self, llmdd_instance_t *p, uint64_t c) {
  (void)self;
  if (c == 1) {
    llmdd_cache_key_t k = req(303, 0);
    return llmdd_remove_cache_key(p, &k);
  }
  return 999;
}

static llmdd_instance_t *g_d;
static int64_t g_dst;
static t_mem g_act, g_exp, g_reg, g_alloc;
static const char *g_tr;

/* Pulls src slot `ss` of image `src` (through `key`) into dst slot `ds`. */
static void pc_case(const char *what, llmdd_cache_key_t key, const t_mem *src, uint32_t ss, uint32_t ds,
                    int64_t size, const llmdd_layer_range_t *lr, uint32_t expect) {
  char label[160];
  snprintf(label, sizeof label, "%s/%s", g_tr, what);
  t_mem_zero(&g_act);
  t_mem_zero(&g_exp);
  uint32_t s = llmdd_pull_cache(g_d, &key, g_dst, ds, size, lr);
  if (s != expect)
    fprintf(stderr, "[%s] pull_cache: %s, expected %s (%s)\n", label, llmdd_status_name(s),
            llmdd_status_name(expect), llmdd_last_error_message());
  CHECK(s == expect);
  if (expect == LLMDD_SUCCESS) {
    uint64_t len = size < 0 ? S : (uint64_t)size;
    uint32_t ts[64], td[64];
    uint32_t m = t_pairs(lr, NT, NT, ts, td);
    for (uint32_t i = 0; i < m; i++) t_mem_copy(&g_exp, td[i], (uint64_t)ds * S, src, ts[i], (uint64_t)ss * S, len);
  }
  CHECK_MEM(&g_act, &g_exp, label);
}

static void run(int tcp) {
  g_tr = t_tr_name(tcp);
  t_peer peer;
  memset(&peer, 0, sizeof peer);
  peer.cluster = P_ID;
  peer.port = t_free_port();
  peer.opts = t_opts_make(tcp, 0, T_POOL_DEV, NULL);
  peer.setup = p_setup;
  peer.cmd = p_cmd;
  t_chan_pair ch = t_chan_new();
  pid_t pid = t_peer_start(&peer, &ch);
  int64_t reg_id = (int64_t)t_recv(ch.parent, 30000);
  int64_t alloc_id = (int64_t)t_recv(ch.parent, 30000);
  CHECK(reg_id == 1 && alloc_id == 2);

  t_opts dopts = t_opts_make(tcp, 0, NULL, NULL);
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID, &g_d));
  REQUIRE_OK(t_init(g_d, NULL, dopts.o, dopts.n));
  g_act = t_mem_new(NT, (uint64_t)DB * S);
  g_exp = t_mem_new(NT, (uint64_t)DB * S);
  llmdd_cache_desc_t dd = t_desc2(LLMDD_PLACEMENT_DEVICE, NT, DB, S);
  llmdd_cache_t dc;
  REQUIRE_OK(llmdd_register_cache(g_d, &dd, g_act.addrs, NT, NULL, 0, -1, &dc));
  g_dst = dc.cache_id;
  REQUIRE_OK(t_link(g_d, P_ID, peer.port));

  const uint32_t OK = LLMDD_SUCCESS, GONE = LLMDD_KV_CACHE_NOT_EXIST;
  /* registered cache */
  pc_case("req key 201 -> slot 1", req(201, 0), &g_reg, 0, 1, -1, NULL, OK);
  pc_case("req key 201 again (registered: not consumed)", req(201, 0), &g_reg, 0, 2, -1, NULL, OK);
  pc_case("req 203 model 5", req(203, 5), &g_reg, 1, 0, -1, NULL, OK);
  pc_case("req 203 with model 0 is unknown", req(203, 0), &g_reg, 1, 0, -1, NULL, GONE);
  pc_case("by id slot 2", llmdd_cache_key_by_id(P_ID, reg_id, 2), &g_reg, 2, 0, -1, NULL, OK);
  pc_case("by id slot 1, size 1000", llmdd_cache_key_by_id(P_ID, reg_id, 1), &g_reg, 1, 2, 1000, NULL, OK);
  pc_case("req 202, size 4097", req(202, 0), &g_reg, 2, 1, 4097, NULL, OK);
  pc_case("req 202 layers [1,3)->[0,2)", req(202, 0), &g_reg, 2, 1, -1, &(llmdd_layer_range_t){1, 3, 0, 2, 0, {0}}, OK);
  pc_case("by id layers [0,1)->[3,4) size 100", llmdd_cache_key_by_id(P_ID, reg_id, 3), &g_reg, 3, 2, 100,
          &(llmdd_layer_range_t){0, 1, 3, 4, 0, {0}}, OK);
  pc_case("tensor_num_per_layer 1 [0,3)->[5,8)", req(201, 0), &g_reg, 0, 0, -1,
          &(llmdd_layer_range_t){0, 3, 5, 8, 1, {0}}, OK);
  pc_case("tensor_num_per_layer 4 [1,2)->[0,1)", req(201, 0), &g_reg, 0, 0, -1,
          &(llmdd_layer_range_t){1, 2, 0, 1, 4, {0}}, OK);
  pc_case("prefix key 7", pfx(7), &g_reg, 3, 1, -1, NULL, OK);
  pc_case("prefix key 7 again", pfx(7), &g_reg, 3, 0, -1, NULL, OK);
  pc_case("unknown req key", req(999, 0), &g_reg, 0, 0, -1, NULL, GONE);

  /* allocated cache: one-shot req keys */
  pc_case("alloc req 301 first pull", req(301, 0), &g_alloc, 0, 1, -1, NULL, OK);
  pc_case("alloc req 301 second pull -> consumed", req(301, 0), &g_alloc, 0, 1, -1, NULL, GONE);
  pc_case("alloc by id slot 0 after its key was consumed", llmdd_cache_key_by_id(P_ID, alloc_id, 0), &g_alloc, 0,
          2, -1, NULL, OK);
  pc_case("alloc by id slot 1 (bound to 302: consumes it)", llmdd_cache_key_by_id(P_ID, alloc_id, 1), &g_alloc,
          1, 0, -1, NULL, OK);
  pc_case("alloc req 302 after the id pull -> consumed", req(302, 0), &g_alloc, 1, 0, -1, NULL, GONE);
  CHECK(t_peer_call(ch.parent, 1) == LLMDD_SUCCESS); /* remove_cache_key(303) */
  pc_case("alloc req 303 after remove_cache_key", req(303, 0), &g_alloc, 2, 0, -1, NULL, GONE);
  pc_case("alloc prefix 9", pfx(9), &g_alloc, 3, 2, -1, NULL, OK);
  pc_case("alloc prefix 9 again (prefix keys persist)", pfx(9), &g_alloc, 3, 1, 512, NULL, OK);

  CHECK_OK(t_unlink(g_d, P_ID, peer.port));
  t_peer_stop(ch.parent, pid);
  CHECK_OK(llmdd_finalize(g_d));
  llmdd_destroy(g_d);
  g_d = NULL;
  t_mem_free(&g_act);
  t_mem_free(&g_exp);
}

int main(void) {
  g_reg = t_mem_new(NT, (uint64_t)RB * S);
  g_alloc = t_mem_new(NT, (uint64_t)AB * S);
  t_mem_fill(&g_reg, 21);
  t_mem_fill(&g_alloc, 22);
  for (int tcp = 0; tcp < 2; tcp++) run(tcp);
  return t_finish("test_pull_cache");
}
