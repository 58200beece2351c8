// Row normalisations, one workgroup per row of `cols` elements, reductions in workgroup memory.
// layer_norm (BERT): y = (x - mean) / sqrt(var + eps) * weight + bias, two-pass variance.
// rms_norm (Llama): y = x / sqrt(mean(x²) + eps) * weight. `bias` is unused by rms_norm.
// Napkin math: reads the row twice (layer_norm: three times) from cache, writes it once.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> weight: array<f32>;
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
@group(0) @binding(4) var<uniform> p: NormParams;

struct NormParams { rows: u32, cols: u32, eps: f32, _pad: u32 }

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn layer_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * ng.x + wid.x;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var s = 0.0;
    for (var c = lid; c < p.cols; c += WG) { s += x[base + c]; }
    let mean = workgroup_sum(s, lid) / f32(p.cols);
    var v = 0.0;
    for (var c = lid; c < p.cols; c += WG) { let d = x[base + c] - mean; v += d * d; }
    let inv = inverseSqrt(workgroup_sum(v, lid) / f32(p.cols) + p.eps);
    for (var c = lid; c < p.cols; c += WG) {
        out[base + c] = (x[base + c] - mean) * inv * weight[c] + bias[c];
    }
}

@compute @workgroup_size(256)
fn rms_norm(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * ng.x + wid.x;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var s = 0.0;
    for (var c = lid; c < p.cols; c += WG) { let v = x[base + c]; s += v * v; }
    let inv = inverseSqrt(workgroup_sum(s, lid) / f32(p.cols) + p.eps);
    for (var c = lid; c < p.cols; c += WG) {
        out[base + c] = x[base + c] * inv * weight[c];
    }
}
