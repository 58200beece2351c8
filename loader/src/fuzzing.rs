//! The work a fuzz target does with arbitrary bytes, shared by the targets in `loader/fuzz/`:
//! open them as a model (format detected by content) and, if that succeeds, read, atomize,
//! dequantize and turn into geometry every tensor small enough to keep a fuzz iteration fast.
//! Any panic here is a bug; errors are the expected outcome for most inputs.

use crate::atom::{atomize_tensor, AtomizeOptions};
use crate::geometry::{tensor_geometry, GeometryOptions};
use crate::{MemorySource, ModelFile};

/// Tensors larger than this are skipped (the header checks already ran on them).
const MAX_TENSOR_BYTES: u64 = 1 << 16;

pub fn exercise_model(data: &[u8]) {
    let Ok(model) = ModelFile::from_source(Box::new(MemorySource::new("fuzz-input", data.to_vec())), None) else {
        return;
    };
    let _ = serde_json::to_string(&model.description);
    let options = AtomizeOptions::new(64).expect("64 is a valid atom size");
    for tensor in model.tensors().iter().filter(|t| t.byte_len <= MAX_TENSOR_BYTES) {
        let atomized = atomize_tensor(&model, tensor, &options, &mut |_| Ok(()))
            .expect("a tensor the header accepted must atomize");
        assert_eq!(atomized.atoms.iter().map(|a| a.byte_len).sum::<u64>(), tensor.byte_len);
        let _ = tensor_geometry(&model, tensor, &GeometryOptions::default());
    }
}
