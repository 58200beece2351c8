//! BERT-family sentence encoder with sentence-transformers semantics (all-MiniLM-L6-v2 and kin):
//! WordPiece tokens → embeddings (word + position + token type, LayerNorm) → post-LN encoder
//! layers (self-attention with a key-padding mask, GELU feed-forward) → mean pooling over the
//! attention mask → L2 normalisation.
//!
//! References: the BERT paper (https://arxiv.org/abs/1810.04805) and Hugging Face's
//! `modeling_bert.py` for the layer order and names; sentence-transformers' `Pooling` and
//! `Normalize` modules for the output. The float64 numpy re-implementation in
//! `tests/scripts/make_bert_reference.py` is the reference the tests compare against.
//!
//! Split in two so that tokenizing (cheap, on the request's task) and encoding (the GPU thread)
//! do not share a lock: [`BertTokenizer`] turns text into ids, [`BertEncoder`] runs the ids.

use std::str::FromStr;

use hartonomous_kernels::ops::attention::{attention, AttentionMask};
use hartonomous_kernels::ops::elementwise::{binary, unary, BinaryOp, UnaryOp};
use hartonomous_kernels::ops::gather::embedding;
use hartonomous_kernels::ops::matmul::{matmul, Epilogue};
use hartonomous_kernels::ops::norm::layer_norm;
use hartonomous_kernels::ops::pool::mean_pool;
use hartonomous_kernels::{DType, Gpu, Recorder, Tensor};
use serde_json::Value;

use super::{ModelError, NamedLayers};
use crate::pager::Pager;
use crate::store::{LayerRow, ModelMaterial};

/// The hyper-parameters the forward pass needs, from `config.json` and the sentence-transformers
/// companions stored beside it.
#[derive(Debug, Clone, PartialEq)]
pub struct BertConfig {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub layer_norm_eps: f32,
    pub vocab: usize,
    pub type_vocab: usize,
    pub max_positions: usize,
    /// Tokens per input after truncation, [CLS] and [SEP] included: sentence-transformers'
    /// `max_seq_length` where stored (256 for all-MiniLM-L6-v2), else `max_position_embeddings`.
    pub max_tokens: usize,
}

impl BertConfig {
    pub fn from_json(model: &str, config_json: &str) -> Result<Self, ModelError> {
        let bad = |what: String| ModelError::Config { model: model.into(), what };
        let config: Value = serde_json::from_str(config_json).map_err(|e| bad(format!("config is not JSON: {e}")))?;
        let model_type = config.get("model_type").and_then(Value::as_str).unwrap_or("");
        if !matches!(model_type, "bert" | "roberta" | "xlm-roberta") {
            return Err(bad(format!("model_type {model_type:?} is not a BERT-family encoder")));
        }
        let act = config.get("hidden_act").and_then(Value::as_str).unwrap_or("gelu");
        if act != "gelu" {
            return Err(bad(format!("hidden_act {act:?} is not supported (the kernels have exact GELU)")));
        }
        let position_kind = config.get("position_embedding_type").and_then(Value::as_str).unwrap_or("absolute");
        if position_kind != "absolute" {
            return Err(bad(format!("position_embedding_type {position_kind:?} is not supported (only absolute)")));
        }
        let size = |key: &str| -> Result<usize, ModelError> {
            config
                .get(key)
                .and_then(Value::as_u64)
                .filter(|&v| v > 0)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("config has no positive integer `{key}`")))
        };
        let companions = config.get("companions");
        if let Some(pooling) = companions.and_then(|c| c.get("1_Pooling/config.json")) {
            let mean = pooling.get("pooling_mode_mean_tokens").and_then(Value::as_bool).unwrap_or(false);
            if !mean {
                return Err(bad(format!("its pooling configuration is not mean pooling: {pooling}")));
            }
        }
        let max_positions = size("max_position_embeddings")?;
        let max_tokens = companions
            .and_then(|c| c.pointer("/sentence_bert_config.json/max_seq_length"))
            .and_then(Value::as_u64)
            .map_or(max_positions, |v| (v as usize).min(max_positions));
        let (hidden, heads) = (size("hidden_size")?, size("num_attention_heads")?);
        if hidden % heads != 0 {
            return Err(bad(format!("hidden_size {hidden} is not a multiple of num_attention_heads {heads}")));
        }
        Ok(BertConfig {
            hidden,
            layers: size("num_hidden_layers")?,
            heads,
            intermediate: size("intermediate_size")?,
            layer_norm_eps: config.get("layer_norm_eps").and_then(Value::as_f64).unwrap_or(1e-12) as f32,
            vocab: size("vocab_size")?,
            type_vocab: size("type_vocab_size")?,
            max_positions,
            max_tokens: max_tokens.max(2),
        })
    }
}

/// Token ids ready to encode: [CLS] … [SEP], at most `max_tokens`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedInput {
    pub ids: Vec<u32>,
    /// The length before truncation, when the input was truncated.
    pub truncated_from: Option<usize>,
}

/// WordPiece tokenization as the model was trained, from the tokenizer stored with it.
pub struct BertTokenizer {
    model: String,
    tokenizer: tokenizers::Tokenizer,
    max_tokens: usize,
    vocab: usize,
    cls: u32,
    sep: u32,
}

impl BertTokenizer {
    pub fn new(model: &str, material: &ModelMaterial, config: &BertConfig) -> Result<Self, ModelError> {
        let bad = |what: String| ModelError::Tokenizer { model: model.into(), what };
        let json = match (material.tokenizer_kind.as_str(), &material.tokenizer_material) {
            ("hugging_face", Some(json)) => json,
            (kind, _) => return Err(bad(format!("a BERT encoder needs a Hugging Face tokenizer.json; the store holds {kind:?}"))),
        };
        let mut tokenizer = tokenizers::Tokenizer::from_str(json).map_err(|e| bad(format!("tokenizer.json does not load: {e}")))?;
        // tokenizer.json carries truncation at 128 and padding to 128 (FACTS.md): both off, the
        // limit is the model's and padding is the batch's.
        tokenizer.with_truncation(None).map_err(|e| bad(e.to_string()))?;
        tokenizer.with_padding(None);
        let id = |token: &str| tokenizer.token_to_id(token).ok_or_else(|| bad(format!("the vocabulary has no {token}")));
        let (cls, sep) = (id("[CLS]").or_else(|_| id("<s>"))?, id("[SEP]").or_else(|_| id("</s>"))?);
        Ok(BertTokenizer { model: model.into(), tokenizer, max_tokens: config.max_tokens, vocab: config.vocab, cls, sep })
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Text to ids with the special tokens, truncated as sentence-transformers truncates: the
    /// first `max_tokens - 1` ids, then [SEP].
    pub fn encode_text(&self, text: &str) -> Result<TokenizedInput, ModelError> {
        let encoding = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| ModelError::Tokenizer { model: self.model.clone(), what: e.to_string() })?;
        Ok(self.truncate(encoding.get_ids().to_vec()))
    }

    /// Pre-tokenized input (the OpenAI token-array form): the ids of the text without special
    /// tokens; [CLS] and [SEP] are added here.
    pub fn encode_ids(&self, ids: &[u32], index: usize) -> Result<TokenizedInput, ModelError> {
        if let Some(bad) = ids.iter().find(|&&id| id as usize >= self.vocab) {
            return Err(ModelError::Input {
                what: format!("input[{index}] has token id {bad}, but the vocabulary of {} has {} ids", self.model, self.vocab),
            });
        }
        let mut all = Vec::with_capacity(ids.len() + 2);
        all.push(self.cls);
        all.extend_from_slice(ids);
        all.push(self.sep);
        Ok(self.truncate(all))
    }

    fn truncate(&self, mut ids: Vec<u32>) -> TokenizedInput {
        if ids.len() <= self.max_tokens {
            return TokenizedInput { ids, truncated_from: None };
        }
        let original = ids.len();
        let last = ids[original - 1];
        ids.truncate(self.max_tokens - 1);
        ids.push(last);
        TokenizedInput { ids, truncated_from: Some(original) }
    }
}

/// The weights of one encoder layer, by their Hugging Face names.
const LAYER_TENSORS: [&str; 16] = [
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
];

const EMBEDDING_TENSORS: [&str; 5] = [
    "embeddings.word_embeddings.weight",
    "embeddings.position_embeddings.weight",
    "embeddings.token_type_embeddings.weight",
    "embeddings.LayerNorm.weight",
    "embeddings.LayerNorm.bias",
];

/// The forward pass. Holds layer rows, not tensors: the pager decides what is resident.
pub struct BertEncoder {
    model: String,
    config: BertConfig,
    layers: NamedLayers,
}

impl BertEncoder {
    /// Checks that every tensor the forward pass uses is there with the shape the configuration
    /// implies, so that a wrong model fails at load, not mid-request.
    pub fn new(model: &str, config: BertConfig, layers: Vec<LayerRow>) -> Result<Self, ModelError> {
        let layers = NamedLayers::new(model, layers, "bert.");
        let (h, i) = (config.hidden as u64, config.intermediate as u64);
        layers.expect_shape(EMBEDDING_TENSORS[0], &[config.vocab as u64, h])?;
        layers.expect_shape(EMBEDDING_TENSORS[1], &[config.max_positions as u64, h])?;
        layers.expect_shape(EMBEDDING_TENSORS[2], &[config.type_vocab as u64, h])?;
        layers.expect_shape(EMBEDDING_TENSORS[3], &[h])?;
        layers.expect_shape(EMBEDDING_TENSORS[4], &[h])?;
        for l in 0..config.layers {
            for name in LAYER_TENSORS {
                let shape: &[u64] = match name {
                    "attention.self.query.weight" | "attention.self.key.weight" | "attention.self.value.weight" | "attention.output.dense.weight" => &[h, h],
                    "intermediate.dense.weight" => &[i, h],
                    "intermediate.dense.bias" => &[i],
                    "output.dense.weight" => &[h, i],
                    _ => &[h],
                };
                layers.expect_shape(&format!("encoder.layer.{l}.{name}"), shape)?;
            }
        }
        Ok(BertEncoder { model: model.into(), config, layers })
    }

    pub fn config(&self) -> &BertConfig {
        &self.config
    }

    /// Every layer the forward pass reads, for residency planning and tests.
    pub fn weight_layers(&self) -> impl Iterator<Item = &LayerRow> {
        self.layers.iter()
    }

    fn kernel_err(&self) -> impl Fn(hartonomous_kernels::KernelError) -> ModelError + '_ {
        |source| ModelError::Kernel { model: self.model.clone(), source }
    }

    /// Sentence embeddings (mean-pooled, L2-normalised) of a batch of tokenized inputs, one
    /// `hidden`-long vector per input, in order. Inputs are padded to the longest; padding is
    /// masked out of attention and pooling, so an input's embedding does not depend on its
    /// batch-mates. Weights are pinned group by group (embeddings, then each layer) and released
    /// once that group's work is submitted, so a model larger than the budget still runs.
    pub fn embed(&self, pager: &mut Pager, inputs: &[&[u32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let gpu = pager.gpu().clone();
        let ke = self.kernel_err();
        let cfg = &self.config;
        let (b, t, h) = (inputs.len(), inputs.iter().map(|i| i.len()).max().unwrap_or(0).max(1), cfg.hidden);
        if t > cfg.max_tokens {
            return Err(ModelError::Input { what: format!("an input has {t} tokens; at most {} are encoded", cfg.max_tokens) });
        }
        let (mut ids, mut mask) = (vec![0u32; b * t], vec![0u32; b * t]);
        for (row, input) in inputs.iter().enumerate() {
            ids[row * t..row * t + input.len()].copy_from_slice(input);
            mask[row * t..row * t + input.len()].fill(1);
        }
        let positions: Vec<u32> = (0..b * t).map(|i| (i % t) as u32).collect();
        let ids = gpu.upload_u32(&ids, &[b * t]).map_err(&ke)?;
        let mask = gpu.upload_u32(&mask, &[b, t]).map_err(&ke)?;
        let positions = gpu.upload_u32(&positions, &[b * t]).map_err(&ke)?;
        let token_types = gpu.upload_u32(&vec![0u32; b * t], &[b * t]).map_err(&ke)?;

        // Embeddings.
        let names: Vec<&LayerRow> = EMBEDDING_TENSORS.iter().map(|n| self.layers.get(n)).collect::<Result<_, _>>()?;
        let (w, pins) = pager.acquire(&self.model, &names)?;
        let mut x = gpu.empty(&[b * t, h], DType::F32).map_err(&ke)?;
        let recorded = (|| {
            let mut rec = gpu.recorder();
            let scratch = || gpu.empty(&[b * t, h], DType::F32);
            let (word, pos, typ, sum) = (scratch()?, scratch()?, scratch()?, scratch()?);
            embedding(&mut rec, &w[0], &ids, &word)?;
            embedding(&mut rec, &w[1], &positions, &pos)?;
            embedding(&mut rec, &w[2], &token_types, &typ)?;
            binary(&mut rec, BinaryOp::Add, &word, &pos, &sum)?;
            binary(&mut rec, BinaryOp::Add, &sum, &typ, &word)?;
            layer_norm(&mut rec, &word, &w[3], &w[4], cfg.layer_norm_eps, &x)?;
            rec.submit()
        })();
        pager.release(pins);
        recorded.map_err(&ke)?;

        // Encoder layers.
        for l in 0..cfg.layers {
            let names: Vec<&LayerRow> = LAYER_TENSORS
                .iter()
                .map(|n| self.layers.get(&format!("encoder.layer.{l}.{n}")))
                .collect::<Result<_, _>>()?;
            let (w, pins) = pager.acquire(&self.model, &names)?;
            let recorded = self.record_layer(&gpu, &w, &x, &mask, b, t);
            pager.release(pins);
            x = recorded.map_err(&ke)?;
        }

        let pooled = gpu.empty(&[b, h], DType::F32).map_err(&ke)?;
        gpu.run(|rec| mean_pool(rec, &x.reshape(&[b, t, h])?, &mask, true, &pooled)).map_err(&ke)?;
        let flat = gpu.download_f32(&pooled).map_err(&ke)?;
        Ok(flat.chunks(h).map(<[f32]>::to_vec).collect())
    }

    /// One post-LN encoder layer: x ← LN(x + Attn(x)); x ← LN(x + FFN(x)). Recorded into one
    /// command encoder and submitted.
    fn record_layer(&self, gpu: &Gpu, w: &[Tensor], x: &Tensor, mask: &Tensor, b: usize, t: usize) -> hartonomous_kernels::Result<Tensor> {
        let cfg = &self.config;
        let (h, heads) = (cfg.hidden, cfg.heads);
        let d = h / heads;
        let rows = b * t;
        let mut rec: Recorder<'_> = gpu.recorder();
        let (q, k, v) = (gpu.empty(&[rows, h], DType::F32)?, gpu.empty(&[rows, h], DType::F32)?, gpu.empty(&[rows, h], DType::F32)?);
        matmul(&mut rec, x, &w[0], Epilogue { bias: Some(&w[1]), residual: None }, &q)?;
        matmul(&mut rec, x, &w[2], Epilogue { bias: Some(&w[3]), residual: None }, &k)?;
        matmul(&mut rec, x, &w[4], Epilogue { bias: Some(&w[5]), residual: None }, &v)?;
        let context = gpu.empty(&[b, t, heads, d], DType::F32)?;
        let key_mask = AttentionMask { causal: false, q_pos0: 0, key_mask: Some(mask), rows: None };
        attention(
            &mut rec,
            &q.reshape(&[b, t, heads, d])?,
            &k.reshape(&[b, t, heads, d])?,
            &v.reshape(&[b, t, heads, d])?,
            t,
            key_mask,
            1.0 / (d as f32).sqrt(),
            &context,
        )?;
        let attended = gpu.empty(&[rows, h], DType::F32)?;
        matmul(&mut rec, &context.reshape(&[rows, h])?, &w[6], Epilogue { bias: Some(&w[7]), residual: Some(x) }, &attended)?;
        let normed = gpu.empty(&[rows, h], DType::F32)?;
        layer_norm(&mut rec, &attended, &w[8], &w[9], cfg.layer_norm_eps, &normed)?;
        let inner = gpu.empty(&[rows, cfg.intermediate], DType::F32)?;
        matmul(&mut rec, &normed, &w[10], Epilogue { bias: Some(&w[11]), residual: None }, &inner)?;
        let activated = gpu.empty(&[rows, cfg.intermediate], DType::F32)?;
        unary(&mut rec, UnaryOp::Gelu, &inner, &activated)?;
        let out = gpu.empty(&[rows, h], DType::F32)?;
        matmul(&mut rec, &activated, &w[12], Epilogue { bias: Some(&w[13]), residual: Some(&normed) }, &out)?;
        let next = gpu.empty(&[rows, h], DType::F32)?;
        layer_norm(&mut rec, &out, &w[14], &w[15], cfg.layer_norm_eps, &next)?;
        rec.submit()?;
        Ok(next)
    }
}
