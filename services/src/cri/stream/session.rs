//! A SPDY/3.1 session on the server's side of an upgraded connection:
//! streams the client opens arrive as [`Incoming`], each answered with a
//! SYN_REPLY at once (the client waits for it); their data arrives on a
//! channel that ends at the client's FIN or RST; the server writes through
//! [`Session`]. Pings are answered. The server opens no streams of its own
//! (the streaming protocols never need it).
//!
//! Flow control: the kubelet's peers (spdystream) neither send nor heed
//! WINDOW_UPDATE, so none is sent and windows are not enforced; a slow
//! reader of a stream holds up the session's reading (bounded channels)
//! rather than growing memory.

use std::collections::HashMap;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::spdy::{self, Frame, Headers, FLAG_FIN};

/// Largest data frame written.
const CHUNK: usize = 32 * 1024;

/// A stream the client opened.
#[derive(Debug)]
pub struct Incoming {
    /// Its id.
    pub id: u32,
    /// Its headers (names lowercase).
    pub headers: Headers,
    /// What the client writes on it; ends at FIN or RST.
    pub data: mpsc::Receiver<Bytes>,
}

impl Incoming {
    /// The value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

enum Out {
    Frame(Frame),
    /// Say GOAWAY, flush and close the write side.
    End,
}

/// The writing side of a session; cheap to clone.
#[derive(Debug, Clone)]
pub struct Session {
    out: mpsc::Sender<Out>,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Out::Frame(fr) => write!(f, "{fr:?}"),
            Out::End => f.write_str("End"),
        }
    }
}

impl Session {
    /// Runs a session over `io`: returns the writer and the streams the
    /// client opens (the channel ends when the connection does).
    pub fn start<T>(io: T) -> (Session, mpsc::Receiver<Incoming>)
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (r, w) = tokio::io::split(io);
        let (out_tx, out_rx) = mpsc::channel(64);
        let (in_tx, in_rx) = mpsc::channel(16);
        tokio::spawn(write_loop(
            FramedWrite::new(w, spdy::Encoder::default()),
            out_rx,
        ));
        let session = Session { out: out_tx };
        tokio::spawn(read_loop(
            FramedRead::new(r, spdy::Decoder::default()),
            session.clone(),
            in_tx,
        ));
        (session, in_rx)
    }

    async fn send(&self, f: Frame) -> bool {
        self.out.send(Out::Frame(f)).await.is_ok()
    }

    /// Writes `data` on stream `id`; false once the connection is gone.
    pub async fn write(&self, id: u32, data: &[u8]) -> bool {
        for chunk in data.chunks(CHUNK) {
            if !self
                .send(Frame::Data {
                    stream_id: id,
                    flags: 0,
                    data: Bytes::copy_from_slice(chunk),
                })
                .await
            {
                return false;
            }
        }
        true
    }

    /// Ends the server's side of stream `id` (FIN).
    pub async fn close(&self, id: u32) {
        let _ = self
            .send(Frame::Data {
                stream_id: id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            })
            .await;
    }

    /// Ends the session: GOAWAY, then the connection's write side closes
    /// once everything queued before is written.
    pub async fn end(&self) {
        let _ = self.out.send(Out::End).await;
    }
}

async fn write_loop<W: AsyncWrite + Send + Unpin + 'static>(
    mut w: FramedWrite<W, spdy::Encoder>,
    mut rx: mpsc::Receiver<Out>,
) {
    let mut last_good = 0;
    while let Some(o) = rx.recv().await {
        match o {
            Out::Frame(f) => {
                if let Frame::SynReply { stream_id, .. } = &f {
                    last_good = *stream_id;
                }
                // Frames queued behind this one go in the same write.
                if w.feed(f).await.is_err() {
                    return;
                }
                if rx.is_empty() && w.flush().await.is_err() {
                    return;
                }
            }
            Out::End => {
                let _ = w
                    .send(Frame::GoAway {
                        last_good,
                        status: 0,
                    })
                    .await;
                let _ = w.close().await;
                return;
            }
        }
    }
    let _ = w.close().await;
}

async fn read_loop<R: AsyncRead + Send + Unpin + 'static>(
    mut r: FramedRead<R, spdy::Decoder>,
    session: Session,
    accept: mpsc::Sender<Incoming>,
) {
    let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    while let Some(frame) = r.next().await {
        let Ok(frame) = frame else {
            // Not SPDY, or the socket failed: the session is over.
            break;
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                if streams.contains_key(&stream_id) || stream_id % 2 == 0 {
                    let _ = session
                        .send(Frame::RstStream {
                            stream_id,
                            status: spdy::REFUSED_STREAM,
                        })
                        .await;
                    continue;
                }
                let (tx, rx) = mpsc::channel(16);
                if flags & FLAG_FIN == 0 {
                    streams.insert(stream_id, tx);
                }
                let _ = session
                    .send(Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Vec::new(),
                    })
                    .await;
                let incoming = Incoming {
                    id: stream_id,
                    headers,
                    data: rx,
                };
                if accept.send(incoming).await.is_err() {
                    // Nobody takes new streams any more.
                    let _ = session
                        .send(Frame::RstStream {
                            stream_id,
                            status: spdy::REFUSED_STREAM,
                        })
                        .await;
                    streams.remove(&stream_id);
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if let Some(tx) = streams.get(&stream_id) {
                    if !data.is_empty() && tx.send(data).await.is_err() {
                        // Its reader is gone: what follows is dropped.
                        streams.remove(&stream_id);
                    }
                } else if flags & FLAG_FIN == 0 && !data.is_empty() {
                    let _ = session
                        .send(Frame::RstStream {
                            stream_id,
                            status: spdy::INVALID_STREAM,
                        })
                        .await;
                    continue;
                }
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::Headers {
                stream_id, flags, ..
            } => {
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                streams.remove(&stream_id);
            }
            Frame::Ping(id) => {
                let _ = session.send(Frame::Ping(id)).await;
            }
            Frame::GoAway { .. } => break,
            Frame::SynReply { .. }
            | Frame::Settings(_)
            | Frame::WindowUpdate { .. }
            | Frame::Ignored(_) => {}
        }
    }
    // Every open stream ends; so does the stream of new ones.
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client on the other end of a pipe, framing with the same codec.
    #[tokio::test]
    async fn streams_open_carry_data_and_end() {
        let (server, client) = tokio::io::duplex(1 << 16);
        let (session, mut incoming) = Session::start(server);
        let (cr, cw) = tokio::io::split(client);
        let mut cr = FramedRead::new(cr, spdy::Decoder::default());
        let mut cw = FramedWrite::new(cw, spdy::Encoder::default());
        cw.send(Frame::SynStream {
            stream_id: 1,
            associated: 0,
            priority: 0,
            flags: 0,
            headers: vec![("streamtype".into(), "stdin".into())],
        })
        .await
        .unwrap();
        let mut s = incoming.recv().await.unwrap();
        assert_eq!(s.header("streamtype"), Some("stdin"));
        assert!(matches!(
            cr.next().await.unwrap().unwrap(),
            Frame::SynReply { stream_id: 1, .. }
        ));
        cw.send(Frame::Ping(7)).await.unwrap();
        assert_eq!(cr.next().await.unwrap().unwrap(), Frame::Ping(7));
        cw.send(Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::from_static(b"abc"),
        })
        .await
        .unwrap();
        assert_eq!(s.data.recv().await.unwrap(), Bytes::from_static(b"abc"));
        assert!(s.data.recv().await.is_none(), "FIN ends the stream");
        // Data for a stream never opened is refused.
        cw.send(Frame::Data {
            stream_id: 9,
            flags: 0,
            data: Bytes::from_static(b"x"),
        })
        .await
        .unwrap();
        assert!(matches!(
            cr.next().await.unwrap().unwrap(),
            Frame::RstStream { stream_id: 9, .. }
        ));
        assert!(session.write(1, &vec![1u8; CHUNK + 1]).await);
        session.close(1).await;
        session.end().await;
        let mut got = 0;
        let mut fin = false;
        loop {
            match cr.next().await {
                Some(Ok(Frame::Data { data, flags, .. })) => {
                    got += data.len();
                    fin |= flags & FLAG_FIN != 0;
                }
                Some(Ok(Frame::GoAway { last_good: 1, .. })) => {}
                None => break,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!((got, fin), (CHUNK + 1, true));
        // The client hanging up ends the stream of new streams.
        drop(cw);
        drop(cr);
        assert!(incoming.recv().await.is_none());
    }

    #[tokio::test]
    async fn garbage_ends_the_session() {
        use tokio::io::AsyncWriteExt;
        let (server, mut client) = tokio::io::duplex(1024);
        let (_session, mut incoming) = Session::start(server);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        drop(client);
        assert!(incoming.recv().await.is_none());
    }
}
