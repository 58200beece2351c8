// out[m, n] = Σ_k x[m, k] · W[n, k] (+ bias) (+ residual) on CPU adapters (lavapipe), TOKENS
// tokens per invocation (decoding; a prompt runs as groups of TOKENS along z), W read straight
// from its stored blocks. GPUs take qmatvec.wgsl and, for more than 8 tokens, qmatmul.wgsl.
// Each (row, token) sums its products in the same order whatever ROWS and TOKENS are, so a
// token's result does not depend on how many others share its dispatch.
// Why a second matvec: lavapipe (Mesa 22.3) loads memory one SIMD lane at a time and runs
// barriers as coroutine switches, so a matvec there is bound by the count of load instructions,
// not by bytes. Here each invocation owns ROWS whole rows and walks K in 32-element chunks: the
// chunk of x (8 vec4 per token) is loaded once and reused by all ROWS rows, and each row's chunk
// is decoded from whole u32 words (a Q4_1 chunk is 5 loads, a Q8_0 chunk 10), never byte by byte.
// No workgroup memory, no barriers. The `//#unroll` sections are expanded by `unroll.rs`.
// Napkin math: N·K·bytes-per-element of weight bytes read once; x (M·K·4 bytes) is read N/ROWS
// times from cache.

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;   // [M, K]
@group(0) @binding(1) var<storage, read> w: array<u32>;         // [N, K] stored
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> residual: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // [M, N]
@group(0) @binding(5) var<uniform> p: QMatvecParams;

struct QMatvecParams { m: u32, n: u32, k: u32, flags: u32 }

// The four nibbles at `shift` (0 low, 4 high) of the four bytes of `q`.
fn nib4(q: u32, shift: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + shift)) & vec4<u32>(15u);
}

// The four 2-bit fields at `shift` of the four bytes of `q`.
fn crumb4(q: u32, shift: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + shift)) & vec4<u32>(3u);
}

// Bits `first`..`first + 3` of `qh`, each as 0 or 16 (the fifth bit of Q5 quants).
fn high_bits4(qh: u32, first: u32) -> vec4<u32> {
    return ((vec4<u32>(qh) >> (vec4<u32>(0u, 1u, 2u, 3u) + first)) & vec4<u32>(1u)) << vec4<u32>(4u);
}

// The word at even byte offset o, given the aligned words around it (lo at o & ~3, hi after it).
fn funnel(lo: u32, hi: u32, o: u32) -> u32 {
    return select(lo, (lo >> 16u) | (hi << 16u), (o & 2u) != 0u);
}

// Byte n (0..11) of the twelve K-quant scale bytes held in three words.
fn scale_byte(s0: u32, s1: u32, s2: u32, n: u32) -> u32 {
    let word = select(select(s2, s1, n < 8u), s0, n < 4u);
    return (word >> ((n & 3u) * 8u)) & 0xffu;
}

// The 6-bit scale and min of sub-block j of the Q4_K/Q5_K block at word b, from its three words
// of scale bytes (ggml's get_scale_min_k4).
fn k_scale_min(b: u32, j: u32) -> vec2<u32> {
    let s0 = w[b + 1u];
    let s1 = w[b + 2u];
    let s2 = w[b + 3u];
    if (j < 4u) {
        return vec2<u32>(scale_byte(s0, s1, s2, j) & 63u, scale_byte(s0, s1, s2, j + 4u) & 63u);
    }
    return vec2<u32>(
        (scale_byte(s0, s1, s2, j + 4u) & 0xfu) | ((scale_byte(s0, s1, s2, j - 4u) >> 6u) << 4u),
        (scale_byte(s0, s1, s2, j + 4u) >> 4u) | ((scale_byte(s0, s1, s2, j) >> 6u) << 4u),
    );
}

// Elements k0..k0+31 of row `row` of W, decoded in registers (k0 % 32 == 0).
fn chunk(row: u32, k0: u32) -> array<vec4<f32>, 8> {
    var v: array<vec4<f32>, 8>;
    let element = row * p.k + k0;
    let bb = (element / BLOCK_ELEMENTS) * BLOCK_BYTES;
    let e0 = element % BLOCK_ELEMENTS;
    switch FORMAT {
        case 0u: {
//#unroll i EIGHT
            v[{i}] = bitcast<vec4<f32>>(vec4<u32>(w[element + 4u * {i}u], w[element + 4u * {i}u + 1u], w[element + 4u * {i}u + 2u], w[element + 4u * {i}u + 3u]));
//#end
        }
        case 1u: {
            let o = element >> 1u;
//#unroll i EIGHT
            v[{i}] = vec4<f32>(unpack2x16float(w[o + 2u * {i}u]), unpack2x16float(w[o + 2u * {i}u + 1u]));
//#end
        }
        case 2u: {
            // Q8_0: f16 d, 32 × i8 at bb + 2 (34-byte blocks: every other block is half-word aligned).
            let d = half_at(bb);
            let qo = bb + 2u;
            let base = qo >> 2u;
            let q0 = w[base];
//#unroll i EIGHT
            let q{i}n = w[base + {i}u + 1u];
//#end
            let l0 = funnel(q0, q0n, qo);
            let l1 = funnel(q0n, q1n, qo);
            let l2 = funnel(q1n, q2n, qo);
            let l3 = funnel(q2n, q3n, qo);
            let l4 = funnel(q3n, q4n, qo);
            let l5 = funnel(q4n, q5n, qo);
            let l6 = funnel(q5n, q6n, qo);
            let l7 = funnel(q6n, q7n, qo);
//#unroll i EIGHT
            v[{i}] = vec4<f32>(bitcast<vec4<i32>>(vec4<u32>(l{i}) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u)) * d;
//#end
        }
        case 3u: {
            // Q4_0: f16 d, 16 bytes of nibbles at bb + 2 (18-byte blocks); low nibbles are
            // elements 0..15, high nibbles 16..31.
            let d = half_at(bb);
            let qo = bb + 2u;
            let base = qo >> 2u;
            let r0 = w[base];
            let r1 = w[base + 1u];
            let r2 = w[base + 2u];
            let r3 = w[base + 3u];
            let r4 = w[base + 4u];
            let q = vec4<u32>(funnel(r0, r1, qo), funnel(r1, r2, qo), funnel(r2, r3, qo), funnel(r3, r4, qo));
//#unroll i FOUR
            v[{i}] = (vec4<f32>(nib4(q[{i}], 0u)) - 8.0) * d;
            v[{i} + 4] = (vec4<f32>(nib4(q[{i}], 4u)) - 8.0) * d;
//#end
        }
        case 4u: {
            // Q4_1: f16 d, f16 m, 16 bytes of nibbles (20-byte blocks, always word aligned).
            let b = bb >> 2u;
            let dm = unpack2x16float(w[b]);
//#unroll i FOUR
            let q{i} = w[b + 1u + {i}u];
            v[{i}] = vec4<f32>(nib4(q{i}, 0u)) * dm.x + dm.y;
            v[{i} + 4] = vec4<f32>(nib4(q{i}, 4u)) * dm.x + dm.y;
//#end
        }
        case 5u: {
            // Q5_0: f16 d, u32 qh (fifth bits), 16 bytes of nibbles (22-byte blocks).
            let d = half_at(bb);
            let qh = u32_at(bb + 2u);
            let qo = bb + 6u;
            let base = qo >> 2u;
            let r0 = w[base];
            let r1 = w[base + 1u];
            let r2 = w[base + 2u];
            let r3 = w[base + 3u];
            let r4 = w[base + 4u];
            let q = vec4<u32>(funnel(r0, r1, qo), funnel(r1, r2, qo), funnel(r2, r3, qo), funnel(r3, r4, qo));
//#unroll i FOUR
            v[{i}] = vec4<f32>(vec4<i32>(nib4(q[{i}], 0u) | high_bits4(qh, 4u * {i}u)) - 16) * d;
            v[{i} + 4] = vec4<f32>(vec4<i32>(nib4(q[{i}], 4u) | high_bits4(qh, 16u + 4u * {i}u)) - 16) * d;
//#end
        }
        case 6u: {
            // Q5_1: f16 d, f16 m, u32 qh, 16 bytes of nibbles (24-byte blocks, word aligned).
            let b = bb >> 2u;
            let dm = unpack2x16float(w[b]);
            let qh = w[b + 1u];
//#unroll i FOUR
            let q{i} = w[b + 2u + {i}u];
            v[{i}] = vec4<f32>(nib4(q{i}, 0u) | high_bits4(qh, 4u * {i}u)) * dm.x + dm.y;
            v[{i} + 4] = vec4<f32>(nib4(q{i}, 4u) | high_bits4(qh, 16u + 4u * {i}u)) * dm.x + dm.y;
//#end
        }
        case 7u: {
            // Q4_K: f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles (144-byte blocks, word
            // aligned). Sub-block j (32 elements) is the low (j even) or high (j odd) nibbles of
            // bytes 32·(j/2)..+32; its 6-bit scale and min follow ggml's get_scale_min_k4.
            let b = bb >> 2u;
            let j = e0 / 32u;
            let dm = unpack2x16float(w[b]);
            let sm = k_scale_min(b, j);
            let scale = dm.x * f32(sm.x);
            let offset = dm.y * f32(sm.y);
            let shift = 4u * (j & 1u);
            let qb = b + 4u + 8u * (j / 2u);
//#unroll i EIGHT
            v[{i}] = scale * vec4<f32>(nib4(w[qb + {i}u], shift)) - offset;
//#end
        }
        case 9u: {
            // Q6_K: 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 i8 scales, f16 d
            // (210-byte blocks, every other one half-word aligned). Following ggml's
            // dequantize_row_q6_K: element 128·h + 32·q + l takes ql byte 64·h + 32·(q & 1) + l
            // (nibble q >> 1), qh byte 32·h + l (bits 2q..2q+1) and scale 8·h + 2q + l / 16.
            let h = e0 / 128u;
            let q = (e0 % 128u) / 32u;
            let lo = bb + 64u * h + 32u * (q & 1u);
            let hi = bb + 128u + 32u * h;
            let sc = bb + 192u + 8u * h + 2u * q;
            let d = half_at(bb + 208u);
            let scale0 = d * i8_at(sc);
            let scale1 = d * i8_at(sc + 1u);
            let lb = lo >> 2u;
            let hb = hi >> 2u;
            let nshift = 4u * (q >> 1u);
            let cshift = 2u * q;
//#unroll i EIGHT
            let lw{i} = w[lb + {i}u];
            let hw{i} = w[hb + {i}u];
//#end
            let lw8 = w[lb + 8u];
            let hw8 = w[hb + 8u];
            let ql = array<u32, 8>(funnel(lw0, lw1, lo), funnel(lw1, lw2, lo), funnel(lw2, lw3, lo), funnel(lw3, lw4, lo),
                                   funnel(lw4, lw5, lo), funnel(lw5, lw6, lo), funnel(lw6, lw7, lo), funnel(lw7, lw8, lo));
            let qh = array<u32, 8>(funnel(hw0, hw1, hi), funnel(hw1, hw2, hi), funnel(hw2, hw3, hi), funnel(hw3, hw4, hi),
                                   funnel(hw4, hw5, hi), funnel(hw5, hw6, hi), funnel(hw6, hw7, hi), funnel(hw7, hw8, hi));
//#unroll i FOUR
            v[{i}] = scale0 * vec4<f32>(vec4<i32>(nib4(ql[{i}], nshift) | (crumb4(qh[{i}], cshift) << vec4<u32>(4u))) - 32);
            v[{i} + 4] = scale1 * vec4<f32>(vec4<i32>(nib4(ql[{i} + 4], nshift) | (crumb4(qh[{i} + 4], cshift) << vec4<u32>(4u))) - 32);
//#end
        }
        case 8u: {
            // Q5_K: f16 d, f16 dmin, 12 scale bytes, 32 bytes qh, 128 bytes of nibbles (176-byte
            // blocks, word aligned). Sub-block j takes the low (j even) or high (j odd) nibbles
            // of bytes 32·(j/2)..+32 and bit j of qh byte l as its fifth bit (ggml's
            // dequantize_row_q5_K); scale and min as Q4_K.
            let b = bb >> 2u;
            let j = e0 / 32u;
            let dm = unpack2x16float(w[b]);
            let sm = k_scale_min(b, j);
            let scale = dm.x * f32(sm.x);
            let offset = dm.y * f32(sm.y);
            let shift = 4u * (j & 1u);
            let qb = b + 12u + 8u * (j / 2u);
//#unroll i EIGHT
            v[{i}] = scale * vec4<f32>(nib4(w[qb + {i}u], shift) | (((vec4<u32>(w[b + 4u + {i}u]) >> (vec4<u32>(0u, 8u, 16u, 24u) + j)) & vec4<u32>(1u)) << vec4<u32>(4u))) - offset;
//#end
        }
        default: {
            // Unreachable: `format_id` gives 0..=9, each handled above.
        }
    }
    return v;
}

fn store(token: u32, row: u32, acc: vec4<f32>) {
    if (row >= p.n || token >= p.m) { return; }
    var v = (acc.x + acc.y) + (acc.z + acc.w);
    if ((p.flags & 1u) != 0u) { v += bias[row]; }
    if ((p.flags & 2u) != 0u) { v += residual[token * p.n + row]; }
    out[token * p.n + row] = v;
}

@compute @workgroup_size(8)
fn qmatvec_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let first = ((wid.y * ng.x + wid.x) * 8u + lid) * {ROWS}u;
    if (first >= p.n) { return; }
    // Workgroups along z take successive groups of TOKENS tokens (a prompt of any length); the
    // last group's missing tokens read the last token again and are not stored.
    let t0 = wid.z * {TOKENS}u;
    let k4 = p.k / 4u;
    // Rows past the edge decode the last row again; their results are not stored.
//#unroll r ROWS
    let row{r} = min(first + {r}u, p.n - 1u);
//#unroll t TOKENS
    var acc{r}_{t} = vec4<f32>(0.0);
//#end
//#end
    for (var k0 = 0u; k0 < p.k; k0 += 32u) {
//#unroll t TOKENS
//#unroll i EIGHT
        let x{t}_{i} = x[min(t0 + {t}u, p.m - 1u) * k4 + k0 / 4u + {i}u];
//#end
//#end
//#unroll r ROWS
        let wv{r} = chunk(row{r}, k0);
//#unroll t TOKENS
//#unroll i EIGHT
        acc{r}_{t} = fma(wv{r}[{i}], x{t}_{i}, acc{r}_{t});
//#end
//#end
//#end
    }
//#unroll r ROWS
//#unroll t TOKENS
    store(t0 + {t}u, first + {r}u, acc{r}_{t});
//#end
//#end
}
