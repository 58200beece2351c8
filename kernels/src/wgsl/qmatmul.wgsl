// C = A · Wᵀ (+ bias) (+ residual) with W [N, K] in a stored format (f16 or a GGUF block format),
// decoded in registers as the W tile is loaded into workgroup memory (quant.wgsl): no dequantized
// copy of W exists in GPU memory. Tiling as matmul.wgsl: 64×64 tile per 16×16 workgroup, 4×4
// per invocation, BK = 16.
// Napkin math: 2·M·N·K flops; W bytes read M/64 times (once for M <= 64, the decode case).

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<u32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> residual: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<uniform> p: QMatmulParams;

struct QMatmulParams { m: u32, n: u32, k: u32, flags: u32 } // flags: 1 = bias, 2 = residual

const BM: u32 = 64u;
const BN: u32 = 64u;
const BK: u32 = 16u;

var<workgroup> a_tile: array<f32, 1024>;
var<workgroup> w_tile: array<f32, 1024>;

@compute @workgroup_size(16, 16)
fn qmatmul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
    let row0 = wid.y * BM;
    let col0 = wid.x * BN;
    let tid = lid.y * 16u + lid.x;
    let load_row = tid / 4u;
    let load_k = (tid % 4u) * 4u;

    var acc: array<vec4<f32>, 4>;
    for (var k0 = 0u; k0 < p.k; k0 += BK) {
        let ar = row0 + load_row;
        let wr = col0 + load_row;
        for (var j = 0u; j < 4u; j++) {
            let kk = k0 + load_k + j;
            var av = 0.0;
            var wv = 0.0;
            if (ar < p.m && kk < p.k) { av = a[ar * p.k + kk]; }
            if (wr < p.n && kk < p.k) { wv = weight(wr, kk, p.k); }
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

    for (var i = 0u; i < 4u; i++) {
        let r = row0 + lid.y * 4u + i;
        if (r >= p.m) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + lid.x * 4u + j;
            if (col >= p.n) { continue; }
            var v = acc[i][j];
            if ((p.flags & 1u) != 0u) { v += bias[col]; }
            if ((p.flags & 2u) != 0u) { v += residual[r * p.n + col]; }
            c[r * p.n + col] = v;
        }
    }
}
