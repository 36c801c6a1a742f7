//! Builds small image archives from the host's busybox-static, in the two
//! formats `ctr images import` reads: an OCI image layout and a
//! `docker save` archive. Layers are uncompressed tars. The documents are
//! oci-spec's types.

use std::collections::BTreeMap;
use std::path::Path;
use std::str::FromStr;

use hull_oci::oci_spec::image::{
    Arch, ConfigBuilder, Descriptor, Digest, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, OciLayoutBuilder, Os, PlatformBuilder, RootFsBuilder,
    SCHEMA_VERSION,
};
use sha2::{Digest as _, Sha256};

/// Where Debian's busybox-static installs its binary.
pub const BUSYBOX: &str = "/bin/busybox";

/// Media types used here, from oci-spec.
pub mod media {
    use hull_oci::oci_spec::image::MediaType;

    /// OCI image index.
    pub fn index() -> String {
        MediaType::ImageIndex.to_string()
    }
    /// OCI image manifest.
    pub fn manifest() -> String {
        MediaType::ImageManifest.to_string()
    }
    /// OCI image config.
    pub fn config() -> String {
        MediaType::ImageConfig.to_string()
    }
    /// Uncompressed OCI layer.
    pub fn layer() -> String {
        MediaType::ImageLayer.to_string()
    }
}

/// sha256 digest string of `data`.
pub fn sha256(data: &[u8]) -> String {
    let h = Sha256::digest(data);
    let mut s = String::from("sha256:");
    for b in h {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A blob of the image with its digest.
#[derive(Debug, Clone)]
pub struct Blob {
    /// Digest string.
    pub digest: String,
    /// Bytes.
    pub data: Vec<u8>,
}

impl Blob {
    fn new(data: Vec<u8>) -> Blob {
        Blob {
            digest: sha256(&data),
            data,
        }
    }

    fn hex(&self) -> &str {
        &self.digest["sha256:".len()..]
    }
}

/// The parts of one single-layer image.
#[derive(Debug, Clone)]
pub struct TestImage {
    /// The layer tar.
    pub layer: Blob,
    /// The image config.
    pub config: Blob,
    /// The manifest.
    pub manifest: Blob,
}

fn header(path: &str, size: u64, mode: u32, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_path(path).expect("tar path");
    h.set_size(size);
    h.set_mode(mode);
    h.set_entry_type(kind);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

/// A layer with busybox and a few applet links, plus `extra` files
/// (path → contents) so that tests can make distinct layers.
pub fn busybox_layer(extra: &BTreeMap<String, Vec<u8>>) -> Vec<u8> {
    let busybox = std::fs::read(BUSYBOX).expect("read /bin/busybox (install busybox-static)");
    let mut b = tar::Builder::new(Vec::new());
    for dir in ["bin/", "etc/", "tmp/"] {
        b.append(
            &header(dir, 0, 0o755, tar::EntryType::Directory),
            std::io::empty(),
        )
        .expect("tar dir");
    }
    b.append(
        &header(
            "bin/busybox",
            busybox.len() as u64,
            0o755,
            tar::EntryType::Regular,
        ),
        busybox.as_slice(),
    )
    .expect("tar busybox");
    for applet in [
        "sh", "echo", "ls", "cat", "true", "false", "sleep", "id", "pwd", "hostname", "env", "ps",
        "mount", "stty",
    ] {
        let mut h = header(&format!("bin/{applet}"), 0, 0o777, tar::EntryType::Symlink);
        h.set_link_name("busybox").expect("link name");
        h.set_cksum();
        b.append(&h, std::io::empty()).expect("tar link");
    }
    for (path, data) in extra {
        b.append(
            &header(path, data.len() as u64, 0o644, tar::EntryType::Regular),
            data.as_slice(),
        )
        .expect("tar extra");
    }
    b.into_inner().expect("finish tar")
}

/// A descriptor of `blob`.
fn descriptor(media_type: MediaType, blob: &Blob) -> Descriptor {
    Descriptor::new(
        media_type,
        blob.data.len() as u64,
        Digest::from_str(&blob.digest).expect("digest"),
    )
}

fn json<T: serde::Serialize>(doc: &T) -> Vec<u8> {
    serde_json::to_vec(doc).expect("json")
}

/// An image config for this machine running `/bin/sh` over `diff_ids`.
fn config(diff_ids: Vec<String>, env: Option<Vec<String>>) -> Blob {
    config_for(host_arch(), diff_ids, env)
}

/// An image config for architecture `arch`.
fn config_for(arch: &str, diff_ids: Vec<String>, env: Option<Vec<String>>) -> Blob {
    let mut c = ConfigBuilder::default().cmd(vec!["/bin/sh".to_owned()]);
    if let Some(env) = env {
        c = c.env(env);
    }
    let config = ImageConfigurationBuilder::default()
        .architecture(Arch::from(arch))
        .os(Os::Linux)
        .config(c.build().expect("config"))
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(diff_ids)
                .build()
                .expect("rootfs"),
        )
        .build()
        .expect("image config");
    Blob::new(json(&config))
}

/// A manifest of `config` and `layers` (with their media type).
fn manifest(config: &Blob, layers: &[(MediaType, &Blob)]) -> Blob {
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageManifest)
        .config(descriptor(MediaType::ImageConfig, config))
        .layers(
            layers
                .iter()
                .map(|(mt, b)| descriptor(mt.clone(), b))
                .collect::<Vec<_>>(),
        )
        .build()
        .expect("manifest");
    Blob::new(json(&manifest))
}

/// An index of one manifest, with these annotations.
fn index(manifest: &Blob, annotations: &[(&str, &str)]) -> Vec<u8> {
    let mut d = descriptor(MediaType::ImageManifest, manifest);
    d.set_annotations(Some(
        annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    ));
    let index = ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![d])
        .build()
        .expect("index");
    json(&index)
}

/// The `oci-layout` file.
fn oci_layout() -> Vec<u8> {
    json(
        &OciLayoutBuilder::default()
            .image_layout_version("1.0.0")
            .build()
            .expect("oci-layout"),
    )
}

/// Builds the image parts around `layer`.
pub fn image(layer: Vec<u8>) -> TestImage {
    let layer = Blob::new(layer);
    let config = config(
        vec![layer.digest.clone()],
        Some(vec!["PATH=/bin".to_owned()]),
    );
    let manifest = manifest(&config, &[(MediaType::ImageLayer, &layer)]);
    TestImage {
        layer,
        config,
        manifest,
    }
}

/// The OCI architecture name of this machine.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn append_file(b: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
    b.append(
        &header(path, data.len() as u64, 0o644, tar::EntryType::Regular),
        data,
    )
    .expect("tar file");
}

/// Writes an OCI image layout archive naming the image `name`.
pub fn write_oci_archive(path: &Path, img: &TestImage, name: &str) {
    let index = index(
        &img.manifest,
        &[
            ("io.containerd.image.name", name),
            ("org.opencontainers.image.ref.name", "latest"),
        ],
    );
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, "oci-layout", &oci_layout());
    append_file(&mut b, "index.json", &index);
    for blob in [&img.layer, &img.config, &img.manifest] {
        append_file(&mut b, &format!("blobs/sha256/{}", blob.hex()), &blob.data);
    }
    std::fs::write(path, b.into_inner().expect("tar")).expect("write archive");
}

/// One image of a `docker save` archive's `manifest.json` (Docker's own
/// format, which oci-spec does not model).
#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct DockerArchiveImage {
    config: String,
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// Writes a `docker save` archive tagging the image `tag`.
pub fn write_docker_archive(path: &Path, img: &TestImage, tag: &str) {
    let layer_path = format!("{}/layer.tar", img.layer.hex());
    let config_path = format!("{}.json", img.config.hex());
    let manifest = [DockerArchiveImage {
        config: config_path.clone(),
        repo_tags: vec![tag.to_owned()],
        layers: vec![layer_path.clone()],
    }];
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, "manifest.json", &json(&manifest));
    append_file(&mut b, &config_path, &img.config.data);
    append_file(&mut b, &layer_path, &img.layer.data);
    std::fs::write(path, b.into_inner().expect("tar")).expect("write archive");
}

/// One entry of a hand-made layer; names and link targets are written as
/// given, `..` and all, so that tests can build hostile layers.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A directory.
    Dir(&'static str),
    /// A regular file with contents.
    File(&'static str, &'static [u8]),
    /// A symlink and its target.
    Symlink(&'static str, &'static str),
    /// A hard link and the name it links to.
    Link(&'static str, &'static str),
}

fn raw_header(name: &str, kind: tar::EntryType, size: u64, mode: u32, link: &str) -> tar::Header {
    let mut h = tar::Header::new_old();
    {
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    }
    h.set_size(size);
    h.set_mode(mode);
    h.set_entry_type(kind);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_cksum();
    h
}

/// An uncompressed layer of `entries`, in order.
pub fn layer(entries: &[Entry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let (h, data): (tar::Header, &[u8]) = match e {
            Entry::Dir(n) => (raw_header(n, tar::EntryType::Directory, 0, 0o755, ""), b""),
            Entry::File(n, d) => (
                raw_header(n, tar::EntryType::Regular, d.len() as u64, 0o644, ""),
                d,
            ),
            Entry::Symlink(n, t) => (raw_header(n, tar::EntryType::Symlink, 0, 0o777, t), b""),
            Entry::Link(n, t) => (raw_header(n, tar::EntryType::Link, 0, 0o644, t), b""),
        };
        b.append(&h, data).expect("tar entry");
    }
    b.into_inner().expect("tar")
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

/// Chain IDs of layers with these diff IDs, as containerd computes them.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A multi-layer OCI image of gzipped `layers` (uncompressed tars).
pub fn write_oci_layers(path: &Path, layers: &[Vec<u8>], name: &str) -> Vec<String> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let gz: Vec<Vec<u8>> = layers.iter().map(|l| gzip(l)).collect();
    write_oci_gzip_layers(path, gz, diff_ids.clone(), name);
    diff_ids
}

/// An OCI image archive of layers already gzipped, with their diff IDs.
pub fn write_oci_gzip_layers(path: &Path, layers: Vec<Vec<u8>>, diff_ids: Vec<String>, name: &str) {
    let blobs: Vec<Blob> = layers.into_iter().map(Blob::new).collect();
    let config = config(diff_ids, None);
    let with_types: Vec<(MediaType, &Blob)> = blobs
        .iter()
        .map(|b| (MediaType::ImageLayerGzip, b))
        .collect();
    let manifest = manifest(&config, &with_types);
    let index = index(&manifest, &[("io.containerd.image.name", name)]);
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, "oci-layout", &oci_layout());
    append_file(&mut b, "index.json", &index);
    for blob in blobs.iter().chain([&config, &manifest]) {
        append_file(&mut b, &format!("blobs/sha256/{}", blob.hex()), &blob.data);
    }
    std::fs::write(path, b.into_inner().expect("tar")).expect("write archive");
}

/// Writes an OCI layout archive whose `latest` is an image index with one
/// image per `(architecture, layer)`; returns each image's manifest
/// digest, config digest and layer digest, in order.
pub fn write_oci_multi_platform(path: &Path, images: &[(&str, Vec<u8>)]) -> Vec<[String; 3]> {
    let mut b = tar::Builder::new(Vec::new());
    append_file(&mut b, "oci-layout", &oci_layout());
    let mut entries = Vec::new();
    let mut out = Vec::new();
    for (arch, layer) in images {
        let layer = Blob::new(layer.clone());
        let config = config_for(
            arch,
            vec![layer.digest.clone()],
            Some(vec!["PATH=/bin".to_owned()]),
        );
        let manifest = manifest(&config, &[(MediaType::ImageLayer, &layer)]);
        let mut d = descriptor(MediaType::ImageManifest, &manifest);
        d.set_platform(Some(
            PlatformBuilder::default()
                .architecture(Arch::from(*arch))
                .os(Os::Linux)
                .build()
                .expect("platform"),
        ));
        entries.push(d);
        for blob in [&layer, &config, &manifest] {
            append_file(&mut b, &format!("blobs/sha256/{}", blob.hex()), &blob.data);
        }
        out.push([
            manifest.digest.clone(),
            config.digest.clone(),
            layer.digest.clone(),
        ]);
    }
    let image_index = Blob::new(json(
        &ImageIndexBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageIndex)
            .manifests(entries)
            .build()
            .expect("index"),
    ));
    append_file(
        &mut b,
        &format!("blobs/sha256/{}", image_index.hex()),
        &image_index.data,
    );
    let mut top = descriptor(MediaType::ImageIndex, &image_index);
    top.set_annotations(Some(
        [(
            "org.opencontainers.image.ref.name".to_owned(),
            "latest".to_owned(),
        )]
        .into(),
    ));
    let layout = ImageIndexBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .manifests(vec![top])
        .build()
        .expect("layout index");
    append_file(&mut b, "index.json", &json(&layout));
    std::fs::write(path, b.into_inner().expect("tar")).expect("write archive");
    out
}

/// Like [`image`], with `cmd` as the image's command.
pub fn image_with_cmd(layer: Vec<u8>, cmd: &[&str]) -> TestImage {
    let mut img = image(layer);
    let mut v: serde_json::Value = serde_json::from_slice(&img.config.data).expect("config json");
    v["config"]["Cmd"] = serde_json::json!(cmd);
    img.config = Blob::new(serde_json::to_vec(&v).expect("config json"));
    img.manifest = manifest(&img.config, &[(MediaType::ImageLayer, &img.layer)]);
    img
}
