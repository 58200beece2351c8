//! WGSL compute kernels and their launchers: the forward passes, ensembles and similarity search
//! of the daemon run here, through wgpu, on any GPU or on a software Vulkan driver (lavapipe).
//!
//! [`Gpu`] owns the device, the pipeline cache and a buffer pool; [`Recorder`] records many
//! dispatches into one command encoder; each op family has a `.wgsl` file in `src/wgsl/` and a
//! launcher in [`ops`] that checks shapes, dtypes, aliasing and binding sizes before encoding;
//! [`reference`] holds the CPU definition of every kernel.
//!
//! Invariant: this crate knows nothing of atoms, models, SQL or HTTP; it takes buffers and shapes.

pub mod error;
pub mod gpu;
pub mod ops;
pub mod reference;
mod unroll;

pub use error::{KernelError, Result};
pub use gpu::{AdapterReport, DType, Gpu, Recorder, Tensor};
