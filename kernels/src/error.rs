//! The kernels' one error type: what went wrong, in which op, with the numbers that disagree.

/// Result alias used throughout the kernels.
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    #[error(
        "no GPU adapter found (tried Vulkan, Metal and DX12{tried}); on a machine without a GPU install Mesa's \
         software Vulkan driver: `apt-get install mesa-vulkan-drivers` (Debian/Ubuntu)"
    )]
    NoAdapter { tried: String },

    #[error("the adapter `{adapter}` refused a device: {reason}")]
    DeviceRequest { adapter: String, reason: String },

    #[error("{op}: {what} has shape {got:?}, expected {expected}")]
    ShapeMismatch {
        op: &'static str,
        what: &'static str,
        expected: String,
        got: Vec<usize>,
    },

    #[error("{op}: {what} is {got}, expected {expected}")]
    DTypeMismatch {
        op: &'static str,
        what: &'static str,
        expected: &'static str,
        got: &'static str,
    },

    #[error(
        "{op}: {what} needs a {bytes}-byte binding but this adapter binds at most {limit} bytes per storage buffer; split it"
    )]
    BindingTooLarge {
        op: &'static str,
        what: &'static str,
        bytes: u64,
        limit: u64,
    },

    #[error("{op}: {what} is invalid: {reason}")]
    InvalidArgument {
        op: &'static str,
        what: &'static str,
        reason: String,
    },

    #[error("shader `{label}` failed to compile: {message}; this is a bug")]
    Shader { label: String, message: String },

    #[error("GPU error during {during}: {message}")]
    Device { during: &'static str, message: String },
}
