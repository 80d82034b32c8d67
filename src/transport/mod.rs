//! Byte movers: the TCP wire protocol and data path, same-host one-sided copies.

pub mod wire;
