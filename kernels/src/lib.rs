//! WGSL compute kernels and their launchers: the forward passes, ensembles and similarity search
//! of the daemon run here, through wgpu, on any GPU or on a software Vulkan driver.
//!
//! Invariant: this crate knows nothing of atoms, models, SQL or HTTP; it takes buffers and shapes.
//! The kernels themselves arrive with the kernels issue; until then the crate is empty on purpose.
