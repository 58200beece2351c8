//! Fuzzes GGUF parsing and everything a parsed header leads to: format detection, the model
//! description, and reading, atomizing and dequantizing every (small) tensor.
#![no_main]

use hartonomous_loader::fuzzing::exercise_model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.starts_with(b"GGUF") {
        let _ = hartonomous_loader::gguf::parse(&hartonomous_loader::MemorySource::new("fuzz.gguf", data.to_vec()));
    }
    exercise_model(data);
});
