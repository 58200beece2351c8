// Embedding gather: out[t, :] = table[ids[t], :], the table in any stored format (f32, f16, a
// GGUF block format; decoded in registers by quant.wgsl, so a quantized table is never expanded
// in memory). An id past the table's rows gives a zero row (the caller validates ids).
// Napkin math: reads T rows of the table (T·D·bytes-per-element), writes T·D floats.

@group(0) @binding(0) var<storage, read> w: array<u32>;          // [rows, D] stored
@group(0) @binding(1) var<storage, read> ids: array<u32>;        // [T]
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // [T, D]
@group(0) @binding(3) var<uniform> p: GatherParams;

struct GatherParams { tokens: u32, dim: u32, rows: u32, _pad: u32 }

@compute @workgroup_size(256)
fn gather(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, ng, lid, 256u);
    if (i >= p.tokens * p.dim) { return; }
    let t = i / p.dim;
    let j = i % p.dim;
    let row = ids[t];
    out[i] = select(0.0, weight(row, j, p.dim), row < p.rows);
}
