//! Compiles `proto/cri.proto` (needs `protoc`; the README's commands install it).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/cri.proto");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_protos(&["proto/cri.proto"], &["proto"])?;
    Ok(())
}
