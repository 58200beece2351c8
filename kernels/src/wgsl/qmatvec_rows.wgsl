// out[m, n] = Σ_k x[m, k] · W[n, k] (+ bias) (+ residual) on CPU adapters (lavapipe), TOKENS
// tokens per invocation (decoding; a prompt runs as groups of TOKENS along z), W read straight
// from its stored blocks. GPUs take qmatvec.wgsl and, for more than 8 tokens, qmatmul.wgsl.
// Each (row, token) sums its products in the same order whatever ROWS and TOKENS are, so a
// token's result does not depend on how many others share its dispatch.
// Why a second matvec: lavapipe (Mesa 22.3, gallivm's emit_load_mem) runs every storage load as
// a loop over the 8 SIMD lanes, each lane testing the exec mask and, per component, the bound,
// so a matvec there is bound by the count of load instructions and components, not bytes. So
// here
// - W is read 16 bytes a load, as 16-byte units (`w128`): from the storage buffer as vec2<u64>
//   (the adapter's SHADER_INT64; two components where vec4<u32> has four), or from the weight's
//   rgba32uint texel copy (TEXELS), a texel fetch being one gather across the lanes. Which is
//   faster depends on the CPU (benches/NOTES.md: storage on an AMD EPYC Zen 4; texels beat an
//   older u64-word load on an Intel Xeon), so `Gpu` times both once and gives weights texel
//   copies only where they win;
//   each format's chunk decoder picks the u32 words its block layout is written in from the
//   units;
// - each invocation owns ROWS whole rows and walks K in steps of STEP elements (see `chunk`),
//   decoding each row's step from whole words (64 elements of Q4_1 are 3 units, of Q8_0 5),
//   never byte by byte;
// - each 32 elements of x (8 vec4 per token, read as u64 pairs) are loaded once per subgroup
//   where the subgroup is the 8-lane workgroup (SHARED_X): lane l loads vec4 l and broadcasts it,
//   an extract and a splat in gallivm; elsewhere (LOCAL_X) each invocation loads them itself,
//   shared by its rows.
// - the block scales are taken out of the inner product: each block or sub-block (SUB vec4s)
//   sums q·x, then adds scale·Σq·x and, for formats with a zero point or a min (OFFSET),
//   offset·Σx, Σx computed once a step and shared by every row. An element then costs a mask,
//   a conversion and a multiply-add: 4-bit quants are masked in place (component c of a vec4 is
//   byte c's nibble times 2^(8c)) and x is scaled by XSCALE = 2^(-8c) to match, exactly; Q8_0's
//   signed bytes are shifted to the top of the lane and the block scale takes the 2^-24. Each
//   (row, token) keeps one f32 sum, the group's four partial sums added before its scale: a
//   quarter of the accumulators, and fewer registers spilled at 16 rows an invocation.
// - x may be transformed as it is loaded, so that the op before the matmul costs no dispatch of
//   its own (lavapipe pays ~85 us a dispatch to wake its threads; benches/NOTES.md): X_RMS
//   reads rms_norm(x) · aux (norm.wgsl's rms_norm, aux its weight [K]), each token's 1/rms
//   summed once per invocation before the loop; X_SWIGLU reads silu(x) · aux (binary.wgsl's
//   swiglu, x the gate and aux the up projection, both [M, K]); X_PLAIN reads x.
// No workgroup memory, no barriers, no early return (SHARED_X needs every lane). The `//#unroll`
// sections are expanded by `unroll.rs`, which also keeps only the decoder section (F0..F9,
// F2_PAIR..F6_PAIR) the launcher selects. The launcher prepends BLOCK_ELEMENTS, BLOCK_BYTES and
// XSCALE, and sets SUB, SCALES and OFFSET; quant.wgsl is not included (it reads u32 words).
// Napkin math: N·K·bytes-per-element of weight bytes read once; x (M·K·4 bytes) is read N/(8·ROWS)
// times from cache with SHARED_X, N/ROWS times without.

@group(0) @binding(0) var<storage, read> x: array<vec2<u64>>;   // [M, K] f32, 4 a load pair
//#unroll z STORAGE
@group(0) @binding(1) var<storage, read> w: array<vec2<u64>>;   // [N, K] stored, 16 bytes a load
// The weights' functions take their texture (TEXELS) or, here, the matrix's number (0, 1, 2:
// w, w1, w2), a constant wherever they are inlined, so each load reads one binding.
alias Weights = u32;
//#end
//#unroll z TEXELS
@group(0) @binding(1) var wt: texture_2d<u32>;                  // [N, K] stored, 16 bytes a texel
alias Weights = texture_2d<u32>;
//#end
@group(0) @binding(2) var<storage, read> bias: array<f32>;
@group(0) @binding(3) var<storage, read> residual: array<f32>;
@group(0) @binding(4) var<storage, read_write> out: array<f32>; // [M, N]
@group(0) @binding(5) var<storage, read> aux: array<vec2<u64>>; // X_RMS [K], X_SWIGLU [M, K] f32
// Further matrices of the same input (MATS of them, read as W is): [N1, K] into out1 [M, N1], …
//#unroll z MAT1
//#unroll y TEXELS
@group(0) @binding(6) var wt1: texture_2d<u32>;
//#end
//#unroll y STORAGE
@group(0) @binding(6) var<storage, read> w1: array<vec2<u64>>;
//#end
@group(0) @binding(7) var<storage, read_write> out1: array<f32>;
//#end
//#unroll z MAT2
//#unroll y TEXELS
@group(0) @binding(8) var wt2: texture_2d<u32>;
//#end
//#unroll y STORAGE
@group(0) @binding(8) var<storage, read> w2: array<vec2<u64>>;
//#end
@group(0) @binding(9) var<storage, read_write> out2: array<f32>;
//#end
@group(0) @binding({UNIFORM}) var<uniform> p: QMatvecParams;

// n, n1, n2: the rows of each matrix (flags 0 where MATS > 1: no epilogue).
struct QMatvecParams { m: u32, n: u32, k: u32, flags: u32, eps: f32, n1: u32, n2: u32, pad0: u32 }

fn lo32(v: u64) -> u32 { return u32(v & 0xFFFFFFFFlu); }
fn hi32(v: u64) -> u32 { return u32(v >> 32u); }

// Four f32 of x, loaded as two u64 (half the loads of a vec4<f32>).
fn x4(i: u32) -> vec4<f32> {
    let v = x[i];
    return bitcast<vec4<f32>>(vec4<u32>(lo32(v.x), hi32(v.x), lo32(v.y), hi32(v.y)));
}

fn aux4(i: u32) -> vec4<f32> {
    let v = aux[i];
    return bitcast<vec4<f32>>(vec4<u32>(lo32(v.x), hi32(v.x), lo32(v.y), hi32(v.y)));
}

// x's vec4 i (vec4 kv of its row) as the product reads it (see the header): `r` is the row's
// 1/rms under X_RMS, unused otherwise. Each expression is the unfused kernel's, in its order.
fn xin(i: u32, kv: u32, r: f32) -> vec4<f32> {
//#unroll z X_PLAIN
    return x4(i);
//#end
//#unroll z X_RMS
    return (x4(i) * r) * aux4(kv);
//#end
//#unroll z X_SWIGLU
    let g = x4(i);
    return vec4<f32>(silu(g.x), silu(g.y), silu(g.z), silu(g.w)) * aux4(i);
//#end
}

// 1/sqrt(mean(x²) + eps) of x's row `token` under X_RMS (1 otherwise), as norm.wgsl's rms_norm
// computes it, its sum split across the subgroup's 8 lanes where SHARED_X; called by every lane.
fn inv_rms(token: u32, lid: u32) -> f32 {
//#unroll z X_RMS
    let k4 = p.k / 4u;
    var s = vec4<f32>(0.0);
//#unroll l SHARED_X
    for (var j = lid; j < k4; j += 8u) {
        let v = x4(token * k4 + j);
        s = fma(v, v, s);
    }
    let total = subgroupAdd((s.x + s.y) + (s.z + s.w));
//#end
//#unroll l LOCAL_X
    for (var j = 0u; j < k4; j += 1u) {
        let v = x4(token * k4 + j);
        s = fma(v, v, s);
    }
    let total = (s.x + s.y) + (s.z + s.w);
//#end
    return inverseSqrt(total / f32(p.k) + p.eps);
//#end
//#unroll z X_NOT_RMS
    return 1.0;
//#end
}

// W's bytes through one of two bindings (the launcher keeps one section): STORAGE, the buffer
// read as vec2<u64>; TEXELS, the same bytes as an rgba32uint texture of TEXEL_ROW-wide rows.
// w128(i) is bytes 16i..16i+15 as four u32 words, in both.
//#unroll z STORAGE
fn w128(ws: Weights, i: u32) -> vec4<u32> {
    var v: vec2<u64>;
    if (ws == 0u) {
        v = w[i];
    }
//#unroll y MAT1
    if (ws == 1u) {
        v = w1[i];
    }
//#end
//#unroll y MAT2
    if (ws == 2u) {
        v = w2[i];
    }
//#end
    return vec4<u32>(lo32(v.x), hi32(v.x), lo32(v.y), hi32(v.y));
}
//#end
//#unroll z TEXELS
fn w128(ws: Weights, i: u32) -> vec4<u32> {
    return textureLoad(ws, vec2<u32>(i % TEXEL_ROW, i / TEXEL_ROW), 0);
}
//#end

// The whole K-quant block holding element k0 of `row` as UNITS 16-byte units from the one
// holding its first byte (144 bytes of Q4_K and 176 of Q5_K, 16-byte aligned: 9 and 11 units;
// 210 of Q6_K at any even phase: 14), fetched together at the block's start: a row's bytes then
// arrive as one burst instead of a unit a step, so the core has them in flight together (Q4_K
// at 49,152 × 1536: 1.17 times as fast; benches/NOTES.md). Q6_K's window may reach 13 units
// past its data: buffers and texel copies keep that much slack (gpu.rs).
fn k_block(ws: Weights, row: u32, k0: u32) -> array<vec4<u32>, {UNITS}> {
    let u = (((row * p.k + k0) / BLOCK_ELEMENTS) * BLOCK_BYTES) >> 4u;
    var b: array<vec4<u32>, {UNITS}>;
//#unroll j UNITS
    b[{j}] = w128(ws, u + {j}u);
//#end
    return b;
}

// Windows of u32 words: the words of the 16-byte units from base / 4 in order, word j of the
// window at j + base % 4 among them (three selects a word, no more loads than units touched).

fn texels2(ws: Weights, t: u32) -> array<u32, 8> {
    let a = w128(ws, t);
    let b = w128(ws, t + 1u);
    return array<u32, 8>(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w);
}

fn texels3(ws: Weights, t: u32) -> array<u32, 12> {
    let a = w128(ws, t);
    let b = w128(ws, t + 1u);
    let c = w128(ws, t + 2u);
    return array<u32, 12>(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w, c.x, c.y, c.z, c.w);
}

fn texels5(ws: Weights, t: u32) -> array<u32, 20> {
    let a = w128(ws, t);
    let b = w128(ws, t + 1u);
    let c = w128(ws, t + 2u);
    let d = w128(ws, t + 3u);
    let e = w128(ws, t + 4u);
    return array<u32, 20>(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w, c.x, c.y, c.z, c.w,
                          d.x, d.y, d.z, d.w, e.x, e.y, e.z, e.w);
}

fn texels4(ws: Weights, t: u32) -> array<u32, 16> {
    let a = w128(ws, t);
    let b = w128(ws, t + 1u);
    let c = w128(ws, t + 2u);
    let d = w128(ws, t + 3u);
    return array<u32, 16>(a.x, a.y, a.z, a.w, b.x, b.y, b.z, b.w, c.x, c.y, c.z, c.w, d.x, d.y, d.z, d.w);
}

fn words5(ws: Weights, base: u32) -> array<u32, 5> {
    let f = texels2(ws, base >> 2u);
    let ph = base & 3u;
    return array<u32, 5>(
//#unroll j FIVE
        pick(f[{j}], f[{j} + 1], f[{j} + 2], f[{j} + 3], ph),
//#end
    );
}

fn words6(ws: Weights, base: u32) -> array<u32, 6> {
    let f = texels3(ws, base >> 2u);
    let ph = base & 3u;
    return array<u32, 6>(
//#unroll j SIX
        pick(f[{j}], f[{j} + 1], f[{j} + 2], f[{j} + 3], ph),
//#end
    );
}

fn words9(ws: Weights, base: u32) -> array<u32, 9> {
    let f = texels3(ws, base >> 2u);
    let ph = base & 3u;
    return array<u32, 9>(
//#unroll j NINE
        pick(f[{j}], f[{j} + 1], f[{j} + 2], f[{j} + 3], ph),
//#end
    );
}

fn words11(ws: Weights, base: u32) -> array<u32, 11> {
    let f = texels4(ws, base >> 2u);
    let ph = base & 3u;
    return array<u32, 11>(
//#unroll j ELEVEN
        pick(f[{j}], f[{j} + 1], f[{j} + 2], f[{j} + 3], ph),
//#end
    );
}

fn words17(ws: Weights, base: u32) -> array<u32, 17> {
    let f = texels5(ws, base >> 2u);
    let ph = base & 3u;
    return array<u32, 17>(
//#unroll j SEVENTEEN
        pick(f[{j}], f[{j} + 1], f[{j} + 2], f[{j} + 3], ph),
//#end
    );
}

// One of four words by `phase` (0..3): word j of a window of 16-byte units whose first word is
// `phase` words before it is pick(f[j], f[j + 1], f[j + 2], f[j + 3], phase).
fn pick(f0: u32, f1: u32, f2: u32, f3: u32, phase: u32) -> u32 {
    return select(select(f0, f1, phase == 1u), select(f2, f3, phase == 3u), phase >= 2u);
}

// Aligned word c of a block fetched as a window of 16-byte units from the one holding its first
// byte (k_block), `wp` the window words before the block's word 0: one of four, picked.
fn block_word(blk: array<vec4<u32>, {UNITS}>, wp: u32, c: u32) -> u32 {
    return pick(blk[c >> 2u][c & 3u], blk[(c + 1u) >> 2u][(c + 1u) & 3u], blk[(c + 2u) >> 2u][(c + 2u) & 3u],
                blk[(c + 3u) >> 2u][(c + 3u) & 3u], wp);
}

// The word at byte 2 of word `lo` (bytes 2, 3 of lo, then 0, 1 of hi).
fn mid(lo: u32, hi: u32) -> u32 {
    return (lo >> 16u) | (hi << 16u);
}

// The f16 in half `o & 2` of `word`, `o` its byte offset.
fn half_of(word: u32, o: u32) -> f32 {
    return unpack2x16float(select(word, word >> 16u, (o & 2u) != 0u)).x;
}

// The word at even byte offset o, given the aligned words around it (`at` holds byte o & ~3,
// `next` follows it).
fn funnel(at: u32, next: u32, o: u32) -> u32 {
    return select(at, mid(at, next), (o & 2u) != 0u);
}

// The same word from a window anchored one word earlier: `prev` and `at` are the words holding
// bytes o - 2 and o + 2 when o & 2 (the word straddles them), else `at` is the word at o.
fn funnel_after(prev: u32, at: u32, o: u32) -> u32 {
    return select(at, mid(prev, at), (o & 2u) != 0u);
}

// The four nibbles at `shift` (0 low, 4 high) of the four bytes of `q`.
fn nib4(q: u32, shift: u32) -> vec4<u32> {
    return (vec4<u32>(q) >> (vec4<u32>(0u, 8u, 16u, 24u) + shift)) & vec4<u32>(15u);
}

// Small non-negative integers as f32, converted as signed: one instruction on x86 (vcvtdq2ps)
// where an unsigned conversion takes several, and lavapipe's LLVM 15 does not prove the sign.
fn u2f(v: vec4<u32>) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>(v));
}

// The four bytes of `q` masked by `mask` in place: component c is (byte c & mask) · 2^(8c),
// exactly (four or six significant bits), for an x scaled by XSCALE. One `and` and one
// conversion an element, where shifting each byte down took a shift more.
fn in_place4(q: u32, mask: u32) -> vec4<f32> {
    return u2f(vec4<u32>(q) & (vec4<u32>(mask) << vec4<u32>(0u, 8u, 16u, 24u)));
}

// The four signed bytes of `q`, each moved to the top of its lane and converted: byte c · 2^24
// (exact); the block scale takes the 2^-24.
fn i8x4_top(q: u32) -> vec4<f32> {
    return vec4<f32>(bitcast<vec4<i32>>((vec4<u32>(q) << vec4<u32>(24u, 16u, 8u, 0u)) & vec4<u32>(0xFF000000u)));
}

// The 2-bit fields at bits 2·q.. of each byte of `h`, moved to bits 4..5 of the byte (garbage
// elsewhere, masked by the caller).
fn crumbs_to_bit4(h: u32, q: u32) -> u32 {
    if (q < 2u) {
        return h << (4u - 2u * q);
    }
    return h >> (2u * q - 4u);
}

// Bits `first`..`first + 3` of `qh`, each as 0 or 16 (the fifth bit of Q5 quants).
fn high_bits4(qh: u32, first: u32) -> vec4<u32> {
    return ((vec4<u32>(qh) >> (vec4<u32>(0u, 1u, 2u, 3u) + first)) & vec4<u32>(1u)) << vec4<u32>(4u);
}

// Byte n (0..11) of the twelve K-quant scale bytes held in three words.
fn scale_byte(s0: u32, s1: u32, s2: u32, n: u32) -> u32 {
    let word = select(select(s2, s1, n < 8u), s0, n < 4u);
    return (word >> ((n & 3u) * 8u)) & 0xffu;
}

// The 6-bit scale and min of sub-block j of a Q4_K/Q5_K block from its three words of scale
// bytes (ggml's get_scale_min_k4).
fn k_scale_min(s0: u32, s1: u32, s2: u32, j: u32) -> vec2<u32> {
    if (j < 4u) {
        return vec2<u32>(scale_byte(s0, s1, s2, j) & 63u, scale_byte(s0, s1, s2, j + 4u) & 63u);
    }
    return vec2<u32>(
        (scale_byte(s0, s1, s2, j + 4u) & 0xfu) | ((scale_byte(s0, s1, s2, j - 4u) >> 6u) << 4u),
        (scale_byte(s0, s1, s2, j + 4u) >> 4u) | ((scale_byte(s0, s1, s2, j) >> 6u) << 4u),
    );
}

// Elements k0..k0+STEP-1 of row `row` of W, decoded in registers (k0 % STEP == 0). STEP is 32
// (one block) for the 32-element formats, 64 (two blocks, the _PAIR sections) for Q8_0, Q4_0,
// Q4_1, Q5_0 and Q5_1 where K is a multiple of 64 (fewer loads: the pair's bytes are word
// aligned, and fill their units better than one block does), 64 for
// Q4_K and Q5_K, 128 for Q6_K: the elements that share loaded bytes. Only the section for the
// format and step is emitted (the others index past STEP).
// For Q4_K and Q5_K, `blk` is the row's whole block (k_block), `hd` its header and `sub` the
// step's place in the block (0..3); unused otherwise.
struct Decoded {
    // The step's quants (or weights) as f32, in element order, component c scaled by
    // 1 / XSCALE[c] where the decoder leaves bytes in place.
    q: array<vec4<f32>, {VECS}>,
    // Per SUB vec4s (a block or sub-block): the weight is s.x · q (+ s.y where OFFSET).
    s: array<vec2<f32>, {SCALES}>,
}

fn chunk(ws: Weights, row: u32, k0: u32, hd: vec4<u32>, sub: u32, blk: array<vec4<u32>, {UNITS}>) -> Decoded {
    var v: Decoded;
    let element = row * p.k + k0;
    let bb = (element / BLOCK_ELEMENTS) * BLOCK_BYTES;
//#unroll f F0
    {
        // F32: 128 bytes, 16-byte aligned (element is a multiple of 32).
        let o = element >> 2u;
//#unroll i EIGHT
        v.q[{i}] = bitcast<vec4<f32>>(w128(ws, o + {i}u));
//#end
        v.s[0] = vec2<f32>(1.0, 0.0);
    }
//#end
//#unroll f F1
    {
        // F16: 64 bytes, 16-byte aligned.
        let o = element >> 3u;
//#unroll i FOUR
        let a{i} = w128(ws, o + {i}u);
        v.q[2 * {i}] = vec4<f32>(unpack2x16float(a{i}.x), unpack2x16float(a{i}.y));
        v.q[2 * {i} + 1] = vec4<f32>(unpack2x16float(a{i}.z), unpack2x16float(a{i}.w));
//#end
        v.s[0] = vec2<f32>(1.0, 0.0);
    }
//#end
//#unroll f F2
    {
        // Q8_0: f16 d, 32 × i8 at bb + 2 (34-byte blocks: every other block is half-word
        // aligned), all inside the nine words from bb's.
        let s = words9(ws, bb >> 2u);
        let d = half_of(s[0], bb);
        let qo = bb + 2u;
//#unroll i EIGHT
        v.q[{i}] = i8x4_top(funnel_after(s[{i}], s[{i} + 1], qo));
//#end
        v.s[0] = vec2<f32>(d * 0x1p-24f, 0.0);
    }
//#end
//#unroll f F3
    {
        // Q4_0: f16 d, 16 bytes of nibbles at bb + 2 (18-byte blocks); low nibbles are
        // elements 0..15, high nibbles 16..31.
        let s = words5(ws, bb >> 2u);
        let d = half_of(s[0], bb);
        let qo = bb + 2u;
//#unroll i FOUR
        let q{i} = funnel_after(s[{i}], s[{i} + 1], qo);
        v.q[{i}] = in_place4(q{i}, 15u);
        v.q[{i} + 4] = in_place4(q{i} >> 4u, 15u);
//#end
        v.s[0] = vec2<f32>(d, -8.0 * d);
    }
//#end
//#unroll f F4
    {
        // Q4_1: f16 d, f16 m, 16 bytes of nibbles (20-byte blocks, always word aligned).
        let s = words5(ws, bb >> 2u);
        let dm = unpack2x16float(s[0]);
//#unroll i FOUR
        v.q[{i}] = in_place4(s[{i} + 1], 15u);
        v.q[{i} + 4] = in_place4(s[{i} + 1] >> 4u, 15u);
//#end
        v.s[0] = dm;
    }
//#end
//#unroll f F2_PAIR
    {
        // Q8_0, two blocks a step (K a multiple of 64, so bb is a multiple of 68, word aligned):
        // 68 bytes in the seventeen words from bb's. Block A: d in the low half of word 0, its
        // quants from byte 2; block B: d in the high half of word 8, its quants in words 9..16.
        let s = words17(ws, bb >> 2u);
        let da = unpack2x16float(s[0]).x;
        let db = unpack2x16float(s[8]).y;
//#unroll i EIGHT
        v.q[{i}] = i8x4_top(mid(s[{i}], s[{i} + 1]));
        v.q[{i} + 8] = i8x4_top(s[{i} + 9]);
//#end
        v.s[0] = vec2<f32>(da * 0x1p-24f, 0.0);
        v.s[1] = vec2<f32>(db * 0x1p-24f, 0.0);
    }
//#end
//#unroll f F3_PAIR
    {
        // Q4_0, two blocks a step (K a multiple of 64, so bb is a multiple of 36, word aligned):
        // 36 bytes in the nine words from bb's. Block A: d in the low half of word 0, nibbles
        // from byte 2; block B: d in the high half of word 4, nibbles in words 5..8.
        let s = words9(ws, bb >> 2u);
        let da = unpack2x16float(s[0]).x;
        let db = unpack2x16float(s[4]).y;
//#unroll i FOUR
        let qa{i} = mid(s[{i}], s[{i} + 1]);
        v.q[{i}] = in_place4(qa{i}, 15u);
        v.q[{i} + 4] = in_place4(qa{i} >> 4u, 15u);
        v.q[{i} + 8] = in_place4(s[{i} + 5], 15u);
        v.q[{i} + 12] = in_place4(s[{i} + 5] >> 4u, 15u);
//#end
        v.s[0] = vec2<f32>(da, -8.0 * da);
        v.s[1] = vec2<f32>(db, -8.0 * db);
    }
//#end
//#unroll f F4_PAIR
    {
        // Q4_1, two blocks a step (K a multiple of 64, so bb is a multiple of 40, u64-aligned):
        // 40 bytes in three 16-byte units at 8-byte phase `odd`. Words 0..4 are block A (d and m,
        // then nibbles), 5..9 block B.
        let t = bb >> 4u;
        let odd = (bb & 8u) != 0u;
        let ta = w128(ws, t);
        let tb = w128(ws, t + 1u);
        let tc = w128(ws, t + 2u);
        let dma = unpack2x16float(select(ta.x, ta.z, odd));
        let qa = array<u32, 4>(select(ta.y, ta.w, odd), select(ta.z, tb.x, odd), select(ta.w, tb.y, odd), select(tb.x, tb.z, odd));
        let dmb = unpack2x16float(select(tb.y, tb.w, odd));
        let qb = array<u32, 4>(select(tb.z, tc.x, odd), select(tb.w, tc.y, odd), select(tc.x, tc.z, odd), select(tc.y, tc.w, odd));
//#unroll i FOUR
        v.q[{i}] = in_place4(qa[{i}], 15u);
        v.q[{i} + 4] = in_place4(qa[{i}] >> 4u, 15u);
        v.q[{i} + 8] = in_place4(qb[{i}], 15u);
        v.q[{i} + 12] = in_place4(qb[{i}] >> 4u, 15u);
//#end
        v.s[0] = dma;
        v.s[1] = dmb;
    }
//#end
//#unroll f F5_PAIR
    {
        // Q5_0, two blocks a step (K a multiple of 64, so bb is a multiple of 44, word aligned):
        // 44 bytes in the eleven words from bb's. Block A: d in the low half of word 0, qh from
        // byte 2, nibbles from byte 6; block B: d in the high half of word 5, qh word 6, nibbles
        // words 7..10.
        let s = words11(ws, bb >> 2u);
        let da = unpack2x16float(s[0]).x;
        let qha = mid(s[0], s[1]);
        let db = unpack2x16float(s[5]).y;
        let qhb = s[6];
//#unroll i FOUR
        let qa{i} = mid(s[{i} + 1], s[{i} + 2]);
        v.q[{i}] = vec4<f32>(vec4<i32>(nib4(qa{i}, 0u) | high_bits4(qha, 4u * {i}u)) - 16);
        v.q[{i} + 4] = vec4<f32>(vec4<i32>(nib4(qa{i}, 4u) | high_bits4(qha, 16u + 4u * {i}u)) - 16);
        v.q[{i} + 8] = vec4<f32>(vec4<i32>(nib4(s[{i} + 7], 0u) | high_bits4(qhb, 4u * {i}u)) - 16);
        v.q[{i} + 12] = vec4<f32>(vec4<i32>(nib4(s[{i} + 7], 4u) | high_bits4(qhb, 16u + 4u * {i}u)) - 16);
//#end
        v.s[0] = vec2<f32>(da, 0.0);
        v.s[1] = vec2<f32>(db, 0.0);
    }
//#end
//#unroll f F6_PAIR
    {
        // Q5_1, two blocks a step (K a multiple of 64, so bb is a multiple of 48, 16-byte
        // aligned): three whole units. Block A: d and m, qh, then nibbles from word 2; block B
        // the same from word 6.
        let u0 = w128(ws, bb >> 4u);
        let u1 = w128(ws, (bb >> 4u) + 1u);
        let u2 = w128(ws, (bb >> 4u) + 2u);
        let dma = unpack2x16float(u0.x);
        let dmb = unpack2x16float(u1.z);
        let qa = array<u32, 4>(u0.z, u0.w, u1.x, u1.y);
        let qb = array<u32, 4>(u2.x, u2.y, u2.z, u2.w);
//#unroll i FOUR
        v.q[{i}] = u2f(nib4(qa[{i}], 0u) | high_bits4(u0.y, 4u * {i}u));
        v.q[{i} + 4] = u2f(nib4(qa[{i}], 4u) | high_bits4(u0.y, 16u + 4u * {i}u));
        v.q[{i} + 8] = u2f(nib4(qb[{i}], 0u) | high_bits4(u1.w, 4u * {i}u));
        v.q[{i} + 12] = u2f(nib4(qb[{i}], 4u) | high_bits4(u1.w, 16u + 4u * {i}u));
//#end
        v.s[0] = dma;
        v.s[1] = dmb;
    }
//#end
//#unroll f F5
    {
        // Q5_0: f16 d, u32 qh (fifth bits) at bb + 2, 16 bytes of nibbles at bb + 6 (22-byte
        // blocks, half-word aligned), inside the six words from bb's.
        let s = words6(ws, bb >> 2u);
        let d = half_of(s[0], bb);
        let qh = funnel_after(s[0], s[1], bb + 2u);
        let qo = bb + 6u;
//#unroll i FOUR
        let q{i} = funnel_after(s[{i} + 1], s[{i} + 2], qo);
        v.q[{i}] = vec4<f32>(vec4<i32>(nib4(q{i}, 0u) | high_bits4(qh, 4u * {i}u)) - 16);
        v.q[{i} + 4] = vec4<f32>(vec4<i32>(nib4(q{i}, 4u) | high_bits4(qh, 16u + 4u * {i}u)) - 16);
//#end
        v.s[0] = vec2<f32>(d, 0.0);
    }
//#end
//#unroll f F6
    {
        // Q5_1: f16 d, f16 m, u32 qh, 16 bytes of nibbles (24-byte blocks: 8-byte aligned, as a
        // row holds a whole number of them): two units at 8-byte phase `odd`.
        let t = bb >> 4u;
        let odd = (bb & 8u) != 0u;
        let ta = w128(ws, t);
        let tb = w128(ws, t + 1u);
        let dm = unpack2x16float(select(ta.x, ta.z, odd));
        let qh = select(ta.y, ta.w, odd);
        let q = array<u32, 4>(select(ta.z, tb.x, odd), select(ta.w, tb.y, odd), select(tb.x, tb.z, odd), select(tb.y, tb.w, odd));
//#unroll i FOUR
        v.q[{i}] = u2f(nib4(q[{i}], 0u) | high_bits4(qh, 4u * {i}u));
        v.q[{i} + 4] = u2f(nib4(q[{i}], 4u) | high_bits4(qh, 16u + 4u * {i}u));
//#end
        v.s[0] = dm;
    }
//#end
//#unroll f F7
    {
        // Q4_K: f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles (144-byte blocks,
        // 16-byte aligned). A step is 64 elements, sub-blocks j = 2·jp and 2·jp + 1: the low
        // and the high nibbles of bytes 32·jp..+32, so every quant byte loaded is used whole;
        // their 6-bit scales and mins follow ggml's get_scale_min_k4.
        let jp = sub;
        let dm = unpack2x16float(hd.x);
        let sm0 = k_scale_min(hd.y, hd.z, hd.w, 2u * jp);
        let sm1 = k_scale_min(hd.y, hd.z, hd.w, 2u * jp + 1u);
        v.s[0] = vec2<f32>(dm.x * f32(sm0.x), -(dm.y * f32(sm0.y)));
        v.s[1] = vec2<f32>(dm.x * f32(sm1.x), -(dm.y * f32(sm1.y)));
        // The step's 32 quant bytes: units 1 + 2·jp and 2 + 2·jp of the block.
        let q01 = blk[1u + 2u * jp];
        let q23 = blk[2u + 2u * jp];
        let qw = array<u32, 8>(q01.x, q01.y, q01.z, q01.w, q23.x, q23.y, q23.z, q23.w);
//#unroll i FOUR
        v.q[2 * {i}] = in_place4(qw[2 * {i}], 15u);
        v.q[2 * {i} + 1] = in_place4(qw[2 * {i} + 1], 15u);
        v.q[2 * {i} + 8] = in_place4(qw[2 * {i}] >> 4u, 15u);
        v.q[2 * {i} + 9] = in_place4(qw[2 * {i} + 1] >> 4u, 15u);
//#end
    }
//#end
//#unroll f F8
    {
        // Q5_K: f16 d, f16 dmin, 12 scale bytes, 32 bytes qh, 128 bytes of nibbles (176-byte
        // blocks, 16-byte aligned). Steps of 64 elements as Q4_K; sub-block j takes bit j of qh
        // byte l as its fifth bit (ggml's dequantize_row_q5_K).
        let jp = sub;
        let j0 = 2u * jp;
        let j1 = j0 + 1u;
        let dm = unpack2x16float(hd.x);
        let sm0 = k_scale_min(hd.y, hd.z, hd.w, j0);
        let sm1 = k_scale_min(hd.y, hd.z, hd.w, j1);
        v.s[0] = vec2<f32>(dm.x * f32(sm0.x), -(dm.y * f32(sm0.y)));
        v.s[1] = vec2<f32>(dm.x * f32(sm1.x), -(dm.y * f32(sm1.y)));
        let bytes = vec4<u32>(0u, 8u, 16u, 24u);
        // qh is units 1 and 2 of the block, the step's 32 quant bytes units 3 + 2·jp and 4 + 2·jp.
        let qh = array<u32, 8>(blk[1].x, blk[1].y, blk[1].z, blk[1].w, blk[2].x, blk[2].y, blk[2].z, blk[2].w);
        let q01 = blk[3u + 2u * jp];
        let q23 = blk[4u + 2u * jp];
        let qw = array<u32, 8>(q01.x, q01.y, q01.z, q01.w, q23.x, q23.y, q23.z, q23.w);
//#unroll i FOUR
        v.q[2 * {i}] = u2f(nib4(qw[2 * {i}], 0u) | (((vec4<u32>(qh[2 * {i}]) >> (bytes + j0)) & vec4<u32>(1u)) << vec4<u32>(4u)));
        v.q[2 * {i} + 1] = u2f(nib4(qw[2 * {i} + 1], 0u) | (((vec4<u32>(qh[2 * {i} + 1]) >> (bytes + j0)) & vec4<u32>(1u)) << vec4<u32>(4u)));
        v.q[2 * {i} + 8] = u2f(nib4(qw[2 * {i}], 4u) | (((vec4<u32>(qh[2 * {i}]) >> (bytes + j1)) & vec4<u32>(1u)) << vec4<u32>(4u)));
        v.q[2 * {i} + 9] = u2f(nib4(qw[2 * {i} + 1], 4u) | (((vec4<u32>(qh[2 * {i} + 1]) >> (bytes + j1)) & vec4<u32>(1u)) << vec4<u32>(4u)));
//#end
    }
//#end
//#unroll f F9
    {
        // Q6_K: 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 i8 scales, f16 d
        // (210-byte blocks, every other one half-word aligned). A step is half a block,
        // h = sub, so every byte loaded is used whole. Following ggml's
        // dequantize_row_q6_K: element 128·h + 32·q + l takes ql byte 64·h + 32·(q & 1) + l
        // (nibble q >> 1), qh byte 32·h + l (bits 2q..2q+1) and scale 8·h + 2q + l / 16.
        // The row's whole block came in `blk` (k_block: 14 units from the one holding byte bb, at
        // byte phase bb & 15); aligned word c of the block is window word c + (bb & 15) / 4, and
        // the words at the block's 2-byte phase are funnelled from two of those.
        let h = sub;
        let wp = (bb & 15u) >> 2u;
        // The aligned words the step needs, each picked once: ql's 17, qh's 9, the scales' 3.
        let lw = array<u32, 17>(
//#unroll j SEVENTEEN
            block_word(blk, wp, 16u * h + {j}u),
//#end
        );
        let hw = array<u32, 9>(
//#unroll j NINE
            block_word(blk, wp, 32u + 8u * h + {j}u),
//#end
        );
        let sw = array<u32, 3>(
//#unroll j THREE
            block_word(blk, wp, 48u + 2u * h + {j}u),
//#end
        );
        let d = half_of(block_word(blk, wp, 52u), bb);
        let s0 = funnel(sw[0], sw[1], bb);
        let s1 = funnel(sw[1], sw[2], bb);
        let scf = array<f32, 8>(
            d * f32(bitcast<i32>(s0 << 24u) >> 24u), d * f32(bitcast<i32>(s0 << 16u) >> 24u),
            d * f32(bitcast<i32>(s0 << 8u) >> 24u), d * f32(bitcast<i32>(s0) >> 24u),
            d * f32(bitcast<i32>(s1 << 24u) >> 24u), d * f32(bitcast<i32>(s1 << 16u) >> 24u),
            d * f32(bitcast<i32>(s1 << 8u) >> 24u), d * f32(bitcast<i32>(s1) >> 24u),
        );
        var ql: array<u32, 16>;
//#unroll j SIXTEEN
        ql[{j}] = funnel(lw[{j}], lw[{j} + 1], bb);
//#end
        var qh: array<u32, 8>;
//#unroll j EIGHT
        qh[{j}] = funnel(hw[{j}], hw[{j} + 1], bb);
//#end
        // Each byte's six bits assembled in place (low nibble, then the crumb at bits 4..5),
        // a word at a time; the -32 is the offset.
//#unroll q FOUR
        v.s[2 * {q}] = vec2<f32>(scf[2 * {q}], -32.0 * scf[2 * {q}]);
        v.s[2 * {q} + 1] = vec2<f32>(scf[2 * {q} + 1], -32.0 * scf[2 * {q} + 1]);
//#unroll i FOUR
        v.q[8 * {q} + {i}] = in_place4(((ql[8 * ({q} % 2) + {i}] >> (4u * ({q}u / 2u))) & 0x0F0F0F0Fu) | (crumbs_to_bit4(qh[{i}], {q}u) & 0x30303030u), 63u);
        v.q[8 * {q} + {i} + 4] = in_place4(((ql[8 * ({q} % 2) + {i} + 4] >> (4u * ({q}u / 2u))) & 0x0F0F0F0Fu) | (crumbs_to_bit4(qh[{i} + 4], {q}u) & 0x30303030u), 63u);
//#end
//#end
    }
//#end
    return v;
}

// Output `mat` (out, out1, out2) of `n` rows.
fn store(mat: u32, n: u32, token: u32, row: u32, acc: f32) {
    if (row >= n || token >= p.m) { return; }
    var v = acc;
    if ((p.flags & 1u) != 0u) { v += bias[row]; }
    if ((p.flags & 2u) != 0u) { v += residual[token * n + row]; }
    if (mat == 0u) { out[token * n + row] = v; }
//#unroll z MAT1
    if (mat == 1u) { out1[token * n + row] = v; }
//#end
//#unroll z MAT2
    if (mat == 2u) { out2[token * n + row] = v; }
//#end
}

// Workgroups 0..g0 take the first matrix, the next g1 the second, the rest the third (MATS),
// each its own rows of the one input: one dispatch for Llama's Q, K and V, or gate and up.
// A branch costs the workgroups that skip it one masked pass of its loop (gallivm runs
// branches under a lane mask; benches/NOTES.md), far less than a dispatch.
@compute @workgroup_size(8)
fn qmatvec_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) ng: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.y * ng.x + wid.x;
    let per = 8u * {ROWS}u;
    let g0 = (p.n + per - 1u) / per;
    if (g < g0) {
//#unroll z TEXELS
        matrix_rows(wt, 0u, p.n, g, wid.z, lid);
//#end
//#unroll z STORAGE
        matrix_rows(0u, 0u, p.n, g, wid.z, lid);
//#end
    }
//#unroll z MAT1
    let g1 = (p.n1 + per - 1u) / per;
    if (g >= g0 && g < g0 + g1) {
//#unroll y TEXELS
        matrix_rows(wt1, 1u, p.n1, g - g0, wid.z, lid);
//#end
//#unroll y STORAGE
        matrix_rows(1u, 1u, p.n1, g - g0, wid.z, lid);
//#end
    }
//#end
//#unroll z MAT2
    // The grid may carry padding workgroups past the last matrix's (ops::grid): they do nothing.
    let g2 = (p.n2 + per - 1u) / per;
    if (g >= g0 + g1 && g < g0 + g1 + g2) {
//#unroll y TEXELS
        matrix_rows(wt2, 2u, p.n2, g - g0 - g1, wid.z, lid);
//#end
//#unroll y STORAGE
        matrix_rows(2u, 2u, p.n2, g - g0 - g1, wid.z, lid);
//#end
    }
//#end
}

// Workgroup g's rows of matrix `mat` (n rows, weights ws), tokens from wz · TOKENS.
fn matrix_rows(ws: Weights, mat: u32, n: u32, g: u32, wz: u32, lid: u32) {
    let first = (g * 8u + lid) * {ROWS}u;
    // Workgroups along z take successive groups of TOKENS tokens (a prompt of any length); the
    // last group's missing tokens read the last token again and are not stored.
    let t0 = wz * {TOKENS}u;
    let k4 = p.k / 4u;
//#unroll t TOKENS
    let r{t} = inv_rms(min(t0 + {t}u, p.m - 1u), lid);
//#end
    // Rows past the edge decode the last row again; their results are not stored.
//#unroll r ROWS
    let row{r} = min(first + {r}u, n - 1u);
//#unroll t TOKENS
    var acc{r}_{t} = 0.0;
//#end
//#end
    // The K-quants (BLOCKED) take a block (256 elements) an iteration: each row's whole block is
    // fetched at once (k_block), and the block's steps are written out (SUBSTEPS) so that each
    // picks its bytes and sub-block scales at constant positions; the other formats (FLAT) take
    // a step an iteration.
//#unroll o BLOCKED
    for (var kb = 0u; kb < p.k; kb += 256u) {
//#unroll r ROWS
        let blk{r} = k_block(ws, row{r}, kb);
        let hd{r} = blk{r}[0];
//#end
//#end
//#unroll o FLAT
    for (var kb = 0u; kb < p.k; kb += {STEP}u) {
//#unroll r ROWS
        let blk{r} = array<vec4<u32>, {UNITS}>();
        let hd{r} = vec4<u32>();
//#end
//#end
//#unroll b SUBSTEPS
        {
        let k0 = kb + {b}u * {STEP}u;
        // x[k0..k0+STEP] per token as STEP/32 groups c of 8 vec4.
//#unroll t TOKENS
        let xo{t} = min(t0 + {t}u, p.m - 1u) * k4 + k0 / 4u;
//#unroll c GROUPS
//#unroll s SHARED_X
        let xl{t}_{c} = xin(xo{t} + 8u * {c}u + lid, k0 / 4u + 8u * {c}u + lid, r{t});
//#unroll i EIGHT
        let x{t}_{c}_{i} = subgroupBroadcast(xl{t}_{c}, {i}u);
//#end
//#end
//#unroll s LOCAL_X
//#unroll i EIGHT
        let x{t}_{c}_{i} = xin(xo{t} + 8u * {c}u + {i}u, k0 / 4u + 8u * {c}u + {i}u, r{t});
//#end
//#end
//#end
        // x as the decoders place each vec4's components (XSCALE), in step order.
        let xs{t} = array<vec4<f32>, {VECS}>(
//#unroll c GROUPS
//#unroll i EIGHT
            x{t}_{c}_{i} * XSCALE,
//#end
//#end
        );
//#unroll z OFFSET
        // Σx of each scale group, which the offsets (zero points, mins) multiply.
        let xr{t} = array<vec4<f32>, {VECS}>(
//#unroll c GROUPS
//#unroll i EIGHT
            x{t}_{c}_{i},
//#end
//#end
        );
//#unroll g SCALES
        var sx{t}_{g} = xr{t}[{SUB} * {g}];
//#unroll j SUB_REST
        sx{t}_{g} += xr{t}[{SUB} * {g} + {j} + 1];
//#end
        let ss{t}_{g} = (sx{t}_{g}.x + sx{t}_{g}.y) + (sx{t}_{g}.z + sx{t}_{g}.w);
//#end
//#end
//#end
//#unroll r ROWS
        let wv{r} = chunk(ws, row{r}, k0, hd{r}, {b}u, blk{r});
//#unroll t TOKENS
//#unroll g SCALES
        // Σ q·x over the scale group, then its scale (and its offset times Σx) once.
        var p{r}_{t}_{g} = wv{r}.q[{SUB} * {g}] * xs{t}[{SUB} * {g}];
//#unroll j SUB_REST
        p{r}_{t}_{g} = fma(wv{r}.q[{SUB} * {g} + {j} + 1], xs{t}[{SUB} * {g} + {j} + 1], p{r}_{t}_{g});
//#end
        acc{r}_{t} = fma(wv{r}.s[{g}].x, (p{r}_{t}_{g}.x + p{r}_{t}_{g}.y) + (p{r}_{t}_{g}.z + p{r}_{t}_{g}.w), acc{r}_{t});
//#unroll z OFFSET
        acc{r}_{t} = fma(wv{r}.s[{g}].y, ss{t}_{g}, acc{r}_{t});
//#end
//#end
//#end
//#end
        }
//#end
    }
//#unroll r ROWS
//#unroll t TOKENS
    store(mat, n, t0 + {t}u, first + {r}u, acc{r}_{t});
//#end
//#end
}
