use super::*;

#[test]
fn a_character_cut_at_the_end_is_dropped() {
    let mut bytes = "héllo ".as_bytes().to_vec();
    bytes.extend_from_slice(&"€".as_bytes()[..2]);
    assert_eq!(utf8_text(bytes), "héllo ");
}

#[test]
fn invalid_bytes_in_the_middle_are_replaced() {
    assert_eq!(utf8_text(vec![b'a', 0xff, b'b']), "a\u{fffd}b");
}

#[test]
fn byte_search_finds_the_first_occurrence() {
    assert_eq!(find_bytes(b"abcabc", b"ca"), Some(2));
    assert_eq!(find_bytes(b"ab", b"abc"), None);
}

#[test]
fn the_tail_that_may_begin_a_stop_sequence_is_held_back() {
    assert_eq!(longest_suffix_prefix(b"hello wor", b"world"), 3);
    assert_eq!(longest_suffix_prefix(b"hello", b"world"), 0);
    assert_eq!(
        longest_suffix_prefix(b"ab", b"b"),
        0,
        "a whole stop is not a proper prefix"
    );
    assert_eq!(longest_suffix_prefix(b"", b"xy"), 0);
}
