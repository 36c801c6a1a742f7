//! A Rust client for hull, and for containerd: it speaks the same API.
//!
//! [`Client::connect`] dials a unix socket; each accessor returns the
//! generated tonic client for one service with the namespace (and lease, if
//! set) added to every request, as containerd's Go client does. Statuses
//! map back to [`hull_proto::errdefs::Kind`] through [`Error::kind`].
//!
//! [`oci`] (hull-oci) is the one definition of OCI documents for clients:
//! image manifests and configs, runtime specs built from them, platforms.
//!
//! Depends only on `hull-proto` and `hull-oci`.

#![warn(missing_docs)]

pub use hull_oci as oci;

pub mod docker;
pub mod transfer;

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};

use hull_proto::containerd::services::containers::v1::containers_client::ContainersClient;
use hull_proto::containerd::services::content::v1::content_client::ContentClient;
use hull_proto::containerd::services::diff::v1::diff_client::DiffClient;
use hull_proto::containerd::services::events::v1::events_client::EventsClient;
use hull_proto::containerd::services::images::v1::images_client::ImagesClient;
use hull_proto::containerd::services::introspection::v1::introspection_client::IntrospectionClient;
use hull_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use hull_proto::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use hull_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use hull_proto::containerd::services::streaming::v1::streaming_client::StreamingClient;
use hull_proto::containerd::services::tasks::v1::tasks_client::TasksClient;
use hull_proto::containerd::services::tasks::v1::{KillRequest, WaitRequest};
use hull_proto::containerd::services::transfer::v1::transfer_client::TransferClient;
use hull_proto::containerd::services::version::v1::version_client::VersionClient;
use hull_proto::errdefs::Kind;
use hull_proto::headers;

/// A client call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be dialled.
    #[error("connect {path}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The server answered with an error status.
    #[error("{}", .0.message())]
    Status(#[from] Status),
}

impl Error {
    /// The error's kind, as the server classified it.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Connect { .. } => Kind::Unavailable,
            Error::Status(s) => from_status(s),
        }
    }
}

/// The kind a status carries (containerd's `errdefs.FromGRPC`).
pub fn from_status(s: &Status) -> Kind {
    Kind::from_code(s.code() as i32)
}

/// Adds the namespace and lease headers to every request.
#[derive(Debug, Clone)]
pub struct Headers {
    namespace: Option<MetadataValue<tonic::metadata::Ascii>>,
    lease: Option<MetadataValue<tonic::metadata::Ascii>>,
}

impl tonic::service::Interceptor for Headers {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(ns) = &self.namespace {
            req.metadata_mut().insert(headers::NAMESPACE, ns.clone());
        }
        if let Some(l) = &self.lease {
            req.metadata_mut().insert(headers::LEASE, l.clone());
        }
        Ok(req)
    }
}

type Svc = InterceptedService<Channel, Headers>;

/// A connection to hulld (or containerd) in one namespace.
#[derive(Debug, Clone)]
pub struct Client {
    channel: Channel,
    headers: Headers,
}

/// Largest message the client accepts, as the server (16 MiB).
const MAX_MESSAGE_SIZE: usize = 16 << 20;

impl Client {
    /// Dials the unix socket at `path`, in namespace `default`.
    ///
    /// # Errors
    /// Unavailable when nothing answers there.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Client, Error> {
        let path = path.as_ref().to_owned();
        let p = path.clone();
        // The URI is required by the API but unused: the connector dials the socket.
        let channel = Endpoint::from_static("http://[::1]:1")
            // Room for several 1 MiB blob chunks in flight.
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(16 << 20))
            .connect_with_connector(tower::service_fn(move |_| {
                let p = p.clone();
                async move { tokio::net::UnixStream::connect(p).await.map(TokioIo::new) }
            }))
            .await
            .map_err(|source| Error::Connect { path, source })?;
        Ok(Client {
            channel,
            headers: Headers {
                namespace: Some(MetadataValue::from_static("default")),
                lease: None,
            },
        })
    }

    /// The same connection in namespace `ns` (no namespace header if empty).
    ///
    /// # Panics
    /// Never for valid identifiers; a namespace with non-ASCII bytes is sent
    /// as no namespace.
    pub fn with_namespace(&self, ns: &str) -> Client {
        let mut c = self.clone();
        c.headers.namespace = if ns.is_empty() { None } else { ns.parse().ok() };
        c
    }

    /// The same connection adding new objects to lease `id`.
    pub fn with_lease(&self, id: &str) -> Client {
        let mut c = self.clone();
        c.headers.lease = id.parse().ok();
        c
    }

    /// The underlying channel, for services this type has no accessor for.
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    fn svc(&self) -> Svc {
        InterceptedService::new(self.channel.clone(), self.headers.clone())
    }

    /// Version service.
    pub fn version(&self) -> VersionClient<Svc> {
        VersionClient::new(self.svc())
    }

    /// Namespaces service.
    pub fn namespaces(&self) -> NamespacesClient<Svc> {
        NamespacesClient::new(self.svc())
    }

    /// Content service.
    pub fn content(&self) -> ContentClient<Svc> {
        ContentClient::new(self.svc())
            .max_decoding_message_size(MAX_MESSAGE_SIZE)
            .max_encoding_message_size(MAX_MESSAGE_SIZE)
    }

    /// Images service.
    pub fn images(&self) -> ImagesClient<Svc> {
        ImagesClient::new(self.svc())
    }

    /// Leases service.
    pub fn leases(&self) -> LeasesClient<Svc> {
        LeasesClient::new(self.svc())
    }

    /// Snapshots service.
    pub fn snapshots(&self) -> SnapshotsClient<Svc> {
        SnapshotsClient::new(self.svc())
    }

    /// Diff service.
    pub fn diff(&self) -> DiffClient<Svc> {
        DiffClient::new(self.svc())
    }

    /// Events service.
    pub fn events(&self) -> EventsClient<Svc> {
        EventsClient::new(self.svc())
    }

    /// Introspection service.
    pub fn introspection(&self) -> IntrospectionClient<Svc> {
        IntrospectionClient::new(self.svc())
    }

    /// Containers service.
    pub fn containers(&self) -> ContainersClient<Svc> {
        ContainersClient::new(self.svc())
    }

    /// Tasks service.
    pub fn tasks(&self) -> TasksClient<Svc> {
        TasksClient::new(self.svc())
    }

    /// Transfer service (pull, push, import, export, tag).
    pub fn transfer(&self) -> TransferClient<Svc> {
        TransferClient::new(self.svc())
    }

    /// Streaming service (the streams transfers refer to).
    pub fn streaming(&self) -> StreamingClient<Svc> {
        StreamingClient::new(self.svc())
    }

    /// Stops a task the way `docker stop` does: SIGTERM, then SIGKILL if it
    /// has not exited after `timeout`. Returns its exit status.
    ///
    /// # Errors
    /// NotFound for an unknown task; NotFound from the kill when it had
    /// already exited is not an error (its status is returned).
    pub async fn stop_task(&self, id: &str, timeout: std::time::Duration) -> Result<u32, Error> {
        let kill = |signal: u32| {
            let mut tasks = self.tasks();
            let req = KillRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
                signal,
                all: false,
            };
            async move {
                match tasks.kill(req).await {
                    Ok(_) => Ok(()),
                    // Exited in the meantime: the wait below reports it.
                    Err(s) if from_status(&s) == Kind::NotFound => Ok(()),
                    Err(s) => Err(Error::Status(s)),
                }
            }
        };
        let wait = || {
            let mut tasks = self.tasks();
            let req = WaitRequest {
                container_id: id.to_owned(),
                exec_id: String::new(),
            };
            async move { tasks.wait(req).await.map(|r| r.into_inner().exit_status) }
        };
        // Fails fast with NotFound for an unknown task.
        kill(SIGTERM).await?;
        if let Ok(done) = tokio::time::timeout(timeout, wait()).await {
            return Ok(done?);
        }
        kill(SIGKILL).await?;
        Ok(wait().await?)
    }
}

/// Signal numbers on Linux.
const SIGTERM: u32 = 15;
const SIGKILL: u32 = 9;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_back_to_kinds() {
        assert_eq!(from_status(&Status::not_found("x")), Kind::NotFound);
        assert_eq!(from_status(&Status::unavailable("x")), Kind::Unavailable);
        assert_eq!(
            from_status(&Status::failed_precondition("x")),
            Kind::FailedPrecondition
        );
        assert_eq!(
            Error::Status(Status::already_exists("x")).kind(),
            Kind::AlreadyExists
        );
    }
}
