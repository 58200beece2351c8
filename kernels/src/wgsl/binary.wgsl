// Elementwise binary ops over flat f32 arrays, `b` broadcast along rows: b has `b_len` elements
// and a's length is a multiple of it (b_len = n for same-shape operands, = row length for a
// per-column bias or scale).
// Napkin math: 12 bytes moved per element (8 when b is a broadcast row held in cache).

@group(0) @binding(0) var<storage, read> a: array<f32>;
@group(0) @binding(1) var<storage, read> b: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: BinaryParams;

struct BinaryParams { n: u32, b_len: u32, _pad0: u32, _pad1: u32 }

@compute @workgroup_size(256)
fn add(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, ng, lid, 256u);
    if (i < p.n) { out[i] = a[i] + b[i % p.b_len]; }
}

@compute @workgroup_size(256)
fn mul(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, ng, lid, 256u);
    if (i < p.n) { out[i] = a[i] * b[i % p.b_len]; }
}

// SwiGLU gate as Llama's MLP uses it: out = silu(gate) * up, `a` the gate, `b` the up projection.
@compute @workgroup_size(256)
fn swiglu(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, ng, lid, 256u);
    if (i < p.n) { out[i] = silu(a[i]) * b[i % p.b_len]; }
}
