//! The benchmark's input: deterministic English-word sentences that are each exactly
//! [`SENTENCE_TOKENS`] WordPiece tokens for all-MiniLM-L6-v2, [CLS] and [SEP] included.
//!
//! Every word below is one token of the model's uncased vocabulary (checked once with the
//! `tokenizers` Python package against the model's `tokenizer.json`, no truncation, no padding),
//! and BERT's pre-tokenizer splits on spaces and punctuation, so a sentence of 29 words and a
//! full stop is 30 tokens plus the two special ones. Sentences differ by index so that a server
//! cannot answer from a cache; the load client and the candle peer use the same ones, and both
//! check the count at run time (the client against `usage.prompt_tokens`, the peer against its
//! tokenizer) rather than trust this comment.

/// Tokens in every sentence, [CLS] and [SEP] included.
pub const SENTENCE_TOKENS: usize = 32;

/// Words per sentence: [`SENTENCE_TOKENS`] less [CLS], [SEP] and the full stop.
const WORDS: usize = SENTENCE_TOKENS - 3;

/// Common lowercase words that are each a single WordPiece token of all-MiniLM-L6-v2's vocabulary.
const VOCABULARY: &[&str] = &[
    "the", "a", "an", "and", "or", "but", "of", "to", "in", "on", "at", "by", "for", "with", "from", "over",
    "under", "after", "before", "cat", "dog", "bird", "fish", "horse", "cow", "man", "woman", "child", "boy",
    "girl", "friend", "teacher", "doctor", "farmer", "king", "queen", "house", "home", "car", "road", "river",
    "sea", "lake", "hill", "tree", "garden", "park", "city", "town", "village", "school", "church", "market",
    "table", "chair", "door", "window", "book", "letter", "paper", "water", "food", "bread", "milk", "tea",
    "coffee", "fire", "light", "sun", "moon", "star", "sat", "ran", "walked", "looked", "saw", "took", "gave",
    "made", "found", "kept", "left", "came", "went", "said", "told", "asked", "heard", "felt", "red", "blue",
    "green", "white", "black", "old", "new", "small", "big", "long", "short", "good", "bad", "happy", "quiet",
    "warm", "cold", "dark", "bright", "morning", "evening", "night", "day", "week", "year", "time", "way",
    "hand", "head", "eye", "face", "word", "story", "song", "game", "every", "some", "many", "few", "each",
    "this", "that", "his", "her", "their", "our", "my", "your", "its", "slowly", "quickly", "always", "never",
    "often", "again", "soon", "then", "there", "here", "now",
];

/// Sentence number `index`: 29 words drawn from [`VOCABULARY`] by a generator seeded with the
/// index, then a full stop. The same index gives the same sentence on every machine and run.
pub fn sentence(index: u64) -> String {
    // splitmix64: a well-mixed stream from a counter, so neighbouring indices share no pattern.
    let mut state = index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut text = String::with_capacity(WORDS * 8);
    for i in 0..WORDS {
        if i > 0 {
            text.push(' ');
        }
        // The modulo bias over 149 words is ~1e-17: irrelevant for a benchmark input.
        text.push_str(VOCABULARY[(next() % VOCABULARY.len() as u64) as usize]);
    }
    text.push('.');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentences_are_deterministic_distinct_and_29_words() {
        assert_eq!(sentence(7), sentence(7));
        let all: std::collections::HashSet<String> = (0..10_000).map(sentence).collect();
        assert_eq!(all.len(), 10_000, "sentences repeat, so a cache could answer some");
        for s in all.iter().take(100) {
            assert_eq!(s.trim_end_matches('.').split(' ').count(), WORDS, "{s}");
            assert!(s.ends_with('.'));
        }
    }

    #[test]
    fn vocabulary_is_lowercase_single_words_without_duplicates() {
        let unique: std::collections::HashSet<&str> = VOCABULARY.iter().copied().collect();
        assert_eq!(unique.len(), VOCABULARY.len());
        assert!(VOCABULARY.iter().all(|w| !w.is_empty() && w.chars().all(|c| c.is_ascii_lowercase())));
    }
}
