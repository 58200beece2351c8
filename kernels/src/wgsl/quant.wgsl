// Decoding of stored weights, one element at a time in registers, from `w: array<u32>` (the raw
// bytes as stored, declared by the kernel that includes this file). FORMAT is a constant the
// launcher prepends, so each pipeline compiles only its own case:
// 0 F32, 1 F16, 2 Q8_0, 3 Q4_0, 4 Q4_1, 5 Q5_0, 6 Q5_1, 7 Q4_K, 8 Q5_K, 9 Q6_K.
// Block layouts and f32 arithmetic order follow ggml's dequantize_row_* (ggml-quants.c) and the
// loader's `dequant.rs`. Every f16 field sits at an even byte offset, so it never straddles words.

fn byte_at(o: u32) -> u32 {
    return (w[o >> 2u] >> ((o & 3u) * 8u)) & 0xffu;
}

fn i8_at(o: u32) -> f32 {
    return f32(bitcast<i32>(byte_at(o) << 24u) >> 24u);
}

// The f16 at even byte offset `o`.
fn half_at(o: u32) -> f32 {
    let word = w[o >> 2u];
    return unpack2x16float(select(word, word >> 16u, (o & 2u) != 0u)).x;
}

// The u32 at even byte offset `o` (Q5_0's qh is only 2-byte aligned).
fn u32_at(o: u32) -> u32 {
    if ((o & 3u) == 0u) { return w[o >> 2u]; }
    return (w[o >> 2u] >> 16u) | (w[(o >> 2u) + 1u] << 16u);
}

// 6-bit scale and min of sub-block j of a Q4_K/Q5_K block whose 12 scale bytes start at `sb`
// (ggml's get_scale_min_k4).
fn scale_min_k4(j: u32, sb: u32) -> vec2<u32> {
    if (j < 4u) {
        return vec2<u32>(byte_at(sb + j) & 63u, byte_at(sb + j + 4u) & 63u);
    }
    return vec2<u32>(
        (byte_at(sb + j + 4u) & 0xfu) | ((byte_at(sb + j - 4u) >> 6u) << 4u),
        (byte_at(sb + j + 4u) >> 4u) | ((byte_at(sb + j) >> 6u) << 4u),
    );
}

// Element e (0 <= e < elements per block) of the block starting at byte bb.
fn decode(bb: u32, e: u32) -> f32 {
    switch FORMAT {
        case 0u: { return bitcast<f32>(w[bb >> 2u]); }
        case 1u: { return half_at(bb); }
        case 2u: { return i8_at(bb + 2u + e) * half_at(bb); }
        case 3u: {
            let byte = byte_at(bb + 2u + (e & 15u));
            let q = select(byte & 15u, byte >> 4u, e >= 16u);
            return f32(i32(q) - 8) * half_at(bb);
        }
        case 4u: {
            let byte = byte_at(bb + 4u + (e & 15u));
            let q = select(byte & 15u, byte >> 4u, e >= 16u);
            return f32(q) * half_at(bb) + half_at(bb + 2u);
        }
        case 5u: {
            let qh = u32_at(bb + 2u);
            let byte = byte_at(bb + 6u + (e & 15u));
            let q = select(byte & 15u, byte >> 4u, e >= 16u) | (((qh >> e) & 1u) << 4u);
            return f32(i32(q) - 16) * half_at(bb);
        }
        case 6u: {
            let qh = u32_at(bb + 4u);
            let byte = byte_at(bb + 8u + (e & 15u));
            let q = select(byte & 15u, byte >> 4u, e >= 16u) | (((qh >> e) & 1u) << 4u);
            return f32(q) * half_at(bb) + half_at(bb + 2u);
        }
        case 7u: {
            let chunk = e / 64u;
            let high = (e % 64u) >= 32u;
            let sm = scale_min_k4(2u * chunk + select(0u, 1u, high), bb + 4u);
            let byte = byte_at(bb + 16u + 32u * chunk + (e % 32u));
            let q = select(byte & 15u, byte >> 4u, high);
            return (half_at(bb) * f32(sm.x)) * f32(q) - half_at(bb + 2u) * f32(sm.y);
        }
        case 8u: {
            let chunk = e / 64u;
            let high = (e % 64u) >= 32u;
            let sm = scale_min_k4(2u * chunk + select(0u, 1u, high), bb + 4u);
            let l = e % 32u;
            let byte = byte_at(bb + 48u + 32u * chunk + l);
            let hbit = (byte_at(bb + 16u + l) >> (2u * chunk + select(0u, 1u, high))) & 1u;
            let q = select(byte & 15u, byte >> 4u, high) + 16u * hbit;
            return (half_at(bb) * f32(sm.x)) * f32(q) - half_at(bb + 2u) * f32(sm.y);
        }
        case 9u: {
            let half = e / 128u;
            let r = e % 128u;
            let quarter = r / 32u;
            let l = r % 32u;
            let ql = byte_at(bb + 64u * half + l + select(0u, 32u, (quarter & 1u) == 1u));
            let lo = select(ql & 15u, ql >> 4u, quarter >= 2u);
            let hi = (byte_at(bb + 128u + 32u * half + l) >> (2u * quarter)) & 3u;
            let q = i32(lo | (hi << 4u)) - 32;
            let scale = i8_at(bb + 192u + 8u * half + l / 16u + 2u * quarter);
            return half_at(bb + 208u) * scale * f32(q);
        }
        default: { return 0.0; }
    }
    return 0.0;
}

// Element (row, k) of a [rows, K] weight matrix stored as blocks of BLOCK_ELEMENTS elements in
// BLOCK_BYTES bytes along k.
fn weight(row: u32, k: u32, row_len: u32) -> f32 {
    let block = row * (row_len / BLOCK_ELEMENTS) + k / BLOCK_ELEMENTS;
    return decode(block * BLOCK_BYTES, k % BLOCK_ELEMENTS);
}
