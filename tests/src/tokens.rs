//! A Docker token server for tests: docker-registry's `auth.token` mode
//! sends clients here; it checks basic credentials and answers with a JWT
//! (RS256, signed with openssl by a key the test made, its certificate in
//! the `x5c` header so the registry verifies it against its bundle).
//!
//! The endpoint speaks just enough HTTP/1.1 for one GET per connection;
//! it listens on 127.0.0.1 only.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

/// A running token server.
pub struct TokenServer {
    /// `http://127.0.0.1:PORT/token`.
    pub realm: String,
    /// The certificate bundle the registry trusts (`rootcertbundle`).
    pub bundle: PathBuf,
    /// Tokens handed out so far.
    pub issued: Arc<AtomicU64>,
    /// Seconds a token's `exp` lies ahead of its issue; docker-registry
    /// honours tokens for 60 s past `exp`, so -55 gives one that works for
    /// about 5 s.
    pub exp_offset: Arc<AtomicI64>,
}

/// Issuer and audience the registry is configured with.
pub const ISSUER: &str = "hull-test-issuer";
/// The registry's service name.
pub const SERVICE: &str = "hull-test-registry";

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

fn openssl(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut child = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run openssl");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input)
            .expect("write");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

impl TokenServer {
    /// Starts a server in `dir` that accepts `user:password`.
    pub fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "token.key",
                "-out",
                "token.pem",
                "-days",
                "2",
                "-subj",
                "/CN=hull test token signer",
            ],
            None,
        );
        let der = openssl(dir, &["x509", "-in", "token.pem", "-outform", "der"], None);
        let x5c = base64::engine::general_purpose::STANDARD.encode(der);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind token server");
        let realm = format!("http://{}/token", listener.local_addr().expect("addr"));
        let issued = Arc::new(AtomicU64::new(0));
        let exp_offset = Arc::new(AtomicI64::new(300));
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let bundle = dir.join("token.pem");
        let (dir, n, valid) = (dir.to_owned(), issued.clone(), exp_offset.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(k) => req.extend_from_slice(&buf[..k]),
                    }
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let authorized = text.lines().any(|l| {
                    l.to_ascii_lowercase().starts_with("authorization:")
                        && l[14..].trim() == expected
                });
                let scope = text
                    .lines()
                    .next()
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|p| p.split_once('?'))
                    .and_then(|(_, q)| q.split('&').find_map(|kv| kv.strip_prefix("scope=")))
                    .map(decode)
                    .unwrap_or_default();
                let (status, body) = if authorized {
                    n.fetch_add(1, Ordering::SeqCst);
                    let token = sign(&dir, &x5c, &scope, valid.load(Ordering::SeqCst));
                    // A long expires_in: a client keeps the token past its
                    // exp and must renew it when the registry refuses it.
                    (
                        "200 OK",
                        format!("{{\"token\":\"{token}\",\"expires_in\":3600}}"),
                    )
                } else {
                    (
                        "401 Unauthorized",
                        "{\"details\":\"bad credentials\"}".to_owned(),
                    )
                };
                let _ = write!(
                    conn,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        TokenServer {
            realm,
            bundle,
            issued,
            exp_offset,
        }
    }

    /// The registry config section for this server.
    pub fn registry_auth(&self) -> String {
        format!(
            "auth:\n  token:\n    realm: {}\n    service: {SERVICE}\n    issuer: {ISSUER}\n    rootcertbundle: {}\n",
            self.realm,
            self.bundle.display()
        )
    }
}

/// `%3A` and friends, as a query value carries them.
fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let Some(v) = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(if b[i] == b'+' { b' ' } else { b[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A JWT granting `scope` (`repository:NAME:ACTIONS`).
fn sign(dir: &Path, x5c: &str, scope: &str, exp_offset: i64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut parts = scope.splitn(3, ':');
    let (kind, name, actions) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let actions: Vec<String> = actions.split(',').map(|a| format!("\"{a}\"")).collect();
    let header = format!("{{\"alg\":\"RS256\",\"typ\":\"JWT\",\"x5c\":[\"{x5c}\"]}}");
    let claims = format!(
        "{{\"iss\":\"{ISSUER}\",\"sub\":\"hull\",\"aud\":\"{SERVICE}\",\"exp\":{},\"nbf\":{},\"iat\":{now},\"jti\":\"{now}-{}\",\"access\":[{{\"type\":\"{kind}\",\"name\":\"{name}\",\"actions\":[{}]}}]}}",
        now.saturating_add_signed(exp_offset),
        now.saturating_sub(10),
        std::process::id(),
        actions.join(",")
    );
    let input = format!(
        "{}.{}",
        b64url(header.as_bytes()),
        b64url(claims.as_bytes())
    );
    let sig = openssl(
        dir,
        &["dgst", "-sha256", "-sign", "token.key"],
        Some(input.as_bytes()),
    );
    format!("{input}.{}", b64url(&sig))
}
