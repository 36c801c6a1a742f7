//! A TCP proxy on 127.0.0.1 for tests that need to see or spoil what a
//! server sends: it counts the bytes going to the client, can slow them
//! down, and can flip one byte at a given offset of every connection.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How the proxy treats what the server sends.
#[derive(Debug, Default)]
pub struct Behaviour {
    /// Bytes per second towards the client; 0 is unlimited.
    pub rate: AtomicU64,
    /// Flip the byte at this offset of each connection's server stream;
    /// 0 is never.
    pub corrupt_at: AtomicU64,
}

/// A running proxy; stops accepting on drop.
pub struct TcpProxy {
    /// `127.0.0.1:PORT` to connect to.
    pub addr: String,
    /// Bytes sent from the server to clients so far.
    pub served: Arc<AtomicU64>,
    /// What it does to them (changeable while it runs).
    pub behaviour: Arc<Behaviour>,
    stop: Arc<AtomicBool>,
}

impl TcpProxy {
    /// Proxies to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> TcpProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind proxy");
        let addr = listener.local_addr().expect("addr").to_string();
        let served = Arc::new(AtomicU64::new(0));
        let behaviour = Arc::new(Behaviour::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, b, st, up) = (
            served.clone(),
            behaviour.clone(),
            stop.clone(),
            upstream.to_owned(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&up) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let (c2, s2) = match (client.try_clone(), server.try_clone()) {
                    (Ok(c), Ok(s)) => (c, s),
                    _ => continue,
                };
                // Client to server: as it is.
                std::thread::spawn(move || pipe(client, server, None));
                let (served, behaviour) = (s.clone(), b.clone());
                std::thread::spawn(move || pipe(s2, c2, Some((served, behaviour))));
            }
        });
        TcpProxy {
            addr,
            served,
            behaviour,
            stop,
        }
    }

    /// Bytes served to clients so far.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::SeqCst)
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, watch: Option<(Arc<AtomicU64>, Arc<Behaviour>)>) {
    let mut buf = vec![0u8; 16 << 10];
    let mut offset = 0u64;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((served, behaviour)) = &watch {
            let at = behaviour.corrupt_at.load(Ordering::SeqCst);
            if at > 0 && at >= offset && at < offset + n as u64 {
                let i = usize::try_from(at - offset).unwrap_or(0);
                buf[i] ^= 0xff;
            }
            let rate = behaviour.rate.load(Ordering::SeqCst);
            if rate > 0 {
                std::thread::sleep(Duration::from_secs_f64(n as f64 / rate as f64));
            }
            served.fetch_add(n as u64, Ordering::SeqCst);
        }
        offset += n as u64;
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect(&self.addr);
    }
}
