// Rotary position embedding, out of place, from a cos/sin table (built on the CPU in f64, so
// positions in the thousands lose no accuracy to f32 angle arithmetic).
// interleaved (GGUF Llama, llama.cpp rope type NORM): pairs (x[2i], x[2i+1]);
// halves (Hugging Face, NEOX): pairs (x[i], x[i + rotary/2]).
// Pair i at position t rotates by angle t·base^(-2i/rotary); dimensions past `rotary` are copied.
// Napkin math: reads and writes T·heads·D floats, plus the table rows of the positions.

@group(0) @binding(0) var<storage, read> x: array<f32>;          // [T, heads, D]
@group(0) @binding(1) var<storage, read> positions: array<u32>;  // [T]
@group(0) @binding(2) var<storage, read> cos_sin: array<f32>;    // [max_pos, rotary/2, 2]
@group(0) @binding(3) var<storage, read_write> out: array<f32>;  // [T, heads, D]
@group(0) @binding(4) var<uniform> p: RopeParams;

struct RopeParams { tokens: u32, heads: u32, head_dim: u32, rotary: u32, interleaved: u32, max_pos: u32, _pad0: u32, _pad1: u32 }

@compute @workgroup_size(256)
fn rope(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    // One invocation per element slot of the first half-dimension: (token, head, j) with j < D/2…
    let idx = linear_index(wid, ng, lid, 256u);
    let half_d = p.head_dim / 2u;
    let per_token = p.heads * half_d;
    if (idx >= p.tokens * per_token) { return; }
    let t = idx / per_token;
    let rem = idx % per_token;
    let h = rem / half_d;
    let j = rem % half_d;
    let base = (t * p.heads + h) * p.head_dim;
    let half_r = p.rotary / 2u;
    if (j >= half_r) {
        // …past the rotary part, the invocation copies its two trailing elements unchanged.
        let a = base + p.rotary + 2u * (j - half_r);
        out[a] = x[a];
        if (a + 1u < base + p.head_dim) { out[a + 1u] = x[a + 1u]; }
        return;
    }
    let pos = min(positions[t], p.max_pos - 1u);
    let c = cos_sin[(pos * half_r + j) * 2u];
    let s = cos_sin[(pos * half_r + j) * 2u + 1u];
    var i0 = base + j;
    var i1 = base + j + half_r;
    if (p.interleaved != 0u) {
        i0 = base + 2u * j;
        i1 = base + 2u * j + 1u;
    }
    let x0 = x[i0];
    let x1 = x[i1];
    out[i0] = x0 * c - x1 * s;
    out[i1] = x0 * s + x1 * c;
}
