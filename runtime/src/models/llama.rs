//! Llama-family decoder (SmolLM2, Llama 3.x, TinyLlama) on GGUF weights as stored: RMSNorm,
//! RoPE in the GGUF convention (adjacent pairs: GGUF permutes Q and K for llama.cpp's rope type
//! NORM), grouped-query attention over a per-sequence KV cache on the GPU, SwiGLU MLP, and the
//! output layer tied to `token_embd` when `output.weight` is absent. Quantized matrices are read
//! by the kernels in their stored blocks: no dequantized copy of a weight exists anywhere.
//!
//! Reference: Meta's Llama paper (https://arxiv.org/abs/2302.13971) and llama.cpp's
//! `llm_build_llama`; the float64 numpy re-implementation in
//! `tests/scripts/make_llama_reference.py` is what the tests compare against.

use hartonomous_kernels::ops::attention::{attention, AttentionMask};
use hartonomous_kernels::ops::gather::embedding;
use hartonomous_kernels::ops::matmul::Epilogue;
use hartonomous_kernels::ops::qmatmul::{qmatmul, qmatmul_input, Input, Product};
use hartonomous_kernels::ops::rope::{rope_append, RopeAppend, RopeLayout, RopeTable};
use hartonomous_kernels::{DType, Gpu, Tensor};
use serde_json::Value;

use super::{ModelError, NamedLayers};
use crate::pager::Pager;
use crate::store::LayerRow;

/// Hyper-parameters from the GGUF metadata stored with the model (`{arch}.*` keys).
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    pub layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub rope_dims: usize,
    pub rope_base: f64,
    pub rms_eps: f32,
    pub context: usize,
    pub vocab: usize,
}

impl LlamaConfig {
    pub fn from_json(model: &str, config_json: &str) -> Result<Self, ModelError> {
        let bad = |what: String| ModelError::Config { model: model.into(), what };
        let config: Value = serde_json::from_str(config_json).map_err(|e| bad(format!("config is not JSON: {e}")))?;
        let arch = config.get("general.architecture").and_then(Value::as_str).unwrap_or("");
        if arch != "llama" {
            return Err(bad(format!("general.architecture {arch:?} is not llama")));
        }
        let size = |key: &str| -> Result<usize, ModelError> {
            config
                .get(format!("{arch}.{key}"))
                .and_then(Value::as_u64)
                .filter(|&v| v > 0)
                .map(|v| v as usize)
                .ok_or_else(|| bad(format!("GGUF metadata has no positive integer `{arch}.{key}`")))
        };
        let (hidden, heads) = (size("embedding_length")?, size("attention.head_count")?);
        let kv_heads = size("attention.head_count_kv").unwrap_or(heads);
        if hidden % heads != 0 || heads % kv_heads != 0 {
            return Err(bad(format!("{heads} heads over {kv_heads} KV heads do not divide embedding length {hidden}")));
        }
        let head_dim = hidden / heads;
        let rope_dims = size("rope.dimension_count").unwrap_or(head_dim);
        let float = |key: &str| config.get(format!("{arch}.{key}")).and_then(Value::as_f64);
        Ok(LlamaConfig {
            layers: size("block_count")?,
            hidden,
            ffn: size("feed_forward_length")?,
            heads,
            kv_heads,
            head_dim,
            rope_dims,
            rope_base: float("rope.freq_base").unwrap_or(10_000.0),
            rms_eps: float("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32,
            context: size("context_length")?,
            vocab: size("vocab_size").unwrap_or(0),
        })
    }
}

/// One block's weights, in the order [`LlamaModel::forward`] binds them.
const BLOCK_TENSORS: [&str; 9] = [
    "attn_norm.weight",
    "attn_q.weight",
    "attn_k.weight",
    "attn_v.weight",
    "attn_output.weight",
    "ffn_norm.weight",
    "ffn_gate.weight",
    "ffn_up.weight",
    "ffn_down.weight",
];

/// Keys and values of up to `slots` sequences, one pool per layer, each
/// [slots, capacity, kv_heads, head_dim]: a sequence owns a slot while it runs, a step appends
/// its rows at the sequence's length and never moves the others, and concurrent sequences of
/// different lengths decode in one batch (the kernels read each row's slot and position).
pub struct KvPool {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    slots: usize,
    capacity: usize,
}

impl KvPool {
    pub fn slots(&self) -> usize {
        self.slots
    }

    /// Tokens (prompt and completion) one slot holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of GPU memory the pool holds.
    pub fn bytes(&self) -> u64 {
        self.k.iter().chain(&self.v).map(Tensor::byte_len).sum()
    }
}

/// One sequence's share of a [`LlamaModel::step`]: `ids` run at positions `position..` of the
/// sequence cached in `slot`.
#[derive(Debug, Clone, Copy)]
pub struct SequenceStep<'a> {
    pub slot: usize,
    pub position: usize,
    pub ids: &'a [u32],
}

/// A single sequence's cache: a pool of one slot and the number of tokens cached so far.
pub struct KvCache {
    pool: KvPool,
    len: usize,
}

impl KvCache {
    /// Tokens cached so far (the position of the next token).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.pool.capacity
    }

    /// Bytes of GPU memory the cache holds.
    pub fn bytes(&self) -> u64 {
        self.pool.bytes()
    }
}

pub struct LlamaModel {
    model: String,
    config: LlamaConfig,
    layers: NamedLayers,
    /// `output.weight`, or `token_embd.weight` when the output layer is tied.
    output_name: &'static str,
    rope: RopeTable,
}

impl LlamaModel {
    /// Checks every tensor the forward pass reads against the configuration and builds the RoPE
    /// table (cos/sin in f64, for every position of the context).
    pub fn new(model: &str, mut config: LlamaConfig, layers: Vec<LayerRow>, gpu: &Gpu) -> Result<Self, ModelError> {
        let layers = NamedLayers::new(model, layers, "");
        let embd = layers.get("token_embd.weight")?;
        let vocab = embd.shape.first().copied().unwrap_or(0) as usize;
        if config.vocab == 0 {
            config.vocab = vocab;
        }
        let (h, f, v) = (config.hidden as u64, config.ffn as u64, config.vocab as u64);
        let kv = (config.kv_heads * config.head_dim) as u64;
        layers.expect_shape("token_embd.weight", &[v, h])?;
        layers.expect_shape("output_norm.weight", &[h])?;
        let output_name = if layers.get("output.weight").is_ok() {
            layers.expect_shape("output.weight", &[v, h])?;
            "output.weight"
        } else {
            "token_embd.weight"
        };
        for b in 0..config.layers {
            for (name, shape) in BLOCK_TENSORS.iter().zip([
                vec![h],
                vec![h, h],
                vec![kv, h],
                vec![kv, h],
                vec![h, h],
                vec![h],
                vec![f, h],
                vec![f, h],
                vec![h, f],
            ]) {
                layers.expect_shape(&format!("blk.{b}.{name}"), &shape)?;
            }
        }
        let rope = RopeTable::new(gpu, config.rope_base, config.rope_dims, config.context)
            .map_err(|source| ModelError::Kernel { model: model.into(), source })?;
        Ok(LlamaModel { model: model.into(), config, layers, output_name, rope })
    }

    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// An empty pool of `slots` sequence caches of `capacity` tokens (prompt and completion).
    pub fn new_pool(&self, gpu: &Gpu, slots: usize, capacity: usize) -> Result<KvPool, ModelError> {
        if capacity == 0 || capacity > self.config.context {
            return Err(ModelError::Input {
                what: format!("a sequence of {capacity} tokens does not fit the context of {} tokens", self.config.context),
            });
        }
        if slots == 0 {
            return Err(ModelError::Input { what: "a KV pool needs at least one slot".into() });
        }
        let shape = [slots, capacity, self.config.kv_heads, self.config.head_dim];
        let ke = |source| ModelError::Kernel { model: self.model.clone(), source };
        let mut k = Vec::with_capacity(self.config.layers);
        let mut v = Vec::with_capacity(self.config.layers);
        for _ in 0..self.config.layers {
            k.push(gpu.empty(&shape, DType::F32).map_err(ke)?);
            v.push(gpu.empty(&shape, DType::F32).map_err(ke)?);
        }
        Ok(KvPool { k, v, slots, capacity })
    }

    /// An empty KV cache for one sequence of at most `capacity` tokens.
    pub fn new_cache(&self, gpu: &Gpu, capacity: usize) -> Result<KvCache, ModelError> {
        Ok(KvCache { pool: self.new_pool(gpu, 1, capacity)?, len: 0 })
    }

    /// Runs `ids` at positions `cache.len()..` of a single sequence, appending their keys and
    /// values, and returns the logits ([T, vocab] row-major when `all_logits`, else the last row).
    pub fn forward(&self, pager: &mut Pager, cache: &mut KvCache, ids: &[u32], all_logits: bool) -> Result<Vec<f32>, ModelError> {
        let step = SequenceStep { slot: 0, position: cache.len, ids };
        let logits = self.step(pager, &cache.pool, &[step], all_logits)?;
        cache.len += ids.len();
        Ok(logits)
    }

    /// Runs one step of several sequences at once, each `ids` at its positions in its own slot
    /// of `pool` (every sequence the same number of tokens: a prefill of one prompt, or one
    /// decode token of each of B sequences), appending their keys and values. Returns logits
    /// [B, vocab] for each sequence's last token, or [B·T, vocab] for every token when
    /// `all_logits`. Each row's arithmetic is independent of the other rows in the step.
    pub fn step(&self, pager: &mut Pager, pool: &KvPool, seqs: &[SequenceStep<'_>], all_logits: bool) -> Result<Vec<f32>, ModelError> {
        let cfg = &self.config;
        let b = seqs.len();
        let t = seqs.first().map_or(0, |s| s.ids.len());
        if t == 0 {
            return Err(ModelError::Input { what: "no tokens to run".into() });
        }
        let mut used = vec![false; pool.slots];
        for seq in seqs {
            if seq.ids.len() != t {
                return Err(ModelError::Input {
                    what: format!("a step runs the same number of tokens for every sequence ({} and {t} given)", seq.ids.len()),
                });
            }
            if seq.slot >= pool.slots || std::mem::replace(&mut used[seq.slot], true) {
                return Err(ModelError::Input { what: format!("slot {} is outside the pool's {} or used twice in one step", seq.slot, pool.slots) });
            }
            if seq.position + t > pool.capacity {
                return Err(ModelError::Input {
                    what: format!("{} cached and {t} new tokens exceed the sequence's capacity of {}", seq.position, pool.capacity),
                });
            }
            if let Some(bad) = seq.ids.iter().find(|&&id| id as usize >= cfg.vocab) {
                return Err(ModelError::Input { what: format!("token id {bad} is outside the vocabulary of {}", cfg.vocab) });
            }
        }
        let gpu = pager.gpu().clone();
        let ke = |source| ModelError::Kernel { model: self.model.clone(), source };
        let (h, d) = (cfg.hidden, cfg.head_dim);
        let kv = cfg.kv_heads * d;
        let n = b * t;
        let ids: Vec<u32> = seqs.iter().flat_map(|s| s.ids.iter().copied()).collect();
        let positions: Vec<u32> = seqs.iter().flat_map(|s| (s.position..s.position + t).map(|p| p as u32)).collect();
        let rows: Vec<u32> = seqs.iter().flat_map(|s| [s.slot as u32, s.position as u32]).collect();
        let ids_t = gpu.upload_u32(&ids, &[n]).map_err(ke)?;
        let positions = gpu.upload_u32(&positions, &[n]).map_err(ke)?;
        let rows = gpu.upload_u32(&rows, &[b, 2]).map_err(ke)?;

        let embd = self.layers.get("token_embd.weight")?;
        let (w, pins) = pager.acquire(&self.model, &[embd])?;
        let mut x = gpu.empty(&[n, h], DType::F32).map_err(ke)?;
        let recorded = gpu.run(|rec| embedding(rec, &w[0], &ids_t, &x));
        pager.release(pins);
        recorded.map_err(ke)?;

        for layer in 0..cfg.layers {
            let names: Vec<&LayerRow> =
                BLOCK_TENSORS.iter().map(|name| self.layers.get(&format!("blk.{layer}.{name}"))).collect::<Result<_, _>>()?;
            let (w, pins) = pager.acquire(&self.model, &names)?;
            let recorded = (|| -> hartonomous_kernels::Result<Tensor> {
                let mut rec = gpu.recorder();
                let none = Epilogue::default();
                // The norms and the SwiGLU gate feed the projections after them without a
                // dispatch of their own where the adapter's matmul fuses them (`qmatmul_input`).
                let (q, k, v) = (gpu.empty(&[n, h], DType::F32)?, gpu.empty(&[n, kv], DType::F32)?, gpu.empty(&[n, kv], DType::F32)?);
                let attn_norm = Input::RmsNorm { x: &x, weight: &w[0], eps: cfg.rms_eps };
                let qkv = [(&w[1], &q), (&w[2], &k), (&w[3], &v)].map(|(w, out)| Product { w, epilogue: none, out });
                qmatmul_input(&mut rec, attn_norm, &qkv)?;
                // Rotate q, and append the rotated k and v to this layer's caches: one dispatch.
                let q_r = gpu.empty(&[n, cfg.heads, d], DType::F32)?;
                rope_append(
                    &mut rec,
                    &RopeAppend {
                        q: &q.reshape(&[n, cfg.heads, d])?,
                        k: &k.reshape(&[n, cfg.kv_heads, d])?,
                        v: &v.reshape(&[n, cfg.kv_heads, d])?,
                        positions: &positions,
                        table: &self.rope,
                        layout: RopeLayout::Interleaved,
                        rows: &rows,
                        q_out: &q_r,
                        k_cache: &pool.k[layer],
                        v_cache: &pool.v[layer],
                    },
                )?;
                let context = gpu.empty(&[b, t, cfg.heads, d], DType::F32)?;
                let mask = AttentionMask { causal: true, q_pos0: 0, key_mask: None, rows: Some(&rows) };
                let scale = 1.0 / (d as f32).sqrt();
                let q_r = q_r.reshape(&[b, t, cfg.heads, d])?;
                attention(&mut rec, &q_r, &pool.k[layer], &pool.v[layer], pool.capacity, mask, scale, &context)?;
                let attended = gpu.empty(&[n, h], DType::F32)?;
                qmatmul(&mut rec, &context.reshape(&[n, h])?, &w[4], Epilogue { bias: None, residual: Some(&x) }, &attended)?;
                let (gate, up) = (gpu.empty(&[n, cfg.ffn], DType::F32)?, gpu.empty(&[n, cfg.ffn], DType::F32)?);
                let ffn_norm = Input::RmsNorm { x: &attended, weight: &w[5], eps: cfg.rms_eps };
                let gate_up = [(&w[6], &gate), (&w[7], &up)].map(|(w, out)| Product { w, epilogue: none, out });
                qmatmul_input(&mut rec, ffn_norm, &gate_up)?;
                let out = gpu.empty(&[n, h], DType::F32)?;
                let down = Product { w: &w[8], epilogue: Epilogue { bias: None, residual: Some(&attended) }, out: &out };
                qmatmul_input(&mut rec, Input::SwiGlu { gate: &gate, up: &up }, &[down])?;
                rec.submit()?;
                Ok(out)
            })();
            pager.release(pins);
            x = recorded.map_err(ke)?;
        }

        // Final norm and logits, for every row or only each sequence's last.
        let logit_rows = if all_logits { n } else { b };
        let last = if all_logits || t == 1 {
            x
        } else {
            let last_rows: Vec<u32> = (0..b).map(|i| (i * t + t - 1) as u32).collect();
            let last_rows = gpu.upload_u32(&last_rows, &[b]).map_err(ke)?;
            let last = gpu.empty(&[b, h], DType::F32).map_err(ke)?;
            gpu.run(|rec| embedding(rec, &x, &last_rows, &last)).map_err(ke)?;
            last
        };
        let names = [self.layers.get("output_norm.weight")?, self.layers.get(self.output_name)?];
        let (w, pins) = pager.acquire(&self.model, &names)?;
        let logits = gpu.empty(&[logit_rows, cfg.vocab], DType::F32).map_err(ke)?;
        let recorded = (|| -> hartonomous_kernels::Result<()> {
            let mut rec = gpu.recorder();
            let output_norm = Input::RmsNorm { x: &last, weight: &w[0], eps: cfg.rms_eps };
            qmatmul_input(&mut rec, output_norm, &[Product { w: &w[1], epilogue: Epilogue::default(), out: &logits }])?;
            rec.submit()
        })();
        pager.release(pins);
        recorded.map_err(ke)?;
        gpu.download_f32(&logits).map_err(ke)
    }
}
