// Scaled dot-product attention, one workgroup per (batch, query, head), keys streamed in chunks
// of 256 with an online softmax (running max and sum), so any number of keys fits.
// Grouped-query heads: query head h reads KV head h / (heads / kv_heads) (SmolLM2: 9 over 3).
// K and V live in a cache [B, capacity, kv_heads, D] of which the first kv_len positions are
// valid: decoding appends rows at kv_len and never moves the others. Query t sits at position
// q_pos0 + t; with `causal` it sees keys 0..=q_pos0 + t. `key_mask` [B, capacity] (0 = padding)
// masks keys (BERT). A query that sees no key outputs zeros.
// Slotted caches (continuous batching): with `use_rows`, the cache holds many sequences
// [slots, capacity, kv_heads, D] and `rows` [B, 2] gives batch row b its slot and the position
// of its first query, so one dispatch serves sequences of different lengths.
// Napkin math per (query, head): 2·kv_len·D reads of K and V, 4·kv_len·D flops; decode is
// bandwidth-bound on the cache.

@group(0) @binding(0) var<storage, read> q: array<f32>;        // [B, T, heads, D]
@group(0) @binding(1) var<storage, read> k: array<f32>;        // [B, capacity, kv_heads, D]
@group(0) @binding(2) var<storage, read> v: array<f32>;        // [B, capacity, kv_heads, D]
@group(0) @binding(3) var<storage, read> key_mask: array<u32>; // [B, capacity]
@group(0) @binding(4) var<storage, read> rows: array<u32>;     // [B, 2] (slot, q_pos0)
@group(0) @binding(5) var<storage, read_write> o: array<f32>;  // [B, T, heads, D]
@group(0) @binding(6) var<uniform> p: AttentionParams;

struct AttentionParams {
    batch: u32, q_len: u32, heads: u32, kv_heads: u32,
    head_dim: u32, kv_len: u32, capacity: u32, q_pos0: u32,
    causal: u32, use_mask: u32, scale: f32, use_rows: u32,
}

const WG: u32 = 256u;
var<workgroup> q_row: array<f32, 256>;
var<workgroup> probs: array<f32, 256>;

@compute @workgroup_size(256)
fn attention(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let idx = wid.y * ng.x + wid.x;
    // Uniform per workgroup, so the early return keeps barriers in uniform control flow.
    if (idx >= p.batch * p.q_len * p.heads) { return; }
    let h = idx % p.heads;
    let t = (idx / p.heads) % p.q_len;
    let b = idx / (p.heads * p.q_len);
    var slot = b;
    var q_pos = p.q_pos0 + t;
    if (p.use_rows != 0u) {
        slot = rows[2u * b];
        q_pos = rows[2u * b + 1u] + t;
    }
    let kvh = h / (p.heads / p.kv_heads);
    let d = p.head_dim;
    let q_base = ((b * p.q_len + t) * p.heads + h) * d;
    if (lid < d) { q_row[lid] = q[q_base + lid]; }
    workgroupBarrier();

    var limit = p.kv_len;
    if (p.causal != 0u) { limit = min(limit, q_pos + 1u); }
    var m_run = NEG_INF;
    var l_run = 0.0;
    var acc = 0.0;
    for (var s0 = 0u; s0 < limit; s0 += WG) {
        let s = s0 + lid;
        var score = NEG_INF;
        if (s < limit && (p.use_mask == 0u || key_mask[slot * p.capacity + s] != 0u)) {
            let k_base = ((slot * p.capacity + s) * p.kv_heads + kvh) * d;
            var dot = 0.0;
            for (var j = 0u; j < d; j++) { dot = fma(q_row[j], k[k_base + j], dot); }
            score = dot * p.scale;
        }
        let chunk_max = workgroup_reduce(score, lid, true);
        let new_max = max(m_run, chunk_max);
        if (new_max == NEG_INF) { continue; } // every key so far masked (uniform)
        let prob = select(exp(score - new_max), 0.0, score == NEG_INF);
        probs[lid] = prob;
        let chunk_sum = workgroup_reduce(prob, lid, false); // its barriers also publish `probs`
        let correction = exp(m_run - new_max);
        l_run = l_run * correction + chunk_sum;
        if (lid < d) {
            var part = 0.0;
            let n = min(WG, limit - s0);
            for (var j = 0u; j < n; j++) {
                part = fma(probs[j], v[((slot * p.capacity + s0 + j) * p.kv_heads + kvh) * d + lid], part);
            }
            acc = acc * correction + part;
        }
        m_run = new_max;
        workgroupBarrier(); // `probs` is rewritten by the next chunk
    }
    if (lid < d) {
        o[q_base + lid] = select(acc / l_run, 0.0, l_run == 0.0);
    }
}
