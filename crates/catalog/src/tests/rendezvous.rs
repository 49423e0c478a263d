use std::collections::HashMap;

use crate::rendezvous::{check_key, confirmer, owner, rank, weight};

/// Check keys shaped like real ones: many services, a few instances each.
fn keys(count: usize) -> Vec<Vec<u8>> {
    (0..count)
        .map(|index| {
            check_key(
                &format!("svc-{}", index / 10),
                &format!("instance-{}", index % 10),
                "http",
            )
        })
        .collect()
}

/// How many of `keys` each member owns.
fn owners(keys: &[Vec<u8>], members: &[u64]) -> HashMap<u64, usize> {
    let mut owned = HashMap::new();
    for key in keys {
        *owned
            .entry(owner(key, members).expect("members"))
            .or_default() += 1;
    }
    owned
}

#[test]
fn check_keys_join_the_three_names() {
    assert_eq!(check_key("web", "web-1", "http"), b"web/web-1/http");
}

#[test]
fn weights_are_fixed_forever() {
    // Every member must compute the same weights, on any machine and any Rust version: these
    // values may never change (they are fmix64(fnv1a64(member as 8 LE bytes ++ key))).
    let key = check_key("web", "web-1", "http");
    assert_eq!(weight(&key, 1), 0xc3d5_aa75_299d_0310);
    assert_eq!(weight(&key, 2), 0x9f05_9d2d_915a_433d);
    assert_eq!(weight(&key, 3), 0x7525_37fa_22e1_c753);
    assert_eq!(rank(&key, &[3, 1, 2]), [1, 2, 3]);
}

#[test]
fn ranking_ignores_member_order_and_duplicates() {
    for key in keys(200) {
        let ranked = rank(&key, &[1, 2, 3, 4, 5]);
        assert_eq!(rank(&key, &[5, 3, 1, 4, 2]), ranked);
        assert_eq!(rank(&key, &[5, 3, 3, 1, 4, 2, 1]), ranked);
        assert_eq!(owner(&key, &[4, 2, 5, 1, 3]), Some(ranked[0]));
        assert_eq!(confirmer(&key, &[4, 2, 5, 1, 3]), Some(ranked[1]));
    }
}

#[test]
fn few_members() {
    let key = check_key("web", "web-1", "http");
    assert_eq!(rank(&key, &[]), Vec::<u64>::new());
    assert_eq!(owner(&key, &[]), None);
    assert_eq!(confirmer(&key, &[]), None);
    assert_eq!(owner(&key, &[7]), Some(7));
    assert_eq!(confirmer(&key, &[7]), None);
    assert_eq!(confirmer(&key, &[7, 7]), None, "one member listed twice");
}

#[test]
fn checks_spread_evenly() {
    let keys = keys(10_000);
    let member_sets: [&[u64]; 4] = [
        &[1, 2, 3],
        &[1, 2, 3, 4, 5],
        &[17, 42, 1_000_003],
        &[u64::MAX, 0, 1 << 40, 12_345, 99],
    ];
    for members in member_sets {
        let expected = keys.len() / members.len();
        let owned = owners(&keys, members);
        let mut confirmed: HashMap<u64, usize> = HashMap::new();
        for key in &keys {
            *confirmed
                .entry(confirmer(key, members).expect("two members"))
                .or_default() += 1;
        }
        for member in members {
            for (role, counts) in [("owns", &owned), ("confirms", &confirmed)] {
                let count = counts.get(member).copied().unwrap_or(0);
                assert!(
                    count.abs_diff(expected) * 10 <= expected,
                    "member {member} of {members:?} {role} {count} checks, expected {expected} ± 10 %"
                );
            }
        }
    }
}

#[test]
fn a_member_leaving_moves_only_its_own_checks() {
    let keys = keys(10_000);
    let before: &[u64] = &[1, 2, 3, 4, 5];
    let after: &[u64] = &[1, 2, 4, 5];
    let mut moved = 0usize;
    for key in &keys {
        let old_owner = owner(key, before).expect("members");
        let new_owner = owner(key, after).expect("members");
        if old_owner == 3 {
            moved += 1;
            // Its checks go to the member that confirmed them: already the next in line.
            assert_eq!(Some(new_owner), confirmer(key, before));
        } else {
            assert_eq!(new_owner, old_owner, "a check of a staying member moved");
        }
    }
    assert!(moved > 1_800 && moved < 2_200, "{moved} moved");
}

#[test]
fn a_member_joining_takes_about_one_in_n() {
    let keys = keys(10_000);
    let before: &[u64] = &[1, 2, 3, 4, 5];
    let after: &[u64] = &[1, 2, 3, 4, 5, 6];
    let mut moved = 0usize;
    for key in &keys {
        let old_owner = owner(key, before).expect("members");
        let new_owner = owner(key, after).expect("members");
        if new_owner != old_owner {
            assert_eq!(new_owner, 6, "a check moved between staying members");
            moved += 1;
        }
    }
    // Expected: 10,000 / 6 ≈ 1,667.
    assert!(moved.abs_diff(1_667) * 10 <= 1_667, "{moved} moved");
}
