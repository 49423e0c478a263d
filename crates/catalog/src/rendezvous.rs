//! Rendezvous (highest random weight) hashing: which member owns a health check and which one
//! confirms its failures. Every member computes the same ranking from the same checker set, with
//! no coordination, and a change of membership moves only the checks it must: those of a member
//! that left, or about 1/n of them to a member that joined.
//!
//! The weight of member `m` for check key `k` is
//! `fmix64(fnv1a64(m as 8 little-endian bytes ++ k))`: 64-bit FNV-1a (offset basis
//! `0xcbf29ce484222325`, prime `0x100000001b3`) over the member id then the key, finished by
//! MurmurHash3's 64-bit finalizer (`fmix64`) so that every input bit reaches every output bit.
//! It is spelled out here rather than taken from `std` because `DefaultHasher` and `RandomState`
//! are neither fixed across Rust versions nor seeded alike on every machine; the ranking must be
//! identical on every member forever, or two members would both own a check (or neither would).

/// The key a check is ranked by: `{service}/{instance_id}/{check_id}`. None of the three names
/// may hold `/` (see [`crate::validate_instance`]), so distinct checks have distinct keys.
pub fn check_key(service: &str, instance_id: &str, check_id: &str) -> Vec<u8> {
    format!("{service}/{instance_id}/{check_id}").into_bytes()
}

/// `members` (duplicates dropped) from the highest weight for `check_key` to the lowest; equal
/// weights, vanishingly rare, are ordered by member id so the result is still total.
pub fn rank(check_key: &[u8], members: &[u64]) -> Vec<u64> {
    let mut weighted: Vec<(u64, u64)> = members
        .iter()
        .map(|&member| (weight(check_key, member), member))
        .collect();
    weighted.sort_unstable_by(|left, right| right.0.cmp(&left.0).then(left.1.cmp(&right.1)));
    weighted.dedup();
    weighted.into_iter().map(|(_, member)| member).collect()
}

/// The member that runs the check: the first of [`rank`], `None` without members.
pub fn owner(check_key: &[u8], members: &[u64]) -> Option<u64> {
    rank(check_key, members).first().copied()
}

/// The member that confirms a failure before a check turns critical: the second of [`rank`],
/// `None` with fewer than two members.
pub fn confirmer(check_key: &[u8], members: &[u64]) -> Option<u64> {
    rank(check_key, members).get(1).copied()
}

/// The weight of `member` for `check_key` (see the module documentation for the definition).
pub fn weight(check_key: &[u8], member: u64) -> u64 {
    fmix64(fnv1a64(&member.to_le_bytes(), check_key))
}

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// 64-bit FNV-1a over the concatenation of `first` and `second`.
fn fnv1a64(first: &[u8], second: &[u8]) -> u64 {
    first
        .iter()
        .chain(second)
        .fold(FNV_OFFSET_BASIS, |hash, &byte| {
            (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
        })
}

/// MurmurHash3's 64-bit finalizer: a bijection with full avalanche, which FNV-1a lacks in its
/// high bits for inputs differing only in their last bytes.
fn fmix64(mut hash: u64) -> u64 {
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    hash
}

#[cfg(test)]
mod tests {
    use super::{fmix64, fnv1a64};

    #[test]
    fn fnv1a64_matches_the_reference_vectors() {
        // From the FNV reference test suite (draft-eastlake-fnv).
        assert_eq!(fnv1a64(b"", b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a", b""), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foo", b""), 0xdcb2_7518_fed9_d577);
        assert_eq!(fnv1a64(b"fo", b"o"), fnv1a64(b"foo", b""));
    }

    #[test]
    fn fmix64_is_murmur3s_finalizer() {
        assert_eq!(fmix64(0), 0);
        assert_eq!(fmix64(1), 0xb456_bcfc_34c2_cb2c);
    }
}
