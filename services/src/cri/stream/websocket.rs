//! The streaming protocols over WebSocket: every message starts with a
//! channel byte. Remotecommand (`v4.channel.k8s.io`, and
//! `v5.channel.k8s.io`, which adds closing a channel with a message on
//! channel 255): 0 stdin, 1 stdout, 2 stderr, 3 the status, 4 resize.
//! Port forward: the ports come from the URL's `port` query, channel 2i
//! carries port i's data and 2i+1 its errors, and each channel's first
//! message from the server is its port (16 bits, little-endian).

use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::http::{choose, header_values, reply, Body};
use super::remotecommand::Io;
use super::{portforward, Pending};
use crate::cri::Cri;

/// Remotecommand's subprotocols, preferred first.
const COMMAND: &[&str] = &["v5.channel.k8s.io", "v4.channel.k8s.io"];
/// Port forward's subprotocols.
const PORTFORWARD: &[&str] = &["v4.channel.k8s.io", "portforward.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;
/// v5: a message on this channel closes the channel its byte names.
const CLOSE: u8 = 255;

/// Answers a WebSocket upgrade for `pending` and serves it.
pub(super) fn accept(
    cri: Arc<Cri>,
    mut req: Request<Incoming>,
    pending: Pending,
) -> Response<Body> {
    let Some(key) = req
        .headers()
        .get("sec-websocket-key")
        .map(|k| derive_accept_key(k.as_bytes()))
    else {
        return reply(StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key".into());
    };
    let offered = header_values(&req, "sec-websocket-protocol");
    let supported = match pending {
        Pending::PortForward(_) => PORTFORWARD,
        _ => COMMAND,
    };
    let protocol = choose(&offered, supported);
    if protocol.is_none() && !(offered.is_empty() && matches!(pending, Pending::PortForward(_))) {
        return reply(
            StatusCode::FORBIDDEN,
            format!(
                "none of the protocols offered ({}) is supported: {}",
                offered.join(", "),
                supported.join(", ")
            ),
        );
    }
    let ports: Vec<u16> = req
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == "port" || *k == "ports")
        .flat_map(|(_, v)| v.split(',').map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|p| p.parse().ok())
        .collect();
    if matches!(pending, Pending::PortForward(_)) && ports.is_empty() {
        return reply(
            StatusCode::BAD_REQUEST,
            "port forward over WebSocket needs the ports in the URL's port query".into(),
        );
    }
    let v5 = protocol == Some("v5.channel.k8s.io");
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(io) = on_upgrade.await else { return };
        let ws =
            WebSocketStream::from_raw_socket(hyper_util::rt::TokioIo::new(io), Role::Server, None)
                .await;
        match pending {
            Pending::Exec(req) => {
                let tty = req.tty;
                let (i, o, e) = (req.stdin, req.stdout, req.stderr && !tty);
                command(ws, v5, (i, o, e, tty), |io| async move {
                    cri.stream_exec(req, io).await
                })
                .await;
            }
            Pending::Attach(req) => {
                let tty = req.tty;
                let (i, o, e) = (req.stdin, req.stdout, req.stderr && !tty);
                command(ws, v5, (i, o, e, tty), |io| async move {
                    cri.stream_attach(req, io).await
                })
                .await;
            }
            Pending::PortForward(req) => port_forward(ws, &cri, &req.pod_sandbox_id, ports).await,
        }
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
        http::HeaderValue::from_static("websocket"),
    );
    if let Ok(v) = http::HeaderValue::from_str(&key) {
        h.insert("sec-websocket-accept", v);
    }
    if let Some(p) = protocol {
        h.insert("sec-websocket-protocol", http::HeaderValue::from_static(p));
    }
    r
}

fn framed(channel: u8, data: &[u8]) -> Message {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.put_u8(channel);
    b.extend_from_slice(data);
    Message::Binary(b.freeze())
}

type Ws = WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;

/// Writes what the returned sender gets to the socket, in order.
fn writer(
    mut sink: futures::stream::SplitSink<Ws, Message>,
) -> (mpsc::Sender<Message>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Message>(32);
    let task = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    (tx, task)
}

/// Copies what the returned sender gets to `channel`.
fn to_channel(
    out: &mpsc::Sender<Message>,
    channel: u8,
) -> (mpsc::Sender<Bytes>, tokio::task::JoinHandle<()>) {
    let (tx, mut rx) = mpsc::channel::<Bytes>(16);
    let out = out.clone();
    let task = tokio::spawn(async move {
        while let Some(b) = rx.recv().await {
            if out.send(framed(channel, &b)).await.is_err() {
                return;
            }
        }
    });
    (tx, task)
}

async fn command<F, Fut>(ws: Ws, v5: bool, wants: (bool, bool, bool, bool), run: F)
where
    F: FnOnce(Io) -> Fut,
    Fut: std::future::Future<Output = super::remotecommand::Outcome>,
{
    let (stdin, stdout, stderr, tty) = wants;
    let (sink, mut stream) = ws.split();
    let (out, write_task) = writer(sink);
    let hangup = CancellationToken::new();
    let mut io = Io {
        hangup: hangup.clone(),
        ..Io::default()
    };
    let (mut stdin_tx, mut resize_tx) = (None, None);
    if stdin {
        let (tx, rx) = mpsc::channel(16);
        stdin_tx = Some(tx);
        io.stdin = Some(rx);
    }
    if tty {
        let (tx, rx) = mpsc::channel(16);
        resize_tx = Some(tx);
        io.resize = Some(rx);
    }
    {
        let hangup = hangup.clone();
        tokio::spawn(async move {
            while let Some(Ok(m)) = stream.next().await {
                let data = match m {
                    Message::Binary(b) => b,
                    Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
                    Message::Close(_) => break,
                    _ => continue,
                };
                let Some((&channel, rest)) = data.split_first() else {
                    continue;
                };
                let rest = data.slice(data.len() - rest.len()..);
                match channel {
                    STDIN => {
                        if let Some(tx) = &stdin_tx {
                            if !rest.is_empty() && tx.send(rest).await.is_err() {
                                stdin_tx = None;
                            }
                        }
                    }
                    RESIZE => {
                        if let Some(tx) = &resize_tx {
                            let _ = tx.send(rest).await;
                        }
                    }
                    CLOSE if v5 => match rest.first() {
                        Some(&STDIN) => stdin_tx = None,
                        Some(&RESIZE) => resize_tx = None,
                        _ => {}
                    },
                    _ => {}
                }
            }
            hangup.cancel();
        });
    }
    let mut pumps = Vec::new();
    if stdout {
        let (tx, t) = to_channel(&out, STDOUT);
        io.stdout = Some(tx);
        pumps.push(t);
    }
    if stderr {
        let (tx, t) = to_channel(&out, STDERR);
        io.stderr = Some(tx);
        pumps.push(t);
    }
    let outcome = run(io).await;
    for p in pumps {
        let _ = p.await;
    }
    let _ = out.send(framed(ERROR, &outcome.status())).await;
    let _ = out.send(Message::Close(None)).await;
    drop(out);
    let _ = write_task.await;
}

async fn port_forward(ws: Ws, cri: &Arc<Cri>, pod_id: &str, ports: Vec<u16>) {
    let (sink, mut stream) = ws.split();
    let (out, write_task) = writer(sink);
    let mut inputs = Vec::new();
    let mut forwards = Vec::new();
    for (i, port) in ports.iter().copied().enumerate() {
        let (data_ch, err_ch) = ((2 * i) as u8, (2 * i + 1) as u8);
        for ch in [data_ch, err_ch] {
            let _ = out.send(framed(ch, &port.to_le_bytes())).await;
        }
        let (tx, rx) = mpsc::channel::<Bytes>(16);
        inputs.push(tx);
        let (to_client, pump) = to_channel(&out, data_ch);
        let cri = cri.clone();
        let out = out.clone();
        let pod_id = pod_id.to_owned();
        forwards.push(tokio::spawn(async move {
            let r = portforward::forward(&cri, &pod_id, port, rx, to_client).await;
            let _ = pump.await;
            if let Err(msg) = r {
                let _ = out.send(framed(err_ch, msg.as_bytes())).await;
            }
        }));
    }
    let reader = async {
        while let Some(Ok(m)) = stream.next().await {
            let data = match m {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            let Some(&channel) = data.first() else {
                continue;
            };
            let i = usize::from(channel / 2);
            if channel % 2 == 0 && data.len() > 1 {
                if let Some(tx) = inputs.get(i) {
                    let _ = tx.send(data.slice(1..)).await;
                }
            }
        }
    };
    let all_done = futures::future::join_all(forwards.iter_mut());
    tokio::select! {
        () = reader => {}
        _ = all_done => {}
    }
    for f in forwards {
        f.abort();
    }
    let _ = out.send(Message::Close(None)).await;
    drop(out);
    let _ = write_task.await;
}
