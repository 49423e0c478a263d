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

/// How a gRPC method streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrpcKind {
    Unary,
    ClientStream,
    ServerStream,
    BidiStream,
}

/// One gRPC method defined in `proto/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcMethod {
    /// The HTTP/2 path, `/package.Service/Method`.
    pub path: &'static str,
    /// `package.Service`, e.g. `etcdserverpb.KV`.
    pub service: &'static str,
    pub method: &'static str,
    pub kind: GrpcKind,
}

// Every method of every service in `proto/`, sorted by path; written by build.rs from the
// descriptors, so it can never miss a method the .proto files define.
include!(concat!(env!("OUT_DIR"), "/grpc_methods.rs"));
