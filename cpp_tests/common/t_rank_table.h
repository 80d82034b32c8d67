/* Helpers for the rank-table (llmdd_link) tests: a rank table on 127.0.0.1,
 * polling a comm's status, and a last-error check. Uses only the public header. */
#ifndef T_RANK_TABLE_H
#define T_RANK_TABLE_H

#include "llmdd_test.h"

/* Writes a rank table with one server (host_ip 127.0.0.1) whose device r has
 * rank_id r, device_id r at the simulated machine's NIC address of device r
 * (192.0.2.(r+1); the member of rank r calls t_use_device(r) before t_init),
 * host_port ports[r] (the TCP control endpoint) and a distinct free
 * device_port (the HCCL endpoint on the acl backend, where host_port is
 * required; the host backend ignores device_ip and device_port when host_port
 * is given). Returns buf. */
static inline char *t_rank_table(char *buf, size_t cap, const uint16_t *ports, uint32_t n) {
  size_t off = (size_t)snprintf(buf, cap,
                                "{\"version\":\"1.0\",\"server_count\":\"1\",\"status\":\"completed\","
                                "\"server_list\":[{\"server_id\":\"node0\",\"host_ip\":\"127.0.0.1\","
                                "\"device\":[");
  for (uint32_t r = 0; r < n && off < cap; r++)
    off += (size_t)snprintf(buf + off, cap - off,
                            "%s{\"device_id\":\"%u\",\"device_ip\":\"192.0.2.%u\",\"rank_id\":\"%u\","
                            "\"host_port\":\"%u\",\"device_port\":\"%u\"}",
                            r ? "," : "", r, r + 1, r, ports[r], t_free_port());
  if (off < cap) snprintf(buf + off, cap - off, "]}]}");
  return buf;
}

/* Polls the comm until its status leaves PREPARING or `timeout_ms` passes.
 * Returns the last status (LLMDD_MEM_STATUS_*), or 100 + the query's error
 * status' low byte if the query itself failed. *saw_preparing (may be NULL)
 * is set when PREPARING was observed. */
static inline uint32_t t_wait_comm(llmdd_instance_t *inst, uint64_t comm, int timeout_ms,
                                   int *saw_preparing) {
  double end = t_now_ms() + timeout_ms;
  for (;;) {
    uint32_t st = 99;
    uint32_t s = llmdd_query_register_mem_status(inst, comm, &st);
    if (s != LLMDD_SUCCESS) {
      fprintf(stderr, "[pid %d] query of comm %llu failed: %s (%s)\n", (int)getpid(),
              (unsigned long long)comm, llmdd_status_name(s), llmdd_last_error_message());
      return 100 + (s & 0xff);
    }
    if (st != LLMDD_MEM_STATUS_PREPARING) return st;
    if (saw_preparing) *saw_preparing = 1;
    if (t_now_ms() > end) return st;
    usleep(1000);
  }
}

/* Expects `expr` to return `status` with a last-error message containing `sub`. */
#define CHECK_ERR(expr, status, sub)                                                     \
  do {                                                                                   \
    CHECK_STATUS(expr, status);                                                          \
    if (!strstr(llmdd_last_error_message(), (sub))) {                                    \
      t_failures++;                                                                      \
      fprintf(stderr, "[pid %d] %s:%d: message of %s lacks \"%s\": %s\n", (int)getpid(), \
              __FILE__, __LINE__, #expr, (sub), llmdd_last_error_message());             \
    }                                                                                    \
  } while (0)

#endif
