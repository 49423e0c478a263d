//! Generates Rust types and tonic services from the .proto files in the workspace's `proto/`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read when the script runs, not baked in when it is compiled: checkouts that share one
    // target directory can share the compiled script, and each must use its own files.
    let manifest_dir = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir.join("../../proto");
    let files = [
        "etcd/mvccpb/kv.proto",
        "etcd/etcdserverpb/rpc.proto",
        "beacon/v1/peer.proto",
        "beacon/v1/command.proto",
        "beacon/v1/catalog.proto",
    ]
    .map(|file| root.join(file));
    // Relative to this package: checkouts that share one target directory (CI clones and a
    // working tree) share this script's output, and absolute paths would make one checkout's
    // build watch another checkout's files.
    for file in &files {
        let relative = file.strip_prefix(&manifest_dir).unwrap_or(file.as_path());
        println!("cargo:rerun-if-changed={}", relative.display());
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
