// Top-k selection on the GPU: the best k (key descending, ties to the lower index) of each
// query's keys, in passes that each sort chunks of 2048 entries in workgroup memory (bitonic
// network) and keep the best k of each chunk, until one list of k per query remains.
// select_chunks reads keys [Q, N] of one corpus piece (indices offset by index_base);
// merge_lists reads candidate lists [Q, lists, k]. NaN keys sort last. Padding entries have
// index 0xFFFFFFFF and key NEG_INF.
// Napkin math: a pass reads each entry once and does 2048·66/2 compare-exchanges per chunk.

@group(0) @binding(0) var<storage, read> in_key: array<f32>;
@group(0) @binding(1) var<storage, read> in_idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> out_key: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_idx: array<u32>;
@group(0) @binding(4) var<uniform> p: TopkParams;

struct TopkParams {
    queries: u32, n: u32, k: u32, index_base: u32,    // n: keys per query (select) or lists (merge)
    out_lists: u32, out_list_base: u32, lists_per_group: u32, _pad: u32,
}

const CHUNK: u32 = 2048u;
const NONE: u32 = 0xffffffffu;
var<workgroup> skey: array<f32, 2048>;
var<workgroup> sidx: array<u32, 2048>;

fn before(a: u32, b: u32) -> bool {
    let ka = skey[a];
    let kb = skey[b];
    return ka > kb || (ka == kb && sidx[a] < sidx[b]);
}

fn sort_chunk(lid: u32) {
    for (var size = 2u; size <= CHUNK; size = size << 1u) {
        for (var stride = size >> 1u; stride > 0u; stride = stride >> 1u) {
            for (var t = lid; t < CHUNK / 2u; t += 256u) {
                let i = 2u * stride * (t / stride) + (t % stride);
                let j = i + stride;
                let best_first = (i & size) == 0u;
                let swap = select(before(i, j), before(j, i), best_first);
                if (swap) {
                    let kk = skey[i]; skey[i] = skey[j]; skey[j] = kk;
                    let ii = sidx[i]; sidx[i] = sidx[j]; sidx[j] = ii;
                }
            }
            workgroupBarrier();
        }
    }
}

fn clean(k: f32) -> f32 {
    return select(k, NEG_INF, k != k); // NaN sorts last
}

fn write_best(q: u32, list: u32, lid: u32) {
    for (var s = lid; s < p.k; s += 256u) {
        let o = (q * p.out_lists + list) * p.k + s;
        out_key[o] = skey[s];
        out_idx[o] = sidx[s];
    }
}

@compute @workgroup_size(256)
fn select_chunks(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let chunk = wid.x;
    let q = wid.y;
    for (var s = lid; s < CHUNK; s += 256u) {
        let r = chunk * CHUNK + s;
        if (r < p.n) {
            skey[s] = clean(in_key[q * p.n + r]);
            sidx[s] = p.index_base + r;
        } else {
            skey[s] = NEG_INF;
            sidx[s] = NONE;
        }
    }
    workgroupBarrier();
    sort_chunk(lid);
    write_best(q, p.out_list_base + chunk, lid);
}

@compute @workgroup_size(256)
fn merge_lists(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let group = wid.x;
    let q = wid.y;
    let first = group * p.lists_per_group;
    for (var s = lid; s < CHUNK; s += 256u) {
        let list = first + s / p.k;
        let slot = s % p.k;
        if (s < p.lists_per_group * p.k && list < p.n) {
            let i = (q * p.n + list) * p.k + slot;
            skey[s] = in_key[i];
            sidx[s] = in_idx[i];
        } else {
            skey[s] = NEG_INF;
            sidx[s] = NONE;
        }
    }
    workgroupBarrier();
    sort_chunk(lid);
    write_best(q, group, lid);
}
