//! The tokenizer of a GGUF model, built from the `tokenizer.ggml.*` metadata the store keeps:
//! GPT-2 byte-level BPE (`tokenizer.ggml.model = "gpt2"`) through the `tokenizers` crate, with
//! llama.cpp's pre-tokenizer named by `tokenizer.ggml.pre` and the CONTROL tokens (type 3)
//! matched whole as special tokens.
//!
//! Pre-tokenizers follow llama.cpp's `llama-vocab.cpp`: `smollm` splits every digit off on its
//! own, then runs the GPT-2 regex (FACTS.md); `gpt2` and the default run the GPT-2 regex alone.
//! Others (Llama 3's, Qwen2's) are refused by name until added, rather than guessed.

use serde_json::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::{AddedToken, Tokenizer};

use super::ModelError;

/// GGUF token type of control tokens (`<|im_start|>`, `<|endoftext|>`, ...).
const TOKEN_TYPE_CONTROL: i64 = 3;

/// A GGUF model's tokenizer with its special ids.
pub struct GgufTokenizer {
    model: String,
    tokenizer: Tokenizer,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub add_bos: bool,
    /// The Jinja chat template, when the GGUF has one.
    pub chat_template: Option<String>,
    /// CONTROL tokens' ids, sorted: generating one ends a sequence (`<|im_end|>`, ...).
    control_ids: Vec<u32>,
    vocab_size: usize,
}

impl GgufTokenizer {
    /// Builds the tokenizer from the GGUF `tokenizer.*` metadata as JSON text.
    pub fn from_metadata(model: &str, material: &str) -> Result<Self, ModelError> {
        let bad = |what: String| ModelError::Tokenizer { model: model.into(), what };
        let meta: Value = serde_json::from_str(material).map_err(|e| bad(format!("metadata is not JSON: {e}")))?;
        let kind = meta.get("tokenizer.ggml.model").and_then(Value::as_str).unwrap_or("");
        if kind != "gpt2" {
            return Err(bad(format!("tokenizer.ggml.model {kind:?} is not supported (only gpt2 byte-level BPE)")));
        }
        let strings = |key: &str| -> Result<Vec<String>, ModelError> {
            meta.get(key)
                .and_then(Value::as_array)
                .ok_or_else(|| bad(format!("metadata has no array `{key}`")))?
                .iter()
                .map(|v| v.as_str().map(str::to_string).ok_or_else(|| bad(format!("`{key}` holds a non-string"))))
                .collect()
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let merges: Vec<(String, String)> = strings("tokenizer.ggml.merges")?
            .into_iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| bad(format!("merge {i} ({m:?}) is not two tokens separated by a space")))
            })
            .collect::<Result<_, _>>()?;
        let vocab: Vocab = tokens.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(|e| bad(format!("the BPE does not build: {e}")))?;
        let mut tokenizer = Tokenizer::new(bpe);
        let byte_level = ByteLevel::new(false, false, true);
        let pre = meta.get("tokenizer.ggml.pre").and_then(Value::as_str).unwrap_or("default");
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "gpt2" | "default" => byte_level.into(),
            other => return Err(bad(format!("pre-tokenizer {other:?} is not supported yet (smollm, gpt2)"))),
        };
        tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
        tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
        let types = meta.get("tokenizer.ggml.token_type").and_then(Value::as_array);
        let control: Vec<AddedToken> = types
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(_, t)| t.as_i64() == Some(TOKEN_TYPE_CONTROL))
            .filter_map(|(i, _)| tokens.get(i))
            .map(|t| AddedToken::from(t.clone(), true).normalized(false))
            .collect();
        tokenizer.add_special_tokens(&control);
        let control_ids: Vec<u32> = types
            .into_iter()
            .flatten()
            .enumerate()
            .filter(|(_, t)| t.as_i64() == Some(TOKEN_TYPE_CONTROL))
            .map(|(i, _)| i as u32)
            .collect();
        let id = |key: &str| meta.get(key).and_then(Value::as_u64).map(|v| v as u32);
        Ok(GgufTokenizer {
            model: model.into(),
            tokenizer,
            bos: id("tokenizer.ggml.bos_token_id"),
            eos: id("tokenizer.ggml.eos_token_id"),
            add_bos: meta.get("tokenizer.ggml.add_bos_token").and_then(Value::as_bool).unwrap_or(false),
            chat_template: meta.get("tokenizer.chat_template").and_then(Value::as_str).map(str::to_string),
            control_ids,
            vocab_size: tokens.len(),
        })
    }

    /// Tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Whether `id` is a CONTROL token (end of turn, end of text, ...), never part of a text.
    pub fn is_control(&self, id: u32) -> bool {
        self.control_ids.binary_search(&id).is_ok()
    }

    /// Token ids of `text`, control tokens in it matched whole; BOS first when the model asks.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        let encoding = self
            .tokenizer
            .encode(text, false)
            .map_err(|e| ModelError::Tokenizer { model: self.model.clone(), what: e.to_string() })?;
        let mut ids = Vec::with_capacity(encoding.len() + 1);
        if let (true, Some(bos)) = (self.add_bos, self.bos) {
            ids.push(bos);
        }
        ids.extend_from_slice(encoding.get_ids());
        Ok(ids)
    }

    /// The text of `ids`, special tokens included.
    pub fn decode(&self, ids: &[u32]) -> Result<String, ModelError> {
        self.tokenizer
            .decode(ids, false)
            .map_err(|e| ModelError::Tokenizer { model: self.model.clone(), what: e.to_string() })
    }
}
