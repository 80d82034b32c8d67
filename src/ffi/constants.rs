//! Numeric constants of the C API: statuses (equal to the documented
//! `LLM_*` codes), roles, placements, data types and memory status.
//!
//! The status constants come from the one status table
//! (`src/status_table.rs`): build.rs writes them into the header as
//! `uint32_t`-typed hex literals (`0x5010B005U`), so `rc == LLMDD_FAILED`
//! compares as unsigned 32-bit in C and C++ (a bare 4294967295 is a `long`).

use std::ffi::c_char;

use crate::ffi::boundary::{last_error_ptr, run_or};
use crate::status::Status;

/// The `LLMDD_*` statuses: generated from the status table
/// (`src/status_table.rs`), which build.rs also writes into the header.
pub use crate::status::c_constants::*;

/// Role: prompt (prefill).
pub const LLMDD_ROLE_PROMPT: u32 = 1;
/// Role: decoder.
pub const LLMDD_ROLE_DECODER: u32 = 2;
/// Role: mixed.
pub const LLMDD_ROLE_MIX: u32 = 3;

/// Placement: host memory.
pub const LLMDD_PLACEMENT_HOST: u32 = 0;
/// Placement: device memory (host-addressable on the host backend).
pub const LLMDD_PLACEMENT_DEVICE: u32 = 1;

/// MemInfo type: device memory (note: reversed vs placement, as documented).
pub const LLMDD_MEM_TYPE_DEVICE: u32 = 0;
/// MemInfo type: host memory.
pub const LLMDD_MEM_TYPE_HOST: u32 = 1;

/// Registered-memory status of a rank-table link: ready.
pub const LLMDD_MEM_STATUS_OK: u32 = 0;
/// Registered-memory status: exchange still running.
pub const LLMDD_MEM_STATUS_PREPARING: u32 = 1;
/// Registered-memory status: exchange failed.
pub const LLMDD_MEM_STATUS_FAILED: u32 = 2;

/// Data type codes (GE numbering, `ge::DataType`); `llmdd_data_type_bits`
/// gives each one's element size. Sub-byte types are packed.
///
/// `LLMDD_DT_FLOAT`: 32-bit IEEE float.
pub const LLMDD_DT_FLOAT: u32 = 0;
/// 16-bit IEEE half float.
pub const LLMDD_DT_FLOAT16: u32 = 1;
/// Signed 8-bit integer.
pub const LLMDD_DT_INT8: u32 = 2;
/// Signed 32-bit integer.
pub const LLMDD_DT_INT32: u32 = 3;
/// Unsigned 8-bit integer.
pub const LLMDD_DT_UINT8: u32 = 4;
/// Signed 16-bit integer.
pub const LLMDD_DT_INT16: u32 = 6;
/// Unsigned 16-bit integer.
pub const LLMDD_DT_UINT16: u32 = 7;
/// Unsigned 32-bit integer.
pub const LLMDD_DT_UINT32: u32 = 8;
/// Signed 64-bit integer.
pub const LLMDD_DT_INT64: u32 = 9;
/// Unsigned 64-bit integer.
pub const LLMDD_DT_UINT64: u32 = 10;
/// 64-bit IEEE float.
pub const LLMDD_DT_DOUBLE: u32 = 11;
/// Boolean, one byte.
pub const LLMDD_DT_BOOL: u32 = 12;
/// String, sized as a 16-byte head.
pub const LLMDD_DT_STRING: u32 = 13;
/// Dual-output signed 8-bit (one byte).
pub const LLMDD_DT_DUAL_SUB_INT8: u32 = 14;
/// Dual-output unsigned 8-bit (one byte).
pub const LLMDD_DT_DUAL_SUB_UINT8: u32 = 15;
/// Complex of two 32-bit floats.
pub const LLMDD_DT_COMPLEX64: u32 = 16;
/// Complex of two 64-bit floats.
pub const LLMDD_DT_COMPLEX128: u32 = 17;
/// Quantized signed 8-bit.
pub const LLMDD_DT_QINT8: u32 = 18;
/// Quantized signed 16-bit.
pub const LLMDD_DT_QINT16: u32 = 19;
/// Quantized signed 32-bit.
pub const LLMDD_DT_QINT32: u32 = 20;
/// Quantized unsigned 8-bit.
pub const LLMDD_DT_QUINT8: u32 = 21;
/// Quantized unsigned 16-bit.
pub const LLMDD_DT_QUINT16: u32 = 22;
/// Resource handle, 8 bytes.
pub const LLMDD_DT_RESOURCE: u32 = 23;
/// String reference, sized as a 16-byte head.
pub const LLMDD_DT_STRING_REF: u32 = 24;
/// Dual-output type, 5 bytes.
pub const LLMDD_DT_DUAL: u32 = 25;
/// Variant handle, 8 bytes.
pub const LLMDD_DT_VARIANT: u32 = 26;
/// 16-bit brain float.
pub const LLMDD_DT_BF16: u32 = 27;
/// No type: it has no size, and `llmdd_data_type_bits` and cache descriptions reject it.
pub const LLMDD_DT_UNDEFINED: u32 = 28;
/// Signed 4-bit integer (packed).
pub const LLMDD_DT_INT4: u32 = 29;
/// 1-bit unsigned integer (packed).
pub const LLMDD_DT_UINT1: u32 = 30;
/// Signed 2-bit integer (packed).
pub const LLMDD_DT_INT2: u32 = 31;
/// Unsigned 2-bit integer (packed).
pub const LLMDD_DT_UINT2: u32 = 32;
/// Complex of two 16-bit floats.
pub const LLMDD_DT_COMPLEX32: u32 = 33;
/// Huawei 8-bit float.
pub const LLMDD_DT_HIFLOAT8: u32 = 34;
/// 8-bit float, 5 exponent and 2 mantissa bits.
pub const LLMDD_DT_FLOAT8_E5M2: u32 = 35;
/// 8-bit float, 4 exponent and 3 mantissa bits, finite only.
pub const LLMDD_DT_FLOAT8_E4M3FN: u32 = 36;
/// 8-bit power-of-two scale (8 exponent bits, no mantissa).
pub const LLMDD_DT_FLOAT8_E8M0: u32 = 37;
/// 6-bit float, 3 exponent and 2 mantissa bits (packed).
pub const LLMDD_DT_FLOAT6_E3M2: u32 = 38;
/// 6-bit float, 2 exponent and 3 mantissa bits (packed).
pub const LLMDD_DT_FLOAT6_E2M3: u32 = 39;
/// 4-bit float, 2 exponent bits and 1 mantissa bit (packed).
pub const LLMDD_DT_FLOAT4_E2M1: u32 = 40;
/// 4-bit float, 1 exponent bit and 2 mantissa bits (packed).
pub const LLMDD_DT_FLOAT4_E1M2: u32 = 41;
/// Huawei 4-bit float (packed).
pub const LLMDD_DT_HIFLOAT4: u32 = 42;

/// Default link/unlink timeout in milliseconds (spec §9 item 3).
pub const LLMDD_DEFAULT_LINK_TIMEOUT_MS: i32 = 3000;
/// Most clusters per link_clusters / unlink_clusters call.
pub const LLMDD_MAX_CLUSTERS_PER_CALL: u32 = 16;

/// Writes the element size of data type `data_type` in bits to `*bits_out`
/// (e.g. 16 for `LLMDD_DT_FLOAT16`, 4 for `LLMDD_DT_INT4`; strings count as
/// 16-byte heads, as in the reference). A cache of a sub-byte type must hold
/// a whole number of bytes per dim-0 row. `LLMDD_PARAM_INVALID` for an
/// unknown code, `LLMDD_DT_UNDEFINED` or a NULL `bits_out`.
#[no_mangle]
pub unsafe extern "C" fn llmdd_data_type_bits(data_type: u32, bits_out: *mut u32) -> u32 {
    crate::ffi::boundary::run("llmdd_data_type_bits", || {
        let out = crate::ffi::boundary::output(bits_out, "bits_out")?;
        let dt = crate::cache::types::DataType::from_code(data_type)?;
        let bits = dt.elem_bits().ok_or_else(|| {
            crate::err!(
                ParamInvalid,
                "data_type {data_type} (DT_UNDEFINED) has no size"
            )
        })?;
        *out = bits as u32;
        Ok(())
    })
}

/// The documented name of a status code, e.g. `"LLM_PARAM_INVALID"`; unknown
/// codes give `"LLM_FAILED"`. Returns a static string (never NULL, never freed).
#[no_mangle]
pub extern "C" fn llmdd_status_name(status: u32) -> *const c_char {
    run_or(c"LLM_FAILED".as_ptr(), || {
        Status::from_code(status).c_name().as_ptr()
    })
}

/// Message describing the last failed llmdd call on the calling thread
/// ("" if the last call succeeded, except that a successful
/// `llmdd_query_register_mem_status` reporting FAILED leaves the reason
/// here). The string is owned by the library and
/// valid until the next llmdd call on this thread. Never NULL.
#[no_mangle]
pub extern "C" fn llmdd_last_error_message() -> *const c_char {
    run_or(c"".as_ptr(), last_error_ptr)
}

/// Sets the calling thread's last-error message to `message` (NULL or "":
/// clears it), as `llmdd_last_error_message` then reports it. For layers
/// built on this C API that reject an argument themselves, such as the C++
/// header (`llm_datadist/llm_datadist.h`), so callers find one message in one
/// place. The string is copied; invalid UTF-8 is replaced.
#[no_mangle]
pub unsafe extern "C" fn llmdd_set_last_error_message(message: *const c_char) {
    run_or((), || {
        let text = if message.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string, per the contract above.
            std::ffi::CStr::from_ptr(message)
                .to_string_lossy()
                .into_owned()
        };
        crate::ffi::boundary::set_last_error(&text);
    })
}

/// `"12"` → 12 at compile time (the crate's version parts).
const fn version_part(s: &str) -> u32 {
    let b = s.as_bytes();
    let mut i = 0;
    let mut n = 0u32;
    while i < b.len() {
        n = n * 10 + (b[i] - b'0') as u32;
        i += 1;
    }
    n
}

/// The version of the loaded library as `(major << 16) | (minor << 8) |
/// patch`, the packing of `LLMDD_VERSION_NUMBER`: compare the two to detect a
/// header/library mismatch at run time (e.g. 0x000100 for 0.1.0).
#[no_mangle]
pub extern "C" fn llmdd_version_number() -> u32 {
    const N: u32 = (version_part(env!("CARGO_PKG_VERSION_MAJOR")) << 16)
        | (version_part(env!("CARGO_PKG_VERSION_MINOR")) << 8)
        | version_part(env!("CARGO_PKG_VERSION_PATCH"));
    N
}

/// The library version as a static string, e.g. `"llmdd 0.1.0"`. Never NULL.
#[no_mangle]
pub extern "C" fn llmdd_version() -> *const c_char {
    static V: &std::ffi::CStr = match std::ffi::CStr::from_bytes_with_nul(
        concat!("llmdd ", env!("CARGO_PKG_VERSION"), "\0").as_bytes(),
    ) {
        Ok(c) => c,
        Err(_) => c"llmdd",
    };
    V.as_ptr()
}
