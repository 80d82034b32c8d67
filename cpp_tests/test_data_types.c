/* Every CANN data type through the C ABI: llmdd_data_type_bits gives the
 * reference's element size for each LLMDD_DT_* code, an FP8 and an FP4 cache
 * register with those sizes, and a shape whose dim-0 rows are not whole bytes
 * is refused with a message. Single process. */
#include "llmdd_test.h"

static const struct {
  uint32_t code;
  uint32_t bits;
} k_sizes[] = {
    {LLMDD_DT_FLOAT, 32},         {LLMDD_DT_FLOAT16, 16},        {LLMDD_DT_INT8, 8},
    {LLMDD_DT_INT32, 32},         {LLMDD_DT_UINT8, 8},           {LLMDD_DT_INT16, 16},
    {LLMDD_DT_UINT16, 16},        {LLMDD_DT_UINT32, 32},         {LLMDD_DT_INT64, 64},
    {LLMDD_DT_UINT64, 64},        {LLMDD_DT_DOUBLE, 64},         {LLMDD_DT_BOOL, 8},
    {LLMDD_DT_STRING, 128},       {LLMDD_DT_DUAL_SUB_INT8, 8},   {LLMDD_DT_DUAL_SUB_UINT8, 8},
    {LLMDD_DT_COMPLEX64, 64},     {LLMDD_DT_COMPLEX128, 128},    {LLMDD_DT_QINT8, 8},
    {LLMDD_DT_QINT16, 16},        {LLMDD_DT_QINT32, 32},         {LLMDD_DT_QUINT8, 8},
    {LLMDD_DT_QUINT16, 16},       {LLMDD_DT_RESOURCE, 64},       {LLMDD_DT_STRING_REF, 128},
    {LLMDD_DT_DUAL, 40},          {LLMDD_DT_VARIANT, 64},        {LLMDD_DT_BF16, 16},
    {LLMDD_DT_INT4, 4},           {LLMDD_DT_UINT1, 1},           {LLMDD_DT_INT2, 2},
    {LLMDD_DT_UINT2, 2},          {LLMDD_DT_COMPLEX32, 32},      {LLMDD_DT_HIFLOAT8, 8},
    {LLMDD_DT_FLOAT8_E5M2, 8},    {LLMDD_DT_FLOAT8_E4M3FN, 8},   {LLMDD_DT_FLOAT8_E8M0, 8},
    {LLMDD_DT_FLOAT6_E3M2, 6},    {LLMDD_DT_FLOAT6_E2M3, 6},     {LLMDD_DT_FLOAT4_E2M1, 4},
    {LLMDD_DT_FLOAT4_E1M2, 4},    {LLMDD_DT_HIFLOAT4, 4},
};

int main(void) {
  size_t n = sizeof k_sizes / sizeof k_sizes[0];
  CHECK(n == 41); /* codes 0..42 without the reserved 5 and DT_UNDEFINED */
  for (size_t i = 0; i < n; i++) {
    uint32_t bits = 0;
    CHECK_OK(llmdd_data_type_bits(k_sizes[i].code, &bits));
    if (bits != k_sizes[i].bits)
      fprintf(stderr, "data type %u: %u bits, expected %u\n", k_sizes[i].code, bits, k_sizes[i].bits);
    CHECK(bits == k_sizes[i].bits);
  }
  uint32_t bits = 77;
  CHECK_STATUS(llmdd_data_type_bits(LLMDD_DT_UNDEFINED, &bits), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_data_type_bits(5, &bits), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_data_type_bits(43, &bits), LLMDD_PARAM_INVALID);
  CHECK_STATUS(llmdd_data_type_bits(LLMDD_DT_INT4, NULL), LLMDD_PARAM_INVALID);
  CHECK(bits == 77);

  llmdd_instance_t *inst = NULL;
  REQUIRE_OK(llmdd_create(LLMDD_ROLE_PROMPT, 1, &inst));
  REQUIRE_OK(t_init(inst, NULL, NULL, 0));
  uint8_t *mem = calloc(2, 4096);
  uint64_t addrs[2] = {(uint64_t)(uintptr_t)mem, (uint64_t)(uintptr_t)(mem + 4096)};
  int64_t fp8_dims[2] = {16, 256}; /* 16 blocks of 256 bytes */
  llmdd_cache_desc_t fp8 = t_desc(LLMDD_PLACEMENT_DEVICE, LLMDD_DT_FLOAT8_E4M3FN, 2, 2, fp8_dims);
  llmdd_cache_t c;
  CHECK_OK(llmdd_register_blocks_cache(inst, &fp8, addrs, 2, NULL, -1, &c));
  CHECK(c.desc.data_type == LLMDD_DT_FLOAT8_E4M3FN);
  CHECK_OK(llmdd_unregister_cache(inst, c.cache_id));
  int64_t fp4_dims[3] = {16, 2, 256}; /* 16 blocks of 256 bytes */
  llmdd_cache_desc_t fp4 = t_desc(LLMDD_PLACEMENT_DEVICE, LLMDD_DT_FLOAT4_E2M1, 2, 3, fp4_dims);
  CHECK_OK(llmdd_register_blocks_cache(inst, &fp4, addrs, 2, NULL, -1, &c));
  CHECK_OK(llmdd_unregister_cache(inst, c.cache_id));
  int64_t odd_dims[2] = {16, 3}; /* 3 INT4 values = 12 bits per row */
  llmdd_cache_desc_t odd = t_desc(LLMDD_PLACEMENT_DEVICE, LLMDD_DT_INT4, 2, 2, odd_dims);
  CHECK_STATUS(llmdd_register_blocks_cache(inst, &odd, addrs, 2, NULL, -1, &c), LLMDD_PARAM_INVALID);
  CHECK(strstr(llmdd_last_error_message(), "not a whole number of bytes") != NULL);
  CHECK_OK(llmdd_finalize(inst));
  llmdd_destroy(inst);
  free(mem);
  return t_finish("test_data_types");
}
