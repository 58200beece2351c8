//! Launchers: thin functions that check shapes, dtypes, aliasing and binding sizes against the
//! adapter, then record one kernel into a [`Recorder`](crate::Recorder). Each op family's WGSL
//! lives in `src/wgsl/` beside the shared `common.wgsl`.

pub mod aggregate;
pub mod attention;
pub mod ceiling;
pub mod elementwise;
pub mod gather;
pub mod matmul;
pub mod norm;
pub mod pool;
pub mod qmatmul;
pub mod rope;
pub mod similarity;
pub mod softmax;

use crate::error::{KernelError, Result};
use crate::gpu::{DType, Gpu, Tensor};

/// WGSL of an op family with the shared declarations prepended, and any shared snippets
/// (`reduce.wgsl`, `quant.wgsl`) it includes before it.
macro_rules! wgsl_source {
    ($($file:literal),+) => {
        concat!(include_str!("../wgsl/common.wgsl") $(, "\n", include_str!(concat!("../wgsl/", $file)))+)
    };
}
pub(crate) use wgsl_source;

/// Workgroups for `items` independent units of `per_group` each, as a 2-D grid (a dimension
/// holds at most 65535 workgroups); kernels recover the linear index with `linear_index`.
pub(crate) fn grid(items: usize, per_group: usize) -> [u32; 3] {
    let groups = items.div_ceil(per_group.max(1));
    if groups == 0 {
        return [0, 1, 1];
    }
    let x = groups.min(65_535);
    [x as u32, groups.div_ceil(x) as u32, 1]
}

pub(crate) fn expect_dtype(op: &'static str, what: &'static str, t: &Tensor, dtype: DType) -> Result<()> {
    if t.dtype() != dtype {
        return Err(KernelError::DTypeMismatch {
            op,
            what,
            expected: dtype.name(),
            got: t.dtype().name(),
        });
    }
    Ok(())
}

pub(crate) fn expect_shape(op: &'static str, what: &'static str, t: &Tensor, expected: &[usize]) -> Result<()> {
    if t.shape() != expected {
        return Err(KernelError::ShapeMismatch {
            op,
            what,
            expected: format!("{expected:?}"),
            got: t.shape().to_vec(),
        });
    }
    Ok(())
}

/// WebGPU forbids binding one buffer both read-only and writable in a dispatch.
pub(crate) fn expect_distinct(op: &'static str, out: &Tensor, inputs: &[&Tensor]) -> Result<()> {
    if inputs.iter().any(|t| t.same_buffer(out)) {
        return Err(KernelError::InvalidArgument {
            op,
            what: "out",
            reason: "the output shares a buffer with an input; write to a separate tensor".into(),
        });
    }
    Ok(())
}

/// Checks every tensor against the adapter's storage binding limit.
pub(crate) fn expect_bindable(gpu: &Gpu, op: &'static str, tensors: &[(&'static str, &Tensor)]) -> Result<()> {
    tensors.iter().try_for_each(|(what, t)| gpu.check_binding(op, what, t))
}

/// The element count as the u32 the kernels index with.
pub(crate) fn as_u32(op: &'static str, what: &'static str, n: usize) -> Result<u32> {
    u32::try_from(n).map_err(|_| KernelError::InvalidArgument {
        op,
        what,
        reason: format!("{n} exceeds the 2^32 - 1 elements a kernel indexes"),
    })
}
