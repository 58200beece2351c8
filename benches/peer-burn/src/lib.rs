//! Bench-only peer: burn's wgpu backend (cubecl, autotuned kernels), compared with our kernels
//! on the same adapter in the same run. Kept out of the default members so that the test
//! command never builds burn.
