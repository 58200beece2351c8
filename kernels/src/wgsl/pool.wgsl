// Mean pooling over the attention mask, then optional L2 normalisation (sentence-transformers:
// Pooling(mean) followed by Normalize). One workgroup per sequence; each invocation owns
// hidden channels lid, lid + 256, …; the L2 norm is a workgroup reduction. A sequence with no
// unmasked token pools to zeros.
// Napkin math: reads B·S·H floats once, writes B·H.

@group(0) @binding(0) var<storage, read> hidden: array<f32>;   // [B, S, H]
@group(0) @binding(1) var<storage, read> mask: array<u32>;     // [B, S], 0 = padding
@group(0) @binding(2) var<storage, read_write> out: array<f32>; // [B, H]
@group(0) @binding(3) var<uniform> p: PoolParams;

struct PoolParams { batch: u32, seq: u32, hidden: u32, normalize: u32 }

const WG: u32 = 256u;

@compute @workgroup_size(256)
fn mean_pool(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let b = wid.y * ng.x + wid.x;
    if (b >= p.batch) { return; }
    var count = 0u;
    for (var s = 0u; s < p.seq; s++) { count += select(0u, 1u, mask[b * p.seq + s] != 0u); }
    let inv_count = select(1.0 / f32(count), 0.0, count == 0u);
    var sq = 0.0;
    for (var h = lid; h < p.hidden; h += WG) {
        var acc = 0.0;
        for (var s = 0u; s < p.seq; s++) {
            if (mask[b * p.seq + s] != 0u) { acc += hidden[(b * p.seq + s) * p.hidden + h]; }
        }
        let mean = acc * inv_count;
        out[b * p.hidden + h] = mean;
        sq += mean * mean;
    }
    // Every invocation takes part in the reduction (uniform control flow), even if it owns no channel.
    let norm = sqrt(workgroup_sum(sq, lid));
    if (p.normalize != 0u) {
        // sentence-transformers divides by max(‖v‖, 1e-12) (torch.nn.functional.normalize).
        let inv = 1.0 / max(norm, 1e-12);
        for (var h = lid; h < p.hidden; h += WG) { out[b * p.hidden + h] = out[b * p.hidden + h] * inv; }
    }
}
