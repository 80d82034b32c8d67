//! Byte movers: the TCP wire protocol and data path, same-host one-sided copies.

pub mod local;
pub mod tcp;
pub mod wire;
