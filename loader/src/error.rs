//! The loader's one error type. Every variant that comes from a file names the file and, where it
//! has them, the tensor or metadata key and the byte offset, so a user can find the damage with a
//! hex dump.

use std::path::PathBuf;

/// Result alias used throughout the loader.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while reading a model file, atomizing it, or decoding geometry.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: reading {what} at offset {offset} failed: {source}", path.display())]
    ReadFailed {
        path: PathBuf,
        what: String,
        offset: u64,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{}: not a supported model file ({found}); supported formats are safetensors and GGUF v2/v3{hint}",
        path.display()
    )]
    UnknownFormat {
        path: PathBuf,
        /// What the first bytes look like, e.g. `first bytes 50 4b 03 04`.
        found: String,
        /// Advice for formats we recognise but do not load (PyTorch zip, legacy GGML).
        hint: String,
    },

    #[error(
        "{}: truncated: {what} at offset {offset} needs {needed} bytes but the file ends at {file_len}",
        path.display()
    )]
    Truncated {
        path: PathBuf,
        what: String,
        offset: u64,
        needed: u64,
        file_len: u64,
    },

    #[error("{}: {what} at offset {offset} is not valid UTF-8", path.display())]
    InvalidUtf8 {
        path: PathBuf,
        what: String,
        offset: u64,
    },

    #[error(
        "{}: {what} at offset {offset} declares {declared} {unit}, but at most {limit} are possible there; the file is corrupt",
        path.display()
    )]
    DeclaredLengthTooLarge {
        path: PathBuf,
        what: String,
        offset: u64,
        declared: u64,
        unit: &'static str,
        limit: u64,
    },

    #[error("{}: malformed header at offset {offset}: {reason}", path.display())]
    MalformedHeader {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    #[error(
        "{}: GGUF version {version} at offset 4 is not supported: only versions 2 and 3 are{hint}",
        path.display()
    )]
    UnsupportedVersion {
        path: PathBuf,
        version: u32,
        hint: &'static str,
    },

    #[error(
        "{}: key `{key}` at offset {offset}: unknown GGUF metadata value type {type_id} (known: 0-12)",
        path.display()
    )]
    UnknownValueType {
        path: PathBuf,
        key: String,
        offset: u64,
        type_id: u32,
    },

    #[error("{}: duplicate {what} `{name}` at offset {offset}", path.display())]
    Duplicate {
        path: PathBuf,
        what: &'static str,
        name: String,
        offset: u64,
    },

    #[error(
        "{}: tensor `{tensor}` at offset {offset}: unknown dtype {dtype}; supported: {supported}",
        path.display()
    )]
    UnknownDtype {
        path: PathBuf,
        tensor: String,
        offset: u64,
        dtype: String,
        supported: &'static str,
    },

    #[error(
        "{}: tensor `{tensor}` at offset {offset}: shape {shape:?} describes more than 2^64 elements or bytes",
        path.display()
    )]
    ShapeOverflow {
        path: PathBuf,
        tensor: String,
        offset: u64,
        shape: Vec<u64>,
    },

    #[error(
        "{}: tensor `{tensor}` at offset {offset}: {dtype} stores blocks of {block_elements} elements, but its {counted} is {count}",
        path.display()
    )]
    BlockMisfit {
        path: PathBuf,
        tensor: String,
        offset: u64,
        dtype: crate::DType,
        block_elements: u64,
        /// What must be a multiple of the block: GGUF blocks run along the innermost
        /// dimension, safetensors' sub-byte floats along the flat elements.
        counted: &'static str,
        count: u64,
    },

    #[error(
        "{}: tensor `{tensor}` at offset {offset}: data declared as {declared} bytes, but dtype {dtype} and shape {shape:?} need {expected}",
        path.display()
    )]
    LengthMismatch {
        path: PathBuf,
        tensor: String,
        offset: u64,
        dtype: crate::DType,
        shape: Vec<u64>,
        declared: u64,
        expected: u64,
    },

    #[error(
        "{}: tensor `{tensor}`: data [{start}, {end}) lies past the end of the file ({file_len} bytes)",
        path.display()
    )]
    DataOutOfBounds {
        path: PathBuf,
        tensor: String,
        start: u64,
        end: u64,
        file_len: u64,
    },

    #[error(
        "{}: tensor `{tensor}`: data offset {offset} (relative to the data section) is not a multiple of the file's alignment {alignment}",
        path.display()
    )]
    MisalignedData {
        path: PathBuf,
        tensor: String,
        offset: u64,
        alignment: u64,
    },

    #[error(
        "{}: tensors `{first}` [{first_start}, {first_end}) and `{second}` [{second_start}, {second_end}) overlap",
        path.display()
    )]
    OverlappingData {
        path: PathBuf,
        first: String,
        first_start: u64,
        first_end: u64,
        second: String,
        second_start: u64,
        second_end: u64,
    },

    #[error(
        "{}: bytes [{start}, {end}) of the data section belong to no tensor; safetensors requires the data to be fully indexed",
        path.display()
    )]
    UnindexedData { path: PathBuf, start: u64, end: u64 },

    #[error("{}: {reason}", path.display())]
    Companion { path: PathBuf, reason: String },

    #[error("cannot dequantize dtype {dtype}: {reason}")]
    NotDequantizable { dtype: crate::DType, reason: &'static str },

    #[error("WKB at offset {offset}: {reason}")]
    Wkb { offset: u64, reason: String },

    #[error("invalid option: {0}")]
    InvalidOption(String),
}
