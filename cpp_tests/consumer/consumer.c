/* A C consumer of an installed llmdd: two instances in this process on
 * 127.0.0.1, a blocks cache pulled and checked byte by byte, and the header
 * and library versions compared. Exits 0 only if all of it worked. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "llmdd.h"

#define NB 4
#define BLK 256

static uint16_t free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a;
  memset(&a, 0, sizeof a);
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) != 0 || getsockname(fd, (struct sockaddr *)&a, &len) != 0)
    exit(2);
  close(fd);
  return ntohs(a.sin_port);
}

#define OK(expr)                                                                        \
  do {                                                                                  \
    uint32_t s_ = (expr);                                                               \
    if (s_ != LLMDD_SUCCESS) {                                                          \
      fprintf(stderr, "%s: %s (%s)\n", #expr, llmdd_status_name(s_), llmdd_last_error_message()); \
      return 1;                                                                         \
    }                                                                                   \
  } while (0)

static llmdd_cache_desc_t desc(void) {
  llmdd_cache_desc_t d = llmdd_cache_desc_init();
  d.num_tensors = 2;
  d.data_type = LLMDD_DT_UINT8;
  d.num_dims = 2;
  d.shape[0] = NB;
  d.shape[1] = BLK;
  return d;
}

int main(void) {
  if (llmdd_version_number() != LLMDD_VERSION_NUMBER) {
    fprintf(stderr, "header %#x, library %#x\n", (unsigned)LLMDD_VERSION_NUMBER, llmdd_version_number());
    return 1;
  }
  char listen[64];
  uint16_t port = free_port();
  snprintf(listen, sizeof listen, "127.0.0.1:%u", port);
  llmdd_option_t po[] = {{LLMDD_OPTION_DEVICE_ID, "0"}, {LLMDD_OPTION_LISTEN_IP_INFO, listen}};
  llmdd_option_t dopt[] = {{LLMDD_OPTION_DEVICE_ID, "0"}};
  llmdd_instance_t *p = NULL, *d = NULL;
  OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &p));
  OK(llmdd_create(LLMDD_ROLE_DECODER, 2, &d));
  OK(llmdd_init(p, po, 2));
  OK(llmdd_init(d, dopt, 1));
  static uint8_t src[2][NB * BLK], dst[2][NB * BLK];
  for (int t = 0; t < 2; t++)
    for (int i = 0; i < NB * BLK; i++) src[t][i] = (uint8_t)(i * 3 + t + 1);
  uint64_t sa[2] = {(uint64_t)(uintptr_t)src[0], (uint64_t)(uintptr_t)src[1]};
  uint64_t da[2] = {(uint64_t)(uintptr_t)dst[0], (uint64_t)(uintptr_t)dst[1]};
  llmdd_cache_desc_t dd = desc();
  llmdd_cache_key_t key = llmdd_blocks_cache_key(1, 0);
  llmdd_cache_t pc = llmdd_cache_init(), dc = llmdd_cache_init();
  OK(llmdd_register_blocks_cache(p, &dd, sa, 2, &key, -1, &pc));
  OK(llmdd_register_blocks_cache(d, &dd, da, 2, NULL, -1, &dc));
  llmdd_ip_info_t ip = llmdd_ip_info("127.0.0.1", port);
  llmdd_cluster_info_t cl;
  memset(&cl, 0, sizeof cl);
  cl.remote_cluster_id = 1;
  cl.remote_ip_infos = &ip;
  cl.num_remote_ip_infos = 1;
  OK(llmdd_link_clusters(d, &cl, 1, LLMDD_DEFAULT_LINK_TIMEOUT_MS, NULL));
  uint64_t sb[2] = {3, 0}, db[2] = {0, 2};
  OK(llmdd_pull_blocks(d, &key, dc.cache_id, sb, 2, db, 2, NULL));
  for (int t = 0; t < 2; t++)
    if (memcmp(dst[t], src[t] + 3 * BLK, BLK) != 0 || memcmp(dst[t] + 2 * BLK, src[t], BLK) != 0) {
      fprintf(stderr, "tensor %d: pulled bytes differ\n", t);
      return 1;
    }
  OK(llmdd_unlink_clusters(d, &cl, 1, LLMDD_DEFAULT_LINK_TIMEOUT_MS, false, NULL));
  llmdd_destroy(d);
  llmdd_destroy(p);
  printf("consumer_c: ok (%s)\n", llmdd_version());
  return 0;
}
