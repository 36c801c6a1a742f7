//! `containerd.services.content.v1.Content`.

use std::io::{Read, Seek, SeekFrom};
use std::pin::Pin;
use std::sync::Arc;

use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};

use hull_proto::containerd::events::ContentDelete;
use hull_proto::containerd::services::content::v1::{
    content_server::Content, AbortRequest, DeleteContentRequest, Info as ProtoInfo, InfoRequest,
    InfoResponse, ListContentRequest, ListContentResponse, ListStatusesRequest,
    ListStatusesResponse, ReadContentRequest, ReadContentResponse, Status as ProtoStatus,
    StatusRequest, StatusResponse, UpdateRequest, UpdateResponse, WriteAction, WriteContentRequest,
    WriteContentResponse,
};
use hull_proto::digest::Digest;
use hull_proto::errdefs::{self, Kind};
use hull_proto::identifiers::{LeaseId, Namespace};

use super::{digest, lease, namespace, paths, run, status, LIST_BATCH};
use crate::content::{ContentError, IngestStatus, Writer};
use crate::events::Exchange;
use crate::filters::Filter;
use crate::metadata::content::BlobInfo;
use crate::metadata::{MetaDb, MetadataError};

/// Size of each `Read` response chunk.
const READ_CHUNK: usize = 1 << 20;

/// Content over the metadata DB and the local store.
#[derive(Debug)]
pub struct ContentService {
    db: Arc<MetaDb>,
    events: Exchange,
    tasks: TaskTracker,
}

impl ContentService {
    /// Serves `db`'s content; streams run on `tasks`.
    pub fn new(db: Arc<MetaDb>, events: Exchange, tasks: TaskTracker) -> Self {
        ContentService { db, events, tasks }
    }
}

fn info_to_proto(i: BlobInfo) -> ProtoInfo {
    ProtoInfo {
        digest: i.digest.to_string(),
        size: i.size,
        created_at: Some(crate::timestamp(i.created_at)),
        updated_at: Some(crate::timestamp(i.updated_at)),
        labels: i.labels,
    }
}

fn status_to_proto(s: IngestStatus) -> ProtoStatus {
    ProtoStatus {
        started_at: Some(crate::timestamp(s.started_at)),
        updated_at: Some(crate::timestamp(s.updated_at)),
        r#ref: s.ref_key,
        offset: i64::try_from(s.offset).unwrap_or(i64::MAX),
        total: s.total,
        expected: s.expected.map(|d| d.to_string()).unwrap_or_default(),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(&self, req: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let ns = namespace(&req)?;
        let d = digest(&req.into_inner().digest)?;
        let db = self.db.clone();
        let info = run(move || db.blob_info(&ns, &d)).await?;
        Ok(Response::new(InfoResponse {
            info: Some(info_to_proto(info)),
        }))
    }

    async fn update(
        &self,
        req: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let info = req.info.unwrap_or_default();
        let d = digest(&info.digest)?;
        let labels = info.labels;
        let paths = paths(req.update_mask);
        let db = self.db.clone();
        let info = run(move || db.update_blob(&ns, &d, &labels, &paths)).await?;
        self.db.flush().await.map_err(status)?;
        Ok(Response::new(UpdateResponse {
            info: Some(info_to_proto(info)),
        }))
    }

    type ListStream = BoxStream<ListContentResponse>;

    async fn list(
        &self,
        req: Request<ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_err(status)?;
        let db = self.db.clone();
        let all = run(move || db.list_blobs(&ns, &filter)).await?;
        let mut batches = Vec::new();
        let mut it = all.into_iter().peekable();
        while it.peek().is_some() {
            let info = it.by_ref().take(LIST_BATCH).map(info_to_proto).collect();
            batches.push(Ok(ListContentResponse { info }));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(batches))))
    }

    async fn delete(&self, req: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let d = digest(&req.into_inner().digest)?;
        let db = self.db.clone();
        let (n, dd) = (ns.clone(), d.clone());
        run(move || db.delete_blob(&n, &dd)).await?;
        self.db.flush().await.map_err(status)?;
        self.events.publish(
            &ns,
            "/content/delete",
            &ContentDelete {
                digest: d.to_string(),
            },
        );
        self.db.note_deletion();
        Ok(Response::new(()))
    }

    type ReadStream = BoxStream<ReadContentResponse>;

    async fn read(
        &self,
        req: Request<ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = namespace(&req)?;
        let req = req.into_inner();
        let d = digest(&req.digest)?;
        let db = self.db.clone();
        let (mut file, size) = run(move || db.open_blob(&ns, &d)).await?;
        let offset = req.offset.max(0);
        if offset > size {
            return Err(errdefs::status(
                Kind::OutOfRange,
                format!("read past object length {size} bytes"),
            ));
        }
        let len = if req.size <= 0 || offset.saturating_add(req.size) > size {
            size - offset
        } else {
            req.size
        };
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        self.tasks.spawn_blocking(move || {
            let mut pos = offset;
            let end = offset + len;
            if let Err(e) = file.seek(SeekFrom::Start(u64::try_from(pos).unwrap_or(0))) {
                let _ = tx.blocking_send(Err(errdefs::status(
                    Kind::Unknown,
                    format!("seek blob: {e}"),
                )));
                return;
            }
            while pos < end {
                let want = usize::try_from(end - pos)
                    .unwrap_or(READ_CHUNK)
                    .min(READ_CHUNK);
                let mut data = vec![0u8; want];
                if let Err(e) = file.read_exact(&mut data) {
                    let _ = tx.blocking_send(Err(errdefs::status(
                        Kind::Unknown,
                        format!("read blob: {e}"),
                    )));
                    return;
                }
                if tx
                    .blocking_send(Ok(ReadContentResponse { offset: pos, data }))
                    .is_err()
                {
                    return;
                }
                pos += i64::try_from(want).unwrap_or(0);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn status(
        &self,
        req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner().r#ref;
        let db = self.db.clone();
        let st = run(move || db.ingest_status(&ns, &r)).await?;
        Ok(Response::new(StatusResponse {
            status: Some(status_to_proto(st)),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<ListStatusesRequest>,
    ) -> Result<Response<ListStatusesResponse>, Status> {
        let ns = namespace(&req)?;
        let filter = Filter::parse(&req.into_inner().filters).map_err(status)?;
        let db = self.db.clone();
        let all = run(move || db.list_ingests(&ns, &filter)).await?;
        Ok(Response::new(ListStatusesResponse {
            statuses: all.into_iter().map(status_to_proto).collect(),
        }))
    }

    type WriteStream = BoxStream<WriteContentResponse>;

    async fn write(
        &self,
        req: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ns = namespace(&req)?;
        let lease = lease(&req)?;
        let stream = req.into_inner();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let session = WriteSession {
            db: self.db.clone(),
            ns,
            lease,
            tx: tx.clone(),
        };
        self.tasks.spawn(async move {
            if let Err(st) = session.run(stream).await {
                let _ = tx.send(Err(st)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn abort(&self, req: Request<AbortRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner().r#ref;
        let db = self.db.clone();
        run(move || db.abort_ingest(&ns, &r)).await?;
        Ok(Response::new(()))
    }
}

/// One `Write` stream: a single ref, one writer, until commit or the
/// client goes away (what was written stays for a resume).
struct WriteSession {
    db: Arc<MetaDb>,
    ns: Namespace,
    lease: Option<LeaseId>,
    tx: tokio::sync::mpsc::Sender<Result<WriteContentResponse, Status>>,
}

impl WriteSession {
    async fn run(self, mut stream: Streaming<WriteContentRequest>) -> Result<(), Status> {
        let Some(mut req) = stream.message().await? else {
            return Ok(());
        };
        if req.r#ref.is_empty() {
            return Err(errdefs::status(
                Kind::InvalidArgument,
                "first message must have a reference",
            ));
        }
        let r = req.r#ref.clone();
        let mut total = req.total;
        let expected = match req.expected.as_str() {
            "" => None,
            e => Some(digest(e)?),
        };
        let (db, ns, lease, rr, exp) = (
            self.db.clone(),
            self.ns.clone(),
            self.lease.clone(),
            r.clone(),
            expected.clone(),
        );
        // One trip to the blocking pool: the existence check, then the open.
        let opened = run(move || {
            if let Some(d) = &exp {
                if db.hold_existing_blob(&ns, d, lease.as_ref())? {
                    return Ok(None);
                }
            }
            db.open_writer(&ns, &rr, total, exp.as_ref(), lease.as_ref())
                .map(Some)
        })
        .await?;
        let Some(opened) = opened else {
            return Err(exists(expected.as_ref()));
        };
        let mut expected = expected;
        // Bytes in the ingest once queued writes land.
        let mut written = opened.status().offset;
        let mut writer = Some(opened);
        tracing::debug!(r#ref = %r, total, "write started");
        let mut first = true;
        loop {
            if !first && !req.expected.is_empty() {
                let d = digest(&req.expected)?;
                if let Err(st) = self.refuse_existing(&d).await {
                    drop(writer.take());
                    let (db, ns, rr) = (self.db.clone(), self.ns.clone(), r.clone());
                    if let Err(e) = run(move || db.abort_ingest(&ns, &rr)).await {
                        tracing::warn!(cause = %e.message(), "abort ingest of existing blob");
                    }
                    return Err(st);
                }
                if expected.as_ref() != Some(&d) {
                    let dd = d.clone();
                    let w = writer.take().ok_or_else(|| {
                        errdefs::status(Kind::FailedPrecondition, "writer is closed")
                    })?;
                    let (w, ()) = in_blocking(w, move |w| Ok(w.set_expected(&dd)?)).await?;
                    writer = Some(w);
                }
                expected = Some(d);
            }
            first = false;
            let mut w = writer
                .take()
                .ok_or_else(|| errdefs::status(Kind::FailedPrecondition, "writer is closed"))?;
            if req.total > 0 {
                total = req.total;
            }
            let action = WriteAction::try_from(req.action).map_err(|_| {
                errdefs::status(
                    Kind::InvalidArgument,
                    format!("unknown write action {}", req.action),
                )
            })?;
            let mut msg = WriteContentResponse {
                action: req.action,
                ..Default::default()
            };
            match action {
                WriteAction::Stat => {
                    let (w2, (st, d)) = in_blocking(w, move |w| {
                        // A STAT without a total (a resuming client) keeps
                        // the one recorded.
                        if total > 0 {
                            w.set_total(total)?;
                        }
                        Ok((w.status(), w.digest()))
                    })
                    .await?;
                    w = w2;
                    msg.offset = i64::try_from(st.offset).unwrap_or(i64::MAX);
                    msg.digest = d.to_string();
                    msg.started_at = Some(crate::timestamp(st.started_at));
                    msg.updated_at = Some(crate::timestamp(st.updated_at));
                    msg.total = st.total;
                    writer = Some(w);
                }
                WriteAction::Write => {
                    // Acknowledge first, then write: the client sends its
                    // next chunk while this one goes to disk. A WRITE reply
                    // promises nothing durable (only COMMIT does), and a
                    // failed write is reported on this stream before the
                    // next message is read. The running digest is left out
                    // of these replies, as it is not known yet.
                    let offset = req.offset;
                    let current = written;
                    if offset > 0 && u64::try_from(offset).ok() != Some(current) {
                        return Err(status(MetadataError::from(ContentError::OffsetMismatch {
                            offset,
                            current,
                        })));
                    }
                    let restart = offset == 0 && current > 0;
                    let data = std::mem::take(&mut req.data);
                    written = if restart { 0 } else { current } + data.len() as u64;
                    msg.offset = i64::try_from(written).unwrap_or(i64::MAX);
                    // The write's time is when it is acknowledged; a status
                    // asked for meanwhile waits for it to land.
                    let at = crate::now_nanos();
                    let pending = w.begin_write();
                    if self.tx.send(Ok(msg)).await.is_err() {
                        return Ok(());
                    }
                    let (w2, ()) = in_blocking(w, move |w| {
                        let _pending = pending;
                        if restart {
                            w.truncate()?;
                        }
                        w.write_stamped(&data, at)?;
                        if total > 0 {
                            w.set_total(total)?;
                        }
                        Ok(())
                    })
                    .await?;
                    writer = Some(w2);
                    req = match stream.message().await? {
                        Some(r) => r,
                        None => return close(writer).await,
                    };
                    continue;
                }
                WriteAction::Commit => {
                    let offset = req.offset;
                    let data = std::mem::take(&mut req.data);
                    let (db, ns, lease) = (self.db.clone(), self.ns.clone(), self.lease.clone());
                    let labels = std::mem::take(&mut req.labels);
                    let exp = expected.clone();
                    // The last data and the commit in one trip to the
                    // blocking pool.
                    let (st, committed) = run(move || {
                        let current = w.status().offset;
                        if offset > 0 && u64::try_from(offset).ok() != Some(current) {
                            return Err(ContentError::OffsetMismatch { offset, current }.into());
                        }
                        if offset == 0 && current > 0 {
                            w.truncate()?;
                        }
                        if !data.is_empty() {
                            w.write(&data)?;
                        }
                        if total > 0 {
                            w.set_total(total)?;
                        }
                        let st = w.status();
                        let committed =
                            db.commit(&ns, w, total, exp.as_ref(), labels, lease.as_ref())?;
                        Ok((st, committed))
                    })
                    .await?;
                    self.db.flush().await.map_err(status)?;
                    msg.offset = i64::try_from(st.offset).unwrap_or(i64::MAX);
                    msg.digest = committed.to_string();
                    tracing::debug!(r#ref = %r, digest = %committed, "write committed");
                    let _ = self.tx.send(Ok(msg)).await;
                    return Ok(());
                }
            }
            if self.tx.send(Ok(msg)).await.is_err() {
                return Ok(());
            }
            req = match stream.message().await? {
                Some(r) => r,
                None => return close(writer).await,
            };
        }
    }
}

/// Closes a writer whose client ended the stream: closing records the
/// ingest's status, which is file work for the blocking pool.
async fn close(writer: Option<Writer>) -> Result<(), Status> {
    if let Some(w) = writer {
        run(move || {
            drop(w);
            Ok(())
        })
        .await?;
    }
    Ok(())
}

impl WriteSession {
    /// AlreadyExists when the namespace has blob `d`. As containerd, the
    /// blob joins the writer's lease first, so that a client skipping it
    /// still holds it.
    async fn refuse_existing(&self, d: &Digest) -> Result<(), Status> {
        let (db, ns, lease, dd) = (
            self.db.clone(),
            self.ns.clone(),
            self.lease.clone(),
            d.clone(),
        );
        if run(move || db.hold_existing_blob(&ns, &dd, lease.as_ref())).await? {
            return Err(exists(Some(d)));
        }
        Ok(())
    }
}

/// What a write of a blob the namespace has already gets.
fn exists(d: Option<&Digest>) -> Status {
    let d = d.map(ToString::to_string).unwrap_or_default();
    errdefs::status(
        Kind::AlreadyExists,
        format!("blob with expected digest {d} exists"),
    )
}

/// Moves the writer onto the blocking pool for `f` and back.
async fn in_blocking<T, F>(mut w: Writer, f: F) -> Result<(Writer, T), Status>
where
    F: FnOnce(&mut Writer) -> Result<T, MetadataError> + Send + 'static,
    T: Send + 'static,
{
    run(move || {
        let out = f(&mut w)?;
        Ok((w, out))
    })
    .await
}
