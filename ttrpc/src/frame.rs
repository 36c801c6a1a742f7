//! Frames and envelopes on a ttrpc connection.
//!
//! Every message is a frame: a 10-byte big-endian header (payload length
//! u32, stream id u32, message type u8, flags u8) followed by the payload.
//! A request frame carries a `ttrpc.Request`, a response frame a
//! `ttrpc.Response`. Clients number their streams with odd, increasing ids.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Error, Result};

/// The status a response carries: `google.rpc.Status`.
pub type Status = hull_proto::google::rpc::Status;

/// Largest payload either side accepts, as in containerd's ttrpc.
pub const MAX_MESSAGE: usize = 4 << 20;

/// Header length in bytes.
pub const HEADER_LEN: usize = 10;

/// Frame type of a request.
pub const TYPE_REQUEST: u8 = 1;
/// Frame type of a response.
pub const TYPE_RESPONSE: u8 = 2;

/// One key/value of request metadata (`ttrpc.KeyValue`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// Metadata key, e.g. `containerd-namespace-ttrpc`.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Its value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// Request metadata, in arrival order.
pub type Metadata = Vec<KeyValue>;

/// `ttrpc.Request`: which method to call and its encoded argument.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Request {
    /// Fully qualified service name, e.g. `containerd.task.v2.Task`.
    #[prost(string, tag = "1")]
    pub service: String,
    /// Method name, e.g. `Create`.
    #[prost(string, tag = "2")]
    pub method: String,
    /// The encoded request message.
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
    /// Deadline the caller set, in nanoseconds from sending (0: none).
    #[prost(int64, tag = "4")]
    pub timeout_nano: i64,
    /// Request metadata.
    #[prost(message, repeated, tag = "5")]
    pub metadata: Vec<KeyValue>,
}

/// `ttrpc.Response`: a status and, on success, the encoded reply.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Response {
    /// Absent or code 0 on success.
    #[prost(message, optional, tag = "1")]
    pub status: Option<Status>,
    /// The encoded reply message.
    #[prost(bytes = "vec", tag = "2")]
    pub payload: Vec<u8>,
}

/// A frame as read from or written to a connection.
#[derive(Debug)]
pub struct Frame {
    /// Stream the frame belongs to.
    pub stream: u32,
    /// [`TYPE_REQUEST`] or [`TYPE_RESPONSE`] (others are ignored).
    pub kind: u8,
    /// Header flags.
    pub flags: u8,
    /// The payload.
    pub payload: Vec<u8>,
}

/// Reads one frame. `Ok(None)` means the peer closed cleanly between frames.
///
/// A frame over [`MAX_MESSAGE`] is skipped over and reported as
/// [`Error::TooLarge`] with its stream id consumed, so the connection stays
/// usable.
///
/// Not cancel-safe: dropping it mid-frame loses the connection's framing.
pub async fn read<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>> {
    let mut header = [0u8; HEADER_LEN];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(source) => return Err(Error::Io { op: "read", source }),
    }
    let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let stream = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_MESSAGE {
        let mut rest = r.take(len as u64);
        tokio::io::copy(&mut rest, &mut tokio::io::sink())
            .await
            .map_err(|source| Error::Io { op: "read", source })?;
        return Err(Error::TooLarge(len));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)
        .await
        .map_err(|source| Error::Io { op: "read", source })?;
    Ok(Some(Frame {
        stream,
        kind: header[8],
        flags: header[9],
        payload,
    }))
}

/// Encodes a frame, header and payload, into one buffer.
pub fn encode(stream: u32, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
    buf.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    buf.extend_from_slice(&stream.to_be_bytes());
    buf.push(kind);
    buf.push(0);
    buf.extend_from_slice(payload);
    buf
}

/// Writes one encoded frame.
pub async fn write<W: AsyncWrite + Unpin>(w: &mut W, buf: &[u8]) -> Result<()> {
    w.write_all(buf).await.map_err(|source| Error::Io {
        op: "write",
        source,
    })
}

/// The value of metadata `key`, if present.
pub fn get<'a>(md: &'a [KeyValue], key: &str) -> Option<&'a str> {
    md.iter()
        .find(|kv| kv.key.eq_ignore_ascii_case(key))
        .map(|kv| kv.value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn header_is_big_endian_and_round_trips() {
        let buf = encode(3, TYPE_REQUEST, b"abc");
        assert_eq!(&buf[..10], &[0, 0, 0, 3, 0, 0, 0, 3, 1, 0]);
        let mut r = &buf[..];
        let f = read(&mut r).await.unwrap().unwrap();
        assert_eq!(
            (f.stream, f.kind, f.payload.as_slice()),
            (3, 1, &b"abc"[..])
        );
        assert!(read(&mut r).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn oversized_frames_are_skipped() {
        let mut buf = Vec::new();
        buf.extend_from_slice(&((MAX_MESSAGE + 1) as u32).to_be_bytes());
        buf.extend_from_slice(&[0, 0, 0, 1, 1, 0]);
        buf.resize(HEADER_LEN + MAX_MESSAGE + 1, 7);
        buf.extend_from_slice(&encode(5, TYPE_REQUEST, b"x"));
        let mut r = &buf[..];
        assert!(matches!(read(&mut r).await, Err(Error::TooLarge(_))));
        assert_eq!(read(&mut r).await.unwrap().unwrap().stream, 5);
    }
}
