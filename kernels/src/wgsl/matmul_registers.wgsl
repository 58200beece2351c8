// C = A · Wᵀ (+ bias) (+ residual) without workgroup memory: each invocation computes a 4×4 block
// of C from vec4 loads of 4 rows of A and 4 rows of W straight from memory, 16 dot products per
// 8 loads. For CPU adapters (lavapipe), where barriers and workgroup memory cost more than the
// cache-resident reloads they save; GPUs take the tiled kernel (matmul.wgsl). K % 4 == 0.
// Napkin math: 2·M·N·K flops; each A element is loaded N/4 times, each W element M/4 times,
// from cache.

@group(0) @binding(0) var<storage, read> a: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> w: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> residual: array<f32>;
@group(0) @binding(4) var<storage, read_write> c: array<f32>;
@group(0) @binding(5) var<uniform> p: MatmulParams;

struct MatmulParams {
    m: u32, n: u32, k: u32, flags: u32,
    a_stride: u32, w_stride: u32, c_stride: u32, _pad: u32,
}

@compute @workgroup_size(8, 8)
fn matmul_registers(@builtin(global_invocation_id) gid: vec3<u32>) {
    let batch = gid.z;
    let row0 = gid.y * 4u;
    let col0 = gid.x * 4u;
    if (row0 >= p.m || col0 >= p.n) { return; }
    let k4 = p.k / 4u;
    // Clamp the rows read past the edge to the last row; their results are not stored.
    var ar: array<u32, 4>;
    var wr: array<u32, 4>;
    for (var i = 0u; i < 4u; i++) {
        ar[i] = (batch * p.a_stride) / 4u + min(row0 + i, p.m - 1u) * k4;
        wr[i] = (batch * p.w_stride) / 4u + min(col0 + i, p.n - 1u) * k4;
    }
    var acc: array<vec4<f32>, 4>;
    for (var kk = 0u; kk < k4; kk++) {
        let w0 = w[wr[0] + kk];
        let w1 = w[wr[1] + kk];
        let w2 = w[wr[2] + kk];
        let w3 = w[wr[3] + kk];
        for (var i = 0u; i < 4u; i++) {
            let av = a[ar[i] + kk];
            acc[i] += vec4<f32>(dot(av, w0), dot(av, w1), dot(av, w2), dot(av, w3));
        }
    }
    let c_base = batch * p.c_stride;
    for (var i = 0u; i < 4u; i++) {
        let r = row0 + i;
        if (r >= p.m) { continue; }
        for (var j = 0u; j < 4u; j++) {
            let col = col0 + j;
            if (col >= p.n) { continue; }
            var v = acc[i][j];
            if ((p.flags & 1u) != 0u) { v += bias[col]; }
            if ((p.flags & 2u) != 0u) { v += residual[c_base + r * p.n + col]; }
            c[c_base + r * p.n + col] = v;
        }
    }
}
