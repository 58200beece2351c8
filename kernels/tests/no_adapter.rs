//! Acceptance (issue 3, item 5): with the Vulkan driver hidden, `Gpu::new` returns the
//! documented error naming the package to install, and does not hang. This binary holds one
//! test, so changing the environment before any GPU call affects nothing else.

use hartonomous_kernels::{Gpu, KernelError};

#[test]
fn no_adapter_gives_the_documented_error() {
    // The Vulkan loader reads the driver manifests from these (the older and newer names).
    std::env::set_var("VK_ICD_FILENAMES", "/nonexistent/hartonomous-no-driver.json");
    std::env::set_var("VK_DRIVER_FILES", "/nonexistent/hartonomous-no-driver.json");
    std::env::remove_var("HARTONOMOUS_ADAPTER");
    let started = std::time::Instant::now();
    let err = match Gpu::new() {
        Ok(gpu) => panic!("found an adapter with the driver hidden: {}", gpu.report()),
        Err(e) => e,
    };
    assert!(matches!(err, KernelError::NoAdapter { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("mesa-vulkan-drivers"), "{message}");
    assert!(started.elapsed().as_secs() < 30, "took {:?}", started.elapsed());
}
