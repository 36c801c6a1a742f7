//! `containerd.services.namespaces.v1.Namespaces`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use hull_proto::containerd::events::{NamespaceCreate, NamespaceDelete, NamespaceUpdate};
use hull_proto::containerd::services::namespaces::v1::{
    namespaces_server::Namespaces, CreateNamespaceRequest, CreateNamespaceResponse,
    DeleteNamespaceRequest, GetNamespaceRequest, GetNamespaceResponse, ListNamespacesRequest,
    ListNamespacesResponse, Namespace as Proto, UpdateNamespaceRequest, UpdateNamespaceResponse,
};
use hull_proto::identifiers::Namespace;

use super::{paths, run, status};
use crate::events::Exchange;
use crate::metadata::namespaces::NamespaceInfo;
use crate::metadata::MetaDb;

/// Namespaces over the metadata DB.
#[derive(Debug)]
pub struct NamespacesService {
    db: Arc<MetaDb>,
    events: Exchange,
}

impl NamespacesService {
    /// Serves `db`'s namespaces, publishing changes on `events`.
    pub fn new(db: Arc<MetaDb>, events: Exchange) -> Self {
        NamespacesService { db, events }
    }
}

fn to_proto(info: NamespaceInfo) -> Proto {
    Proto {
        name: info.name.to_string(),
        labels: info.labels,
    }
}

fn from_proto(p: Option<Proto>) -> Result<NamespaceInfo, Status> {
    let p = p.unwrap_or_default();
    Ok(NamespaceInfo {
        name: Namespace::new(p.name).map_err(status)?,
        labels: p.labels,
    })
}

/// The namespace namespace events are published in: the caller's, as
/// containerd does (ctr always sends one), or the object's own when the
/// caller sent none.
fn origin<T>(req: &Request<T>) -> Option<Namespace> {
    super::namespace(req).ok()
}

#[tonic::async_trait]
impl Namespaces for NamespacesService {
    async fn get(
        &self,
        req: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        let name = Namespace::new(req.into_inner().name).map_err(status)?;
        let db = self.db.clone();
        let info = run(move || db.get_namespace(&name)).await?;
        Ok(Response::new(GetNamespaceResponse {
            namespace: Some(to_proto(info)),
        }))
    }

    async fn list(
        &self,
        _: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let db = self.db.clone();
        let all = run(move || db.list_namespaces()).await?;
        Ok(Response::new(ListNamespacesResponse {
            namespaces: all.into_iter().map(to_proto).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<CreateNamespaceRequest>,
    ) -> Result<Response<CreateNamespaceResponse>, Status> {
        let origin = origin(&req);
        let info = from_proto(req.into_inner().namespace)?;
        let db = self.db.clone();
        let i = info.clone();
        run(move || db.create_namespace(&i)).await?;
        self.db.flush().await.map_err(status)?;
        self.events.publish(
            origin.as_ref().unwrap_or(&info.name),
            "/namespaces/create",
            &NamespaceCreate {
                name: info.name.to_string(),
                labels: info.labels.clone(),
            },
        );
        Ok(Response::new(CreateNamespaceResponse {
            namespace: Some(to_proto(info)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let origin = origin(&req);
        let req = req.into_inner();
        let info = from_proto(req.namespace)?;
        let paths = paths(req.update_mask);
        let db = self.db.clone();
        let updated = run(move || db.update_namespace(&info, &paths)).await?;
        self.db.flush().await.map_err(status)?;
        self.events.publish(
            origin.as_ref().unwrap_or(&updated.name),
            "/namespaces/update",
            &NamespaceUpdate {
                name: updated.name.to_string(),
                labels: updated.labels.clone(),
            },
        );
        Ok(Response::new(UpdateNamespaceResponse {
            namespace: Some(to_proto(updated)),
        }))
    }

    async fn delete(&self, req: Request<DeleteNamespaceRequest>) -> Result<Response<()>, Status> {
        let origin = origin(&req);
        let name = Namespace::new(req.into_inner().name).map_err(status)?;
        let db = self.db.clone();
        let n = name.clone();
        run(move || db.delete_namespace(&n)).await?;
        self.db.flush().await.map_err(status)?;
        self.events.publish(
            origin.as_ref().unwrap_or(&name),
            "/namespaces/delete",
            &NamespaceDelete {
                name: name.to_string(),
            },
        );
        self.db.note_deletion();
        Ok(Response::new(()))
    }
}
