//! [`ProxyContentStore`]: a content store served by another process over
//! containerd's content gRPC API, in one namespace, as containerd's
//! remote content store (`content/proxy`) reaches one.

use std::collections::BTreeMap;
use std::path::PathBuf;

use hyper_util::rt::TokioIo;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Streaming};

use hull_proto::containerd::services::content::v1::content_client::ContentClient;
use hull_proto::containerd::services::content::v1::{
    AbortRequest, DeleteContentRequest, Info as ProtoInfo, InfoRequest, ListContentRequest,
    ListStatusesRequest, ReadContentRequest, Status as ProtoStatus, StatusRequest, UpdateRequest,
    WriteAction, WriteContentRequest, WriteContentResponse,
};
use hull_proto::digest::Digest;
use hull_proto::errdefs::Kind;
use hull_proto::headers;

use super::{ContentError, ContentStore, ContentWriter, Info, IngestStatus, Result};

/// The content service of another process, on a unix socket.
#[derive(Debug, Clone)]
pub struct ProxyContentStore {
    client: ContentClient<Channel>,
    namespace: String,
    lease: Option<String>,
}

fn nanos(t: Option<prost_types::Timestamp>) -> i64 {
    t.map_or(0, |t| {
        t.seconds
            .saturating_mul(1_000_000_000)
            .saturating_add(i64::from(t.nanos))
    })
}

fn parse_digest(s: &str) -> Result<Digest> {
    s.parse().map_err(|_| ContentError::Remote {
        kind: Kind::Unknown,
        message: format!("the content service sent digest {s:?}"),
    })
}

fn to_info(i: ProtoInfo) -> Result<Info> {
    Ok(Info {
        digest: parse_digest(&i.digest)?,
        size: i.size,
        created_at: nanos(i.created_at),
        updated_at: nanos(i.updated_at),
        labels: i.labels,
    })
}

fn to_status(s: ProtoStatus) -> IngestStatus {
    IngestStatus {
        ref_key: s.r#ref,
        offset: u64::try_from(s.offset).unwrap_or(0),
        total: s.total,
        expected: s.expected.parse().ok(),
        started_at: nanos(s.started_at),
        updated_at: nanos(s.updated_at),
    }
}

fn err(s: tonic::Status) -> ContentError {
    match s.code() {
        // The transport failed: the remote is not there.
        tonic::Code::Unavailable | tonic::Code::Unknown if s.message().contains("transport") => {
            ContentError::Unreachable(s)
        }
        code => ContentError::Remote {
            kind: Kind::from_code(code as i32),
            message: s.message().to_owned(),
        },
    }
}

impl ProxyContentStore {
    /// The content service on `socket`, in `namespace`. Connects lazily.
    pub fn new(socket: impl Into<PathBuf>, namespace: &str) -> ProxyContentStore {
        let socket = socket.into();
        let channel = Endpoint::from_static("http://[::1]:1")
            // Room for several 1 MiB chunks in flight, as the client has.
            .initial_stream_window_size(Some(8 << 20))
            .initial_connection_window_size(Some(16 << 20))
            .connect_with_connector_lazy(tower::service_fn(move |_| {
                let s = socket.clone();
                async move { tokio::net::UnixStream::connect(s).await.map(TokioIo::new) }
            }));
        ProxyContentStore {
            client: ContentClient::new(channel),
            namespace: namespace.to_owned(),
            lease: None,
        }
    }

    /// The same store, adding what it writes to lease `id`.
    pub fn with_lease(mut self, id: &str) -> ProxyContentStore {
        self.lease = Some(id.to_owned());
        self
    }

    fn request<T>(&self, msg: T) -> Request<T> {
        let mut req = Request::new(msg);
        if let Ok(v) = self.namespace.parse() {
            req.metadata_mut().insert(headers::NAMESPACE, v);
        }
        if let Some(v) = self.lease.as_deref().and_then(|l| l.parse().ok()) {
            req.metadata_mut().insert(headers::LEASE, v);
        }
        req
    }
}

#[tonic::async_trait]
impl ContentStore for ProxyContentStore {
    async fn info(&self, digest: &Digest) -> Result<Info> {
        let resp = self
            .client
            .clone()
            .info(self.request(InfoRequest {
                digest: digest.to_string(),
            }))
            .await
            .map_err(err)?;
        to_info(resp.into_inner().info.unwrap_or_default())
    }

    async fn update(&self, info: Info, paths: Vec<String>) -> Result<Info> {
        let resp = self
            .client
            .clone()
            .update(self.request(UpdateRequest {
                info: Some(ProtoInfo {
                    digest: info.digest.to_string(),
                    size: info.size,
                    created_at: None,
                    updated_at: None,
                    labels: info.labels,
                }),
                update_mask: (!paths.is_empty()).then_some(prost_types::FieldMask { paths }),
            }))
            .await
            .map_err(err)?;
        to_info(resp.into_inner().info.unwrap_or_default())
    }

    async fn list(&self, filters: Vec<String>) -> Result<Vec<Info>> {
        let mut stream = self
            .client
            .clone()
            .list(self.request(ListContentRequest { filters }))
            .await
            .map_err(err)?
            .into_inner();
        let mut out = Vec::new();
        while let Some(batch) = stream.message().await.map_err(err)? {
            for i in batch.info {
                out.push(to_info(i)?);
            }
        }
        Ok(out)
    }

    async fn delete(&self, digest: &Digest) -> Result<()> {
        self.client
            .clone()
            .delete(self.request(DeleteContentRequest {
                digest: digest.to_string(),
            }))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn read_at(&self, digest: &Digest, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut stream = self
            .client
            .clone()
            .read(self.request(ReadContentRequest {
                digest: digest.to_string(),
                offset: i64::try_from(offset).unwrap_or(i64::MAX),
                size: i64::try_from(len).unwrap_or(i64::MAX),
            }))
            .await
            .map_err(err)?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.message().await.map_err(err)? {
            out.extend_from_slice(&chunk.data);
        }
        out.truncate(len);
        Ok(out)
    }

    async fn status(&self, r: &str) -> Result<IngestStatus> {
        let resp = self
            .client
            .clone()
            .status(self.request(StatusRequest {
                r#ref: r.to_owned(),
            }))
            .await
            .map_err(err)?;
        Ok(to_status(resp.into_inner().status.unwrap_or_default()))
    }

    async fn list_statuses(&self, filters: Vec<String>) -> Result<Vec<IngestStatus>> {
        let resp = self
            .client
            .clone()
            .list_statuses(self.request(ListStatusesRequest { filters }))
            .await
            .map_err(err)?;
        Ok(resp
            .into_inner()
            .statuses
            .into_iter()
            .map(to_status)
            .collect())
    }

    async fn abort(&self, r: &str) -> Result<()> {
        self.client
            .clone()
            .abort(self.request(AbortRequest {
                r#ref: r.to_owned(),
            }))
            .await
            .map_err(err)?;
        Ok(())
    }

    async fn writer(
        &self,
        r: &str,
        total: i64,
        expected: Option<Digest>,
    ) -> Result<Box<dyn ContentWriter>> {
        let (tx, rx) = mpsc::channel(4);
        let first = WriteContentRequest {
            action: WriteAction::Stat as i32,
            r#ref: r.to_owned(),
            total,
            expected: expected.map(|d| d.to_string()).unwrap_or_default(),
            ..Default::default()
        };
        tx.send(first).await.map_err(|_| ContentError::Closed)?;
        let mut responses = self
            .client
            .clone()
            .write(self.request(ReceiverStream::new(rx)))
            .await
            .map_err(err)?
            .into_inner();
        // The server opens the writer on the first message: a locked ref
        // or an existing blob is refused here.
        let stat = responses
            .message()
            .await
            .map_err(err)?
            .ok_or(ContentError::Closed)?;
        Ok(Box::new(ProxyWriter {
            tx: Some(tx),
            responses,
            r#ref: r.to_owned(),
            offset: stat.offset,
        }))
    }
}

/// One `Write` stream of a [`ProxyContentStore`].
struct ProxyWriter {
    tx: Option<mpsc::Sender<WriteContentRequest>>,
    responses: Streaming<WriteContentResponse>,
    r#ref: String,
    /// Where the next write goes, as the server last reported.
    offset: i64,
}

impl ProxyWriter {
    async fn exchange(&mut self, req: WriteContentRequest) -> Result<WriteContentResponse> {
        let tx = self.tx.as_ref().ok_or(ContentError::Closed)?;
        tx.send(req).await.map_err(|_| ContentError::Closed)?;
        match self.responses.message().await {
            Ok(Some(resp)) => Ok(resp),
            Ok(None) => Err(ContentError::Closed),
            Err(e) => {
                // The server ended the stream with the error.
                self.tx = None;
                Err(err(e))
            }
        }
    }

    async fn stat(&mut self) -> Result<WriteContentResponse> {
        self.exchange(WriteContentRequest {
            action: WriteAction::Stat as i32,
            ..Default::default()
        })
        .await
    }
}

#[tonic::async_trait]
impl ContentWriter for ProxyWriter {
    async fn write(&mut self, data: Vec<u8>) -> Result<()> {
        let resp = self
            .exchange(WriteContentRequest {
                action: WriteAction::Write as i32,
                offset: self.offset,
                data,
                ..Default::default()
            })
            .await?;
        self.offset = resp.offset;
        Ok(())
    }

    async fn digest(&mut self) -> Result<Digest> {
        let resp = self.stat().await?;
        parse_digest(&resp.digest)
    }

    async fn status(&mut self) -> Result<IngestStatus> {
        let resp = self.stat().await?;
        self.offset = resp.offset;
        Ok(IngestStatus {
            ref_key: self.r#ref.clone(),
            offset: u64::try_from(resp.offset).unwrap_or(0),
            total: resp.total,
            expected: None,
            started_at: nanos(resp.started_at),
            updated_at: nanos(resp.updated_at),
        })
    }

    async fn truncate(&mut self) -> Result<()> {
        // As containerd's remote writer: the next write, at offset zero,
        // starts the ingest over.
        self.offset = 0;
        Ok(())
    }

    async fn commit(
        &mut self,
        size: i64,
        expected: Option<Digest>,
        labels: BTreeMap<String, String>,
    ) -> Result<Digest> {
        let resp = self
            .exchange(WriteContentRequest {
                action: WriteAction::Commit as i32,
                offset: self.offset,
                total: size,
                expected: expected.map(|d| d.to_string()).unwrap_or_default(),
                labels,
                ..Default::default()
            })
            .await;
        self.tx = None;
        parse_digest(&resp?.digest)
    }

    async fn close(mut self: Box<Self>) -> Result<()> {
        self.tx = None;
        Ok(())
    }
}
