//! [`DnsStats`]: counters of this member's DNS answers by response code, kept with relaxed
//! atomics so the hot path pays one uncontended add per query. Read with [`DnsStats::snapshot`];
//! also exported as `beacon_dns_queries_total{result}` through cached metric handles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use hickory_proto::op::ResponseCode;

/// Answers sent, by response code, plus packets dropped and answers truncated.
#[derive(Debug, Default)]
pub struct DnsStats {
    pub no_error: AtomicU64,
    pub nx_domain: AtomicU64,
    pub refused: AtomicU64,
    pub serv_fail: AtomicU64,
    pub form_err: AtomicU64,
    pub not_imp: AtomicU64,
    /// Packets not answered at all: shorter than a header, or not queries.
    pub dropped: AtomicU64,
    /// UDP answers cut to fit, with TC set.
    pub truncated: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStatsSnapshot {
    pub no_error: u64,
    pub nx_domain: u64,
    pub refused: u64,
    pub serv_fail: u64,
    pub form_err: u64,
    pub not_imp: u64,
    pub dropped: u64,
    pub truncated: u64,
}

impl DnsStats {
    /// Counts one answer with `code`.
    pub fn count(&self, code: ResponseCode) {
        let (counter, index) = match code {
            ResponseCode::NoError => (&self.no_error, 0),
            ResponseCode::NXDomain => (&self.nx_domain, 1),
            ResponseCode::Refused => (&self.refused, 2),
            ResponseCode::FormErr => (&self.form_err, 4),
            ResponseCode::NotImp => (&self.not_imp, 5),
            _ => (&self.serv_fail, 3),
        };
        counter.fetch_add(1, Ordering::Relaxed);
        exported()[index].increment(1);
    }

    /// Counts one packet dropped without an answer.
    pub fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        exported()[6].increment(1);
    }

    pub fn snapshot(&self) -> DnsStatsSnapshot {
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        DnsStatsSnapshot {
            no_error: load(&self.no_error),
            nx_domain: load(&self.nx_domain),
            refused: load(&self.refused),
            serv_fail: load(&self.serv_fail),
            form_err: load(&self.form_err),
            not_imp: load(&self.not_imp),
            dropped: load(&self.dropped),
            truncated: load(&self.truncated),
        }
    }
}

/// The exported counters by result, registered once (after beacond installed its recorder).
fn exported() -> &'static [metrics::Counter; 7] {
    static COUNTERS: OnceLock<[metrics::Counter; 7]> = OnceLock::new();
    COUNTERS.get_or_init(|| {
        [
            "noerror", "nxdomain", "refused", "servfail", "formerr", "notimp", "dropped",
        ]
        .map(|result| metrics::counter!(crate::observability::DNS_QUERIES, "result" => result))
    })
}
