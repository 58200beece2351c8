//! Fuzzes safetensors header parsing and everything a parsed header leads to (see `gguf.rs`).
#![no_main]

use hartonomous_loader::fuzzing::exercise_model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hartonomous_loader::safetensors::parse(&hartonomous_loader::MemorySource::new(
        "fuzz.safetensors",
        data.to_vec(),
    ));
    exercise_model(data);
});
