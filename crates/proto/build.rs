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
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = out_dir.join("descriptors.bin");
    tonic_build::configure()
        .file_descriptor_set_path(&descriptors)
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
    write_grpc_methods(&descriptors, &out_dir.join("grpc_methods.rs"))?;
    Ok(())
}

/// Writes the table of every gRPC method defined in the .proto files (sorted by path), so the
/// server's request metrics label only real methods and know which ones stream.
fn write_grpc_methods(
    descriptors: &std::path::Path,
    out: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    use prost::Message;
    let set = prost_types::FileDescriptorSet::decode(std::fs::read(descriptors)?.as_slice())?;
    let mut methods = Vec::new();
    for file in &set.file {
        for service in &file.service {
            let service_name = format!("{}.{}", file.package(), service.name());
            for method in &service.method {
                let kind = match (method.client_streaming(), method.server_streaming()) {
                    (false, false) => "Unary",
                    (true, false) => "ClientStream",
                    (false, true) => "ServerStream",
                    (true, true) => "BidiStream",
                };
                methods.push((
                    format!("/{service_name}/{}", method.name()),
                    service_name.clone(),
                    method.name().to_string(),
                    kind,
                ));
            }
        }
    }
    methods.sort();
    let mut text = String::from("pub const GRPC_METHODS: &[GrpcMethod] = &[\n");
    for (path, service, method, kind) in methods {
        text.push_str(&format!(
            "    GrpcMethod {{ path: {path:?}, service: {service:?}, method: {method:?}, kind: GrpcKind::{kind} }},\n"
        ));
    }
    text.push_str("];\n");
    std::fs::write(out, text)?;
    Ok(())
}
