// out[m, n] = Σ_k x[m, k] · W[n, k] (+ bias) (+ residual) for a few tokens (M <= 8: decoding),
// W in a stored format read straight from its blocks. Each output row is shared by 8 invocations
// striding over 32-element chunks of K; a chunk is decoded once into eight vec4s of registers and
// dotted with every token's activations, so batched decoding reads the weights once. Q8_0, Q4_0,
// Q4_1, F16 and F32 decode whole words; other formats fall back to quant.wgsl's decode().
// Napkin math: bandwidth-bound on the weight bytes (N·K·bytes-per-element); x stays in cache.

@group(0) @binding(0) var<storage, read> x: array<vec4<f32>>;   // [M, K]
@group(0) @binding(1) var<storage, read> w: array<u32>;         // [N, K] stored
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> residual: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // [M, N]
@group(0) @binding(5) var<uniform> p: QMatvecParams;

struct QMatvecParams { m: u32, n: u32, k: u32, flags: u32 }

const TPR: u32 = 8u;          // invocations per output row
const ROWS: u32 = 32u;        // rows per workgroup (256 / TPR)
const MAX_M: u32 = 8u;
var<workgroup> partial: array<f32, 2048>; // [MAX_M][256]

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
    var acc: array<f32, 8>;
    if (row < p.n) {
        let chunks = p.k / 32u;
        for (var c = t; c < chunks; c += TPR) {
            let k0 = 32u * c;
            let element = row * p.k + k0;
            let block = element / BLOCK_ELEMENTS;
            decode_chunk(block * BLOCK_BYTES, element % BLOCK_ELEMENTS);
            for (var mi = 0u; mi < p.m; mi++) {
                let xb = (mi * p.k + k0) / 4u;
                var s = 0.0;
                for (var i = 0u; i < 8u; i++) { s += dot(wv[i], x[xb + i]); }
                acc[mi] += s;
            }
        }
    }
    for (var mi = 0u; mi < MAX_M; mi++) { partial[mi * 256u + lid] = acc[mi]; }
    workgroupBarrier();
    if (t == 0u && row < p.n) {
        for (var mi = 0u; mi < p.m; mi++) {
            var v = 0.0;
            for (var j = 0u; j < TPR; j++) { v += partial[mi * 256u + lid + j]; }
            if ((p.flags & 1u) != 0u) { v += bias[row]; }
            if ((p.flags & 2u) != 0u) { v += residual[mi * p.n + row]; }
            out[mi * p.n + row] = v;
        }
    }
}
