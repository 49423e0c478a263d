//! The register workload: every client works on the current key (`jepsen/r/<n>`), moving to the
//! next once the key has had [`OPS_PER_KEY`] ops, so each key's history stays small enough for
//! the linearizability search. Ops: linearizable get (50 %), put of a fresh unique value (25 %),
//! and CAS — a txn `value(key) == expected` then put a fresh value (25 %), where `expected` is
//! the last value any client saw on the key.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rand::rngs::StdRng;
use rand::Rng;

use crate::client::{value_equals, NodeClient};
use crate::history::{Function, History, Op, OpType};

/// Ops per key before the clients move on (≤ 200, TESTING.md).
pub const OPS_PER_KEY: u64 = 150;

#[derive(Debug, Default)]
pub struct Register {
    next_value: AtomicU64,
    ops: AtomicU64,
    /// Last value seen per key index, for CAS.
    last_seen: Mutex<Vec<Option<u64>>>,
    keys: Mutex<BTreeSet<u64>>,
}

fn key_name(index: u64) -> String {
    format!("jepsen/r/{index:05}")
}

fn parse(value: &[u8]) -> Option<u64> {
    std::str::from_utf8(value).ok()?.parse().ok()
}

impl Register {
    fn remember(&self, key: u64, value: Option<u64>) {
        let mut last_seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        let index = usize::try_from(key).unwrap_or(usize::MAX);
        if last_seen.len() <= index {
            last_seen.resize(index + 1, None);
        }
        last_seen[index] = value;
    }

    fn last_seen(&self, key: u64) -> Option<u64> {
        let last_seen = self.last_seen.lock().unwrap_or_else(|p| p.into_inner());
        last_seen
            .get(usize::try_from(key).unwrap_or(usize::MAX))
            .copied()
            .flatten()
    }

    pub async fn step(
        &self,
        client: &NodeClient,
        process: u64,
        rng: &mut StdRng,
        history: &History,
    ) -> OpType {
        let key_index = self.ops.fetch_add(1, Ordering::Relaxed) / OPS_PER_KEY;
        self.keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key_index);
        let key = key_name(key_index);
        let roll: f64 = rng.gen();
        let expected = self.last_seen(key_index);
        if roll < 0.5 {
            self.read(client, process, key_index, history).await
        } else if roll < 0.75 || expected.is_none() {
            let value = self.next_value.fetch_add(1, Ordering::Relaxed) + 1;
            let mut invoke = Op::invoke(process, Function::Write, client.node, Some(key.clone()));
            invoke.value = Some(value);
            let invoke = history.record(invoke);
            let mut done = invoke.clone();
            match client.put(&key, value.to_string().as_bytes()).await {
                Ok(revision) => {
                    done.op_type = OpType::Ok;
                    done.revision = Some(revision);
                    self.remember(key_index, Some(value));
                }
                Err(error) => done.write_failed(&error),
            }
            history.record(done).op_type
        } else {
            let expected = expected.expect("checked above");
            let value = self.next_value.fetch_add(1, Ordering::Relaxed) + 1;
            let mut invoke = Op::invoke(process, Function::Cas, client.node, Some(key.clone()));
            invoke.value = Some(value);
            invoke.expected = Some(expected);
            let invoke = history.record(invoke);
            let mut done = invoke.clone();
            let compare = value_equals(&key, expected.to_string().as_bytes());
            match client
                .put_if(compare, &key, value.to_string().as_bytes())
                .await
            {
                Ok((succeeded, revision)) => {
                    done.op_type = if succeeded { OpType::Ok } else { OpType::Fail };
                    done.revision = Some(revision);
                    if succeeded {
                        self.remember(key_index, Some(value));
                    }
                }
                Err(error) => done.write_failed(&error),
            }
            history.record(done).op_type
        }
    }

    async fn read(
        &self,
        client: &NodeClient,
        process: u64,
        key_index: u64,
        history: &History,
    ) -> OpType {
        let key = key_name(key_index);
        let invoke = history.record(Op::invoke(
            process,
            Function::Read,
            client.node,
            Some(key.clone()),
        ));
        let mut done = invoke.clone();
        match client.get(&key, false).await {
            Ok((kv, revision)) => {
                done.op_type = OpType::Ok;
                done.revision = Some(revision);
                if let Some(kv) = kv {
                    done.value = parse(&kv.value);
                    done.mod_revision = Some(kv.mod_revision);
                    if done.value.is_none() {
                        done.error = Some(format!("unparseable value {:?}", kv.value));
                    }
                }
                self.remember(key_index, done.value);
            }
            // A read has no effect, so any error is a definite failure.
            Err(error) => {
                done.op_type = OpType::Fail;
                done.error = Some(error.to_string());
            }
        }
        history.record(done).op_type
    }

    /// Reads every key used on every node (retrying failed reads: they have no effect).
    pub async fn final_reads(&self, clients: &[NodeClient], first_process: u64, history: &History) {
        let keys: Vec<u64> = self
            .keys
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .copied()
            .collect();
        let mut process = first_process;
        for client in clients {
            for key in &keys {
                for _attempt in 0..5 {
                    process += 1;
                    if self.read(client, process, *key, history).await == OpType::Ok {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                }
            }
        }
    }
}
