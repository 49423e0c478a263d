//! The set workload: each add creates `jepsen/s/<element>` with a txn
//! `create_revision(key) == 0` then put (so an element exists at most once), and 10 % of the ops
//! read the whole prefix linearizably. After the heal every node is read once more; the set
//! checker needs every acknowledged add in all of them.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::client::{absent, prefix_end, NodeClient};
use crate::history::{Function, History, Op, OpType};

const PREFIX: &str = "jepsen/s/";

#[derive(Debug, Default)]
pub struct Set {
    next_element: AtomicU64,
    ops: AtomicU64,
}

impl Set {
    pub async fn step(&self, client: &NodeClient, process: u64, history: &History) -> OpType {
        // Every tenth op reads; deterministic so the read rate does not depend on the seed.
        if self.ops.fetch_add(1, Ordering::Relaxed) % 10 == 9 {
            return read(client, process, history).await;
        }
        let element = self.next_element.fetch_add(1, Ordering::Relaxed) + 1;
        let key = format!("{PREFIX}{element:010}");
        let mut invoke = Op::invoke(process, Function::Add, client.node, Some(key.clone()));
        invoke.value = Some(element);
        let invoke = history.record(invoke);
        let mut done = invoke.clone();
        match client.put_if(absent(&key), &key, b"1").await {
            Ok((true, revision)) => {
                done.op_type = OpType::Ok;
                done.revision = Some(revision);
            }
            Ok((false, revision)) => {
                done.op_type = OpType::Fail;
                done.revision = Some(revision);
                done.error = Some("element already present".to_string());
            }
            Err(error) => done.write_failed(&error),
        }
        history.record(done).op_type
    }

    /// One whole-set read per node (retried until it succeeds, up to 10 times).
    pub async fn final_reads(&self, clients: &[NodeClient], first_process: u64, history: &History) {
        let mut process = first_process;
        for client in clients {
            for _attempt in 0..10 {
                process += 1;
                if read(client, process, history).await == OpType::Ok {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
        }
    }
}

async fn read(client: &NodeClient, process: u64, history: &History) -> OpType {
    let invoke = history.record(Op::invoke(
        process,
        Function::ReadSet,
        client.node,
        Some(PREFIX.to_string()),
    ));
    let mut done = invoke.clone();
    match client
        .range(PREFIX.as_bytes(), &prefix_end(PREFIX), 0, false)
        .await
    {
        Ok((kvs, revision)) => {
            done.op_type = OpType::Ok;
            done.revision = Some(revision);
            done.values = Some(
                kvs.iter()
                    .filter_map(|kv| {
                        std::str::from_utf8(&kv.key)
                            .ok()?
                            .strip_prefix(PREFIX)?
                            .parse()
                            .ok()
                    })
                    .collect(),
            );
        }
        Err(error) => {
            done.op_type = OpType::Fail;
            done.error = Some(error.to_string());
        }
    }
    history.record(done).op_type
}
