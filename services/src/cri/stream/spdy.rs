//! SPDY/3.1 framing, as the kubelet's streaming clients (kubectl,
//! client-go, crictl) speak it after upgrading an HTTP/1.1 request: data
//! frames and the control frames a stream multiplexer needs, with header
//! blocks compressed by one zlib stream per direction over SPDY/3's
//! header dictionary.
//!
//! Only framing lives here ([`Decoder`] and [`Encoder`], for
//! `tokio_util::codec`); the session that turns frames into streams is
//! [`super::session`].

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The protocol version control frames carry.
const VERSION: u16 = 3;

/// Largest frame accepted: the 24-bit length field's limit.
const MAX_FRAME: usize = (1 << 24) - 1;

/// Largest header block accepted once inflated. Streaming clients send a
/// handful of short headers; anything near this is hostile.
const MAX_HEADERS: usize = 256 * 1024;

/// The flag ending a stream (on data, SYN_STREAM, SYN_REPLY, HEADERS).
pub const FLAG_FIN: u8 = 0x01;

/// RST_STREAM status: the stream was refused.
pub const REFUSED_STREAM: u32 = 3;

/// RST_STREAM status: the stream is not known.
pub const INVALID_STREAM: u32 = 2;

/// A header block: names (lowercase on the wire) and values.
pub type Headers = Vec<(String, String)>;

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// Its id (odd when the client opened it).
        stream_id: u32,
        /// The stream it belongs to, or 0.
        associated: u32,
        /// Its priority, 0 (highest) to 7.
        priority: u8,
        /// FIN / UNIDIRECTIONAL flags.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// The stream.
        stream_id: u32,
        /// FIN flag.
        flags: u8,
        /// Its headers.
        headers: Headers,
    },
    /// Ends a stream abnormally.
    RstStream {
        /// The stream.
        stream_id: u32,
        /// Why.
        status: u32,
    },
    /// Session settings: `(flags, id, value)`.
    Settings(Vec<(u8, u32, u32)>),
    /// A ping, answered with the same id.
    Ping(u32),
    /// The session is ending.
    GoAway {
        /// The last stream the sender handled.
        last_good: u32,
        /// Why.
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// The stream.
        stream_id: u32,
        /// FIN flag.
        flags: u8,
        /// The headers.
        headers: Headers,
    },
    /// Flow control credit.
    WindowUpdate {
        /// The stream, or 0 for the session.
        stream_id: u32,
        /// Bytes added to the window.
        delta: u32,
    },
    /// Stream data.
    Data {
        /// The stream.
        stream_id: u32,
        /// FIN flag.
        flags: u8,
        /// The bytes.
        data: Bytes,
    },
    /// A control frame of a type this session has no use for (NOOP,
    /// CREDENTIAL, or newer): read and dropped, as the spec asks.
    Ignored(u16),
}

/// What a peer sent that is not SPDY/3.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bytes do not form a frame.
    #[error("spdy: {0}")]
    Protocol(String),
    /// The socket failed.
    #[error("spdy: {0}")]
    Io(#[from] std::io::Error),
}

fn protocol(msg: impl Into<String>) -> Error {
    Error::Protocol(msg.into())
}

/// SPDY/3's zlib dictionary: the spec's list of common header words, each
/// with a 32-bit length before it, then a run of common values.
fn dictionary() -> Vec<u8> {
    const WORDS: &[&str] = &[
        "options",
        "head",
        "post",
        "put",
        "delete",
        "trace",
        "accept",
        "accept-charset",
        "accept-encoding",
        "accept-language",
        "accept-ranges",
        "age",
        "allow",
        "authorization",
        "cache-control",
        "connection",
        "content-base",
        "content-encoding",
        "content-language",
        "content-length",
        "content-location",
        "content-md5",
        "content-range",
        "content-type",
        "date",
        "etag",
        "expect",
        "expires",
        "from",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "last-modified",
        "location",
        "max-forwards",
        "pragma",
        "proxy-authenticate",
        "proxy-authorization",
        "range",
        "referer",
        "retry-after",
        "server",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "user-agent",
        "vary",
        "via",
        "warning",
        "www-authenticate",
        "method",
        "get",
        "status",
        "200 OK",
        "version",
        "HTTP/1.1",
        "url",
        "public",
        "set-cookie",
        "keep-alive",
        "origin",
    ];
    const VALUES: &[&str] = &[
        "100101201202205206300302303304305306307402405406407408409410411412413414415416417",
        "502504505",
        "203 Non-Authoritative Information",
        "204 No Content",
        "301 Moved Permanently",
        "400 Bad Request",
        "401 Unauthorized",
        "403 Forbidden",
        "404 Not Found",
        "500 Internal Server Error",
        "501 Not Implemented",
        "503 Service Unavailable",
        "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
        "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
        "chunked,text/html,image/png,image/jpg,image/gif,application/xml,",
        "application/xhtml+xml,text/plain,text/javascript,public",
        "privatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
    ];
    let mut d = Vec::with_capacity(1423);
    for w in WORDS {
        d.extend_from_slice(&(w.len() as u32).to_be_bytes());
        d.extend_from_slice(w.as_bytes());
    }
    for v in VALUES {
        d.extend_from_slice(v.as_bytes());
    }
    d
}

/// Reads frames; holds the inflating half of the header compression.
pub struct Decoder {
    inflate: Decompress,
    dictionary: Vec<u8>,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("spdy::Decoder")
    }
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder {
            inflate: Decompress::new(true),
            dictionary: dictionary(),
        }
    }
}

impl Decoder {
    /// Inflates one frame's header block (the zlib stream goes on across
    /// frames) and parses it.
    fn headers(&mut self, mut input: &[u8]) -> Result<Headers, Error> {
        let mut out: Vec<u8> = Vec::with_capacity(256);
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(out.len().max(256));
            }
            let before = self.inflate.total_in();
            let r = self
                .inflate
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            let used = (self.inflate.total_in() - before) as usize;
            input = &input[used..];
            match r {
                Ok(Status::StreamEnd) => return Err(protocol("header stream ended")),
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| protocol(format!("header dictionary: {e}")))?;
                    continue;
                }
                Err(e) => return Err(protocol(format!("header block: {e}"))),
            }
            if out.len() > MAX_HEADERS {
                return Err(protocol("header block too large"));
            }
            // Done when all input is taken and the output had room left
            // (nothing more is pending inside the inflater).
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if used == 0 && out.len() < out.capacity() {
                return Err(protocol("header block is truncated"));
            }
        }
        parse_headers(&out)
    }

    fn control(&mut self, kind: u16, flags: u8, mut body: Bytes) -> Result<Frame, Error> {
        let need = |body: &Bytes, n: usize| {
            if body.len() < n {
                Err(protocol(format!("control frame {kind} too short")))
            } else {
                Ok(())
            }
        };
        Ok(match kind {
            1 => {
                need(&body, 10)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let associated = body.get_u32() & 0x7fff_ffff;
                let priority = body.get_u8() >> 5;
                let _slot = body.get_u8();
                if stream_id == 0 {
                    return Err(protocol("SYN_STREAM for stream 0"));
                }
                Frame::SynStream {
                    stream_id,
                    associated,
                    priority,
                    flags,
                    headers: self.headers(&body)?,
                }
            }
            2 | 8 => {
                need(&body, 4)?;
                let stream_id = body.get_u32() & 0x7fff_ffff;
                let headers = self.headers(&body)?;
                if kind == 2 {
                    Frame::SynReply {
                        stream_id,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream_id,
                        flags,
                        headers,
                    }
                }
            }
            3 => {
                need(&body, 8)?;
                Frame::RstStream {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            4 => {
                need(&body, 4)?;
                let n = body.get_u32() as usize;
                if body.len() != n.saturating_mul(8) {
                    return Err(protocol("SETTINGS length does not match its entries"));
                }
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let w = body.get_u32();
                    entries.push(((w >> 24) as u8, w & 0xff_ffff, body.get_u32()));
                }
                Frame::Settings(entries)
            }
            6 => {
                need(&body, 4)?;
                Frame::Ping(body.get_u32())
            }
            7 => {
                need(&body, 8)?;
                Frame::GoAway {
                    last_good: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            9 => {
                need(&body, 8)?;
                Frame::WindowUpdate {
                    stream_id: body.get_u32() & 0x7fff_ffff,
                    delta: body.get_u32() & 0x7fff_ffff,
                }
            }
            other => Frame::Ignored(other),
        })
    }
}

fn parse_headers(mut b: &[u8]) -> Result<Headers, Error> {
    let short = || protocol("header block is short");
    let word = |b: &mut &[u8]| -> Result<String, Error> {
        if b.len() < 4 {
            return Err(short());
        }
        let n = b.get_u32() as usize;
        if b.len() < n {
            return Err(short());
        }
        let s = String::from_utf8(b[..n].to_vec()).map_err(|_| protocol("header is not UTF-8"))?;
        b.advance(n);
        Ok(s)
    };
    let n = {
        if b.len() < 4 {
            return Err(short());
        }
        b.get_u32() as usize
    };
    let mut headers = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let name = word(&mut b)?;
        let value = word(&mut b)?;
        if name.is_empty() {
            return Err(protocol("empty header name"));
        }
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

impl tokio_util::codec::Decoder for Decoder {
    type Item = Frame;
    type Error = Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if src.len() < 8 {
            return Ok(None);
        }
        let len = (u32::from_be_bytes([0, src[5], src[6], src[7]])) as usize;
        if len > MAX_FRAME {
            return Err(protocol("frame too large"));
        }
        if src.len() < 8 + len {
            src.reserve(8 + len - src.len());
            return Ok(None);
        }
        let head = src.split_to(8);
        let body = src.split_to(len).freeze();
        let flags = head[4];
        if head[0] & 0x80 != 0 {
            let version = u16::from_be_bytes([head[0] & 0x7f, head[1]]);
            if version != VERSION {
                return Err(protocol(format!("version {version} is not SPDY/3")));
            }
            let kind = u16::from_be_bytes([head[2], head[3]]);
            self.control(kind, flags, body).map(Some)
        } else {
            let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            Ok(Some(Frame::Data {
                stream_id,
                flags,
                data: body,
            }))
        }
    }
}

/// Writes frames; holds the deflating half of the header compression.
pub struct Encoder {
    deflate: Compress,
    primed: bool,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("spdy::Encoder")
    }
}

impl Default for Encoder {
    fn default() -> Encoder {
        Encoder {
            deflate: Compress::new(Compression::default(), true),
            primed: false,
        }
    }
}

impl Encoder {
    fn headers(&mut self, headers: &Headers, out: &mut BytesMut) -> Result<(), Error> {
        if !self.primed {
            self.deflate
                .set_dictionary(&dictionary())
                .map_err(|e| protocol(format!("header dictionary: {e}")))?;
            self.primed = true;
        }
        let mut raw = Vec::with_capacity(64);
        raw.put_u32(headers.len() as u32);
        for (name, value) in headers {
            raw.put_u32(name.len() as u32);
            raw.extend_from_slice(name.to_ascii_lowercase().as_bytes());
            raw.put_u32(value.len() as u32);
            raw.extend_from_slice(value.as_bytes());
        }
        let mut input = &raw[..];
        let mut buf: Vec<u8> = Vec::with_capacity(raw.len() + 64);
        loop {
            if buf.capacity() - buf.len() < 64 {
                buf.reserve(buf.len().max(64));
            }
            let before = self.deflate.total_in();
            self.deflate
                .compress_vec(input, &mut buf, FlushCompress::Sync)
                .map_err(|e| protocol(format!("compress headers: {e}")))?;
            input = &input[(self.deflate.total_in() - before) as usize..];
            if input.is_empty() && buf.len() < buf.capacity() {
                break;
            }
        }
        out.extend_from_slice(&buf);
        Ok(())
    }

    fn control(out: &mut BytesMut, kind: u16, flags: u8, body: &[u8]) -> Result<(), Error> {
        if body.len() > MAX_FRAME {
            return Err(protocol("frame too large"));
        }
        out.put_u16(0x8000 | VERSION);
        out.put_u16(kind);
        out.put_u32((u32::from(flags) << 24) | body.len() as u32);
        out.extend_from_slice(body);
        Ok(())
    }
}

impl tokio_util::codec::Encoder<Frame> for Encoder {
    type Error = Error;

    fn encode(&mut self, frame: Frame, out: &mut BytesMut) -> Result<(), Error> {
        let mut body = BytesMut::new();
        match frame {
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if data.len() > MAX_FRAME {
                    return Err(protocol("frame too large"));
                }
                out.put_u32(stream_id & 0x7fff_ffff);
                out.put_u32((u32::from(flags) << 24) | data.len() as u32);
                out.extend_from_slice(&data);
                Ok(())
            }
            Frame::SynStream {
                stream_id,
                associated,
                priority,
                flags,
                headers,
            } => {
                body.put_u32(stream_id);
                body.put_u32(associated);
                body.put_u8(priority << 5);
                body.put_u8(0);
                self.headers(&headers, &mut body)?;
                Encoder::control(out, 1, flags, &body)
            }
            Frame::SynReply {
                stream_id,
                flags,
                headers,
            } => {
                body.put_u32(stream_id);
                self.headers(&headers, &mut body)?;
                Encoder::control(out, 2, flags, &body)
            }
            Frame::Headers {
                stream_id,
                flags,
                headers,
            } => {
                body.put_u32(stream_id);
                self.headers(&headers, &mut body)?;
                Encoder::control(out, 8, flags, &body)
            }
            Frame::RstStream { stream_id, status } => {
                body.put_u32(stream_id);
                body.put_u32(status);
                Encoder::control(out, 3, 0, &body)
            }
            Frame::Settings(entries) => {
                body.put_u32(entries.len() as u32);
                for (flags, id, value) in entries {
                    body.put_u32((u32::from(flags) << 24) | (id & 0xff_ffff));
                    body.put_u32(value);
                }
                Encoder::control(out, 4, 0, &body)
            }
            Frame::Ping(id) => Encoder::control(out, 6, 0, &id.to_be_bytes()),
            Frame::GoAway { last_good, status } => {
                body.put_u32(last_good);
                body.put_u32(status);
                Encoder::control(out, 7, 0, &body)
            }
            Frame::WindowUpdate { stream_id, delta } => {
                body.put_u32(stream_id);
                body.put_u32(delta);
                Encoder::control(out, 9, 0, &body)
            }
            Frame::Ignored(kind) => Err(protocol(format!("cannot send control frame {kind}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::codec::{Decoder as _, Encoder as _};

    fn hex(s: &str) -> BytesMut {
        let b: Vec<u8> = (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect();
        BytesMut::from(&b[..])
    }

    #[test]
    fn the_dictionary_is_spdy3s() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // zlib names a dictionary by its Adler-32; SPDY/3 peers agree on
        // this one.
        let mut c = Compress::new(Compression::default(), true);
        assert_eq!(c.set_dictionary(&d).unwrap(), 0xe3c6_a7c2);
    }

    /// Frames written by Go's spdystream (the framing kubectl and the
    /// kubelet use): two SYN_STREAMs sharing one header zlib stream, then
    /// a data frame.
    #[test]
    fn reads_frames_written_by_spdystream() {
        let mut d = Decoder::default();
        let mut buf = hex(concat!(
            "80030001000000290000000100000000000078f9e3c6a7c26260606004a7b392a2d4",
            "c45c6851c29a0a0a6800000000ffff",
            "80030001010000250000000300000000000002651c0c29b6e292947c7019cd52905f",
            "04a2992c0c00000000ffff",
            "00000003010000026869",
        ));
        assert_eq!(
            d.decode(&mut buf).unwrap().unwrap(),
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "error".into())],
            }
        );
        let Some(Frame::SynStream {
            stream_id: 3,
            flags: FLAG_FIN,
            mut headers,
            ..
        }) = d.decode(&mut buf).unwrap()
        else {
            panic!("second frame is not stream 3's SYN_STREAM with FIN")
        };
        headers.sort();
        assert_eq!(
            headers,
            vec![
                ("port".into(), "80".into()),
                ("streamtype".into(), "stdout".into())
            ]
        );
        assert_eq!(
            d.decode(&mut buf).unwrap().unwrap(),
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hi")
            }
        );
        assert!(d.decode(&mut buf).unwrap().is_none());
    }

    #[test]
    fn frames_round_trip_and_arrive_in_pieces() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 5,
                associated: 0,
                priority: 2,
                flags: 0,
                headers: vec![("streamtype".into(), "stdin".into())],
            },
            Frame::SynReply {
                stream_id: 5,
                flags: 0,
                headers: vec![],
            },
            Frame::Headers {
                stream_id: 5,
                flags: FLAG_FIN,
                headers: vec![("a".into(), "b\0c".into())],
            },
            Frame::Data {
                stream_id: 5,
                flags: 0,
                data: Bytes::from(vec![7u8; 70_000]),
            },
            Frame::RstStream {
                stream_id: 5,
                status: REFUSED_STREAM,
            },
            Frame::Settings(vec![(0, 7, 65536)]),
            Frame::Ping(9),
            Frame::GoAway {
                last_good: 5,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 1000,
            },
        ];
        let mut e = Encoder::default();
        let mut wire = BytesMut::new();
        for f in &frames {
            e.encode(f.clone(), &mut wire).unwrap();
        }
        // Fed a byte at a time, the decoder waits for whole frames.
        let mut d = Decoder::default();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire.iter() {
            buf.put_u8(*b);
            while let Some(f) = d.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn hostile_frames_are_errors() {
        // Another version.
        let mut d = Decoder::default();
        let mut b = hex("8002000100000000");
        assert!(d.decode(&mut b).is_err());
        // A SYN_STREAM whose header block is not zlib.
        let mut d = Decoder::default();
        let mut b = hex("80030001000000100000000100000000000000112233445566");
        assert!(d.decode(&mut b).is_err());
        // A short PING.
        let mut d = Decoder::default();
        let mut b = hex("8003000600000002aabb");
        assert!(d.decode(&mut b).is_err());
        // SETTINGS claiming more entries than it holds.
        let mut d = Decoder::default();
        let mut b = hex("80030004000000040000ffff");
        assert!(d.decode(&mut b).is_err());
        // A header block claiming a 4 GiB name.
        assert!(parse_headers(&[0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff]).is_err());
        // Unknown control frames are skipped.
        let mut d = Decoder::default();
        let mut b = hex("800300ff00000002aabb");
        assert_eq!(d.decode(&mut b).unwrap(), Some(Frame::Ignored(0xff)));
    }

    #[test]
    fn a_zip_bomb_header_block_is_refused() {
        let mut e = Encoder::default();
        let mut wire = BytesMut::new();
        let huge = "x".repeat(MAX_HEADERS + 10);
        e.encode(
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![("a".into(), huge)],
            },
            &mut wire,
        )
        .unwrap();
        assert!(wire.len() < 4096, "compressed to {}", wire.len());
        let mut d = Decoder::default();
        assert!(d.decode(&mut wire).is_err());
    }
}
