//! The frames of the link handshake (`Hello`, `HelloAck`, `Join`, `JoinAck`,
//! `Pools`), the first frame of an accepted connection, and the listener's
//! refusal, built and matched here with typed fields. What the fields mean
//! (the proofs, the checks of the answers, the pools to map) is the steps'
//! ([`super::dial`], [`super::accept`]); this module only moves them, with
//! the statuses and messages of each unexpected or refused answer.

use std::net::SocketAddr;
use std::time::Instant;

use crate::log::rate::warn_refusal;
use crate::status::{Error, Result, Status};
use crate::transport::identity::Tag;
use crate::transport::tcp::{check_reply, Conn};
use crate::transport::wire::{self, Identity, Msg, PoolInfo, TAG_LEN};
pub use crate::transport::wire::{Join, JoinAck};
use crate::{bail, err};

/// The server's answer to `Hello`, once its status said yes.
pub struct HelloAck {
    /// The server's challenge.
    pub nonce: Tag,
    /// HMAC of the server's host id over the transcript.
    pub host_tag: Tag,
    /// The server's proof of the link secret, with link authentication.
    pub auth_mac: Option<Tag>,
}

/// The first frame of an accepted connection.
pub enum First {
    /// A link_clusters client or rank-table dialer starts the handshake.
    Hello {
        /// The client holds a link secret and expects the server to prove it.
        auth: bool,
        /// The client's challenge.
        nonce: Tag,
    },
    /// One more connection of an existing link.
    Attach {
        /// The client's cluster id.
        cluster_id: u64,
        /// The link's token from `JoinAck`.
        link_token: u64,
        /// The server sends its own requests on this connection.
        reverse: bool,
    },
    /// Any other frame, by its type.
    Other(u16),
}

// ---------------------------------------------------------------- client

/// Client: sends `Hello` and reads the server's `HelloAck`. `io` maps I/O
/// failures and a listener's refusal before the handshake (a rank-table
/// dialer retries them); a `HelloAck` refusing fails with its status.
pub fn hello(
    c: &mut Conn,
    auth: bool,
    nonce: Tag,
    addr: SocketAddr,
    deadline: Instant,
    io: &dyn Fn(Error) -> Error,
) -> Result<HelloAck> {
    c.send(&Msg::Hello { auth, nonce }, Some(deadline))
        .map_err(io)?;
    match recv(c, deadline, addr).map_err(io)? {
        Msg::HelloAck {
            status,
            message,
            nonce,
            host_tag,
            auth_mac,
        } => {
            check_reply(status, &message, "link handshake")?;
            Ok(HelloAck {
                nonce,
                host_tag,
                auth_mac,
            })
        }
        // A listener refusing before the handshake (its connection caps,
        // no file descriptor or thread left): fail now with its reason.
        Msg::Reply { status, message } => Err(io(Error::new(
            Status::from_code(status),
            format!("the server at {addr} refused the link: {message}"),
        ))),
        m => bail!(
            LinkFailed,
            "unexpected handshake reply type {} from {addr}",
            m.msg_type()
        ),
    }
}

/// Client: sends `Join` and reads the server's `JoinAck`; a refusal fails
/// with its status. `io` as for [`hello`].
pub fn join(
    c: &mut Conn,
    j: Join,
    addr: SocketAddr,
    deadline: Instant,
    io: &dyn Fn(Error) -> Error,
) -> Result<JoinAck> {
    let msg = Msg::Join(j);
    c.send(&msg, Some(deadline)).map_err(io)?;
    match recv(c, deadline, addr).map_err(io)? {
        Msg::JoinAck {
            status,
            message,
            ack,
        } => {
            check_reply(status, &message, "link handshake")?;
            Ok(ack)
        }
        m => bail!(
            LinkFailed,
            "unexpected handshake reply type {} from {addr}",
            m.msg_type()
        ),
    }
}

/// Either side: sends our `Pools` (the last frame of the client's handshake).
pub fn send_pools(c: &mut Conn, pools: Vec<PoolInfo>, deadline: Instant) -> Result<()> {
    c.send(&Msg::Pools { pools }, Some(deadline))
}

// ---------------------------------------------------------------- server

/// Server: the first frame of an accepted connection, within `deadline`.
pub fn first(c: &mut Conn, deadline: Option<Instant>) -> Result<First> {
    Ok(match c.recv(deadline)? {
        Msg::Hello { auth, nonce } => First::Hello { auth, nonce },
        Msg::Attach {
            cluster_id,
            link_token,
            reverse,
        } => First::Attach {
            cluster_id,
            link_token,
            reverse,
        },
        m => First::Other(m.msg_type()),
    })
}

/// Server: answers `Hello` with our challenge.
pub fn send_hello_ack(c: &mut Conn, ack: HelloAck, deadline: Instant) -> Result<()> {
    c.send(
        &Msg::HelloAck {
            status: 0,
            message: String::new(),
            nonce: ack.nonce,
            host_tag: ack.host_tag,
            auth_mac: ack.auth_mac,
        },
        Some(deadline),
    )
}

/// Server: refuses the connection in a `HelloAck` (best effort).
pub fn refuse_hello(c: &mut Conn, status: Status, message: &str, deadline: Instant) {
    let _ = c.send(
        &Msg::HelloAck {
            status: status.code(),
            message: message.to_string(),
            nonce: [0; TAG_LEN],
            host_tag: [0; TAG_LEN],
            auth_mac: None,
        },
        Some(deadline),
    );
}

/// Server: the client's `Join`. A client that gives up instead (its `Reply`)
/// is logged (rate-limited) and fails with its status and message.
pub fn recv_join(c: &mut Conn, deadline: Instant) -> Result<Join> {
    let peer = c.peer();
    match recv(c, deadline, peer)? {
        Msg::Join(j) => Ok(j),
        Msg::Reply { status, message } => {
            warn_refusal(format_args!(
                "link from {peer} abandoned by the client: {message}"
            ));
            Err(Error::new(Status::from_code(status), message))
        }
        m => bail!(
            LinkFailed,
            "expected Join from {peer}, got message type {}",
            m.msg_type()
        ),
    }
}

/// Server: accepts the link in a `JoinAck`.
pub fn send_join_ack(c: &mut Conn, ack: JoinAck, deadline: Instant) -> Result<()> {
    c.send(
        &Msg::JoinAck {
            status: 0,
            message: String::new(),
            ack,
        },
        Some(deadline),
    )
}

/// Server: refuses the link in a `JoinAck` carrying only `e`'s status and
/// message (best effort).
pub fn refuse_join(c: &mut Conn, e: &Error, deadline: Option<Instant>) {
    let _ = c.send(
        &Msg::JoinAck {
            status: e.status.code(),
            message: e.message.clone(),
            ack: JoinAck {
                cluster_id: 0,
                role: 0,
                link_token: 0,
                device: None,
                identity: Identity {
                    host_tag: [0; TAG_LEN],
                    proof: [0; TAG_LEN],
                    claim: None,
                },
                pools: Vec::new(),
            },
        },
        deadline,
    );
}

/// Server, after `JoinAck`: the client's `Pools` (`cluster_id` names it in
/// the error of another frame).
pub fn recv_pools(c: &mut Conn, cluster_id: u64, deadline: Instant) -> Result<Vec<PoolInfo>> {
    let peer = c.peer();
    match recv(c, deadline, peer)? {
        Msg::Pools { pools } => Ok(pools),
        m => bail!(
            LinkFailed,
            "expected Pools from cluster {cluster_id}, got message type {}",
            m.msg_type()
        ),
    }
}

/// The frame of a listener's refusal of a connection before any handshake:
/// a `Reply` with `status` and `message`.
pub fn refusal_frame(status: Status, message: &str) -> Vec<u8> {
    wire::encode_to_vec(
        &Msg::Reply {
            status: status.code(),
            message: message.to_string(),
        },
        0,
    )
}

/// One handshake frame, its timeout worded for the handshake.
fn recv(c: &mut Conn, deadline: Instant, peer: SocketAddr) -> Result<Msg> {
    c.recv(Some(deadline)).map_err(|e| {
        if e.status == Status::Timeout {
            err!(LinkFailed, "handshake with {peer} timed out")
        } else {
            Error::new(Status::LinkFailed, e.message)
        }
    })
}
