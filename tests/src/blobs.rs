//! Drives the content service's `Write` stream directly, as containerd's
//! remote writer does: STAT, WRITE at offsets, COMMIT.

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use hull_client::Client;
use hull_proto::containerd::services::content::v1::{
    WriteAction, WriteContentRequest, WriteContentResponse,
};

/// One open `Write` stream.
pub struct Ingest {
    tx: mpsc::Sender<WriteContentRequest>,
    rx: Streaming<WriteContentResponse>,
    /// Ref of this ingest.
    pub r#ref: String,
}

impl Ingest {
    /// Opens the stream and sends STAT for `r`; returns the status reply.
    pub async fn open(client: &Client, r: &str) -> Result<(Ingest, WriteContentResponse), Status> {
        Ingest::open_with(
            client,
            WriteContentRequest {
                action: WriteAction::Stat as i32,
                r#ref: r.to_owned(),
                ..Default::default()
            },
        )
        .await
    }

    /// Opens the stream with `first` (which names the ref, and may carry
    /// the total and expected digest); returns its reply.
    pub async fn open_with(
        client: &Client,
        first: WriteContentRequest,
    ) -> Result<(Ingest, WriteContentResponse), Status> {
        let (tx, rx) = mpsc::channel(4);
        let mut content = client.content();
        let r = first.r#ref.clone();
        tx.send(first)
            .await
            .map_err(|_| Status::unavailable("stream closed"))?;
        let mut rx = content.write(ReceiverStream::new(rx)).await?.into_inner();
        let stat = rx
            .message()
            .await?
            .ok_or_else(|| Status::unknown("no stat reply"))?;
        Ok((Ingest { tx, rx, r#ref: r }, stat))
    }

    /// Sends one request and waits for its reply.
    pub async fn send(&mut self, req: WriteContentRequest) -> Result<WriteContentResponse, Status> {
        self.tx
            .send(req)
            .await
            .map_err(|_| Status::unavailable("stream closed"))?;
        self.rx
            .message()
            .await?
            .ok_or_else(|| Status::unknown("stream ended"))
    }

    /// Writes `data` at `offset`.
    pub async fn write(
        &mut self,
        offset: i64,
        data: Vec<u8>,
    ) -> Result<WriteContentResponse, Status> {
        self.send(WriteContentRequest {
            action: WriteAction::Write as i32,
            offset,
            data,
            ..Default::default()
        })
        .await
    }

    /// Commits at `offset` (as containerd's client does: an offset of zero
    /// would restart the ingest) with the expected size and digest.
    pub async fn commit(
        &mut self,
        offset: i64,
        total: i64,
        expected: &str,
    ) -> Result<WriteContentResponse, Status> {
        self.send(WriteContentRequest {
            action: WriteAction::Commit as i32,
            offset,
            total,
            expected: expected.to_owned(),
            ..Default::default()
        })
        .await
    }
}

/// Writes `data` as a blob under ref `r` in 1 MiB chunks and commits it with
/// its size and digest. Returns the committed digest.
pub async fn write_blob(client: &Client, r: &str, data: &[u8]) -> Result<String, Status> {
    let (mut ingest, stat) = Ingest::open(client, r).await?;
    let mut offset = stat.offset;
    let start = usize::try_from(offset).unwrap_or(0);
    for chunk in data[start.min(data.len())..].chunks(1 << 20) {
        let resp = ingest.write(offset, chunk.to_vec()).await?;
        offset = resp.offset;
    }
    let resp = ingest
        .commit(offset, data.len() as i64, &crate::image::sha256(data))
        .await?;
    Ok(resp.digest)
}
