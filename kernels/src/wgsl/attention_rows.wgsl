// Scaled dot-product attention on CPU adapters (lavapipe): one invocation per (batch, query,
// head), keys visited one at a time with an online softmax (running max and sum), the query and
// the output accumulator held in D4 named vec4 registers (`//#unroll`, expanded by unroll.rs).
// Same contract as attention.wgsl (grouped-query heads, KV cache [B, capacity, kv_heads, D] of
// which kv_len positions are valid, causal and key-padding masks; a query that sees no key
// outputs zeros; slotted caches through `rows`). GPUs take attention.wgsl.
// Why a second kernel: attention.wgsl gives each (query, head) a workgroup of 256 that meets at
// barriers; lavapipe runs a barrier as a coroutine switch and the 256 lanes as 32 SIMD passes,
// mostly idle for short sequences: at BERT's shapes (8 × 32 tokens, 12 heads of 32) it ran at
// 0.05 GFLOP/s and took half of a layer's time. Here each lane owns a row: no barriers, no
// workgroup memory, and each loaded key and value element feeds 4 FMAs of a vec4.
// Masked keys are skipped, not added as zeros, so a row's arithmetic does not depend on how much
// padding its batch has: padded and unpadded inputs give identical bits.
// Napkin math per row: 2·kv_len·D loads, 4·kv_len·D flops.

@group(0) @binding(0) var<storage, read> q: array<vec4<f32>>;  // [B, T, heads, D]
@group(0) @binding(1) var<storage, read> k: array<vec4<f32>>;  // [B, capacity, kv_heads, D]
@group(0) @binding(2) var<storage, read> v: array<vec4<f32>>;  // [B, capacity, kv_heads, D]
@group(0) @binding(3) var<storage, read> key_mask: array<u32>; // [B, capacity]
@group(0) @binding(4) var<storage, read> rows: array<u32>;     // [B, 2] (slot, q_pos0)
@group(0) @binding(5) var<storage, read_write> o: array<vec4<f32>>; // [B, T, heads, D]
@group(0) @binding(6) var<uniform> p: AttentionParams;

struct AttentionParams {
    batch: u32, q_len: u32, heads: u32, kv_heads: u32,
    head_dim: u32, kv_len: u32, capacity: u32, q_pos0: u32,
    causal: u32, use_mask: u32, scale: f32, use_rows: u32,
}

@compute @workgroup_size(8)
fn attention_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let idx = linear_index(wid, ng, lid, 8u);
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
    let q_base = ((b * p.q_len + t) * p.heads + h) * {D4}u;
    //#unroll J D4
    let q{J} = q[q_base + {J}u];
    var acc{J} = vec4<f32>(0.0);
    //#end

    var limit = p.kv_len;
    if (p.causal != 0u) { limit = min(limit, q_pos + 1u); }
    var m_run = NEG_INF;
    var l_run = 0.0;
    for (var s = 0u; s < limit; s++) {
        if (p.use_mask != 0u && key_mask[slot * p.capacity + s] == 0u) { continue; }
        let kv_base = ((slot * p.capacity + s) * p.kv_heads + kvh) * {D4}u;
        var dot4 = vec4<f32>(0.0);
        //#unroll J D4
        dot4 = fma(q{J}, k[kv_base + {J}u], dot4);
        //#end
        let score = (dot4.x + dot4.y + dot4.z + dot4.w) * p.scale;
        let new_max = max(m_run, score);
        let correction = exp(m_run - new_max);
        let prob = exp(score - new_max);
        l_run = l_run * correction + prob;
        //#unroll J D4
        acc{J} = fma(vec4<f32>(prob), v[kv_base + {J}u], acc{J} * correction);
        //#end
        m_run = new_max;
    }
    let inv = select(1.0 / l_run, 0.0, l_run == 0.0);
    //#unroll J D4
    o[q_base + {J}u] = acc{J} * inv;
    //#end
}
