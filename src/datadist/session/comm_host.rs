//! What the comm flows (`comm/setup.rs`) ask of the session: dialling a
//! member, the comms' listening endpoints, and the runner thread.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use super::Session;
use crate::datadist::comm::{Comm, CommHost};
use crate::status::Result;

impl CommHost for Session {
    fn is_closing(&self) -> bool {
        Session::is_closing(self)
    }

    fn dial_member(
        &self,
        cluster: u64,
        addr: SocketAddr,
        timeout: Duration,
        comm: &Arc<Comm>,
    ) -> Result<()> {
        self.dial(cluster, addr, None, timeout, Some(comm))
    }

    fn acquire_listener(&self, addr: SocketAddr) -> Result<Option<SocketAddr>> {
        Session::acquire_listener(self, addr)
    }

    fn release_listener(&self, addr: SocketAddr) {
        Session::release_listener(self, addr)
    }

    fn spawn_runner(&self, first: Arc<Comm>) -> Result<()> {
        let s = self.arc();
        self.try_spawn("llmdd-comm", move || s.comm_ops().run(first))
    }
}
