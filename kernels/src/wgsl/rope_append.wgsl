// Llama's step between the Q, K, V projections and attention, in one dispatch (lavapipe pays
// ~85 us a dispatch; rope.wgsl and kv_write.wgsl are the same work in four): q_out = RoPE(q),
// and RoPE(k) and v appended to their slotted caches as kv_write.wgsl appends rows.
// Token i of the N = B·T is step token t = i % T of sequence b = i / T, stored at
// cache[slot_b, pos_b + t] with (slot_b, pos_b) = rows[b]; out-of-range rows are dropped.
// The rotation is rope.wgsl's, in its order (the same results bit for bit).
// Invocations: q's rotating pairs (copied tail pairs included), then k's, then v's elements.
// Napkin math: reads and writes (heads + 2·kv_heads)·D floats a token, plus the table rows.

@group(0) @binding(0) var<storage, read> q: array<f32>;          // [N, heads, D]
@group(0) @binding(1) var<storage, read> k: array<f32>;          // [N, kv_heads, D]
@group(0) @binding(2) var<storage, read> v: array<f32>;          // [N, kv_heads, D]
@group(0) @binding(3) var<storage, read> positions: array<u32>;  // [N]
@group(0) @binding(4) var<storage, read> cos_sin: array<f32>;    // [max_pos, rotary/2, 2]
@group(0) @binding(5) var<storage, read> rows: array<u32>;       // [B, 2]
@group(0) @binding(6) var<storage, read_write> q_out: array<f32>;   // [N, heads, D]
@group(0) @binding(7) var<storage, read_write> k_cache: array<f32>; // [slots, capacity, kv_heads, D]
@group(0) @binding(8) var<storage, read_write> v_cache: array<f32>; // [slots, capacity, kv_heads, D]
@group(0) @binding(9) var<uniform> p: RopeAppendParams;

struct RopeAppendParams {
    tokens: u32, q_len: u32, heads: u32, kv_heads: u32,
    head_dim: u32, rotary: u32, interleaved: u32, max_pos: u32,
    capacity: u32, slots: u32, _pad0: u32, _pad1: u32,
}

// The element offset of token i's row in the caches, or none (0xFFFFFFFF) where its slot or
// position falls outside them.
fn cache_row(i: u32) -> u32 {
    let b = i / p.q_len;
    let slot = rows[2u * b];
    let pos = rows[2u * b + 1u] + i % p.q_len;
    if (slot >= p.slots || pos >= p.capacity) { return 0xFFFFFFFFu; }
    return (slot * p.capacity + pos) * p.kv_heads * p.head_dim;
}

// The two offsets within a head that pair j rotates (or, past the rotary part, copies).
fn pair(j: u32) -> vec2<u32> {
    let half_r = p.rotary / 2u;
    if (j >= half_r) {
        let a = p.rotary + 2u * (j - half_r);
        return vec2<u32>(a, a + 1u);
    }
    if (p.interleaved != 0u) {
        return vec2<u32>(2u * j, 2u * j + 1u);
    }
    return vec2<u32>(j, j + half_r);
}

// Pair j of a head at token i's position, (x0, x1) rotated as rope.wgsl rotates them.
fn rotate(i: u32, j: u32, x0: f32, x1: f32) -> vec2<f32> {
    let half_r = p.rotary / 2u;
    if (j >= half_r) { return vec2<f32>(x0, x1); }
    let pos = min(positions[i], p.max_pos - 1u);
    let c = cos_sin[(pos * half_r + j) * 2u];
    let s = cos_sin[(pos * half_r + j) * 2u + 1u];
    return vec2<f32>(x0 * c - x1 * s, x0 * s + x1 * c);
}

@compute @workgroup_size(256)
fn rope_append(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let idx = linear_index(wid, ng, lid, 256u);
    let half_d = p.head_dim / 2u;
    let q_pairs = p.tokens * p.heads * half_d;
    let k_pairs = p.tokens * p.kv_heads * half_d;
    let v_elements = p.tokens * p.kv_heads * p.head_dim;
    if (idx < q_pairs) {
        let i = idx / (p.heads * half_d);
        let h = (idx / half_d) % p.heads;
        let j = idx % half_d;
        // D is even (the launcher checks), so every pair has both elements.
        let o = pair(j) + (i * p.heads + h) * p.head_dim;
        let r = rotate(i, j, q[o.x], q[o.y]);
        q_out[o.x] = r.x;
        q_out[o.y] = r.y;
    } else if (idx < q_pairs + k_pairs) {
        let kp = idx - q_pairs;
        let i = kp / (p.kv_heads * half_d);
        let h = (kp / half_d) % p.kv_heads;
        let j = kp % half_d;
        let row = cache_row(i);
        if (row == 0xFFFFFFFFu) { return; }
        let o = pair(j) + h * p.head_dim;
        let src = i * p.kv_heads * p.head_dim;
        let r = rotate(i, j, k[src + o.x], k[src + o.y]);
        k_cache[row + o.x] = r.x;
        k_cache[row + o.y] = r.y;
    } else if (idx < q_pairs + k_pairs + v_elements) {
        let e = idx - q_pairs - k_pairs;
        let width = p.kv_heads * p.head_dim;
        let i = e / width;
        let row = cache_row(i);
        if (row == 0xFFFFFFFFu) { return; }
        v_cache[row + e % width] = v[e];
    }
}
