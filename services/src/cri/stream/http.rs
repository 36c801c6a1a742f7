//! The streaming server's HTTP side: each request names a token from one
//! of the URLs Exec, Attach or PortForward returned and asks to upgrade
//! the connection, to SPDY/3.1 (with the subprotocol in
//! `X-Stream-Protocol-Version`) or to WebSocket (in
//! `Sec-WebSocket-Protocol`). A request that does not upgrade is answered
//! 400; an unknown or used token 404; no protocol in common 403.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Pending;
use crate::cri::Cri;

pub(super) type Body = body::Full;

/// A body of one piece, without pulling in another body crate.
mod body {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use bytes::Bytes;
    use hyper::body::{Body, Frame};

    /// The whole body at once.
    #[derive(Debug)]
    pub struct Full(Option<Bytes>);

    impl Full {
        /// A body of `data`.
        pub fn new(data: Bytes) -> Full {
            Full(Some(data))
        }
    }

    impl Body for Full {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.take().map(|d| Ok(Frame::data(d))))
        }
    }
}

pub(super) fn reply(code: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from(text + "\n")));
    *r.status_mut() = code;
    r
}

/// The values of header `name`, comma lists split.
pub(super) fn header_values(req: &Request<Incoming>, name: &str) -> Vec<String> {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
        .collect()
}

/// The first protocol the client offers that `supported` holds.
pub(super) fn choose<'a>(offered: &[String], supported: &[&'a str]) -> Option<&'a str> {
    offered
        .iter()
        .find_map(|o| supported.iter().find(|s| **s == o.as_str()).copied())
}

/// Subprotocols of remotecommand over SPDY.
pub const SPDY_COMMAND: &[&str] = &["v4.channel.k8s.io"];
/// Subprotocols of port forward over SPDY.
pub const SPDY_PORTFORWARD: &[&str] = &["portforward.k8s.io"];

async fn handle(cri: Arc<Cri>, mut req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().trim_start_matches('/').to_owned();
    let (kind, token) = path.split_once('/').unwrap_or((&path, ""));
    let upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if upgrade != "websocket" && !upgrade.starts_with("spdy/3.1") {
        return Ok(reply(
            StatusCode::BAD_REQUEST,
            format!("{kind}: a streaming session needs an upgrade to SPDY/3.1 or WebSocket"),
        ));
    }
    let Some(pending) = cri.streams.take(token) else {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            format!("unknown or expired {kind} session"),
        ));
    };
    if upgrade == "websocket" {
        return Ok(super::websocket::accept(cri, req, pending));
    }
    let supported = match pending {
        Pending::PortForward(_) => SPDY_PORTFORWARD,
        _ => SPDY_COMMAND,
    };
    let offered = header_values(&req, "x-stream-protocol-version");
    let Some(protocol) = choose(&offered, supported) else {
        return Ok(reply(
            StatusCode::FORBIDDEN,
            format!(
                "none of the protocols offered ({}) is supported: {}",
                offered.join(", "),
                supported.join(", ")
            ),
        ));
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(io) = on_upgrade.await else { return };
        super::spdy_serve::serve(cri, hyper_util::rt::TokioIo::new(io), pending).await;
    });
    let mut r = Response::new(Body::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(
        http::header::CONNECTION,
        http::HeaderValue::from_static("Upgrade"),
    );
    h.insert(
        http::header::UPGRADE,
        http::HeaderValue::from_static("SPDY/3.1"),
    );
    h.insert(
        "x-stream-protocol-version",
        http::HeaderValue::from_static(protocol),
    );
    Ok(r)
}

/// Accepts connections until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cri: Arc<Cri>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = shutdown.cancelled() => return,
            conn = listener.accept() => match conn {
                Ok(c) => c,
                Err(_) => {
                    // Out of descriptors, say: back off a little.
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let cri = cri.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper::service::service_fn(move |req| handle(cri.clone(), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .with_upgrades()
                .await;
        });
    }
}
