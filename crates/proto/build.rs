//! Generates Rust types and tonic services from the .proto files in the workspace's `proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "etcd/mvccpb/kv.proto",
        "etcd/etcdserverpb/rpc.proto",
        "beacon/v1/peer.proto",
        "beacon/v1/command.proto",
        "beacon/v1/catalog.proto",
    ]
    .map(|file| root.join(file));
    for file in &files {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    tonic_build::configure()
        // etcd requests travel inside Raft log entries (bincode), so they need serde.
        .type_attribute(
            ".etcdserverpb",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .type_attribute(".mvccpb", "#[derive(serde::Serialize, serde::Deserialize)]")
        .type_attribute(
            ".beacon.v1.LeaseExpiry",
            "#[derive(serde::Serialize, serde::Deserialize)]",
        )
        .compile_protos(&files, &[root])?;
    Ok(())
}
