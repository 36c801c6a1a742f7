//! A ttrpc server: accepts connections and runs each request as its own task.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use prost::Message;
use tokio::net::UnixListener;
use tokio::sync::mpsc;

use crate::frame::{self, KeyValue, Request, Response, Status, TYPE_REQUEST, TYPE_RESPONSE};
use crate::Error;

/// What a handler learns about its request besides the payload.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The request's metadata.
    pub metadata: Vec<KeyValue>,
    /// The caller's timeout in nanoseconds (0: none).
    pub timeout_nano: i64,
}

impl Context {
    /// The value of metadata `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        frame::get(&self.metadata, key)
    }
}

/// A boxed handler future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One ttrpc service: decodes the method's request, runs it, encodes the
/// reply.
pub trait Service: Send + Sync + 'static {
    /// Fully qualified name, e.g. `containerd.task.v2.Task`.
    fn name(&self) -> &'static str;
    /// Runs `method` with an encoded `payload`; an unknown method is
    /// NotImplemented (code 12).
    fn call(
        self: Arc<Self>,
        ctx: Context,
        method: String,
        payload: Vec<u8>,
    ) -> BoxFuture<Result<Vec<u8>, Status>>;
}

/// Decodes `payload` as `Req`, runs `f`, encodes its reply: the body of most
/// [`Service::call`] match arms.
pub async fn unary<Req, Resp, F, Fut>(payload: Vec<u8>, f: F) -> Result<Vec<u8>, Status>
where
    Req: Message + Default,
    Resp: Message,
    F: FnOnce(Req) -> Fut,
    Fut: Future<Output = Result<Resp, Status>>,
{
    let req = Req::decode(payload.as_slice()).map_err(|e| Status {
        code: hull_proto::errdefs::Code::InvalidArgument as i32,
        message: format!("malformed request: {e}"),
        details: Vec::new(),
    })?;
    Ok(f(req).await?.encode_to_vec())
}

/// The status of a method this server does not have.
pub fn unimplemented(service: &str, method: &str) -> Status {
    Status {
        code: hull_proto::errdefs::Code::Unimplemented as i32,
        message: format!("{service}/{method} not implemented"),
        details: Vec::new(),
    }
}

/// Serves registered services.
#[derive(Default, Clone)]
pub struct Server {
    services: HashMap<&'static str, Arc<dyn ServiceObj>>,
    in_flight: Arc<InFlight>,
}

/// Requests received whose replies are not written yet.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    idle: tokio::sync::Notify,
}

/// One request, from its frame being read until its reply is written.
struct Pending(Arc<InFlight>);

impl InFlight {
    fn begin(self: &Arc<Self>) -> Pending {
        self.count.fetch_add(1, Ordering::SeqCst);
        Pending(self.clone())
    }

    /// Resolves once no request is waiting for its reply.
    async fn drained(&self) {
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drop in between wakes it.
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// How long [`Server::serve`] waits, once told to stop, for replies still
/// being made (a handler that never returns does not hold it longer).
const DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

trait ServiceObj: Send + Sync {
    fn dispatch(
        &self,
        ctx: Context,
        method: String,
        payload: Vec<u8>,
    ) -> BoxFuture<Result<Vec<u8>, Status>>;
}

impl<S: Service> ServiceObj for Arc<S> {
    fn dispatch(
        &self,
        ctx: Context,
        method: String,
        payload: Vec<u8>,
    ) -> BoxFuture<Result<Vec<u8>, Status>> {
        self.clone().call(ctx, method, payload)
    }
}

impl Server {
    /// A server with no services.
    pub fn new() -> Server {
        Server::default()
    }

    /// Adds a service.
    pub fn register<S: Service>(mut self, service: Arc<S>) -> Server {
        self.services.insert(service.name(), Arc::new(service));
        self
    }

    /// Accepts connections on `listener` until `shutdown` resolves, then
    /// returns once every request received so far has had its reply
    /// written (the reply to the request that asked for the shutdown
    /// included), or after half a second. Running connections keep being
    /// served until their peers hang up.
    pub async fn serve(self, listener: UnixListener, shutdown: impl Future<Output = ()>) {
        let this = Arc::new(self);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    drop(listener);
                    let _ = tokio::time::timeout(DRAIN, this.in_flight.drained()).await;
                    return;
                }
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => {
                        tokio::spawn(this.clone().connection(stream));
                    }
                    Err(e) => {
                        tracing::warn!(cause = %e, "ttrpc accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                },
            }
        }
    }

    /// Serves one connection until the peer closes it.
    pub async fn connection(self: Arc<Self>, stream: tokio::net::UnixStream) {
        let (mut read, mut write) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<(Vec<u8>, Pending)>(64);
        let writer = tokio::spawn(async move {
            while let Some((buf, pending)) = rx.recv().await {
                let written = frame::write(&mut write, &buf).await;
                drop(pending);
                if written.is_err() {
                    break;
                }
            }
        });
        loop {
            let f = match frame::read(&mut read).await {
                Ok(Some(f)) => f,
                Err(Error::TooLarge(len)) => {
                    tracing::warn!(len, "ttrpc request over the size limit");
                    continue;
                }
                Ok(None) | Err(_) => break,
            };
            if f.kind != TYPE_REQUEST {
                continue;
            }
            let this = self.clone();
            let tx = tx.clone();
            let pending = self.in_flight.begin();
            tokio::spawn(async move {
                let result = match Request::decode(f.payload.as_slice()) {
                    Ok(req) => this.handle(req).await,
                    Err(e) => Err(Status {
                        code: hull_proto::errdefs::Code::InvalidArgument as i32,
                        message: format!("malformed ttrpc request: {e}"),
                        details: Vec::new(),
                    }),
                };
                let resp = match result {
                    Ok(payload) => Response {
                        status: None,
                        payload,
                    },
                    Err(status) => Response {
                        status: Some(status),
                        payload: Vec::new(),
                    },
                };
                let buf = frame::encode(f.stream, TYPE_RESPONSE, &resp.encode_to_vec());
                // The connection may be gone; the reply has nowhere to go
                // (and `pending` ends with it).
                let _ = tx.send((buf, pending)).await;
            });
        }
        drop(tx);
        // Replies still in flight finish writing before the socket closes.
        let _ = writer.await;
    }

    async fn handle(&self, req: Request) -> Result<Vec<u8>, Status> {
        let Some(service) = self.services.get(req.service.as_str()) else {
            return Err(unimplemented(&req.service, &req.method));
        };
        let ctx = Context {
            metadata: req.metadata,
            timeout_nano: req.timeout_nano,
        };
        service.dispatch(ctx, req.method, req.payload).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Client;

    /// Echoes a Status back with its code doubled; code 0 asks for an
    /// error, code 99 waits a while.
    struct Echo;

    impl Service for Echo {
        fn name(&self) -> &'static str {
            "test.Echo"
        }
        fn call(
            self: Arc<Self>,
            ctx: Context,
            method: String,
            payload: Vec<u8>,
        ) -> BoxFuture<Result<Vec<u8>, Status>> {
            Box::pin(async move {
                match method.as_str() {
                    "Echo" => {
                        unary(payload, |mut s: Status| async move {
                            if s.code == 0 {
                                return Err(Status {
                                    code: 5,
                                    message: "nope".into(),
                                    details: vec![],
                                });
                            }
                            if s.code == 99 {
                                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            }
                            s.code *= 2;
                            s.message = ctx.get("ns").unwrap_or_default().to_owned();
                            Ok(s)
                        })
                        .await
                    }
                    _ => Err(unimplemented(self.name(), &method)),
                }
            })
        }
    }

    #[tokio::test]
    async fn calls_multiplex_and_errors_carry_codes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(
            Server::new()
                .register(Arc::new(Echo))
                .serve(listener, async {
                    let _ = stop_rx.await;
                }),
        );
        let client = Client::connect(&path).await.unwrap();
        let md = vec![KeyValue {
            key: "ns".into(),
            value: "n1".into(),
        }];
        let slow = {
            let c = client.clone();
            let md = md.clone();
            tokio::spawn(async move {
                let s = Status {
                    code: 99,
                    ..Default::default()
                };
                c.call::<_, Status>("test.Echo", "Echo", &s, md, None).await
            })
        };
        for code in 1..20 {
            let s = Status {
                code,
                ..Default::default()
            };
            let r: Status = client
                .call("test.Echo", "Echo", &s, md.clone(), None)
                .await
                .unwrap();
            assert_eq!((r.code, r.message.as_str()), (code * 2, "n1"));
        }
        assert_eq!(slow.await.unwrap().unwrap().code, 198);
        let err = client
            .call::<_, Status>("test.Echo", "Echo", &Status::default(), vec![], None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Status(ref s) if s.code == 5 && s.message == "nope"),
            "{err:?}"
        );
        let err = client
            .call::<_, Status>("test.Echo", "Nope", &Status::default(), vec![], None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Status(ref s) if s.code == 12),
            "{err:?}"
        );
        let err = client
            .call::<_, Status>("test.Other", "X", &Status::default(), vec![], None)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::Status(ref s) if s.code == 12),
            "{err:?}"
        );
        let s = Status {
            code: 99,
            ..Default::default()
        };
        let err = client
            .call::<_, Status>(
                "test.Echo",
                "Echo",
                &s,
                vec![],
                Some(std::time::Duration::from_millis(10)),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Timeout));
        stop_tx.send(()).unwrap();
        server.await.unwrap();
        drop(client);
    }

    #[tokio::test]
    async fn closed_resolves_when_the_server_goes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let accept = tokio::spawn(async move { listener.accept().await.unwrap().0 });
        let client = Client::connect(&path).await.unwrap();
        let conn = accept.await.unwrap();
        assert!(!client.is_closed());
        drop(conn);
        tokio::time::timeout(std::time::Duration::from_secs(5), client.closed())
            .await
            .unwrap();
        let err = client
            .call::<_, Status>("a", "b", &Status::default(), vec![], None)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Closed | Error::Io { .. }), "{err:?}");
    }

    /// Asks its server to stop from inside a call, as a shim's Shutdown.
    struct Stopper(tokio::sync::watch::Sender<bool>);

    impl Service for Stopper {
        fn name(&self) -> &'static str {
            "test.Stopper"
        }
        fn call(
            self: Arc<Self>,
            _ctx: Context,
            method: String,
            payload: Vec<u8>,
        ) -> BoxFuture<Result<Vec<u8>, Status>> {
            Box::pin(async move {
                unary(payload, |s: Status| async move {
                    self.0.send_replace(true);
                    // The reply is made after the stop was asked for.
                    tokio::task::yield_now().await;
                    Ok(Status {
                        code: s.code + 1,
                        message: method,
                        details: vec![],
                    })
                })
                .await
            })
        }
    }

    #[tokio::test]
    async fn the_reply_to_the_call_that_stops_the_server_is_written_before_serve_returns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        // The server runs on a runtime of its own that is dropped as soon
        // as serve returns, as a process exits: whatever it had not
        // written by then is lost.
        let server = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let (tx, mut rx) = tokio::sync::watch::channel(false);
                let listener = UnixListener::from_std(listener).unwrap();
                Server::new()
                    .register(Arc::new(Stopper(tx)))
                    .serve(listener, async move {
                        let _ = rx.wait_for(|stop| *stop).await;
                    })
                    .await;
            });
            drop(rt);
        });
        let client = Client::connect(&path).await.unwrap();
        let s = Status {
            code: 41,
            ..Default::default()
        };
        let r: Status = client
            .call(
                "test.Stopper",
                "Stop",
                &s,
                vec![],
                Some(std::time::Duration::from_secs(5)),
            )
            .await
            .expect("the reply arrives");
        assert_eq!((r.code, r.message.as_str()), (42, "Stop"));
        server.join().unwrap();
    }
}
