//! Pull: resolve a reference, fetch what the chosen platforms need into
//! the content store, unpack layers as they arrive, name the image.
//!
//! - Every blob is fetched into an ingest named after its digest, so a
//!   pull cut short (a dropped connection, a killed client, a hulld
//!   restart) resumes with a `Range` request from what the ingest holds,
//!   and blobs already in the store are never fetched again.
//! - Two pulls that need the same blob at once share one download.
//! - Layers download `max_concurrent_downloads` at a time; layer N is
//!   applied as soon as it and layer N-1 are there.
//! - Everything written is held by a lease of the pull's own until the
//!   image record holds it (through containerd's gc labels); the lease
//!   goes at the end, whatever the outcome.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::sync::Semaphore;
use tonic::Request;

use hull_oci::media::{self, Kind as MediaKind};
use hull_oci::oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest, Platform};
use hull_oci::platform::Matcher;
use hull_proto::containerd::services::diff::v1::{diff_server::Diff, ApplyRequest};
use hull_proto::containerd::services::images::v1::{
    images_server::Images, CreateImageRequest, Image as ProtoImage, UpdateImageRequest,
};
use hull_proto::containerd::services::leases::v1::{
    leases_server::Leases, CreateRequest as CreateLease, DeleteRequest as DeleteLease,
};
use hull_proto::containerd::services::snapshots::v1::{
    snapshots_server::Snapshots, CommitSnapshotRequest, PrepareSnapshotRequest,
    RemoveSnapshotRequest, StatSnapshotRequest,
};
use hull_proto::containerd::types::Descriptor;
use hull_proto::digest::Digest;
use hull_proto::errdefs::{self, Classify, Kind};
use hull_proto::headers;
use hull_proto::identifiers::Namespace;
use hull_proto::labels;

use super::reference::ImageRef;
use super::registry::{sha256, Registries, Repository, ResolveOptions};
use super::{DistributionError, Result};
use crate::api::diff::DiffService;
use crate::api::images::ImagesService;
use crate::api::leases::LeasesService;
use crate::api::snapshots::SnapshotsService;
use crate::content::ContentStore;
use crate::metadata::content::NamespacedContent;
use crate::metadata::MetaDb;

/// The services a pull writes through.
#[derive(Debug, Clone)]
pub struct Stores {
    /// The metadata DB (content goes through its namespaced store).
    pub db: Arc<MetaDb>,
    /// Image records.
    pub images: Arc<ImagesService>,
    /// The pull's lease.
    pub leases: Arc<LeasesService>,
    /// Unpacked layers.
    pub snapshots: Arc<SnapshotsService>,
    /// Layer application.
    pub diff: Arc<DiffService>,
    /// The snapshotter used when a request names none.
    pub default_snapshotter: String,
}

/// What to pull, and what to do with it.
#[derive(Debug, Clone, Default)]
pub struct PullRequest {
    /// The image reference.
    pub reference: String,
    /// The name of the image record; empty means the normalised reference.
    pub name: String,
    /// Labels of the image record.
    pub labels: BTreeMap<String, String>,
    /// Platforms to fetch; none means the host's.
    pub platforms: Vec<Platform>,
    /// Fetch every platform of an index.
    pub all_platforms: bool,
    /// Unpack into this snapshotter (empty: the default) for the first
    /// platform fetched; None: do not unpack.
    pub unpack: Option<String>,
    /// Registry options of this request.
    pub resolve: ResolveOptions,
}

/// One step of a pull, as the Transfer API's progress reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// `resolving`, `resolved`, `waiting`, `downloading`, `complete`,
    /// `exists`, `unpacking`, `unpacked`, `saved`.
    pub event: String,
    /// What it is about (the reference, or the blob's digest).
    pub name: String,
    /// The descriptor it is about, when a blob.
    pub desc: Option<Descriptor>,
    /// Bytes so far.
    pub progress: i64,
    /// Bytes in all.
    pub total: i64,
}

impl Progress {
    /// Event `event` about blob `desc`, `done` of its bytes there.
    pub fn blob(event: &str, desc: &Descriptor, done: i64) -> Progress {
        Progress {
            event: event.to_owned(),
            name: desc.digest.clone(),
            desc: Some(desc.clone()),
            progress: done,
            total: desc.size,
        }
    }
}

/// Where progress goes.
pub type ProgressSink = Arc<dyn Fn(Progress) + Send + Sync>;

/// A blob's arrival, awaited by everyone who needs it.
pub(super) type Download = Shared<BoxFuture<'static, std::result::Result<(), SharedError>>>;

/// An error shared between the pulls that waited on one download.
#[derive(Debug, Clone)]
pub(super) struct SharedError {
    kind: Kind,
    message: String,
}

/// hulld's puller: one per daemon, so downloads are shared and bounded
/// across all pulls.
pub struct Puller {
    registries: Arc<Registries>,
    stores: Stores,
    downloads: Mutex<HashMap<(String, String), Download>>,
    permits: Arc<Semaphore>,
    uploads: Arc<Semaphore>,
}

impl std::fmt::Debug for Puller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Puller").finish_non_exhaustive()
    }
}

pub(crate) fn req<T>(ns: &Namespace, lease: Option<&str>, msg: T) -> Request<T> {
    let mut r = Request::new(msg);
    if let Ok(v) = ns.as_str().parse() {
        r.metadata_mut().insert(headers::NAMESPACE, v);
    }
    if let Some(l) = lease.and_then(|l| l.parse().ok()) {
        r.metadata_mut().insert(headers::LEASE, l);
    }
    r
}

/// The chain IDs of a stack of layers with these diff IDs.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(prev) => sha256(format!("{prev} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// A manifest chosen for the pull, with what it needs.
struct Chosen {
    desc: Descriptor,
    body: Bytes,
    manifest: ImageManifest,
    config: Descriptor,
    config_body: Bytes,
    diff_ids: Vec<String>,
}

impl Puller {
    /// A puller over `registries`, writing through `stores`.
    pub fn new(registries: Arc<Registries>, stores: Stores) -> Arc<Puller> {
        let n = registries.config().max_concurrent_downloads.max(1);
        Arc::new(Puller {
            registries,
            stores,
            downloads: Mutex::new(HashMap::new()),
            permits: Arc::new(Semaphore::new(n)),
            uploads: Arc::new(Semaphore::new(5)),
        })
    }

    /// The registries this puller reaches.
    pub fn registries(&self) -> &Arc<Registries> {
        &self.registries
    }

    /// The services it writes through.
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// One of the uploads a push may run at once (docker's
    /// max-concurrent-uploads default, 5).
    pub(super) async fn upload_permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>> {
        self.uploads
            .acquire()
            .await
            .map_err(|_| DistributionError::Store {
                op: "upload".into(),
                status: Box::new(errdefs::status(Kind::Unavailable, "shutting down")),
            })
    }

    /// Pulls `request` into namespace `ns` and returns the image record.
    ///
    /// # Errors
    /// The first failure, with the code a client can act on.
    pub async fn pull(
        self: &Arc<Self>,
        ns: &Namespace,
        request: PullRequest,
        progress: ProgressSink,
    ) -> Result<ProtoImage> {
        let reference = ImageRef::parse(&request.reference)?;
        let repo = self.registries.repository(&reference, &request.resolve)?;
        let lease = self.temp_lease(ns, "pull").await?;
        let result = self
            .pull_leased(ns, &lease, &reference, &repo, &request, &progress)
            .await;
        self.release_lease(ns, &lease).await;
        result
    }

    /// A lease of 24 h for one operation's writes (`what`-<time>).
    pub(super) async fn temp_lease(&self, ns: &Namespace, what: &str) -> Result<String> {
        let lease = format!("hull-{what}-{}", crate::now_nanos());
        let expire = std::time::SystemTime::now() + std::time::Duration::from_secs(24 * 3600);
        let lease_labels = BTreeMap::from([(
            labels::GC_EXPIRE.to_owned(),
            humantime::format_rfc3339_seconds(expire).to_string(),
        )]);
        self.stores
            .leases
            .create(req(
                ns,
                None,
                CreateLease {
                    id: lease.clone(),
                    labels: lease_labels,
                },
            ))
            .await
            .map_err(DistributionError::store(format!(
                "create the {what}'s lease"
            )))?;
        Ok(lease)
    }

    /// Lets the operation's lease go (what it wrote is held by records now,
    /// or collectable).
    pub(super) async fn release_lease(&self, ns: &Namespace, lease: &str) {
        if let Err(e) = self
            .stores
            .leases
            .delete(req(
                ns,
                None,
                DeleteLease {
                    id: lease.to_owned(),
                    sync: false,
                },
            ))
            .await
        {
            tracing::warn!(%lease, error = %e.message(), "could not release a lease");
        }
    }

    async fn pull_leased(
        self: &Arc<Self>,
        ns: &Namespace,
        lease: &str,
        reference: &ImageRef,
        repo: &Repository,
        request: &PullRequest,
        progress: &ProgressSink,
    ) -> Result<ProtoImage> {
        let name = reference.name();
        progress(Progress {
            event: "resolving".into(),
            name: name.clone(),
            desc: None,
            progress: 0,
            total: 0,
        });
        let (root, root_body) = repo.resolve(reference.object()).await?;
        progress(Progress {
            event: "resolved".into(),
            name: name.clone(),
            desc: Some(root.clone()),
            progress: 0,
            total: 0,
        });
        let content =
            NamespacedContent::new(self.stores.db.clone(), ns.clone(), Some(lease_id(lease)?));
        let mut chosen = Vec::new();
        let mut root_labels = BTreeMap::new();
        match media::classify(&root.media_type) {
            MediaKind::Index => {
                let index: ImageIndex = parse(&root_body, &root.digest, "index")?;
                let picks = self.choose(&index, request, &name)?;
                for (i, m) in picks.iter().enumerate() {
                    root_labels.insert(
                        format!("{}.m.{i}", labels::GC_REF_CONTENT),
                        m.digest.clone(),
                    );
                    let body = repo.fetch_manifest(m).await?;
                    chosen.push(self.manifest(repo, m.clone(), body).await?);
                }
            }
            MediaKind::Manifest => {
                chosen.push(self.manifest(repo, root.clone(), root_body.clone()).await?);
            }
            _ => {
                return Err(DistributionError::MediaType {
                    digest: root.digest.clone(),
                    media_type: root.media_type.clone(),
                })
            }
        }
        let snapshotter = request.unpack.as_ref().map(|s| {
            if s.is_empty() {
                self.stores.default_snapshotter.clone()
            } else {
                s.clone()
            }
        });
        // Documents, children before parents.
        for (i, c) in chosen.iter().enumerate() {
            let mut config_labels = BTreeMap::new();
            if let (Some(sn), 0) = (&snapshotter, i) {
                if let Some(top) = chain_ids(&c.diff_ids).last() {
                    config_labels.insert(format!("{}{sn}", labels::GC_REF_SNAPSHOT), top.clone());
                }
            }
            store_bytes(
                &content,
                repo,
                "config",
                &c.config,
                c.config_body.clone(),
                config_labels,
            )
            .await?;
            let mut manifest_labels = BTreeMap::new();
            manifest_labels.insert(
                format!("{}.config", labels::GC_REF_CONTENT),
                c.config.digest.clone(),
            );
            for (j, l) in c.manifest.layers().iter().enumerate() {
                manifest_labels.insert(
                    format!("{}.l.{j}", labels::GC_REF_CONTENT),
                    l.digest().to_string(),
                );
            }
            store_bytes(
                &content,
                repo,
                "manifest",
                &c.desc,
                c.body.clone(),
                manifest_labels,
            )
            .await?;
        }
        if media::classify(&root.media_type) == MediaKind::Index {
            store_bytes(
                &content,
                repo,
                "index",
                &root,
                root_body.clone(),
                root_labels,
            )
            .await?;
        }
        // Layers: every download started at once (bounded by the permits),
        // the first platform's applied in order as they land.
        let mut layers: Vec<Vec<(Descriptor, Download)>> = Vec::new();
        for c in &chosen {
            let mut these = Vec::new();
            for l in c.manifest.layers() {
                let desc = descriptor(l);
                let d = self.download(ns, lease, repo, desc.clone(), progress.clone());
                // A shared future runs only when polled: this task drives it.
                tokio::spawn(d.clone());
                these.push((desc, d));
            }
            layers.push(these);
        }
        let mut layers = layers.into_iter();
        if let (Some(sn), Some(first)) = (&snapshotter, layers.next()) {
            self.unpack(
                ns,
                lease,
                sn,
                &chosen[0].diff_ids,
                first,
                progress,
                &content,
            )
            .await?;
        }
        for (_, d) in layers.flatten() {
            d.await.map_err(from_shared)?;
        }
        let image = ProtoImage {
            name: if request.name.is_empty() {
                name.clone()
            } else {
                request.name.clone()
            },
            labels: request.labels.clone(),
            target: Some(root.clone()),
            created_at: None,
            updated_at: None,
        };
        let saved = self.save_image(ns, image).await?;
        progress(Progress {
            event: "saved".into(),
            name,
            desc: Some(root),
            progress: 0,
            total: 0,
        });
        Ok(saved)
    }

    /// The index entries to fetch: every one, the requested platforms',
    /// or the best match for the host.
    fn choose(
        &self,
        index: &ImageIndex,
        request: &PullRequest,
        name: &str,
    ) -> Result<Vec<Descriptor>> {
        let manifests: Vec<_> = index
            .manifests()
            .iter()
            .filter(|m| media::classify(m.media_type().as_ref()) == MediaKind::Manifest)
            .collect();
        if request.all_platforms {
            return Ok(manifests.into_iter().map(descriptor).collect());
        }
        let matchers: Vec<Matcher> = if request.platforms.is_empty() {
            vec![Matcher::host()]
        } else {
            request
                .platforms
                .iter()
                .cloned()
                .map(Matcher::new)
                .collect()
        };
        let mut out = Vec::new();
        for m in &matchers {
            let best = manifests
                .iter()
                .filter_map(|d| {
                    let p = d.platform().as_ref()?;
                    m.rank(p).map(|r| (r, *d))
                })
                .min_by_key(|(r, _)| *r)
                .map(|(_, d)| descriptor(d));
            if let Some(b) = best {
                if !out.iter().any(|o: &Descriptor| o.digest == b.digest) {
                    out.push(b);
                }
            }
        }
        if out.is_empty() {
            let platforms = if request.platforms.is_empty() {
                hull_oci::platform::format(&hull_oci::platform::host())
            } else {
                request
                    .platforms
                    .iter()
                    .map(hull_oci::platform::format)
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(DistributionError::PlatformNotFound {
                reference: name.to_owned(),
                platforms,
            });
        }
        Ok(out)
    }

    /// A manifest's config, fetched and checked.
    async fn manifest(&self, repo: &Repository, desc: Descriptor, body: Bytes) -> Result<Chosen> {
        let manifest: ImageManifest = parse(&body, &desc.digest, "manifest")?;
        let config = descriptor(manifest.config());
        let mut stream = repo.blob(&config.digest, 0).await?;
        let mut config_body = Vec::new();
        while let Some(chunk) =
            stream
                .response
                .chunk()
                .await
                .map_err(|source| DistributionError::Connect {
                    url: config.digest.clone(),
                    source,
                })?
        {
            config_body.extend_from_slice(&chunk);
            if config_body.len() as i64 > config.size.max(0) {
                break;
            }
        }
        verify(&config, &config_body)?;
        let image: ImageConfiguration = parse(&config_body, &config.digest, "config")?;
        let diff_ids = image.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers().len() {
            return Err(DistributionError::Verify {
                digest: desc.digest.clone(),
                reason: format!(
                    "{} layers but its config lists {} diff IDs",
                    manifest.layers().len(),
                    diff_ids.len()
                ),
            });
        }
        for l in manifest.layers() {
            if !media::classify(l.media_type().as_ref()).is_layer() {
                return Err(DistributionError::MediaType {
                    digest: l.digest().to_string(),
                    media_type: l.media_type().to_string(),
                });
            }
        }
        Ok(Chosen {
            desc,
            body,
            manifest,
            config,
            config_body: Bytes::from(config_body),
            diff_ids,
        })
    }

    /// The download of one blob, shared with every pull that needs it now.
    fn download(
        self: &Arc<Self>,
        ns: &Namespace,
        lease: &str,
        repo: &Repository,
        desc: Descriptor,
        progress: ProgressSink,
    ) -> Download {
        let key = (ns.as_str().to_owned(), desc.digest.clone());
        let mut map = self.downloads.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = map.get(&key) {
            return d.clone();
        }
        let this = self.clone();
        let (ns2, lease, repo) = (ns.clone(), lease.to_owned(), repo.clone());
        let k2 = key.clone();
        let fut = async move {
            let r = this.fetch_blob(&ns2, &lease, &repo, &desc, &progress).await;
            this.downloads
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&k2);
            r.map_err(|e| SharedError {
                kind: e.kind(),
                message: errdefs::message(&e),
            })
        }
        .boxed()
        .shared();
        map.insert(key, fut.clone());
        fut
    }

    /// Fetches one blob into the content store, resuming its ingest.
    async fn fetch_blob(
        &self,
        ns: &Namespace,
        lease: &str,
        repo: &Repository,
        desc: &Descriptor,
        progress: &ProgressSink,
    ) -> Result<()> {
        let content =
            NamespacedContent::new(self.stores.db.clone(), ns.clone(), Some(lease_id(lease)?));
        let expected: Digest = parse_digest(&desc.digest)?;
        let event = |e: &str, done: i64| progress(Progress::blob(e, desc, done));
        event("waiting", 0);
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| DistributionError::Store {
                op: "download".into(),
                status: Box::new(errdefs::status(Kind::Unavailable, "shutting down")),
            })?;
        let r = format!("{}-{}", ingest_kind(&desc.media_type), desc.digest);
        let mut attempts = 0;
        loop {
            attempts += 1;
            let mut writer = match content.writer(&r, desc.size, Some(expected.clone())).await {
                Ok(w) => w,
                Err(e) if e.kind() == Kind::AlreadyExists => {
                    event("exists", desc.size);
                    return Ok(());
                }
                Err(e) => return Err(content_err("open ingest", &e)),
            };
            let have = writer
                .status()
                .await
                .map_err(|e| content_err("ingest status", &e))?
                .offset;
            let outcome: Result<()> = async {
                if have < u64::try_from(desc.size).unwrap_or(0) {
                    let mut stream = repo.blob(&desc.digest, have).await?;
                    if stream.offset == 0 && have > 0 {
                        writer
                            .truncate()
                            .await
                            .map_err(|e| content_err("truncate", &e))?;
                    }
                    let mut done = i64::try_from(stream.offset).unwrap_or(0);
                    event("downloading", done);
                    let mut last = done;
                    while let Some(chunk) = stream.response.chunk().await.map_err(|source| {
                        DistributionError::Connect {
                            url: desc.digest.clone(),
                            source,
                        }
                    })? {
                        done += chunk.len() as i64;
                        if done > desc.size {
                            return Err(DistributionError::Verify {
                                digest: desc.digest.clone(),
                                reason: format!("more than its {} bytes", desc.size),
                            });
                        }
                        writer
                            .write(chunk.to_vec())
                            .await
                            .map_err(|e| content_err("write", &e))?;
                        if done - last >= 1 << 20 {
                            event("downloading", done);
                            last = done;
                        }
                    }
                }
                Ok(())
            }
            .await;
            match outcome {
                Ok(()) => {}
                Err(e @ DistributionError::Connect { .. }) if attempts < 3 => {
                    tracing::info!(digest = %desc.digest, error = %e, "download interrupted; resuming");
                    let _ = writer.close().await;
                    continue;
                }
                Err(e) => {
                    let bad = matches!(e, DistributionError::Verify { .. });
                    let _ = writer.close().await;
                    if bad {
                        let _ = content.abort(&r).await;
                    }
                    return Err(e);
                }
            }
            let labels = BTreeMap::from([(
                super::push::source_label(repo.registry()),
                repo.name().to_owned(),
            )]);
            return match writer
                .commit(desc.size, Some(expected.clone()), labels)
                .await
            {
                Ok(_) => {
                    event("complete", desc.size);
                    Ok(())
                }
                Err(e) if e.kind() == Kind::AlreadyExists => {
                    event("exists", desc.size);
                    Ok(())
                }
                Err(e) if e.kind() == Kind::FailedPrecondition => {
                    // Wrong bytes: nothing of them stays.
                    let _ = content.abort(&r).await;
                    Err(DistributionError::Verify {
                        digest: desc.digest.clone(),
                        reason: errdefs::message(&e),
                    })
                }
                Err(e) => Err(content_err("commit", &e)),
            };
        }
    }

    /// Applies the first platform's layers in order as they land.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn unpack(
        &self,
        ns: &Namespace,
        lease: &str,
        snapshotter: &str,
        diff_ids: &[String],
        layers: Vec<(Descriptor, Download)>,
        progress: &ProgressSink,
        content: &NamespacedContent,
    ) -> Result<()> {
        let chains = chain_ids(diff_ids);
        let mut parent = String::new();
        for (i, (desc, download)) in layers.into_iter().enumerate() {
            let chain = chains[i].clone();
            let exists = self
                .stores
                .snapshots
                .stat(req(
                    ns,
                    None,
                    StatSnapshotRequest {
                        snapshotter: snapshotter.to_owned(),
                        key: chain.clone(),
                    },
                ))
                .await
                .is_ok();
            download.await.map_err(from_shared)?;
            if exists {
                parent = chain;
                continue;
            }
            progress(Progress::blob("unpacking", &desc, 0));
            let key = format!("extract-{}-{}", crate::now_nanos(), chain);
            let mounts = self
                .stores
                .snapshots
                .prepare(req(
                    ns,
                    Some(lease),
                    PrepareSnapshotRequest {
                        snapshotter: snapshotter.to_owned(),
                        key: key.clone(),
                        parent: parent.clone(),
                        labels: Default::default(),
                    },
                ))
                .await
                .map_err(DistributionError::store(format!(
                    "prepare snapshot for {}",
                    desc.digest
                )))?
                .into_inner()
                .mounts;
            let applied = self
                .stores
                .diff
                .apply(req(
                    ns,
                    Some(lease),
                    ApplyRequest {
                        diff: Some(desc.clone()),
                        mounts,
                        payloads: Default::default(),
                    },
                ))
                .await;
            let remove = || async {
                let _ = self
                    .stores
                    .snapshots
                    .remove(req(
                        ns,
                        None,
                        RemoveSnapshotRequest {
                            snapshotter: snapshotter.to_owned(),
                            key: key.clone(),
                        },
                    ))
                    .await;
            };
            let applied = match applied {
                Ok(a) => a.into_inner().applied.unwrap_or_default(),
                Err(e) => {
                    remove().await;
                    return Err(DistributionError::store(format!(
                        "apply layer {}",
                        desc.digest
                    ))(e));
                }
            };
            if applied.digest != diff_ids[i] {
                remove().await;
                return Err(DistributionError::Verify {
                    digest: desc.digest.clone(),
                    reason: format!(
                        "uncompressed it is {}, its config says {}",
                        applied.digest, diff_ids[i]
                    ),
                });
            }
            let committed = self
                .stores
                .snapshots
                .commit(req(
                    ns,
                    Some(lease),
                    CommitSnapshotRequest {
                        snapshotter: snapshotter.to_owned(),
                        name: chain.clone(),
                        key: key.clone(),
                        labels: Default::default(),
                    },
                ))
                .await;
            match committed {
                Ok(_) => {}
                // Another pull unpacked the same layer meanwhile.
                Err(e) if Kind::from_code(e.code() as i32) == Kind::AlreadyExists => remove().await,
                Err(e) => {
                    remove().await;
                    return Err(DistributionError::store(format!("commit snapshot {chain}"))(e));
                }
            }
            let mut info = content
                .info(&parse_digest(&desc.digest)?)
                .await
                .map_err(|e| content_err("layer info", &e))?;
            info.labels
                .insert(labels::UNCOMPRESSED.to_owned(), applied.digest.clone());
            content
                .update(info, vec![format!("labels.{}", labels::UNCOMPRESSED)])
                .await
                .map_err(|e| content_err("label layer", &e))?;
            progress(Progress::blob("unpacked", &desc, desc.size));
            parent = chain;
        }
        Ok(())
    }

    /// Creates the image record, or points an existing one at what was
    /// pulled.
    pub(crate) async fn save_image(&self, ns: &Namespace, image: ProtoImage) -> Result<ProtoImage> {
        let created = self
            .stores
            .images
            .create(req(
                ns,
                None,
                CreateImageRequest {
                    image: Some(image.clone()),
                },
            ))
            .await;
        match created {
            Ok(r) => Ok(r.into_inner().image.unwrap_or_default()),
            Err(e) if Kind::from_code(e.code() as i32) == Kind::AlreadyExists => {
                let r = self
                    .stores
                    .images
                    .update(req(
                        ns,
                        None,
                        UpdateImageRequest {
                            image: Some(image),
                            update_mask: None,
                        },
                    ))
                    .await
                    .map_err(DistributionError::store("update image"))?;
                Ok(r.into_inner().image.unwrap_or_default())
            }
            Err(e) => Err(DistributionError::store("create image")(e)),
        }
    }
}

/// A descriptor's digest; Verify naming it when it is not one.
pub(super) fn parse_digest(d: &str) -> Result<Digest> {
    d.parse().map_err(|_| DistributionError::Verify {
        digest: d.to_owned(),
        reason: "not a digest".into(),
    })
}

pub(super) fn lease_id(lease: &str) -> Result<hull_proto::identifiers::LeaseId> {
    hull_proto::identifiers::LeaseId::new(lease).map_err(|e| DistributionError::Store {
        op: "lease id".into(),
        status: Box::new(errdefs::to_status(&e)),
    })
}

fn from_shared(e: SharedError) -> DistributionError {
    DistributionError::Store {
        op: "download".into(),
        status: Box::new(errdefs::status(e.kind, e.message)),
    }
}

pub(super) fn content_err(op: &str, e: &crate::content::ContentError) -> DistributionError {
    DistributionError::Store {
        op: op.to_owned(),
        status: Box::new(errdefs::to_status(e)),
    }
}

/// containerd's ingest names: `layer-sha256:…`, `manifest-sha256:…`.
fn ingest_kind(media_type: &str) -> &'static str {
    match media::classify(media_type) {
        MediaKind::Index => "index",
        MediaKind::Manifest => "manifest",
        MediaKind::Config => "config",
        MediaKind::Layer { .. } => "layer",
        MediaKind::Other => "unknown",
    }
}

/// A wire descriptor of an OCI one.
pub(super) fn descriptor(d: &hull_oci::oci_spec::image::Descriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type().to_string(),
        digest: d.digest().to_string(),
        size: i64::try_from(d.size()).unwrap_or(i64::MAX),
        annotations: d
            .annotations()
            .as_ref()
            .map(|a| a.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default(),
    }
}

fn parse<T: serde::de::DeserializeOwned>(
    body: &[u8],
    digest: &str,
    what: &'static str,
) -> Result<T> {
    serde_json::from_slice(body).map_err(|source| DistributionError::Document {
        digest: digest.to_owned(),
        what,
        source,
    })
}

fn verify(desc: &Descriptor, body: &[u8]) -> Result<()> {
    if body.len() as i64 != desc.size {
        return Err(DistributionError::Verify {
            digest: desc.digest.clone(),
            reason: format!(
                "{} bytes where the descriptor says {}",
                body.len(),
                desc.size
            ),
        });
    }
    let got = sha256(body);
    if got != desc.digest {
        return Err(DistributionError::Verify {
            digest: desc.digest.clone(),
            reason: format!("the registry sent {got}"),
        });
    }
    Ok(())
}

/// Writes a small document fetched from `repo` into the store, with
/// `labels` and the label naming where it came from.
async fn store_bytes(
    content: &NamespacedContent,
    repo: &Repository,
    kind: &str,
    desc: &Descriptor,
    body: Bytes,
    mut labels: BTreeMap<String, String>,
) -> Result<()> {
    labels.insert(
        super::push::source_label(repo.registry()),
        repo.name().to_owned(),
    );
    write_document(
        content,
        &format!("{kind}-{}", desc.digest),
        desc,
        body,
        labels,
    )
    .await
}

/// Writes a small verified document under ingest `r` (AlreadyExists: the
/// labels it lacks are added).
pub(super) async fn write_document(
    content: &NamespacedContent,
    r: &str,
    desc: &Descriptor,
    body: Bytes,
    mut labels: BTreeMap<String, String>,
) -> Result<()> {
    let digest: Digest = parse_digest(&desc.digest)?;
    match content.writer(r, desc.size, Some(digest.clone())).await {
        Ok(mut w) => {
            w.truncate()
                .await
                .map_err(|e| content_err("truncate", &e))?;
            w.write(body.to_vec())
                .await
                .map_err(|e| content_err("write", &e))?;
            match w.commit(desc.size, Some(digest), labels).await {
                Ok(_) => Ok(()),
                Err(e) if e.kind() == Kind::AlreadyExists => Ok(()),
                Err(e) => Err(content_err("commit", &e)),
            }
        }
        Err(e) if e.kind() == Kind::AlreadyExists => {
            let mut info = content
                .info(&digest)
                .await
                .map_err(|e| content_err("info", &e))?;
            // Only what changes: a repeated pull writes nothing.
            labels.retain(|k, v| {
                if k.starts_with("containerd.io/distribution.source.") {
                    !info.labels.contains_key(k)
                } else {
                    info.labels.get(k) != Some(v)
                }
            });
            if labels.is_empty() {
                return Ok(());
            }
            let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
            info.labels.extend(labels);
            content
                .update(info, paths)
                .await
                .map_err(|e| content_err("label", &e))?;
            Ok(())
        }
        Err(e) => Err(content_err("open ingest", &e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_ids_as_the_image_spec_defines() {
        let a = "sha256:aaaa".to_owned();
        let b = "sha256:bbbb".to_owned();
        let c = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(c[0], a);
        assert_eq!(c[1], sha256(b"sha256:aaaa sha256:bbbb"));
        assert!(chain_ids(&[]).is_empty());
    }
}
