//! Kubernetes CRI (`runtime.v1`) on hulld's socket: the kubelet's (and
//! crictl's) RuntimeService and ImageService.
//!
//! A client of hulld's own services and stores, like any other: image
//! records through [`ImagesService`], pulls through the distribution
//! module's [`Puller`], blobs through the namespaced content store. Its
//! objects live in the `k8s.io` namespace, as containerd's CRI keeps them,
//! so that `ctr -n k8s.io images ls` shows them.
//!
//! Served today: ImageService whole; RuntimeService's Version, Status,
//! UpdateRuntimeConfig and RuntimeConfig. The pod and container calls
//! answer Unimplemented, naming the call, until they are built.

pub mod images;
pub mod runtime;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use crate::api::images::ImagesService;
use crate::distribution::pull::Puller;
use crate::metadata::MetaDb;

/// The namespace CRI's objects live in.
pub const NAMESPACE: &str = "k8s.io";

/// What both CRI services share.
#[derive(Debug)]
pub struct Cri {
    db: Arc<MetaDb>,
    images: Arc<ImagesService>,
    puller: Arc<Puller>,
    /// Where the default snapshotter keeps its layers (ImageFsInfo).
    snapshots_root: PathBuf,
    /// Directories holding CNI network configs (NetworkReady).
    cni_conf_dirs: Vec<PathBuf>,
    /// The pod CIDR the kubelet last set.
    pod_cidr: Mutex<String>,
    ns: hull_proto::identifiers::Namespace,
}

impl Cri {
    /// CRI over hulld's stores and services.
    pub fn new(
        db: Arc<MetaDb>,
        images: Arc<ImagesService>,
        puller: Arc<Puller>,
        snapshots_root: PathBuf,
        cni_conf_dirs: Vec<PathBuf>,
    ) -> Result<Arc<Cri>, hull_proto::identifiers::IdentifierError> {
        Ok(Arc::new(Cri {
            db,
            images,
            puller,
            snapshots_root,
            cni_conf_dirs,
            pod_cidr: Mutex::new(String::new()),
            ns: hull_proto::identifiers::Namespace::new(NAMESPACE)?,
        }))
    }
}

/// A request to one of hulld's services in CRI's namespace.
pub(crate) fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    if let Ok(v) = NAMESPACE.parse() {
        r.metadata_mut().insert(hull_proto::headers::NAMESPACE, v);
    }
    r
}
