//! Byte movers: the TCP wire protocol and data path, same-host one-sided
//! copies (with the proofs of identity they rest on), link authentication,
//! and HCCL one-sided operations (acl backend).

pub mod auth;
pub mod hccl;
pub mod identity;
pub mod local;
pub mod peer_proc;
pub mod tcp;
pub mod wire;
