//! The streaming server's HTTP side: each request names a token from one
//! of the URLs Exec, Attach or PortForward returned. An unknown or used
//! token is answered 404. The protocols themselves (SPDY/3.1 and
//! WebSocket upgrades carrying `v4.channel.k8s.io` remotecommand and
//! `portforward.k8s.io`) are not served yet: a valid token is answered
//! 501 Not Implemented, naming what was asked, so that a client fails
//! clearly instead of hanging.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::Pending;
use crate::cri::Cri;

type Body = body::Full;

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

fn reply(code: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(Body::new(Bytes::from(text + "\n")));
    *r.status_mut() = code;
    r
}

async fn handle(cri: Arc<Cri>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let path = req.uri().path().trim_start_matches('/');
    let (kind, token) = path.split_once('/').unwrap_or((path, ""));
    let pending = match cri.streams.take(token) {
        Some(p) => p,
        None => {
            return Ok(reply(
                StatusCode::NOT_FOUND,
                format!("unknown or expired {kind} session"),
            ))
        }
    };
    let what = match pending {
        Pending::Exec(r) => format!("exec of {:?} in container {}", r.cmd, r.container_id),
        Pending::Attach(r) => format!("attach to container {}", r.container_id),
        Pending::PortForward(r) => format!("port forward to pod {}", r.pod_sandbox_id),
    };
    Ok(reply(
        StatusCode::NOT_IMPLEMENTED,
        format!("{what}: hull's streaming server does not serve SPDY or WebSocket streams yet"),
    ))
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
                .await;
        });
    }
}
