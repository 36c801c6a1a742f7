//! Port forwarding behind the streaming URLs: a connection to a port on
//! the pod's loopback, made from inside the pod's network namespace, and
//! its bytes copied to and from the client's stream, whatever the
//! transport.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::super::Cri;

/// Connects to `port` on loopback inside the namespace at `netns` (the
/// host's when None). The socket is made by a thread that joins the
/// namespace and ends, so no thread of hulld's is left in a pod's
/// namespace.
pub async fn connect(netns: Option<PathBuf>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("hull-portforward".into())
        .spawn(move || {
            let _ = tx.send(connect_in(netns.as_deref(), port));
        })?;
    let s = rx
        .await
        .map_err(|_| std::io::Error::other("port forward thread died"))??;
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}

fn connect_in(netns: Option<&Path>, port: u16) -> std::io::Result<std::net::TcpStream> {
    if let Some(ns) = netns {
        let f = std::fs::File::open(ns)?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| std::io::Error::other(format!("join the pod's network: {e}")))?;
    }
    std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        std::time::Duration::from_secs(10),
    )
}

/// Copies between the client's stream (`from_client`, `to_client`) and a
/// connection to `port` in pod `pod_id`; an error is returned as text
/// for the port's error stream.
pub(super) async fn forward(
    cri: &Cri,
    pod_id: &str,
    port: u16,
    mut from_client: mpsc::Receiver<Bytes>,
    to_client: mpsc::Sender<Bytes>,
) -> Result<(), String> {
    let s = cri
        .find_sandbox(pod_id)
        .map_err(|e| e.message().to_owned())?;
    if s.state.stopped {
        return Err(format!("pod sandbox {pod_id} is not running"));
    }
    let conn = connect(s.state.netns.clone(), port)
        .await
        .map_err(|e| format!("error forwarding port {port} to pod {pod_id}: {e}"))?;
    let (mut r, mut w) = conn.into_split();
    let up = async move {
        while let Some(b) = from_client.recv().await {
            if w.write_all(&b).await.is_err() {
                return;
            }
        }
        // The client is done sending: so is the connection.
        let _ = w.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if to_client
                        .send(Bytes::copy_from_slice(&buf[..n]))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    // The pod closing its side ends the forward; the client closing its
    // side only half-closes.
    let up = tokio::spawn(up);
    down.await;
    up.abort();
    Ok(())
}
