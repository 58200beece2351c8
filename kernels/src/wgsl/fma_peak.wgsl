// Arithmetic ceiling probe: eight independent vec4 FMA chains per invocation (enough to hide
// FMA latency), `iterations` long; the sum is written so nothing is optimised away.
// Napkin math: 8 chains · 4 lanes · 2 flops = 64 flops per iteration per invocation.

@group(0) @binding(0) var<storage, read_write> out: array<f32>;
@group(0) @binding(1) var<uniform> p: PeakParams;

struct PeakParams { iterations: u32, _pad0: u32, _pad1: u32, _pad2: u32 }

@compute @workgroup_size(256)
fn fma_peak(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>) {
    let seed = f32(gid.x) * 1e-7;
    let m = vec4<f32>(0.999999, 0.999998, 0.999997, 0.999996);
    let a = vec4<f32>(1e-7);
    var c0 = vec4<f32>(seed); var c1 = c0 + 1.0; var c2 = c0 + 2.0; var c3 = c0 + 3.0;
    var c4 = c0 + 4.0; var c5 = c0 + 5.0; var c6 = c0 + 6.0; var c7 = c0 + 7.0;
    for (var i = 0u; i < p.iterations; i++) {
        c0 = fma(c0, m, a); c1 = fma(c1, m, a); c2 = fma(c2, m, a); c3 = fma(c3, m, a);
        c4 = fma(c4, m, a); c5 = fma(c5, m, a); c6 = fma(c6, m, a); c7 = fma(c7, m, a);
    }
    let s = c0 + c1 + c2 + c3 + c4 + c5 + c6 + c7;
    out[gid.x] = s.x + s.y + s.z + s.w;
}
