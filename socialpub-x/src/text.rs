//! X's weighted text length, counted the way twitter-text config v3 counts it.
//!
//! X does not count characters: it counts *weights*. After NFC normalization,
//!
//! - every URL (with or without a scheme, `example.com` included) counts 23, whatever its length;
//! - every emoji (a whole grapheme: ZWJ sequences, flags, skin tones, keycaps) counts 2;
//! - every other code point counts 1 when it lies in U+0000–U+10FF, U+2000–U+200D,
//!   U+2010–U+201F or U+2032–U+2037, and 2 otherwise (CJK, kana, Hangul, most symbols).
//!
//! A post is valid when its weighted length is between 1 and the account's limit (280 by
//! default) and it holds none of U+FFFE, U+FEFF, U+FFFF.
//!
//! ```
//! use socialpub_x::text::weighted_length;
//!
//! assert_eq!(weighted_length("hello"), 5);
//! assert_eq!(weighted_length("こんにちは"), 10);
//! assert_eq!(weighted_length("👨‍👩‍👧‍👦"), 2);
//! assert_eq!(weighted_length("read https://example.com/a/very/long/path"), 28);
//! ```

use std::collections::HashSet;
use std::ops::Range;
use std::sync::LazyLock;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{EmojiStatus, UnicodeEmoji};
use unicode_segmentation::UnicodeSegmentation;

/// The default most weighted characters in a post.
pub const MAX_WEIGHTED_LENGTH: usize = 280;

/// What every URL counts, whatever its length (X wraps links in 23-character t.co links).
pub const URL_LENGTH: usize = 23;

/// Weights are in hundredths of a character, as in twitter-text's config (`scale` = 100).
const SCALE: usize = 100;
const DEFAULT_WEIGHT: usize = 200;
const LIGHT_WEIGHT: usize = 100;

/// Code point ranges that weigh 100 (one character) in config v3; everything else weighs 200.
const LIGHT_RANGES: [(u32, u32); 4] = [
    (0x0000, 0x10FF),
    (0x2000, 0x200D),
    (0x2010, 0x201F),
    (0x2032, 0x2037),
];

/// Characters a post may not contain.
const INVALID_CHARS: [char; 3] = ['\u{FFFE}', '\u{FEFF}', '\u{FFFF}'];

/// Top-level domains that make a bare domain a link, split into country codes and the rest.
struct Tlds {
    all: HashSet<String>,
    country: HashSet<String>,
}

static TLDS: LazyLock<Tlds> = LazyLock::new(|| {
    let mut all = HashSet::new();
    let mut country = HashSet::new();
    let mut in_country = false;
    for line in include_str!("tlds.txt").lines() {
        let line = line.trim();
        match line {
            "" => continue,
            "[country]" => in_country = true,
            "[generic]" => in_country = false,
            l if l.starts_with('#') => continue,
            l => {
                for tld in l.split_whitespace() {
                    all.insert(tld.to_owned());
                    if in_country {
                        country.insert(tld.to_owned());
                    }
                }
            }
        }
    }
    Tlds { all, country }
});

/// How a text measures against X's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct TextInfo {
    /// The weighted length (what X compares with its limit).
    pub weighted_length: usize,
    /// Whether X accepts the text: 1 to `max` weighted characters, and no invalid character.
    pub valid: bool,
    /// Whether the text holds a character X refuses (U+FFFE, U+FEFF, U+FFFF).
    pub has_invalid_characters: bool,
    /// Thousandths of the limit used (`weighted_length * 1000 / max`), for a progress ring.
    pub permillage: usize,
}

/// The weighted length of `text`, as X counts it (twitter-text config v3).
pub fn weighted_length(text: &str) -> usize {
    parse(text, MAX_WEIGHTED_LENGTH).weighted_length
}

/// Measures `text` against a limit of `max` weighted characters.
///
/// ```
/// let info = socialpub_x::text::parse("hello", 280);
/// assert!(info.valid);
/// assert_eq!(info.permillage, 17);
/// ```
pub fn parse(text: &str, max: usize) -> TextInfo {
    let norm: String = text.nfc().collect();
    let urls = extract_urls(&norm);
    let emoji: Vec<Range<usize>> = norm
        .grapheme_indices(true)
        .filter(|(_, g)| is_emoji(g))
        .map(|(i, g)| i..i + g.len())
        .collect();
    let mut total = 0usize;
    let (mut u, mut e, mut i) = (0usize, 0usize, 0usize);
    while i < norm.len() {
        while u < urls.len() && urls[u].end <= i {
            u += 1;
        }
        if u < urls.len() && urls[u].start == i {
            total += URL_LENGTH * SCALE;
            i = urls[u].end;
            continue;
        }
        while e < emoji.len() && emoji[e].end <= i {
            e += 1;
        }
        if e < emoji.len() && emoji[e].start == i {
            total += DEFAULT_WEIGHT;
            i = emoji[e].end;
            continue;
        }
        let Some(c) = norm[i..].chars().next() else {
            break;
        };
        total += char_weight(c);
        i += c.len_utf8();
    }
    let weighted_length = total / SCALE;
    let has_invalid_characters = norm.contains(INVALID_CHARS);
    TextInfo {
        weighted_length,
        valid: !has_invalid_characters && weighted_length > 0 && weighted_length <= max,
        has_invalid_characters,
        permillage: weighted_length
            .saturating_mul(1000)
            .checked_div(max)
            .unwrap_or(0),
    }
}

fn char_weight(c: char) -> usize {
    let cp = u32::from(c);
    if LIGHT_RANGES
        .iter()
        .any(|(lo, hi)| (*lo..=*hi).contains(&cp))
    {
        LIGHT_WEIGHT
    } else {
        DEFAULT_WEIGHT
    }
}

/// Whether a grapheme is one emoji (counted 2 as a whole).
fn is_emoji(g: &str) -> bool {
    let regional = g
        .chars()
        .filter(|c| ('\u{1F1E6}'..='\u{1F1FF}').contains(c))
        .count();
    if regional >= 2 {
        return true; // a flag
    }
    if g.contains('\u{20E3}') {
        return true; // a keycap: 1️⃣, #️⃣
    }
    let presentation_selector = g.contains('\u{FE0F}');
    let modifier = g.chars().any(|c| ('\u{1F3FB}'..='\u{1F3FF}').contains(&c));
    let mut emoji_chars = 0;
    for c in g.chars() {
        match c.emoji_status() {
            // Shown as emoji by default, or a skin tone on its own.
            EmojiStatus::EmojiPresentation
            | EmojiStatus::EmojiPresentationAndModifierBase
            | EmojiStatus::EmojiPresentationAndModifierAndEmojiComponent => return true,
            EmojiStatus::EmojiOther | EmojiStatus::EmojiModifierBase => emoji_chars += 1,
            _ => {}
        }
    }
    // A text-style emoji becomes an emoji with U+FE0F, a skin tone, or inside a ZWJ sequence.
    emoji_chars > 0 && (presentation_selector || modifier || g.contains('\u{200D}'))
}

fn is_domain_char(c: char) -> bool {
    c.is_alphanumeric() || c == '-' || c == '_'
}

/// Characters a link may not directly follow (twitter-text's `validUrlPrecedingChars`): ASCII
/// letters and digits, the mention, cashtag and hashtag signs, and invalid characters.
/// Directional marks and other scripts may precede a link.
fn blocks_url_after(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(c, '@' | '＠' | '$' | '#' | '＃')
        || INVALID_CHARS.contains(&c)
}

/// Whether every DNS label of `domain` fits in 63 bytes once IDNA-encoded (`xn--…`), as a
/// link's host must.
fn labels_fit(domain: &str) -> bool {
    let ascii = if domain.is_ascii() {
        domain.to_owned()
    } else {
        match url::Host::parse(domain) {
            Ok(url::Host::Domain(d)) => d,
            _ => return false,
        }
    };
    ascii.split('.').all(|l| !l.is_empty() && l.len() <= 63)
}

fn path_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || (c.is_alphabetic() && u32::from(c) < 0x0530) // accented Latin, Greek, Cyrillic
        || "!*';:=+,.$/%#[]-\u{2013}_~|&@?()".contains(c)
}

fn path_end_char(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || (c.is_alphabetic() && u32::from(c) < 0x0530)
        || "=_#/-+&".contains(c)
}

/// The byte ranges of the links in `text`, found the way X finds them: `http://` and
/// `https://` links, and bare domains ending in a known top-level domain (`example.com`,
/// `www.example.co.uk/path`), but not e-mail addresses, `@mentions` or `$cashtags`. A bare
/// two-label domain under a country code (`example.de`) is a link only with a path, as in
/// twitter-text; `.co` and `.tv` are exceptions.
pub fn extract_urls(text: &str) -> Vec<Range<usize>> {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let byte_at = |i: usize| chars.get(i).map_or(text.len(), |(b, _)| *b);
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        match url_at(&chars, i) {
            Some(end) => {
                out.push(byte_at(i)..byte_at(end));
                i = end;
            }
            None => i += 1,
        }
    }
    out
}

fn scheme_len(chars: &[(usize, char)], i: usize) -> Option<usize> {
    for scheme in ["https://", "http://"] {
        let n = scheme.chars().count();
        if chars.len() >= i + n
            && chars[i..i + n]
                .iter()
                .map(|(_, c)| c.to_ascii_lowercase())
                .eq(scheme.chars())
        {
            return Some(n);
        }
    }
    None
}

/// The end (exclusive, in chars) of a link starting at char `i`, if one does.
fn url_at(chars: &[(usize, char)], i: usize) -> Option<usize> {
    let n = chars.len();
    let prev = i.checked_sub(1).map(|p| chars[p].1);
    if prev.is_some_and(blocks_url_after) {
        return None;
    }
    let scheme = scheme_len(chars, i);
    if scheme.is_none() && prev.is_some_and(|p| matches!(p, '-' | '_' | '.' | '/')) {
        return None;
    }
    let domain_start = i + scheme.unwrap_or(0);
    let mut j = domain_start;
    let mut labels: Vec<(usize, usize)> = Vec::new();
    loop {
        let start = j;
        while j < n && is_domain_char(chars[j].1) {
            j += 1;
        }
        if j == start {
            break;
        }
        labels.push((start, j));
        if j + 1 < n && chars[j].1 == '.' && is_domain_char(chars[j + 1].1) {
            j += 1;
            continue;
        }
        break;
    }
    // The rightmost label that is a top-level domain and ends where a domain may end.
    let mut k = labels.len();
    let tld_end = loop {
        if k < 2 {
            return None;
        }
        let (s, e) = labels[k - 1];
        let tld: String = chars[s..e]
            .iter()
            .flat_map(|(_, c)| c.to_lowercase())
            .collect();
        let boundary =
            e == n || !(chars[e].1.is_alphanumeric() || matches!(chars[e].1, '@' | '+' | '-'));
        if boundary && TLDS.all.contains(&tld) {
            break (e, tld);
        }
        k -= 1;
    };
    let (domain_end, tld) = tld_end;
    let labels = &labels[..k];
    if labels
        .iter()
        .any(|(s, e)| chars[*s].1 == '-' || chars[*e - 1].1 == '-')
    {
        return None;
    }
    let domain: String = chars[domain_start..domain_end]
        .iter()
        .map(|(_, c)| c)
        .collect();
    if (scheme.is_none() && !domain.is_ascii()) || !labels_fit(&domain) {
        return None;
    }
    let mut end = domain_end;
    if end + 1 < n && chars[end].1 == ':' && chars[end + 1].1.is_ascii_digit() {
        end += 1;
        while end < n && chars[end].1.is_ascii_digit() {
            end += 1;
        }
    }
    let mut has_path = false;
    if end < n && matches!(chars[end].1, '/' | '?') {
        let mut p = end;
        while p < n && path_char(chars[p].1) {
            p += 1;
        }
        // Trailing punctuation belongs to the sentence, and a `)` only to a balanced pair.
        loop {
            if p <= end {
                break;
            }
            let c = chars[p - 1].1;
            if c == ')' {
                let opens = chars[end..p].iter().filter(|(_, c)| *c == '(').count();
                let closes = chars[end..p].iter().filter(|(_, c)| *c == ')').count();
                if closes <= opens {
                    break;
                }
            } else if path_end_char(c) {
                break;
            }
            p -= 1;
        }
        has_path = p > end + 1 || (p == end + 1 && chars[end].1 == '/');
        end = p.max(end);
    }
    if scheme.is_none()
        && !has_path
        && labels.len() == 2
        && TLDS.country.contains(&tld)
        && tld != "co"
        && tld != "tv"
    {
        return None;
    }
    Some(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(s: &str) -> Vec<&str> {
        extract_urls(s).into_iter().map(|r| &s[r]).collect()
    }

    #[test]
    fn latin_counts_one() {
        assert_eq!(weighted_length("Hello, world!"), 13);
        assert_eq!(weighted_length(&"a".repeat(280)), 280);
        assert!(parse(&"a".repeat(280), 280).valid);
        assert!(!parse(&"a".repeat(281), 280).valid);
        assert_eq!(weighted_length("Ελληνικά кириллица עברית"), 24);
        // General punctuation in the light ranges: en dash, curly quotes, primes.
        assert_eq!(weighted_length("\u{2013}\u{201C}\u{201D}\u{2032}"), 4);
        // The ellipsis is outside them.
        assert_eq!(weighted_length("\u{2026}"), 2);
    }

    #[test]
    fn cjk_counts_two() {
        assert_eq!(weighted_length("你好"), 4);
        assert_eq!(weighted_length("こんにちは"), 10);
        assert_eq!(weighted_length("안녕하세요"), 10);
        assert_eq!(weighted_length("日本語 text"), 11);
        assert!(parse(&"字".repeat(140), 280).valid);
        assert!(!parse(&"字".repeat(141), 280).valid);
        // Outside the BMP, a non-emoji code point is one code point of weight 2.
        assert_eq!(weighted_length("\u{1D400}"), 2);
    }

    #[test]
    fn emoji_count_two_as_a_whole() {
        assert_eq!(weighted_length("😀"), 2);
        assert_eq!(weighted_length("👨‍👩‍👧‍👦"), 2); // ZWJ family: 7 code points
        assert_eq!(weighted_length("👩🏽‍💻"), 2); // ZWJ with a skin tone
        assert_eq!(weighted_length("👍🏽"), 2); // skin tone
        assert_eq!(weighted_length("🇯🇵"), 2); // flag
        assert_eq!(weighted_length("🇯🇵🇫🇷"), 4); // two flags
        assert_eq!(weighted_length("1️⃣"), 2); // keycap
        assert_eq!(weighted_length("❤️"), 2); // text-style heart with VS16
        assert_eq!(
            weighted_length("🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}"),
            2
        );
        assert_eq!(weighted_length("hi 👋🏿!"), 6);
        assert!(parse(&"😀".repeat(140), 280).valid);
        assert!(!parse(&"😀".repeat(141), 280).valid);
    }

    #[test]
    fn nfc_and_decomposed_count_the_same() {
        let composed = "caf\u{E9}";
        let decomposed = "cafe\u{301}";
        assert_eq!(weighted_length(composed), 4);
        assert_eq!(weighted_length(decomposed), 4);
        // Hangul syllables composed from jamo: 2 syllables, not 6 jamo.
        assert_eq!(
            weighted_length("\u{1112}\u{1161}\u{11AB}\u{1100}\u{1173}\u{11AF}"),
            4
        );
        // A combining mark with no precomposed form still counts.
        assert_eq!(weighted_length("q\u{301}"), 2);
    }

    #[test]
    fn urls_count_23() {
        assert_eq!(weighted_length("https://example.com"), 23);
        assert_eq!(
            weighted_length("https://example.com/a/very/long/path/that/goes/on?and=on#frag"),
            23
        );
        assert_eq!(weighted_length("http://t.co"), 23);
        assert_eq!(weighted_length("example.com"), 23);
        assert_eq!(weighted_length("see example.com."), 4 + 23 + 1);
        assert_eq!(weighted_length("www.example.co.uk/x"), 23);
        assert_eq!(
            weighted_length("a https://x.com b http://y.org"),
            2 + 23 + 3 + 23
        );
        let long = format!("https://example.com/{}", "p".repeat(500));
        assert_eq!(weighted_length(&long), 23);
        assert!(parse(&format!("{} {long}", "a".repeat(256)), 280).valid);
    }

    #[test]
    fn what_is_and_is_not_a_url() {
        assert_eq!(urls("go to example.com now"), vec!["example.com"]);
        assert_eq!(
            urls("(see https://en.wikipedia.org/wiki/Rust_(programming_language))"),
            vec!["https://en.wikipedia.org/wiki/Rust_(programming_language)"]
        );
        assert_eq!(
            urls("https://example.com/path, then"),
            vec!["https://example.com/path"]
        );
        assert_eq!(urls("HTTPS://EXAMPLE.COM"), vec!["HTTPS://EXAMPLE.COM"]);
        assert_eq!(urls("example.com:8080/x"), vec!["example.com:8080/x"]);
        assert!(urls("mail me at user@example.com").is_empty());
        assert!(urls("@example.com $example.com #example.com").is_empty());
        assert!(urls("file.txt v1.2.3 e.g. 3.14").is_empty());
        // A two-label country-code domain needs a path; .co and .tv do not.
        assert!(urls("example.de").is_empty());
        assert_eq!(urls("example.de/x"), vec!["example.de/x"]);
        assert_eq!(urls("t.co"), vec!["t.co"]);
        assert_eq!(urls("www.example.de"), vec!["www.example.de"]);
        // With a scheme, Unicode domains are links too.
        assert_eq!(urls("https://例え.jp"), vec!["https://例え.jp"]);
        assert!(urls("例え.jp/x").is_empty());
    }

    /// Cases of twitter-text's conformance suite (`validate.yml`, the v3 sections
    /// `WeightedTweetsWithDiscountedEmojiCounterTest` and `UnicodeDirectionalMarkerCounterTest`).
    #[test]
    fn twitter_text_v3_conformance() {
        let x10 = "xxxxxxxxxx-";
        let cases: Vec<(String, usize, bool)> = vec![
            ("Hi http://test.co".into(), 26, true),
            ("http://test.co".into(), 23, true),
            (format!("285 chars-{}", x10.repeat(25)), 285, false),
            (
                format!("285 chars- http://www.twitter.com/jack {}", x10.repeat(24)),
                299,
                false,
            ),
            (
                format!("{} http://www.twitter.com/jack ", x10.repeat(24)),
                289,
                false,
            ),
            ("https://www.twitter.com/aloha ".repeat(10), 240, true),
            (
                format!("282 chars-{}xxxxxA\u{301}x", x10.repeat(24)),
                281,
                false,
            ),
            (
                "H\u{1F431}\u{263A}\u{1F468}\u{200D}\u{1F469}\u{200D}\u{1F467}\u{200D}\u{1F466}"
                    .into(),
                7,
                true,
            ),
            ("😷👾😡🔥💩".into(), 10, true),
            ("\u{1F64B}\u{1F3FD}\u{1F468}\u{200D}\u{1F3A4}".into(), 4, true),
            ("😷".repeat(160), 320, false),
            ("👨\u{200D}👩\u{200D}👧\u{200D}👦".repeat(140), 280, true),
            (
                "Unicode 10.0 emoji: 🤪; 🧕; 🧕🏾; 🏴\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}"
                    .into(),
                34,
                true,
            ),
            ("Unicode 9.0 emoji: 🤠; 💃; 💃🏾".into(), 29, true),
            (format!("{}s.com", "randomurl".repeat(7)), 68, true),
            (
                format!("{} http://{}あいう.com", "あいうえおかきくけこ".repeat(12), "あいうえおかきくけこ".repeat(5)),
                358,
                false,
            ),
            (
                format!("{} http://{}あい.com", "あいうえおかきくけこ".repeat(12), "あいうえおかきくけこ".repeat(5)),
                264,
                true,
            ),
            ("ABC\u{202A}\u{FFFF}ABC\u{FFFE}".into(), 12, false),
            (
                "\u{2066}\u{202A}http://foobar.\u{67E}\u{627}\u{6A9}\u{633}\u{62A}\u{627}\u{646}/\u{202C}\u{2069}"
                    .into(),
                31,
                true,
            ),
            (
                "This is a tweet with general punctuation characters: \u{2000}\u{2001}\u{2002}\u{2003}\u{2004}\u{2005}\u{2006}\u{2007}\u{2008}\u{2009}\u{200A}\u{200B} \u{2010} \u{2011} \u{2012} \u{2013} \u{2014} \u{2015} \u{2016}  \u{2017} \u{2018} \u{2019} \u{201A} \u{201B} \u{201C} \u{201D} \u{201E} \u{201F} \u{2032} \u{2033} \u{2034} \u{2035} \u{2036} \u{2037}"
                    .into(),
                110,
                true,
            ),
        ];
        for (text, want, valid) in cases {
            let info = parse(&text, 280);
            assert_eq!(info.weighted_length, want, "{text}");
            assert_eq!(info.valid, valid, "{text}");
        }
    }

    #[test]
    fn invalid_characters_and_empty_text() {
        let info = parse("bad \u{FFFE}", 280);
        assert!(info.has_invalid_characters && !info.valid);
        assert!(!parse("", 280).valid);
        assert_eq!(parse(&"a".repeat(140), 280).permillage, 500);
        // Directional marks are allowed (and weigh 2).
        let info = parse("a\u{202A}b\u{202C}", 280);
        assert!(info.valid && !info.has_invalid_characters);
    }
}

/// Properties of the weighted counter and the link finder, on arbitrary text.
#[cfg(test)]
mod props {
    use proptest::prelude::*;
    use unicode_normalization::UnicodeNormalization;

    use super::{extract_urls, parse, weighted_length};

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
}
