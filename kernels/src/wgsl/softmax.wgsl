// Row-wise softmax of scale * x with an optional key mask, one workgroup per row.
// mask (u32, 0 = masked) has `mask_rows` rows of `cols`; row r uses mask row r / rows_per_mask
// (e.g. one padding mask per sequence shared by all heads and query rows). A row with every
// column masked gives all zeros. Max-subtracted for stability.
// Napkin math: reads the row three times from cache, writes it once.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> mask: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@group(0) @binding(3) var<uniform> p: SoftmaxParams;

struct SoftmaxParams { rows: u32, cols: u32, scale: f32, rows_per_mask: u32 }

const WG: u32 = 256u;

fn kept(row: u32, c: u32) -> bool {
    if (p.rows_per_mask == 0u) { return true; }
    return mask[(row / p.rows_per_mask) * p.cols + c] != 0u;
}

@compute @workgroup_size(256)
fn softmax(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let row = wid.y * ng.x + wid.x;
    if (row >= p.rows) { return; }
    let base = row * p.cols;
    var m = NEG_INF;
    for (var c = lid; c < p.cols; c += WG) {
        if (kept(row, c)) { m = max(m, p.scale * x[base + c]); }
    }
    m = workgroup_reduce(m, lid, true);
    var s = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        if (kept(row, c)) { s += exp(p.scale * x[base + c] - m); }
    }
    s = workgroup_reduce(s, lid, false);
    let inv = select(1.0 / s, 0.0, s == 0.0);
    for (var c = lid; c < p.cols; c += WG) {
        out[base + c] = select(0.0, exp(p.scale * x[base + c] - m) * inv, kept(row, c));
    }
}
