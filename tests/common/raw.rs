//! The wire protocol spoken by hand, for tests that play a hostile or
//! half-built peer: one frame out, one frame in, a connection with a read
//! timeout.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use llmdd::testing::wire::{self, Msg, HEADER_LEN};

/// Sends `m` as one frame (tag 0).
pub fn send(s: &mut TcpStream, m: &Msg) {
    s.write_all(&wire::encode_to_vec(m, 0)).unwrap();
}

/// Reads one frame (None: the server closed or reset the connection, or
/// nothing came within the socket's read timeout).
pub fn recv(s: &mut TcpStream) -> Option<Msg> {
    let mut h = [0u8; HEADER_LEN];
    s.read_exact(&mut h).ok()?;
    let header = wire::decode_header(&h).unwrap();
    let mut payload = vec![0u8; header.payload_len as usize];
    s.read_exact(&mut payload).ok()?;
    Some(wire::decode_payload(&header, &payload).unwrap())
}

/// A connection to `addr` whose reads give up after 5 s.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}
