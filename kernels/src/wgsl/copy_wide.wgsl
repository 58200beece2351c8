// Copies `n16` 16-byte units from src to dst as u64 pairs, four units (64 bytes) an invocation.
// A ceiling probe, not an op: on CPU adapters whose storage loads cost the same per component
// whatever its width (lavapipe, Mesa 22.3), it moves twice the bytes of the vec4 f32 copy per
// load, as the CPU matvec reads weights (qmatvec_rows.wgsl); see ops/ceiling.rs.
// Napkin math: 128 bytes moved per invocation, no arithmetic.

@group(0) @binding(0) var<storage, read> src: array<vec2<u64>>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec2<u64>>;
@group(0) @binding(2) var<uniform> p: CopyWideParams;

struct CopyWideParams { n16: u32, _pad0: u32, _pad1: u32, _pad2: u32 }

@compute @workgroup_size(64)
fn copy_wide(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, ng, lid, 64u) * 4u;
    if (i + 3u < p.n16) {
        let a = src[i];
        let b = src[i + 1u];
        let c = src[i + 2u];
        let d = src[i + 3u];
        dst[i] = a;
        dst[i + 1u] = b;
        dst[i + 2u] = c;
        dst[i + 3u] = d;
        return;
    }
    for (var j = i; j < p.n16; j++) {
        dst[j] = src[j];
    }
}
