//! The transfer engine on the acl backend inside one process: two engines on
//! devices 0 and 1 of the simulated Ascend runtime (cpp_tests/sim_ascend, test
//! infrastructure, strict about CANN's contracts), device memory from the
//! simulator's aclrtMalloc, bytes moved by HCCL one-sided batches. What holds
//! here is verified against the simulator only, not on Ascend hardware.

use std::collections::BTreeMap;

use llmdd::cache::types::Placement;
use llmdd::datadist::Notice;
use llmdd::engine::{Engine, Op, OpDesc, ReqStatus};
use llmdd::Status;

mod common;

use common::acl::{opts, pattern, Tensors};
use common::free_port;

fn engine(dir: &str, dev: &str) -> (std::sync::Arc<Engine>, String) {
    let o: BTreeMap<String, String> = opts(dir, dev, "acl", &[])
        .into_iter()
        .filter(|(k, _)| *k != "llm.EnableCacheManager")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let name = format!("127.0.0.1:{}", free_port());
    (Engine::new(&name, &o).unwrap(), name)
}

#[test]
fn descriptor_lists_over_hccl() {
    let Some(dir) = common::sim::dir("full") else {
        return;
    };
    let d = dir.to_str().unwrap();
    const LEN: usize = 256 << 10;
    let (server, sname) = engine(d, "0");
    let (client, _) = engine(d, "1");
    let src = Tensors::new(&dir, 0, Placement::Device, 1, LEN, 7);
    let inbox = Tensors::new(&dir, 0, Placement::Device, 1, LEN, 0);
    let dst = Tensors::new(&dir, 1, Placement::Device, 1, LEN, 0);
    let s = server.register_mem(src.addrs[0], LEN as u64, 0).unwrap();
    server.register_mem(inbox.addrs[0], LEN as u64, 0).unwrap();
    client.register_mem(dst.addrs[0], LEN as u64, 0).unwrap();
    client.connect(&sname, 10_000).unwrap();
    // After a connection, acl registrations are refused (HCCL binds memory per link).
    let late = Tensors::new(&dir, 1, Placement::Device, 1, 4096, 0);
    let e = client.register_mem(late.addrs[0], 4096, 0).unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    // READ 32 strided 4 KiB pieces (every other 4 KiB of the first 256 KiB).
    let descs: Vec<OpDesc> = (0..32)
        .map(|i| OpDesc {
            local_addr: dst.addrs[0] as usize + i * 4096,
            remote_addr: src.addrs[0] as usize + 2 * i * 4096,
            len: 4096,
        })
        .collect();
    client
        .transfer(&sname, Op::Read, &descs, 10_000, None)
        .unwrap();
    let got = dst.read(0);
    let want = pattern(7, 0, LEN);
    for i in 0..32 {
        assert_eq!(
            got[i * 4096..(i + 1) * 4096],
            want[2 * i * 4096..(2 * i + 1) * 4096],
            "piece {i}"
        );
    }
    // WRITE them back asynchronously, then a notification after the data.
    let back: Vec<OpDesc> = (0..32)
        .map(|i| OpDesc {
            local_addr: dst.addrs[0] as usize + i * 4096,
            remote_addr: inbox.addrs[0] as usize + i * 4096,
            len: 4096,
        })
        .collect();
    let note = Notice {
        name: "kv".into(),
        msg: "landed".into(),
    };
    let r = client
        .transfer_async(&sname, Op::Write, &back, 10_000, Some(note.clone()), 5)
        .unwrap();
    let o = r.wait(None).unwrap();
    assert_eq!(o.status, ReqStatus::Completed, "{:?}", o.error);
    assert_eq!(server.take_notifies(), vec![note]);
    assert_eq!(inbox.read(0)[..32 * 4096], got[..32 * 4096]);
    // Outside the server's memory: refused before HCCL is asked.
    let bad = [OpDesc {
        local_addr: dst.addrs[0] as usize,
        remote_addr: src.addrs[0] as usize + LEN - 8,
        len: 16,
    }];
    let e = client
        .transfer(&sname, Op::Read, &bad, 1000, None)
        .unwrap_err();
    assert_eq!(e.status, Status::ParamInvalid);
    // Deregistering needs every connection gone first.
    assert_eq!(
        server.deregister_mem(s).unwrap_err().status,
        Status::ExistLink
    );
    client.disconnect(&sname, 5000).unwrap();
    client.finalize();
    server.finalize();
    common::sim::assert_no_violations(&dir);
}
