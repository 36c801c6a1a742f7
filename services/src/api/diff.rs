//! `containerd.services.diff.v1.Diff`: apply layers onto snapshot mounts.

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};

use hull_oci::media;
use hull_proto::containerd::services::diff::v1::{
    diff_server::Diff, ApplyRequest, ApplyResponse, DiffRequest, DiffResponse,
};
use hull_proto::containerd::types::Descriptor;
use hull_proto::errdefs::{self, Kind};
use hull_snapshots::mount::TempMount;
use hull_snapshots::Mount;

use super::{digest, lease, namespace, status};
use crate::content::Writer;
use crate::diff::apply::{apply_layer, Whiteouts};
use crate::diff::compare::write_diff;
use crate::diff::{is_layer, DiffConfig, DiffError};
use crate::metadata::MetaDb;
use hull_proto::labels::UNCOMPRESSED;

/// Feeds a layer being written into a content writer.
struct ContentSink(Writer);

impl std::io::Write for ContentSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A tree to read: a bind source as it is, anything else mounted.
enum Mounted {
    Dir(PathBuf),
    Temp(Option<TempMount>, PathBuf),
}

impl Mounted {
    fn new(mounts: &[Mount], at: &std::path::Path) -> Result<Mounted, Status> {
        if let [m] = mounts {
            if m.kind == "bind" {
                return Ok(Mounted::Dir(PathBuf::from(&m.source)));
            }
        }
        std::fs::create_dir_all(at)
            .map_err(|e| errdefs::status(Kind::Unknown, format!("create {}: {e}", at.display())))?;
        let t = TempMount::new(mounts, at).map_err(status)?;
        Ok(Mounted::Temp(Some(t), at.to_owned()))
    }

    fn path(&self) -> &std::path::Path {
        match self {
            Mounted::Dir(p) => p,
            Mounted::Temp(_, dir) => dir,
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Mounted::Temp(mount, dir) = self {
            // Unmount first, then the mount point can go.
            drop(mount.take());
            let _ = std::fs::remove_dir(dir.as_path());
        }
    }
}

/// Applies layers from the content store.
#[derive(Debug)]
pub struct DiffService {
    db: Arc<MetaDb>,
    limits: DiffConfig,
    /// Where mounts that cannot be written directly are mounted.
    scratch: PathBuf,
    /// Bounds concurrent applies: each is bound by one core and the disk.
    permits: Semaphore,
}

impl DiffService {
    /// Applies blobs of `db` with `limits`, mounting under `scratch`.
    pub fn new(db: Arc<MetaDb>, limits: DiffConfig, scratch: PathBuf) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        DiffService {
            db,
            limits,
            scratch,
            permits: Semaphore::new(cores * 2),
        }
    }
}

/// Where a layer is written for `mounts`, and how.
enum Target {
    /// A directory written directly (a bind mount's source, an overlay's
    /// upperdir with its lowerdirs behind it).
    Dir(PathBuf, Vec<PathBuf>, Whiteouts),
    /// Anything else is mounted first.
    Mount(Vec<Mount>),
}

fn target(mounts: Vec<Mount>) -> Target {
    if let [m] = mounts.as_slice() {
        if m.kind == "bind" && !m.options.iter().any(|o| o == "ro") {
            return Target::Dir(PathBuf::from(&m.source), Vec::new(), Whiteouts::Delete);
        }
        if m.kind == "overlay" {
            if let Some(upper) = m.options.iter().find_map(|o| o.strip_prefix("upperdir=")) {
                let lowers = m
                    .options
                    .iter()
                    .find_map(|o| o.strip_prefix("lowerdir="))
                    .map(|l| l.split(':').map(PathBuf::from).collect())
                    .unwrap_or_default();
                return Target::Dir(PathBuf::from(upper), lowers, Whiteouts::Overlay);
            }
        }
    }
    Target::Mount(mounts)
}

#[tonic::async_trait]
impl Diff for DiffService {
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let desc = req.diff.unwrap_or_default();
        if !is_layer(&desc.media_type) {
            return Err(status(DiffError::MediaType(desc.media_type)));
        }
        let d = digest(&desc.digest)?;
        if req.mounts.is_empty() {
            return Err(errdefs::status(
                Kind::InvalidArgument,
                "no mounts to apply to",
            ));
        }
        let mounts: Vec<Mount> = req.mounts.into_iter().map(Mount::from).collect();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| errdefs::status(Kind::Unavailable, "shutting down"))?;
        let (db, limits, scratch) = (self.db.clone(), self.limits.clone(), self.scratch.clone());
        let applied = tokio::task::spawn_blocking(move || -> Result<_, Status> {
            let (blob, _) = db.open_blob(&ns, &d).map_err(status)?;
            let result = match target(mounts) {
                Target::Dir(dir, lowers, mode) => apply_layer(blob, &dir, &lowers, mode, &limits),
                Target::Mount(mounts) => {
                    std::fs::create_dir_all(&scratch).map_err(|e| {
                        errdefs::status(Kind::Unknown, format!("create {}: {e}", scratch.display()))
                    })?;
                    let dir = scratch.join(format!("apply-{}", d.hex()));
                    std::fs::create_dir_all(&dir).map_err(|e| {
                        errdefs::status(Kind::Unknown, format!("create {}: {e}", dir.display()))
                    })?;
                    let applied = TempMount::new(&mounts, &dir)
                        .map_err(DiffError::from)
                        .and_then(|m| apply_layer(blob, m.path(), &[], Whiteouts::Delete, &limits));
                    let _ = std::fs::remove_dir(&dir);
                    applied
                }
            };
            result.map_err(status)
        })
        .await
        .map_err(|e| errdefs::status(Kind::Unknown, format!("apply task: {e}")))??;
        tracing::debug!(layer = %desc.digest, diff_id = %applied.diff_id, "applied layer");
        Ok(Response::new(ApplyResponse {
            applied: Some(Descriptor {
                // What Apply reports: the uncompressed layer.
                media_type: media::layer_uncompressed(),
                digest: applied.diff_id.to_string(),
                size: i64::try_from(applied.size).unwrap_or(i64::MAX),
                annotations: Default::default(),
            }),
        }))
    }

    async fn diff(&self, req: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let ns = namespace(&req)?;
        let lease = lease(&req)?;
        let req = req.into_inner();
        let media_type = if req.media_type.is_empty() {
            // What Diff writes when the request names nothing.
            media::layer_gzip()
        } else {
            req.media_type.clone()
        };
        let gzip = match media::classify(&media_type) {
            media::Kind::Layer {
                compression: media::Compression::Gzip,
                ..
            } => true,
            media::Kind::Layer {
                compression: media::Compression::None,
                ..
            } => false,
            // zstd and anything else: not a layer hull writes.
            _ => return Err(status(DiffError::MediaType(media_type))),
        };
        let r = if req.r#ref.is_empty() {
            format!("diff-{}", crate::now_nanos())
        } else {
            req.r#ref.clone()
        };
        let left: Vec<Mount> = req.left.into_iter().map(Mount::from).collect();
        let right: Vec<Mount> = req.right.into_iter().map(Mount::from).collect();
        let (db, scratch) = (self.db.clone(), self.scratch.clone());
        let mut labels = req.labels;
        let desc = tokio::task::spawn_blocking(move || -> Result<Descriptor, Status> {
            let unique = crate::now_nanos();
            let lm = Mounted::new(&left, &scratch.join(format!("diff-left-{unique}")))?;
            let rm = Mounted::new(&right, &scratch.join(format!("diff-right-{unique}")))?;
            let writer = db
                .open_writer(&ns, &r, 0, None, lease.as_ref())
                .map_err(status)?;
            let written =
                write_diff(lm.path(), rm.path(), ContentSink(writer), gzip).map_err(status)?;
            let writer = written.sink.0;
            let size = i64::try_from(writer.status().offset).unwrap_or(i64::MAX);
            labels.insert(UNCOMPRESSED.to_owned(), written.diff_id.to_string());
            let digest = match db.commit(&ns, writer, size, None, labels, lease.as_ref()) {
                Ok(d) => d.to_string(),
                // The same layer was computed before: it is the answer.
                Err(e) if hull_proto::errdefs::Classify::kind(&e) == Kind::AlreadyExists => {
                    return Err(errdefs::status(Kind::AlreadyExists, errdefs::message(&e)));
                }
                Err(e) => return Err(status(e)),
            };
            Ok(Descriptor {
                media_type,
                digest,
                size,
                annotations: Default::default(),
            })
        })
        .await
        .map_err(|e| errdefs::status(Kind::Unknown, format!("diff task: {e}")))??;
        Ok(Response::new(DiffResponse { diff: Some(desc) }))
    }
}
