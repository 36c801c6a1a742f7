//! Lets clients that send the socket path as `:authority` through.
//!
//! gRPC clients that dial a unix socket through a custom dialer (crictl
//! and critest 1.26, grpc-java, grpcurl `-unix`, older kubelets, Python
//! grpcio since 1.57) send `:authority: /run/hull/hull.sock` or its
//! %-encoding. That is not an authority by RFC 3986, and the HTTP/2 server
//! resets every such stream with PROTOCOL_ERROR; containerd (grpc-go)
//! accepts any authority. On a unix socket the authority names nothing
//! (the socket already is the peer), so [`AuthorityFix`] sits between the
//! socket and the HTTP/2 server and replaces one it would refuse with
//! `localhost`.
//!
//! It reads the client's frames. Everything but header blocks passes
//! through untouched, DATA payloads without being copied. Every header
//! block (HEADERS and its CONTINUATIONs) is HPACK-decoded, to keep a copy
//! of the client's dynamic table; blocks go on verbatim until the first one
//! with an authority the server would refuse. From then on every block of
//! the connection is re-encoded as literals without indexing, which never
//! touch the server's table, so the two tables can no longer disagree.
//! A block that does not decode is passed on verbatim and inspection
//! stops: the server reports the compression error itself. Server-to-
//! client bytes are not touched.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The client connection preface (RFC 9113 §3.4).
const PREFACE_LEN: usize = 24;
const FRAME_HEADER: usize = 9;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// The server's SETTINGS_MAX_FRAME_SIZE (the protocol default, which the
/// server keeps): re-encoded blocks are split to fit it.
const MAX_FRAME: usize = 16_384;
/// Header frames larger than this are not buffered for inspection; the
/// server refuses them anyway.
const MAX_INSPECTED: usize = 1 << 20;
/// What replaces an authority the server would refuse.
const REPLACEMENT: &[u8] = b"localhost";

/// A header block being gathered from HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    /// END_STREAM and PRIORITY of the HEADERS frame.
    flags: u8,
    priority: Option<[u8; 5]>,
    /// The frames as received, for passing on verbatim.
    frames: Vec<u8>,
    /// The header block fragments, joined.
    fragment: Vec<u8>,
}

/// A client connection with refused authorities replaced; see the module.
pub struct AuthorityFix<S> {
    inner: S,
    /// Received, not yet parsed.
    input: BytesMut,
    /// Parsed, ready for the server.
    output: BytesMut,
    preface_left: usize,
    /// Payload bytes of the current frame to pass through as they come.
    passthrough: usize,
    block: Option<Block>,
    decoder: loona_hpack::Decoder<'static>,
    /// Re-encoding every block from now on.
    rewriting: bool,
    /// Inspection stopped after a block that did not decode.
    opaque: bool,
    eof: bool,
}

impl<S> AuthorityFix<S> {
    /// Wraps a freshly accepted connection.
    pub fn new(inner: S) -> Self {
        let mut decoder = loona_hpack::Decoder::new();
        // The table size the server allows (SETTINGS_HEADER_TABLE_SIZE is
        // left at its default), so an update beyond it is refused here too.
        decoder.set_max_allowed_table_size(4096);
        AuthorityFix {
            inner,
            input: BytesMut::with_capacity(16 << 10),
            output: BytesMut::new(),
            preface_left: PREFACE_LEN,
            passthrough: 0,
            block: None,
            decoder,
            rewriting: false,
            opaque: false,
            eof: false,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Parses what `input` holds as far as it goes. Returns false when
    /// more input is needed.
    fn parse(&mut self) -> io::Result<bool> {
        if self.preface_left > 0 {
            let n = self.preface_left.min(self.input.len());
            if n == 0 {
                return Ok(false);
            }
            self.output.extend_from_slice(&self.input.split_to(n));
            self.preface_left -= n;
            return Ok(true);
        }
        if self.opaque {
            if self.input.is_empty() {
                return Ok(false);
            }
            let all = self.input.split();
            self.output.extend_from_slice(&all);
            return Ok(true);
        }
        if self.input.len() < FRAME_HEADER {
            return Ok(false);
        }
        let h = &self.input[..FRAME_HEADER];
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let (kind, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        let is_header_frame = kind == HEADERS || (kind == CONTINUATION && self.block.is_some());
        if !is_header_frame || len > MAX_INSPECTED {
            // Anything else goes on as it is; a frame arriving in the middle
            // of a header block is the server's protocol error to report.
            if let Some(b) = self.block.take() {
                self.output.extend_from_slice(&b.frames);
            }
            self.output
                .extend_from_slice(&self.input.split_to(FRAME_HEADER));
            self.passthrough = len;
            return Ok(true);
        }
        if self.input.len() < FRAME_HEADER + len {
            return Ok(false);
        }
        let frame = self.input.split_to(FRAME_HEADER + len);
        let payload = &frame[FRAME_HEADER..];
        if kind == HEADERS {
            if let Some(b) = self.block.take() {
                self.output.extend_from_slice(&b.frames);
            }
            let Some((priority, fragment)) = split_headers_payload(flags, payload) else {
                // Malformed padding or priority: the server's to refuse.
                self.output.extend_from_slice(&frame);
                return Ok(true);
            };
            self.block = Some(Block {
                stream,
                flags: flags & (END_STREAM | PRIORITY),
                priority,
                frames: frame.to_vec(),
                fragment: fragment.to_vec(),
            });
        } else if let Some(b) = self.block.as_mut() {
            b.frames.extend_from_slice(&frame);
            b.fragment.extend_from_slice(payload);
        }
        if flags & END_HEADERS != 0 {
            if let Some(b) = self.block.take() {
                self.finish_block(b)?;
            }
        }
        Ok(true)
    }

    /// Decodes a complete block and passes it on, verbatim or re-encoded.
    fn finish_block(&mut self, b: Block) -> io::Result<()> {
        let mut headers: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let decoded = self.decoder.decode_with_cb(&b.fragment, |n, v| {
            headers.push((n.into_owned(), v.into_owned()));
        });
        if decoded.is_err() {
            if self.rewriting {
                // The server's table is no longer the client's: nothing
                // could be passed on that it would read correctly.
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "undecodable header block after an authority was replaced",
                ));
            }
            self.opaque = true;
            self.output.extend_from_slice(&b.frames);
            return Ok(());
        }
        let mut refused = false;
        for (name, value) in &mut headers {
            if name.as_slice() == b":authority" && !acceptable(value) {
                *value = REPLACEMENT.to_vec();
                refused = true;
            }
        }
        if refused && !self.rewriting {
            tracing::debug!("client sent a socket path as :authority; replacing it");
            self.rewriting = true;
        }
        if !self.rewriting {
            self.output.extend_from_slice(&b.frames);
            return Ok(());
        }
        let mut block = Vec::with_capacity(b.fragment.len() + 64);
        for (name, value) in &headers {
            // Literal without indexing, literal name, no Huffman.
            block.push(0);
            encode_string(name, &mut block);
            encode_string(value, &mut block);
        }
        self.write_block(&b, &block);
        Ok(())
    }

    /// Frames a re-encoded block: one HEADERS, then CONTINUATIONs.
    fn write_block(&mut self, b: &Block, block: &[u8]) {
        let prio: &[u8] = b.priority.as_ref().map_or(&[], |p| &p[..]);
        let first_room = MAX_FRAME - prio.len();
        let (first, mut rest) = block.split_at(first_room.min(block.len()));
        let mut flags = b.flags;
        if rest.is_empty() {
            flags |= END_HEADERS;
        }
        frame_header(
            &mut self.output,
            prio.len() + first.len(),
            HEADERS,
            flags,
            b.stream,
        );
        self.output.extend_from_slice(prio);
        self.output.extend_from_slice(first);
        while !rest.is_empty() {
            let (chunk, tail) = rest.split_at(MAX_FRAME.min(rest.len()));
            let flags = if tail.is_empty() { END_HEADERS } else { 0 };
            frame_header(&mut self.output, chunk.len(), CONTINUATION, flags, b.stream);
            self.output.extend_from_slice(chunk);
            rest = tail;
        }
    }
}

/// Whether the HTTP/2 server accepts `value` as an authority (the same
/// parse it applies).
fn acceptable(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// The priority fields and the header block fragment of a HEADERS payload.
fn split_headers_payload(flags: u8, payload: &[u8]) -> Option<(Option<[u8; 5]>, &[u8])> {
    let mut p = payload;
    let mut pad = 0usize;
    if flags & PADDED != 0 {
        pad = usize::from(*p.first()?);
        p = &p[1..];
    }
    let mut priority = None;
    if flags & PRIORITY != 0 {
        priority = Some(p.get(..5)?.try_into().ok()?);
        p = &p[5..];
    }
    let end = p.len().checked_sub(pad)?;
    Some((priority, &p[..end]))
}

fn encode_string(s: &[u8], out: &mut Vec<u8>) {
    // Writing into a Vec cannot fail.
    let _ = loona_hpack::encoder::encode_integer_into(s.len(), 7, 0, out);
    out.extend_from_slice(s);
}

fn frame_header(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    // Frames here are at most MAX_FRAME long, well within 24 bits.
    let len = u32::try_from(len).unwrap_or(0);
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
}

impl<S: AsyncRead + Unpin> AsyncRead for AuthorityFix<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.output.is_empty() {
                let n = this.output.len().min(buf.remaining());
                buf.put_slice(&this.output[..n]);
                this.output.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.passthrough > 0 {
                if !this.input.is_empty() {
                    let n = this.passthrough.min(this.input.len()).min(buf.remaining());
                    buf.put_slice(&this.input[..n]);
                    this.input.advance(n);
                    this.passthrough -= n;
                    return Poll::Ready(Ok(()));
                }
                if this.eof {
                    return Poll::Ready(Ok(()));
                }
                // Straight into the caller's buffer: no copy for DATA.
                let want = this.passthrough.min(buf.remaining());
                let mut limited = ReadBuf::new(buf.initialize_unfilled_to(want));
                match Pin::new(&mut this.inner).poll_read(cx, &mut limited) {
                    Poll::Ready(Ok(())) => {
                        let n = limited.filled().len();
                        buf.advance(n);
                        if n == 0 {
                            this.eof = true;
                        }
                        this.passthrough -= n;
                        return Poll::Ready(Ok(()));
                    }
                    other => return other,
                }
            }
            if this.parse()? {
                continue;
            }
            if this.eof {
                // A partial frame at the end: hand it over as it is.
                if !this.input.is_empty() {
                    let rest = this.input.split();
                    this.output.extend_from_slice(&rest);
                    continue;
                }
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 16 << 10];
            let mut rb = ReadBuf::new(&mut chunk);
            match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    if rb.filled().is_empty() {
                        this.eof = true;
                    } else {
                        this.input.extend_from_slice(rb.filled());
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for AuthorityFix<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::AsyncReadExt;

    use super::*;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        frame_header(&mut out, payload.len(), kind, flags, stream);
        out.extend_from_slice(payload);
        out.to_vec()
    }

    fn request(enc: &mut loona_hpack::Encoder<'_>, authority: &[u8], path: &[u8]) -> Vec<u8> {
        enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", authority),
            (b"content-type", b"application/grpc"),
            (b"containerd-namespace", b"default"),
        ])
    }

    /// What the server reads from `input` through the adaptor.
    async fn through(input: Vec<u8>) -> Vec<u8> {
        let mut fix = AuthorityFix::new(std::io::Cursor::new(input));
        let mut out = Vec::new();
        fix.read_to_end(&mut out).await.unwrap();
        out
    }

    /// The frames in `bytes` after the preface: (type, flags, stream, payload).
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        assert_eq!(&bytes[..PREFACE_LEN], PREFACE);
        let mut rest = &bytes[PREFACE_LEN..];
        let mut out = Vec::new();
        while !rest.is_empty() {
            let len =
                (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
            let stream = u32::from_be_bytes([rest[5], rest[6], rest[7], rest[8]]);
            out.push((rest[3], rest[4], stream, rest[9..9 + len].to_vec()));
            rest = &rest[9 + len..];
        }
        out
    }

    /// Decodes every header block in `frames` with one server-side table.
    fn server_view(frames: &[(u8, u8, u32, Vec<u8>)]) -> Vec<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut dec = loona_hpack::Decoder::new();
        let mut blocks = Vec::new();
        let mut current = Vec::new();
        for (kind, flags, _, payload) in frames {
            if *kind == HEADERS {
                let (_, frag) = split_headers_payload(*flags, payload).unwrap();
                current = frag.to_vec();
            } else if *kind == CONTINUATION {
                current.extend_from_slice(payload);
            } else {
                continue;
            }
            if flags & END_HEADERS != 0 {
                blocks.push(dec.decode(&current).unwrap());
            }
        }
        blocks
    }

    fn authority(block: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        block
            .iter()
            .find(|(n, _)| n.as_slice() == b":authority")
            .map(|(_, v)| v.clone())
            .unwrap()
    }

    #[tokio::test]
    async fn good_authorities_pass_byte_for_byte() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[]));
        for (i, path) in [&b"/a"[..], b"/b"].into_iter().enumerate() {
            let block = request(&mut enc, b"localhost", path);
            input.extend(frame(HEADERS, END_HEADERS, 1 + 2 * i as u32, &block));
            input.extend(frame(0x0, END_STREAM, 1 + 2 * i as u32, &[0, 0, 0, 0, 0]));
        }
        assert_eq!(through(input.clone()).await, input);
    }

    #[tokio::test]
    async fn socket_paths_become_localhost_and_tables_stay_in_step() {
        let mut enc = loona_hpack::Encoder::new();
        let mut input = PREFACE.to_vec();
        // A first request with a good authority fills the client's table
        // (and, verbatim, the server's).
        let block = request(&mut enc, b"localhost", b"/first");
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
        // Then the socket path, indexed into the table by the client, and
        // reused by index in the next request; a large header forces
        // CONTINUATION frames; DATA passes in between.
        let path = b"/run/hull/hull.sock";
        let block = request(&mut enc, path, b"/second");
        input.extend(frame(HEADERS, END_HEADERS, 3, &block));
        input.extend(frame(0x0, END_STREAM, 3, b"\0\0\0\0\x03abc"));
        let big = vec![b'x'; 40_000];
        let block = enc.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", b"/third"),
            (b":authority", path),
            (b"x-big", &big[..]),
        ]);
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 5, &block));
        let out = through(input).await;
        let frames = frames(&out);
        assert!(frames.iter().all(|f| f.3.len() <= MAX_FRAME));
        assert!(frames.iter().any(|f| f.0 == CONTINUATION));
        let data: Vec<_> = frames.iter().filter(|f| f.0 == 0).collect();
        assert_eq!(data[0].3, b"\0\0\0\0\x03abc");
        let blocks = server_view(&frames);
        assert_eq!(blocks.len(), 3);
        assert_eq!(authority(&blocks[0]), b"localhost");
        assert_eq!(authority(&blocks[1]), b"localhost");
        assert_eq!(authority(&blocks[2]), b"localhost");
        let third: Vec<_> = blocks[2].iter().map(|(n, _)| n.clone()).collect();
        assert!(third.contains(&b"x-big".to_vec()));
        assert!(blocks[1].contains(&(b":path".to_vec(), b"/second".to_vec())));
        assert!(blocks[1].contains(&(b"containerd-namespace".to_vec(), b"default".to_vec())));
    }

    #[tokio::test]
    async fn undecodable_blocks_pass_on_untouched() {
        let mut input = PREFACE.to_vec();
        // An index past any table.
        let garbage = frame(HEADERS, END_HEADERS, 1, &[0xff, 0xff, 0xff, 0x7f]);
        input.extend(&garbage);
        let tail = frame(0x0, END_STREAM, 1, b"after");
        input.extend(&tail);
        assert_eq!(through(input.clone()).await, input);
        // And a frame cut short at the end of the stream.
        let mut cut = PREFACE.to_vec();
        cut.extend(&frame(HEADERS, END_HEADERS, 1, &[0x82, 0x86])[..7]);
        assert_eq!(through(cut.clone()).await, cut);
    }
}
