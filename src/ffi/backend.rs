//! Which backend an instance runs on (`llmdd.Backend`, chosen at init).

use crate::ffi::boundary::{output, run};
use crate::ffi::types::{instance, llmdd_instance_t};

/// Backend: host memory; TCP, same-host one-sided copies or memcpy between peers.
pub const LLMDD_BACKEND_HOST: u32 = 0;
/// Backend: ACL device memory and HCCL one-sided transfers (dlopen'd Ascend runtime).
pub const LLMDD_BACKEND_ACL: u32 = 1;

/// Writes the backend the instance chose at init (`LLMDD_BACKEND_HOST` or
/// `LLMDD_BACKEND_ACL`) to `*out`. With `llmdd.Backend=auto` this tells whether
/// the Ascend runtime was found. Statuses: `LLMDD_PARAM_INVALID` (NULL or invalid
/// handle, NULL `out`), `LLMDD_FAILED` (not initialized).
#[no_mangle]
pub unsafe extern "C" fn llmdd_get_backend(inst: *const llmdd_instance_t, out: *mut u32) -> u32 {
    run("llmdd_get_backend", || {
        let s = instance(inst)?.session()?;
        *output(out, "out")? = s.device().abi_code();
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{host::HostDevice, Device};

    #[test]
    fn the_host_device_reports_the_host_code() {
        assert_eq!(HostDevice.abi_code(), LLMDD_BACKEND_HOST);
    }
}
