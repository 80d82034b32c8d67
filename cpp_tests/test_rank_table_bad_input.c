/* Every bad input of llmdd_link / llmdd_unlink / llmdd_query_register_mem_status:
 * the documented status AND a last-error message that says what was wrong.
 * Single process; a few instances of it act as peers where one is needed. */
#include "llmdd_test_blocks.h"
#include "t_rank_table.h"

#define PI LLMDD_PARAM_INVALID

static uint16_t g_ports[4];
static char g_table[2048];
static const llmdd_cluster_rank_t g_two[2] = {{1, 0}, {2, 1}};

/* A table whose device entries are given verbatim. */
static char *table_with(char *buf, size_t cap, const char *host_ip_field, const char *devices) {
  snprintf(buf, cap,
           "{\"version\":\"1.0\",\"server_count\":\"1\",\"status\":\"completed\","
           "\"server_list\":[{\"server_id\":\"s\"%s,\"device\":[%s]}]}",
           host_ip_field, devices);
  return buf;
}

static void not_initialized(void) {
  llmdd_instance_t *i = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &i));
  uint64_t id = 0;
  uint32_t st = 0;
  CHECK_ERR(llmdd_link(i, "c", g_two, 2, g_table, &id), LLMDD_FAILED, "not initialized");
  CHECK_ERR(llmdd_unlink(i, 1), LLMDD_FAILED, "not initialized");
  CHECK_ERR(llmdd_query_register_mem_status(i, 1, &st), LLMDD_FAILED, "not initialized");
  REQUIRE_OK(t_init(i, NULL, NULL, 0));
  CHECK_OK(llmdd_finalize(i));
  CHECK_ERR(llmdd_link(i, "c", g_two, 2, g_table, &id), LLMDD_FAILED, "not initialized");
  CHECK_ERR(llmdd_unlink(i, 1), LLMDD_FAILED, "not initialized");
  CHECK_ERR(llmdd_query_register_mem_status(i, 1, &st), LLMDD_FAILED, "not initialized");
  CHECK(id == 0 && st == 0); /* outputs untouched */
  llmdd_destroy(i);
}

static void arguments(llmdd_instance_t *a) {
  uint64_t id = 77;
  uint32_t st = 77;
  char buf[2048];
  /* NULL pointers */
  CHECK_ERR(llmdd_link(NULL, "c", g_two, 2, g_table, &id), PI, "instance is NULL");
  CHECK_ERR(llmdd_link(a, NULL, g_two, 2, g_table, &id), PI, "comm_name is NULL");
  CHECK_ERR(llmdd_link(a, "c", NULL, 2, g_table, &id), PI, "cluster_ranks is NULL");
  CHECK_ERR(llmdd_link(a, "c", g_two, 2, NULL, &id), PI, "rank_table_json is NULL");
  CHECK_ERR(llmdd_link(a, "c", g_two, 2, g_table, NULL), PI, "comm_id_out");
  CHECK_ERR(llmdd_unlink(NULL, 1), PI, "instance is NULL");
  CHECK_ERR(llmdd_query_register_mem_status(NULL, 1, &st), PI, "instance is NULL");
  CHECK_ERR(llmdd_query_register_mem_status(a, 1, NULL), PI, "status_out");
  /* comm_name length */
  CHECK_ERR(llmdd_link(a, "", g_two, 2, g_table, &id), PI, "comm_name must be 1..127 bytes");
  char name[129];
  memset(name, 'n', 128);
  name[128] = '\0';
  CHECK_ERR(llmdd_link(a, name, g_two, 2, g_table, &id), PI, "got 128");
  /* member count */
  CHECK_ERR(llmdd_link(a, "c", g_two, 0, g_table, &id), PI, "cluster_ranks has 0");
  CHECK_ERR(llmdd_link(a, "c", g_two, 1, g_table, &id), PI, "cluster_ranks has 1");
  llmdd_cluster_rank_t five[5] = {{1, 0}, {2, 1}, {3, 2}, {4, 3}, {5, 4}};
  CHECK_ERR(llmdd_link(a, "c", five, 5, g_table, &id), PI, "cluster_ranks has 5");
  /* uniqueness, order, local member */
  llmdd_cluster_rank_t dup[2] = {{1, 0}, {1, 1}};
  CHECK_ERR(llmdd_link(a, "c", dup, 2, g_table, &id), PI, "cluster id 1 appears more than once");
  llmdd_cluster_rank_t desc[2] = {{1, 1}, {2, 0}};
  CHECK_ERR(llmdd_link(a, "c", desc, 2, g_table, &id), PI, "strictly ascending");
  llmdd_cluster_rank_t same[2] = {{1, 1}, {2, 1}};
  CHECK_ERR(llmdd_link(a, "c", same, 2, g_table, &id), PI, "strictly ascending");
  llmdd_cluster_rank_t other[2] = {{5, 0}, {6, 1}};
  CHECK_ERR(llmdd_link(a, "c", other, 2, g_table, &id), PI,
            "does not contain this instance's cluster id 1");
  /* rank missing from the table (it has ranks 0..3) */
  llmdd_cluster_rank_t far[2] = {{1, 0}, {2, 9}};
  CHECK_ERR(llmdd_link(a, "c", far, 2, g_table, &id), PI,
            "rank 9 (cluster 2) does not appear as a rank_id");
  /* malformed tables */
  CHECK_ERR(llmdd_link(a, "c", g_two, 2, "{\"version\":", &id), PI, "not valid JSON");
  CHECK_ERR(llmdd_link(a, "c", g_two, 2, "[]", &id), PI, "must be a JSON object");
  CHECK_ERR(llmdd_link(a, "c", g_two, 2, "{\"server_count\":\"1\",\"status\":\"completed\",\"server_list\":[]}", &id),
            PI, "\"version\"");
  CHECK_ERR(llmdd_link(a, "c", g_two, 2,
                       "{\"version\":\"1.0\",\"server_count\":\"1\",\"status\":\"initializing\",\"server_list\":[]}",
                       &id),
            PI, "\"completed\"");
  CHECK_ERR(llmdd_link(a, "c", g_two, 2,
                       "{\"version\":\"1.0\",\"server_count\":\"2\",\"status\":\"completed\",\"server_list\":[{\"device\":[]}]}",
                       &id),
            PI, "server_count is 2");
  CHECK_ERR(llmdd_link(a, "c", g_two, 2,
                       table_with(buf, sizeof buf, ",\"host_ip\":\"127.0.0.1\"",
                                  "{\"device_id\":\"0\",\"rank_id\":\"zero\",\"host_port\":\"1\"}"),
                       &id),
            PI, "rank_id must be an unsigned integer");
  CHECK_ERR(llmdd_link(a, "c", g_two, 2,
                       table_with(buf, sizeof buf, ",\"host_ip\":\"127.0.0.1\"",
                                  "{\"device_id\":\"0\",\"rank_id\":\"0\",\"host_port\":\"1\"},"
                                  "{\"device_id\":\"1\",\"rank_id\":\"0\",\"host_port\":\"2\"}"),
                       &id),
            PI, "rank_id 0 appears more than once");
  /* tables without a usable endpoint for a member: without ports two
   * dialled members on one IP collide on the default port (host backend);
   * the acl backend needs host_port. */
  const char *be = getenv("LLMDD_TEST_BACKEND");
  const llmdd_cluster_rank_t three[3] = {{1, 0}, {2, 1}, {3, 2}};
  CHECK_ERR(llmdd_link(a, "c", three, 3,
                       table_with(buf, sizeof buf, ",\"host_ip\":\"127.0.0.1\"",
                                  "{\"device_id\":\"0\",\"rank_id\":\"0\"},"
                                  "{\"device_id\":\"1\",\"rank_id\":\"1\"},"
                                  "{\"device_id\":\"2\",\"rank_id\":\"2\",\"host_port\":\"3\"}"),
                       &id),
            PI, (be && strcmp(be, "acl") == 0) ? "rank 0 has no port" : "ranks 0 and 1 have the same endpoint 127.0.0.1:16666");
  CHECK_ERR(llmdd_link(a, "c", g_two, 2,
                       table_with(buf, sizeof buf, "",
                                  "{\"device_id\":\"0\",\"rank_id\":\"0\",\"device_port\":\"1\"},"
                                  "{\"device_id\":\"1\",\"device_ip\":\"127.0.0.1\",\"rank_id\":\"1\",\"device_port\":\"2\"}"),
                       &id),
            PI, "rank 0 has no IP");
  CHECK_ERR(llmdd_link(a, "c", g_two, 2,
                       table_with(buf, sizeof buf, ",\"host_ip\":\"localhost\"",
                                  "{\"device_id\":\"0\",\"rank_id\":\"0\",\"host_port\":\"1\"},"
                                  "{\"device_id\":\"1\",\"rank_id\":\"1\",\"host_port\":\"2\"}"),
                       &id),
            PI, "host_ip \"localhost\" is not an IPv4 or IPv6 literal");
  CHECK_ERR(llmdd_link(a, "c", g_two, 2,
                       table_with(buf, sizeof buf, ",\"host_ip\":\"127.0.0.1\"",
                                  "{\"device_id\":\"0\",\"rank_id\":\"0\",\"host_port\":\"70000\"},"
                                  "{\"device_id\":\"1\",\"rank_id\":\"1\",\"host_port\":\"2\"}"),
                       &id),
            PI, "rank 0: host_port 70000");
  CHECK(id == 77); /* never written on failure */
  /* unknown comm ids */
  CHECK_ERR(llmdd_unlink(a, 0), LLMDD_NOT_YET_LINK, "no comm with id 0");
  CHECK_ERR(llmdd_unlink(a, 12345), LLMDD_NOT_YET_LINK, "no comm with id 12345");
  CHECK_ERR(llmdd_query_register_mem_status(a, 12345, &st), LLMDD_NOT_YET_LINK, "no comm with id 12345");
  CHECK(st == 77);
  /* the longest name is fine (this instance is the highest rank: no bind) */
  memset(name, 'n', 127);
  name[127] = '\0';
  llmdd_cluster_rank_t top[2] = {{40, 0}, {1, 1}};
  CHECK_OK(llmdd_link(a, name, top, 2, g_table, &id));
  CHECK_OK(llmdd_query_register_mem_status(a, id, &st));
  CHECK(st == LLMDD_MEM_STATUS_PREPARING);
  CHECK_OK(llmdd_unlink(a, id));
}

/* ALREADY_LINK, LINK_FAILED (bind), EXIST_LINK, and the link_clusters side. */
static void conflicts(llmdd_instance_t *a) {
  /* A server instance (cluster 50) that `a` links to with link_clusters. */
  uint16_t sport = t_free_port();
  char endpoint[64];
  snprintf(endpoint, sizeof endpoint, "127.0.0.1:%u", sport);
  llmdd_instance_t *s = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 50, &s));
  REQUIRE_OK(t_init(s, endpoint, NULL, 0));
  uint32_t ret = 0;
  CHECK_OK(t_link1(a, 50, "127.0.0.1", sport, 3000, &ret));
  uint64_t id = 0;
  llmdd_cluster_rank_t with50[2] = {{1, 0}, {50, 1}};
  CHECK_ERR(llmdd_link(a, "c", with50, 2, g_table, &id), LLMDD_ALREADY_LINK,
            "a link to cluster 50 already exists (link_clusters)");
  CHECK_OK(t_unlink1(a, 50, "127.0.0.1", sport, false, &ret));

  /* A comm reserves its members: another comm and link_clusters are refused. */
  llmdd_cluster_rank_t with60[2] = {{1, 0}, {60, 1}};
  uint64_t c60 = 0;
  CHECK_OK(llmdd_link(a, "c60", with60, 2, g_table, &c60));
  llmdd_cluster_rank_t again60[3] = {{60, 0}, {61, 1}, {1, 2}};
  CHECK_ERR(llmdd_link(a, "c", again60, 3, g_table, &id), LLMDD_ALREADY_LINK,
            "cluster 60 is already a member of comm");
  ret = 0;
  CHECK_ERR(t_link1(a, 60, "127.0.0.1", sport, 3000, &ret), LLMDD_ALREADY_LINK,
            "member of rank-table comm");
  CHECK(ret == LLMDD_ALREADY_LINK);
  CHECK_ERR(t_unlink1(a, 60, NULL, 0, true, &ret), PI, "use unlink(comm_id)");
  CHECK_ERR(llmdd_switch_role(a, LLMDD_ROLE_DECODER, NULL, 0), LLMDD_EXIST_LINK,
            "rank-table comm");
  /* The same local endpoint is shared by several comms of this instance. */
  llmdd_cluster_rank_t with70[2] = {{1, 0}, {70, 1}};
  uint64_t c70 = 0;
  CHECK_OK(llmdd_link(a, "c70", with70, 2, g_table, &c70));
  CHECK(c70 == c60 + 1);
  CHECK_OK(llmdd_unlink(a, c60));
  CHECK_OK(llmdd_unlink(a, c70));
  CHECK_OK(llmdd_switch_role(a, LLMDD_ROLE_DECODER, NULL, 0));

  /* The local endpoint is taken by someone else: LINK_FAILED at once. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  CHECK(fd >= 0 && bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(fd, 4) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &len) == 0);
  uint16_t busy[2] = {ntohs(sa.sin_port), 1};
  char t[1024];
  t_rank_table(t, sizeof t, busy, 2);
  CHECK_ERR(llmdd_link(a, "c", g_two, 2, t, &id), LLMDD_LINK_FAILED, "cannot listen on rank 0's endpoint");
  close(fd);

  CHECK_OK(llmdd_finalize(s));
  llmdd_destroy(s);
}

/* 512 comms per instance; the 513th is refused. All 512 wait on one shared
 * endpoint (this instance is rank 0 of each, peers never come). */
static void comm_limit(llmdd_instance_t *a) {
  static uint64_t ids[512];
  char t[1024];
  uint16_t ports[2] = {t_free_port(), 1};
  t_rank_table(t, sizeof t, ports, 2);
  for (int i = 0; i < 512; i++) {
    char name[32];
    snprintf(name, sizeof name, "lim%d", i);
    llmdd_cluster_rank_t m[2] = {{1, 0}, {(uint64_t)1000 + (uint64_t)i, 1}};
    CHECK_OK(llmdd_link(a, name, m, 2, t, &ids[i]));
    if (i > 0) CHECK(ids[i] == ids[i - 1] + 1);
  }
  uint64_t id = 0;
  llmdd_cluster_rank_t m[2] = {{1, 0}, {5000, 1}};
  CHECK_ERR(llmdd_link(a, "one-too-many", m, 2, t, &id), PI, "(the limit is 512)");
  uint32_t st = 0;
  CHECK_OK(llmdd_query_register_mem_status(a, ids[511], &st)); /* queued: still PREPARING */
  CHECK(st == LLMDD_MEM_STATUS_PREPARING);
  for (int i = 0; i < 512; i++) CHECK_OK(llmdd_unlink(a, ids[i]));
  CHECK_OK(llmdd_link(a, "one-more", m, 2, t, &id));
  CHECK(id == ids[511] + 1);
  CHECK_OK(llmdd_unlink(a, id));
}

static void hixl(void) {
  char listen[64];
  snprintf(listen, sizeof listen, "127.0.0.1:%u", t_free_port());
  llmdd_instance_t *h = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &h));
  llmdd_option_t o = {"llm.TransferBackend", "hixl"};
  REQUIRE_OK(t_init(h, listen, &o, 1));
  uint64_t id = 0;
  uint32_t st = 0;
  CHECK_ERR(llmdd_link(h, "c", g_two, 2, g_table, &id), LLMDD_FEATURE_NOT_ENABLED, "hixl");
  CHECK_ERR(llmdd_unlink(h, 1), LLMDD_FEATURE_NOT_ENABLED, "hixl");
  CHECK_ERR(llmdd_query_register_mem_status(h, 1, &st), LLMDD_FEATURE_NOT_ENABLED, "hixl");
  CHECK_OK(llmdd_finalize(h));
  llmdd_destroy(h);
}

int main(void) {
  for (int i = 0; i < 4; i++) g_ports[i] = t_free_port();
  t_rank_table(g_table, sizeof g_table, g_ports, 4);
  not_initialized();
  hixl();
  llmdd_instance_t *a = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &a));
  t_use_device(0); /* cluster 1 is rank 0 */
  REQUIRE_OK(t_init(a, NULL, NULL, 0));
  arguments(a);
  conflicts(a);
  comm_limit(a);
  CHECK_OK(llmdd_finalize(a));
  uint32_t st = 0;
  CHECK_ERR(llmdd_query_register_mem_status(a, 1, &st), LLMDD_FAILED, "not initialized");
  llmdd_destroy(a);
  return t_finish("test_rank_table_bad_input");
}
