//! `containerd.services.containers.v1.Containers`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use hull_proto::containerd::events::{
    container_create, ContainerCreate, ContainerDelete, ContainerUpdate,
};
use hull_proto::containerd::services::containers::v1::{
    container::Runtime, containers_server::Containers, Container as Proto, CreateContainerRequest,
    CreateContainerResponse, DeleteContainerRequest, GetContainerRequest, GetContainerResponse,
    ListContainerMessage, ListContainersRequest, ListContainersResponse, UpdateContainerRequest,
    UpdateContainerResponse,
};

use super::{namespace, paths, run, status};
use crate::events::Exchange;
use crate::filters::Filter;
use crate::metadata::containers::Container;
use crate::metadata::MetaDb;

type BoxStream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

/// Containers over the metadata DB.
#[derive(Debug)]
pub struct ContainersService {
    db: Arc<MetaDb>,
    events: Exchange,
}

impl ContainersService {
    /// Serves `db`'s containers, publishing changes on `events`.
    pub fn new(db: Arc<MetaDb>, events: Exchange) -> Self {
        ContainersService { db, events }
    }
}

/// Wire form of a stored container.
pub(crate) fn to_proto(c: Container) -> Proto {
    Proto {
        id: c.id,
        labels: c.labels,
        image: c.image,
        runtime: Some(Runtime {
            name: c.runtime_name,
            options: c.runtime_options,
        }),
        spec: c.spec,
        snapshotter: c.snapshotter,
        snapshot_key: c.snapshot_key,
        created_at: Some(crate::timestamp(c.created_at)),
        updated_at: Some(crate::timestamp(c.updated_at)),
        extensions: c.extensions,
    }
}

fn from_proto(p: Option<Proto>) -> Container {
    let p = p.unwrap_or_default();
    let runtime = p.runtime.unwrap_or_default();
    Container {
        id: p.id,
        labels: p.labels,
        image: p.image,
        runtime_name: runtime.name,
        runtime_options: runtime.options,
        spec: p.spec,
        snapshotter: p.snapshotter,
        snapshot_key: p.snapshot_key,
        created_at: 0,
        updated_at: 0,
        extensions: p.extensions,
    }
}

#[tonic::async_trait]
impl Containers for ContainersService {
    async fn get(
        &self,
        req: Request<GetContainerRequest>,
    ) -> Result<Response<GetContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().id;
        let db = self.db.clone();
        let c = run(move || db.get_container(&ns, &id)).await?;
        Ok(Response::new(GetContainerResponse {
            container: Some(to_proto(c)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_err(status)?;
        let db = self.db.clone();
        let all = run(move || db.list_containers(&ns, &filter)).await?;
        Ok(Response::new(ListContainersResponse {
            containers: all.into_iter().map(to_proto).collect(),
        }))
    }

    type ListStreamStream = BoxStream<ListContainerMessage>;

    async fn list_stream(
        &self,
        req: Request<ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_err(status)?;
        let db = self.db.clone();
        let all = run(move || db.list_containers(&ns, &filter)).await?;
        let items: Vec<Result<ListContainerMessage, Status>> = all
            .into_iter()
            .map(|c| {
                Ok(ListContainerMessage {
                    container: Some(to_proto(c)),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(items))))
    }

    async fn create(
        &self,
        req: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let c = from_proto(req.into_inner().container);
        let db = self.db.clone();
        let n = ns.clone();
        let created = run(move || db.create_container(&n, c)).await?;
        self.db.flush().await.map_err(status)?;
        self.events.publish(
            &ns,
            "/containers/create",
            &ContainerCreate {
                id: created.id.clone(),
                image: created.image.clone(),
                runtime: Some(container_create::Runtime {
                    name: created.runtime_name.clone(),
                    options: created.runtime_options.clone(),
                }),
            },
        );
        Ok(Response::new(CreateContainerResponse {
            container: Some(to_proto(created)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let paths = paths(req.update_mask);
        let c = from_proto(req.container);
        let db = self.db.clone();
        let n = ns.clone();
        let updated = run(move || db.update_container(&n, &c, &paths)).await?;
        self.db.flush().await.map_err(status)?;
        self.events.publish(
            &ns,
            "/containers/update",
            &ContainerUpdate {
                id: updated.id.clone(),
                image: updated.image.clone(),
                labels: updated.labels.clone(),
                snapshot_key: updated.snapshot_key.clone(),
            },
        );
        Ok(Response::new(UpdateContainerResponse {
            container: Some(to_proto(updated)),
        }))
    }

    async fn delete(&self, req: Request<DeleteContainerRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let id = req.into_inner().id;
        let db = self.db.clone();
        let (n, i) = (ns.clone(), id.clone());
        run(move || db.delete_container(&n, &i)).await?;
        self.db.flush().await.map_err(status)?;
        self.events
            .publish(&ns, "/containers/delete", &ContainerDelete { id });
        self.db.note_deletion();
        Ok(Response::new(()))
    }
}
