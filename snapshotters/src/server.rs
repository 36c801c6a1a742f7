//! Serves one [`Snapshotter`] over containerd's snapshots gRPC API, with
//! no namespaces of its own: a proxy client (containerd, or hulld) sends
//! the keys it wants, already namespaced.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use hull_proto::containerd::services::snapshots::v1::{
    snapshots_server::Snapshots, CleanupRequest, CommitSnapshotRequest, Info as ProtoInfo,
    ListSnapshotsRequest, ListSnapshotsResponse, MountsRequest, MountsResponse,
    PrepareSnapshotRequest, PrepareSnapshotResponse, RemoveSnapshotRequest, StatSnapshotRequest,
    StatSnapshotResponse, UpdateSnapshotRequest, UpdateSnapshotResponse, UsageRequest,
    UsageResponse, ViewSnapshotRequest, ViewSnapshotResponse,
};
use hull_proto::containerd::types::Mount as ProtoMount;
use hull_proto::errdefs;

use crate::{Info, Kind, Mount, Snapshotter};

pub use hull_proto::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer;

/// The service around one snapshotter.
pub struct SnapshotService {
    inner: Arc<dyn Snapshotter>,
}

impl SnapshotService {
    /// Serves `inner`.
    pub fn new(inner: Arc<dyn Snapshotter>) -> Self {
        SnapshotService { inner }
    }
}

fn st(e: crate::SnapshotError) -> Status {
    errdefs::to_status(&e)
}

fn ts(nanos: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: nanos.div_euclid(1_000_000_000),
        nanos: i32::try_from(nanos.rem_euclid(1_000_000_000)).unwrap_or(0),
    }
}

/// Wire form of an [`Info`].
pub fn info_to_proto(i: Info) -> ProtoInfo {
    ProtoInfo {
        name: i.name,
        parent: i.parent,
        kind: hull_proto::containerd::services::snapshots::v1::Kind::from(i.kind) as i32,
        created_at: Some(ts(i.created_at)),
        updated_at: Some(ts(i.updated_at)),
        labels: i.labels,
    }
}

/// An [`Info`] from its wire form.
pub fn info_from_proto(p: ProtoInfo) -> Info {
    let nanos = |t: Option<prost_types::Timestamp>| {
        t.map_or(0, |t| t.seconds * 1_000_000_000 + i64::from(t.nanos))
    };
    Info {
        name: p.name,
        parent: p.parent,
        kind: match p.kind {
            1 => Kind::View,
            3 => Kind::Committed,
            _ => Kind::Active,
        },
        labels: p.labels,
        created_at: nanos(p.created_at),
        updated_at: nanos(p.updated_at),
    }
}

fn mounts(m: Vec<Mount>) -> Vec<ProtoMount> {
    m.into_iter().map(ProtoMount::from).collect()
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Snapshots for SnapshotService {
    async fn prepare(
        &self,
        req: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let r = req.into_inner();
        let m = self
            .inner
            .prepare(&r.key, &r.parent, r.labels)
            .await
            .map_err(st)?;
        Ok(Response::new(PrepareSnapshotResponse { mounts: mounts(m) }))
    }

    async fn view(
        &self,
        req: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        let r = req.into_inner();
        let m = self
            .inner
            .view(&r.key, &r.parent, r.labels)
            .await
            .map_err(st)?;
        Ok(Response::new(ViewSnapshotResponse { mounts: mounts(m) }))
    }

    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let m = self.inner.mounts(&req.into_inner().key).await.map_err(st)?;
        Ok(Response::new(MountsResponse { mounts: mounts(m) }))
    }

    async fn commit(&self, req: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        self.inner
            .commit(&r.name, &r.key, r.labels)
            .await
            .map_err(st)?;
        Ok(Response::new(()))
    }

    async fn remove(&self, req: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        self.inner.remove(&req.into_inner().key).await.map_err(st)?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        let i = self.inner.stat(&req.into_inner().key).await.map_err(st)?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(info_to_proto(i)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let r = req.into_inner();
        let info = info_from_proto(r.info.unwrap_or_default());
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let i = self.inner.update(info, paths).await.map_err(st)?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(info_to_proto(i)),
        }))
    }

    type ListStream = BoxStream<ListSnapshotsResponse>;

    /// Lists every snapshot; filters are left to the proxy client, which
    /// containerd applies itself.
    async fn list(
        &self,
        _req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let all = self.inner.walk().await.map_err(st)?;
        let mut batches = Vec::new();
        let mut it = all.into_iter().map(info_to_proto).peekable();
        while it.peek().is_some() {
            batches.push(Ok(ListSnapshotsResponse {
                info: it.by_ref().take(100).collect(),
            }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let u = self.inner.usage(&req.into_inner().key).await.map_err(st)?;
        Ok(Response::new(UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, _req: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        self.inner.cleanup().await.map_err(st)?;
        Ok(Response::new(()))
    }
}
