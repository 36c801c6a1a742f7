//! `containerd.services.leases.v1.Leases`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use hull_proto::containerd::services::leases::v1::{
    leases_server::Leases, AddResourceRequest, CreateRequest, CreateResponse, DeleteRequest,
    DeleteResourceRequest, Lease as Proto, ListRequest, ListResourcesRequest,
    ListResourcesResponse, ListResponse, Resource as ProtoResource,
};
use hull_proto::identifiers::LeaseId;

use super::{namespace, run, status};
use crate::filters::Filter;
use crate::metadata::gc::Collector;
use crate::metadata::leases::{Lease, Resource};
use crate::metadata::MetaDb;

/// Leases over the metadata DB.
#[derive(Debug)]
pub struct LeasesService {
    db: Arc<MetaDb>,
    gc: Arc<Collector>,
}

impl LeasesService {
    /// Serves `db`'s leases; deletes that ask for it wait for `gc`.
    pub fn new(db: Arc<MetaDb>, gc: Arc<Collector>) -> Self {
        LeasesService { db, gc }
    }
}

fn to_proto(l: Lease) -> Proto {
    Proto {
        id: l.id,
        created_at: Some(crate::timestamp(l.created_at)),
        labels: l.labels,
    }
}

fn resource(r: Option<ProtoResource>) -> Result<Resource, Status> {
    let r = r.unwrap_or_default();
    Resource::parse(&r.r#type, &r.id).map_err(status)
}

#[tonic::async_trait]
impl Leases for LeasesService {
    async fn create(
        &self,
        req: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let db = self.db.clone();
        let lease = run(move || db.create_lease(&ns, &req.id, req.labels)).await?;
        self.db.flush().await.map_err(status)?;
        Ok(Response::new(CreateResponse {
            lease: Some(to_proto(lease)),
        }))
    }

    async fn delete(&self, req: Request<DeleteRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let db = self.db.clone();
        run(move || db.delete_lease(&ns, &req.id)).await?;
        self.db.flush().await.map_err(status)?;
        super::collect_after_delete(&self.gc, req.sync).await?;
        Ok(Response::new(()))
    }

    async fn list(&self, req: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_err(status)?;
        let db = self.db.clone();
        let leases = run(move || db.list_leases(&ns, &filter)).await?;
        Ok(Response::new(ListResponse {
            leases: leases.into_iter().map(to_proto).collect(),
        }))
    }

    async fn add_resource(&self, req: Request<AddResourceRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let id = LeaseId::new(req.id).map_err(status)?;
        let res = resource(req.resource)?;
        let db = self.db.clone();
        run(move || db.add_lease_resource(&ns, &id, &res)).await?;
        self.db.flush().await.map_err(status)?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        req: Request<DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let res = resource(req.resource)?;
        let db = self.db.clone();
        run(move || db.delete_lease_resource(&ns, &req.id, &res)).await?;
        self.db.flush().await.map_err(status)?;
        self.db.note_deletion();
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        req: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().id;
        let db = self.db.clone();
        let res = run(move || db.list_lease_resources(&ns, &id)).await?;
        Ok(Response::new(ListResourcesResponse {
            resources: res
                .into_iter()
                .map(|r| ProtoResource {
                    id: r.id,
                    r#type: r.kind,
                })
                .collect(),
        }))
    }
}
