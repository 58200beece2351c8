// Top-k selection for CPU adapters (lavapipe), k <= 64: one invocation owns a run of one query's
// keys (select_runs) or a group of candidate lists (merge_runs) and keeps its best k in a private
// list sorted best first, inserting only an entry that beats the current k-th. After the first
// few hundred entries almost none does, so the cost is one storage load per key: no workgroup
// memory and no barriers, which lavapipe turns into per-lane loops and coroutine switches (see
// ARCHITECTURE.md). Same order as topk.wgsl: key descending, ties to the lower index, NaN last;
// same output: lists [Q, lists, k], padded with index 0xFFFFFFFF and key NEG_INF.
// Napkin math: 1M keys = 1M scalar loads ~ 14M lane-cycles, a few ms per query, against the
// bitonic kernel's 2048·66/2 compare-exchanges through workgroup memory per 2048 keys.

@group(0) @binding(0) var<storage, read> in_key: array<f32>;
@group(0) @binding(1) var<storage, read> in_idx: array<u32>;
@group(0) @binding(2) var<storage, read_write> out_key: array<f32>;
@group(0) @binding(3) var<storage, read_write> out_idx: array<u32>;
@group(0) @binding(4) var<uniform> p: TopkParams;

// As topk.wgsl's; `lists_per_group` is the run length (select) or the lists merged per
// invocation (merge).
struct TopkParams {
    queries: u32, n: u32, k: u32, index_base: u32,
    out_lists: u32, out_list_base: u32, lists_per_group: u32, _pad: u32,
}

const NONE: u32 = 0xffffffffu;
var<private> best_key: array<f32, 64>;
var<private> best_idx: array<u32, 64>;

fn clean(k: f32) -> f32 {
    return select(k, NEG_INF, k != k); // NaN sorts last
}

fn reset() {
    for (var s = 0u; s < p.k; s++) {
        best_key[s] = NEG_INF;
        best_idx[s] = NONE;
    }
}

fn offer(key: f32, idx: u32) {
    let last = p.k - 1u;
    let last_key = best_key[last];
    if (!(key > last_key || (key == last_key && idx < best_idx[last]))) {
        return;
    }
    var i = last;
    loop {
        if (i == 0u) { break; }
        let k = best_key[i - 1u];
        let x = best_idx[i - 1u];
        if (key > k || (key == k && idx < x)) {
            best_key[i] = k;
            best_idx[i] = x;
            i -= 1u;
        } else {
            break;
        }
    }
    best_key[i] = key;
    best_idx[i] = idx;
}

fn write_best(q: u32, list: u32) {
    for (var s = 0u; s < p.k; s++) {
        let o = (q * p.out_lists + list) * p.k + s;
        out_key[o] = best_key[s];
        out_idx[o] = best_idx[s];
    }
}

@compute @workgroup_size(64)
fn select_runs(@builtin(global_invocation_id) gid: vec3<u32>) {
    let run = gid.x;
    let q = gid.y;
    let start = run * p.lists_per_group;
    if (q >= p.queries || (start >= p.n && !(run == 0u && p.n == 0u))) {
        return;
    }
    reset();
    let end = min(start + p.lists_per_group, p.n);
    for (var r = start; r < end; r++) {
        offer(clean(in_key[q * p.n + r]), p.index_base + r);
    }
    write_best(q, p.out_list_base + run);
}

@compute @workgroup_size(64)
fn merge_runs(@builtin(global_invocation_id) gid: vec3<u32>) {
    let group = gid.x;
    let q = gid.y;
    let first = group * p.lists_per_group;
    if (q >= p.queries || first >= p.n) {
        return;
    }
    reset();
    let end = min(first + p.lists_per_group, p.n);
    for (var list = first; list < end; list++) {
        for (var s = 0u; s < p.k; s++) {
            let i = (q * p.n + list) * p.k + s;
            offer(in_key[i], in_idx[i]);
        }
    }
    write_best(q, group);
}
