//! ImageService: pull through the distribution module, list, status,
//! remove, and the image filesystem's use. One CRI image is one image ID
//! (config digest) with every record that names it: `repo:tag` names are
//! its repo tags, `repo@digest` names and the manifest digest of each
//! tagged repo its repo digests. A pull records the tag, the digest and the
//! ID names, as containerd's CRI does.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use hull_oci::media::{self, Kind as MediaKind};
use hull_oci::oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};
use hull_oci::platform::Matcher;
use hull_proto::containerd::services::images::v1::images_server::Images;
use hull_proto::containerd::services::images::v1::{
    DeleteImageRequest, Image as Record, ListImagesRequest as ListRecordsRequest,
};
use hull_proto::digest::Digest;
use hull_proto::errdefs::Kind;
use hull_proto::runtime::v1::image_service_server::ImageService;
use hull_proto::runtime::v1::{
    FilesystemIdentifier, FilesystemUsage, Image, ImageFsInfoRequest, ImageFsInfoResponse,
    ImageSpec, ImageStatusRequest, ImageStatusResponse, Int64Value, ListImagesRequest,
    ListImagesResponse, PullImageRequest, PullImageResponse, RemoveImageRequest,
    RemoveImageResponse, StreamImagesRequest, StreamImagesResponse, UInt64Value,
};
use tonic::{Request, Response, Status};

use super::{request, Cri};
use crate::content::ContentStore;
use crate::distribution::pull::PullRequest;
use crate::distribution::registry::ResolveOptions;
use crate::metadata::content::NamespacedContent;

/// The label containerd's CRI puts on the images it pulls.
pub const MANAGED: &str = "io.cri-containerd.image";
/// Pinned images are never garbage-collected by the kubelet.
pub const PINNED: &str = "io.cri-containerd.pinned";

/// ImageService over [`Cri`].
#[derive(Debug, Clone)]
pub struct CriImages(pub Arc<Cri>);

/// What one image record resolves to.
#[derive(Debug, Clone)]
struct Resolved {
    name: String,
    id: String,
    manifest_digest: String,
    size: u64,
    user: String,
    pinned: bool,
    config: ImageConfiguration,
}

/// What a container is created from.
#[derive(Debug, Clone)]
pub struct ImageForContainer {
    /// The image's ID (its config's digest).
    pub id: String,
    /// The name the container records: the reference asked for,
    /// normalised.
    pub name: String,
    /// A digest reference of it (image_ref), else the ID.
    pub image_ref: String,
    /// Its config.
    pub config: ImageConfiguration,
    /// The chain ID of its top layer: the snapshot the container's root is
    /// prepared over.
    pub chain_id: String,
}

fn status_of(kind: Kind, msg: impl Into<String>) -> Status {
    hull_proto::errdefs::status(kind, msg.into())
}

impl CriImages {
    async fn read(
        &self,
        content: &NamespacedContent,
        digest: &str,
        size: i64,
    ) -> Result<Vec<u8>, Status> {
        let d = Digest::from_str(digest)
            .map_err(|e| status_of(Kind::DataLoss, format!("digest {digest}: {e}")))?;
        content
            .read_at(&d, 0, usize::try_from(size).unwrap_or(0))
            .await
            .map_err(|e| {
                status_of(
                    hull_proto::errdefs::Classify::kind(&e),
                    format!("read {digest}: {}", hull_proto::errdefs::message(&e)),
                )
            })
    }

    /// The record's manifest (this machine's, through an index) and config.
    async fn resolve(&self, record: &Record) -> Result<Resolved, Status> {
        let content = NamespacedContent::new(self.0.db.clone(), self.0.ns.clone(), None);
        let target = record.target.clone().ok_or_else(|| {
            status_of(
                Kind::DataLoss,
                format!("image {} has no target", record.name),
            )
        })?;
        let (mut digest, mut media_type, mut size) =
            (target.digest, target.media_type, target.size);
        for _ in 0..4 {
            if media::classify(&media_type) != MediaKind::Index {
                break;
            }
            let index: ImageIndex =
                serde_json::from_slice(&self.read(&content, &digest, size).await?)
                    .map_err(|e| status_of(Kind::DataLoss, format!("index {digest}: {e}")))?;
            let matcher = Matcher::host();
            let best = index
                .manifests()
                .iter()
                .filter_map(|m| {
                    Some((
                        m.platform()
                            .as_ref()
                            .map_or(Some(u32::MAX - 1), |p| matcher.rank(p))?,
                        m,
                    ))
                })
                .min_by_key(|(r, _)| *r)
                .map(|(_, m)| m.clone())
                .ok_or_else(|| {
                    status_of(
                        Kind::NotFound,
                        format!("image {} has no manifest for this platform", record.name),
                    )
                })?;
            digest = best.digest().to_string();
            media_type = best.media_type().to_string();
            size = best.size() as i64;
        }
        let manifest: ImageManifest =
            serde_json::from_slice(&self.read(&content, &digest, size).await?)
                .map_err(|e| status_of(Kind::DataLoss, format!("manifest {digest}: {e}")))?;
        let config_desc = manifest.config();
        let config: ImageConfiguration = serde_json::from_slice(
            &self
                .read(
                    &content,
                    config_desc.digest().as_ref(),
                    config_desc.size() as i64,
                )
                .await?,
        )
        .map_err(|e| {
            status_of(
                Kind::DataLoss,
                format!("config {}: {e}", config_desc.digest()),
            )
        })?;
        let layers: u64 = manifest.layers().iter().map(|l| l.size()).sum();
        Ok(Resolved {
            name: record.name.clone(),
            id: config_desc.digest().to_string(),
            manifest_digest: digest,
            size: layers + config_desc.size() + size.max(0) as u64,
            user: config
                .config()
                .as_ref()
                .and_then(|c| c.user().clone())
                .unwrap_or_default(),
            pinned: record
                .labels
                .get(PINNED)
                .is_some_and(|v| v == "pinned" || v == "true"),
            config,
        })
    }

    async fn records(&self) -> Result<Vec<Record>, Status> {
        Ok(self
            .0
            .images
            .list(request(ListRecordsRequest::default()))
            .await?
            .into_inner()
            .images)
    }

    /// Every image, one per ID.
    async fn all(&self) -> Result<Vec<Image>, Status> {
        let mut by_id: BTreeMap<String, Vec<Resolved>> = BTreeMap::new();
        for r in self.records().await? {
            // A record that does not resolve (its blobs being collected,
            // another platform only) is left out, not an error.
            if let Ok(res) = self.resolve(&r).await {
                by_id.entry(res.id.clone()).or_default().push(res);
            }
        }
        Ok(by_id
            .into_iter()
            .map(|(id, names)| to_cri(&id, &names))
            .collect())
    }

    /// The image a container of image `spec` is created from.
    ///
    /// # Errors
    /// NotFound when no image is known by that name.
    pub async fn for_container(&self, spec: &str) -> Result<ImageForContainer, Status> {
        let image = self.find(spec).await?.ok_or_else(|| {
            status_of(
                Kind::NotFound,
                format!("failed to get image {spec:?}: image not found"),
            )
        })?;
        let mut resolved = None;
        for r in self.records().await? {
            if let Ok(res) = self.resolve(&r).await {
                if res.id == image.id {
                    resolved = Some(res);
                    break;
                }
            }
        }
        let res = resolved
            .ok_or_else(|| status_of(Kind::NotFound, format!("image {spec:?} is being removed")))?;
        let diff_ids: Vec<String> = res
            .config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|d| d.to_string())
            .collect();
        let chain_id = crate::distribution::pull::chain_ids(&diff_ids)
            .pop()
            .unwrap_or_default();
        let wanted = hull_oci::reference::normalize(spec).unwrap_or_else(|_| spec.to_owned());
        let name = if image.repo_tags.contains(&wanted) || image.repo_digests.contains(&wanted) {
            wanted
        } else {
            image
                .repo_tags
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone())
        };
        Ok(ImageForContainer {
            image_ref: image
                .repo_digests
                .first()
                .cloned()
                .unwrap_or_else(|| image.id.clone()),
            id: image.id,
            name,
            config: res.config,
            chain_id,
        })
    }

    /// The image `spec` names: by ID (or an ID prefix of 12 or more hex
    /// digits), tag or digest reference, normalised as Docker does.
    async fn find(&self, spec: &str) -> Result<Option<Image>, Status> {
        let wanted = hull_oci::reference::normalize(spec).unwrap_or_else(|_| spec.to_owned());
        let hex = spec.strip_prefix("sha256:").unwrap_or(spec);
        let id_like = hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit());
        Ok(self.all().await?.into_iter().find(|i| {
            i.id == spec
                || (id_like && i.id.trim_start_matches("sha256:").starts_with(hex))
                || i.repo_tags.contains(&wanted)
                || i.repo_digests.contains(&wanted)
        }))
    }
}

/// Splits a reference at its tag or digest: (repository, rest).
fn repository(name: &str) -> &str {
    if let Some((repo, _)) = name.split_once('@') {
        return repo;
    }
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => &name[..slash + i],
        None => name,
    }
}

fn to_cri(id: &str, names: &[Resolved]) -> Image {
    let mut repo_tags = Vec::new();
    let mut repo_digests = Vec::new();
    for r in names {
        if r.name == id {
            continue;
        }
        if r.name.contains('@') {
            repo_digests.push(r.name.clone());
        } else {
            repo_tags.push(r.name.clone());
            repo_digests.push(format!("{}@{}", repository(&r.name), r.manifest_digest));
        }
    }
    repo_tags.sort();
    repo_tags.dedup();
    repo_digests.sort();
    repo_digests.dedup();
    let first = &names[0];
    // The image's user: a uid when it starts with a number, else a name.
    let user = first.user.split(':').next().unwrap_or("");
    let (uid, username) = match user.parse::<i64>() {
        Ok(n) => (Some(Int64Value { value: n }), String::new()),
        Err(_) => (None, user.to_owned()),
    };
    Image {
        id: id.to_owned(),
        repo_tags,
        repo_digests,
        size: first.size,
        uid,
        username,
        spec: Some(ImageSpec {
            image: id.to_owned(),
            ..Default::default()
        }),
        pinned: names.iter().any(|r| r.pinned),
    }
}

fn credentials(
    auth: Option<hull_proto::runtime::v1::AuthConfig>,
) -> Result<Option<hull_oci::credentials::Credentials>, Status> {
    let Some(a) = auth else { return Ok(None) };
    if !a.username.is_empty() || !a.password.is_empty() {
        return Ok(Some(hull_oci::credentials::Credentials {
            username: a.username,
            password: a.password,
        }));
    }
    if !a.auth.is_empty() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .map_err(|_| status_of(Kind::InvalidArgument, "auth is not base64 of user:password"))?;
        let text = String::from_utf8(raw)
            .map_err(|_| status_of(Kind::InvalidArgument, "auth is not text"))?;
        let (u, p) = text
            .split_once(':')
            .ok_or_else(|| status_of(Kind::InvalidArgument, "auth is not user:password"))?;
        return Ok(Some(hull_oci::credentials::Credentials {
            username: u.to_owned(),
            password: p.to_owned(),
        }));
    }
    if !a.identity_token.is_empty() {
        // A refresh token, sent as Docker does: the password of user
        // `<token>`.
        return Ok(Some(hull_oci::credentials::Credentials {
            username: "<token>".into(),
            password: a.identity_token,
        }));
    }
    Ok(None)
}

/// Bytes and inodes under `dir` (not following links).
fn usage(dir: &std::path::Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![dir.to_owned()];
    let mut seen = std::collections::HashSet::new();
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if !seen.insert((m.dev(), m.ino())) {
                continue;
            }
            inodes += 1;
            bytes += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

#[tonic::async_trait]
impl ImageService for CriImages {
    async fn list_images(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let filter = req
            .into_inner()
            .filter
            .and_then(|f| f.image)
            .map(|s| s.image)
            .filter(|s| !s.is_empty());
        let images = match filter {
            Some(f) => self.find(&f).await?.into_iter().collect(),
            None => self.all().await?,
        };
        Ok(Response::new(ListImagesResponse { images }))
    }

    type StreamImagesStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<StreamImagesResponse, Status>>>;

    async fn stream_images(
        &self,
        req: Request<StreamImagesRequest>,
    ) -> Result<Response<Self::StreamImagesStream>, Status> {
        let list = self
            .list_images(Request::new(ListImagesRequest {
                filter: req.into_inner().filter,
            }))
            .await?
            .into_inner()
            .images;
        // Batches of 100, as a list too large for one message would need.
        let batches: Vec<_> = list
            .chunks(100)
            .map(|c| Ok(StreamImagesResponse { images: c.to_vec() }))
            .collect();
        Ok(Response::new(tokio_stream::iter(batches)))
    }

    async fn image_status(
        &self,
        req: Request<ImageStatusRequest>,
    ) -> Result<Response<ImageStatusResponse>, Status> {
        let req = req.into_inner();
        let spec = req.image.map(|s| s.image).unwrap_or_default();
        if spec.is_empty() {
            return Err(status_of(Kind::InvalidArgument, "image spec is required"));
        }
        // An image that is not here is no error: the answer has no image.
        let image = self.find(&spec).await?;
        let mut info = BTreeMap::new();
        if req.verbose {
            if let Some(i) = &image {
                info.insert(
                    "info".to_owned(),
                    serde_json::json!({ "id": i.id, "repoTags": i.repo_tags, "repoDigests": i.repo_digests, "size": i.size }).to_string(),
                );
            }
        }
        Ok(Response::new(ImageStatusResponse { image, info }))
    }

    async fn pull_image(
        &self,
        req: Request<PullImageRequest>,
    ) -> Result<Response<PullImageResponse>, Status> {
        let req = req.into_inner();
        let reference = req.image.map(|s| s.image).unwrap_or_default();
        if reference.is_empty() {
            return Err(status_of(Kind::InvalidArgument, "image spec is required"));
        }
        let name = hull_oci::reference::normalize(&reference)
            .map_err(|e| status_of(Kind::InvalidArgument, e.to_string()))?;
        let pull = PullRequest {
            reference: name.clone(),
            name: name.clone(),
            labels: [(MANAGED.to_owned(), "managed".to_owned())].into(),
            platforms: Vec::new(),
            all_platforms: false,
            unpack: Some(String::new()),
            resolve: ResolveOptions {
                credentials: credentials(req.auth)?,
                ..Default::default()
            },
        };
        let record = self
            .0
            .puller
            .pull(&self.0.ns, pull, Arc::new(|_| {}))
            .await
            .map_err(|e| {
                status_of(
                    hull_proto::errdefs::Classify::kind(&e),
                    hull_proto::errdefs::message(&e),
                )
            })?;
        let resolved = self.resolve(&record).await?;
        // The digest and ID names, so that the image is found by either
        // and keeps its content while any name is left.
        let mut names = vec![resolved.id.clone()];
        if !name.contains('@') {
            names.push(format!(
                "{}@{}",
                repository(&name),
                resolved.manifest_digest
            ));
        }
        for n in names {
            let mut r = record.clone();
            r.name = n;
            self.0.puller.save_image(&self.0.ns, r).await.map_err(|e| {
                status_of(
                    hull_proto::errdefs::Classify::kind(&e),
                    hull_proto::errdefs::message(&e),
                )
            })?;
        }
        Ok(Response::new(PullImageResponse {
            image_ref: resolved.id,
        }))
    }

    async fn remove_image(
        &self,
        req: Request<RemoveImageRequest>,
    ) -> Result<Response<RemoveImageResponse>, Status> {
        let spec = req.into_inner().image.map(|s| s.image).unwrap_or_default();
        if spec.is_empty() {
            return Err(status_of(Kind::InvalidArgument, "image spec is required"));
        }
        // Removing what is not here succeeds, as the kubelet expects.
        let Some(image) = self.find(&spec).await? else {
            return Ok(Response::new(RemoveImageResponse {}));
        };
        for r in self.records().await? {
            let Ok(res) = self.resolve(&r).await else {
                continue;
            };
            if res.id != image.id {
                continue;
            }
            match self
                .0
                .images
                .delete(request(DeleteImageRequest {
                    name: r.name.clone(),
                    sync: false,
                }))
                .await
            {
                Ok(_) => {}
                Err(s) if Kind::from_code(s.code() as i32) == Kind::NotFound => {}
                Err(s) => return Err(s),
            }
        }
        Ok(Response::new(RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _: Request<ImageFsInfoRequest>,
    ) -> Result<Response<ImageFsInfoResponse>, Status> {
        let root = self.0.snapshots_root.clone();
        let (bytes, inodes) = tokio::task::spawn_blocking({
            let root = root.clone();
            move || usage(&root)
        })
        .await
        .map_err(|e| status_of(Kind::Unknown, e.to_string()))?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        let fs = FilesystemUsage {
            timestamp: now,
            fs_id: Some(FilesystemIdentifier {
                mountpoint: root.to_string_lossy().into_owned(),
            }),
            used_bytes: Some(UInt64Value { value: bytes }),
            inodes_used: Some(UInt64Value { value: inodes }),
        };
        Ok(Response::new(ImageFsInfoResponse {
            image_filesystems: vec![fs.clone()],
            container_filesystems: vec![fs],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repositories_and_auth() {
        assert_eq!(
            repository("docker.io/library/busybox:1.36"),
            "docker.io/library/busybox"
        );
        assert_eq!(repository("127.0.0.1:5000/a/b:v1"), "127.0.0.1:5000/a/b");
        assert_eq!(repository("127.0.0.1:5000/a@sha256:ab"), "127.0.0.1:5000/a");
        let auth = hull_proto::runtime::v1::AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p:w"),
            ..Default::default()
        };
        let c = credentials(Some(auth)).unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p:w"));
        let bad = hull_proto::runtime::v1::AuthConfig {
            auth: "!!".into(),
            ..Default::default()
        };
        assert!(credentials(Some(bad)).is_err());
        assert!(credentials(None).unwrap().is_none());
    }

    #[test]
    fn the_images_user_is_a_uid_or_a_name_and_names_group_by_id() {
        let r = |name: &str, user: &str| Resolved {
            name: name.into(),
            id: "sha256:aa".into(),
            manifest_digest: "sha256:mm".into(),
            size: 10,
            user: user.into(),
            pinned: false,
            config: serde_json::from_str(
                r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
            )
            .unwrap(),
        };
        let i = to_cri(
            "sha256:aa",
            &[
                r("docker.io/library/x:1", "1000:1000"),
                r("sha256:aa", "1000:1000"),
            ],
        );
        assert_eq!(i.uid.map(|u| u.value), Some(1000));
        assert_eq!(i.username, "");
        assert_eq!(i.repo_tags, ["docker.io/library/x:1"]);
        assert_eq!(i.repo_digests, ["docker.io/library/x@sha256:mm"]);
        let i = to_cri("sha256:aa", &[r("docker.io/library/x:1", "nginx:nginx")]);
        assert_eq!((i.uid, i.username.as_str()), (None, "nginx"));
        let i = to_cri("sha256:aa", &[r("docker.io/library/x:1", "")]);
        assert_eq!((i.uid, i.username.as_str()), (None, ""));
    }
}
