//! Aggregates over a set of vectors (embeddings or logit rows): sum, mean, weighted mean,
//! standard deviation, median, and the average pairwise cosine similarity. Ensembles are
//! weighted means of their members' outputs.

use crate::error::{KernelError, Result};
use crate::gpu::{Access, DType, Recorder, Tensor};
use crate::ops::similarity::row_norms_sq;
use crate::ops::{as_u32, expect_bindable, expect_distinct, expect_dtype, expect_shape, grid, wgsl_source};

/// Largest set the median sorts in workgroup memory.
pub const MAX_MEDIAN_N: usize = 2048;

#[derive(Debug, Clone, Copy)]
pub enum Aggregate<'a> {
    Sum,
    Mean,
    /// Weights [N] (non-negative, not all zero), normalised to sum 1.
    WeightedMean(&'a Tensor),
    /// Population standard deviation (divides by N).
    StdDev,
    /// Per dimension; the mean of the two middle values for even N (numpy). N <= 2048.
    Median,
}

#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct AggregateParams {
    n: u32,
    dim: u32,
    _pad: [u32; 2],
}

fn launch(rec: &mut Recorder<'_>, op: u32, op_name: &str, x: &Tensor, aux: &Tensor, out: &Tensor) -> Result<()> {
    const NAME: &str = "aggregate";
    let [n, d] = *x.shape() else {
        return Err(KernelError::ShapeMismatch {
            op: NAME,
            what: "x",
            expected: "[N, D]".into(),
            got: x.shape().to_vec(),
        });
    };
    expect_shape(NAME, "out", out, &[d])?;
    expect_distinct(NAME, out, &[x, aux])?;
    expect_bindable(rec.gpu(), NAME, &[("x", x), ("out", out)])?;
    let label = format!("aggregate_{op_name}_f32_dim_wg256");
    let kernel = rec.gpu().kernel(&label, "aggregate", &[Access::Read, Access::Read, Access::ReadWrite], || {
        format!("const OP: u32 = {op}u;\n{}", wgsl_source!("reduce.wgsl", "aggregate.wgsl"))
    })?;
    let params = AggregateParams {
        n: as_u32(NAME, "N", n)?,
        dim: as_u32(NAME, "D", d)?,
        _pad: [0; 2],
    };
    rec.dispatch(&kernel, &[x, aux, out], &params, grid(d, 1))
}

/// out [D] = the aggregate of the N rows of `x` [N, D] (N >= 1).
pub fn aggregate(rec: &mut Recorder<'_>, x: &Tensor, op: Aggregate<'_>, out: &Tensor) -> Result<()> {
    const NAME: &str = "aggregate";
    expect_dtype(NAME, "x", x, DType::F32)?;
    expect_dtype(NAME, "out", out, DType::F32)?;
    let n = x.shape().first().copied().unwrap_or(0);
    if n == 0 {
        return Err(KernelError::InvalidArgument {
            op: NAME,
            what: "x",
            reason: "an aggregate needs at least one vector".into(),
        });
    }
    match op {
        Aggregate::Sum => launch(rec, 0, "sum", x, x, out),
        Aggregate::Mean => launch(rec, 1, "mean", x, x, out),
        Aggregate::WeightedMean(weights) => {
            expect_dtype(NAME, "weights", weights, DType::F32)?;
            expect_shape(NAME, "weights", weights, &[n])?;
            launch(rec, 2, "weighted_mean", x, weights, out)
        }
        Aggregate::StdDev => launch(rec, 3, "std_dev", x, x, out),
        Aggregate::Median if n > MAX_MEDIAN_N => Err(KernelError::InvalidArgument {
            op: NAME,
            what: "x",
            reason: format!("the median sorts at most {MAX_MEDIAN_N} vectors, got {n}"),
        }),
        Aggregate::Median => launch(rec, 4, "median", x, x, out),
    }
}

/// The sum of the unit vectors of `x` [N, D] (zero rows add nothing), and their squared norms.
/// The average pairwise cosine similarity of the N >= 2 rows is then
/// (‖S‖² - #nonzero rows) / (N(N - 1)): Σ_{i≠j} uᵢ·uⱼ = ‖Σ uᵢ‖² - Σ ‖uᵢ‖². See
/// [`average_pairwise_cosine`] for the scalar.
pub fn unit_sum(rec: &mut Recorder<'_>, x: &Tensor, norms_sq: &Tensor, out: &Tensor) -> Result<()> {
    const NAME: &str = "unit_sum";
    expect_dtype(NAME, "x", x, DType::F32)?;
    let n = x.shape().first().copied().unwrap_or(0);
    expect_shape(NAME, "norms_sq", norms_sq, &[n])?;
    row_norms_sq(rec, x, norms_sq)?;
    launch(rec, 5, "unit_sum", x, norms_sq, out)
}

/// The average pairwise cosine similarity from [`unit_sum`]'s outputs (downloaded: D + N
/// floats); 0 for fewer than two vectors.
pub fn average_pairwise_cosine(unit_sum: &[f32], norms_sq: &[f32]) -> f64 {
    let n = norms_sq.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let s2: f64 = unit_sum.iter().map(|&v| f64::from(v).powi(2)).sum();
    let nonzero = norms_sq.iter().filter(|&&v| v > 0.0).count() as f64;
    (s2 - nonzero) / (n * (n - 1.0))
}
