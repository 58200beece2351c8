//! GPU residency of model weights: tensors paged out of the store into GPU buffers, every atom's
//! SHA-256 verified on arrival, keyed by tensor root so that models sharing a tensor share one
//! buffer, within a byte budget with LRU eviction of unpinned tensors.
//!
//! Invariants:
//! - Nothing reaches the GPU unverified: an atom whose payload does not hash to its id, a layer
//!   whose atom list does not give its tensor root, or geometry whose values do not re-hash to the
//!   layer's atoms fails the page-in with [`PagerError::Corrupt`], naming the atom and layer.
//! - A pinned tensor is never evicted; [`Pager::acquire`] pins, [`Pager::release`] unpins.
//! - `resident_bytes <= budget` after every call, except that a single tensor larger than the
//!   budget is refused rather than admitted.
//!
//! The pager is owned by the one thread that drives the GPU (see `serve::batcher`): it is not
//! shared, so it takes `&mut self` and needs no lock. Store reads are async; the pager runs them
//! on the daemon's tokio runtime through a [`Handle`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use hartonomous_kernels::{DType as GpuDType, Gpu, Tensor};
use hartonomous_loader::atom::{atom_id, tensor_root};
use hartonomous_loader::geometry::decode_layer;
use hartonomous_loader::{DType, Hash256};
use tokio::runtime::Handle;

use crate::store::{LayerRow, Store, StoreError, FETCH_BATCH_ATOMS};

/// Where a layer's values are read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum WeightsSource {
    /// The TensorAtoms (layers that have no atoms but have geometry still page from geometry).
    #[default]
    Atoms,
    /// The layer's `LINESTRING ZM` geometry wherever a layer has one, atoms elsewhere.
    Geometry,
}

#[derive(Debug, thiserror::Error)]
pub enum PagerError {
    #[error("{model} layer {layer}: {what}; nothing was computed from it (run `hartonomous verify`)")]
    Corrupt { model: String, layer: String, what: String },

    #[error("{model} layer {layer}: {bytes} bytes do not fit in the GPU memory budget of {budget} bytes ({pinned} bytes are pinned by the pass in progress); raise --gpu-memory")]
    OverBudget { model: String, layer: String, bytes: u64, budget: u64, pinned: u64 },

    #[error("{model} layer {layer}: {what}")]
    Unsupported { model: String, layer: String, what: String },

    #[error("reading {model} layer {layer} from the store: {source}")]
    Store {
        model: String,
        layer: String,
        /// Boxed: the store's error is large and this enum travels in every pager `Result`.
        #[source]
        source: Box<StoreError>,
    },

    #[error("uploading {model} layer {layer}: {source}")]
    Gpu {
        model: String,
        layer: String,
        #[source]
        source: Box<hartonomous_kernels::KernelError>,
    },
}

impl PagerError {
    /// True when the weights themselves are bad (the model must be marked unhealthy), as
    /// opposed to a store that is unreachable or a budget that is too small.
    pub fn is_corruption(&self) -> bool {
        matches!(self, PagerError::Corrupt { .. })
    }
}

/// Counters exported at `/metrics`. Shared with the HTTP side, hence atomics.
#[derive(Debug, Default)]
pub struct PagerMetrics {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub bytes_paged: AtomicU64,
    pub page_in_nanos: AtomicU64,
    pub evictions: AtomicU64,
    pub resident_bytes: AtomicU64,
    pub resident_tensors: AtomicU64,
    pub budget_bytes: AtomicU64,
}

/// A snapshot of [`PagerMetrics`], for tests and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PagerCounts {
    pub hits: u64,
    pub misses: u64,
    pub bytes_paged: u64,
    pub evictions: u64,
    pub resident_bytes: u64,
    pub resident_tensors: u64,
}

impl PagerMetrics {
    pub fn counts(&self) -> PagerCounts {
        PagerCounts {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes_paged: self.bytes_paged.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
            resident_bytes: self.resident_bytes.load(Ordering::Relaxed),
            resident_tensors: self.resident_tensors.load(Ordering::Relaxed),
        }
    }
}

/// A resident tensor is shared by every layer with the same tensor root read the same way: a
/// geometry-paged tensor is f32 whatever the layer's dtype, so it is kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ResidencyKey {
    root: Hash256,
    from_geometry: bool,
}

struct Resident {
    tensor: Tensor,
    bytes: u64,
    last_used: u64,
    pins: u32,
}

/// What [`Pager::acquire`] pinned; give it back to [`Pager::release`] once the work that uses
/// the tensors has been submitted.
#[must_use = "pinned tensors stay pinned until released"]
pub struct Pins {
    keys: Vec<ResidencyKey>,
}

/// The default budget: half of the largest buffer the adapter allows, and on a software adapter
/// (whose "GPU memory" is this machine's RAM) at most a quarter of the RAM. wgpu reports no
/// memory size, so the adapter's own buffer limit is the portable measure of what it allows.
pub fn default_budget(gpu: &Gpu) -> u64 {
    let by_adapter = gpu.limits().max_buffer_size / 2;
    if gpu.report().software {
        by_adapter.min(total_ram_bytes().map_or(u64::MAX, |ram| ram / 4))
    } else {
        by_adapter
    }
}

fn total_ram_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub struct Pager {
    gpu: Arc<Gpu>,
    store: Arc<dyn Store>,
    runtime: Handle,
    budget: u64,
    source: WeightsSource,
    resident: HashMap<ResidencyKey, Resident>,
    clock: u64,
    metrics: Arc<PagerMetrics>,
}

impl Pager {
    pub fn new(gpu: Arc<Gpu>, store: Arc<dyn Store>, runtime: Handle, budget: u64, source: WeightsSource) -> Self {
        let metrics = Arc::new(PagerMetrics::default());
        metrics.budget_bytes.store(budget, Ordering::Relaxed);
        Pager {
            gpu,
            store,
            runtime,
            budget,
            source,
            resident: HashMap::new(),
            clock: 0,
            metrics,
        }
    }

    pub fn gpu(&self) -> &Arc<Gpu> {
        &self.gpu
    }

    pub fn budget(&self) -> u64 {
        self.budget
    }

    pub fn metrics(&self) -> Arc<PagerMetrics> {
        self.metrics.clone()
    }

    fn resident_bytes(&self) -> u64 {
        self.resident.values().map(|r| r.bytes).sum()
    }

    fn pinned_bytes(&self) -> u64 {
        self.resident.values().filter(|r| r.pins > 0).map(|r| r.bytes).sum()
    }

    fn publish(&self) {
        self.metrics.resident_bytes.store(self.resident_bytes(), Ordering::Relaxed);
        self.metrics.resident_tensors.store(self.resident.len() as u64, Ordering::Relaxed);
    }

    fn key(&self, layer: &LayerRow) -> ResidencyKey {
        let from_geometry = layer.has_geometry && (self.source == WeightsSource::Geometry || layer.atoms.is_empty());
        ResidencyKey { root: layer.tensor_root, from_geometry }
    }

    /// Bytes `layer` occupies once resident.
    /// Bytes a layer takes once paged in: its f32 values from geometry, else its stored bytes,
    /// twice over for f16 and block formats on an adapter that also keeps their texel copy
    /// (`Gpu::texel_weights`).
    fn resident_size(&self, key: ResidencyKey, layer: &LayerRow) -> u64 {
        if key.from_geometry {
            return layer.parameter_count * 4;
        }
        let texel_copied = DType::from_tag(&layer.dtype).is_some_and(|d| d == DType::F16 || d.is_gguf_block());
        if texel_copied && self.gpu.texel_weights() {
            2 * layer.byte_length
        } else {
            layer.byte_length
        }
    }

    /// Makes every layer resident (paging in what is not) and pins it; returns the tensors in
    /// order. `model` names the model in errors. On error nothing stays pinned.
    pub fn acquire(&mut self, model: &str, layers: &[&LayerRow]) -> Result<(Vec<Tensor>, Pins), PagerError> {
        let mut pins = Pins { keys: Vec::with_capacity(layers.len()) };
        let mut tensors = Vec::with_capacity(layers.len());
        for layer in layers {
            match self.acquire_one(model, layer) {
                Ok((tensor, key)) => {
                    tensors.push(tensor);
                    pins.keys.push(key);
                }
                Err(e) => {
                    self.release(pins);
                    return Err(e);
                }
            }
        }
        self.publish();
        Ok((tensors, pins))
    }

    /// Unpins what [`Pager::acquire`] pinned.
    pub fn release(&mut self, pins: Pins) {
        for key in pins.keys {
            if let Some(r) = self.resident.get_mut(&key) {
                r.pins = r.pins.saturating_sub(1);
            }
        }
    }

    /// Drops every unpinned resident tensor (a model unloaded, or a test resetting the cache).
    pub fn evict_unpinned(&mut self) {
        let before = self.resident.len();
        self.resident.retain(|_, r| r.pins > 0);
        self.metrics.evictions.fetch_add((before - self.resident.len()) as u64, Ordering::Relaxed);
        self.publish();
    }

    fn acquire_one(&mut self, model: &str, layer: &LayerRow) -> Result<(Tensor, ResidencyKey), PagerError> {
        self.clock += 1;
        let key = self.key(layer);
        if let Some(r) = self.resident.get_mut(&key) {
            r.last_used = self.clock;
            r.pins += 1;
            self.metrics.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((r.tensor.clone(), key));
        }
        self.metrics.misses.fetch_add(1, Ordering::Relaxed);
        let bytes = self.resident_size(key, layer);
        self.make_room(model, layer, bytes)?;
        let started = Instant::now();
        let tensor = if key.from_geometry {
            self.page_from_geometry(model, layer)?
        } else {
            self.page_from_atoms(model, layer)?
        };
        self.metrics.page_in_nanos.fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.metrics.bytes_paged.fetch_add(bytes, Ordering::Relaxed);
        self.resident.insert(
            key,
            Resident { tensor: tensor.clone(), bytes, last_used: self.clock, pins: 1 },
        );
        Ok((tensor, key))
    }

    /// Evicts least-recently-used unpinned tensors until `bytes` more fit in the budget.
    fn make_room(&mut self, model: &str, layer: &LayerRow, bytes: u64) -> Result<(), PagerError> {
        let over_budget = |pager: &Self| PagerError::OverBudget {
            model: model.into(),
            layer: layer.tensor_name.clone(),
            bytes,
            budget: pager.budget,
            pinned: pager.pinned_bytes(),
        };
        if bytes > self.budget {
            return Err(over_budget(self));
        }
        let mut resident = self.resident_bytes();
        while resident + bytes > self.budget {
            let victim = self
                .resident
                .iter()
                .filter(|(_, r)| r.pins == 0)
                .min_by_key(|(_, r)| r.last_used)
                .map(|(k, _)| *k);
            let Some(victim) = victim else { return Err(over_budget(self)) };
            if let Some(r) = self.resident.remove(&victim) {
                resident -= r.bytes;
                self.metrics.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    fn page_from_atoms(&self, model: &str, layer: &LayerRow) -> Result<Tensor, PagerError> {
        let corrupt = |what: String| PagerError::Corrupt { model: model.into(), layer: layer.tensor_name.clone(), what };
        let dtype = layer_dtype(model, layer)?;
        let gpu_dtype = gpu_dtype(model, layer, dtype)?;
        let hashes: Vec<Hash256> = layer.atoms.iter().map(|a| a.atom).collect();
        let root = tensor_root(dtype, &layer.shape, &hashes);
        if root != layer.tensor_root {
            return Err(corrupt(format!(
                "its {} atoms give tensor root {root}, not the recorded {}",
                hashes.len(),
                layer.tensor_root
            )));
        }
        let mut payloads: HashMap<Hash256, Vec<u8>> = HashMap::new();
        // Each distinct atom once, in order of first use (an atom may repeat within a layer).
        let mut seen = std::collections::HashSet::new();
        let distinct: Vec<Hash256> = hashes.iter().copied().filter(|h| seen.insert(*h)).collect();
        for batch in distinct.chunks(FETCH_BATCH_ATOMS) {
            let fetched = self.runtime.block_on(self.store.fetch_atoms(batch)).map_err(|source| PagerError::Store {
                model: model.into(),
                layer: layer.tensor_name.clone(),
                source: Box::new(source),
            })?;
            for atom in fetched {
                // Verified on arrival: the id is the hash of the encoding tag and the payload.
                let encoding = DType::from_tag(&atom.encoding)
                    .ok_or_else(|| corrupt(format!("atom {} has unknown encoding {:?}", atom.hash, atom.encoding)))?;
                let actual = atom_id(encoding, &atom.payload);
                if actual != atom.hash || encoding != dtype {
                    return Err(corrupt(format!(
                        "atom {} ({}) hashes to {actual}: its payload is not what was stored",
                        atom.hash, atom.encoding
                    )));
                }
                payloads.insert(atom.hash, atom.payload);
            }
        }
        let mut data = Vec::with_capacity(layer.byte_length as usize);
        for a in &layer.atoms {
            let payload = payloads
                .get(&a.atom)
                .ok_or_else(|| corrupt(format!("atom {} was not returned by the store", a.atom)))?;
            if a.coefficient != 1.0 {
                return Err(PagerError::Unsupported {
                    model: model.into(),
                    layer: layer.tensor_name.clone(),
                    what: format!("atom {} has coefficient {}; only plain storage (1.0) is paged", a.atom, a.coefficient),
                });
            }
            data.extend_from_slice(payload);
        }
        if data.len() as u64 != layer.byte_length {
            return Err(corrupt(format!("atoms hold {} bytes, the layer records {}", data.len(), layer.byte_length)));
        }
        self.upload(model, layer, &data, gpu_dtype)
    }

    /// Geometry carries no hash of its own, so for f32 layers the decoded values are cut at the
    /// layer's atom boundaries and re-hashed: geometry that disagrees with the atoms is refused.
    fn page_from_geometry(&self, model: &str, layer: &LayerRow) -> Result<Tensor, PagerError> {
        let corrupt = |what: String| PagerError::Corrupt { model: model.into(), layer: layer.tensor_name.clone(), what };
        let wkb = self
            .runtime
            .block_on(self.store.layer_geometry(layer.id))
            .map_err(|source| PagerError::Store { model: model.into(), layer: layer.tensor_name.clone(), source: Box::new(source) })?
            .ok_or_else(|| corrupt("the layer is recorded with geometry, but none is stored".into()))?;
        let decoded = decode_layer(&wkb).map_err(|e| corrupt(format!("its LINESTRING ZM does not decode: {e}")))?;
        if decoded.values.len() as u64 != layer.parameter_count {
            return Err(corrupt(format!(
                "its geometry has {} points for {} elements",
                decoded.values.len(),
                layer.parameter_count
            )));
        }
        let values: Vec<f32> = decoded.values.iter().map(|&v| v as f32).collect();
        if layer_dtype(model, layer)? == DType::F32 && !layer.atoms.is_empty() {
            // An f32 layer's points hold f32 values exactly; anything else was altered.
            if let Some(i) = decoded.values.iter().zip(&values).position(|(&v, &f)| f64::from(f).to_bits() != v.to_bits()) {
                return Err(corrupt(format!("geometry point {i} holds {}, which is not an f32 value", decoded.values[i])));
            }
            let bytes: &[u8] = bytemuck::cast_slice(&values);
            let mut offset = 0usize;
            for a in &layer.atoms {
                let end = offset + a.byte_length as usize;
                let chunk = bytes.get(offset..end).ok_or_else(|| corrupt("geometry is shorter than the atoms".into()))?;
                if atom_id(DType::F32, chunk) != a.atom {
                    return Err(corrupt(format!(
                        "geometry values at bytes {offset}..{end} do not hash to atom {}",
                        a.atom
                    )));
                }
                offset = end;
            }
        }
        self.upload(model, layer, bytemuck::cast_slice(&values), GpuDType::F32)
    }

    fn upload(&self, model: &str, layer: &LayerRow, bytes: &[u8], dtype: GpuDType) -> Result<Tensor, PagerError> {
        let shape: Vec<usize> = layer.shape.iter().map(|&d| d as usize).collect();
        self.gpu
            .upload_weights::<u8>(bytes, &shape, dtype)
            .map_err(|source| PagerError::Gpu { model: model.into(), layer: layer.tensor_name.clone(), source: Box::new(source) })
    }
}

fn layer_dtype(model: &str, layer: &LayerRow) -> Result<DType, PagerError> {
    DType::from_tag(&layer.dtype).ok_or_else(|| PagerError::Unsupported {
        model: model.into(),
        layer: layer.tensor_name.clone(),
        what: format!("unknown dtype {:?}", layer.dtype),
    })
}

/// The kernels' name for a stored dtype: the formats the kernels read directly.
fn gpu_dtype(model: &str, layer: &LayerRow, dtype: DType) -> Result<GpuDType, PagerError> {
    Ok(match dtype {
        DType::F32 => GpuDType::F32,
        DType::F16 => GpuDType::F16,
        DType::Q8_0 => GpuDType::Q8_0,
        DType::Q4_0 => GpuDType::Q4_0,
        DType::Q4_1 => GpuDType::Q4_1,
        DType::Q5_0 => GpuDType::Q5_0,
        DType::Q5_1 => GpuDType::Q5_1,
        DType::Q4K => GpuDType::Q4K,
        DType::Q5K => GpuDType::Q5K,
        DType::Q6K => GpuDType::Q6K,
        other => {
            return Err(PagerError::Unsupported {
                model: model.into(),
                layer: layer.tensor_name.clone(),
                what: format!("{} weights are not read by the kernels; page it from geometry (f32)", other.tag()),
            })
        }
    })
}
