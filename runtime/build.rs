//! Compiles `proto/hartonomous/v1/hartonomous.proto` into the gRPC messages, server and client
//! (`serve::grpc::pb`). protox parses the proto in Rust, so the build needs no `protoc` binary.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/hartonomous/v1/hartonomous.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        // The client takes any channel; `connect` would need tonic's transport in the library.
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
