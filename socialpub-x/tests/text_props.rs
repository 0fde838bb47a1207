//! Properties of the weighted counter and the link finder, on arbitrary text.

use proptest::prelude::*;
use socialpub_x::text::{extract_urls, parse, weighted_length};
use unicode_normalization::UnicodeNormalization;

proptest! {
    #[test]
    fn any_text_is_counted_without_panicking(s in any::<String>()) {
        let info = parse(&s, 280);
        prop_assert_eq!(info.weighted_length, weighted_length(&s));
        // The count is made on the NFC form, which may hold more characters than the text
        // (U+1D15E becomes two), each weighing at most 2; a link weighs 23 whatever its length.
        let nfc: String = s.nfc().collect();
        prop_assert!(
            info.weighted_length <= 2 * nfc.chars().count() + 23 * extract_urls(&nfc).len()
        );
        let urls = extract_urls(&s);
        let mut end = 0;
        for r in &urls {
            prop_assert!(r.start >= end && r.start < r.end && r.end <= s.len());
            prop_assert!(s.is_char_boundary(r.start) && s.is_char_boundary(r.end));
            end = r.end;
        }
    }

    #[test]
    fn normalization_form_does_not_change_the_count(s in "\\PC{0,40}") {
        let nfd: String = s.nfd().collect();
        let nfc: String = s.nfc().collect();
        prop_assert_eq!(weighted_length(&nfd), weighted_length(&nfc));
    }

    #[test]
    fn plain_ascii_words_count_one_each(s in "[a-zA-Z0-9 ,!?]{0,300}") {
        prop_assert_eq!(weighted_length(&s), s.len());
    }

    #[test]
    fn cjk_counts_two_each(s in "[\u{4E00}-\u{9FFF}\u{3040}-\u{30FF}\u{AC00}-\u{D7A3}]{0,200}") {
        // Per character after NFC: kana with a combining voiced mark compose into one.
        prop_assert_eq!(weighted_length(&s), 2 * s.nfc().count());
    }

    #[test]
    fn any_link_counts_23(path in "[a-z0-9/_-]{0,300}", host in "[a-z]{1,20}") {
        let text = format!("see https://{host}.com/{path} now");
        prop_assert_eq!(weighted_length(&text), 4 + 23 + 4);
    }
}

/// Found by the property above: a character whose NFC form is two characters counts as two.
#[test]
fn a_character_that_nfc_splits_counts_as_its_parts() {
    assert_eq!("\u{1D15E}".nfc().count(), 2);
    assert_eq!(weighted_length("\u{1D15E}"), 4);
}
