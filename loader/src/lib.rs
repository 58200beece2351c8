//! Model files to content-addressed TensorAtoms and LINESTRING ZM geometry.
//!
//! The loader reads safetensors and GGUF (v2, v3) files, detected by content, into a
//! [`ModelFile`]: tensors, hyper-parameters and tokenizer material. [`atom::atomize`] cuts each
//! tensor's stored bytes into SHA-256-addressed atoms and computes the tensor and weights roots;
//! [`geometry`] turns a tensor into WKB `LINESTRING ZM` and back; [`dequant`] defines what every
//! stored dtype means as f32.
//!
//! Invariants: no database, no GPU, no network. Reads are positioned and bounded (a header
//! window, one atom or one 1 MiB chunk at a time), so memory does not grow with the file, and
//! every length or offset read from a file is checked before it sizes an allocation or a read.

pub mod atom;
pub mod dequant;
pub mod dtype;
#[doc(hidden)]
pub mod fuzzing;
pub mod error;
pub mod geometry;
pub mod gguf;
pub mod model;
pub mod safetensors;
pub mod source;

pub use atom::{atomize, AtomizeOptions, AtomizedModel, AtomizedTensor, Hash256};
pub use dtype::DType;
pub use error::{Error, Result};
pub use model::{Format, ModelDescription, ModelFile, TensorInfo};
pub use source::{ByteSource, FileSource, MemorySource};
