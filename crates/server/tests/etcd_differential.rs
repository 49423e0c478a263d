//! Differential test: the same seeded random sequence of KV and lease requests against a real etcd 3.4
//! and a Beacon cluster must give the same answers — kvs, counts, `more`, prev_kv, deleted,
//! txn outcomes, revisions, lease ids, attached keys and revocations, and identical error codes
//! and messages (the remaining TTL is the one field left out: it depends on timing). This is what "etcd's MVCC
//! semantics" means in practice; any divergence prints the request and both answers.

mod common;

use beacon_proto::etcdserverpb::kv_client::KvClient;
use beacon_proto::etcdserverpb::lease_client::LeaseClient;
use beacon_proto::etcdserverpb::{
    compare, request_op, response_op, CompactionRequest, Compare, DeleteRangeRequest,
    LeaseGrantRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest,
    RangeRequest, RequestOp, ResponseHeader, ResponseOp, TxnRequest,
};
use common::TestCluster;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::Channel;

const KEYS: [&str; 6] = ["a", "a/1", "a/2", "b", "c", "c/x"];

#[derive(Debug, Clone)]
enum Request {
    Range(RangeRequest),
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Txn(TxnRequest),
    Compact(CompactionRequest),
    LeaseGrant(LeaseGrantRequest),
    LeaseRevoke(LeaseRevokeRequest),
    LeaseTimeToLive(LeaseTimeToLiveRequest),
    LeaseLeases,
}

/// Lease ids the sequence uses; the last one is never granted. TTLs are long enough never to
/// expire during the test, so both sides decide everything by request order alone.
const LEASES: [i64; 4] = [1, 2, 3, 99];
const LEASE_TTL: i64 = 3600;

fn lease(rng: &mut StdRng) -> i64 {
    LEASES[rng.gen_range(0..LEASES.len())]
}

fn key(rng: &mut StdRng) -> Vec<u8> {
    KEYS[rng.gen_range(0..KEYS.len())].as_bytes().to_vec()
}

/// A key range: single key, prefix, from-key, all keys, or an explicit (possibly empty) range.
fn key_range(rng: &mut StdRng) -> (Vec<u8>, Vec<u8>) {
    match rng.gen_range(0..6) {
        0 | 1 => (key(rng), Vec::new()),
        2 => (b"a".to_vec(), b"b".to_vec()),
        3 => (key(rng), vec![0]),
        4 => (vec![0], vec![0]),
        _ => (key(rng), key(rng)),
    }
}

fn range(rng: &mut StdRng, current: i64) -> RangeRequest {
    let (key, range_end) = key_range(rng);
    RangeRequest {
        key,
        range_end,
        limit: if rng.gen_bool(0.3) {
            rng.gen_range(1..4)
        } else {
            0
        },
        revision: if rng.gen_bool(0.3) {
            rng.gen_range(0..=current + 1)
        } else {
            0
        },
        sort_order: rng.gen_range(0..3),
        sort_target: rng.gen_range(0..5),
        keys_only: rng.gen_bool(0.2),
        count_only: rng.gen_bool(0.1),
        min_mod_revision: if rng.gen_bool(0.1) {
            rng.gen_range(0..=current)
        } else {
            0
        },
        max_create_revision: if rng.gen_bool(0.1) {
            rng.gen_range(0..=current)
        } else {
            0
        },
        ..Default::default()
    }
}

/// `ignore_value` only outside txns: etcd 3.4 crashes (panics in apply) on a txn that deletes a
/// key and then puts it with ignore_value; Beacon answers "key not found" and changes nothing.
fn put(rng: &mut StdRng, top_level: bool) -> PutRequest {
    let ignore_value = top_level && rng.gen_bool(0.1);
    let ignore_lease = top_level && rng.gen_bool(0.05);
    let lease = if rng.gen_bool(0.2) { lease(rng) } else { 0 };
    PutRequest {
        key: key(rng),
        value: if ignore_value {
            Vec::new()
        } else {
            format!("v{}", rng.gen_range(0..5)).into_bytes()
        },
        prev_kv: rng.gen_bool(0.5),
        ignore_value,
        // Both set is etcd's "lease is provided" error.
        lease: if ignore_lease && rng.gen_bool(0.7) {
            0
        } else {
            lease
        },
        ignore_lease,
    }
}

fn delete(rng: &mut StdRng) -> DeleteRangeRequest {
    let (key, range_end) = key_range(rng);
    DeleteRangeRequest {
        key,
        range_end,
        prev_kv: rng.gen_bool(0.5),
    }
}

fn compare(rng: &mut StdRng, current: i64) -> Compare {
    let target = rng.gen_range(0..5);
    let union = match target {
        0 => compare::TargetUnion::Version(rng.gen_range(0..3)),
        1 => compare::TargetUnion::CreateRevision(rng.gen_range(0..=current)),
        2 => compare::TargetUnion::ModRevision(rng.gen_range(0..=current)),
        3 => compare::TargetUnion::Value(format!("v{}", rng.gen_range(0..5)).into_bytes()),
        _ => compare::TargetUnion::Lease(0),
    };
    let (key, range_end) = if rng.gen_bool(0.7) {
        (key(rng), Vec::new())
    } else {
        key_range(rng)
    };
    Compare {
        result: rng.gen_range(0..4),
        target,
        key,
        range_end,
        target_union: Some(union),
    }
}

fn op(rng: &mut StdRng, current: i64, depth: u32) -> RequestOp {
    let request = match rng.gen_range(0..if depth == 0 { 4 } else { 3 }) {
        0 => request_op::Request::RequestRange(range(rng, current)),
        1 => request_op::Request::RequestPut(put(rng, false)),
        2 => request_op::Request::RequestDeleteRange(delete(rng)),
        _ => request_op::Request::RequestTxn(txn(rng, current, depth + 1)),
    };
    RequestOp {
        request: Some(request),
    }
}

fn txn(rng: &mut StdRng, current: i64, depth: u32) -> TxnRequest {
    TxnRequest {
        compare: (0..rng.gen_range(0..3))
            .map(|_| compare(rng, current))
            .collect(),
        success: (0..rng.gen_range(0..3))
            .map(|_| op(rng, current, depth))
            .collect(),
        failure: (0..rng.gen_range(0..3))
            .map(|_| op(rng, current, depth))
            .collect(),
    }
}

fn request(rng: &mut StdRng, current: i64) -> Request {
    match rng.gen_range(0..100) {
        0..=29 => Request::Range(range(rng, current)),
        30..=59 => Request::Put(put(rng, true)),
        60..=69 => Request::Delete(delete(rng)),
        70..=86 => Request::Txn(txn(rng, current, 0)),
        87..=89 => Request::Compact(CompactionRequest {
            revision: rng.gen_range(0..=current + 1),
            physical: false,
        }),
        90..=93 => Request::LeaseGrant(LeaseGrantRequest {
            ttl: LEASE_TTL,
            id: lease(rng),
        }),
        94..=95 => Request::LeaseRevoke(LeaseRevokeRequest { id: lease(rng) }),
        96..=98 => Request::LeaseTimeToLive(LeaseTimeToLiveRequest {
            id: lease(rng),
            keys: rng.gen_bool(0.7),
        }),
        _ => Request::LeaseLeases,
    }
}

/// Keeps only what is comparable between two clusters: the revision of every header.
fn header(header: &mut Option<ResponseHeader>) {
    if let Some(header) = header {
        *header = ResponseHeader {
            revision: header.revision,
            ..Default::default()
        };
    }
}

fn normalize_ops(responses: &mut [ResponseOp]) {
    for response in responses {
        match &mut response.response {
            Some(response_op::Response::ResponseRange(r)) => header(&mut r.header),
            Some(response_op::Response::ResponsePut(r)) => header(&mut r.header),
            Some(response_op::Response::ResponseDeleteRange(r)) => header(&mut r.header),
            Some(response_op::Response::ResponseTxn(r)) => {
                header(&mut r.header);
                normalize_ops(&mut r.responses);
            }
            None => {}
        }
    }
}

async fn send(
    (kv, leases): &mut (KvClient<Channel>, LeaseClient<Channel>),
    request: &Request,
) -> Result<(String, i64), (tonic::Code, String)> {
    let status = |s: tonic::Status| (s.code(), s.message().to_string());
    let (text, revision) = match request.clone() {
        Request::Range(r) => {
            let mut response = kv.range(r).await.map_err(status)?.into_inner();
            header(&mut response.header);
            (format!("{response:?}"), response.header.map(|h| h.revision))
        }
        Request::Put(r) => {
            let mut response = kv.put(r).await.map_err(status)?.into_inner();
            header(&mut response.header);
            (format!("{response:?}"), response.header.map(|h| h.revision))
        }
        Request::Delete(r) => {
            let mut response = kv.delete_range(r).await.map_err(status)?.into_inner();
            header(&mut response.header);
            (format!("{response:?}"), response.header.map(|h| h.revision))
        }
        Request::Txn(r) => {
            let mut response = kv.txn(r).await.map_err(status)?.into_inner();
            header(&mut response.header);
            normalize_ops(&mut response.responses);
            (format!("{response:?}"), response.header.map(|h| h.revision))
        }
        Request::Compact(r) => {
            let mut response = kv.compact(r).await.map_err(status)?.into_inner();
            header(&mut response.header);
            (format!("{response:?}"), response.header.map(|h| h.revision))
        }
        Request::LeaseGrant(r) => {
            let mut response = leases.lease_grant(r).await.map_err(status)?.into_inner();
            header(&mut response.header);
            (format!("{response:?}"), response.header.map(|h| h.revision))
        }
        Request::LeaseRevoke(r) => {
            let mut response = leases.lease_revoke(r).await.map_err(status)?.into_inner();
            header(&mut response.header);
            (format!("{response:?}"), response.header.map(|h| h.revision))
        }
        Request::LeaseTimeToLive(r) => {
            let mut response = leases
                .lease_time_to_live(r)
                .await
                .map_err(status)?
                .into_inner();
            // Only whether it is alive is comparable; keys come in attachment order in etcd.
            response.ttl = response.ttl.signum();
            response.keys.sort();
            header(&mut response.header);
            (format!("{response:?}"), response.header.map(|h| h.revision))
        }
        Request::LeaseLeases => {
            let mut response = leases
                .lease_leases(LeaseLeasesRequest {})
                .await
                .map_err(status)?
                .into_inner();
            response.leases.sort_by_key(|lease| lease.id);
            header(&mut response.header);
            (format!("{response:?}"), response.header.map(|h| h.revision))
        }
    };
    Ok((text, revision.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beacon_answers_like_etcd() {
    let etcd = beacon_client::testing::EtcdProcess::start()
        .expect("etcd is installed (scripts/install-deps.sh)");
    let cluster = TestCluster::start(3);
    let leader = cluster.wait_for_leader().await;
    let follower = (leader + 1) % 3;
    let mut beacon = (cluster.kv(follower).await, cluster.lease(follower).await);
    let etcd_channel = Channel::from_shared(format!("http://{}", etcd.endpoint()))
        .expect("etcd uri")
        .connect()
        .await
        .expect("connect to etcd");
    let mut reference = (
        KvClient::new(etcd_channel.clone()),
        LeaseClient::new(etcd_channel),
    );
    let seed: u64 = std::env::var("BEACON_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut current = 1;
    let mut divergences = Vec::new();
    for step in 0..600 {
        let request = request(&mut rng, current);
        let expected = send(&mut reference, &request).await;
        let actual = send(&mut beacon, &request).await;
        if std::env::var_os("BEACON_DIFF_TRACE").is_some() {
            eprintln!("step {step}: {request:?}\n  etcd:   {expected:?}");
        }
        if let Ok((_, revision)) = &expected {
            current = current.max(*revision);
        }
        let same = match (&expected, &actual) {
            (Ok((e, _)), Ok((a, _))) => e == a,
            (Err(e), Err(a)) => e == a,
            _ => false,
        };
        if !same {
            divergences.push(format!(
                "step {step}: {request:?}\n  etcd:   {expected:?}\n  beacon: {actual:?}"
            ));
            if divergences.len() >= 5 {
                break;
            }
        }
    }
    assert!(
        divergences.is_empty(),
        "seed {seed}: Beacon differs from etcd:\n{}",
        divergences.join("\n")
    );
}
