//! `containerd.services.snapshots.v1.Snapshots`, per namespace, over every
//! configured snapshotter.
//!
//! Backends know nothing of namespaces: a key `k` in namespace `ns` is
//! `ns/k` to the backend (namespaces cannot contain `/`), and only keys with
//! the caller's prefix are visible to it.

use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use hull_proto::containerd::events::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use hull_proto::containerd::services::snapshots::v1::{
    snapshots_server::Snapshots, CleanupRequest, CommitSnapshotRequest, Info as ProtoInfo,
    ListSnapshotsRequest, ListSnapshotsResponse, MountsRequest, MountsResponse,
    PrepareSnapshotRequest, PrepareSnapshotResponse, RemoveSnapshotRequest, StatSnapshotRequest,
    StatSnapshotResponse, UpdateSnapshotRequest, UpdateSnapshotResponse, UsageRequest,
    UsageResponse, ViewSnapshotRequest, ViewSnapshotResponse,
};
use hull_proto::containerd::types::Mount as ProtoMount;
use hull_proto::errdefs::{self, Kind};
use hull_proto::identifiers::{LeaseId, Namespace};
use hull_snapshots::{Info, Kind as SnapKind, Mount};

use super::{lease, namespace, paths, run, status, LIST_BATCH};
use crate::events::Exchange;
use crate::filters::{label_field, Adaptor, Filter};
use crate::metadata::leases::Resource;
use crate::metadata::MetaDb;
use crate::snapshots::Snapshotters;

/// Snapshots over the configured snapshotters.
#[derive(Debug)]
pub struct SnapshotsService {
    snapshotters: Arc<Snapshotters>,
    db: Arc<MetaDb>,
    events: Exchange,
}

impl SnapshotsService {
    /// Serves `snapshotters`; leases live in `db`.
    pub fn new(snapshotters: Arc<Snapshotters>, db: Arc<MetaDb>, events: Exchange) -> Self {
        SnapshotsService {
            snapshotters,
            db,
            events,
        }
    }

    /// Prepare (`Active`) or view (`View`) in `ns`.
    #[allow(clippy::too_many_arguments)]
    async fn create(
        &self,
        ns: &Namespace,
        lease: &Option<LeaseId>,
        snapshotter: &str,
        key: &str,
        parent: &str,
        labels: hull_snapshots::Labels,
        kind: SnapKind,
    ) -> Result<Vec<ProtoMount>, Status> {
        let (name, sn) = self.snapshotters.get(snapshotter)?;
        // Lease first, and both under the gate, so that no collection sees
        // the new snapshot without its lease.
        let _gate = self.snapshotters.creating().await;
        self.add_to_lease(ns, lease, &name, key).await?;
        let (key, parent) = (bkey(ns, key)?, bparent(ns, parent));
        let mounts = match kind {
            SnapKind::View => sn.view(&key, &parent, labels).await,
            _ => sn.prepare(&key, &parent, labels).await,
        }
        .map_err(status)?;
        Ok(mounts_to_proto(mounts))
    }

    /// Adds the snapshot to the request's lease (NotFound for an unknown
    /// lease), before the snapshot exists.
    async fn add_to_lease(
        &self,
        ns: &Namespace,
        lease: &Option<LeaseId>,
        snapshotter: &str,
        key: &str,
    ) -> Result<(), Status> {
        if let Some(l) = lease {
            let res = Resource::parse(&format!("snapshots/{snapshotter}"), key).map_err(status)?;
            let (db, ns, l) = (self.db.clone(), ns.clone(), l.clone());
            run(move || db.add_lease_resource(&ns, &l, &res)).await?;
            self.db.flush().await.map_err(status)?;
        }
        Ok(())
    }
}

fn bkey(ns: &Namespace, key: &str) -> Result<String, Status> {
    if key.is_empty() {
        return Err(errdefs::status(
            Kind::InvalidArgument,
            "snapshot key must not be empty",
        ));
    }
    Ok(format!("{ns}/{key}"))
}

fn bparent(ns: &Namespace, parent: &str) -> String {
    if parent.is_empty() {
        String::new()
    } else {
        format!("{ns}/{parent}")
    }
}

fn strip(ns: &Namespace, key: &str) -> Option<String> {
    key.strip_prefix(ns.as_str())?
        .strip_prefix('/')
        .map(str::to_owned)
}

fn info_to_proto(ns: &Namespace, i: Info) -> ProtoInfo {
    ProtoInfo {
        name: strip(ns, &i.name).unwrap_or_default(),
        parent: strip(ns, &i.parent).unwrap_or_default(),
        kind: hull_proto::containerd::services::snapshots::v1::Kind::from(i.kind) as i32,
        created_at: Some(crate::timestamp(i.created_at)),
        updated_at: Some(crate::timestamp(i.updated_at)),
        labels: i.labels,
    }
}

fn mounts_to_proto(m: Vec<Mount>) -> Vec<ProtoMount> {
    m.into_iter().map(ProtoMount::from).collect()
}

struct InfoView<'a>(&'a ProtoInfo);

impl Adaptor for InfoView<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path.first().map(String::as_str)? {
            "name" => Some(self.0.name.clone()),
            "parent" => Some(self.0.parent.clone()),
            "kind" => Some(
                match self.0.kind {
                    1 => SnapKind::View,
                    3 => SnapKind::Committed,
                    _ => SnapKind::Active,
                }
                .as_str()
                .to_owned(),
            ),
            "labels" => label_field(&self.0.labels, &path[1..]),
            _ => None,
        }
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        req: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let (ns, lease) = (namespace(&req)?, lease(&req)?);
        let req = req.into_inner();
        let mounts = self
            .create(
                &ns,
                &lease,
                &req.snapshotter,
                &req.key,
                &req.parent,
                req.labels,
                SnapKind::Active,
            )
            .await?;
        self.db.note_mutation();
        self.events.publish(
            &ns,
            "/snapshot/prepare",
            &SnapshotPrepare {
                key: req.key,
                parent: req.parent,
            },
        );
        Ok(Response::new(PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        req: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        let (ns, lease) = (namespace(&req)?, lease(&req)?);
        let req = req.into_inner();
        let mounts = self
            .create(
                &ns,
                &lease,
                &req.snapshotter,
                &req.key,
                &req.parent,
                req.labels,
                SnapKind::View,
            )
            .await?;
        self.db.note_mutation();
        Ok(Response::new(ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        req: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let (_, sn) = self.snapshotters.get(&req.snapshotter)?;
        let mounts = sn.mounts(&bkey(&ns, &req.key)?).await.map_err(status)?;
        Ok(Response::new(MountsResponse {
            mounts: mounts_to_proto(mounts),
        }))
    }

    async fn commit(&self, req: Request<CommitSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let lease = lease(&req)?;
        let req = req.into_inner();
        let (name, sn) = self.snapshotters.get(&req.snapshotter)?;
        let gate = self.snapshotters.creating().await;
        self.add_to_lease(&ns, &lease, &name, &req.name).await?;
        sn.commit(&bkey(&ns, &req.name)?, &bkey(&ns, &req.key)?, req.labels)
            .await
            .map_err(status)?;
        drop(gate);
        self.db.note_mutation();
        self.events.publish(
            &ns,
            "/snapshot/commit",
            &SnapshotCommit {
                key: req.key,
                name: req.name,
            },
        );
        Ok(Response::new(()))
    }

    async fn remove(&self, req: Request<RemoveSnapshotRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let (_, sn) = self.snapshotters.get(&req.snapshotter)?;
        sn.remove(&bkey(&ns, &req.key)?).await.map_err(status)?;
        // Its parents may be unreferenced now.
        self.db.note_deletion();
        self.events
            .publish(&ns, "/snapshot/remove", &SnapshotRemove { key: req.key });
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        req: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let (_, sn) = self.snapshotters.get(&req.snapshotter)?;
        let info = sn.stat(&bkey(&ns, &req.key)?).await.map_err(status)?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(info_to_proto(&ns, info)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let (_, sn) = self.snapshotters.get(&req.snapshotter)?;
        let p = req.info.unwrap_or_default();
        let info = Info {
            name: bkey(&ns, &p.name)?,
            parent: String::new(),
            kind: SnapKind::Active,
            labels: p.labels,
            created_at: 0,
            updated_at: 0,
        };
        let updated = sn
            .update(info, paths(req.update_mask))
            .await
            .map_err(status)?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(info_to_proto(&ns, updated)),
        }))
    }

    type ListStream = BoxStream<ListSnapshotsResponse>;

    async fn list(
        &self,
        req: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let filter = Filter::parse(&req.filters).map_err(status)?;
        let (_, sn) = self.snapshotters.get(&req.snapshotter)?;
        let mut infos: Vec<ProtoInfo> = sn
            .walk()
            .await
            .map_err(status)?
            .into_iter()
            .filter(|i| strip(&ns, &i.name).is_some())
            .map(|i| info_to_proto(&ns, i))
            .filter(|i| filter.matches(&InfoView(i)))
            .collect();
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        let mut batches = Vec::new();
        let mut it = infos.into_iter().peekable();
        while it.peek().is_some() {
            batches.push(Ok(ListSnapshotsResponse {
                info: it.by_ref().take(LIST_BATCH).collect(),
            }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn usage(&self, req: Request<UsageRequest>) -> Result<Response<UsageResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let (_, sn) = self.snapshotters.get(&req.snapshotter)?;
        let u = sn.usage(&bkey(&ns, &req.key)?).await.map_err(status)?;
        Ok(Response::new(UsageResponse {
            size: u.size,
            inodes: u.inodes,
        }))
    }

    async fn cleanup(&self, req: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        namespace(&req)?;
        let (_, sn) = self.snapshotters.get(&req.into_inner().snapshotter)?;
        sn.cleanup().await.map_err(status)?;
        Ok(Response::new(()))
    }
}
