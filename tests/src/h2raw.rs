//! A bare HTTP/2 gRPC client written frame by frame, for requests that
//! well-behaved client libraries refuse to make: an `:authority` holding a
//! socket path (as crictl, grpc-java and grpcurl send it), odd headers.
//! Blocking; one unary call at a time.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// How a call ended.
#[derive(Debug, Default)]
pub struct Reply {
    /// `:status` of the response headers.
    pub http_status: Option<String>,
    /// `grpc-status`, if the call got that far.
    pub grpc_status: Option<i32>,
    /// `grpc-message`.
    pub grpc_message: String,
    /// The response message (without the 5-byte gRPC prefix).
    pub body: Vec<u8>,
    /// The error code of a RST_STREAM for the call.
    pub reset: Option<u32>,
    /// The error code of a GOAWAY that closed the connection.
    pub goaway: Option<u32>,
}

/// One HTTP/2 connection to a unix socket.
pub struct RawH2 {
    sock: UnixStream,
    enc: loona_hpack::Encoder<'static>,
    dec: loona_hpack::Decoder<'static>,
    next_stream: u32,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).expect("frame size");
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

impl RawH2 {
    /// Connects and sends the preface and empty SETTINGS.
    pub fn connect(path: &Path) -> std::io::Result<RawH2> {
        let mut sock = UnixStream::connect(path)?;
        sock.set_read_timeout(Some(Duration::from_secs(10)))?;
        sock.write_all(PREFACE)?;
        sock.write_all(&frame(SETTINGS, 0, 0, &[]))?;
        Ok(RawH2 {
            sock,
            enc: loona_hpack::Encoder::new(),
            dec: loona_hpack::Decoder::new(),
            next_stream: 1,
        })
    }

    fn read_frame(&mut self) -> std::io::Result<(u8, u8, u32, Vec<u8>)> {
        let mut h = [0u8; 9];
        self.sock.read_exact(&mut h)?;
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let mut payload = vec![0u8; len];
        self.sock.read_exact(&mut payload)?;
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        Ok((h[3], h[4], stream, payload))
    }

    /// One unary call of `path` with `authority` and extra `headers`,
    /// sending `message` (an encoded protobuf).
    pub fn call(
        &mut self,
        path: &str,
        authority: &[u8],
        headers: &[(&[u8], &[u8])],
        message: &[u8],
    ) -> std::io::Result<Reply> {
        let stream = self.next_stream;
        self.next_stream += 2;
        let mut fields: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b":scheme", b"http"),
            (b":path", path.as_bytes()),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"te", b"trailers"),
        ];
        fields.extend_from_slice(headers);
        let block = self.enc.encode(fields);
        self.sock
            .write_all(&frame(HEADERS, END_HEADERS, stream, &block))?;
        let mut body = vec![0u8];
        body.extend_from_slice(&u32::try_from(message.len()).expect("size").to_be_bytes());
        body.extend_from_slice(message);
        self.sock
            .write_all(&frame(DATA, END_STREAM, stream, &body))?;
        let mut reply = Reply::default();
        let mut block = Vec::new();
        let mut data = Vec::new();
        loop {
            let (kind, flags, sid, payload) = match self.read_frame() {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(reply),
                Err(e) => return Err(e),
            };
            match kind {
                SETTINGS if flags & ACK == 0 => {
                    self.sock.write_all(&frame(SETTINGS, ACK, 0, &[]))?;
                }
                PING if flags & ACK == 0 => {
                    self.sock.write_all(&frame(PING, ACK, 0, &payload))?;
                }
                GOAWAY => {
                    reply.goaway =
                        Some(u32::from_be_bytes(payload[4..8].try_into().expect("code")));
                    return Ok(reply);
                }
                RST_STREAM if sid == stream => {
                    reply.reset = Some(u32::from_be_bytes(payload[..4].try_into().expect("code")));
                    return Ok(reply);
                }
                DATA if sid == stream => {
                    data.extend_from_slice(&payload);
                    if flags & END_STREAM != 0 {
                        break;
                    }
                }
                HEADERS | CONTINUATION if sid == stream => {
                    block.extend_from_slice(&payload);
                    if flags & END_HEADERS != 0 {
                        let fields = self
                            .dec
                            .decode(&block)
                            .map_err(|e| std::io::Error::other(format!("hpack: {e:?}")))?;
                        block.clear();
                        for (n, v) in fields {
                            let v = String::from_utf8_lossy(&v).into_owned();
                            match n.as_slice() {
                                b":status" => reply.http_status = Some(v),
                                b"grpc-status" => reply.grpc_status = v.parse().ok(),
                                b"grpc-message" => reply.grpc_message = v,
                                _ => {}
                            }
                        }
                    }
                    if flags & END_STREAM != 0 {
                        break;
                    }
                }
                _ => {}
            }
        }
        if data.len() >= 5 {
            reply.body = data[5..].to_vec();
        }
        Ok(reply)
    }
}
