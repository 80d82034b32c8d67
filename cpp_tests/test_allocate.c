/* allocate_cache / allocate_blocks_cache / deallocate_* / remove_cache_key
 * lifetimes, in one process and across two (both transports): deferred free
 * while keys remain (observed through pool exhaustion), consumption by pull,
 * pool errors, duplicate keys, wrong-kind deallocation, unregister rules
 * (allocated id, live links), cache id numbering, the address limit (set to 240) and
 * overlapping registrations. */
#include "t_dataplane.h"

#define P_ID 41
#define D_ID 42
#define MiB (1024ull * 1024ull)
#define BIG (20 * MiB) /* two tensors of BIG: 40 MiB of a 64 MiB pool */

static llmdd_cache_key_t req(uint64_t cl, uint64_t r) { return llmdd_cache_key(cl, r, 0, LLMDD_ID_UNSET); }

static void single_process(void) {
  const uint32_t PI = LLMDD_PARAM_INVALID;
  llmdd_cache_t c;
  /* no pool configured */
  llmdd_instance_t *np = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 100, &np));
  REQUIRE_OK(t_init(np, NULL, NULL, 0));
  llmdd_cache_desc_t small = t_desc2(LLMDD_PLACEMENT_DEVICE, 2, 4, 1024);
  CHECK_STATUS(llmdd_allocate_cache(np, &small, NULL, 0, &c), LLMDD_FEATURE_NOT_ENABLED);
  CHECK_STATUS(llmdd_allocate_blocks_cache(np, &small, NULL, &c), LLMDD_FEATURE_NOT_ENABLED);
  llmdd_cache_desc_t hsmall = small;
  hsmall.placement = LLMDD_PLACEMENT_HOST;
  CHECK_STATUS(llmdd_allocate_cache(np, &hsmall, NULL, 0, &c), LLMDD_FEATURE_NOT_ENABLED);
  CHECK_OK(llmdd_finalize(np));
  llmdd_destroy(np);

  llmdd_instance_t *p = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 101, &p));
  t_opts o = t_opts_make(0, 0, T_POOL_DEV, NULL);
  o.o[o.n++] = (llmdd_option_t){"llmdd.MaxRegisteredAddrs", "240"}; /* the documented 240 */
  REQUIRE_OK(t_init(p, NULL, o.o, o.n));
  /* ids start at 1 and increase, shared by register and allocate */
  t_mem r = t_mem_new(2, 4096);
  CHECK_OK(llmdd_register_cache(p, &small, r.addrs, 2, NULL, 0, -1, &c));
  CHECK(c.cache_id == 1);
  int64_t reg_id = c.cache_id;
  CHECK_OK(llmdd_allocate_cache(p, &small, NULL, 0, &c));
  CHECK(c.cache_id > reg_id);
  int64_t a1 = c.cache_id;
  CHECK_OK(llmdd_allocate_blocks_cache(p, &small, NULL, &c));
  CHECK(c.cache_id > a1);
  int64_t b1 = c.cache_id;
  CHECK_OK(llmdd_get_cache(p, a1, &c));
  CHECK(c.cache_id == a1 && c.num_tensor_addrs == 2 && c.tensor_addrs[0] != 0 && c.tensor_addrs[1] != 0);
  /* host placement without a host pool */
  CHECK(llmdd_allocate_cache(p, &hsmall, NULL, 0, &c) != LLMDD_SUCCESS);
  /* pool exhausted */
  llmdd_cache_desc_t huge = t_desc2(LLMDD_PLACEMENT_DEVICE, 5, 1, 16 * MiB);
  CHECK_STATUS(llmdd_allocate_cache(p, &huge, NULL, 0, &c), LLMDD_OUT_OF_MEMORY);
  CHECK_STATUS(llmdd_allocate_blocks_cache(p, &huge, NULL, &c), LLMDD_OUT_OF_MEMORY);
  /* duplicate / already-bound keys */
  llmdd_cache_key_t dup[2] = {req(101, 7), req(101, 7)};
  CHECK_STATUS(llmdd_allocate_cache(p, &small, dup, 2, &c), PI);
  CHECK_OK(llmdd_allocate_cache(p, &small, dup, 1, &c));
  int64_t keyed = c.cache_id;
  CHECK_STATUS(llmdd_allocate_cache(p, &small, dup, 1, &c), PI);
  llmdd_cache_key_t too_many[5] = {req(101, 20), req(101, 21), req(101, 22), req(101, 23), req(101, 24)};
  CHECK_STATUS(llmdd_allocate_cache(p, &small, too_many, 5, &c), PI); /* 5 keys > 4 slots */
  llmdd_cache_key_t bk = llmdd_blocks_cache_key(101, 3);
  CHECK_OK(llmdd_allocate_blocks_cache(p, &small, &bk, &c));
  int64_t b2 = c.cache_id;
  CHECK_STATUS(llmdd_allocate_blocks_cache(p, &small, &bk, &c), PI);
  /* wrong-kind deallocation, unregister of an allocated cache */
  CHECK_STATUS(llmdd_deallocate_blocks_cache(p, a1), PI);
  CHECK_STATUS(llmdd_deallocate_cache(p, b1), PI);
  CHECK_STATUS(llmdd_unregister_cache(p, a1), PI);
  CHECK_STATUS(llmdd_unregister_cache(p, b1), PI);
  CHECK_OK(llmdd_deallocate_cache(p, reg_id)); /* registered: no-op */
  CHECK_OK(llmdd_get_cache(p, reg_id, &c));
  CHECK_OK(llmdd_deallocate_cache(p, 9999)); /* unknown: no-op */
  CHECK_OK(llmdd_deallocate_cache(p, a1));
  CHECK_STATUS(llmdd_get_cache(p, a1, &c), LLMDD_KV_CACHE_NOT_EXIST);
  CHECK_OK(llmdd_deallocate_blocks_cache(p, b1));
  CHECK_OK(llmdd_deallocate_blocks_cache(p, b2));
  /* the blocks key was dropped with its cache: it can be bound again */
  CHECK_OK(llmdd_allocate_blocks_cache(p, &small, &bk, &c));
  CHECK_OK(llmdd_deallocate_blocks_cache(p, c.cache_id));
  /* deferred free observed through the pool: 40 MiB held by a key */
  llmdd_cache_desc_t big = t_desc2(LLMDD_PLACEMENT_DEVICE, 2, 1, BIG);
  llmdd_cache_key_t bigk = req(101, 50);
  CHECK_OK(llmdd_allocate_cache(p, &big, &bigk, 1, &c));
  int64_t bigid = c.cache_id;
  CHECK_OK(llmdd_deallocate_cache(p, bigid));
  CHECK_STATUS(llmdd_allocate_cache(p, &big, NULL, 0, &c), LLMDD_OUT_OF_MEMORY);
  CHECK_OK(llmdd_remove_cache_key(p, &bigk)); /* last key: frees it */
  CHECK_OK(llmdd_allocate_cache(p, &big, &bigk, 1, &c));
  CHECK_OK(llmdd_remove_cache_key(p, &bigk)); /* key gone, id still holds it */
  CHECK_STATUS(llmdd_allocate_cache(p, &big, NULL, 0, &c), LLMDD_OUT_OF_MEMORY);
  CHECK_OK(llmdd_remove_cache_key(p, &bigk)); /* absent key: no-op */
  (void)keyed;

  /* overlapping registration */
  t_mem ov = t_mem_new(1, 8192);
  llmdd_cache_desc_t one = t_desc2(LLMDD_PLACEMENT_DEVICE, 1, 1, 4096);
  uint64_t a0 = ov.addrs[0], a_half = ov.addrs[0] + 2048, a_next = ov.addrs[0] + 4096;
  CHECK_OK(llmdd_register_cache(p, &one, &a0, 1, NULL, 0, -1, &c));
  int64_t ov_id = c.cache_id;
  CHECK_STATUS(llmdd_register_cache(p, &one, &a0, 1, NULL, 0, -1, &c), PI);
  CHECK_STATUS(llmdd_register_blocks_cache(p, &one, &a_half, 1, NULL, -1, &c), PI);
  CHECK_OK(llmdd_register_cache(p, &one, &a_next, 1, NULL, 0, -1, &c)); /* adjacent is fine */
  int64_t adj_id = c.cache_id;
  CHECK_OK(llmdd_unregister_cache(p, ov_id));
  CHECK_OK(llmdd_unregister_cache(p, adj_id));
  CHECK_OK(llmdd_unregister_cache(p, ov_id)); /* unknown: success */

  /* 240 live registered addresses: 2 already live (reg_id) */
  t_mem lim = t_mem_new(1, 240 * 64);
  llmdd_cache_desc_t d10 = t_desc2(LLMDD_PLACEMENT_DEVICE, 10, 1, 64);
  llmdd_cache_desc_t d8 = t_desc2(LLMDD_PLACEMENT_DEVICE, 8, 1, 64);
  llmdd_cache_desc_t d1 = t_desc2(LLMDD_PLACEMENT_DEVICE, 1, 1, 64);
  int64_t ids[30];
  uint64_t a[10];
  uint64_t off = 0;
  for (int i = 0; i < 23; i++) { /* 230 addresses */
    for (int t = 0; t < 10; t++, off += 64) a[t] = lim.addrs[0] + off;
    CHECK_OK(llmdd_register_cache(p, &d10, a, 10, NULL, 0, -1, &c));
    ids[i] = c.cache_id;
  }
  for (int t = 0; t < 8; t++, off += 64) a[t] = lim.addrs[0] + off;
  CHECK_OK(llmdd_register_blocks_cache(p, &d8, a, 8, NULL, -1, &c)); /* 238 + 2 = 240 */
  ids[23] = c.cache_id;
  a[0] = lim.addrs[0] + off;
  CHECK_STATUS(llmdd_register_cache(p, &d1, a, 1, NULL, 0, -1, &c), PI); /* 241 */
  CHECK_STATUS(llmdd_register_blocks_cache(p, &d1, a, 1, NULL, -1, &c), PI);
  CHECK_OK(llmdd_unregister_cache(p, reg_id)); /* 238 */
  CHECK_OK(llmdd_register_cache(p, &d1, a, 1, NULL, 0, -1, &c));
  for (int i = 0; i < 24; i++) CHECK_OK(llmdd_unregister_cache(p, ids[i]));
  CHECK_OK(llmdd_finalize(p));
  llmdd_destroy(p);
  t_mem_free(&r);
  t_mem_free(&ov);
  t_mem_free(&lim);
}

/* ---------- two processes ---------- */
static int64_t p_alloc_id, p_blocks_id;
static void p_setup(t_peer *self, llmdd_instance_t *p) {
  (void)self;
  (void)p;
}
static uint64_t p_cmd(t_peer *self, llmdd_instance_t *p, uint64_t cmd) {
  (void)self;
  llmdd_cache_t c;
  if (cmd == 1) { /* allocate 2 x BIG, key req 501 on slot 0 */
    llmdd_cache_desc_t big = t_desc2(LLMDD_PLACEMENT_DEVICE, 2, 1, BIG);
    llmdd_cache_key_t k = req(P_ID, 501);
    REQUIRE_OK(llmdd_allocate_cache(p, &big, &k, 1, &c));
    for (uint32_t t = 0; t < 2; t++) t_fill((uint8_t *)(uintptr_t)c.tensor_addrs[t], BIG, 51, t, 0);
    p_alloc_id = c.cache_id;
    return (uint64_t)c.cache_id;
  }
  if (cmd == 2) return llmdd_deallocate_cache(p, p_alloc_id);
  if (cmd == 3) { /* can the pool hold another 40 MiB? */
    llmdd_cache_desc_t big = t_desc2(LLMDD_PLACEMENT_DEVICE, 2, 1, BIG);
    uint32_t s = llmdd_allocate_cache(p, &big, NULL, 0, &c);
    if (s == LLMDD_SUCCESS) CHECK_OK(llmdd_deallocate_cache(p, c.cache_id));
    return s;
  }
  if (cmd == 4) { /* blocks cache 2 x 16 blocks x 4096, model 2 */
    llmdd_cache_desc_t bd = t_desc2(LLMDD_PLACEMENT_DEVICE, 2, 16, 4096);
    llmdd_cache_key_t bk = llmdd_blocks_cache_key(P_ID, 2);
    REQUIRE_OK(llmdd_allocate_blocks_cache(p, &bd, &bk, &c));
    for (uint32_t t = 0; t < 2; t++) t_fill((uint8_t *)(uintptr_t)c.tensor_addrs[t], 16 * 4096, 52, t, 0);
    p_blocks_id = c.cache_id;
    return (uint64_t)c.cache_id;
  }
  if (cmd == 5) return llmdd_deallocate_blocks_cache(p, p_blocks_id);
  return 999;
}

static void two_process(int tcp) {
  t_peer peer;
  memset(&peer, 0, sizeof peer);
  peer.cluster = P_ID;
  peer.port = t_free_port();
  peer.opts = t_opts_make(tcp, 0, T_POOL_DEV, NULL);
  peer.setup = p_setup;
  peer.cmd = p_cmd;
  t_chan_pair ch = t_chan_new();
  pid_t pid = t_peer_start(&peer, &ch);

  llmdd_instance_t *d = NULL;
  t_opts dopts = t_opts_make(tcp, 0, NULL, NULL);
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, D_ID, &d));
  REQUIRE_OK(t_init(d, NULL, dopts.o, dopts.n));
  t_mem m = t_mem_new(2, BIG);
  t_mem kb = t_mem_new(2, 8 * 4096);
  llmdd_cache_t dc, kc;
  llmdd_cache_desc_t big = t_desc2(LLMDD_PLACEMENT_DEVICE, 2, 1, BIG);
  llmdd_cache_desc_t kd = t_desc2(LLMDD_PLACEMENT_DEVICE, 2, 8, 4096);
  REQUIRE_OK(llmdd_register_cache(d, &big, m.addrs, 2, NULL, 0, -1, &dc));
  REQUIRE_OK(llmdd_register_blocks_cache(d, &kd, kb.addrs, 2, NULL, -1, &kc));
  CHECK(t_peer_call(ch.parent, 1) == 1); /* first cache of the prompt: id 1 */
  CHECK(t_peer_call(ch.parent, 4) == 2);
  REQUIRE_OK(t_link(d, P_ID, peer.port));
  CHECK_STATUS(llmdd_unregister_cache(d, dc.cache_id), LLMDD_EXIST_LINK);

  CHECK(t_peer_call(ch.parent, 2) == LLMDD_SUCCESS);       /* deallocate: key remains */
  CHECK(t_peer_call(ch.parent, 3) == LLMDD_OUT_OF_MEMORY); /* still held */
  llmdd_cache_key_t k = req(P_ID, 501);
  CHECK_OK(llmdd_pull_cache(d, &k, dc.cache_id, 0, -1, NULL));
  for (uint32_t t = 0; t < 2; t++) CHECK(t_verify(m.p[t], BIG, 51, t, 0));
  CHECK(t_peer_call(ch.parent, 3) == LLMDD_SUCCESS); /* consumed last key: freed */
  t_mem_zero(&m);
  CHECK_STATUS(llmdd_pull_cache(d, &k, dc.cache_id, 0, -1, NULL), LLMDD_KV_CACHE_NOT_EXIST);
  llmdd_cache_key_t byid = llmdd_cache_key_by_id(P_ID, 1, 0);
  CHECK_STATUS(llmdd_pull_cache(d, &byid, dc.cache_id, 0, -1, NULL), LLMDD_KV_CACHE_NOT_EXIST);
  CHECK(t_all(m.p[0], BIG, 0) && t_all(m.p[1], BIG, 0));

  llmdd_cache_key_t bk = llmdd_blocks_cache_key(P_ID, 2);
  uint64_t sb[3] = {15, 0, 1}, db[3] = {0, 6, 7};
  CHECK_OK(llmdd_pull_blocks(d, &bk, kc.cache_id, sb, 3, db, 3, NULL));
  CHECK_OK(llmdd_pull_blocks(d, &bk, kc.cache_id, sb, 3, db, 3, NULL)); /* blocks keys persist */
  for (uint32_t t = 0; t < 2; t++) {
    CHECK(t_verify(kb.p[t], 4096, 52, t, 15 * 4096));
    CHECK(t_all(kb.p[t] + 4096, 5 * 4096, 0));
    CHECK(t_verify(kb.p[t] + 6 * 4096, 2 * 4096, 52, t, 0));
  }
  CHECK(t_peer_call(ch.parent, 5) == LLMDD_SUCCESS);
  t_mem_zero(&kb);
  CHECK_STATUS(llmdd_pull_blocks(d, &bk, kc.cache_id, sb, 3, db, 3, NULL), LLMDD_KV_CACHE_NOT_EXIST);
  CHECK(t_all(kb.p[0], 8 * 4096, 0) && t_all(kb.p[1], 8 * 4096, 0));

  CHECK_OK(t_unlink(d, P_ID, peer.port));
  CHECK_OK(llmdd_unregister_cache(d, dc.cache_id));
  t_peer_stop(ch.parent, pid);
  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(d);
  t_mem_free(&m);
  t_mem_free(&kb);
}

int main(void) {
  for (int tcp = 0; tcp < 2; tcp++) two_process(tcp);
  single_process();
  return t_finish("test_allocate");
}
