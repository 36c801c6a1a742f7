//! Compiles every `.proto` under `proto/` once, into one module tree.

use std::path::{Path, PathBuf};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("proto");
    let mut files = Vec::new();
    collect(&root, &mut files)?;
    files.sort();
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Type names give every message its full proto name, which is what
    // containerd puts in `Any.type_url` for events.
    let mut config = tonic_prost_build::Config::new();
    config.enable_type_names();
    // Ordered maps: labels convert to and from the stores' BTreeMaps without
    // rehashing, and print in a stable order.
    config.btree_map(["."]);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // No `connect` helpers: clients dial unix sockets themselves, and the
        // shim API has an RPC of that name.
        .build_transport(false)
        .file_descriptor_set_path(out.join("descriptor.bin"))
        .compile_with_config(config, &files, &[root])?;
    Ok(())
}
