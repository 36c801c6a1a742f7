//! Image archives both ways: the OCI image layout (`oci-layout`,
//! `index.json`, `blobs/…`) and `docker save`'s format (`manifest.json`,
//! `repositories`, `<id>/layer.tar`, `<id>.json`), as `ctr images
//! import/export` read and write them.
//!
//! - Import reads the tar once, as it streams in: every file that is not
//!   one of the layout's own small documents goes into the content store
//!   as a blob (checked against its `blobs/<alg>/<hex>` name when it has
//!   one); then the images are named — from `index.json`'s annotations
//!   (`io.containerd.image.name`, or a full reference in
//!   `org.opencontainers.image.ref.name`), or from `manifest.json`'s
//!   `RepoTags`, for which a Docker schema 2 manifest is written — and
//!   unpacked when asked.
//! - Export writes an OCI layout with a Docker `manifest.json` beside it
//!   (unless asked not to), so both `ctr import` and `docker load` take it.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::FutureExt as _;
use serde::{Deserialize, Serialize};

use hull_oci::media::{self, Kind as MediaKind};
use hull_oci::oci_spec::image::{
    ImageIndex, ImageIndexBuilder, ImageManifest, ImageManifestBuilder, MediaType, Platform,
    SCHEMA_VERSION,
};
use hull_oci::platform::Matcher;
use hull_proto::containerd::services::images::v1::{
    images_server::Images, GetImageRequest, Image as ProtoImage,
};
use hull_proto::containerd::types::Descriptor;
use hull_proto::digest::Digest;
use hull_proto::errdefs::{self, Kind};
use hull_proto::identifiers::Namespace;
use hull_proto::labels;

use super::pull::{
    content_err, descriptor, lease_id, req, write_document, Download, Progress, ProgressSink,
    Puller,
};
use super::reference::ImageRef;
use super::{DistributionError, Result};
use crate::content::ContentStore;
use crate::metadata::content::NamespacedContent;

/// Documents of an archive kept in memory; anything else is a blob.
const SMALL_DOCUMENTS: [&str; 4] = ["oci-layout", "index.json", "manifest.json", "repositories"];

/// What to do with an imported archive.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// Labels of the image records.
    pub labels: BTreeMap<String, String>,
    /// Unpack into this snapshotter (empty: the default); None: do not.
    pub unpack: Option<String>,
    /// Name images whose index entry has only a tag (`ref.name` "latest")
    /// `<base_name>:<tag>`.
    pub base_name: String,
}

/// What to export.
#[derive(Debug, Clone, Default)]
pub struct ExportOptions {
    /// Image names.
    pub images: Vec<String>,
    /// Platforms of an index; none means every one present.
    pub platforms: Vec<Platform>,
    /// No Docker `manifest.json` beside the layout.
    pub skip_docker_manifest: bool,
}

/// One image of `docker save`'s manifest.json.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A file of the archive stored as a blob.
#[derive(Debug, Clone)]
struct Stored {
    digest: String,
    size: i64,
    gzip: bool,
}

fn bad_archive(reason: impl Into<String>) -> DistributionError {
    DistributionError::Store {
        op: "import".into(),
        status: Box::new(errdefs::status(Kind::InvalidArgument, reason.into())),
    }
}

fn store(op: &str) -> impl Fn(crate::metadata::MetadataError) -> DistributionError + '_ {
    move |e| DistributionError::Store {
        op: op.to_owned(),
        status: Box::new(errdefs::to_status(&e)),
    }
}

/// Docker's short form of a name (`docker.io/library/busybox:latest` is
/// `busybox:latest`), as `docker save` writes RepoTags.
fn familiar(name: &str) -> String {
    let n = name.strip_prefix("docker.io/").unwrap_or(name);
    n.strip_prefix("library/").unwrap_or(n).to_owned()
}

impl Puller {
    /// Imports the archive `reader` yields into `ns`; returns the images
    /// it named.
    ///
    /// # Errors
    /// InvalidArgument for what is not an archive (or names blobs it lacks
    /// and the store does not have); store errors.
    pub async fn import(
        self: &Arc<Self>,
        ns: &Namespace,
        reader: Box<dyn Read + Send>,
        options: ImportOptions,
        progress: ProgressSink,
    ) -> Result<Vec<ProtoImage>> {
        let lease = self.temp_lease(ns, "import").await?;
        let result = self
            .import_leased(ns, &lease, reader, &options, &progress)
            .await;
        self.release_lease(ns, &lease).await;
        result
    }

    async fn import_leased(
        self: &Arc<Self>,
        ns: &Namespace,
        lease: &str,
        reader: Box<dyn Read + Send>,
        options: &ImportOptions,
        progress: &ProgressSink,
    ) -> Result<Vec<ProtoImage>> {
        let (db, ns2, lease2) = (self.stores().db.clone(), ns.clone(), lease_id(lease)?);
        let (small, stored) =
            tokio::task::spawn_blocking(move || read_archive(&db, &ns2, &lease2, reader))
                .await
                .map_err(|e| bad_archive(format!("import task: {e}")))??;
        let content =
            NamespacedContent::new(self.stores().db.clone(), ns.clone(), Some(lease_id(lease)?));
        let mut named: Vec<(String, Descriptor)> = Vec::new();
        if let Some(index) = small.get("index.json") {
            let index: ImageIndex =
                serde_json::from_slice(index).map_err(|source| DistributionError::Document {
                    digest: "index.json".into(),
                    what: "index",
                    source,
                })?;
            for m in index.manifests() {
                let d = descriptor(m);
                label_children(&content, &d).await?;
                let ann = m.annotations().clone().unwrap_or_default();
                let name = ann.get("io.containerd.image.name").cloned().or_else(|| {
                    let r = ann.get("org.opencontainers.image.ref.name")?;
                    if r.contains('/') || r.contains('.') && r.contains(':') {
                        Some(r.clone())
                    } else if !options.base_name.is_empty() {
                        Some(format!("{}:{r}", options.base_name))
                    } else {
                        None
                    }
                });
                if let Some(n) = name {
                    named.push((n, d));
                }
            }
        } else if let Some(list) = small.get("manifest.json") {
            let images: Vec<DockerImage> =
                serde_json::from_slice(list).map_err(|source| DistributionError::Document {
                    digest: "manifest.json".into(),
                    what: "docker archive manifest",
                    source,
                })?;
            for image in images {
                let d = docker_manifest(&content, &stored, &image).await?;
                for tag in image.repo_tags.unwrap_or_default() {
                    named.push((tag, d.clone()));
                }
            }
        } else {
            return Err(bad_archive(
                "neither an OCI image layout (index.json) nor a docker archive (manifest.json)",
            ));
        }
        let mut out = Vec::new();
        for (name, target) in named {
            let name = ImageRef::parse(&name).map(|r| r.name()).unwrap_or(name);
            if let Some(sn) = &options.unpack {
                let sn = if sn.is_empty() {
                    self.stores().default_snapshotter.clone()
                } else {
                    sn.clone()
                };
                self.unpack_local(ns, lease, &sn, &content, &target, progress)
                    .await?;
            }
            let image = ProtoImage {
                name: name.clone(),
                labels: options.labels.clone(),
                target: Some(target.clone()),
                created_at: None,
                updated_at: None,
            };
            out.push(self.save_image(ns, image).await?);
            progress(Progress {
                event: "saved".into(),
                name,
                desc: Some(target),
                progress: 0,
                total: 0,
            });
        }
        Ok(out)
    }

    /// Unpacks the host platform's manifest of `target` from local blobs.
    async fn unpack_local(
        &self,
        ns: &Namespace,
        lease: &str,
        snapshotter: &str,
        content: &NamespacedContent,
        target: &Descriptor,
        progress: &ProgressSink,
    ) -> Result<()> {
        let manifest_desc = match media::classify(&target.media_type) {
            MediaKind::Manifest => target.clone(),
            MediaKind::Index => {
                let index: ImageIndex = read_json(content, target, "index").await?;
                let host = Matcher::host();
                let best = index
                    .manifests()
                    .iter()
                    .filter_map(|m| Some((host.rank(m.platform().as_ref()?)?, m)))
                    .min_by_key(|(r, _)| *r)
                    .map(|(_, m)| descriptor(m));
                match best {
                    Some(b) => b,
                    None => return Ok(()),
                }
            }
            _ => return Ok(()),
        };
        let manifest: ImageManifest = read_json(content, &manifest_desc, "manifest").await?;
        let config: hull_oci::oci_spec::image::ImageConfiguration =
            read_json(content, &descriptor(manifest.config()), "config").await?;
        let diff_ids = config.rootfs().diff_ids().clone();
        let ready: Download = futures::future::ready(Ok(())).boxed().shared();
        let layers = manifest
            .layers()
            .iter()
            .map(|l| (descriptor(l), ready.clone()))
            .collect();
        self.unpack(ns, lease, snapshotter, &diff_ids, layers, progress, content)
            .await?;
        // The config holds the unpacked snapshot against GC, as after a pull.
        if let Some(top) = super::pull::chain_ids(&diff_ids).last() {
            let d: Digest = digest(manifest.config().digest().as_ref())?;
            let mut info = content
                .info(&d)
                .await
                .map_err(|e| content_err("config info", &e))?;
            let key = format!("{}{snapshotter}", labels::GC_REF_SNAPSHOT);
            info.labels.insert(key.clone(), top.clone());
            content
                .update(info, vec![format!("labels.{key}")])
                .await
                .map_err(|e| content_err("label config", &e))?;
        }
        Ok(())
    }

    /// Writes the archive of `options.images` as tar bytes to `out`.
    ///
    /// # Errors
    /// NotFound for an unknown image or a blob the store lacks.
    pub async fn export(
        self: &Arc<Self>,
        ns: &Namespace,
        options: ExportOptions,
        out: tokio::sync::mpsc::Sender<Bytes>,
    ) -> Result<()> {
        let content = NamespacedContent::new(self.stores().db.clone(), ns.clone(), None);
        let matchers: Vec<Matcher> = options
            .platforms
            .iter()
            .cloned()
            .map(Matcher::new)
            .collect();
        let mut roots = Vec::new();
        let mut blobs: Vec<Descriptor> = Vec::new();
        let mut docker: Vec<DockerImage> = Vec::new();
        for name in &options.images {
            let image = self
                .stores()
                .images
                .get(req(ns, None, GetImageRequest { name: name.clone() }))
                .await
                .map_err(DistributionError::store(format!("image {name}")))?
                .into_inner()
                .image
                .unwrap_or_default();
            let root = image.target.unwrap_or_default();
            // Each manifest with how well it suits this host (lower is
            // better; docker's manifest.json gets the best one).
            let mut manifests: Vec<(Descriptor, u32)> = Vec::new();
            push_unique(&mut blobs, root.clone());
            let host = Matcher::host();
            match media::classify(&root.media_type) {
                MediaKind::Index => {
                    let index: ImageIndex = read_json(&content, &root, "index").await?;
                    for m in index.manifests() {
                        let d = descriptor(m);
                        let platform = m.platform().as_ref();
                        let wanted = matchers.is_empty()
                            || platform.is_some_and(|p| matchers.iter().any(|x| x.matches(p)));
                        if wanted && content.info(&digest(&d.digest)?).await.is_ok() {
                            let rank = platform.and_then(|p| host.rank(p)).unwrap_or(u32::MAX);
                            manifests.push((d, rank));
                        }
                    }
                }
                _ => manifests.push((root.clone(), 0)),
            }
            let mut docker_pick: Option<(u32, DockerImage)> = None;
            for (m, rank) in &manifests {
                let rank = *rank;
                push_unique(&mut blobs, m.clone());
                let parsed: ImageManifest = read_json(&content, m, "manifest").await?;
                let config = descriptor(parsed.config());
                push_unique(&mut blobs, config.clone());
                let mut layers = Vec::new();
                for l in parsed.layers() {
                    let l = descriptor(l);
                    layers.push(blob_path(&l.digest));
                    push_unique(&mut blobs, l);
                }
                // docker's manifest.json names one image per tag: the host's
                // platform when there are several.
                if docker_pick.as_ref().is_none_or(|(r, _)| rank < *r) {
                    docker_pick = Some((
                        rank,
                        DockerImage {
                            config: blob_path(&config.digest),
                            repo_tags: Some(vec![familiar(name)]),
                            layers,
                        },
                    ));
                }
            }
            if let Some((_, d)) = docker_pick {
                docker.push(d);
            }
            let mut root_entry = root.clone();
            root_entry
                .annotations
                .insert("io.containerd.image.name".into(), name.clone());
            if let Ok(r) = ImageRef::parse(name) {
                if let Some(tag) = r.tag() {
                    root_entry
                        .annotations
                        .insert("org.opencontainers.image.ref.name".into(), tag.to_owned());
                }
            }
            roots.push(root_entry);
        }
        let index = ImageIndexBuilder::default()
            .schema_version(SCHEMA_VERSION)
            .media_type(MediaType::ImageIndex)
            .manifests(
                roots
                    .iter()
                    .map(oci_descriptor)
                    .collect::<Result<Vec<_>>>()?,
            )
            .build()
            .map_err(|e| bad_archive(format!("index.json: {e}")))?;
        let index = serde_json::to_vec(&index).map_err(|e| bad_archive(e.to_string()))?;
        let docker_json = if options.skip_docker_manifest {
            None
        } else {
            Some(serde_json::to_vec(&docker).map_err(|e| bad_archive(e.to_string()))?)
        };
        let db = self.stores().db.clone();
        let ns2 = ns.clone();
        tokio::task::spawn_blocking(move || {
            write_archive(&db, &ns2, &blobs, &index, docker_json.as_deref(), out)
        })
        .await
        .map_err(|e| bad_archive(format!("export task: {e}")))?
    }
}

/// oci-spec's descriptor of a wire one.
fn oci_descriptor(d: &Descriptor) -> Result<hull_oci::oci_spec::image::Descriptor> {
    use std::str::FromStr as _;
    let digest = hull_oci::oci_spec::image::Digest::from_str(&d.digest)
        .map_err(|e| bad_archive(format!("{}: {e}", d.digest)))?;
    let mut out = hull_oci::oci_spec::image::Descriptor::new(
        MediaType::from(d.media_type.as_str()),
        u64::try_from(d.size).unwrap_or(0),
        digest,
    );
    if !d.annotations.is_empty() {
        out.set_annotations(Some(d.annotations.clone().into_iter().collect()));
    }
    Ok(out)
}

fn push_unique(v: &mut Vec<Descriptor>, d: Descriptor) {
    if !v.iter().any(|x| x.digest == d.digest) {
        v.push(d);
    }
}

fn blob_path(digest: &str) -> String {
    let (alg, hex) = digest.split_once(':').unwrap_or(("sha256", digest));
    format!("blobs/{alg}/{hex}")
}

fn digest(d: &str) -> Result<Digest> {
    d.parse()
        .map_err(|_| bad_archive(format!("{d:?} is not a digest")))
}

async fn read_json<T: serde::de::DeserializeOwned>(
    content: &NamespacedContent,
    d: &Descriptor,
    what: &'static str,
) -> Result<T> {
    let data = content
        .read_at(&digest(&d.digest)?, 0, usize::try_from(d.size).unwrap_or(0))
        .await
        .map_err(|e| {
            if errdefs::Classify::kind(&e) == Kind::NotFound {
                DistributionError::NotFound {
                    what: "blob in the content store",
                    name: d.digest.clone(),
                }
            } else {
                content_err("read", &e)
            }
        })?;
    serde_json::from_slice(&data).map_err(|source| DistributionError::Document {
        digest: d.digest.clone(),
        what,
        source,
    })
}

/// Adds containerd's gc labels to an imported index or manifest and its
/// children, so that the image record holds them all.
async fn label_children(content: &NamespacedContent, d: &Descriptor) -> Result<()> {
    let mut todo = vec![d.clone()];
    while let Some(d) = todo.pop() {
        let mut labels = BTreeMap::new();
        match media::classify(&d.media_type) {
            MediaKind::Index => {
                let index: ImageIndex = read_json(content, &d, "index").await?;
                for (i, m) in index.manifests().iter().enumerate() {
                    let m = descriptor(m);
                    // A platform the archive does not carry is not held.
                    if content.info(&digest(&m.digest)?).await.is_ok() {
                        labels.insert(
                            format!("{}.m.{i}", labels::GC_REF_CONTENT),
                            m.digest.clone(),
                        );
                        todo.push(m);
                    }
                }
            }
            MediaKind::Manifest => {
                let m: ImageManifest = read_json(content, &d, "manifest").await?;
                labels.insert(
                    format!("{}.config", labels::GC_REF_CONTENT),
                    m.config().digest().to_string(),
                );
                for (i, l) in m.layers().iter().enumerate() {
                    let dg = digest(l.digest().as_ref())?;
                    if content.info(&dg).await.is_err() {
                        return Err(DistributionError::NotFound {
                            what: "layer in the archive or the store",
                            name: l.digest().to_string(),
                        });
                    }
                    labels.insert(
                        format!("{}.l.{i}", labels::GC_REF_CONTENT),
                        l.digest().to_string(),
                    );
                }
            }
            _ => continue,
        }
        let mut info =
            content
                .info(&digest(&d.digest)?)
                .await
                .map_err(|_| DistributionError::NotFound {
                    what: "blob in the archive or the store",
                    name: d.digest.clone(),
                })?;
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        info.labels.extend(labels);
        content
            .update(info, paths)
            .await
            .map_err(|e| content_err("label", &e))?;
    }
    Ok(())
}

/// A Docker schema 2 manifest for one image of a docker archive.
async fn docker_manifest(
    content: &NamespacedContent,
    stored: &HashMap<String, Stored>,
    image: &DockerImage,
) -> Result<Descriptor> {
    let find = |p: &str| {
        stored
            .get(p.trim_start_matches("./"))
            .cloned()
            .ok_or_else(|| bad_archive(format!("manifest.json names {p}, which the archive lacks")))
    };
    let config = find(&image.config)?;
    let mut layers = Vec::new();
    let mut labels = BTreeMap::new();
    labels.insert(
        format!("{}.config", labels::GC_REF_CONTENT),
        config.digest.clone(),
    );
    for (i, l) in image.layers.iter().enumerate() {
        let s = find(l)?;
        labels.insert(
            format!("{}.l.{i}", labels::GC_REF_CONTENT),
            s.digest.clone(),
        );
        let media_type = if s.gzip {
            media::DOCKER_LAYER_GZIP
        } else {
            media::DOCKER_LAYER
        };
        layers.push(oci_descriptor(&Descriptor {
            media_type: media_type.to_owned(),
            digest: s.digest.clone(),
            size: s.size,
            annotations: Default::default(),
        })?);
    }
    let manifest = ImageManifestBuilder::default()
        .schema_version(SCHEMA_VERSION)
        .media_type(MediaType::Other(media::DOCKER_MANIFEST.to_owned()))
        .config(oci_descriptor(&Descriptor {
            media_type: media::DOCKER_CONFIG.to_owned(),
            digest: config.digest.clone(),
            size: config.size,
            annotations: Default::default(),
        })?)
        .layers(layers)
        .build()
        .map_err(|e| bad_archive(format!("docker manifest: {e}")))?;
    let manifest = serde_json::to_vec(&manifest).map_err(|e| bad_archive(e.to_string()))?;
    let body = Bytes::from(manifest);
    let d = super::registry::sha256(&body);
    let desc = Descriptor {
        media_type: media::DOCKER_MANIFEST.to_owned(),
        digest: d.clone(),
        size: body.len() as i64,
        annotations: Default::default(),
    };
    write_document(
        content,
        &format!("import-manifest-{d}"),
        &desc,
        body,
        labels,
    )
    .await?;
    Ok(desc)
}

/// An archive's small documents by path, and its stored files by path.
type ReadArchive = (HashMap<String, Vec<u8>>, HashMap<String, Stored>);

/// Reads the tar, storing every blob; returns the small documents by
/// path and the stored files by path.
fn read_archive(
    db: &crate::metadata::MetaDb,
    ns: &Namespace,
    lease: &hull_proto::identifiers::LeaseId,
    reader: Box<dyn Read + Send>,
) -> Result<ReadArchive> {
    let mut archive = tar::Archive::new(reader);
    let mut small = HashMap::new();
    let mut stored = HashMap::new();
    let entries = archive
        .entries()
        .map_err(|e| bad_archive(format!("not a tar archive: {e}")))?;
    for (n, entry) in entries.enumerate() {
        let mut entry = entry.map_err(|e| bad_archive(format!("tar entry {n}: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry
            .path()
            .map_err(|e| bad_archive(format!("tar entry {n}: {e}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        if SMALL_DOCUMENTS.contains(&path.as_str()) {
            let mut data = Vec::new();
            entry
                .by_ref()
                .take(16 << 20)
                .read_to_end(&mut data)
                .map_err(|e| bad_archive(format!("{path}: {e}")))?;
            small.insert(path, data);
            continue;
        }
        let expected = path
            .strip_prefix("blobs/")
            .and_then(|rest| rest.split_once('/'))
            .map(|(alg, hex)| format!("{alg}:{hex}"));
        let size = i64::try_from(entry.header().size().unwrap_or(0)).unwrap_or(0);
        let r = format!("import-{}-{n}", crate::now_nanos());
        let mut writer = db
            .open_writer(ns, &r, size, None, Some(lease))
            .map_err(store("open ingest"))?;
        let mut buf = vec![0u8; 1 << 20];
        let mut first = [0u8; 2];
        let mut written = 0usize;
        loop {
            let k = entry
                .read(&mut buf)
                .map_err(|e| bad_archive(format!("{path}: {e}")))?;
            if k == 0 {
                break;
            }
            if written < first.len() {
                let n = (first.len() - written).min(k);
                first[written..written + n].copy_from_slice(&buf[..n]);
            }
            written += k;
            writer
                .write(&buf[..k])
                .map_err(|e| store("write")(e.into()))?;
        }
        if i64::try_from(written).unwrap_or(-1) != size {
            let _ = db.abort_ingest(ns, &r);
            return Err(bad_archive(format!(
                "{path}: the archive ends after {written} of its {size} bytes"
            )));
        }
        let digest = writer.digest().to_string();
        if let Some(want) = &expected {
            if *want != digest {
                let _ = db.abort_ingest(ns, &r);
                return Err(DistributionError::Verify {
                    digest: want.clone(),
                    reason: format!("the archive's {path} is {digest}"),
                });
            }
        }
        match db.commit(ns, writer, size, None, BTreeMap::new(), Some(lease)) {
            Ok(_) => {}
            Err(e) if errdefs::Classify::kind(&e) == Kind::AlreadyExists => {
                let _ = db.abort_ingest(ns, &r);
            }
            Err(e) => return Err(store("commit")(e)),
        }
        stored.insert(
            path,
            Stored {
                digest,
                size,
                gzip: first == [0x1f, 0x8b],
            },
        );
    }
    Ok((small, stored))
}

/// A `Write` that hands 1 MiB chunks to the async side.
struct ChunkSink {
    out: tokio::sync::mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl std::io::Write for ChunkSink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 1 << 20 {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.out.blocking_send(chunk).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader went away")
        })
    }
}

fn write_archive(
    db: &crate::metadata::MetaDb,
    ns: &Namespace,
    blobs: &[Descriptor],
    index: &[u8],
    docker: Option<&[u8]>,
    out: tokio::sync::mpsc::Sender<Bytes>,
) -> Result<()> {
    let io = |e: std::io::Error| bad_archive(format!("write archive: {e}"));
    let mut tar = tar::Builder::new(ChunkSink {
        out,
        buf: Vec::new(),
    });
    let file = |tar: &mut tar::Builder<ChunkSink>, path: &str, size: u64, data: &mut dyn Read| {
        let mut h = tar::Header::new_ustar();
        h.set_size(size);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mtime(0);
        tar.append_data(&mut h, path, data)
    };
    let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
    file(
        &mut tar,
        "oci-layout",
        layout.len() as u64,
        &mut &layout[..],
    )
    .map_err(io)?;
    for b in blobs {
        let d = digest(&b.digest)?;
        let (mut f, size) = db
            .open_blob(ns, &d)
            .map_err(|_| DistributionError::NotFound {
                what: "blob in the content store",
                name: b.digest.clone(),
            })?;
        file(
            &mut tar,
            &blob_path(&b.digest),
            u64::try_from(size).unwrap_or(0),
            &mut f,
        )
        .map_err(io)?;
    }
    file(&mut tar, "index.json", index.len() as u64, &mut &index[..]).map_err(io)?;
    if let Some(m) = docker {
        file(&mut tar, "manifest.json", m.len() as u64, &mut &m[..]).map_err(io)?;
    }
    let mut sink = tar.into_inner().map_err(io)?;
    std::io::Write::flush(&mut sink).map_err(io)?;
    Ok(())
}
