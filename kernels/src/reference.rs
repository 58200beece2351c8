//! Plain CPU references for every kernel, accumulating in f64. They define the semantics the
//! kernels are tested against; they are written for clarity, not speed.

/// GELU, erf form: x·Φ(x) = ½x(1 + erf(x/√2)).
pub fn gelu(x: f32) -> f64 {
    let x = f64::from(x);
    0.5 * x * (1.0 + libm::erf(x / std::f64::consts::SQRT_2))
}

/// SiLU: x·sigmoid(x).
pub fn silu(x: f32) -> f64 {
    let x = f64::from(x);
    x / (1.0 + (-x).exp())
}

/// `a op b` with b repeated along a (b's length divides a's).
pub fn binary(a: &[f32], b: &[f32], op: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    a.iter().enumerate().map(|(i, &x)| op(f64::from(x), f64::from(b[i % b.len()]))).collect()
}

/// LayerNorm over rows of `cols`.
pub fn layer_norm(x: &[f32], weight: &[f32], bias: &[f32], eps: f32) -> Vec<f64> {
    let cols = weight.len();
    x.chunks(cols)
        .flat_map(|row| {
            let n = cols as f64;
            let mean = row.iter().map(|&v| f64::from(v)).sum::<f64>() / n;
            let var = row.iter().map(|&v| (f64::from(v) - mean).powi(2)).sum::<f64>() / n;
            let inv = 1.0 / (var + f64::from(eps)).sqrt();
            row.iter()
                .enumerate()
                .map(move |(c, &v)| (f64::from(v) - mean) * inv * f64::from(weight[c]) + f64::from(bias[c]))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// RMSNorm over rows of `cols`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f64> {
    let cols = weight.len();
    x.chunks(cols)
        .flat_map(|row| {
            let ms = row.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / cols as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            row.iter().enumerate().map(move |(c, &v)| f64::from(v) * inv * f64::from(weight[c])).collect::<Vec<_>>()
        })
        .collect()
}

/// Softmax of scale·x over rows of `cols`; `mask` ([mask_rows, cols], 0 = masked) as in the
/// kernel: row r uses mask row r / (rows / mask_rows). Fully masked rows are zeros.
pub fn softmax(x: &[f32], cols: usize, mask: Option<&[u32]>, scale: f32) -> Vec<f64> {
    let rows = x.len() / cols;
    let rows_per_mask = mask.map(|m| rows / (m.len() / cols));
    let mut out = Vec::with_capacity(x.len());
    for (r, row) in x.chunks(cols).enumerate() {
        let kept = |c: usize| match (mask, rows_per_mask) {
            (Some(m), Some(per)) => m[(r / per) * cols + c] != 0,
            _ => true,
        };
        let logits: Vec<f64> = row.iter().map(|&v| f64::from(scale) * f64::from(v)).collect();
        let max = (0..cols).filter(|&c| kept(c)).map(|c| logits[c]).fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = (0..cols).filter(|&c| kept(c)).map(|c| (logits[c] - max).exp()).sum();
        out.extend((0..cols).map(|c| if kept(c) && sum > 0.0 { (logits[c] - max).exp() / sum } else { 0.0 }));
    }
    out
}

/// Batched A·Wᵀ (+ bias) (+ residual): `a` [batch, m, k], `w` [n, k] shared or [batch, n, k].
/// Also returns, per output, Σ|a·w| over k: the scale that f32 rounding error is relative to.
#[allow(clippy::too_many_arguments)] // the operands and shape of one kernel call, each named
pub fn matmul(
    a: &[f32],
    w: &[f32],
    batch: usize,
    m: usize,
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let w_batched = w.len() == batch * n * k && batch > 1;
    let mut out = vec![0.0; batch * m * n];
    let mut scale = vec![0.0; batch * m * n];
    for b in 0..batch {
        let wb = if w_batched { &w[b * n * k..(b + 1) * n * k] } else { w };
        for i in 0..m {
            let row = &a[(b * m + i) * k..(b * m + i + 1) * k];
            for j in 0..n {
                let col = &wb[j * k..(j + 1) * k];
                let (mut s, mut mag) = (0.0f64, 0.0f64);
                for (x, y) in row.iter().zip(col) {
                    let t = f64::from(*x) * f64::from(*y);
                    s += t;
                    mag += t.abs();
                }
                let o = (b * m + i) * n + j;
                if let Some(bias) = bias {
                    s += f64::from(bias[j]);
                    mag += f64::from(bias[j]).abs();
                }
                if let Some(res) = residual {
                    s += f64::from(res[o]);
                    mag += f64::from(res[o]).abs();
                }
                out[o] = s;
                scale[o] = mag;
            }
        }
    }
    (out, scale)
}

/// Mean of `hidden` [b, s, h] over unmasked positions, then L2-normalised (max(‖v‖, 1e-12)).
pub fn mean_pool(hidden: &[f32], mask: &[u32], b: usize, s: usize, h: usize, normalize: bool) -> Vec<f64> {
    let mut out = vec![0.0; b * h];
    for bi in 0..b {
        let kept: Vec<usize> = (0..s).filter(|&si| mask[bi * s + si] != 0).collect();
        let row = &mut out[bi * h..(bi + 1) * h];
        if kept.is_empty() {
            continue;
        }
        for (hi, o) in row.iter_mut().enumerate() {
            *o = kept.iter().map(|&si| f64::from(hidden[(bi * s + si) * h + hi])).sum::<f64>() / kept.len() as f64;
        }
        if normalize {
            let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    out
}

/// The RoPE table: for each position and pair i < rotary/2, (cos θ, sin θ) with
/// θ = position · base^(-2i/rotary), in f64 rounded to f32.
pub fn rope_cos_sin(base: f64, rotary: usize, max_positions: usize) -> Vec<f32> {
    let half = rotary / 2;
    let mut out = Vec::with_capacity(max_positions * half * 2);
    for pos in 0..max_positions {
        for i in 0..half {
            let theta = pos as f64 * base.powf(-2.0 * i as f64 / rotary as f64);
            out.push(theta.cos() as f32);
            out.push(theta.sin() as f32);
        }
    }
    out
}

/// RoPE of `x` [t, heads, d] at `positions`, angles in f64; `interleaved` pairs (2i, 2i+1),
/// otherwise (i, i + rotary/2); dimensions past `rotary` unchanged.
pub fn rope(x: &[f32], positions: &[u32], heads: usize, d: usize, rotary: usize, base: f64, interleaved: bool) -> Vec<f64> {
    let mut out: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    let half = rotary / 2;
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..heads {
            let at = (t * heads + h) * d;
            for i in 0..half {
                let theta = f64::from(pos) * base.powf(-2.0 * i as f64 / rotary as f64);
                let (i0, i1) = if interleaved { (at + 2 * i, at + 2 * i + 1) } else { (at + i, at + i + half) };
                let (x0, x1) = (f64::from(x[i0]), f64::from(x[i1]));
                out[i0] = x0 * theta.cos() - x1 * theta.sin();
                out[i1] = x0 * theta.sin() + x1 * theta.cos();
            }
        }
    }
    out
}

/// Attention in f64 with the kernel's conventions (see `ops::attention`). Returns the outputs
/// and, per output, Σ p·|v| (the magnitude f32 rounding is relative to).
#[allow(clippy::too_many_arguments)]
pub fn attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    key_mask: Option<&[u32]>,
    (b, t, heads, d): (usize, usize, usize, usize),
    (capacity, kv_heads, kv_len): (usize, usize, usize),
    causal: bool,
    q_pos0: usize,
    scale: f32,
) -> (Vec<f64>, Vec<f64>) {
    let mut out = vec![0.0; b * t * heads * d];
    let mut mag = vec![0.0; b * t * heads * d];
    for bi in 0..b {
        for ti in 0..t {
            for h in 0..heads {
                let kvh = h / (heads / kv_heads);
                let qrow = &q[((bi * t + ti) * heads + h) * d..][..d];
                let limit = if causal { kv_len.min(q_pos0 + ti + 1) } else { kv_len };
                let keys: Vec<usize> = (0..limit).filter(|&s| key_mask.is_none_or(|m| m[bi * capacity + s] != 0)).collect();
                let at = |s: usize| ((bi * capacity + s) * kv_heads + kvh) * d;
                let scores: Vec<f64> = keys
                    .iter()
                    .map(|&s| f64::from(scale) * qrow.iter().zip(&k[at(s)..at(s) + d]).map(|(&x, &y)| f64::from(x) * f64::from(y)).sum::<f64>())
                    .collect();
                let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let sum: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                let o = ((bi * t + ti) * heads + h) * d;
                for (&s, score) in keys.iter().zip(&scores) {
                    let prob = (score - max).exp() / sum;
                    for j in 0..d {
                        out[o + j] += prob * f64::from(v[at(s) + j]);
                        mag[o + j] += prob * f64::from(v[at(s) + j]).abs();
                    }
                }
            }
        }
    }
    (out, mag)
}

/// The best `k` of `keys` (higher first, ties to the lower index), as (index, key). Keys compare
/// as IEEE numbers, so -0.0 and +0.0 tie; NaN sorts last.
pub fn top_k(keys: &[f64], k: usize) -> Vec<(u32, f64)> {
    let mut order: Vec<(u32, f64)> = keys.iter().enumerate().map(|(i, &key)| (i as u32, if key.is_nan() { f64::NEG_INFINITY } else { key })).collect();
    order.sort_by(|a, b| b.1.partial_cmp(&a.1).expect("NaN was mapped away").then(a.0.cmp(&b.0)));
    order.truncate(k);
    order
}

/// Selection key (higher is better) of `metric` 0 dot, 1 cosine, 2 L2 (-‖q - x‖²), in f64.
pub fn similarity_key(q: &[f32], x: &[f32], metric: u32) -> f64 {
    let dot: f64 = q.iter().zip(x).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum();
    let qn: f64 = q.iter().map(|&a| f64::from(a).powi(2)).sum();
    let xn: f64 = x.iter().map(|&b| f64::from(b).powi(2)).sum();
    match metric {
        0 => dot,
        1 if qn == 0.0 || xn == 0.0 => 0.0,
        1 => dot / (qn.sqrt() * xn.sqrt()),
        _ => -(qn + xn - 2.0 * dot).max(0.0),
    }
}

/// Per-dimension aggregates of `x` [n, d]: op 0 sum, 1 mean, 2 weighted mean (weights
/// normalised), 3 population std, 4 median (numpy).
pub fn aggregate(x: &[f32], n: usize, d: usize, op: u32, weights: Option<&[f32]>) -> Vec<f64> {
    (0..d)
        .map(|j| {
            let col: Vec<f64> = (0..n).map(|i| f64::from(x[i * d + j])).collect();
            let mean = col.iter().sum::<f64>() / n as f64;
            match op {
                0 => col.iter().sum(),
                1 => mean,
                2 => {
                    let w = weights.expect("weights for a weighted mean");
                    let total: f64 = w.iter().map(|&v| f64::from(v)).sum();
                    col.iter().zip(w).map(|(v, &wi)| v * f64::from(wi)).sum::<f64>() / total
                }
                3 => (col.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64).sqrt(),
                _ => {
                    let mut sorted = col.clone();
                    sorted.sort_by(f64::total_cmp);
                    if n % 2 == 1 { sorted[n / 2] } else { 0.5 * (sorted[n / 2 - 1] + sorted[n / 2]) }
                }
            }
        })
        .collect()
}

/// Mean of cos(x_i, x_j) over all pairs i != j (zero vectors have cosine 0 with everything).
pub fn average_pairwise_cosine(x: &[f32], n: usize, d: usize) -> f64 {
    if n < 2 {
        return 0.0;
    }
    let mut total = 0.0;
    for i in 0..n {
        for j in 0..n {
            if i != j {
                total += similarity_key(&x[i * d..(i + 1) * d], &x[j * d..(j + 1) * d], 1);
            }
        }
    }
    total / (n * (n - 1)) as f64
}
