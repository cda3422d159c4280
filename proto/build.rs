//! Generates the protocol code from nvfarm.proto with protox (a pure-Rust protobuf compiler, so no protoc is
//! needed on the build machine).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=nvfarm.proto");
    let fds = protox::compile(["nvfarm.proto"], ["."])?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
