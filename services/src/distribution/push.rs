//! Push: an image of the store to a registry. Every blob is asked for
//! first (HEAD); one the registry has in another repository that it came
//! from is mounted across; the rest is uploaded; then the manifests, the
//! children of an index before the index. Pushing an index pushes every
//! platform present in the store.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::try_join_all;
use tonic::Request;

use hull_oci::media::{self, Kind as MediaKind};
use hull_oci::oci_spec::image::{ImageIndex, ImageManifest};
use hull_oci::platform::Matcher;
use hull_proto::containerd::services::images::v1::{images_server::Images, GetImageRequest};
use hull_proto::containerd::types::Descriptor;
use hull_proto::errdefs::{self, Classify, Kind};
use hull_proto::headers;
use hull_proto::identifiers::Namespace;

use super::pull::{content_err, parse_digest, Progress, ProgressSink, Puller};
use super::reference::ImageRef;
use super::registry::{Repository, ResolveOptions};
use super::{DistributionError, Result};
use crate::content::ContentStore;
use crate::metadata::content::NamespacedContent;

/// The label containerd keeps on a blob for each registry it came from:
/// its value lists the repositories there.
pub fn source_label(registry: &str) -> String {
    format!("containerd.io/distribution.source.{registry}")
}

/// What to push.
#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    /// The image record to push.
    pub image: String,
    /// Where to: a reference (empty: the image's own name).
    pub reference: String,
    /// Platforms of an index to push; none means every one present.
    pub platforms: Vec<hull_oci::oci_spec::image::Platform>,
    /// Registry options of this request.
    pub resolve: ResolveOptions,
}

impl Puller {
    /// Pushes `request` from namespace `ns`; returns the pushed root.
    ///
    /// # Errors
    /// NotFound for an unknown image or a blob missing from the store;
    /// the registry's refusals.
    pub async fn push(
        self: &Arc<Self>,
        ns: &Namespace,
        request: PushRequest,
        progress: ProgressSink,
    ) -> Result<Descriptor> {
        let target_name = if request.reference.is_empty() {
            request.image.clone()
        } else {
            request.reference.clone()
        };
        let reference = ImageRef::parse(&target_name)?;
        let repo = self.registries().repository(&reference, &request.resolve)?;
        let mut get = Request::new(GetImageRequest {
            name: request.image.clone(),
        });
        if let Ok(v) = ns.as_str().parse() {
            get.metadata_mut().insert(headers::NAMESPACE, v);
        }
        let image = self
            .stores()
            .images
            .get(get)
            .await
            .map_err(DistributionError::store(format!("image {}", request.image)))?
            .into_inner()
            .image
            .unwrap_or_default();
        let root = image.target.unwrap_or_default();
        let content = NamespacedContent::new(self.stores().db.clone(), ns.clone(), None);
        let read = |d: Descriptor| {
            let content = content.clone();
            async move {
                let dg = parse_digest(&d.digest)?;
                let data = content
                    .read_at(&dg, 0, usize::try_from(d.size).unwrap_or(0))
                    .await
                    .map_err(|e| content_err("read", &e))?;
                Ok::<_, DistributionError>(Bytes::from(data))
            }
        };
        let root_body = read(root.clone()).await?;
        let mut manifests: Vec<(Descriptor, Bytes)> = Vec::new();
        match media::classify(&root.media_type) {
            MediaKind::Index => {
                let index: ImageIndex = serde_json::from_slice(&root_body).map_err(|source| {
                    DistributionError::Document {
                        digest: root.digest.clone(),
                        what: "index",
                        source,
                    }
                })?;
                let matchers: Vec<Matcher> = request
                    .platforms
                    .iter()
                    .cloned()
                    .map(Matcher::new)
                    .collect();
                for m in index.manifests() {
                    if media::classify(m.media_type().as_ref()) != MediaKind::Manifest {
                        continue;
                    }
                    if !matchers.is_empty()
                        && !m
                            .platform()
                            .as_ref()
                            .is_some_and(|p| matchers.iter().any(|x| x.matches(p)))
                    {
                        continue;
                    }
                    let d = super::pull::descriptor(m);
                    // Only what the store has: a pull of one platform
                    // leaves the others out.
                    if content.info(&parse_digest(&d.digest)?).await.is_err() {
                        continue;
                    }
                    let body = read(d.clone()).await?;
                    manifests.push((d, body));
                }
            }
            MediaKind::Manifest => manifests.push((root.clone(), root_body.clone())),
            _ => {
                return Err(DistributionError::MediaType {
                    digest: root.digest.clone(),
                    media_type: root.media_type.clone(),
                })
            }
        }
        let mut blobs: BTreeMap<String, Descriptor> = BTreeMap::new();
        for (d, body) in &manifests {
            let m: ImageManifest =
                serde_json::from_slice(body).map_err(|source| DistributionError::Document {
                    digest: d.digest.clone(),
                    what: "manifest",
                    source,
                })?;
            for b in std::iter::once(m.config()).chain(m.layers().iter()) {
                let b = super::pull::descriptor(b);
                blobs.insert(b.digest.clone(), b);
            }
        }
        let uploads = blobs
            .into_values()
            .map(|b| self.push_blob(&repo, &content, b, progress.clone()));
        try_join_all(uploads).await?;
        for (d, body) in &manifests {
            if d.digest != root.digest {
                repo.put_manifest(&d.digest, &d.media_type, body.clone())
                    .await?;
            }
        }
        // A reference with only a digest pushes the root by its digest.
        let tag = reference.tag().unwrap_or(&root.digest).to_owned();
        repo.put_manifest(&tag, &root.media_type, root_body).await?;
        progress(Progress {
            event: "pushed".into(),
            name: reference.name(),
            desc: Some(root.clone()),
            progress: root.size,
            total: root.size,
        });
        Ok(root)
    }

    /// One blob: there already, mounted from a repository it came from,
    /// or uploaded.
    async fn push_blob(
        &self,
        repo: &Repository,
        content: &NamespacedContent,
        desc: Descriptor,
        progress: ProgressSink,
    ) -> Result<()> {
        let _permit = self.upload_permit().await?;
        let event = |e: &str, done: i64| progress(Progress::blob(e, &desc, done));
        if repo.has_blob(&desc.digest).await? {
            event("exists", desc.size);
            return Ok(());
        }
        let dg = parse_digest(&desc.digest)?;
        let mut info = content.info(&dg).await.map_err(|e| {
            if e.kind() == Kind::NotFound {
                DistributionError::NotFound {
                    what: "blob in the content store",
                    name: desc.digest.clone(),
                }
            } else {
                content_err("blob info", &e)
            }
        })?;
        let label = source_label(repo.registry());
        let sources: Vec<String> = info
            .labels
            .get(&label)
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_default();
        let mut mounted = false;
        for from in sources.iter().filter(|s| s.as_str() != repo.name()) {
            if repo.mount_blob(&desc.digest, from).await? {
                mounted = true;
                event("mounted", desc.size);
                break;
            }
        }
        if !mounted {
            event("uploading", 0);
            let (db, ns, d) = (
                self.stores().db.clone(),
                content.namespace().clone(),
                dg.clone(),
            );
            let make = move || -> Result<reqwest::Body> {
                let (file, _) = db
                    .open_blob(&ns, &d)
                    .map_err(|e| DistributionError::Store {
                        op: "open blob".into(),
                        status: Box::new(errdefs::to_status(&e)),
                    })?;
                let file = tokio::fs::File::from_std(file);
                Ok(reqwest::Body::wrap_stream(
                    tokio_util::io::ReaderStream::with_capacity(file, 1 << 20),
                ))
            };
            repo.upload_blob(&desc.digest, u64::try_from(desc.size).unwrap_or(0), &make)
                .await?;
            event("uploaded", desc.size);
        }
        // Where it is now, for mounts by later pushes.
        if !sources.iter().any(|s| s == repo.name()) {
            let mut all = sources;
            all.push(repo.name().to_owned());
            info.labels.insert(label.clone(), all.join(","));
            content
                .update(info, vec![format!("labels.{label}")])
                .await
                .map_err(|e| content_err("label blob", &e))?;
        }
        Ok(())
    }
}
