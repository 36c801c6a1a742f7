//! The streaming server: the URLs Exec, Attach and PortForward return
//! point here, on loopback by default. A URL holds a one-time token for
//! the request it was made for; it is good once, for
//! `[cri] stream_idle_timeout`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hull_proto::errdefs::Kind;
use hull_proto::runtime::v1::{AttachRequest, ExecRequest, PortForwardRequest};
use tonic::Status;

use super::{status_of, Cri};

mod http;
mod portforward;
mod remotecommand;
pub mod session;
pub mod spdy;
mod spdy_serve;
mod websocket;
use crate::config::CriConfig;

/// What a token was issued for.
#[derive(Debug, Clone)]
pub enum Pending {
    /// An exec.
    Exec(ExecRequest),
    /// An attach.
    Attach(AttachRequest),
    /// A port forward.
    PortForward(PortForwardRequest),
}

/// The server and its tokens.
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    listener: Mutex<Option<tokio::net::TcpListener>>,
    tokens: Mutex<HashMap<String, (Instant, Pending)>>,
    ttl: Duration,
}

impl Server {
    /// Listens where `[cri]` says.
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn bind(config: &CriConfig) -> std::io::Result<Server> {
        let ip: std::net::IpAddr = config
            .stream_server_address
            .parse()
            .map_err(|_| std::io::Error::other("stream_server_address is not an IP address"))?;
        let listener =
            tokio::net::TcpListener::bind(SocketAddr::new(ip, config.stream_server_port)).await?;
        let addr = listener.local_addr()?;
        let ttl = humantime::parse_duration(&config.stream_idle_timeout)
            .unwrap_or(Duration::from_secs(4 * 3600));
        Ok(Server {
            addr,
            listener: Mutex::new(Some(listener)),
            tokens: Mutex::new(HashMap::new()),
            ttl,
        })
    }

    fn tokens(&self) -> MutexGuard<'_, HashMap<String, (Instant, Pending)>> {
        self.tokens.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A URL for `pending`.
    pub fn issue(&self, pending: Pending) -> String {
        let token = super::new_id()[..32].to_owned();
        let kind = match &pending {
            Pending::Exec(_) => "exec",
            Pending::Attach(_) => "attach",
            Pending::PortForward(_) => "portforward",
        };
        let mut tokens = self.tokens();
        let ttl = self.ttl;
        tokens.retain(|_, (at, _)| at.elapsed() < ttl);
        tokens.insert(token.clone(), (Instant::now(), pending));
        format!("http://{}/{kind}/{token}", self.addr)
    }

    /// Takes the request a token was issued for (once).
    pub fn take(&self, token: &str) -> Option<Pending> {
        let (at, p) = self.tokens().remove(token)?;
        (at.elapsed() < self.ttl).then_some(p)
    }

    /// Serves until `shutdown`.
    pub async fn serve(&self, cri: Arc<Cri>, shutdown: tokio_util::sync::CancellationToken) {
        let Some(listener) = self
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        http::serve(listener, cri, shutdown).await;
    }
}

impl Cri {
    /// Exec's URL.
    ///
    /// # Errors
    /// NotFound, FailedPrecondition (not running), InvalidArgument.
    pub(super) fn exec_url(&self, mut req: ExecRequest) -> Result<String, Status> {
        let c = self.running_container(&req.container_id)?;
        if req.cmd.is_empty() {
            return Err(status_of(Kind::InvalidArgument, "no command to run"));
        }
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(status_of(
                Kind::InvalidArgument,
                "one of stdin, stdout or stderr must be set",
            ));
        }
        if req.tty && req.stderr {
            // With a terminal both streams are one.
            req.stderr = false;
        }
        req.container_id = c.id;
        Ok(self.streams.issue(Pending::Exec(req)))
    }

    /// Attach's URL.
    ///
    /// # Errors
    /// NotFound, FailedPrecondition (not running), InvalidArgument.
    pub(super) fn attach_url(&self, mut req: AttachRequest) -> Result<String, Status> {
        let c = self.running_container(&req.container_id)?;
        if !(req.stdin || req.stdout || req.stderr) {
            return Err(status_of(
                Kind::InvalidArgument,
                "one of stdin, stdout or stderr must be set",
            ));
        }
        if req.stdin && !c.config.stdin {
            return Err(status_of(
                Kind::FailedPrecondition,
                format!("container {:?} was not created with stdin", c.id),
            ));
        }
        req.tty = c.config.tty;
        req.container_id = c.id;
        Ok(self.streams.issue(Pending::Attach(req)))
    }

    /// PortForward's URL.
    ///
    /// # Errors
    /// NotFound for an unknown pod; FailedPrecondition when it has no
    /// network namespace of its own.
    pub(super) fn port_forward_url(&self, mut req: PortForwardRequest) -> Result<String, Status> {
        let s = self.find_sandbox(&req.pod_sandbox_id)?;
        if s.state.stopped || s.state.pid == 0 {
            return Err(status_of(
                Kind::FailedPrecondition,
                format!("sandbox {:?} is not ready", s.id),
            ));
        }
        req.pod_sandbox_id = s.id;
        Ok(self.streams.issue(Pending::PortForward(req)))
    }
}
