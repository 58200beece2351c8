// out[m, n] = Σ_k x[m, k] · W[n, k] (+ bias) (+ residual) for a few tokens (decoding) on GPUs,
// W in a stored format read straight from its blocks. The launcher prepends TPR (invocations per
// output row) and TOKENS (tokens per dispatch along z, 1..8; loops over tokens have that constant
// bound so the accumulators stay in registers). Each row's TPR invocations stride over its
// 32-element chunks of K, so neighbouring invocations read neighbouring blocks (coalesced); a
// chunk is decoded once into eight vec4s of registers and dotted with every token's activations,
// so batched decoding reads the weights once. The row's partial sums meet in a fixed tree in
// workgroup memory. Q8_0, Q4_0, Q4_1, F16 and F32 decode whole words; other formats fall back to
// quant.wgsl's decode().
// Why TPR = 32 on GPUs (was 8): SmolLM2's 1536×576 matrices made 48 workgroups of 32 rows for the
// 132 multiprocessors of an H100, and each decode matvec took 50–60 µs (benches/results). A
// token's sum runs in the same order whatever TOKENS is, so batching does not change results.
// Napkin math: bandwidth-bound on the weight bytes (N·K·bytes-per-element); x stays in cache.

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;   // [M, K]
@group(0) @binding(1) var<storage, read> w: array<u32>;         // [N, K] stored
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> residual: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // [M, N]
@group(0) @binding(5) var<uniform> p: QMatvecParams;

struct QMatvecParams { m: u32, n: u32, k: u32, flags: u32 }

const WG: u32 = 256u;
const ROWS: u32 = WG / TPR;   // rows per workgroup
var<workgroup> partial: array<f32, WG * TOKENS>; // [TOKENS][WG]

var<private> wv: array<vec4<f32>, 8>;

fn nibbles(q: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + shift)) & vec4<u32>(15u));
}

// Decodes elements e0..e0+31 of the block at byte bb into wv.
fn decode_chunk(bb: u32, e0: u32) {
    switch FORMAT {
        case 0u: {
            for (var i = 0u; i < 8u; i++) {
                let o = (bb >> 2u) + e0 + 4u * i;
                wv[i] = vec4<f32>(bitcast<f32>(w[o]), bitcast<f32>(w[o + 1u]), bitcast<f32>(w[o + 2u]), bitcast<f32>(w[o + 3u]));
            }
        }
        case 1u: {
            for (var i = 0u; i < 8u; i++) {
                let o = ((bb >> 1u) + e0 + 4u * i) >> 1u; // f16 element index / 2 = word (bb = 2·element, even chunk starts)
                wv[i] = vec4<f32>(unpack2x16float(w[o]), unpack2x16float(w[o + 1u]));
            }
        }
        case 2u: {
            let d = half_at(bb);
            for (var i = 0u; i < 8u; i++) {
                let q = bitcast<vec4<i32>>(vec4<u32>(u32_at(bb + 2u + 4u * i)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
                wv[i] = vec4<f32>(q) * d;
            }
        }
        case 3u: {
            let d = half_at(bb);
            for (var i = 0u; i < 4u; i++) {
                let q = u32_at(bb + 2u + 4u * i);
                wv[i] = (nibbles(q, 0u) - 8.0) * d;
                wv[i + 4u] = (nibbles(q, 4u) - 8.0) * d;
            }
        }
        case 4u: {
            let dm = unpack2x16float(w[bb >> 2u]);
            for (var i = 0u; i < 4u; i++) {
                let q = w[(bb >> 2u) + 1u + i];
                wv[i] = nibbles(q, 0u) * dm.x + dm.y;
                wv[i + 4u] = nibbles(q, 4u) * dm.x + dm.y;
            }
        }
        default: {
            for (var i = 0u; i < 8u; i++) {
                let e = e0 + 4u * i;
                wv[i] = vec4<f32>(decode(bb, e), decode(bb, e + 1u), decode(bb, e + 2u), decode(bb, e + 3u));
            }
        }
    }
}

@compute @workgroup_size(256)
fn qmatvec(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = (wid.y * ng.x + wid.x) * ROWS + lid / TPR;
    let t = lid % TPR;
    let m0 = wid.z * TOKENS;                   // this dispatch's first token
    let tokens = min(TOKENS, p.m - m0);        // uniform: the last group along z may be short
    var acc: array<f32, TOKENS>;
    if (row < p.n) {
        let chunks = p.k / 32u;
        for (var c = t; c < chunks; c += TPR) {
            let k0 = 32u * c;
            let element = row * p.k + k0;
            let block = element / BLOCK_ELEMENTS;
            decode_chunk(block * BLOCK_BYTES, element % BLOCK_ELEMENTS);
            for (var mi = 0u; mi < TOKENS; mi++) {
                if (mi < tokens) {
                    let xb = ((m0 + mi) * p.k + k0) / 4u;
                    var s = 0.0;
                    for (var i = 0u; i < 8u; i++) { s += dot(wv[i], x[xb + i]); }
                    acc[mi] += s;
                }
            }
        }
    }
    for (var mi = 0u; mi < TOKENS; mi++) { partial[mi * WG + lid] = acc[mi]; }
    workgroupBarrier();
    // The TPR partial sums of each row, pairwise in a fixed order.
    for (var stride = TPR / 2u; stride > 0u; stride >>= 1u) {
        if (t < stride) {
            for (var mi = 0u; mi < TOKENS; mi++) { partial[mi * WG + lid] += partial[mi * WG + lid + stride]; }
        }
        workgroupBarrier();
    }
    if (t == 0u && row < p.n) {
        for (var mi = 0u; mi < TOKENS; mi++) {
            if (mi < tokens) {
                let m = m0 + mi;
                var v = partial[mi * WG + lid];
                if ((p.flags & 1u) != 0u) { v += bias[row]; }
                if ((p.flags & 2u) != 0u) { v += residual[m * p.n + row]; }
                out[m * p.n + row] = v;
            }
        }
    }
}
