//! Transactions, as etcd's applier runs them: evaluate every compare of the executed path first
//! (nested compares included, all against the state before the txn), check everything that can
//! fail, then run the chosen ops in order within one revision.

use crate::compare::compare_holds;
use crate::pb::{request_op::Request, response_op::Response};
use crate::store::header;
use crate::write::WriteTxn;
use crate::{
    pb, txn_is_read_only, Applied, KvStore, LeaseRegistry, MvccError, RevisionReader, WriteResponse,
};

/// Which branch each txn on the executed path takes (etcd's `txnPath`, as a tree).
struct TxnPlan {
    succeeded: bool,
    /// Plans of the txns nested in the chosen branch, in op order.
    nested: Vec<TxnPlan>,
}

fn branch(req: &pb::TxnRequest, succeeded: bool) -> &[pb::RequestOp] {
    if succeeded {
        &req.success
    } else {
        &req.failure
    }
}

fn plan<R: RevisionReader + ?Sized>(
    store: &KvStore,
    reader: &R,
    req: &pb::TxnRequest,
    at: i64,
) -> Result<TxnPlan, MvccError> {
    let mut succeeded = true;
    for compare in &req.compare {
        if !compare_holds(store, reader, compare, at)? {
            succeeded = false;
            break;
        }
    }
    let mut nested = Vec::new();
    for op in branch(req, succeeded) {
        if let Some(Request::RequestTxn(inner)) = &op.request {
            nested.push(plan(store, reader, inner, at)?);
        }
    }
    Ok(TxnPlan { succeeded, nested })
}

/// Visit every op of the executed path (nested txns entered, not visited themselves).
fn for_each_op(
    req: &pb::TxnRequest,
    plan: &TxnPlan,
    visit: &mut dyn FnMut(&Request) -> Result<(), MvccError>,
) -> Result<(), MvccError> {
    let mut nested = plan.nested.iter();
    for op in branch(req, plan.succeeded) {
        match &op.request {
            Some(Request::RequestTxn(inner)) => {
                let inner_plan = nested.next().ok_or_else(plan_mismatch)?;
                for_each_op(inner, inner_plan, visit)?;
            }
            Some(request) => visit(request)?,
            None => {}
        }
    }
    Ok(())
}

fn plan_mismatch() -> MvccError {
    MvccError::Storage("txn plan does not match the request".to_string())
}

/// etcd's `checkRequestPut` over the executed path, against the state before the txn.
fn check_puts<L: LeaseRegistry + ?Sized>(
    store: &KvStore,
    leases: &L,
    req: &pb::TxnRequest,
    plan: &TxnPlan,
    at: i64,
) -> Result<(), MvccError> {
    for_each_op(req, plan, &mut |request| {
        let Request::RequestPut(put) = request else {
            return Ok(());
        };
        if (put.ignore_value || put.ignore_lease) && store.index.get(&put.key, at).is_none() {
            return Err(MvccError::KeyNotFound);
        }
        if put.lease != 0 && !leases.exists(put.lease) {
            return Err(MvccError::LeaseNotFound);
        }
        Ok(())
    })
}

/// etcd's `checkRequestRange` over the executed path: revision 0 is always fine, otherwise it
/// must lie between the compaction revision and the revision before the txn.
fn check_ranges(
    store: &KvStore,
    req: &pb::TxnRequest,
    plan: &TxnPlan,
    at: i64,
) -> Result<(), MvccError> {
    for_each_op(req, plan, &mut |request| {
        let Request::RequestRange(range) = request else {
            return Ok(());
        };
        match range.revision {
            0 => Ok(()),
            revision if revision > at => Err(MvccError::FutureRevision),
            revision if revision < store.compact_revision => Err(MvccError::Compacted),
            _ => Ok(()),
        }
    })
}

/// Where the ops of a txn run: a read view, or a write in progress.
enum TxnContext<'a, 's> {
    Read { store: &'a KvStore, revision: i64 },
    Write(&'a mut WriteTxn<'s>),
}

impl TxnContext<'_, '_> {
    fn run<R: RevisionReader + ?Sized>(
        &mut self,
        reader: &R,
        request: &Request,
    ) -> Result<Response, MvccError> {
        match (self, request) {
            (TxnContext::Read { store, revision }, Request::RequestRange(range)) => Ok(
                Response::ResponseRange(store.range_at(reader, range, *revision)?),
            ),
            (TxnContext::Write(txn), Request::RequestRange(range)) => Ok(Response::ResponseRange(
                txn.store().range_at(reader, range, txn.view_revision())?,
            )),
            (TxnContext::Write(txn), Request::RequestPut(put)) => {
                Ok(Response::ResponsePut(txn.put(reader, put)?))
            }
            (TxnContext::Write(txn), Request::RequestDeleteRange(delete)) => Ok(
                Response::ResponseDeleteRange(txn.delete_range(reader, delete)?),
            ),
            (TxnContext::Read { .. }, _) => Err(MvccError::Storage(
                "a txn that writes must be applied, not read".to_string(),
            )),
            (TxnContext::Write(_), Request::RequestTxn(_)) => Err(plan_mismatch()),
        }
    }
}

/// Run the chosen branch's ops in order. Nested txn responses carry an all-zero header, as etcd's.
fn execute<R: RevisionReader + ?Sized>(
    context: &mut TxnContext<'_, '_>,
    reader: &R,
    req: &pb::TxnRequest,
    plan: &TxnPlan,
) -> Result<pb::TxnResponse, MvccError> {
    let mut nested = plan.nested.iter();
    let mut responses = Vec::new();
    for op in branch(req, plan.succeeded) {
        let response = match &op.request {
            Some(Request::RequestTxn(inner)) => {
                let inner_plan = nested.next().ok_or_else(plan_mismatch)?;
                let mut inner_response = execute(context, reader, inner, inner_plan)?;
                inner_response.header = Some(pb::ResponseHeader::default());
                Some(Response::ResponseTxn(inner_response))
            }
            Some(request) => Some(context.run(reader, request)?),
            None => None,
        };
        responses.push(pb::ResponseOp { response });
    }
    Ok(pb::TxnResponse {
        header: None,
        succeeded: plan.succeeded,
        responses,
    })
}

/// Apply a txn as one write request (etcd's applier `Txn`).
pub(crate) fn apply_txn<R: RevisionReader + ?Sized, L: LeaseRegistry + ?Sized>(
    store: &mut KvStore,
    reader: &R,
    leases: &L,
    req: &pb::TxnRequest,
) -> Result<Applied, MvccError> {
    let begin = store.current_revision;
    let plan = plan(store, reader, req, begin)?;
    if !txn_is_read_only(req) {
        check_puts(store, leases, req, &plan, begin)?;
    }
    check_ranges(store, req, &plan, begin)?;
    let (mut response, events) = store.write(|txn| {
        let mut context = TxnContext::Write(txn);
        execute(&mut context, reader, req, &plan)
    })?;
    response.header = header(store.current_revision);
    Ok(Applied {
        response: WriteResponse::Txn(response),
        events,
    })
}

/// Evaluate a read-only txn at the current revision.
pub(crate) fn read_txn<R: RevisionReader + ?Sized>(
    store: &KvStore,
    reader: &R,
    req: &pb::TxnRequest,
) -> Result<pb::TxnResponse, MvccError> {
    let revision = store.current_revision;
    let plan = plan(store, reader, req, revision)?;
    check_ranges(store, req, &plan, revision)?;
    let mut context = TxnContext::Read { store, revision };
    let mut response = execute(&mut context, reader, req, &plan)?;
    response.header = header(revision);
    Ok(response)
}
