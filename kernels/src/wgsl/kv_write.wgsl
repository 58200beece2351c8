// Appends rows to a slotted KV cache: src [B, T, W] lands at cache[slot_b, pos_b + t, :] with
// (slot_b, pos_b) = rows[b]. Prefill writes one sequence's T rows; a continuous-batching decode
// step writes one row for each of B sequences, each into its own slot, in one dispatch.
// Out-of-range rows are dropped rather than written elsewhere (callers check positions).
// Napkin math: 32 bytes moved per invocation, like copy.wgsl.

@group(0) @binding(0) var<storage, read> src: array<vec4<f32>>;
@group(0) @binding(1) var<storage, read> rows: array<u32>;
@group(0) @binding(2) var<storage, read_write> cache: array<vec4<f32>>;
@group(0) @binding(3) var<uniform> p: KvWriteParams;

struct KvWriteParams { batch: u32, q_len: u32, width4: u32, capacity: u32, slots: u32, _pad0: u32, _pad1: u32, _pad2: u32 }

@compute @workgroup_size(256)
fn kv_write(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let i = linear_index(wid, ng, lid, 256u);
    if (i >= p.batch * p.q_len * p.width4) { return; }
    let j = i % p.width4;
    let bt = i / p.width4;
    let t = bt % p.q_len;
    let b = bt / p.q_len;
    let slot = rows[2u * b];
    let pos = rows[2u * b + 1u] + t;
    if (slot >= p.slots || pos >= p.capacity) { return; }
    cache[(slot * p.capacity + pos) * p.width4 + j] = src[i];
}
