//! The names Beacon answers for, relative to the configured domain (`beacon.` by default):
//!
//! | name | meaning |
//! |---|---|
//! | `NAME.service.DOMAIN` | the service's discoverable instances (A, AAAA, SRV) |
//! | `TAG.NAME.service.DOMAIN` | only instances carrying `TAG` |
//! | `_NAME._tcp.service.DOMAIN` | RFC 2782 form of `NAME.service.DOMAIN` |
//! | `_NAME._TAG.service.DOMAIN` | RFC 2782 form with a tag in the protocol slot (as Consul) |
//! | `ID.NAME.instance.DOMAIN` | one instance whatever its health (A, AAAA or CNAME, TXT, SRV) |
//!
//! Matching is ASCII case-insensitive (DNS names are). Instance ids may hold '.', which simply
//! makes the id span several labels; an id that cannot be spelled that way (a dot-separated part
//! longer than 63 characters, or a name over 255 bytes) is named `i-<16 hex digits>` instead,
//! the FNV-1a hash of the id, so every instance has a name that resolves.

use std::borrow::Cow;

use hickory_proto::rr::Name;

/// The configured domain, lowercased, as a name and as the labels every answer name ends with.
#[derive(Debug, Clone)]
pub struct Zone {
    /// The domain, fully qualified and lowercase.
    pub domain: Name,
    /// `hostmaster.DOMAIN`, the SOA's contact.
    pub hostmaster: Name,
    /// `ns.DOMAIN`, the SOA's primary server.
    pub primary: Name,
}

/// Wire length of a name: one length byte per label, the labels, the root byte.
const MAX_NAME_WIRE_LEN: usize = 255;
const MAX_LABEL_LEN: usize = 63;

impl Zone {
    /// The zone for a domain such as `beacon.` or `beacon` (validated by the config).
    pub fn new(domain: &str) -> Result<Self, hickory_proto::ProtoError> {
        let mut domain = Name::from_ascii(domain.to_ascii_lowercase())?;
        domain.set_fqdn(true);
        Ok(Zone {
            hostmaster: domain.prepend_label("hostmaster")?,
            primary: domain.prepend_label("ns")?,
            domain,
        })
    }

    /// What `name` asks for.
    pub fn parse(&self, name: &Name) -> Lookup {
        if !self.domain.zone_of(name) {
            return Lookup::Outside;
        }
        let relative = usize::from(name.num_labels() - self.domain.num_labels());
        let labels: Option<Vec<&str>> = name
            .iter()
            .take(relative)
            .map(|label| std::str::from_utf8(label).ok())
            .collect();
        let Some(labels) = labels else {
            return Lookup::NotFound;
        };
        let Some((kind, rest)) = labels.split_last() else {
            return Lookup::Apex;
        };
        if kind.eq_ignore_ascii_case("service") {
            match rest {
                [] => Lookup::Branch,
                [service] => Lookup::Service {
                    service: service.to_ascii_lowercase(),
                    tag: None,
                },
                [first, second] => {
                    match (first.strip_prefix('_'), second.strip_prefix('_')) {
                        // RFC 2782: _service._proto; a protocol other than tcp is a tag.
                        (Some(service), Some(protocol)) => Lookup::Service {
                            service: service.to_ascii_lowercase(),
                            tag: (!protocol.eq_ignore_ascii_case("tcp"))
                                .then(|| protocol.to_ascii_lowercase()),
                        },
                        _ => Lookup::Service {
                            service: second.to_ascii_lowercase(),
                            tag: Some(first.to_ascii_lowercase()),
                        },
                    }
                }
                _ => Lookup::NotFound,
            }
        } else if kind.eq_ignore_ascii_case("instance") {
            match rest {
                [] => Lookup::Branch,
                [service] => Lookup::ServiceBranch {
                    service: service.to_ascii_lowercase(),
                },
                [id @ .., service] => Lookup::Instance {
                    service: service.to_ascii_lowercase(),
                    id: id.join("."),
                },
            }
        } else {
            Lookup::NotFound
        }
    }

    /// The label(s) naming instance `id` of `service`: the id itself when it can be spelled as
    /// labels under `NAME.instance.DOMAIN`, else `i-` and its hash (see the module docs).
    pub fn instance_label<'a>(&self, service: &str, id: &'a str) -> Cow<'a, str> {
        let parts_ok = id
            .split('.')
            .all(|part| (1..=MAX_LABEL_LEN).contains(&part.len()));
        // Every label costs its length plus one, and the root one byte (`Name::len` counts a
        // dot per label of the domain, so it is the domain's wire length less the root).
        let wire_len =
            id.len() + 1 + service.len() + 1 + "instance".len() + 1 + self.domain.len() + 1;
        if parts_ok && wire_len <= MAX_NAME_WIRE_LEN {
            Cow::Borrowed(id)
        } else {
            Cow::Owned(format!("i-{:016x}", fnv1a(id.as_bytes())))
        }
    }

    /// `ID.NAME.instance.DOMAIN` for an instance (see [`Zone::instance_label`]).
    pub fn instance_name(&self, service: &str, id: &str) -> Option<Name> {
        let label = self.instance_label(service, id);
        let mut name = Name::from_labels(
            label
                .split('.')
                .chain([service, "instance"])
                .map(str::as_bytes),
        )
        .ok()?;
        name.set_fqdn(false);
        name.append_domain(&self.domain).ok()
    }

    /// `NAME.service.DOMAIN`.
    pub fn service_name(&self, service: &str) -> Option<Name> {
        let mut name = Name::from_labels([service, "service"].map(str::as_bytes)).ok()?;
        name.set_fqdn(false);
        name.append_domain(&self.domain).ok()
    }
}

/// What a query name refers to; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The domain itself (SOA).
    Apex,
    /// `service.DOMAIN` or `instance.DOMAIN`: names that exist but hold no records.
    Branch,
    /// `NAME.instance.DOMAIN`: exists while the service does, holds no records.
    ServiceBranch { service: String },
    /// A service's instances, lowercase service and tag.
    Service {
        service: String,
        tag: Option<String>,
    },
    /// One instance; `id` as asked (case kept), compared ignoring ASCII case.
    Instance { service: String, id: String },
    /// Inside the domain but not a name Beacon has (NXDOMAIN).
    NotFound,
    /// Outside the domain (REFUSED: no open resolver).
    Outside,
}

/// FNV-1a, 64 bit: stable across releases and platforms, so instance names do not change when
/// a member is upgraded.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn zone() -> Zone {
        Zone::new("beacon.").expect("valid domain")
    }

    fn parse(name: &str) -> Lookup {
        zone().parse(&Name::from_ascii(name).expect("valid name"))
    }

    fn service(service: &str, tag: Option<&str>) -> Lookup {
        Lookup::Service {
            service: service.into(),
            tag: tag.map(Into::into),
        }
    }

    #[test]
    fn name_forms() {
        let cases = [
            ("beacon.", Lookup::Apex),
            ("BEACON", Lookup::Apex),
            ("service.beacon.", Lookup::Branch),
            ("instance.beacon.", Lookup::Branch),
            ("web.service.beacon.", service("web", None)),
            ("WeB.SERVICE.Beacon.", service("web", None)),
            ("v1.web.service.beacon.", service("web", Some("v1"))),
            ("_web._tcp.service.beacon.", service("web", None)),
            ("_web._TCP.service.beacon.", service("web", None)),
            ("_web._v1.service.beacon.", service("web", Some("v1"))),
            ("a.b.web.service.beacon.", Lookup::NotFound),
            ("web.other.beacon.", Lookup::NotFound),
            ("web.beacon.", Lookup::NotFound),
            (
                "web.instance.beacon.",
                Lookup::ServiceBranch {
                    service: "web".into(),
                },
            ),
            (
                "Web-1.web.instance.beacon.",
                Lookup::Instance {
                    service: "web".into(),
                    id: "Web-1".into(),
                },
            ),
            (
                "api-10.0.0.5-9000.api.instance.beacon.",
                Lookup::Instance {
                    service: "api".into(),
                    id: "api-10.0.0.5-9000".into(),
                },
            ),
            ("web.service.consul.", Lookup::Outside),
            ("beacon.com.", Lookup::Outside),
            ("xbeacon.", Lookup::Outside),
            (".", Lookup::Outside),
        ];
        for (name, expected) in cases {
            assert_eq!(parse(name), expected, "{name}");
        }
    }

    #[test]
    fn multi_label_domain() {
        let zone = Zone::new("sd.example.com").expect("valid");
        let name = Name::from_ascii("web.service.sd.example.com.").expect("valid");
        assert_eq!(zone.parse(&name), service("web", None));
        let name = Name::from_ascii("web.service.example.com.").expect("valid");
        assert_eq!(zone.parse(&name), Lookup::Outside);
    }

    #[test]
    fn binary_labels_are_not_found() {
        let name = Name::from_labels([&b"\xff\xfe"[..], b"service", b"beacon"]).expect("labels");
        assert_eq!(zone().parse(&name), Lookup::NotFound);
    }

    #[test]
    fn instance_names_round_trip() {
        let zone = zone();
        for id in ["web-1", "api-10.0.0.5-9000", "Mixed_Case.x"] {
            let name = zone.instance_name("web", id).expect("name");
            assert_eq!(
                zone.parse(&name),
                Lookup::Instance {
                    service: "web".into(),
                    id: id.into()
                }
            );
        }
        // A 64-character part cannot be a label: the hashed form, stable and parseable.
        let long = "x".repeat(64);
        let label = zone.instance_label("web", &long);
        assert!(label.starts_with("i-") && label.len() == 18, "{label}");
        assert_eq!(label, zone.instance_label("web", &long));
        let name = zone.instance_name("web", &long).expect("name");
        assert_eq!(
            zone.parse(&name),
            Lookup::Instance {
                service: "web".into(),
                id: label.into_owned()
            }
        );
        // Empty parts ("a..b") are hashed too.
        assert!(zone.instance_label("web", "a..b").starts_with("i-"));
        // A 128-character id of short parts under a 63-character service still fits.
        let id = ["abcdefghijklmno"; 8].join(".");
        assert_eq!(zone.instance_label(&"s".repeat(63), &id), id.as_str());
    }

    #[test]
    fn long_names_fall_back_to_the_hash() {
        let zone = Zone::new(&format!("{}.{}.", "d".repeat(63), "e".repeat(60))).expect("valid");
        let id = ["p".repeat(60), "q".repeat(60)].join(".");
        let label = zone.instance_label(&"s".repeat(63), &id);
        assert!(label.starts_with("i-"), "{label}");
        assert!(zone.instance_name(&"s".repeat(63), &id).is_some());
    }
}
