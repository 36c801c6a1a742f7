//! One repository of a registry over HTTP: its hosts tried in order, the
//! registry's challenges answered, every document checked against its
//! digest before anyone sees it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, RANGE, WWW_AUTHENTICATE,
};
use reqwest::{Method, Response, StatusCode};
use sha2::{Digest as _, Sha256};

use hull_oci::media;
use hull_proto::containerd::types::Descriptor;

use super::auth::{self, Challenge, TokenCache};
use super::hosts::{self, Credentials, Host, RegistryConfig};
use super::reference::ImageRef;
use super::{DistributionError, Result};

/// What a manifest GET accepts, as containerd asks.
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json, */*";

/// Manifests and indexes larger than this are refused.
const MAX_MANIFEST: usize = 8 << 20;

/// Token server answers larger than this are refused.
const MAX_TOKEN: usize = 1 << 20;

/// Per-request choices a client may make (the Transfer API's resolver).
#[derive(Debug, Clone, Default)]
pub struct ResolveOptions {
    /// Credentials given with the request; they win over the configured ones.
    pub credentials: Option<Credentials>,
    /// Headers for every request.
    pub headers: BTreeMap<String, String>,
    /// A hosts directory instead of the configured one.
    pub host_dir: Option<std::path::PathBuf>,
    /// `http` or `https` for hosts without configuration.
    pub default_scheme: Option<String>,
}

/// Registries as hulld reaches them: config, HTTP clients per TLS setup,
/// tokens.
#[derive(Debug)]
pub struct Registries {
    config: RegistryConfig,
    tokens: TokenCache,
    clients: Mutex<HashMap<String, reqwest::Client>>,
}

impl Registries {
    /// Registries configured by `config`.
    pub fn new(config: RegistryConfig) -> Arc<Registries> {
        Arc::new(Registries {
            config,
            tokens: TokenCache::default(),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// The `[registry]` config.
    pub fn config(&self) -> &RegistryConfig {
        &self.config
    }

    /// The repository `r` names, over the hosts configured for its registry.
    ///
    /// # Errors
    /// A malformed hosts.toml; unreadable credentials.
    pub fn repository(self: &Arc<Self>, r: &ImageRef, opts: &ResolveOptions) -> Result<Repository> {
        let hosts = hosts::hosts_for(
            &self.config,
            r.host(),
            opts.host_dir.as_deref(),
            opts.default_scheme.as_deref(),
        )?;
        let credentials = match &opts.credentials {
            Some(c) => Some(c.clone()),
            None => auth::lookup(&self.config, r.host())?,
        };
        Ok(Repository {
            registries: self.clone(),
            name: r.repository().to_owned(),
            registry: r.host().to_owned(),
            hosts,
            credentials,
            headers: opts.headers.clone(),
        })
    }

    /// An HTTP client for `host`'s TLS setup, built once.
    fn client(&self, host: &Host) -> Result<reqwest::Client> {
        let key = format!("{}|{:?}|{:?}", host.skip_verify, host.ca, host.client);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| DistributionError::HostConfig {
                path: p.to_owned(),
                reason: e.to_string(),
            })
        };
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(Duration::from_secs(30))
            .read_timeout(Duration::from_secs(60))
            .tcp_keepalive(Duration::from_secs(30))
            .user_agent(concat!("hull/", env!("CARGO_PKG_VERSION")))
            .danger_accept_invalid_certs(host.skip_verify);
        for ca in &host.ca {
            let pem = read(ca)?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                DistributionError::HostConfig {
                    path: ca.clone(),
                    reason: format!("not a PEM certificate: {e}"),
                }
            })? {
                b = b.add_root_certificate(cert);
            }
        }
        if let Some((cert, key)) = host.client.first() {
            let mut pem = read(cert)?;
            if let Some(k) = key {
                pem.push(b'\n');
                pem.extend(read(k)?);
            }
            let id =
                reqwest::Identity::from_pem(&pem).map_err(|e| DistributionError::HostConfig {
                    path: cert.clone(),
                    reason: format!("client certificate: {e}"),
                })?;
            b = b.identity(id);
        }
        let client = b.build().map_err(|e| DistributionError::HostConfig {
            path: std::path::PathBuf::from(host.base.as_str()),
            reason: format!("HTTP client: {e}"),
        })?;
        clients.insert(key, client.clone());
        Ok(client)
    }
}

/// A blob's bytes as the registry sends them.
pub struct BlobStream {
    /// The response whose body is the blob (from `offset`).
    pub response: Response,
    /// Where the body starts in the blob: the offset asked for when the
    /// host honoured the Range, else 0.
    pub offset: u64,
}

/// One repository over the hosts that serve it.
#[derive(Debug, Clone)]
pub struct Repository {
    registries: Arc<Registries>,
    /// Repository path, e.g. `library/busybox`.
    name: String,
    /// Registry name, e.g. `docker.io`.
    registry: String,
    hosts: Vec<Host>,
    credentials: Option<Credentials>,
    headers: BTreeMap<String, String>,
}

impl Repository {
    /// The registry's name (credentials and image names use it).
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// Sends a request to `host`, answering a 401 challenge once.
    async fn send(
        &self,
        host: &Host,
        method: Method,
        path: &str,
        extra: &[(HeaderName, String)],
        actions: &str,
    ) -> Result<Response> {
        self.send_body(host, method, &host.url(path), extra, actions, None)
            .await
    }

    /// Sends to `url` (on `host`) with a body made by `body` (made again
    /// when a challenge makes the request go twice).
    async fn send_body(
        &self,
        host: &Host,
        method: Method,
        url: &str,
        extra: &[(HeaderName, String)],
        actions: &str,
        body: Option<&(dyn Fn() -> Result<reqwest::Body> + Send + Sync)>,
    ) -> Result<Response> {
        let client = self.registries.client(host)?;
        let url = url.to_owned();
        let scope = format!("repository:{}:{actions}", self.name);
        // What one caller's credentials earned is kept for that caller's
        // credentials alone: another request without them must not ride
        // on it.
        let who = self
            .credentials
            .as_ref()
            .map(|c| sha256(format!("{}:{}", c.username, c.password).as_bytes()))
            .unwrap_or_default();
        let cache_key = format!("{scope}|{who}");
        let authority = host.authority();
        let build = |auth: Option<&str>| -> Result<reqwest::RequestBuilder> {
            let mut headers = HeaderMap::new();
            for (k, vs) in &host.headers {
                for v in vs {
                    append(&mut headers, k, v, &url)?;
                }
            }
            for (k, v) in &self.headers {
                append(&mut headers, k, v, &url)?;
            }
            for (k, v) in extra {
                append(&mut headers, k.as_str(), v, &url)?;
            }
            if let Some(a) = auth {
                append(&mut headers, AUTHORIZATION.as_str(), a, &url)?;
            }
            let mut req = client.request(method.clone(), &url).headers(headers);
            if let Some(make) = body {
                req = req.body(make()?);
            }
            Ok(req)
        };
        let cached = self.registries.tokens.get(&authority, &cache_key);
        let first = build(cached.as_deref())?.send().await.map_err(|source| {
            DistributionError::Connect {
                url: url.clone(),
                source,
            }
        })?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        if cached.is_some() {
            self.registries.tokens.forget(&authority, &cache_key);
        }
        let challenges: Vec<Challenge> = first
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(auth::parse_challenges)
            .collect();
        let Some((header, lifetime)) = self.answer(&client, &challenges, &scope, &url).await?
        else {
            return Err(DistributionError::Unauthorized {
                url,
                status: 401,
                with_credentials: false,
            });
        };
        let second =
            build(Some(&header))?
                .send()
                .await
                .map_err(|source| DistributionError::Connect {
                    url: url.clone(),
                    source,
                })?;
        if matches!(
            second.status(),
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
        ) {
            return Err(DistributionError::Unauthorized {
                url,
                status: second.status().as_u16(),
                with_credentials: self.credentials.is_some(),
            });
        }
        self.registries
            .tokens
            .put(&authority, &cache_key, header, lifetime);
        Ok(second)
    }

    /// The Authorization header that answers `challenges`, and how long
    /// it may be kept; None when nothing can answer them.
    async fn answer(
        &self,
        client: &reqwest::Client,
        challenges: &[Challenge],
        scope: &str,
        url: &str,
    ) -> Result<Option<(String, Option<Duration>)>> {
        if let Some(c) = challenges.iter().find(|c| c.scheme == "bearer") {
            let Some(realm) = c.params.get("realm") else {
                return Ok(None);
            };
            let mut req = client.get(realm.as_str());
            let mut query: Vec<(&str, &str)> = Vec::new();
            if let Some(s) = c.params.get("service") {
                query.push(("service", s));
            }
            query.push(("scope", c.params.get("scope").map_or(scope, String::as_str)));
            req = req.query(&query);
            if let Some(creds) = &self.credentials {
                req = req.header(AUTHORIZATION, auth::basic(creds));
            }
            let resp = req
                .send()
                .await
                .map_err(|source| DistributionError::Connect {
                    url: realm.clone(),
                    source,
                })?;
            let status = resp.status();
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                return Err(DistributionError::Unauthorized {
                    url: realm.clone(),
                    status: status.as_u16(),
                    with_credentials: self.credentials.is_some(),
                });
            }
            // A token answer is small; a larger one is refused, not buffered.
            let body = read_limited(resp, realm, MAX_TOKEN).await?;
            if !status.is_success() {
                return Err(protocol(realm, status, &body));
            }
            let token: auth::TokenAnswer =
                serde_json::from_slice(&body).map_err(|_| protocol(realm, status, &body))?;
            if token.value().is_empty() {
                return Err(protocol(realm, status, &body));
            }
            return Ok(Some((
                format!("Bearer {}", token.value()),
                Some(token.lifetime()),
            )));
        }
        if challenges.iter().any(|c| c.scheme == "basic") {
            return Ok(self.credentials.as_ref().map(|c| (auth::basic(c), None)));
        }
        tracing::debug!(url, "401 without a challenge hull can answer");
        Ok(None)
    }

    /// Fetches the manifest or index `object` (a tag or digest) names from
    /// the first host that has it, checked against its digest.
    ///
    /// # Errors
    /// NotFound, Unauthorized, Connect (the last host's error), Verify.
    pub async fn resolve(&self, object: &str) -> Result<(Descriptor, Bytes)> {
        let by_digest = object.contains(':');
        let mut last = None;
        for host in self.hosts.iter().filter(|h| {
            if by_digest {
                h.capabilities.pull || h.capabilities.resolve
            } else {
                h.capabilities.resolve
            }
        }) {
            match self.manifest_from(host, object).await {
                Ok(found) => return Ok(found),
                Err(e) => {
                    tracing::debug!(host = %host.base, error = %e, "resolve: trying the next host");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| DistributionError::NotFound {
            what: "host that may resolve",
            name: format!("{}/{}", self.registry, self.name),
        }))
    }

    async fn manifest_from(&self, host: &Host, object: &str) -> Result<(Descriptor, Bytes)> {
        let path = format!("{}/manifests/{object}", self.name);
        let resp = self
            .send(
                host,
                Method::GET,
                &path,
                &[(ACCEPT, MANIFEST_ACCEPT.to_owned())],
                "pull",
            )
            .await?;
        let url = host.url(&path);
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(DistributionError::NotFound {
                what: "manifest",
                name: format!("{}/{}:{object}", self.registry, self.name),
            });
        }
        let header_digest = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_owned());
        let body = read_limited(resp, &url, MAX_MANIFEST).await?;
        if !status.is_success() {
            return Err(protocol(&url, status, &body));
        }
        let digest = sha256(&body);
        let want = if object.contains(':') {
            Some(object.to_owned())
        } else {
            header_digest
        };
        if let Some(w) = want {
            if w != digest {
                return Err(DistributionError::Verify {
                    digest: w,
                    reason: format!("the registry sent {digest}"),
                });
            }
        }
        let media_type = media_type_of(&body, content_type.as_deref());
        Ok((
            Descriptor {
                media_type,
                digest,
                size: i64::try_from(body.len()).unwrap_or(i64::MAX),
                annotations: Default::default(),
            },
            body,
        ))
    }

    /// Fetches the manifest `desc` names, checked against it.
    ///
    /// # Errors
    /// As [`Repository::resolve`]; Verify when the size differs.
    pub async fn fetch_manifest(&self, desc: &Descriptor) -> Result<Bytes> {
        let (got, body) = self.resolve(&desc.digest).await?;
        if got.size != desc.size {
            return Err(DistributionError::Verify {
                digest: desc.digest.clone(),
                reason: format!("size {} where the descriptor says {}", got.size, desc.size),
            });
        }
        Ok(body)
    }

    /// Opens blob `digest` at `offset` on the first host that has it.
    ///
    /// # Errors
    /// NotFound, Unauthorized, Connect (the last host's error).
    pub async fn blob(&self, digest: &str, offset: u64) -> Result<BlobStream> {
        let path = format!("{}/blobs/{digest}", self.name);
        let mut last = None;
        for host in self.hosts.iter().filter(|h| h.capabilities.pull) {
            let range: Vec<(HeaderName, String)> = if offset > 0 {
                vec![(RANGE, format!("bytes={offset}-"))]
            } else {
                Vec::new()
            };
            let resp = match self.send(host, Method::GET, &path, &range, "pull").await {
                Ok(r) => r,
                Err(e) => {
                    last = Some(e);
                    continue;
                }
            };
            let url = host.url(&path);
            match resp.status() {
                StatusCode::OK => {
                    return Ok(BlobStream {
                        response: resp,
                        offset: 0,
                    })
                }
                StatusCode::PARTIAL_CONTENT => {
                    return Ok(BlobStream {
                        response: resp,
                        offset,
                    })
                }
                StatusCode::RANGE_NOT_SATISFIABLE => {
                    // Start over: the ingest holds more than the host has.
                    let resp = self.send(host, Method::GET, &path, &[], "pull").await?;
                    if resp.status() == StatusCode::OK {
                        return Ok(BlobStream {
                            response: resp,
                            offset: 0,
                        });
                    }
                    let status = resp.status();
                    let body = error_body(resp).await;
                    last = Some(protocol(&url, status, &body));
                }
                StatusCode::NOT_FOUND => {
                    last = Some(DistributionError::NotFound {
                        what: "blob",
                        name: format!("{}/{}@{digest}", self.registry, self.name),
                    });
                }
                status => {
                    let body = error_body(resp).await;
                    last = Some(protocol(&url, status, &body));
                }
            }
        }
        Err(last.unwrap_or_else(|| DistributionError::NotFound {
            what: "host that may pull",
            name: format!("{}/{}", self.registry, self.name),
        }))
    }

    /// The first host that may be pushed to.
    fn push_host(&self) -> Result<&Host> {
        self.hosts
            .iter()
            .find(|h| h.capabilities.push)
            .ok_or_else(|| DistributionError::NotFound {
                what: "host that may push",
                name: format!("{}/{}", self.registry, self.name),
            })
    }

    /// Whether the push host has blob `digest` in this repository.
    ///
    /// # Errors
    /// Unauthorized, Connect, Protocol.
    pub async fn has_blob(&self, digest: &str) -> Result<bool> {
        let host = self.push_host()?;
        let path = format!("{}/blobs/{digest}", self.name);
        let resp = self
            .send(host, Method::HEAD, &path, &[], "pull,push")
            .await?;
        match resp.status() {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            status => Err(protocol(&host.url(&path), status, b"")),
        }
    }

    /// Asks the push host to mount blob `digest` from repository `from`
    /// of the same registry; false when it started an upload instead (or
    /// refused), which is then left to expire.
    ///
    /// # Errors
    /// Unauthorized, Connect.
    pub async fn mount_blob(&self, digest: &str, from: &str) -> Result<bool> {
        let host = self.push_host()?;
        let url = format!(
            "{}?mount={digest}&from={from}",
            host.url(&format!("{}/blobs/uploads/", self.name))
        );
        let resp = self
            .send_body(host, Method::POST, &url, &[], "pull,push", None)
            .await?;
        Ok(resp.status() == StatusCode::CREATED)
    }

    /// Uploads a blob of `size` bytes whose body `body` makes, in one PUT.
    ///
    /// # Errors
    /// Unauthorized, Connect, Protocol (the registry refused it).
    pub async fn upload_blob(
        &self,
        digest: &str,
        size: u64,
        body: &(dyn Fn() -> Result<reqwest::Body> + Send + Sync),
    ) -> Result<()> {
        let host = self.push_host()?;
        let start = host.url(&format!("{}/blobs/uploads/", self.name));
        let resp = self
            .send_body(host, Method::POST, &start, &[], "pull,push", None)
            .await?;
        let status = resp.status();
        if status != StatusCode::ACCEPTED {
            let body = error_body(resp).await;
            return Err(protocol(&start, status, &body));
        }
        let location = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .ok_or_else(|| protocol(&start, status, b"upload started without a Location"))?;
        let mut url = host
            .base
            .join(location)
            .map_err(|_| protocol(&start, status, location.as_bytes()))?;
        url.query_pairs_mut().append_pair("digest", digest);
        let headers = [
            (
                reqwest::header::CONTENT_TYPE,
                "application/octet-stream".to_owned(),
            ),
            (reqwest::header::CONTENT_LENGTH, size.to_string()),
        ];
        let resp = self
            .send_body(
                host,
                Method::PUT,
                url.as_str(),
                &headers,
                "pull,push",
                Some(body),
            )
            .await?;
        let status = resp.status();
        if status != StatusCode::CREATED {
            let text = error_body(resp).await;
            return Err(protocol(url.as_str(), status, &text));
        }
        Ok(())
    }

    /// Puts a manifest or index under `reference` (a tag or its digest).
    ///
    /// # Errors
    /// Unauthorized, Connect, Protocol (the registry refused it).
    pub async fn put_manifest(&self, reference: &str, media_type: &str, body: Bytes) -> Result<()> {
        let host = self.push_host()?;
        let url = host.url(&format!("{}/manifests/{reference}", self.name));
        let make = move || Ok(reqwest::Body::from(body.clone()));
        let headers = [(reqwest::header::CONTENT_TYPE, media_type.to_owned())];
        let resp = self
            .send_body(host, Method::PUT, &url, &headers, "pull,push", Some(&make))
            .await?;
        let status = resp.status();
        if status != StatusCode::CREATED {
            let text = error_body(resp).await;
            return Err(protocol(&url, status, &text));
        }
        Ok(())
    }

    /// The repository path.
    pub fn name(&self) -> &str {
        &self.name
    }
}

fn append(headers: &mut HeaderMap, k: &str, v: &str, url: &str) -> Result<()> {
    let bad = |what: &str| DistributionError::HostConfig {
        path: std::path::PathBuf::from(url),
        reason: format!("header {k:?}: invalid {what}"),
    };
    let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| bad("name"))?;
    let value = HeaderValue::from_str(v).map_err(|_| bad("value"))?;
    headers.append(name, value);
    Ok(())
}

/// The start of an error response's body, for its message: a registry
/// cannot make hulld buffer more than this.
async fn error_body(mut resp: Response) -> Bytes {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        body.extend_from_slice(&chunk);
        if body.len() >= 4096 {
            break;
        }
    }
    Bytes::from(body)
}

/// A response's body, refused past `limit` bytes.
async fn read_limited(mut resp: Response, url: &str, limit: usize) -> Result<Bytes> {
    let mut body = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|source| DistributionError::Connect {
            url: url.to_owned(),
            source,
        })?
    {
        body.extend_from_slice(&chunk);
        if body.len() > limit {
            return Err(DistributionError::Protocol {
                url: url.to_owned(),
                status: 200,
                body: format!("response larger than {limit} bytes"),
            });
        }
    }
    Ok(Bytes::from(body))
}

fn protocol(url: &str, status: StatusCode, body: &[u8]) -> DistributionError {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)])
        .trim()
        .to_owned();
    DistributionError::Protocol {
        url: url.to_owned(),
        status: status.as_u16(),
        body: text,
    }
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    hull_proto::digest::Digest::sha256(&Sha256::digest(data).into()).to_string()
}

/// A document's media type: its own `mediaType` field, else the response's
/// Content-Type, else what its shape says.
fn media_type_of(body: &[u8], content_type: Option<&str>) -> String {
    #[derive(serde::Deserialize)]
    struct Peek {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(default)]
        manifests: Option<serde::de::IgnoredAny>,
    }
    let peek: Option<Peek> = serde_json::from_slice(body).ok();
    if let Some(p) = &peek {
        if !p.media_type.is_empty() {
            return p.media_type.clone();
        }
    }
    match content_type {
        Some(ct) if media::classify(ct) != media::Kind::Other => ct.to_owned(),
        _ if peek.is_some_and(|p| p.manifests.is_some()) => {
            "application/vnd.oci.image.index.v1+json".to_owned()
        }
        _ => "application/vnd.oci.image.manifest.v1+json".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn oversized_answers_are_refused_not_buffered() {
        let big = http::Response::new(vec![b'x'; (1 << 20) + 1]);
        let e = read_limited(Response::from(big), "http://t/token", MAX_TOKEN)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
        let ok = http::Response::new(b"{}".to_vec());
        assert_eq!(
            read_limited(Response::from(ok), "u", MAX_TOKEN)
                .await
                .unwrap(),
            Bytes::from_static(b"{}")
        );
    }

    #[test]
    fn media_types_from_documents() {
        assert_eq!(
            media_type_of(
                br#"{"mediaType":"application/vnd.docker.distribution.manifest.v2+json"}"#,
                None
            ),
            media::DOCKER_MANIFEST
        );
        assert_eq!(
            media_type_of(
                br#"{"schemaVersion":2,"manifests":[]}"#,
                Some("application/json")
            ),
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(
            media_type_of(
                br#"{"schemaVersion":2,"layers":[]}"#,
                Some(media::DOCKER_MANIFEST)
            ),
            media::DOCKER_MANIFEST
        );
        assert_eq!(
            media_type_of(b"{}", None),
            "application/vnd.oci.image.manifest.v1+json"
        );
    }
}
