//! Tests through the public API, one file per area, sharing the instance builders below.

mod check_state;
mod check_tracker;
mod checkers;
mod defaults;
mod discovery;
mod event;
mod guard;
mod key;
mod record;
mod rendezvous;
mod settings;
mod summary;
mod validate;

use beacon_proto::beacon::v1::{
    check, Check, CheckState, GrpcCheck, HealthStatus, HttpCheck, Instance, Maintenance, TcpCheck,
    TtlCheck,
};
use beacon_proto::mvccpb::KeyValue;

use crate::{encode_instance, instance_key};

/// A valid instance of `service` without checks.
pub(crate) fn instance(service: &str, id: &str) -> Instance {
    Instance {
        service: service.to_owned(),
        id: id.to_owned(),
        address: "10.0.0.1".to_owned(),
        port: 8080,
        ..Instance::default()
    }
}

pub(crate) fn http_check(url: &str) -> Check {
    Check {
        kind: Some(check::Kind::Http(HttpCheck {
            url: url.to_owned(),
            ..HttpCheck::default()
        })),
        ..Check::default()
    }
}

pub(crate) fn tcp_check(address: &str) -> Check {
    Check {
        kind: Some(check::Kind::Tcp(TcpCheck {
            address: address.to_owned(),
        })),
        ..Check::default()
    }
}

pub(crate) fn grpc_check(address: &str) -> Check {
    Check {
        kind: Some(check::Kind::Grpc(GrpcCheck {
            address: address.to_owned(),
            ..GrpcCheck::default()
        })),
        ..Check::default()
    }
}

pub(crate) fn ttl_check(ttl_ms: u64) -> Check {
    Check {
        kind: Some(check::Kind::Ttl(TtlCheck { ttl_ms })),
        ..Check::default()
    }
}

/// A check whose last verdict is `status`.
pub(crate) fn check_in(status: HealthStatus) -> Check {
    Check {
        state: Some(CheckState {
            status: status as i32,
            ..CheckState::default()
        }),
        ..ttl_check(10_000)
    }
}

/// `instance` with one check per status (none: no checks, so passing).
pub(crate) fn with_checks(mut instance: Instance, statuses: &[HealthStatus]) -> Instance {
    instance.checks = statuses
        .iter()
        .enumerate()
        .map(|(index, status)| Check {
            id: format!("check-{index}"),
            ..check_in(*status)
        })
        .collect();
    instance
}

pub(crate) fn in_maintenance(mut instance: Instance) -> Instance {
    instance.maintenance = Some(Maintenance {
        enabled: true,
        reason: "drain".to_owned(),
    });
    instance
}

/// The key-value etcd would hold for `instance`.
pub(crate) fn kv_of(
    instance: &Instance,
    lease: i64,
    create_revision: i64,
    mod_revision: i64,
) -> KeyValue {
    KeyValue {
        key: instance_key(&instance.service, &instance.id),
        value: encode_instance(instance),
        lease,
        create_revision,
        mod_revision,
        version: 1,
    }
}
