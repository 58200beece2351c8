// Copies `n4` vec4s from src to dst (dst may sit at a vec4 offset: appending rows to a cache).
// The adapter's memory-bandwidth ceiling is measured with it.
// Napkin math: 32 bytes moved per invocation, no arithmetic.

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec4<f32>>;
@group(0) @binding(2) var<uniform> p: CopyParams;

struct CopyParams { n4: u32, dst_offset4: u32, _pad0: u32, _pad1: u32 }

@compute @workgroup_size(256)
fn copy_vec4(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, ng, lid, 256u);
    if (i < p.n4) { dst[p.dst_offset4 + i] = src[i]; }
}
