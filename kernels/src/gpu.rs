//! The GPU context: which adapter, the device with the features and limits the kernels use, the
//! pipeline cache, pooled buffers with staged uploads and downloads, and the [`Recorder`] that
//! puts many dispatches into one command encoder (per-submit overhead under wgpu is large).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use wgpu::util::DeviceExt as _;

use crate::error::{KernelError, Result};

/// The backends tried, in wgpu's order. GL is left out: its compute support is too limited.
const BACKENDS: wgpu::Backends = wgpu::Backends::VULKAN.union(wgpu::Backends::METAL).union(wgpu::Backends::DX12);

/// Set to a substring of an adapter's name to choose it over the default order.
pub const ADAPTER_ENV: &str = "HARTONOMOUS_ADAPTER";
/// Set to 0 to compile kernels without wgpu's runtime bounds checks. The default keeps them:
/// on lavapipe removing them made no measurable difference (benches/NOTES.md), so speed does not
/// yet justify giving up that safety net.
pub const SHADER_CHECKS_ENV: &str = "HARTONOMOUS_SHADER_CHECKS";
/// On software adapters, `upload_weights` may also write f16 and block-format weights into an
/// rgba32uint texture (a second copy of the same bytes, not a dequantized one) that the CPU
/// matvec fetches 16 bytes at a time instead of loading them from the buffer. Which is faster
/// depends on the CPU under lavapipe (a texel fetch is a gather, a storage load a loop over the
/// lanes; `qmatvec_rows.wgsl`, benches/NOTES.md: the buffer won on an AMD EPYC Zen 4, texels
/// beat an older u64-word load on an Intel Xeon), so by default the device times both once
/// ([`Gpu::texel_weights`]). Set to 0 to keep weights in buffers only, 1 for texel copies
/// without timing them.
pub const TEXEL_WEIGHTS_ENV: &str = "HARTONOMOUS_TEXEL_WEIGHTS";
/// Set to 0 to run the op before a matmul (`ops::qmatmul::Input`: rms_norm, the SwiGLU gate) as
/// its own kernel on software adapters too. By default the CPU matvec computes it as it loads
/// its rows, saving a dispatch (~85 us of thread wake-ups on lavapipe); for A/B measurements.
pub const FUSED_INPUTS_ENV: &str = "HARTONOMOUS_FUSED_INPUTS";
/// Set to 0 to run each product of one input (`ops::qmatmul::qmatmul_input`: Llama's Q, K and V,
/// or gate and up) as its own dispatch on software adapters too. By default the CPU matvec runs
/// 2 or 3 of them in one dispatch, a workgroup range a matrix, where it also fuses inputs
/// ([`FUSED_INPUTS_ENV`] at 0 turns both off); for A/B measurements.
pub const FUSED_PRODUCTS_ENV: &str = "HARTONOMOUS_FUSED_PRODUCTS";
/// Texels in a row of a weight texture: rows of 256 KiB (a multiple of the 256-byte row
/// alignment of texture copies), so 4 GiB of blocks fit in the 16,384 rows Vulkan guarantees.
pub(crate) const TEXEL_ROW: u32 = 16384;
/// Bytes every tensor buffer keeps past its data, and texels every texel copy keeps past its
/// bytes (16 of 16 bytes), for the windows of the last block (`take_buffer`).
const BUFFER_SLACK: u64 = 256;

/// What the daemon and the benchmarks report about the adapter in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterReport {
    pub name: String,
    pub backend: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` (software, e.g. lavapipe) or `Other`.
    pub device_type: String,
    pub driver: String,
    pub software: bool,
    pub subgroups: bool,
    /// The subgroup size when the adapter has exactly one (lavapipe: 8 lanes of 256-bit SIMD).
    pub subgroup_size: Option<u32>,
    pub shader_f16: bool,
    /// 64-bit integers in shaders: CPU adapters' kernels load weights 8 bytes at a time with them.
    pub shader_int64: bool,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
}

impl std::fmt::Display for AdapterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {}{}; driver {}; subgroups {}, f16 {}, int64 {}; storage binding {} MiB)",
            self.name,
            self.backend,
            self.device_type,
            if self.software { ", software" } else { "" },
            self.driver,
            self.subgroups,
            self.shader_f16,
            self.shader_int64,
            self.max_storage_buffer_binding_size >> 20
        )
    }
}

/// Element type of a [`Tensor`]'s buffer: activation and index types, and the GGUF block
/// formats weights stay in (bytes as stored, blocks along the last dimension; layouts in
/// `wgsl/quant.wgsl`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
    U32,
    Q8_0,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q4K,
    Q5K,
    Q6K,
}

impl DType {
    /// (elements, bytes) per storage block; scalars are blocks of one.
    pub const fn block(self) -> (u64, u64) {
        match self {
            DType::F32 | DType::U32 => (1, 4),
            DType::F16 => (1, 2),
            DType::Q8_0 => (32, 34),
            DType::Q4_0 => (32, 18),
            DType::Q4_1 => (32, 20),
            DType::Q5_0 => (32, 22),
            DType::Q5_1 => (32, 24),
            DType::Q4K => (256, 144),
            DType::Q5K => (256, 176),
            DType::Q6K => (256, 210),
        }
    }

    /// Bytes taken by `elements` elements (a whole number of blocks).
    pub const fn bytes_for(self, elements: u64) -> u64 {
        let (e, b) = self.block();
        elements / e * b
    }

    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::U32 => "u32",
            DType::Q8_0 => "q8_0",
            DType::Q4_0 => "q4_0",
            DType::Q4_1 => "q4_1",
            DType::Q5_0 => "q5_0",
            DType::Q5_1 => "q5_1",
            DType::Q4K => "q4_k",
            DType::Q5K => "q5_k",
            DType::Q6K => "q6_k",
        }
    }
}

/// A GPU buffer with a shape and element type. Cloning shares the buffer. When the last clone
/// is dropped the buffer goes back to the pool.
#[derive(Clone)]
pub struct Tensor {
    buffer: Arc<PooledBuffer>,
    shape: Vec<usize>,
    dtype: DType,
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({:?}, {:?})", self.dtype, self.shape)
    }
}

impl Tensor {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn dtype(&self) -> DType {
        self.dtype
    }
    /// Elements (product of the shape).
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of data (the pooled buffer may be larger).
    pub fn byte_len(&self) -> u64 {
        self.dtype.bytes_for(self.len() as u64)
    }
    pub(crate) fn buffer(&self) -> &wgpu::Buffer {
        &self.buffer.buffer
    }
    /// The texel copy of a weight's bytes, where `Gpu::upload_weights` made one.
    pub(crate) fn texels(&self) -> Option<&wgpu::TextureView> {
        self.buffer.texels.get()
    }
    /// Whether this weight has a texel copy (`Gpu::upload_weights` where [`Gpu::texel_weights`]
    /// says so, or `Gpu::upload_weights_with_texels`; software adapters only).
    pub fn has_texels(&self) -> bool {
        self.texels().is_some()
    }
    /// True when both tensors view one buffer.
    pub fn same_buffer(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.buffer, &other.buffer)
    }

    /// The same buffer viewed with another shape of the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<Tensor> {
        if shape.iter().product::<usize>() != self.len() {
            return Err(KernelError::ShapeMismatch {
                op: "reshape",
                what: "new shape",
                expected: format!("{} elements", self.len()),
                got: shape.to_vec(),
            });
        }
        Ok(Tensor {
            buffer: self.buffer.clone(),
            shape: shape.to_vec(),
            dtype: self.dtype,
        })
    }
}

/// Buffers are pooled by size class: up to 1 MiB rounded to a power of two, above it to whole
/// MiB. Kernels only ever touch a tensor's first `byte_len` bytes.
fn size_class(bytes: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let bytes = bytes.max(16);
    if bytes <= MIB {
        bytes.next_power_of_two()
    } else {
        bytes.div_ceil(MIB) * MIB
    }
}

/// Free bytes kept in the pool at most; beyond it released buffers are destroyed.
const POOL_MAX_FREE_BYTES: u64 = 512 << 20;

#[derive(Default)]
struct Pool {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    free_bytes: u64,
}

struct PooledBuffer {
    buffer: wgpu::Buffer,
    pool: Arc<Mutex<Pool>>,
    /// The same bytes as `TEXEL_ROW`-wide rows of rgba32uint texels, for f16 and block-format
    /// weights on software adapters where texel fetches were measured faster
    /// (`Gpu::upload_weights`), or where a caller asked (`Gpu::upload_weights_with_texels`). Written once at upload; no kernel
    /// writes a weight, so it never goes stale. Dropped with the buffer.
    texels: std::sync::OnceLock<wgpu::TextureView>,
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        let size = self.buffer.size();
        let mut pool = lock(&self.pool);
        if pool.free_bytes + size <= POOL_MAX_FREE_BYTES {
            pool.free_bytes += size;
            pool.free.entry(size).or_default().push(self.buffer.clone());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves plain data behind, still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How a kernel uses a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    ReadWrite,
    /// The tensor's texel copy ([`Tensor::texels`]) as a `texture_2d<u32>`.
    Texels,
}

/// A compiled compute pipeline and its bind group layout.
pub(crate) struct Kernel {
    pub(crate) label: String,
    pipeline: wgpu::ComputePipeline,
    layout: wgpu::BindGroupLayout,
    access: Vec<Access>,
}

/// The GPU context. Create once and share; all methods take `&self`.
pub struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    report: AdapterReport,
    limits: wgpu::Limits,
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
    pool: Arc<Mutex<Pool>>,
    uncaptured: Arc<Mutex<Vec<String>>>,
    shader_checks: bool,
    /// Whether the adapter can hold texel copies of weights (software, 64-bit integers, rows of
    /// `TEXEL_ROW` texels).
    texel_capable: bool,
    /// [`TEXEL_WEIGHTS_ENV`]: `Some` where set, else the measurement decides.
    texel_setting: Option<bool>,
    /// The measurement, made on first need ([`Gpu::texel_weights`]).
    texels_faster: std::sync::OnceLock<bool>,
    fused_inputs: bool,
    fused_products: bool,
}

/// The process's one wgpu instance, created on first use and never destroyed.
///
/// Why never: destroying the last instance makes the Vulkan loader unload the driver, and
/// NVIDIA's driver (580, seen on an H100) leaves per-thread destructors behind in every thread
/// that called into it. Those then run at that thread's exit from unmapped code: the daemon's
/// tokio workers segfaulted as the runtime shut down after the GPU context was dropped, so
/// `hartonomous serve` exited with SIGSEGV on SIGTERM. Keeping the instance keeps the driver
/// loaded for the process's life; it costs one instance, which any GPU program holds anyway.
fn instance() -> &'static wgpu::Instance {
    static INSTANCE: std::sync::OnceLock<wgpu::Instance> = std::sync::OnceLock::new();
    INSTANCE.get_or_init(|| {
        wgpu::Instance::new(wgpu::InstanceDescriptor {
            backends: BACKENDS,
            ..wgpu::InstanceDescriptor::new_without_display_handle()
        })
    })
}

fn device_type_rank(t: wgpu::DeviceType) -> u8 {
    match t {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

impl Gpu {
    /// Picks an adapter (a discrete GPU first, then any other, software last, or the one named
    /// by `HARTONOMOUS_ADAPTER`) and opens a device with subgroups and `shader-f16` where the
    /// adapter has them and its maximum limits.
    pub fn new() -> Result<Self> {
        let mut adapters = pollster::block_on(instance().enumerate_adapters(BACKENDS));
        adapters.sort_by_key(|a| device_type_rank(a.get_info().device_type));
        let wanted = std::env::var(ADAPTER_ENV).ok();
        let adapter = match &wanted {
            Some(name) => adapters.into_iter().find(|a| a.get_info().name.contains(name.as_str())).ok_or_else(|| {
                KernelError::NoAdapter {
                    tried: format!("; none is named like {ADAPTER_ENV}={name}"),
                }
            })?,
            None => adapters.into_iter().next().ok_or_else(|| KernelError::NoAdapter { tried: String::new() })?,
        };
        let info = adapter.get_info();
        let features = adapter.features() & (wgpu::Features::SUBGROUP | wgpu::Features::SHADER_F16 | wgpu::Features::SHADER_INT64);
        let limits = adapter.limits();
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("hartonomous"),
            required_features: features,
            required_limits: limits.clone(),
            ..Default::default()
        }))
        .map_err(|e| KernelError::DeviceRequest {
            adapter: info.name.clone(),
            reason: e.to_string(),
        })?;
        // wgpu's default handler panics; a daemon must not, so errors are kept and reported.
        let uncaptured = Arc::new(Mutex::new(Vec::new()));
        let sink = uncaptured.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| lock(&sink).push(e.to_string())));

        let report = AdapterReport {
            name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            software: info.device_type == wgpu::DeviceType::Cpu,
            subgroups: features.contains(wgpu::Features::SUBGROUP),
            subgroup_size: (features.contains(wgpu::Features::SUBGROUP) && info.subgroup_min_size == info.subgroup_max_size)
                .then_some(info.subgroup_min_size),
            shader_f16: features.contains(wgpu::Features::SHADER_F16),
            shader_int64: features.contains(wgpu::Features::SHADER_INT64),
            max_storage_buffer_binding_size: limits.max_storage_buffer_binding_size,
            max_buffer_size: limits.max_buffer_size,
            max_compute_workgroup_storage_size: limits.max_compute_workgroup_storage_size,
            max_compute_invocations_per_workgroup: limits.max_compute_invocations_per_workgroup,
        };
        if report.software {
            tracing::warn!(adapter = %report, "using a software adapter: kernels run on the CPU");
        } else {
            tracing::info!(adapter = %report, "using GPU adapter");
        }
        Ok(Self {
            device,
            queue,
            kernels: Mutex::new(HashMap::new()),
            pool: Arc::new(Mutex::new(Pool::default())),
            uncaptured,
            shader_checks: std::env::var_os(SHADER_CHECKS_ENV).is_none_or(|v| v != "0"),
            texel_capable: report.software && report.shader_int64 && limits.max_texture_dimension_2d >= TEXEL_ROW,
            texel_setting: std::env::var_os(TEXEL_WEIGHTS_ENV).map(|v| v != "0"),
            texels_faster: std::sync::OnceLock::new(),
            fused_inputs: std::env::var_os(FUSED_INPUTS_ENV).is_none_or(|v| v != "0"),
            fused_products: std::env::var_os(FUSED_PRODUCTS_ENV).is_none_or(|v| v != "0"),
            report,
            limits,
        })
    }

    pub fn report(&self) -> &AdapterReport {
        &self.report
    }

    pub fn limits(&self) -> &wgpu::Limits {
        &self.limits
    }

    /// Fails if a tensor is larger than one storage binding may be on this adapter.
    pub(crate) fn check_binding(&self, op: &'static str, what: &'static str, t: &Tensor) -> Result<()> {
        let limit = self.limits.max_storage_buffer_binding_size;
        if t.byte_len() > limit {
            return Err(KernelError::BindingTooLarge {
                op,
                what,
                bytes: t.byte_len(),
                limit,
            });
        }
        Ok(())
    }

    /// Destroys the pool's free buffers of the size class a tensor of `bytes` takes: for one-off
    /// large tensors (the texel measurement's weights) that would otherwise stay in the pool,
    /// host memory on a software adapter that no pager counts.
    pub(crate) fn discard_free_buffers(&self, bytes: u64) {
        let class = size_class(bytes.next_multiple_of(4) + BUFFER_SLACK);
        let mut pool = lock(&self.pool);
        if let Some(buffers) = pool.free.remove(&class) {
            pool.free_bytes -= class * buffers.len() as u64;
        }
    }

    /// Whether a device error is waiting to be reported (by the next submit, download or sync).
    pub(crate) fn has_uncaptured_errors(&self) -> bool {
        !lock(&self.uncaptured).is_empty()
    }

    fn take_buffer(&self, bytes: u64) -> Result<wgpu::Buffer> {
        // Block decoders read whole words and windows of 16-byte units, so the last block of a
        // tensor may be read up to 223 bytes past its data (a Q6_K block's window of 14 units,
        // `qmatvec_rows.wgsl`): every buffer keeps 256 bytes of slack beyond the data, so those
        // reads stay inside the buffer.
        let class = size_class(bytes.next_multiple_of(4) + BUFFER_SLACK);
        if class > self.limits.max_buffer_size {
            return Err(KernelError::InvalidArgument {
                op: "alloc",
                what: "buffer size",
                reason: format!("{bytes} bytes exceed the adapter's maximum buffer size {}", self.limits.max_buffer_size),
            });
        }
        let mut pool = lock(&self.pool);
        if let Some(buffer) = pool.free.get_mut(&class).and_then(Vec::pop) {
            pool.free_bytes -= class;
            return Ok(buffer);
        }
        drop(pool);
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("tensor"),
            size: class,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// A tensor of `shape` whose contents are unspecified (a reused buffer keeps old data).
    pub fn empty(&self, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let elements = shape.iter().product::<usize>() as u64;
        if elements % dtype.block().0 != 0 || shape.last().is_some_and(|&k| k as u64 % dtype.block().0 != 0) {
            return Err(KernelError::ShapeMismatch {
                op: "alloc",
                what: "block tensor",
                expected: format!("a last dimension that is a multiple of {} ({} blocks)", dtype.block().0, dtype.name()),
                got: shape.to_vec(),
            });
        }
        let bytes = dtype.bytes_for(elements);
        Ok(Tensor {
            buffer: Arc::new(PooledBuffer {
                buffer: self.take_buffer(bytes)?,
                pool: self.pool.clone(),
                texels: std::sync::OnceLock::new(),
            }),
            shape: shape.to_vec(),
            dtype,
        })
    }

    /// Uploads `data` (whose byte length must match `shape` in `dtype`; for block formats the
    /// stored block bytes) as a tensor.
    pub fn upload<T: bytemuck::Pod>(&self, data: &[T], shape: &[usize], dtype: DType) -> Result<Tensor> {
        let t = self.empty(shape, dtype)?;
        if std::mem::size_of_val(data) as u64 != t.byte_len() {
            return Err(KernelError::ShapeMismatch {
                op: "upload",
                what: "data",
                expected: format!("{} bytes for {:?} {}", t.byte_len(), shape, dtype.name()),
                got: vec![std::mem::size_of_val(data)],
            });
        }
        let bytes: &[u8] = bytemuck::cast_slice(data);
        // `write_buffer` needs a multiple of 4 bytes; f16 tensors of odd length are padded.
        if bytes.len() % 4 == 0 {
            self.queue.write_buffer(t.buffer(), 0, bytes);
        } else {
            let mut padded = bytes.to_vec();
            padded.resize(bytes.len().next_multiple_of(4), 0);
            self.queue.write_buffer(t.buffer(), 0, &padded);
        }
        Ok(t)
    }

    /// [`Gpu::upload`] for a model's weights: where [`Gpu::texel_weights`] says so (a software
    /// adapter on which texel fetches beat storage loads), f16 and block-format weights also get
    /// a texel copy, which the CPU matvec reads instead of the buffer. The tensor must then never
    /// be written by a kernel (weights are not), or the copy would go stale.
    pub fn upload_weights<T: bytemuck::Pod>(&self, data: &[T], shape: &[usize], dtype: DType) -> Result<Tensor> {
        if (dtype == DType::F16 || dtype.block().0 > 1) && self.texel_weights() {
            self.upload_weights_with_texels(data, shape, dtype)
        } else {
            self.upload(data, shape, dtype)
        }
    }

    /// [`Gpu::upload_weights`] with a texel copy whatever [`Gpu::texel_weights`] says, wherever
    /// the adapter can hold one (f16 and block formats on a software adapter with 64-bit
    /// integers): for tests and probes that run both of the CPU matvec's routes.
    pub fn upload_weights_with_texels<T: bytemuck::Pod>(&self, data: &[T], shape: &[usize], dtype: DType) -> Result<Tensor> {
        let t = self.upload(data, shape, dtype)?;
        if self.texel_capable && (dtype == DType::F16 || dtype.block().0 > 1) {
            if let Some(view) = self.texel_copy(bytemuck::cast_slice(data)) {
                let _ = t.buffer.texels.set(view);
            }
        }
        Ok(t)
    }

    /// Whether f16 and block-format weights uploaded here ([`Gpu::upload_weights`]) get a texel
    /// copy: the memory they take is then twice their bytes. Never on GPUs; on a software adapter
    /// as [`TEXEL_WEIGHTS_ENV`] says, or where it is unset as the first call measures
    /// ([`Gpu::measure_texel_weights`], under a second on the VMs measured). The first call is
    /// the first f16 or block-format `upload_weights`, or the pager sizing such a layer.
    pub fn texel_weights(&self) -> bool {
        if !self.texel_capable {
            return false;
        }
        if let Some(setting) = self.texel_setting {
            return setting;
        }
        // The measurement must not call `texel_weights` itself (it would wait on this cell
        // forever): it uploads with and without copies explicitly and runs `qmatmul`, whose
        // route follows each tensor's own copy.
        *self.texels_faster.get_or_init(|| match self.measure_texel_weights() {
            Ok(faster) => faster,
            Err(err) => {
                tracing::warn!(%err, "timing texel fetches against storage loads failed; weights stay in buffers only");
                false
            }
        })
    }

    /// Times the CPU matvec reading a weight from a texel copy against reading its buffer
    /// (`ops::qmatmul::texels_measured_faster`: a Q4_1 weight larger than a last-level cache,
    /// alternating rounds, a kernel compiled for each route) and returns whether texels were
    /// faster; false where the adapter cannot hold texel copies. [`Gpu::texel_weights`] calls it
    /// once; it is public for tests and benchmarks. Where a device error from earlier work is
    /// waiting to be reported it measures nothing and returns false, leaving the error for the
    /// work it belongs to.
    pub fn measure_texel_weights(&self) -> Result<bool> {
        if !self.texel_capable || self.has_uncaptured_errors() {
            return Ok(false);
        }
        crate::ops::qmatmul::texels_measured_faster(self)
    }

    /// Whether `qmatmul_input` may fuse the op before a matmul into it ([`FUSED_INPUTS_ENV`]).
    pub fn fused_inputs(&self) -> bool {
        self.fused_inputs
    }

    /// Whether `qmatmul_input` may run several products of one input in one dispatch
    /// ([`FUSED_PRODUCTS_ENV`]).
    pub fn fused_products(&self) -> bool {
        self.fused_products
    }

    /// `bytes` as an rgba32uint texture of `TEXEL_ROW`-wide rows (the last texel zero-padded,
    /// and at least `BUFFER_SLACK` bytes of texels after it); `None` where they need more rows
    /// than the adapter allows (the weight then stays in its buffer only).
    fn texel_copy(&self, bytes: &[u8]) -> Option<wgpu::TextureView> {
        let texels = (bytes.len() as u64).div_ceil(16);
        let row_bytes = u64::from(TEXEL_ROW) * 16;
        let rows = (texels + BUFFER_SLACK / 16).div_ceil(u64::from(TEXEL_ROW));
        if rows > u64::from(self.limits.max_texture_dimension_2d) {
            return None;
        }
        let size = wgpu::Extent3d { width: TEXEL_ROW, height: rows as u32, depth_or_array_layers: 1 };
        let texture = self.device.create_texture(&wgpu::TextureDescriptor {
            label: Some("weight texels"),
            size,
            mip_level_count: 1,
            sample_count: 1,
            dimension: wgpu::TextureDimension::D2,
            format: wgpu::TextureFormat::Rgba32Uint,
            usage: wgpu::TextureUsages::TEXTURE_BINDING | wgpu::TextureUsages::COPY_DST,
            view_formats: &[],
        });
        // Whole rows straight from `bytes`, then the last row from a padded copy of the tail.
        let full_rows = bytes.len() as u64 / row_bytes;
        let layout = |rows| wgpu::TexelCopyBufferLayout { offset: 0, bytes_per_row: Some(row_bytes as u32), rows_per_image: Some(rows) };
        if full_rows > 0 {
            let extent = wgpu::Extent3d { width: TEXEL_ROW, height: full_rows as u32, depth_or_array_layers: 1 };
            self.queue.write_texture(texture.as_image_copy(), &bytes[..(full_rows * row_bytes) as usize], layout(full_rows as u32), extent);
        }
        let tail = &bytes[(full_rows * row_bytes) as usize..];
        if !tail.is_empty() {
            let mut padded = tail.to_vec();
            padded.resize(tail.len().next_multiple_of(16), 0);
            let width = (padded.len() / 16) as u32;
            let origin = wgpu::TexelCopyTextureInfo {
                texture: &texture,
                mip_level: 0,
                origin: wgpu::Origin3d { x: 0, y: full_rows as u32, z: 0 },
                aspect: wgpu::TextureAspect::All,
            };
            self.queue.write_texture(origin, &padded, layout(1), wgpu::Extent3d { width, height: 1, depth_or_array_layers: 1 });
        }
        Some(texture.create_view(&Default::default()))
    }

    pub fn upload_f32(&self, data: &[f32], shape: &[usize]) -> Result<Tensor> {
        self.upload(data, shape, DType::F32)
    }

    pub fn upload_u32(&self, data: &[u32], shape: &[usize]) -> Result<Tensor> {
        self.upload(data, shape, DType::U32)
    }

    /// Downloads a tensor's bytes through a staging buffer, waiting for all submitted work.
    pub fn download_bytes(&self, t: &Tensor) -> Result<Vec<u8>> {
        let size = t.byte_len().next_multiple_of(4);
        if size == 0 {
            return Ok(Vec::new());
        }
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("download staging"),
            size,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut encoder = self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("download") });
        encoder.copy_buffer_to_buffer(t.buffer(), 0, &staging, 0, size);
        self.queue.submit([encoder.finish()]);
        let slice = staging.slice(..);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| KernelError::Device {
            during: "download",
            message: e.to_string(),
        })?;
        rx.recv()
            .map_err(|_| KernelError::Device {
                during: "download",
                message: "the map callback never ran".into(),
            })?
            .map_err(|e| KernelError::Device {
                during: "download",
                message: e.to_string(),
            })?;
        let mut bytes = slice
            .get_mapped_range()
            .map_err(|e| KernelError::Device {
                during: "download",
                message: e.to_string(),
            })?
            .to_vec();
        staging.unmap();
        bytes.truncate(t.byte_len() as usize);
        self.check_uncaptured("download")?;
        Ok(bytes)
    }

    pub fn download_f32(&self, t: &Tensor) -> Result<Vec<f32>> {
        if t.dtype() != DType::F32 {
            return Err(KernelError::DTypeMismatch {
                op: "download_f32",
                what: "tensor",
                expected: "f32",
                got: t.dtype().name(),
            });
        }
        Ok(bytemuck::pod_collect_to_vec(&self.download_bytes(t)?))
    }

    pub fn download_u32(&self, t: &Tensor) -> Result<Vec<u32>> {
        if t.dtype() != DType::U32 {
            return Err(KernelError::DTypeMismatch {
                op: "download_u32",
                what: "tensor",
                expected: "u32",
                got: t.dtype().name(),
            });
        }
        Ok(bytemuck::pod_collect_to_vec(&self.download_bytes(t)?))
    }

    /// Blocks until all submitted work has finished (benchmarks stop their clocks after this).
    pub fn sync(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map_err(|e| KernelError::Device {
            during: "sync",
            message: e.to_string(),
        })?;
        self.check_uncaptured("sync")
    }

    fn check_uncaptured(&self, during: &'static str) -> Result<()> {
        let mut errors = lock(&self.uncaptured);
        if errors.is_empty() {
            return Ok(());
        }
        let message = errors.join("; ");
        errors.clear();
        Err(KernelError::Device { during, message })
    }

    /// [`Gpu::kernel`] for a source generated by a step that can fail (e.g. `unroll::expand`),
    /// run only when the pipeline is not cached yet.
    pub(crate) fn kernel_generated(
        &self,
        label: &str,
        entry: &str,
        storage: &[Access],
        generate: impl FnOnce() -> Result<String>,
    ) -> Result<Arc<Kernel>> {
        if let Some(k) = lock(&self.kernels).get(label) {
            return Ok(k.clone());
        }
        let source = generate()?;
        self.kernel(label, entry, storage, || source)
    }

    /// The pipeline cached under `label`, compiled from `wgsl` on first use. The label names
    /// the variant (op, dtypes, tile, workgroup) and is the wgpu label, so traces show it.
    /// `storage` lists the storage bindings 0, 1, … in order; a uniform follows them. The layout
    /// is explicit so that an entry point may leave a binding unused (e.g. an absent bias).
    pub(crate) fn kernel(&self, label: &str, entry: &str, storage: &[Access], wgsl: impl FnOnce() -> String) -> Result<Arc<Kernel>> {
        if let Some(k) = lock(&self.kernels).get(label) {
            return Ok(k.clone());
        }
        let mut entries: Vec<wgpu::BindGroupLayoutEntry> = storage
            .iter()
            .enumerate()
            .map(|(i, access)| wgpu::BindGroupLayoutEntry {
                binding: i as u32,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: match access {
                    Access::Texels => wgpu::BindingType::Texture {
                        sample_type: wgpu::TextureSampleType::Uint,
                        view_dimension: wgpu::TextureViewDimension::D2,
                        multisampled: false,
                    },
                    _ => wgpu::BindingType::Buffer {
                        ty: wgpu::BufferBindingType::Storage {
                            read_only: *access == Access::Read,
                        },
                        has_dynamic_offset: false,
                        min_binding_size: None,
                    },
                },
                count: None,
            })
            .collect();
        entries.push(wgpu::BindGroupLayoutEntry {
            binding: storage.len() as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: wgpu::BindingType::Buffer {
                ty: wgpu::BufferBindingType::Uniform,
                has_dynamic_offset: false,
                min_binding_size: None,
            },
            count: None,
        });
        let scope = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let checks = if self.shader_checks {
            wgpu::ShaderRuntimeChecks::checked()
        } else {
            wgpu::ShaderRuntimeChecks::unchecked()
        };
        let layout = self.device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(label),
            entries: &entries,
        });
        let pipeline_layout = self.device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(label),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let descriptor = wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(wgsl().into()),
        };
        // SAFETY: with `HARTONOMOUS_SHADER_CHECKS=0` wgpu injects no bounds checks, and this
        // holds instead: every kernel indexes its buffers only below the sizes in its params,
        // which its launcher validated against the bound tensors; the one exception, reads of a
        // block's window past a block tensor's last byte, stays inside the 256 bytes of slack
        // every buffer and texel copy keeps (`take_buffer`, `texel_copy`). Every loop is bounded by its params. By default the checks stay on.
        let module = unsafe { self.device.create_shader_module_trusted(descriptor, checks) };
        let pipeline = self.device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(label),
            layout: Some(&pipeline_layout),
            module: &module,
            entry_point: Some(entry),
            compilation_options: Default::default(),
            cache: None,
        });
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(KernelError::Shader {
                label: label.to_string(),
                message: e.to_string(),
            });
        }
        let kernel = Arc::new(Kernel {
            label: label.to_string(),
            layout,
            pipeline,
            access: storage.to_vec(),
        });
        lock(&self.kernels).insert(label.to_string(), kernel.clone());
        Ok(kernel)
    }

    /// Starts recording dispatches into one command encoder.
    pub fn recorder(&self) -> Recorder<'_> {
        Recorder {
            gpu: self,
            encoder: self.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("hartonomous") }),
            dispatches: 0,
            bound: Vec::new(),
        }
    }

    /// Records one op with `f` and submits it: for callers that run a single kernel.
    pub fn run<T>(&self, f: impl FnOnce(&mut Recorder<'_>) -> Result<T>) -> Result<T> {
        let mut rec = self.recorder();
        let out = f(&mut rec)?;
        rec.submit()?;
        Ok(out)
    }
}

/// Collects dispatches into one command encoder; [`Recorder::submit`] sends them together.
/// WebGPU orders dispatches and makes each one's writes visible to the next.
pub struct Recorder<'g> {
    gpu: &'g Gpu,
    encoder: wgpu::CommandEncoder,
    dispatches: usize,
    /// Tensors bound by recorded dispatches, held until submit so that a dropped tensor's buffer
    /// cannot go back to the pool and be overwritten by an upload that runs before this work.
    bound: Vec<Tensor>,
}

impl<'g> Recorder<'g> {
    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// Dispatches recorded so far.
    pub fn dispatches(&self) -> usize {
        self.dispatches
    }

    /// Records `kernel` over `groups` workgroups with `tensors` bound at 0, 1, … and `params`
    /// (a `#[repr(C)]` struct of 4-byte fields) as a uniform at the next binding.
    pub(crate) fn dispatch<P: bytemuck::Pod>(
        &mut self,
        kernel: &Kernel,
        tensors: &[&Tensor],
        params: &P,
        groups: [u32; 3],
    ) -> Result<()> {
        let limit = self.gpu.limits.max_compute_workgroups_per_dimension;
        if groups.iter().any(|&g| g > limit) {
            return Err(KernelError::InvalidArgument {
                op: "dispatch",
                what: "workgroup count",
                reason: format!("{groups:?} exceeds the adapter's {limit} per dimension for `{}`", kernel.label),
            });
        }
        if groups.contains(&0) {
            return Ok(());
        }
        let uniform = self.gpu.device.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::bytes_of(params),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        let mut entries = Vec::with_capacity(tensors.len() + 1);
        for (i, t) in tensors.iter().enumerate() {
            let resource = match kernel.access.get(i) {
                Some(Access::Texels) => wgpu::BindingResource::TextureView(t.texels().ok_or_else(|| KernelError::InvalidArgument {
                    op: "dispatch",
                    what: "binding",
                    reason: format!("`{}` reads binding {i} as texels, and that tensor has no texel copy", kernel.label),
                })?),
                _ => t.buffer().as_entire_binding(),
            };
            entries.push(wgpu::BindGroupEntry { binding: i as u32, resource });
        }
        entries.push(wgpu::BindGroupEntry {
            binding: tensors.len() as u32,
            resource: uniform.as_entire_binding(),
        });
        let bind_group = self.gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(&kernel.label),
            layout: &kernel.layout,
            entries: &entries,
        });
        let mut pass = self.encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: Some(&kernel.label),
            timestamp_writes: None,
        });
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        drop(pass);
        self.dispatches += 1;
        self.bound.extend(tensors.iter().map(|t| (*t).clone()));
        Ok(())
    }

    /// Submits everything recorded.
    pub fn submit(self) -> Result<()> {
        self.gpu.queue.submit([self.encoder.finish()]);
        // Buffers may go back to the pool now: later uploads are ordered after this submit.
        drop(self.bound);
        self.gpu.check_uncaptured("submit")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn size_classes_round_up() {
        assert_eq!(super::size_class(0), 16);
        assert_eq!(super::size_class(1000), 1024);
        assert_eq!(super::size_class(1 << 20), 1 << 20);
        assert_eq!(super::size_class((1 << 20) + 1), 2 << 20);
        assert_eq!(super::size_class(5 * (1 << 20) + 3), 6 << 20);
        // Data of exactly a class size still gets its slack (see take_buffer).
        assert!(super::size_class((1u64 << 20).next_multiple_of(4) + super::BUFFER_SLACK) > 1 << 20);
    }
}
