// Elementwise unary ops over a flat f32 array: out[i] = f(x[i]).
// Napkin math: 8 bytes moved per element, ~1 (GELU ~20) flops; bandwidth-bound everywhere.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<uniform> p: UnaryParams;

struct UnaryParams { n: u32, _pad0: u32, _pad1: u32, _pad2: u32 }

@compute @workgroup_size(256)
fn gelu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, ng, lid, 256u);
    if (i < p.n) { out[i] = gelu_erf(x[i]); }
}

@compute @workgroup_size(256)
fn silu_op(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, ng, lid, 256u);
    if (i < p.n) { out[i] = silu(x[i]); }
}
