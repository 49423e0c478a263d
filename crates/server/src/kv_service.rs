//! etcd's `KV` service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Writes are validated here (etcd's checks, request size), then proposed through
//! [`RaftNode::write`]; linearizable reads pass [`RaftNode::linearize`] and are then served from
//! this member's applied state; serializable reads are served locally at once.

use std::sync::Arc;

use beacon_mvcc::{pb, WriteRequest, WriteResponse};
use beacon_proto::etcdserverpb::kv_server::Kv;
use prost::Message;
use tonic::{Request, Response, Status};

use crate::api_error::ApiError;
use crate::raft_node::RaftNode;

/// Implements `etcdserverpb.KV`.
pub struct KvService {
    pub node: Arc<RaftNode>,
}

impl KvService {
    async fn write(
        &self,
        request: WriteRequest,
        encoded_len: usize,
    ) -> Result<WriteResponse, ApiError> {
        self.node.check_request_size(encoded_len)?;
        self.node.write(request).await
    }

    fn with_header<T>(
        &self,
        mut response: T,
        header: impl FnOnce(&mut T) -> &mut Option<pb::ResponseHeader>,
    ) -> Response<T> {
        let slot = header(&mut response);
        let revision = slot.as_ref().map(|h| h.revision).unwrap_or_default();
        *slot = self.node.header(revision);
        Response::new(response)
    }
}

/// Puts under the catalog's reserved prefix must be valid catalog records: etcd clients may
/// read and watch the catalog, but never corrupt it. (A put with `ignore_value` keeps a value
/// that was checked when it was written.)
fn check_catalog_put(put: &pb::PutRequest) -> Result<(), ApiError> {
    if put.ignore_value {
        return Ok(());
    }
    beacon_catalog::validate_kv_write(&put.key, &put.value)
        .map_err(|error| ApiError::InvalidCatalog(error.to_string()))
}

/// [`check_catalog_put`] for every put of a txn, nested txns included.
fn check_catalog_txn(txn: &pb::TxnRequest) -> Result<(), ApiError> {
    for op in txn.success.iter().chain(&txn.failure) {
        match &op.request {
            Some(pb::request_op::Request::RequestPut(put)) => check_catalog_put(put)?,
            Some(pb::request_op::Request::RequestTxn(nested)) => check_catalog_txn(nested)?,
            _ => {}
        }
    }
    Ok(())
}

fn unexpected(response: WriteResponse) -> Status {
    ApiError::Internal(format!("mismatched apply response {response:?}")).into()
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let request = request.into_inner();
        beacon_mvcc::validate_range(&request).map_err(ApiError::from)?;
        if !request.serializable {
            self.node.linearize().await?;
        }
        let response = self.node.reader.range(&request).map_err(ApiError::from)?;
        Ok(self.with_header(response, |r| &mut r.header))
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let request = request.into_inner();
        beacon_mvcc::validate_put(&request).map_err(ApiError::from)?;
        check_catalog_put(&request)?;
        let encoded_len = request.encoded_len();
        match self.write(WriteRequest::Put(request), encoded_len).await? {
            WriteResponse::Put(response) => Ok(self.with_header(response, |r| &mut r.header)),
            other => Err(unexpected(other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let request = request.into_inner();
        beacon_mvcc::validate_delete_range(&request).map_err(ApiError::from)?;
        let encoded_len = request.encoded_len();
        match self
            .write(WriteRequest::DeleteRange(request), encoded_len)
            .await?
        {
            WriteResponse::DeleteRange(response) => {
                Ok(self.with_header(response, |r| &mut r.header))
            }
            other => Err(unexpected(other)),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let request = request.into_inner();
        beacon_mvcc::validate_txn(&request, self.node.limits.max_txn_ops)
            .map_err(ApiError::from)?;
        if beacon_mvcc::txn_is_read_only(&request) {
            // etcd serves read-only txns as linearizable reads, without a proposal.
            self.node.linearize().await?;
            let response = self
                .node
                .reader
                .read_txn(&request)
                .map_err(ApiError::from)?;
            return Ok(self.with_header(response, |r| &mut r.header));
        }
        check_catalog_txn(&request)?;
        let encoded_len = request.encoded_len();
        match self.write(WriteRequest::Txn(request), encoded_len).await? {
            WriteResponse::Txn(response) => Ok(self.with_header(response, |r| &mut r.header)),
            other => Err(unexpected(other)),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let request = request.into_inner();
        let encoded_len = request.encoded_len();
        match self
            .write(WriteRequest::Compact(request), encoded_len)
            .await?
        {
            WriteResponse::Compact(response) => Ok(self.with_header(response, |r| &mut r.header)),
            other => Err(unexpected(other)),
        }
    }
}
