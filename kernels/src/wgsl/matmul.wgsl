// C[b] = A[b] · W[b]ᵀ (+ bias) (+ residual), f32, weights in [out, in] = [N, K] layout as models
// store them. Each workgroup of 16×16 invocations computes a BM×BN = 64×64 tile of C, each
// invocation a 4×4 block held in registers as vec4s; K is walked in steps of BK = 16 through
// workgroup memory. Bounds are checked on every load and store, so no size need be a multiple
// of a tile. Batch strides (in elements) let W be shared (stride 0) or per batch.
// Napkin math: 2·M·N·K flops; global reads (M·K)·N/BN + (N·K)·M/BM floats, so each A element is
// read N/64 times; arithmetic intensity 16 flops per float loaded from workgroup memory.

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> residual: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<uniform> p: MatmulParams;

struct MatmulParams {
    m: u32, n: u32, k: u32, flags: u32,            // flags: 1 = add bias[n], 2 = add residual[b, m, n]
    a_stride: u32, w_stride: u32, c_stride: u32, _pad: u32,
}

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

// Tiles stored k-major ([k][m], [k][n]) so the inner loop reads 4 consecutive rows/columns.
var<workgroup> a_tile: array<f32, 1024>; // BK * BM
var<workgroup> w_tile: array<f32, 1024>; // BK * BN

@compute @workgroup_size(16, 16)
fn matmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let batch = wid.z;
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let tid = lid.y * 16u + lid.x;
    let a_base = batch * p.a_stride;
    let w_base = batch * p.w_stride;

    // Each invocation loads 4 consecutive k of one row of A and of W per step.
    let load_row = tid / 4u;          // 0..63
    let load_k = (tid % 4u) * 4u;     // 0, 4, 8, 12

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        let ar = row0 + load_row;
        let wr = col0 + load_row;
        for (var j = 0u; j < 4u; j++) {
            let kk = k0 + load_k + j;
            var av = 0.0;
            var wv = 0.0;
            if (ar < p.m && kk < p.k) { av = a[a_base + ar * p.k + kk]; }
            if (wr < p.n && kk < p.k) { wv = w[w_base + wr * p.k + kk]; }
            a_tile[(load_k + j) * BM + load_row] = av;
            w_tile[(load_k + j) * BN + load_row] = wv;
        }
        workgroupBarrier();
        for (var kk = 0u; kk < BK; kk++) {
            let ai = kk * BM + lid.y * 4u;
            let wi = kk * BN + lid.x * 4u;
            let av = vec4<f32>(a_tile[ai], a_tile[ai + 1u], a_tile[ai + 2u], a_tile[ai + 3u]);
            let wv = vec4<f32>(w_tile[wi], w_tile[wi + 1u], w_tile[wi + 2u], w_tile[wi + 3u]);
            acc[0] = fma(vec4<f32>(av.x), wv, acc[0]);
            acc[1] = fma(vec4<f32>(av.y), wv, acc[1]);
            acc[2] = fma(vec4<f32>(av.z), wv, acc[2]);
            acc[3] = fma(vec4<f32>(av.w), wv, acc[3]);
        }
        workgroupBarrier();
    }

    let c_base = batch * p.c_stride;
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y * 4u + i;
        if (r >= p.m) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x * 4u + j;
            if (col >= p.n) { continue; }
            var v = acc[i][j];
            if ((p.flags & 1u) != 0u) { v += bias[col]; }
            if ((p.flags & 2u) != 0u) { v += residual[c_base + r * p.n + col]; }
            c[c_base + r * p.n + col] = v;
        }
    }
}
