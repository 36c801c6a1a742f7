//! `containerd.services.transfer.v1.Transfer`: images between registries,
//! the image store and archive streams, with progress on a stream the
//! client opened.
//!
//! Supported pairs: registry → image store (pull), image store →
//! registry (push), image store → image store (tag), import stream →
//! image store (load), image store → export stream (save). The others answer
//! Unimplemented naming the pair.

use std::sync::Arc;

use prost::{Message as _, Name as _};
use prost_types::Any;
use tonic::{Request, Response, Status};

use hull_proto::containerd::services::images::v1::{
    images_server::Images, GetImageRequest, Image as ProtoImage,
};
use hull_proto::containerd::services::transfer::v1::{transfer_server::Transfer, TransferRequest};
use hull_proto::containerd::types::transfer::{
    AuthRequest, AuthResponse, AuthType, ImageExportStream, ImageImportStream, ImageStore,
    OciRegistry, Progress, RegistryResolver,
};
use hull_proto::containerd::types::Platform as ProtoPlatform;
use hull_proto::errdefs::{self, Kind};
use hull_proto::typeurl;

use super::images::ImagesService;
use super::streaming::{receive_data, send_data, type_name, StreamEnds, Streams};
use super::{namespace, status};
use crate::distribution::archive::{ExportOptions, ImportOptions};
use crate::distribution::pull::{self, req, PullRequest, Puller};
use crate::distribution::push::PushRequest;
use crate::distribution::registry::ResolveOptions;

/// Serves transfers through the puller and the image store.
#[derive(Debug)]
pub struct TransferService {
    puller: Arc<Puller>,
    images: Arc<ImagesService>,
    streams: Arc<Streams>,
}

impl TransferService {
    /// Pulls through `puller`, tags through `images`, reports on `streams`.
    pub fn new(puller: Arc<Puller>, images: Arc<ImagesService>, streams: Arc<Streams>) -> Self {
        TransferService {
            puller,
            images,
            streams,
        }
    }
}

/// The message an Any carries, when it is an `M`.
fn unpack<M: prost::Message + prost::Name + Default>(any: &Any) -> Result<Option<M>, Status> {
    if type_name(any) != M::full_name() {
        return Ok(None);
    }
    M::decode(any.value.as_slice())
        .map(Some)
        .map_err(|e| errdefs::status(Kind::InvalidArgument, format!("{}: {e}", M::full_name())))
}

/// A wire platform as oci-spec's.
fn platform(p: &ProtoPlatform) -> Result<hull_oci::oci_spec::image::Platform, Status> {
    let mut text = format!("{}/{}", p.os, p.architecture);
    if !p.variant.is_empty() {
        text.push('/');
        text.push_str(&p.variant);
    }
    hull_oci::platform::parse(&text)
        .map_err(|e| errdefs::status(Kind::InvalidArgument, format!("platform {text:?}: {e}")))
}

/// Wire platforms as oci-spec's.
fn platforms(list: &[ProtoPlatform]) -> Result<Vec<hull_oci::oci_spec::image::Platform>, Status> {
    list.iter().map(platform).collect()
}

#[tonic::async_trait]
impl Transfer for TransferService {
    async fn transfer(&self, req: Request<TransferRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let (Some(source), Some(dest)) = (req.source, req.destination) else {
            return Err(errdefs::status(
                Kind::InvalidArgument,
                "a transfer needs a source and a destination",
            ));
        };
        let progress_stream = req
            .options
            .map(|o| o.progress_stream)
            .filter(|s| !s.is_empty())
            .map(|id| self.streams.get(&ns, &id))
            .transpose()?;
        if let (Some(from), Some(to)) = (
            unpack::<OciRegistry>(&source)?,
            unpack::<ImageStore>(&dest)?,
        ) {
            let resolver = from.resolver.unwrap_or_default();
            let credentials = self.credentials(&ns, &resolver, &from.reference).await?;
            let mut platforms = platforms(&to.platforms)?;
            let unpack = to.unpacks.first().map(|u| u.snapshotter.clone());
            if let Some(u) = to.unpacks.first().and_then(|u| u.platform.as_ref()) {
                if platforms.is_empty() {
                    platforms.push(platform(u)?);
                }
            }
            let request = PullRequest {
                reference: from.reference.clone(),
                name: to.name.clone(),
                labels: to.labels.clone(),
                platforms,
                all_platforms: to.all_metadata,
                unpack,
                resolve: ResolveOptions {
                    credentials,
                    ..resolve_options(resolver)
                },
            };
            self.puller
                .pull(&ns, request, sink(progress_stream))
                .await
                .map_err(status)?;
            return Ok(Response::new(()));
        }
        if let (Some(from), Some(to)) = (
            unpack::<ImageStore>(&source)?,
            unpack::<OciRegistry>(&dest)?,
        ) {
            let resolver = to.resolver.unwrap_or_default();
            let target = if to.reference.is_empty() {
                &from.name
            } else {
                &to.reference
            };
            let credentials = self.credentials(&ns, &resolver, target).await?;
            let platforms = platforms(&from.platforms)?;
            let request = PushRequest {
                image: from.name.clone(),
                reference: to.reference.clone(),
                platforms,
                resolve: ResolveOptions {
                    credentials,
                    ..resolve_options(resolver)
                },
            };
            self.puller
                .push(&ns, request, sink(progress_stream))
                .await
                .map_err(status)?;
            return Ok(Response::new(()));
        }
        if let (Some(from), Some(to)) = (
            unpack::<ImageImportStream>(&source)?,
            unpack::<ImageStore>(&dest)?,
        ) {
            let ends = self.streams.take(&ns, &from.stream)?;
            let reader = receive_data(ends);
            let options = ImportOptions {
                labels: to.labels.clone(),
                unpack: to.unpacks.first().map(|u| u.snapshotter.clone()),
                base_name: to.name.clone(),
            };
            self.puller
                .import(&ns, Box::new(reader), options, sink(progress_stream))
                .await
                .map_err(status)?;
            return Ok(Response::new(()));
        }
        if let (Some(from), Some(to)) = (
            unpack::<ImageStore>(&source)?,
            unpack::<ImageExportStream>(&dest)?,
        ) {
            let ends = self.streams.take(&ns, &to.stream)?;
            let platforms = platforms(&to.platforms)?;
            let mut images = from.export_images.clone();
            if images.is_empty() && !from.name.is_empty() {
                images.push(from.name.clone());
            }
            if images.is_empty() {
                return Err(errdefs::status(Kind::InvalidArgument, "no image to export"));
            }
            let options = ExportOptions {
                images,
                platforms: if to.all_platforms {
                    Vec::new()
                } else {
                    platforms
                },
                skip_docker_manifest: to.skip_docker_manifest,
            };
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let sending = tokio::spawn(send_data(ends, rx));
            let exported = self.puller.export(&ns, options, tx).await;
            // All of it reaches the client (or it went away) before the
            // answer does.
            let _ = sending.await;
            exported.map_err(status)?;
            return Ok(Response::new(()));
        }
        if let (Some(from), Some(to)) =
            (unpack::<ImageStore>(&source)?, unpack::<ImageStore>(&dest)?)
        {
            self.tag(&ns, &from.name, to).await?;
            return Ok(Response::new(()));
        }
        Err(errdefs::status(
            Kind::NotImplemented,
            format!(
                "transfer from {} to {} is not supported",
                source.type_url, dest.type_url
            ),
        ))
    }
}

impl TransferService {
    /// The client's credentials for `reference`, when its resolver names
    /// an auth stream.
    async fn credentials(
        &self,
        ns: &hull_proto::identifiers::Namespace,
        resolver: &RegistryResolver,
        reference: &str,
    ) -> Result<Option<crate::distribution::hosts::Credentials>, Status> {
        if resolver.auth_stream.is_empty() {
            return Ok(None);
        }
        let ends = self.streams.take(ns, &resolver.auth_stream)?;
        Ok(ask_credentials(&ends, reference).await)
    }

    /// Names `to.name` the image `from` names.
    async fn tag(
        &self,
        ns: &hull_proto::identifiers::Namespace,
        from: &str,
        to: ImageStore,
    ) -> Result<(), Status> {
        let found = self
            .images
            .get(req(
                ns,
                None,
                GetImageRequest {
                    name: from.to_owned(),
                },
            ))
            .await?
            .into_inner()
            .image
            .unwrap_or_default();
        let image = ProtoImage {
            name: to.name.clone(),
            labels: if to.labels.is_empty() {
                found.labels.clone()
            } else {
                to.labels.clone()
            },
            target: found.target.clone(),
            created_at: None,
            updated_at: None,
        };
        self.puller.save_image(ns, image).await.map_err(status)?;
        Ok(())
    }
}

/// Asks the client, on its auth stream, for credentials for `reference`'s
/// registry (containerd's callback: an AuthRequest out, an AuthResponse
/// back). None when the client has none or does not answer in time.
async fn ask_credentials(
    ends: &StreamEnds,
    reference: &str,
) -> Option<crate::distribution::hosts::Credentials> {
    let r = crate::distribution::reference::ImageRef::parse(reference).ok()?;
    let ask = AuthRequest {
        host: r.host().to_owned(),
        reference: r.repository().to_owned(),
        wwwauthenticate: Vec::new(),
    };
    if !ends.send(typeurl::pack(&ask)).await {
        return None;
    }
    let answer = tokio::time::timeout(std::time::Duration::from_secs(30), ends.recv())
        .await
        .ok()??;
    if type_name(&answer) != AuthResponse::full_name() {
        return None;
    }
    let a = AuthResponse::decode(answer.value.as_slice()).ok()?;
    (a.auth_type == AuthType::Credentials as i32).then_some(
        crate::distribution::hosts::Credentials {
            username: a.username,
            password: a.secret,
        },
    )
}

/// A request's resolver settings as the registry client takes them.
fn resolve_options(resolver: RegistryResolver) -> ResolveOptions {
    ResolveOptions {
        credentials: None,
        headers: resolver.headers,
        host_dir: (!resolver.host_dir.is_empty())
            .then(|| std::path::PathBuf::from(&resolver.host_dir)),
        default_scheme: (!resolver.default_scheme.is_empty()).then_some(resolver.default_scheme),
    }
}

/// Progress events onto the client's stream, in order, without holding up
/// the transfer.
fn sink(stream: Option<Arc<StreamEnds>>) -> pull::ProgressSink {
    let Some(ends) = stream else {
        return Arc::new(|_| {});
    };
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<pull::Progress>();
    tokio::spawn(async move {
        while let Some(p) = rx.recv().await {
            let msg = Progress {
                event: p.event,
                name: p.name,
                parents: Vec::new(),
                progress: p.progress,
                total: p.total,
                desc: p.desc,
            };
            if !ends.send(typeurl::pack(&msg)).await {
                break;
            }
        }
    });
    Arc::new(move |p| {
        let _ = tx.send(p);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_payloads_by_bare_or_prefixed_names() {
        let reg = OciRegistry {
            reference: "busybox".into(),
            resolver: None,
        };
        let mut any = typeurl::pack(&reg);
        assert_eq!(any.type_url, "containerd.types.transfer.OCIRegistry");
        assert_eq!(
            unpack::<OciRegistry>(&any).unwrap().unwrap().reference,
            "busybox"
        );
        any.type_url = format!("type.googleapis.com/{}", any.type_url);
        assert!(unpack::<OciRegistry>(&any).unwrap().is_some());
        assert!(unpack::<ImageStore>(&any).unwrap().is_none());
        any.value = vec![0xff];
        assert!(unpack::<OciRegistry>(&any).is_err());
        let _ = any.encode_to_vec();
    }
}
