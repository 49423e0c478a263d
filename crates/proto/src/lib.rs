//! Wire types generated from `proto/`: etcd's v3 API (`etcdserverpb`, `mvccpb`) and Beacon's own
//! packages (`beacon.v1`). Everything else in Beacon speaks these types at its edges.

#![allow(clippy::all, missing_docs)]

/// etcd's MVCC record types (`mvccpb`).
pub mod mvccpb {
    tonic::include_proto!("mvccpb");
}

/// etcd's v3 API (`etcdserverpb`): KV, Watch, Lease, Cluster and Maintenance.
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
}

/// Beacon's own protocols.
pub mod beacon {
    /// Version 1 of Beacon's protocols.
    pub mod v1 {
        tonic::include_proto!("beacon.v1");
    }
}
