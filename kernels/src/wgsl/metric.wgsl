// Dot products [Q, N] to selection keys for a metric (see similarity.wgsl for the formulas).

@group(0) @binding(0) var<storage, read> dots: array<f32>;        // [Q, N]
@group(0) @binding(1) var<storage, read> q_norms: array<f32>;     // [Q] squared
@group(0) @binding(2) var<storage, read> x_norms: array<f32>;     // [N] squared
@group(0) @binding(3) var<storage, read_write> keys: array<f32>;  // [Q, N]
@group(0) @binding(4) var<uniform> p: MetricParams;

struct MetricParams { queries: u32, n: u32, metric: u32, _pad: u32 }

@compute @workgroup_size(256)
fn metric_keys(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, ng, lid, 256u);
    if (i >= p.queries * p.n) { return; }
    let qn = q_norms[i / p.n];
    let xn = x_norms[i % p.n];
    let d = dots[i];
    var key = d;
    if (p.metric == 1u) {
        key = select(d / (sqrt(qn) * sqrt(xn)), 0.0, qn == 0.0 || xn == 0.0);
    } else if (p.metric == 2u) {
        key = -max(qn + xn - 2.0 * d, 0.0);
    }
    keys[i] = key;
}
