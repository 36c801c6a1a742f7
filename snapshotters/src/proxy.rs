//! [`ProxySnapshotter`]: a snapshotter served by another process over
//! containerd's snapshots gRPC API (containerd's `[proxy_plugins]`).

use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

use hull_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use hull_proto::containerd::services::snapshots::v1::{
    CleanupRequest, CommitSnapshotRequest, ListSnapshotsRequest, MountsRequest,
    PrepareSnapshotRequest, RemoveSnapshotRequest, StatSnapshotRequest, UpdateSnapshotRequest,
    UsageRequest, ViewSnapshotRequest,
};
use hull_proto::errdefs::Kind as ErrKind;

use crate::server::{info_from_proto, info_to_proto};
use crate::{Info, Kind, Labels, Mount, Result, SnapshotError, Snapshotter, Usage};

/// A snapshotter in another process, reached on a unix socket.
#[derive(Debug, Clone)]
pub struct ProxySnapshotter {
    name: String,
    client: SnapshotsClient<Channel>,
}

impl ProxySnapshotter {
    /// A proxy named `name` for the server on `socket`. Connects lazily, so
    /// that hulld starts while the server is still coming up.
    ///
    /// # Errors
    /// Never in practice; the endpoint is fixed.
    pub fn new(name: &str, socket: impl Into<PathBuf>) -> Result<ProxySnapshotter> {
        let socket = socket.into();
        let channel = Endpoint::from_static("http://[::1]:1").connect_with_connector_lazy(
            tower::service_fn(move |_| {
                let s = socket.clone();
                async move { tokio::net::UnixStream::connect(s).await.map(TokioIo::new) }
            }),
        );
        Ok(ProxySnapshotter {
            name: name.to_owned(),
            client: SnapshotsClient::new(channel),
        })
    }

    fn err(&self, s: tonic::Status) -> SnapshotError {
        match s.code() {
            // The transport failed: the remote is not there.
            tonic::Code::Unavailable | tonic::Code::Unknown
                if s.message().contains("transport") =>
            {
                SnapshotError::Unavailable {
                    name: self.name.clone(),
                    source: Box::new(s),
                }
            }
            code => SnapshotError::Remote {
                kind: ErrKind::from_code(code as i32),
                message: s.message().to_owned(),
            },
        }
    }
}

impl ProxySnapshotter {
    /// Prepare (`Active`) or view (`View`) on the remote.
    async fn create(
        &self,
        key: &str,
        parent: &str,
        labels: Labels,
        kind: Kind,
    ) -> Result<Vec<Mount>> {
        let (snapshotter, key, parent) = (self.name.clone(), key.to_owned(), parent.to_owned());
        let mut c = self.client.clone();
        let mounts = match kind {
            Kind::View => c
                .view(ViewSnapshotRequest {
                    snapshotter,
                    key,
                    parent,
                    labels,
                })
                .await
                .map(|r| r.into_inner().mounts),
            _ => c
                .prepare(PrepareSnapshotRequest {
                    snapshotter,
                    key,
                    parent,
                    labels,
                })
                .await
                .map(|r| r.into_inner().mounts),
        }
        .map_err(|s| self.err(s))?;
        Ok(mounts.into_iter().map(Mount::from).collect())
    }
}

#[tonic::async_trait]
impl Snapshotter for ProxySnapshotter {
    async fn stat(&self, key: &str) -> Result<Info> {
        let r = self
            .client
            .clone()
            .stat(StatSnapshotRequest {
                snapshotter: self.name.clone(),
                key: key.to_owned(),
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(info_from_proto(r.into_inner().info.unwrap_or_default()))
    }

    async fn update(&self, info: Info, paths: Vec<String>) -> Result<Info> {
        let r = self
            .client
            .clone()
            .update(UpdateSnapshotRequest {
                snapshotter: self.name.clone(),
                info: Some(info_to_proto(info)),
                update_mask: Some(prost_types::FieldMask { paths }),
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(info_from_proto(r.into_inner().info.unwrap_or_default()))
    }

    async fn usage(&self, key: &str) -> Result<Usage> {
        let r = self
            .client
            .clone()
            .usage(UsageRequest {
                snapshotter: self.name.clone(),
                key: key.to_owned(),
            })
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        Ok(Usage {
            size: r.size,
            inodes: r.inodes,
        })
    }

    async fn mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let r = self
            .client
            .clone()
            .mounts(MountsRequest {
                snapshotter: self.name.clone(),
                key: key.to_owned(),
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(r.into_inner().mounts.into_iter().map(Mount::from).collect())
    }

    async fn prepare(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, parent, labels, Kind::Active).await
    }

    async fn view(&self, key: &str, parent: &str, labels: Labels) -> Result<Vec<Mount>> {
        self.create(key, parent, labels, Kind::View).await
    }

    async fn commit(&self, name: &str, key: &str, labels: Labels) -> Result<()> {
        self.client
            .clone()
            .commit(CommitSnapshotRequest {
                snapshotter: self.name.clone(),
                name: name.to_owned(),
                key: key.to_owned(),
                labels,
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(())
    }

    async fn remove(&self, key: &str) -> Result<()> {
        self.client
            .clone()
            .remove(RemoveSnapshotRequest {
                snapshotter: self.name.clone(),
                key: key.to_owned(),
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(())
    }

    async fn walk(&self) -> Result<Vec<Info>> {
        let mut s = self
            .client
            .clone()
            .list(ListSnapshotsRequest {
                snapshotter: self.name.clone(),
                filters: Vec::new(),
            })
            .await
            .map_err(|s| self.err(s))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(m) = s.message().await.map_err(|e| self.err(e))? {
            out.extend(m.info.into_iter().map(info_from_proto));
        }
        Ok(out)
    }

    async fn cleanup(&self) -> Result<()> {
        self.client
            .clone()
            .cleanup(CleanupRequest {
                snapshotter: self.name.clone(),
            })
            .await
            .map_err(|s| self.err(s))?;
        Ok(())
    }
}
