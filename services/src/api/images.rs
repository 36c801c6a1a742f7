//! `containerd.services.images.v1.Images`.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use hull_proto::containerd::services::images::v1::{
    images_server::Images, CreateImageRequest, CreateImageResponse, DeleteImageRequest,
    GetImageRequest, GetImageResponse, Image as Proto, ImageCreate, ImageDelete, ImageUpdate,
    ListImagesRequest, ListImagesResponse, UpdateImageRequest, UpdateImageResponse,
};
use hull_proto::containerd::types::Descriptor as ProtoDescriptor;
use hull_proto::errdefs::{self, Kind};

use super::{namespace, paths, run, status};
use crate::events::Exchange;
use crate::filters::Filter;
use crate::metadata::gc::Collector;
use crate::metadata::images::{Image, ImagePatch};
use crate::metadata::{Descriptor, MetaDb};

/// Images over the metadata DB.
#[derive(Debug)]
pub struct ImagesService {
    db: Arc<MetaDb>,
    events: Exchange,
    gc: Arc<Collector>,
}

impl ImagesService {
    /// Serves `db`'s images, publishing changes on `events`; deletes that
    /// ask for it wait for `gc`.
    pub fn new(db: Arc<MetaDb>, events: Exchange, gc: Arc<Collector>) -> Self {
        ImagesService { db, events, gc }
    }
}

/// Wire descriptor from a stored one.
pub(crate) fn descriptor_to_proto(d: &Descriptor) -> ProtoDescriptor {
    ProtoDescriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.to_string(),
        size: d.size,
        annotations: d.annotations.clone(),
    }
}

/// Stored descriptor from a wire one.
///
/// # Errors
/// InvalidArgument for a missing or malformed digest.
pub(crate) fn descriptor_from_proto(
    d: Option<ProtoDescriptor>,
    field: &str,
) -> Result<Descriptor, Status> {
    let d = d.unwrap_or_default();
    let digest = d.digest.parse().map_err(|e| {
        errdefs::status(
            Kind::InvalidArgument,
            format!(
                "{field}.Digest {:?} invalid: {}",
                d.digest,
                errdefs::message(&e)
            ),
        )
    })?;
    Ok(Descriptor {
        media_type: d.media_type,
        digest,
        size: d.size,
        annotations: d.annotations,
    })
}

fn to_proto(i: Image) -> Proto {
    Proto {
        target: Some(descriptor_to_proto(&i.target)),
        name: i.name,
        labels: i.labels,
        created_at: Some(crate::timestamp(i.created_at)),
        updated_at: Some(crate::timestamp(i.updated_at)),
    }
}

fn from_proto(p: Option<Proto>) -> Result<Image, Status> {
    let p = p.unwrap_or_default();
    if p.name.is_empty() {
        return Err(errdefs::status(
            Kind::InvalidArgument,
            "image name must not be empty",
        ));
    }
    Ok(Image {
        target: descriptor_from_proto(p.target, "Target")?,
        name: p.name,
        labels: p.labels,
        created_at: 0,
        updated_at: 0,
    })
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn get(
        &self,
        req: Request<GetImageRequest>,
    ) -> Result<Response<GetImageResponse>, Status> {
        let ns = namespace(&req)?;
        let name = req.into_inner().name;
        let db = self.db.clone();
        let image = run(move || db.get_image(&ns, &name)).await?;
        Ok(Response::new(GetImageResponse {
            image: Some(to_proto(image)),
        }))
    }

    async fn list(
        &self,
        req: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_err(status)?;
        let db = self.db.clone();
        let images = run(move || db.list_images(&ns, &filter)).await?;
        Ok(Response::new(ListImagesResponse {
            images: images.into_iter().map(to_proto).collect(),
        }))
    }

    async fn create(
        &self,
        req: Request<CreateImageRequest>,
    ) -> Result<Response<CreateImageResponse>, Status> {
        let ns = namespace(&req)?;
        let image = from_proto(req.into_inner().image)?;
        let db = self.db.clone();
        let n = ns.clone();
        let created = run(move || db.create_image(&n, image)).await?;
        self.db.flush().await.map_err(status)?;
        self.events.publish(
            &ns,
            "/images/create",
            &ImageCreate {
                name: created.name.clone(),
                labels: created.labels.clone(),
            },
        );
        Ok(Response::new(CreateImageResponse {
            image: Some(to_proto(created)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateImageRequest>,
    ) -> Result<Response<UpdateImageResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let paths = paths(req.update_mask);
        let proto = req.image.unwrap_or_default();
        let uses_target = paths.is_empty() || paths.iter().any(|p| p == "target");
        let annotations = proto
            .target
            .as_ref()
            .map(|t| t.annotations.clone())
            .unwrap_or_default();
        // A labels-only update may carry no target at all.
        let target = if uses_target {
            Some(descriptor_from_proto(proto.target, "Target")?)
        } else {
            None
        };
        let image = ImagePatch {
            name: proto.name,
            labels: proto.labels,
            target,
            annotations,
        };
        let db = self.db.clone();
        let n = ns.clone();
        let updated = run(move || db.update_image(&n, &image, &paths)).await?;
        self.db.flush().await.map_err(status)?;
        self.events.publish(
            &ns,
            "/images/update",
            &ImageUpdate {
                name: updated.name.clone(),
                labels: updated.labels.clone(),
            },
        );
        Ok(Response::new(UpdateImageResponse {
            image: Some(to_proto(updated)),
        }))
    }

    async fn delete(&self, req: Request<DeleteImageRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let db = self.db.clone();
        let (n, name) = (ns.clone(), req.name.clone());
        run(move || db.delete_image(&n, &name)).await?;
        self.db.flush().await.map_err(status)?;
        self.events
            .publish(&ns, "/images/delete", &ImageDelete { name: req.name });
        super::collect_after_delete(&self.gc, req.sync).await?;
        Ok(Response::new(()))
    }
}
