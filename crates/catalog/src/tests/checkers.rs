use crate::{decode_checker_set, encode_checker_set, CatalogError, CheckerSet, CHECKERS_KEY};

#[test]
fn checker_sets_encode_sorted_and_deduplicated() {
    assert_eq!(CHECKERS_KEY, "/_beacon/checkers");
    let checkers = CheckerSet {
        members: vec![3, 1, 2, 3],
        epoch: 7,
    };
    let encoded = encode_checker_set(&checkers);
    assert_eq!(encoded, br#"{"members":[1,2,3],"epoch":7}"#);
    assert_eq!(
        decode_checker_set(&encoded),
        Ok(CheckerSet {
            members: vec![1, 2, 3],
            epoch: 7,
        })
    );
    let documentation = include_str!("../lib.rs");
    assert!(documentation.contains(r#"//! {"members":[1,2,3],"epoch":7}"#));
}

#[test]
fn decoding_sorts_and_ignores_unknown_fields() {
    assert_eq!(
        decode_checker_set(br#"{"epoch":1,"members":[9,2,2],"leader":2}"#),
        Ok(CheckerSet {
            members: vec![2, 9],
            epoch: 1,
        })
    );
    assert_eq!(
        decode_checker_set(br#"{"members":[],"epoch":0}"#),
        Ok(CheckerSet::default())
    );
}

#[test]
fn incomplete_or_malformed_sets_are_refused() {
    for value in [
        &b""[..],
        b"{}",
        br#"{"members":[1]}"#,
        br#"{"epoch":1}"#,
        br#"{"members":[-1],"epoch":1}"#,
        br#"{"members":"1,2","epoch":1}"#,
        b"[[1,2],7]",
    ] {
        let error = decode_checker_set(value).expect_err("refused");
        assert!(
            matches!(error, CatalogError::InvalidRecord { .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .starts_with(r#"invalid checker set record at key "/_beacon/checkers": "#),
            "{error}"
        );
    }
}
