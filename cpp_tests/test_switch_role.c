/* switch_role: EXIST_LINK while linked (on either end); a listening prompt
 * switched to DECODER without options stops listening; a decoder switched to
 * PROMPT with llm.ListenIpInfo (or llm.listenIpInfo) accepts links; get_role
 * follows; invalid roles; before init / after finalize -> LLMDD_FAILED. */
#include "llmdd_test_blocks.h"

int main(void) {
  uint16_t port_a = t_free_port();
  char listen_a[64];
  snprintf(listen_a, sizeof listen_a, "127.0.0.1:%u", port_a);

  llmdd_instance_t *p = NULL, *d = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &p));
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_DECODER, 2, &d));

  /* Before init: valid role but not initialized. */
  CHECK_STATUS(llmdd_switch_role(p, LLMDD_ROLE_DECODER, NULL, 0), LLMDD_FAILED);
  CHECK(strstr(llmdd_last_error_message(), "not initialized") != NULL);
  uint32_t role = 0;
  CHECK_OK(llmdd_get_role(p, &role));
  CHECK(role == LLMDD_ROLE_PROMPT);

  REQUIRE_OK(t_init(p, listen_a, NULL, 0));
  REQUIRE_OK(t_init(d, NULL, NULL, 0));
  t_blk psrc, pscratch, dsrc, dscratch;
  REQUIRE_OK(t_blk_register(p, &psrc, 1, 1));
  REQUIRE_OK(t_blk_register(p, &pscratch, 0, 0));
  REQUIRE_OK(t_blk_register(d, &dsrc, 2, 2));
  REQUIRE_OK(t_blk_register(d, &dscratch, 0, 0));

  /* Invalid roles. */
  CHECK_STATUS(llmdd_switch_role(p, 0, NULL, 0), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_switch_role(p, 4, NULL, 0), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_switch_role(p, 0xFFFFFFFFu, NULL, 0), LLMDD_PARAM_INVALID);
  /* Bad options. */
  llmdd_option_t bad_ep = {"llm.ListenIpInfo", "127.0.0.1"};
  CHECK_STATUS(llmdd_switch_role(p, LLMDD_ROLE_PROMPT, &bad_ep, 1), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_switch_role(p, LLMDD_ROLE_PROMPT, NULL, 1), LLMDD_PARAM_INVALID);
  CHECK_OK(llmdd_get_role(p, &role));
  CHECK(role == LLMDD_ROLE_PROMPT);
  /* Same endpoint again: no-op success, still listening. */
  llmdd_option_t same = {"llm.ListenIpInfo", listen_a};
  CHECK_OK(llmdd_switch_role(p, LLMDD_ROLE_PROMPT, &same, 1));

  /* With a live link: EXIST_LINK on both ends, role unchanged. */
  uint32_t ret = 99;
  CHECK_OK(t_link1(d, 1, "127.0.0.1", port_a, 3000, &ret));
  CHECK_STATUS(llmdd_switch_role(p, LLMDD_ROLE_DECODER, NULL, 0), LLMDD_EXIST_LINK);
  CHECK_STATUS(llmdd_switch_role(d, LLMDD_ROLE_PROMPT, NULL, 0), LLMDD_EXIST_LINK);
  CHECK_OK(llmdd_get_role(p, &role));
  CHECK(role == LLMDD_ROLE_PROMPT);
  CHECK_OK(llmdd_get_role(d, &role));
  CHECK(role == LLMDD_ROLE_DECODER);
  CHECK_OK(t_blk_pull_verify(d, &dscratch, 1)); /* the link still works */
  CHECK_OK(t_unlink1(d, 1, "127.0.0.1", port_a, false, &ret));

  /* Prompt -> DECODER without options: stops listening. */
  CHECK_OK(llmdd_switch_role(p, LLMDD_ROLE_DECODER, NULL, 0));
  CHECK_OK(llmdd_get_role(p, &role));
  CHECK(role == LLMDD_ROLE_DECODER);
  double t0 = t_now_ms();
  CHECK_STATUS(t_link1(d, 1, "127.0.0.1", port_a, 500, &ret), LLMDD_LINK_FAILED);
  CHECK(ret == LLMDD_LINK_FAILED);
  CHECK(t_now_ms() - t0 < 1500);

  /* Decoder -> PROMPT with llm.ListenIpInfo: now accepts links. */
  uint16_t port_b = t_free_port();
  char listen_b[64];
  snprintf(listen_b, sizeof listen_b, "127.0.0.1:%u", port_b);
  llmdd_option_t lb = {"llm.ListenIpInfo", listen_b};
  CHECK_OK(llmdd_switch_role(d, LLMDD_ROLE_PROMPT, &lb, 1));
  CHECK_OK(llmdd_get_role(d, &role));
  CHECK(role == LLMDD_ROLE_PROMPT);
  /* The new server may dial too; nothing listens at port_a any more. */
  CHECK_STATUS(t_link1(d, 1, "127.0.0.1", port_a, 500, &ret), LLMDD_LINK_FAILED);
  /* The former prompt (now a client) links to it and both pull. */
  ret = 99;
  CHECK_OK(t_link1(p, 2, "127.0.0.1", port_b, 3000, &ret));
  CHECK(ret == LLMDD_SUCCESS);
  CHECK_OK(t_blk_pull_verify(p, &pscratch, 2));
  CHECK_OK(t_blk_pull_verify(d, &dscratch, 1));
  CHECK_STATUS(llmdd_switch_role(d, LLMDD_ROLE_DECODER, NULL, 0), LLMDD_EXIST_LINK);
  CHECK_OK(t_unlink1(p, 2, "127.0.0.1", port_b, false, &ret));

  /* Move the listener with the Python spelling; the old port closes. */
  uint16_t port_c = t_free_port();
  char listen_c[64];
  snprintf(listen_c, sizeof listen_c, "127.0.0.1:%u", port_c);
  llmdd_option_t lc = {"llm.listenIpInfo", listen_c};
  CHECK_OK(llmdd_switch_role(d, LLMDD_ROLE_MIX, &lc, 1));
  CHECK_OK(llmdd_get_role(d, &role));
  CHECK(role == LLMDD_ROLE_MIX);
  CHECK_STATUS(t_link1(p, 2, "127.0.0.1", port_b, 500, &ret), LLMDD_LINK_FAILED);
  CHECK_OK(t_link1(p, 2, "127.0.0.1", port_c, 3000, &ret));
  CHECK_OK(t_blk_pull_verify(p, &pscratch, 2));
  CHECK_OK(t_unlink1(p, 2, "127.0.0.1", port_c, false, &ret));

  /* After finalize: LLMDD_FAILED. */
  CHECK_OK(llmdd_finalize(p));
  CHECK_STATUS(llmdd_switch_role(p, LLMDD_ROLE_PROMPT, NULL, 0), LLMDD_FAILED);
  CHECK(strstr(llmdd_last_error_message(), "not initialized") != NULL);
  CHECK_OK(llmdd_finalize(d));
  llmdd_destroy(p);
  llmdd_destroy(d);
  t_blk_free(&psrc);
  t_blk_free(&pscratch);
  t_blk_free(&dsrc);
  t_blk_free(&dscratch);
  return t_finish("test_switch_role");
}
