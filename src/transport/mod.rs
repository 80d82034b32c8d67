//! Byte movers: the TCP wire protocol and data path, same-host one-sided copies.

pub mod hccl;
pub mod wire;
