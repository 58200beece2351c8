// out[m, n] = Σ_k x[m, k] · W[n, k] (+ bias) (+ residual) for a few tokens (decoding) on GPUs,
// W in a stored format read straight from its blocks. The launcher prepends TPR (invocations per
// output row) and TOKENS (tokens per dispatch along z, 1..8; loops over tokens have that constant
// bound so the accumulators stay in registers). Invocation t of a row takes the row's vec4s t,
// t + TPR, ...: neighbouring invocations read neighbouring words of W and of x, so every load of
// a warp is one or two cache lines. Each vec4 of W is decoded once (`decode4`: Q8_0, Q4_0, Q4_1,
// F16 and F32 from whole words; other formats through quant.wgsl's decode()) and dotted with
// every token's x, so batched decoding reads the weights once. The row's partial sums meet in a
// fixed tree in workgroup memory, so a token's sum runs in the same order whatever TOKENS is.
// Why this layout: the first GPU matvec gave each invocation whole 32-element chunks, so the 32
// invocations of a warp read x 128 bytes apart (32 cache lines a load); on an H100 it reached
// 4–12% of the copy ceiling (benches/results/gpu-h100.md).
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

fn nibbles(q: u32, shift: u32) -> vec4<f32> {
    return vec4<f32>((vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + shift)) & vec4<u32>(15u));
}

// Elements e..e+3 (e a multiple of 4) of the block at byte bb, from whole words where the format
// allows: one or two loads a vec4 (plus the block's scale, which the block's other lanes load
// too and the cache serves).
fn decode4(bb: u32, e: u32) -> vec4<f32> {
    switch FORMAT {
        case 0u: {
            let o = (bb >> 2u) + e;
            return vec4<f32>(bitcast<f32>(w[o]), bitcast<f32>(w[o + 1u]), bitcast<f32>(w[o + 2u]), bitcast<f32>(w[o + 3u]));
        }
        case 1u: {
            let o = ((bb >> 1u) + e) >> 1u; // f16 element index / 2 = word
            return vec4<f32>(unpack2x16float(w[o]), unpack2x16float(w[o + 1u]));
        }
        case 2u: {
            let q = bitcast<vec4<i32>>(vec4<u32>(u32_at(bb + 2u + e)) << vec4<u32>(24u, 16u, 8u, 0u)) >> vec4<u32>(24u);
            return vec4<f32>(q) * half_at(bb);
        }
        case 3u: {
            // Byte i of qs holds element i (low nibble) and element i + 16 (high nibble).
            return (nibbles(u32_at(bb + 2u + (e & 15u)), (e >> 4u) * 4u) - 8.0) * half_at(bb);
        }
        case 4u: {
            let dm = unpack2x16float(w[bb >> 2u]);
            return nibbles(w[(bb >> 2u) + 1u + ((e & 15u) >> 2u)], (e >> 4u) * 4u) * dm.x + dm.y;
        }
        default: {
            return vec4<f32>(decode(bb, e), decode(bb, e + 1u), decode(bb, e + 2u), decode(bb, e + 3u));
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
        let quads = p.k / 4u;
        for (var qi = t; qi < quads; qi += TPR) {
            let element = row * p.k + 4u * qi;
            let e = element % BLOCK_ELEMENTS;
            let wv = decode4((element / BLOCK_ELEMENTS) * BLOCK_BYTES, e);
            for (var mi = 0u; mi < TOKENS; mi++) {
                if (mi < tokens) {
                    acc[mi] += dot(wv, x[(m0 + mi) * quads + qi]);
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
