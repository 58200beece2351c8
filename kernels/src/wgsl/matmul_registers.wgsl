// C = A · Wᵀ (+ bias) (+ residual) without workgroup memory, for CPU adapters (lavapipe): each
// invocation computes a ROWS×COLS block of C from vec4 loads of ROWS rows of A and COLS rows of W
// straight from memory. GPUs take the tiled kernel (matmul.wgsl). Needs K % 4 == 0.
// Why this shape: lavapipe (Mesa 22.3) runs 8 invocations in SIMD lanes but loads memory one lane
// at a time, so time goes to loads, not FMAs. Each step loads (ROWS + COLS) vec4s and does
// ROWS·COLS vec4 FMAs: 16×16 feeds every loaded value into 16 FMAs, against 4 for a 4×4 block
// (measured at 1024³: 4×4 1.07, 8×8 2.01, 16×16 3.5–4.0 GFLOP/s). Larger blocks are faster still
// but take LLVM minutes to compile (32×32: about 90 s). The `//#unroll` sections are expanded by
// `unroll.rs` (named accumulators, because NIR keeps large register arrays in memory).
// Napkin math: 2·M·N·K flops; each A element is loaded N/COLS times, each W element M/ROWS times.

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

// Stores one element of C, reducing the four k-lanes of its accumulator and applying the epilogue.
fn store(c_base: u32, row: u32, col: u32, acc: vec4<f32>) {
    if (row >= p.m || col >= p.n) { return; }
    var v = (acc.x + acc.y) + (acc.z + acc.w);
    if ((p.flags & 1u) != 0u) { v += bias[col]; }
    if ((p.flags & 2u) != 0u) { v += residual[c_base + row * p.n + col]; }
    c[c_base + row * p.n + col] = v;
}

@compute @workgroup_size(8, 8)
fn matmul_registers(@builtin(global_invocation_id) gid: vec3<u32>) {
    let batch = gid.z;
    let row0 = gid.y * {ROWS}u;
    let col0 = gid.x * {COLS}u;
    if (row0 >= p.m || col0 >= p.n) { return; }
    let k4 = p.k / 4u;
    let a_base = (batch * p.a_stride) / 4u;
    let w_base = (batch * p.w_stride) / 4u;
    // Rows past the edge read the last row again; their results are not stored.
//#unroll i ROWS
    let ar{i} = a_base + min(row0 + {i}u, p.m - 1u) * k4;
//#end
//#unroll j COLS
    let wr{j} = w_base + min(col0 + {j}u, p.n - 1u) * k4;
//#end
//#unroll i ROWS
//#unroll j COLS
    var acc{i}_{j} = vec4<f32>(0.0);
//#end
//#end
    for (var kk = 0u; kk < k4; kk++) {
//#unroll j COLS
        let w{j} = w[wr{j} + kk];
//#end
//#unroll i ROWS
        let a{i} = a[ar{i} + kk];
//#unroll j COLS
        acc{i}_{j} = fma(a{i}, w{j}, acc{i}_{j});
//#end
//#end
    }
    let c_base = batch * p.c_stride;
//#unroll i ROWS
//#unroll j COLS
    store(c_base, row0 + {i}u, col0 + {j}u, acc{i}_{j});
//#end
//#end
}
