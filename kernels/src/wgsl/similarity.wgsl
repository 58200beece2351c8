// Similarity support: squared row norms of stored vectors, and turning dot products into
// selection keys (higher is better) for a metric.
// metric 0 dot: key = q·x. metric 1 cosine: key = q·x / (‖q‖‖x‖), 0 when either norm is 0.
// metric 2 l2: key = -‖q - x‖² = -(‖q‖² + ‖x‖² - 2 q·x), clamped to <= 0.
// Napkin math: row_norms reads the corpus once; keys reads and writes Q·N floats.

@group(0) @binding(0) var<storage, read> w: array<u32>;            // row_norms: [rows, D] stored
@group(0) @binding(1) var<storage, read_write> norms: array<f32>;  // row_norms: [rows]
@group(0) @binding(2) var<uniform> p: NormsParams;

struct NormsParams { rows: u32, dim: u32, _pad0: u32, _pad1: u32 }

@compute @workgroup_size(256)
fn row_norms(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = linear_index(wid, ng, lid, 256u);
    if (r >= p.rows) { return; }
    var s = 0.0;
    for (var j = 0u; j < p.dim; j++) { let v = weight(r, j, p.dim); s = fma(v, v, s); }
    norms[r] = s;
}
