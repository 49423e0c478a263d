//! etcd's key-range rules: a range is `[key, range_end)`, an empty `range_end` means the single
//! key, `"\0"` means "every key from `key` on", and a prefix is the range up to the prefix with its
//! last incrementable byte incremented.

/// The `range_end` that selects every key starting with `prefix`, by etcd's rule: drop trailing
/// `0xff` bytes, then increment the last byte. A prefix made only of `0xff` bytes (or empty) has
/// no upper bound, so the answer is `"\0"` ("to the end of the keyspace").
pub fn prefix_range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(&last) = end.last() {
        if last < 0xff {
            let index = end.len() - 1;
            end[index] = last + 1;
            return end;
        }
        end.pop();
    }
    vec![0]
}

/// The `range_end` meaning "every key greater than or equal to the key".
pub const FROM_KEY_RANGE_END: &[u8] = b"\0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increments_last_byte() {
        assert_eq!(prefix_range_end(b"foo"), b"fop".to_vec());
        assert_eq!(prefix_range_end(b"a/"), b"a0".to_vec());
    }

    #[test]
    fn drops_trailing_0xff_bytes() {
        assert_eq!(prefix_range_end(&[b'a', 0xff]), vec![b'b']);
        assert_eq!(prefix_range_end(&[1, 0xfe, 0xff, 0xff]), vec![1, 0xff]);
    }

    #[test]
    fn all_0xff_or_empty_means_to_the_end() {
        assert_eq!(prefix_range_end(&[0xff, 0xff]), vec![0]);
        assert_eq!(prefix_range_end(b""), vec![0]);
    }
}
