//! Descriptor lists: HIXL's `TransferOpDesc {local_addr, remote_addr, len}`,
//! the registered ranges each side is checked against, and the conversion of
//! a checked list into one transfer plan (adjacent descriptors coalesced).

use crate::bail;
use crate::cache::types::Segment;
use crate::status::Result;

/// One (local address, remote address, length) descriptor; the layout of
/// HIXL's `TransferOpDesc` (and of the C ABI's `llmdd_engine_desc_t`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpDesc {
    /// Start of the local range (in memory this engine registered).
    pub local_addr: usize,
    /// Start of the remote range (in memory the peer engine registered).
    pub remote_addr: usize,
    /// Length of both ranges in bytes.
    pub len: usize,
}

/// Direction of a transfer: HIXL's `TransferOp` (`READ` = 0, `WRITE` = 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Remote memory → local memory.
    Read,
    /// Local memory → remote memory.
    Write,
}

impl Op {
    /// From the C value.
    pub fn from_c(v: u32) -> Result<Op> {
        match v {
            0 => Ok(Op::Read),
            1 => Ok(Op::Write),
            _ => bail!(ParamInvalid, "operation {v} is not READ (0) or WRITE (1)"),
        }
    }
}

/// Registered memory of one side: sorted, non-overlapping `[start, end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ranges {
    v: Vec<(u64, u64)>,
}

impl Ranges {
    /// From `(start, len)` pairs (overlaps are merged; empty ones dropped).
    pub fn new(items: impl IntoIterator<Item = (u64, u64)>) -> Ranges {
        let mut v: Vec<(u64, u64)> = items
            .into_iter()
            .filter(|&(_, l)| l > 0)
            .map(|(a, l)| (a, a.saturating_add(l)))
            .collect();
        v.sort_unstable();
        let mut out: Vec<(u64, u64)> = Vec::with_capacity(v.len());
        for (a, e) in v {
            match out.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(e),
                _ => out.push((a, e)),
            }
        }
        Ranges { v: out }
    }

    /// Number of ranges.
    pub fn len(&self) -> usize {
        self.v.len()
    }

    /// True if nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.v.is_empty()
    }

    /// Index of the range holding all of `[a, a + len)`, trying `hint` first
    /// (descriptor lists are usually sorted, so consecutive ones share it).
    fn find(&self, a: u64, len: u64, hint: usize) -> Option<usize> {
        let end = a.checked_add(len)?;
        if let Some(&(s, e)) = self.v.get(hint) {
            if s <= a && end <= e {
                return Some(hint);
            }
        }
        let i = self.v.partition_point(|&(s, _)| s <= a).checked_sub(1)?;
        (end <= self.v[i].1).then_some(i)
    }

    /// Index of the first descriptor whose `side` range is not inside one
    /// registered range (or overflows), if any.
    pub fn first_outside(
        &self,
        descs: &[OpDesc],
        side: impl Fn(&OpDesc) -> usize,
    ) -> Option<usize> {
        let mut hint = 0;
        for (i, d) in descs.iter().enumerate() {
            match self.find(side(d) as u64, d.len as u64, hint) {
                Some(h) => hint = h,
                None => return Some(i),
            }
        }
        None
    }
}

/// Validates a descriptor list before any check against memory: not empty,
/// no zero length, no address range that wraps around.
pub fn check_list(descs: &[OpDesc]) -> Result<()> {
    if descs.is_empty() {
        bail!(ParamInvalid, "op_descs is empty");
    }
    for (i, d) in descs.iter().enumerate() {
        if d.len == 0 {
            bail!(ParamInvalid, "op_descs[{i}].len is 0");
        }
        if d.local_addr == 0 || d.remote_addr == 0 {
            bail!(ParamInvalid, "op_descs[{i}] has a NULL address");
        }
        if d.local_addr.checked_add(d.len).is_none() || d.remote_addr.checked_add(d.len).is_none() {
            bail!(ParamInvalid, "op_descs[{i}] address + len overflows");
        }
    }
    Ok(())
}

/// Appends the plan of `descs` to `out` (cleared first): segments in the
/// executor's `{dst, src, len}` form, with descriptors that continue the
/// previous one on both sides merged into it.
pub fn plan_into(descs: &[OpDesc], op: Op, out: &mut Vec<Segment>) {
    out.clear();
    out.reserve(descs.len());
    for d in descs {
        let (dst, src) = match op {
            Op::Read => (d.local_addr as u64, d.remote_addr as u64),
            Op::Write => (d.remote_addr as u64, d.local_addr as u64),
        };
        let len = d.len as u64;
        if let Some(last) = out.last_mut() {
            if last.dst + last.len == dst && last.src + last.len == src {
                last.len += len;
                continue;
            }
        }
        out.push(Segment { dst, src, len });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(l: usize, r: usize, len: usize) -> OpDesc {
        OpDesc {
            local_addr: l,
            remote_addr: r,
            len,
        }
    }

    #[test]
    fn ranges_check_every_descriptor() {
        let r = Ranges::new([(0x1000, 0x1000), (0x4000, 0x100), (0x1800, 0x1000)]);
        assert_eq!(r.len(), 2);
        let ok = [d(0x1000, 0, 0x10), d(0x27f0, 0, 0x10), d(0x4000, 0, 0x100)];
        assert_eq!(r.first_outside(&ok, |x| x.local_addr), None);
        let bad = [d(0x1000, 0, 0x10), d(0x27f0, 0, 0x11)];
        assert_eq!(r.first_outside(&bad, |x| x.local_addr), Some(1));
        let gap = [d(0x3000, 0, 1)];
        assert_eq!(r.first_outside(&gap, |x| x.local_addr), Some(0));
        let below = [d(0xfff, 0, 2)];
        assert_eq!(r.first_outside(&below, |x| x.local_addr), Some(0));
        let wrap = [d(usize::MAX, 0, 2)];
        assert_eq!(r.first_outside(&wrap, |x| x.local_addr), Some(0));
        assert_eq!(
            Ranges::default().first_outside(&ok, |x| x.remote_addr),
            Some(0)
        );
    }

    #[test]
    fn lists_are_validated() {
        assert!(check_list(&[]).is_err());
        assert!(check_list(&[d(1, 1, 0)]).is_err());
        assert!(check_list(&[d(0, 1, 1)]).is_err());
        assert!(check_list(&[d(usize::MAX, 1, 2)]).is_err());
        assert!(check_list(&[d(1, 1, 1)]).is_ok());
    }

    #[test]
    fn plans_coalesce_contiguous_descriptors() {
        let mut out = Vec::new();
        let descs = [d(100, 1000, 10), d(110, 1010, 10), d(130, 1020, 5)];
        plan_into(&descs, Op::Read, &mut out);
        assert_eq!(
            out,
            [
                Segment {
                    dst: 100,
                    src: 1000,
                    len: 20
                },
                Segment {
                    dst: 130,
                    src: 1020,
                    len: 5
                }
            ]
        );
        plan_into(&descs[..1], Op::Write, &mut out);
        assert_eq!(
            out,
            [Segment {
                dst: 1000,
                src: 100,
                len: 10
            }]
        );
    }
}
