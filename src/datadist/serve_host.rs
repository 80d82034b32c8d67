//! The instance's answers to the serve loop (`transfer::serve`): what a
//! linked peer may see and touch here, per the access rules of
//! [`crate::datadist::access`] and, on the acl backend, of
//! [`crate::datadist::acl_rules`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cache::registry::Resolved;
use crate::cache::types::{BindKey, CacheKey, Segment};
use crate::datadist::access::Access;
use crate::datadist::acl_rules;
use crate::datadist::session::Session;
use crate::err;
use crate::status::Result;
use crate::transfer::link::Link;
use crate::transfer::serve::{log_refusal, ServeHost, ServedCount};
use crate::transport::poller;
use crate::transport::wire::CacheEntry;

impl Session {
    fn access(&self, link: &Link) -> Access {
        Access::of(self.config.remote_cache_accessible, link)
    }
}

impl ServeHost for Session {
    fn reactor(&self) -> Result<Arc<poller::Handle>> {
        Session::reactor(self)
    }

    fn served(&self) -> &Arc<ServedCount> {
        self.served_count()
    }

    fn io_timeout(&self) -> Duration {
        self.config.net.io_timeout
    }

    fn unlink_wait(&self) -> Duration {
        self.config.sync_kv_timeout
    }

    fn table(&self, link: &Link) -> Vec<CacheEntry> {
        // Request/response mode publishes the current table (keys resolve
        // against it anyway); remote-cache-accessible mode only what the
        // link may see.
        let generation = if self.access(link).remote_mode {
            link.generation
        } else {
            u64::MAX
        };
        self.registry.table(generation)
    }

    fn resolve(&self, link: &Link, key: &CacheKey) -> Result<(CacheEntry, u64)> {
        let access = self.access(link);
        let Resolved { record, slot, .. } = self.registry.resolve(key)?;
        // acl: the peer can reach only memory bound to the link's communicator.
        acl_rules::check_bound(&record, link)?;
        if let Err(why) = access.check(&record) {
            let e = err!(KvCacheNotExist, "cache {} {why}", record.id);
            log_refusal(link, "a key resolution", &e);
            return Err(e);
        }
        Ok((self.registry.entry(&record), slot))
    }

    fn consume(&self, link: &Link, req_id: u64, model_id: u64) -> Result<()> {
        self.access(link).check_consume()?;
        self.registry.consume(&BindKey {
            is_prefix: false,
            id: req_id,
            model_id,
        });
        Ok(())
    }

    fn check_segments(&self, link: &Link, segments: &[Segment], write: bool) -> Result<()> {
        let access = self.access(link);
        self.registry
            .check_local(segments, write, |r| access.check(r))
    }

    fn notify(&self, name: String, msg: String) -> Result<()> {
        self.inbox.push(name, msg)
    }

    fn remove_link(&self, link: &Arc<Link>) -> bool {
        self.remove_exact(link)
    }

    fn open_reverse(&self, link: &Arc<Link>, count: u32, deadline: Instant) -> Result<()> {
        Session::open_reverse(self, link, count, deadline)
    }
}
