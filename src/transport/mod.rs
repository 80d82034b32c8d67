//! Byte movers: the TCP wire protocol and data path, same-host one-sided
//! copies, and HCCL one-sided operations (acl backend).

pub mod hccl;
pub mod local;
pub mod tcp;
pub mod wire;
