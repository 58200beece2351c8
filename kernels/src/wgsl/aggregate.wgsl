// Aggregates over N vectors x [N, D], one workgroup per dimension d (values of d across the N
// vectors reduced in workgroup memory). OP (set by the launcher):
// 0 sum; 1 mean; 2 weighted mean with weights normalised to sum 1; 3 population standard
// deviation; 4 median (numpy: mean of the two middle values for even N; N <= 2048, sorted by a
// bitonic network); 5 sum of unit vectors x_i / ‖x_i‖ (zero vectors add 0), the first step of the
// average pairwise cosine.
// Napkin math: reads N·D values once (median: sorts N per dimension).

@group(0) @binding(0) var<storage, read> x: array<f32>;          // [N, D]
@group(0) @binding(1) var<storage, read> aux: array<f32>;        // weights [N] (op 2) or squared norms [N] (op 5)
@group(0) @binding(2) var<storage, read_write> out: array<f32>;  // [D]
@group(0) @binding(3) var<uniform> p: AggregateParams;

struct AggregateParams { n: u32, dim: u32, _pad0: u32, _pad1: u32 }

const WG: u32 = 256u;
const SORT: u32 = 2048u;
var<workgroup> vals: array<f32, 2048>;

@compute @workgroup_size(256)
fn aggregate(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let d = wid.y * ng.x + wid.x;
    if (d >= p.dim) { return; }
    if (OP == 4u) {
        for (var s = lid; s < SORT; s += WG) {
            // Padding sorts after every real value.
            vals[s] = select(3.40282347e38, x[s * p.dim + d], s < p.n);
        }
        workgroupBarrier();
        for (var size = 2u; size <= SORT; size = size << 1u) {
            for (var stride = size >> 1u; stride > 0u; stride = stride >> 1u) {
                for (var t = lid; t < SORT / 2u; t += WG) {
                    let i = 2u * stride * (t / stride) + (t % stride);
                    let j = i + stride;
                    let ascending = (i & size) == 0u;
                    if ((vals[i] > vals[j]) == ascending) {
                        let tmp = vals[i]; vals[i] = vals[j]; vals[j] = tmp;
                    }
                }
                workgroupBarrier();
            }
        }
        if (lid == 0u) {
            let mid = p.n / 2u;
            out[d] = select(vals[mid], 0.5 * (vals[mid - 1u] + vals[mid]), p.n % 2u == 0u);
        }
        return;
    }
    var s = 0.0;
    var w = 0.0;
    for (var i = lid; i < p.n; i += WG) {
        let v = x[i * p.dim + d];
        switch OP {
            case 2u: { s += aux[i] * v; w += aux[i]; }
            case 5u: { if (aux[i] > 0.0) { s += v * inverseSqrt(aux[i]); } }
            default: { s += v; }
        }
    }
    let total = workgroup_sum(s, lid);
    let mean = total / f32(p.n);
    if (OP == 3u) {
        var sq = 0.0;
        for (var i = lid; i < p.n; i += WG) { let e = x[i * p.dim + d] - mean; sq += e * e; }
        let var_sum = workgroup_sum(sq, lid);
        if (lid == 0u) { out[d] = sqrt(var_sum / f32(p.n)); }
        return;
    }
    let weight_total = workgroup_sum(w, lid);
    if (lid == 0u) {
        switch OP {
            case 1u: { out[d] = mean; }
            case 2u: { out[d] = total / weight_total; }
            default: { out[d] = total; }
        }
    }
}
