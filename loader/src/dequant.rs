//! Dequantization of stored tensor bytes to f32: plain floats, integers, and the GGUF block
//! formats. This is the CPU definition of what a quantized weight *is*; the GPU kernels dequantize
//! in registers and are tested against it.
//!
//! Block layouts and arithmetic follow ggml's reference `dequantize_row_*` functions in
//! `ggml/src/ggml-quants.c` (arithmetic in f32 in the same order, so results are bit-identical to
//! ggml's and to gguf-py's `gguf.quants.dequantize`, which the fixtures in
//! `tests/fixtures/dequant/` come from).

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::DType;

/// Dequantizes whole blocks of `dtype` from `bytes` into `out`.
///
/// `bytes` must be a whole number of blocks and `out` exactly as long as the elements they hold.
/// Integer and boolean types are converted by value (exact up to 2^24). The 8-, 6- and 4-bit
/// safetensors float formats are not dequantized yet and give [`Error::NotDequantizable`].
pub fn dequantize(dtype: DType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let block_bytes = dtype.block_bytes() as usize;
    let block_elements = dtype.block_elements() as usize;
    if bytes.len() % block_bytes != 0 {
        return Err(Error::NotDequantizable {
            dtype,
            reason: "byte length is not a whole number of blocks",
        });
    }
    if out.len() != bytes.len() / block_bytes * block_elements {
        return Err(Error::NotDequantizable {
            dtype,
            reason: "output length does not match the number of elements in the input",
        });
    }
    match dtype {
        DType::F32 => scalars(bytes, out, |b: [u8; 4]| f32::from_le_bytes(b)),
        DType::F16 => scalars(bytes, out, |b: [u8; 2]| f16::from_le_bytes(b).to_f32()),
        DType::BF16 => scalars(bytes, out, |b: [u8; 2]| bf16::from_le_bytes(b).to_f32()),
        DType::F64 => scalars(bytes, out, |b: [u8; 8]| f64::from_le_bytes(b) as f32),
        DType::Bool | DType::U8 => scalars(bytes, out, |b: [u8; 1]| f32::from(b[0])),
        DType::I8 => scalars(bytes, out, |b: [u8; 1]| f32::from(b[0] as i8)),
        DType::U16 => scalars(bytes, out, |b: [u8; 2]| f32::from(u16::from_le_bytes(b))),
        DType::I16 => scalars(bytes, out, |b: [u8; 2]| f32::from(i16::from_le_bytes(b))),
        DType::U32 => scalars(bytes, out, |b: [u8; 4]| u32::from_le_bytes(b) as f32),
        DType::I32 => scalars(bytes, out, |b: [u8; 4]| i32::from_le_bytes(b) as f32),
        DType::U64 => scalars(bytes, out, |b: [u8; 8]| u64::from_le_bytes(b) as f32),
        DType::I64 => scalars(bytes, out, |b: [u8; 8]| i64::from_le_bytes(b) as f32),
        DType::Q4_0 => blocks(bytes, out, dtype, q4_0),
        DType::Q4_1 => blocks(bytes, out, dtype, q4_1),
        DType::Q5_0 => blocks(bytes, out, dtype, q5_0),
        DType::Q5_1 => blocks(bytes, out, dtype, q5_1),
        DType::Q8_0 => blocks(bytes, out, dtype, q8_0),
        DType::Q4K => blocks(bytes, out, dtype, q4_k),
        DType::Q5K => blocks(bytes, out, dtype, q5_k),
        DType::Q6K => blocks(bytes, out, dtype, q6_k),
        DType::F8E4M3 | DType::F8E5M2 | DType::F8E8M0 | DType::F6E2M3 | DType::F6E3M2 | DType::F4 => {
            return Err(Error::NotDequantizable {
                dtype,
                reason: "8-, 6- and 4-bit float formats are not supported yet",
            })
        }
    }
    Ok(())
}

/// True when [`dequantize`] supports `dtype`.
pub fn can_dequantize(dtype: DType) -> bool {
    !matches!(
        dtype,
        DType::F8E4M3 | DType::F8E5M2 | DType::F8E8M0 | DType::F6E2M3 | DType::F6E3M2 | DType::F4
    )
}

fn scalars<const N: usize>(bytes: &[u8], out: &mut [f32], convert: impl Fn([u8; N]) -> f32) {
    for (chunk, o) in bytes.chunks_exact(N).zip(out.iter_mut()) {
        let mut b = [0u8; N];
        b.copy_from_slice(chunk);
        *o = convert(b);
    }
}

fn blocks(bytes: &[u8], out: &mut [f32], dtype: DType, f: fn(&[u8], &mut [f32])) {
    let (bb, be) = (dtype.block_bytes() as usize, dtype.block_elements() as usize);
    for (block, y) in bytes.chunks_exact(bb).zip(out.chunks_exact_mut(be)) {
        f(block, y);
    }
}

fn half_at(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// `block_q4_0`: f16 d, 16 bytes of nibbles; element j is low nibble of byte j, element j+16 the
/// high nibble; value = (q - 8) * d.
fn q4_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let qs = &b[2..18];
    for j in 0..16 {
        y[j] = ((qs[j] & 0x0F) as i32 - 8) as f32 * d;
        y[j + 16] = ((qs[j] >> 4) as i32 - 8) as f32 * d;
    }
}

/// `block_q4_1`: f16 d, f16 m, 16 bytes of nibbles; value = q * d + m.
fn q4_1(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    let qs = &b[4..20];
    for j in 0..16 {
        y[j] = (qs[j] & 0x0F) as f32 * d + m;
        y[j + 16] = (qs[j] >> 4) as f32 * d + m;
    }
}

/// `block_q5_0`: f16 d, 32 high bits `qh` (u32 LE), 16 bytes of low nibbles; value = (q - 16) * d.
fn q5_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
    let qs = &b[6..22];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = (((qs[j] & 0x0F) as u32 | h0) as i32 - 16) as f32 * d;
        y[j + 16] = (((qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
    }
}

/// `block_q5_1`: f16 d, f16 m, u32 `qh`, 16 bytes of low nibbles; value = q * d + m.
fn q5_1(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let m = half_at(b, 2);
    let qh = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let qs = &b[8..24];
    for j in 0..16 {
        let h0 = ((qh >> j) << 4) & 0x10;
        let h1 = (qh >> (j + 12)) & 0x10;
        y[j] = ((qs[j] & 0x0F) as u32 | h0) as f32 * d + m;
        y[j + 16] = ((qs[j] >> 4) as u32 | h1) as f32 * d + m;
    }
}

/// `block_q8_0`: f16 d, 32 signed bytes; value = q * d.
fn q8_0(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    for (yj, &q) in y.iter_mut().zip(&b[2..34]) {
        *yj = (q as i8) as f32 * d;
    }
}

/// The 6-bit scale and min of sub-block `j` (0..8) from the 12 packed bytes of a Q4_K/Q5_K block
/// (`get_scale_min_k4` in ggml).
fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// `block_q4_K`: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles; 8
/// sub-blocks of 32; value = d*scale * q - dmin*min.
fn q4_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let scales = &b[4..16];
    let qs = &b[16..144];
    for (chunk, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        for l in 0..32 {
            y[l] = d1 * (q[l] & 0x0F) as f32 - min1;
            y[l + 32] = d2 * (q[l] >> 4) as f32 - min2;
        }
    }
}

/// `block_q5_K`: as Q4_K plus 32 bytes `qh` whose bit pairs (2*chunk, 2*chunk+1) add 16.
fn q5_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 0);
    let dmin = half_at(b, 2);
    let scales = &b[4..16];
    let qh = &b[16..48];
    let qs = &b[48..176];
    for (chunk, (q, y)) in qs.chunks_exact(32).zip(y.chunks_exact_mut(64)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * chunk, scales);
        let (sc2, m2) = scale_min_k4(2 * chunk + 1, scales);
        let (d1, min1) = (d * sc1 as f32, dmin * m1 as f32);
        let (d2, min2) = (d * sc2 as f32, dmin * m2 as f32);
        let (u1, u2) = (1u8 << (2 * chunk), 2u8 << (2 * chunk));
        for l in 0..32 {
            let h1 = if qh[l] & u1 != 0 { 16 } else { 0 };
            let h2 = if qh[l] & u2 != 0 { 16 } else { 0 };
            y[l] = d1 * ((q[l] & 0x0F) + h1) as f32 - min1;
            y[l + 32] = d2 * ((q[l] >> 4) + h2) as f32 - min2;
        }
    }
}

/// `block_q6_K`: 128 bytes low nibbles `ql`, 64 bytes high bit pairs `qh`, 16 signed 8-bit
/// scales, then f16 d; value = d * scale * (q - 32), in two halves of 128.
fn q6_k(b: &[u8], y: &mut [f32]) {
    let d = half_at(b, 208);
    for half in 0..2 {
        let ql = &b[64 * half..64 * half + 64];
        let qh = &b[128 + 32 * half..128 + 32 * half + 32];
        let sc = &b[192 + 8 * half..192 + 8 * half + 8];
        let y = &mut y[128 * half..128 * half + 128];
        for l in 0..32 {
            let is = l / 16;
            let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i32 - 32;
            let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
            let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
            let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
            y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
            y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
            y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
            y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_block_by_hand() {
        // d = 0.5 (f16 0x3800), q = 0, 1, -1, 127, -128, then zeros.
        let mut block = vec![0x00, 0x38, 0, 1, 0xFF, 127, 0x80];
        block.resize(34, 0);
        let mut y = [f32::NAN; 32];
        dequantize(DType::Q8_0, &block, &mut y).unwrap();
        assert_eq!(&y[..5], &[0.0, 0.5, -0.5, 63.5, -64.0]);
        assert!(y[5..].iter().all(|&v| v == 0.0));
    }

    #[test]
    fn q4_1_block_by_hand() {
        // d = 2.0 (0x4000), m = -1.0 (0xBC00); byte 0 = 0x3A: element 0 = 0xA, element 16 = 0x3.
        let mut block = vec![0x00, 0x40, 0x00, 0xBC, 0x3A];
        block.resize(20, 0);
        let mut y = [f32::NAN; 32];
        dequantize(DType::Q4_1, &block, &mut y).unwrap();
        assert_eq!(y[0], 10.0 * 2.0 - 1.0);
        assert_eq!(y[16], 3.0 * 2.0 - 1.0);
        assert_eq!(y[1], -1.0);
    }

    #[test]
    fn rejects_partial_blocks_and_wrong_output_length() {
        let mut y = [0.0; 32];
        assert!(dequantize(DType::Q4_0, &[0; 17], &mut y).is_err());
        assert!(dequantize(DType::Q4_0, &[0; 18], &mut y[..31]).is_err());
        assert!(dequantize(DType::F8E4M3, &[0; 1], &mut y[..1]).is_err());
    }
}
