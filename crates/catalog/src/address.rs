//! Network address rules shared by instance addresses and check targets: hosts (IP addresses and
//! DNS names), `host:port` pairs and HTTP URLs, parsed by hand so the crate needs no URL library.

use std::net::{IpAddr, Ipv6Addr};

/// Longest DNS name, without its optional trailing dot (RFC 1035).
const MAX_DNS_NAME_LEN: usize = 253;
/// Longest DNS label (RFC 1035).
const MAX_DNS_LABEL_LEN: usize = 63;

/// The rule [`is_host`] enforces, for error messages.
pub(crate) const HOST_RULE: &str = "must be an IPv4 or IPv6 address or a DNS name (labels of \
     letters, digits and '-', 1 to 63 characters each, not starting or ending with '-', at most \
     253 characters in all)";

/// The rule [`is_host_port`] enforces, for error messages.
pub(crate) const HOST_PORT_RULE: &str = "must be host:port, where host is an IPv4 address, an \
     IPv6 address in brackets ([::1]) or a DNS name, and port is 1 to 65535";

/// The rule [`is_http_url`] enforces, for error messages.
pub(crate) const HTTP_URL_RULE: &str = "must start with http:// or https://, name a host (an IP \
     address, [IPv6] or a DNS name) with an optional port 1 to 65535, and hold no spaces or \
     control characters";

/// True for an IPv4 or IPv6 address (IPv6 without brackets) or a DNS name.
pub(crate) fn is_host(host: &str) -> bool {
    host.parse::<IpAddr>().is_ok() || is_dns_name(host)
}

/// True for a DNS name: dot-separated labels of ASCII letters, digits and '-', each 1 to 63
/// characters and not starting or ending with '-' (RFC 1123), at most 253 characters in all,
/// with an optional trailing dot.
pub(crate) fn is_dns_name(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= MAX_DNS_NAME_LEN
        && name.split('.').all(|label| {
            (1..=MAX_DNS_LABEL_LEN).contains(&label.len())
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// True for a decimal port 1 to 65535 (digits only: no sign, no spaces).
pub(crate) fn is_port(port: &str) -> bool {
    !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|byte| byte.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|port| port != 0)
}

/// True for `host:port`, where host is an IPv4 address, `[IPv6]` or a DNS name.
pub(crate) fn is_host_port(address: &str) -> bool {
    match split_authority(address) {
        Some((_, port)) => port.is_some_and(is_port),
        None => false,
    }
}

/// True for an `http://` or `https://` URL naming a valid host and, optionally, a valid port.
/// Everything after the authority (path, query, fragment) is accepted as long as it holds no
/// whitespace or control characters, which no HTTP request line may carry.
pub(crate) fn is_http_url(url: &str) -> bool {
    if url
        .chars()
        .any(|character| character.is_whitespace() || character.is_control())
    {
        return false;
    }
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    // user:password@host:port — the credentials are the checker's business, the host is ours.
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host_port)| host_port);
    match split_authority(host_port) {
        Some((_, None)) => true,
        Some((_, Some(port))) => is_port(port),
        None => false,
    }
}

/// Splits `host[:port]` into a valid host and the port text if any, or `None` when the host is
/// not valid. An IPv6 host must be in brackets, since its colons would otherwise be ambiguous.
fn split_authority(authority: &str) -> Option<(&str, Option<&str>)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        host.parse::<Ipv6Addr>().ok()?;
        if after.is_empty() {
            return Some((host, None));
        }
        return Some((host, Some(after.strip_prefix(':')?)));
    }
    let (host, port) = match authority.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    // An IPv6 address is only accepted in brackets; a bare one split at its first colon leaves
    // a host that is neither an IPv4 address nor a DNS name, so it fails here.
    (host.parse::<std::net::Ipv4Addr>().is_ok() || is_dns_name(host)).then_some((host, port))
}
