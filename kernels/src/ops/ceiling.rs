//! The adapter's ceilings, so benchmarks can print the fraction of them a kernel reaches: memory
//! bandwidth through a vec4 copy (also a real op: appending rows to a cache) and, where shaders
//! have 64-bit integers, through a u64 copy (CPU adapters load a u64 for the price of a u32, and
//! the CPU matvec reads its weights so), and the FMA rate through independent FMA chains.

use crate::error::{KernelError, Result};
use crate::gpu::{Access, DType, Recorder, Tensor};
use crate::ops::{as_u32, expect_bindable, expect_distinct, expect_dtype, grid, wgsl_source};

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CopyParams {
    n4: u32,
    dst_offset4: u32,
    _pad: [u32; 2],
}

/// Copies all of `src` into `dst` starting at element `dst_offset`; both f32, `src`'s length and
/// `dst_offset` multiples of 4 (vec4 moves).
pub fn copy(rec: &mut Recorder<'_>, src: &Tensor, dst: &Tensor, dst_offset: usize) -> Result<()> {
    const NAME: &str = "copy";
    expect_dtype(NAME, "src", src, DType::F32)?;
    expect_dtype(NAME, "dst", dst, DType::F32)?;
    if src.len() % 4 != 0 || dst_offset % 4 != 0 || dst_offset + src.len() > dst.len() {
        return Err(KernelError::InvalidArgument {
            op: NAME,
            what: "range",
            reason: format!(
                "{} elements at offset {dst_offset} must be whole vec4s inside the destination's {}",
                src.len(),
                dst.len()
            ),
        });
    }
    expect_distinct(NAME, dst, &[src])?;
    expect_bindable(rec.gpu(), NAME, &[("src", src), ("dst", dst)])?;
    let kernel = rec.gpu().kernel("copy_f32_vec4_wg256", "copy_vec4", &[Access::Read, Access::ReadWrite], || wgsl_source!("copy.wgsl").into())?;
    let params = CopyParams {
        n4: as_u32(NAME, "src", src.len() / 4)?,
        dst_offset4: as_u32(NAME, "dst_offset", dst_offset / 4)?,
        _pad: [0; 2],
    };
    rec.dispatch(&kernel, &[src, dst], &params, grid(src.len() / 4, 256))
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct CopyWideParams {
    n16: u32,
    _pad: [u32; 3],
}

/// Copies all of `src` into the start of `dst` as u64 pairs, 64 bytes an invocation: the
/// bandwidth ceiling for kernels that load 64-bit words (the CPU matvec loads weights as
/// vec2<u64>). Both f32, `src`'s length a multiple of 4;
/// needs 64-bit shader integers ([`AdapterReport::shader_int64`](crate::AdapterReport)).
pub fn copy_wide(rec: &mut Recorder<'_>, src: &Tensor, dst: &Tensor) -> Result<()> {
    const NAME: &str = "copy_wide";
    expect_dtype(NAME, "src", src, DType::F32)?;
    expect_dtype(NAME, "dst", dst, DType::F32)?;
    if !rec.gpu().report().shader_int64 {
        return Err(KernelError::InvalidArgument {
            op: NAME,
            what: "adapter",
            reason: "the adapter has no 64-bit shader integers".into(),
        });
    }
    if src.len() % 4 != 0 || src.len() > dst.len() {
        return Err(KernelError::InvalidArgument {
            op: NAME,
            what: "range",
            reason: format!("{} elements must be whole 16-byte units that fit the destination's {}", src.len(), dst.len()),
        });
    }
    expect_distinct(NAME, dst, &[src])?;
    expect_bindable(rec.gpu(), NAME, &[("src", src), ("dst", dst)])?;
    let kernel = rec.gpu().kernel("copy_wide_u64x2x4_wg64", "copy_wide", &[Access::Read, Access::ReadWrite], || wgsl_source!("copy_wide.wgsl").into())?;
    let units = src.len() / 4;
    let params = CopyWideParams {
        n16: as_u32(NAME, "src", units)?,
        _pad: [0; 3],
    };
    rec.dispatch(&kernel, &[src, dst], &params, grid(units.div_ceil(4), 64))
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct PeakParams {
    iterations: u32,
    _pad: [u32; 3],
}

/// Runs `out.len()` invocations of `iterations` · 64 flops each (see `fma_peak.wgsl`); returns
/// the flops recorded, for a caller that times the submission.
pub fn fma_peak(rec: &mut Recorder<'_>, out: &Tensor, iterations: u32) -> Result<u64> {
    const NAME: &str = "fma_peak";
    expect_dtype(NAME, "out", out, DType::F32)?;
    if out.len() % 256 != 0 || out.len() / 256 > 65_535 {
        return Err(KernelError::InvalidArgument {
            op: NAME,
            what: "out",
            reason: format!("{} invocations must be a multiple of 256, at most 65535 workgroups", out.len()),
        });
    }
    let kernel = rec.gpu().kernel("fma_peak_f32_vec4x8_wg256", "fma_peak", &[Access::ReadWrite], || wgsl_source!("fma_peak.wgsl").into())?;
    let params = PeakParams { iterations, _pad: [0; 3] };
    rec.dispatch(&kernel, &[out], &params, [(out.len() / 256) as u32, 1, 1])?;
    Ok(out.len() as u64 * u64::from(iterations) * 64)
}
