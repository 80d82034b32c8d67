/*
 * ascend_decls.h -- the subset of the public Ascend CANN C API that llmdd's `acl`
 * backend uses, restated by hand so that bindings can be generated (and the
 * simulated runtime in cpp_tests/sim_ascend compiled) without CANN installed.
 *
 * Input to tools/gen_bindings.sh (bindgen). Plain C99; no CANN header is included.
 * The backend never links these symbols: it dlopen()s the runtime libraries
 * (libascendcl.so, else libacl_rt.so for the aclrt* calls; libhcomm.so, else
 * libhccl.so) and resolves each name with dlsym() (src/sys/loader.rs).
 *
 * Provenance of each declaration (restated, not copied; paths are those of the
 * public sources: hicann/runtime, libochao-huawei/hcomm (mirror of cann/hcomm),
 * hicann/hccl; see ../shared/notes/ascend-contracts.md):
 *   include/external/acl/acl_base_rt.h (CANN 8.5 / 9.x; acl_base.h in older kits):
 *                      aclError, aclrtStream, ACL_SUCCESS, ACL_ERROR_INVALID_PARAM ..
 *                      ACL_ERROR_FAILURE (static const int there), aclrtGetSocName.
 *   include/external/acl/acl_rt.h (CANN 8.5 / 9.x; acl.h in older kits): aclInit,
 *                      aclFinalize, aclGetRecentErrMsg, aclsysGetVersionStr
 *                      (ACL_PKG_VERSION_MAX_SIZE), aclrtMemcpyKind and
 *                      aclrtMemMallocPolicy (the first values only), aclrtDevAttr
 *                      (the two super-pod values only), aclrtSetDevice,
 *                      aclrtResetDevice, aclrtGetDeviceCount,
 *                      aclrtGetPhyDevIdByLogicDevId, aclrtGetDeviceInfo, aclrtMalloc,
 *                      aclrtMallocHost, aclrtFree, aclrtFreeHost, aclrtMemcpy,
 *                      aclrtMemcpyAsync (D2D: both addresses 64-byte aligned),
 *                      aclrtCreateStream, aclrtDestroyStream (its tasks must have
 *                      finished), aclrtDestroyStreamForce, aclrtStreamAbort,
 *                      aclrtSynchronizeStream, aclrtSynchronizeStreamWithTimeout
 *                      (timeout in ms, -1 = forever).
 *   include/external/acl/error_codes/rt_error_codes.h: ACL_ERROR_RT_* (107000..,
 *                      207000.., 507000..).
 *   hcomm include/hccl/hccl_types.h: HcclResult (0..24, 1041), HcclComm, HcclDataType,
 *                      HcclCommConfig and its HCCL_COMM_CONFIG_* constants. Config
 *                      version 10 is CANN 9.0.0's layout (8.5.0 has 8, later 11); the
 *                      layout is append-only and HCCL reads min(size, its own) bytes.
 *   hcomm include/hccl/hccl_comm.h: HcclCommDestroy, HcclGetErrorString.
 *                      HcclCommConfigInit is a header-only inline function there (no
 *                      exported symbol); llmdd re-implements it in Rust.
 *   HcclCommInitClusterInfoMemConfig: exported by hcomm (op_base.cc) but declared in
 *                      no installed header (only the internal op_base.h).
 *   hcomm pkg_inc/hccl/hccl_one_sided_services.h (8.5 / 9.0; pkg_inc/legacy/hccl/
 *                      in later trees; installed under <arch>-linux/pkg_inc, not
 *                      include/, C++ only): HcclOneSideOpDesc, HcclTopoType,
 *                      HcclPrepareConfig, HcclBatchPut, HcclBatchGet,
 *                      HcclRegisterGlobalMem, HcclDeregisterGlobalMem, HcclCommBindMem,
 *                      HcclCommUnbindMem, HcclCommPrepare. At most 256 descriptors per
 *                      batch call (one_sided_service_adapt.cc MAX_DESC_NUM).
 *   hcomm src/pub_inc/hccl_mem_defs.h (8.5; not installed): HcclMemType, HcclMem.
 *                      Later trees spell it CommMem {type, addr, size}
 *                      (include/hcomm_res_defs.h); the ABI is identical.
 *   hccl (ops) v9.0.0 src/common/hcomm_dlsym/: libhccl.so's forwarding wrappers of
 *                      the one-sided API. They answer HCCL_E_NOT_SUPPORTED, spelled
 *                      ((HcclResult)(-2)), when libhcomm.so lacks the symbol, and
 *                      export HcommIsSupport<Name>() to ask first.
 *
 * Types written u32/u64/rtStream_t in the vendor headers are spelled
 * uint32_t/uint64_t/aclrtStream here (same ABI).
 */
#ifndef LLMDD_ASCEND_DECLS_H
#define LLMDD_ASCEND_DECLS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ------------------------------------------------------------------ ACL */

typedef int aclError;
typedef void *aclrtStream;

#define ACL_SUCCESS 0
#define ACL_ERROR_INVALID_PARAM 100000
#define ACL_ERROR_UNINITIALIZE 100001
#define ACL_ERROR_REPEAT_INITIALIZE 100002
#define ACL_ERROR_WAIT_CALLBACK_TIMEOUT 100036
#define ACL_ERROR_REPEAT_FINALIZE 100037
#define ACL_ERROR_BAD_ALLOC 200000
#define ACL_ERROR_API_NOT_SUPPORT 200001
#define ACL_ERROR_INVALID_DEVICE 200002
#define ACL_ERROR_STORAGE_OVER_LIMIT 300000
#define ACL_ERROR_INTERNAL_ERROR 500000
#define ACL_ERROR_FAILURE 500001

#define ACL_ERROR_INVALID_FILE 100003

#define ACL_ERROR_RT_PARAM_INVALID 107000
#define ACL_ERROR_RT_INVALID_DEVICEID 107001
#define ACL_ERROR_RT_CONTEXT_NULL 107002
#define ACL_ERROR_RT_STREAM_CONTEXT 107003
#define ACL_ERROR_RT_ADDR_UNALIGNED 107008
#define ACL_ERROR_RT_WAIT_TIMEOUT 107019
#define ACL_ERROR_RT_TASK_TIMEOUT 107020
#define ACL_ERROR_RT_STREAM_ABORT 107023
#define ACL_ERROR_RT_FEATURE_NOT_SUPPORT 207000
#define ACL_ERROR_RT_MEMORY_ALLOCATION 207001
#define ACL_ERROR_RT_NO_DEVICE 207004
#define ACL_ERROR_RT_DEVICE_OOM 207018
#define ACL_ERROR_RT_INTERNAL_ERROR 507000
#define ACL_ERROR_RT_STREAM_SYNC_TIMEOUT 507046
#define ACL_ERROR_RT_EVENT_SYNC_TIMEOUT 507047
#define ACL_ERROR_RT_DEVICE_MEM_ERROR 507053
#define ACL_ERROR_RT_HBM_MULTI_BIT_ECC_ERROR 507054
#define ACL_ERROR_RT_SUSPECT_DEVICE_MEM_ERROR 507055
#define ACL_ERROR_RT_LINK_ERROR 507056
#define ACL_ERROR_RT_SUSPECT_REMOTE_ERROR 507057

typedef enum aclrtMemcpyKind {
    ACL_MEMCPY_HOST_TO_HOST = 0,
    ACL_MEMCPY_HOST_TO_DEVICE = 1,
    ACL_MEMCPY_DEVICE_TO_HOST = 2,
    ACL_MEMCPY_DEVICE_TO_DEVICE = 3,
    ACL_MEMCPY_DEFAULT = 4
} aclrtMemcpyKind;

typedef enum aclrtMemMallocPolicy {
    ACL_MEM_MALLOC_HUGE_FIRST = 0,
    ACL_MEM_MALLOC_HUGE_ONLY = 1,
    ACL_MEM_MALLOC_NORMAL_ONLY = 2,
    ACL_MEM_MALLOC_HUGE_FIRST_P2P = 3,
    ACL_MEM_MALLOC_HUGE_ONLY_P2P = 4,
    ACL_MEM_MALLOC_NORMAL_ONLY_P2P = 5
} aclrtMemMallocPolicy;

/* Only the super-pod attributes llmdd reads (A3 rank tables). */
typedef enum aclrtDevAttr {
    ACL_DEV_ATTR_SUPER_POD_DEVICE_ID = 403,
    ACL_DEV_ATTR_SUPER_POD_ID = 405
} aclrtDevAttr;

#define ACL_PKG_VERSION_MAX_SIZE 128

aclError aclInit(const char *configPath);
aclError aclFinalize(void);
const char *aclGetRecentErrMsg(void);
aclError aclsysGetVersionStr(char *pkgName, char *versionStr);

aclError aclrtSetDevice(int32_t deviceId);
aclError aclrtResetDevice(int32_t deviceId);
aclError aclrtGetDeviceCount(uint32_t *count);
aclError aclrtGetPhyDevIdByLogicDevId(const int32_t logicDevId, int32_t *const phyDevId);
aclError aclrtGetDeviceInfo(uint32_t deviceId, aclrtDevAttr attr, int64_t *value);
const char *aclrtGetSocName(void);

aclError aclrtMalloc(void **devPtr, size_t size, aclrtMemMallocPolicy policy);
aclError aclrtMallocHost(void **hostPtr, size_t size);
aclError aclrtFree(void *devPtr);
aclError aclrtFreeHost(void *hostPtr);

aclError aclrtMemcpy(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind);
aclError aclrtMemcpyAsync(void *dst, size_t destMax, const void *src, size_t count, aclrtMemcpyKind kind,
                          aclrtStream stream);

aclError aclrtCreateStream(aclrtStream *stream);
aclError aclrtDestroyStream(aclrtStream stream);
aclError aclrtDestroyStreamForce(aclrtStream stream);
aclError aclrtStreamAbort(aclrtStream stream);
aclError aclrtSynchronizeStream(aclrtStream stream);
aclError aclrtSynchronizeStreamWithTimeout(aclrtStream stream, int32_t timeout);

/* ----------------------------------------------------------------- HCCL */

typedef enum {
    HCCL_SUCCESS = 0,
    HCCL_E_PARA = 1,
    HCCL_E_PTR = 2,
    HCCL_E_MEMORY = 3,
    HCCL_E_INTERNAL = 4,
    HCCL_E_NOT_SUPPORT = 5,
    HCCL_E_NOT_FOUND = 6,
    HCCL_E_UNAVAIL = 7,
    HCCL_E_SYSCALL = 8,
    HCCL_E_TIMEOUT = 9,
    HCCL_E_OPEN_FILE_FAILURE = 10,
    HCCL_E_TCP_CONNECT = 11,
    HCCL_E_ROCE_CONNECT = 12,
    HCCL_E_TCP_TRANSFER = 13,
    HCCL_E_ROCE_TRANSFER = 14,
    HCCL_E_RUNTIME = 15,
    HCCL_E_DRV = 16,
    HCCL_E_PROFILING = 17,
    HCCL_E_CCE = 18,
    HCCL_E_NETWORK = 19,
    HCCL_E_AGAIN = 20,
    HCCL_E_REMOTE = 21,
    HCCL_E_SUSPENDING = 22,
    HCCL_E_OPRETRY_FAIL = 23,
    HCCL_E_OOM = 24,
    HCCL_E_IN_STATUS = 1041,
    HCCL_E_RESERVED
} HcclResult;

/* libhccl.so's CANN 9.0 compatibility stubs answer this (hcomm_dlsym, dtype_common_dl.h). */
#define HCCL_E_NOT_SUPPORTED (-2)

typedef void *HcclComm;

typedef enum {
    HCCL_DATA_TYPE_INT8 = 0,
    HCCL_DATA_TYPE_INT16 = 1,
    HCCL_DATA_TYPE_INT32 = 2,
    HCCL_DATA_TYPE_FP16 = 3,
    HCCL_DATA_TYPE_FP32 = 4,
    HCCL_DATA_TYPE_INT64 = 5,
    HCCL_DATA_TYPE_UINT64 = 6,
    HCCL_DATA_TYPE_UINT8 = 7,
    HCCL_DATA_TYPE_RESERVED = 255
} HcclDataType;

#define HCCL_COMM_CONFIG_INFO_BYTES 24
#define HCCL_COMM_CONFIG_MAGIC_WORD 0xf0f0f0f0u
#define HCCL_COMM_CONFIG_VERSION 10
#define HCCL_COMM_BUFFSIZE_CONFIG_NOT_SET 0xffffffffu
#define HCCL_COMM_DETERMINISTIC_CONFIG_NOT_SET 0xffffffffu
#define HCCL_COMM_TRAFFIC_CLASS_CONFIG_NOT_SET 0xffffffffu
#define HCCL_COMM_SERVICE_LEVEL_CONFIG_NOT_SET 0xffffffffu
#define HCCL_COMM_EXECTIMEOUT_CONFIG_NOT_SET (-1)
#define HCCL_COMM_QOS_CONFIG_NOT_SET 0xffffffffu
#define HCCL_DEFAULT_SYMMETRIC_MEMORY_STRIDE 16
#define COMM_NAME_MAX_LENGTH 128
#define UDI_MAX_LENGTH 128
#define BUFFER_NAME_MAX_LENGTH 128
#define HCCL_COMM_ALGO_MAX_LENGTH 1600
#define HCCL_COMM_RETRY_ENABLE_MAX_LENGTH 50
#define HCCL_COMM_RETRY_PARAMS_MAX_LENGTH 128

/* The first 24 bytes carry {size_t size; uint32_t magicWord; uint32_t version;
 * uint64_t reserved;} so that older/newer libraries read only the fields they know. */
typedef struct HcclCommConfigDef {
    char reserved[HCCL_COMM_CONFIG_INFO_BYTES];
    uint32_t hcclBufferSize;
    uint32_t hcclDeterministic;
    char hcclCommName[COMM_NAME_MAX_LENGTH];
    char hcclUdi[UDI_MAX_LENGTH];
    uint32_t hcclOpExpansionMode;
    uint32_t hcclRdmaTrafficClass;
    uint32_t hcclRdmaServiceLevel;
    uint32_t hcclWorldRankID;
    uint64_t hcclJobID;
    uint8_t aclGraphZeroCopyEnable;
    int32_t hcclExecTimeOut;
    char hcclAlgo[HCCL_COMM_ALGO_MAX_LENGTH];
    char hcclRetryEnable[HCCL_COMM_RETRY_ENABLE_MAX_LENGTH];
    char hcclRetryParams[HCCL_COMM_RETRY_PARAMS_MAX_LENGTH];
    char hcclBufferName[BUFFER_NAME_MAX_LENGTH];
    uint32_t hcclQos;
    uint64_t hcclSymWinMaxMemSizePerRank;
} HcclCommConfig;

typedef enum {
    HCCL_MEM_TYPE_DEVICE = 0,
    HCCL_MEM_TYPE_HOST = 1,
    HCCL_MEM_TYPE_NUM = 2
} HcclMemType;

typedef struct {
    HcclMemType type;
    void *addr;
    uint64_t size;
} HcclMem;

typedef struct {
    void *localAddr;
    void *remoteAddr;
    uint64_t count;
    HcclDataType dataType;
} HcclOneSideOpDesc;

typedef enum {
    HCCL_TOPO_FULLMESH = 0,
    HCCL_TOPO_NUM
} HcclTopoType;

typedef struct {
    HcclTopoType topoType;
    uint64_t rsvd0;
    uint64_t rsvd1;
    uint64_t rsvd2;
} HcclPrepareConfig;

HcclResult HcclCommInitClusterInfoMemConfig(const char *rankTableString, uint32_t rank, HcclCommConfig *config,
                                            HcclComm *comm);
HcclResult HcclCommDestroy(HcclComm comm);
const char *HcclGetErrorString(HcclResult code);

HcclResult HcclRegisterGlobalMem(const HcclMem *mem, void **memHandle);
HcclResult HcclDeregisterGlobalMem(void *memHandle);
HcclResult HcclCommBindMem(HcclComm comm, void *memHandle);
HcclResult HcclCommUnbindMem(HcclComm comm, void *memHandle);
HcclResult HcclCommPrepare(HcclComm comm, const HcclPrepareConfig *prepareConfig, const int timeout);

HcclResult HcclBatchPut(HcclComm comm, uint32_t remoteRank, HcclOneSideOpDesc *desc, uint32_t descNum,
                        aclrtStream stream);
HcclResult HcclBatchGet(HcclComm comm, uint32_t remoteRank, HcclOneSideOpDesc *desc, uint32_t descNum,
                        aclrtStream stream);

/* Most descriptors one HcclBatchGet / HcclBatchPut accepts (HCCL_E_PARA beyond). */
#define HCCL_ONE_SIDED_MAX_DESC_NUM 256

#ifdef __cplusplus
}
#endif

#endif /* LLMDD_ASCEND_DECLS_H */
