//! Which hosts serve a registry name, in which order, and how to reach
//! them: containerd's `hosts.toml` layout under `config_path`, docker's
//! `certs.d` files, and the `[registry]` keys of hull's config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::{DistributionError, Result};

/// `[registry]`: how hulld reaches registries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistryConfig {
    /// Directory of `<host>/hosts.toml` (and docker-style `*.crt`,
    /// `*.cert`, `*.key`) files.
    pub config_path: PathBuf,
    /// Mirrors tried before docker.io, in order (docker's daemon.json key).
    #[serde(rename = "registry-mirrors")]
    pub registry_mirrors: Vec<String>,
    /// Hosts (`name` or `name:port`) reached over plain HTTP (docker's
    /// daemon.json key).
    #[serde(rename = "insecure-registries")]
    pub insecure_registries: Vec<String>,
    /// Blobs downloaded at once per pull (docker's option of that name).
    pub max_concurrent_downloads: usize,
    /// docker's `config.json` with `auths`, `credHelpers`, `credsStore`;
    /// empty means `$DOCKER_CONFIG/config.json`, else
    /// `$HOME/.docker/config.json`.
    pub docker_config: PathBuf,
    /// `[registry.auths."HOST"]`: credentials per registry host.
    pub auths: BTreeMap<String, Credentials>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig {
            config_path: PathBuf::from("/etc/hull/certs.d"),
            registry_mirrors: Vec::new(),
            insecure_registries: Vec::new(),
            max_concurrent_downloads: 3,
            docker_config: PathBuf::new(),
            auths: BTreeMap::new(),
        }
    }
}

pub use hull_oci::credentials::Credentials;

/// What a host may be used for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Fetch blobs and manifests by digest.
    pub pull: bool,
    /// Resolve a tag to a digest.
    pub resolve: bool,
    /// Upload.
    pub push: bool,
}

impl Capabilities {
    const ALL: Capabilities = Capabilities {
        pull: true,
        resolve: true,
        push: true,
    };
}

/// One host to try, with what it needs.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// Scheme, authority and path prefix (`.../v2` unless the config
    /// overrides the path).
    pub base: Url,
    /// What it may be used for.
    pub capabilities: Capabilities,
    /// Accept any certificate.
    pub skip_verify: bool,
    /// Extra CA certificates (PEM files).
    pub ca: Vec<PathBuf>,
    /// Client certificate and key (PEM files; one file may hold both).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Headers sent with every request to it.
    pub headers: BTreeMap<String, Vec<String>>,
}

impl Host {
    /// `base` joined with `path` (which starts without a slash).
    pub fn url(&self, path: &str) -> String {
        let base = self.base.as_str().trim_end_matches('/');
        format!("{base}/{path}")
    }

    /// The host part as credentials and tokens are keyed.
    pub fn authority(&self) -> String {
        match (self.base.host_str(), self.base.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            _ => String::new(),
        }
    }
}

/// The hosts for registry name `registry`, in the order to try them.
///
/// `dir` overrides `config.config_path` (a request's host_dir);
/// `default_scheme` is the scheme for hosts without a configured one.
///
/// # Errors
/// FailedPrecondition naming the file when a hosts.toml is malformed.
pub fn hosts_for(
    config: &RegistryConfig,
    registry: &str,
    dir: Option<&Path>,
    default_scheme: Option<&str>,
) -> Result<Vec<Host>> {
    let root = dir.unwrap_or(&config.config_path);
    let insecure = config
        .insecure_registries
        .iter()
        .any(|h| h.trim_start_matches("http://") == registry);
    let scheme = match default_scheme {
        Some(s) if !s.is_empty() => s,
        _ if insecure => "http",
        _ => "https",
    };
    let default_server = if registry == "docker.io" {
        "https://registry-1.docker.io".to_owned()
    } else {
        format!("{scheme}://{registry}")
    };
    let mut hosts = Vec::new();
    if registry == "docker.io" {
        for m in &config.registry_mirrors {
            let mut h = host(m, registry, false)?;
            h.capabilities.push = false;
            hosts.push(h);
        }
    }
    for candidate in [root.join(registry), root.join("_default")] {
        let file = candidate.join("hosts.toml");
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                hosts.extend(parse_hosts_toml(&text, &file, &default_server, registry)?);
                return Ok(hosts);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(DistributionError::HostConfig {
                    path: file,
                    reason: e.to_string(),
                })
            }
        }
        if candidate.is_dir() && candidate.ends_with(registry) {
            // docker's certs.d: *.crt are CAs, *.cert with *.key clients.
            let mut h = host(&default_server, registry, false)?;
            certs_d(&candidate, &mut h)?;
            hosts.push(h);
            return Ok(hosts);
        }
    }
    hosts.push(host(&default_server, registry, false)?);
    Ok(hosts)
}

/// A host at `server` (a URL, or a bare `host[:port]` taken as https).
fn host(server: &str, registry: &str, override_path: bool) -> Result<Host> {
    let with_scheme = if server.contains("://") {
        server.to_owned()
    } else {
        format!("https://{server}")
    };
    let mut base = Url::parse(&with_scheme).map_err(|e| DistributionError::HostConfig {
        path: PathBuf::from(registry),
        reason: format!("host {server:?}: {e}"),
    })?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(DistributionError::HostConfig {
            path: PathBuf::from(registry),
            reason: format!("host {server:?}: scheme must be http or https"),
        });
    }
    if !override_path {
        let path = base.path().trim_end_matches('/').to_owned();
        if !path.ends_with("/v2") {
            base.set_path(&format!("{path}/v2"));
        }
    }
    Ok(Host {
        base,
        capabilities: Capabilities::ALL,
        skip_verify: false,
        ca: Vec::new(),
        client: Vec::new(),
        headers: BTreeMap::new(),
    })
}

fn bad(file: &Path, reason: impl Into<String>) -> DistributionError {
    DistributionError::HostConfig {
        path: file.to_owned(),
        reason: reason.into(),
    }
}

/// The hosts of one hosts.toml: its `[host."…"]` tables in file order,
/// then `server` (or the default one), as containerd orders them.
fn parse_hosts_toml(
    text: &str,
    file: &Path,
    default_server: &str,
    registry: &str,
) -> Result<Vec<Host>> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| bad(file, e.to_string()))?;
    let dir = file.parent().unwrap_or(Path::new("/"));
    let mut hosts = Vec::new();
    if let Some(entries) = table.get("host") {
        let entries = entries
            .as_table()
            .ok_or_else(|| bad(file, "host must be a table of tables"))?;
        for (url, entry) in entries {
            let entry = entry
                .as_table()
                .ok_or_else(|| bad(file, format!("host {url:?} must be a table")))?;
            hosts.push(host_entry(url, entry, file, dir, registry)?);
        }
    }
    let server = match table.get("server") {
        Some(toml::Value::String(s)) => s.clone(),
        Some(_) => return Err(bad(file, "server must be a string")),
        None => default_server.to_owned(),
    };
    hosts.push(host_entry(&server, &table, file, dir, registry)?);
    Ok(hosts)
}

fn host_entry(
    url: &str,
    entry: &toml::Table,
    file: &Path,
    dir: &Path,
    registry: &str,
) -> Result<Host> {
    let override_path = match entry.get("override_path") {
        Some(v) => v
            .as_bool()
            .ok_or_else(|| bad(file, "override_path must be true or false"))?,
        None => false,
    };
    let mut h = host(url, registry, override_path).map_err(|e| bad(file, e.to_string()))?;
    if let Some(caps) = entry.get("capabilities") {
        let list = caps
            .as_array()
            .ok_or_else(|| bad(file, "capabilities must be a list"))?;
        h.capabilities = Capabilities {
            pull: false,
            resolve: false,
            push: false,
        };
        for c in list {
            match c.as_str() {
                Some("pull") => h.capabilities.pull = true,
                Some("resolve") => h.capabilities.resolve = true,
                Some("push") => h.capabilities.push = true,
                _ => return Err(bad(file, format!("unknown capability {c}"))),
            }
        }
    }
    if let Some(v) = entry.get("skip_verify") {
        h.skip_verify = v
            .as_bool()
            .ok_or_else(|| bad(file, "skip_verify must be true or false"))?;
    }
    let relative = |p: &str| {
        let p = PathBuf::from(p);
        if p.is_absolute() {
            p
        } else {
            dir.join(p)
        }
    };
    match entry.get("ca") {
        None => {}
        Some(toml::Value::String(s)) => h.ca.push(relative(s)),
        Some(toml::Value::Array(list)) => {
            for v in list {
                let s = v.as_str().ok_or_else(|| bad(file, "ca must list paths"))?;
                h.ca.push(relative(s));
            }
        }
        Some(_) => return Err(bad(file, "ca must be a path or a list of paths")),
    }
    match entry.get("client") {
        None => {}
        Some(toml::Value::String(s)) => h.client.push((relative(s), None)),
        Some(toml::Value::Array(list)) => {
            for v in list {
                match v {
                    toml::Value::String(s) => h.client.push((relative(s), None)),
                    toml::Value::Array(pair) => match pair.as_slice() {
                        [toml::Value::String(c), toml::Value::String(k)] => {
                            h.client.push((relative(c), Some(relative(k))));
                        }
                        [toml::Value::String(c)] => h.client.push((relative(c), None)),
                        _ => return Err(bad(file, "client pairs are [cert, key]")),
                    },
                    _ => return Err(bad(file, "client must list paths or [cert, key] pairs")),
                }
            }
        }
        Some(_) => return Err(bad(file, "client must be a path or a list")),
    }
    if let Some(headers) = entry.get("header") {
        let headers = headers
            .as_table()
            .ok_or_else(|| bad(file, "header must be a table"))?;
        for (name, v) in headers {
            let values = match v {
                toml::Value::String(s) => vec![s.clone()],
                toml::Value::Array(list) => list
                    .iter()
                    .map(|x| x.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| bad(file, format!("header {name} must be strings")))?,
                _ => return Err(bad(file, format!("header {name} must be a string or list"))),
            };
            h.headers.insert(name.clone(), values);
        }
    }
    Ok(h)
}

/// docker's certs.d directory: `*.crt` are CAs, `X.cert` goes with `X.key`.
fn certs_d(dir: &Path, h: &mut Host) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| bad(dir, e.to_string()))?;
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for p in names {
        match p.extension().and_then(|e| e.to_str()) {
            Some("crt") => h.ca.push(p),
            Some("cert") => {
                let key = p.with_extension("key");
                if !key.exists() {
                    return Err(bad(&p, "client certificate without its .key"));
                }
                h.client.push((p, Some(key)));
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, host: &str, text: &str) {
        std::fs::create_dir_all(dir.join(host)).unwrap();
        std::fs::write(dir.join(host).join("hosts.toml"), text).unwrap();
    }

    #[test]
    fn defaults_without_config() {
        let tmp = tempfile::tempdir().unwrap();
        let mut c = RegistryConfig {
            config_path: tmp.path().to_owned(),
            ..Default::default()
        };
        let h = hosts_for(&c, "docker.io", None, None).unwrap();
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].base.as_str(), "https://registry-1.docker.io/v2");
        let h = hosts_for(&c, "127.0.0.1:5000", None, None).unwrap();
        assert_eq!(
            h[0].url("x/manifests/latest"),
            "https://127.0.0.1:5000/v2/x/manifests/latest"
        );
        assert_eq!(h[0].authority(), "127.0.0.1:5000");
        c.insecure_registries = vec!["127.0.0.1:5000".into()];
        assert_eq!(
            hosts_for(&c, "127.0.0.1:5000", None, None).unwrap()[0]
                .base
                .scheme(),
            "http"
        );
        c.registry_mirrors = vec!["http://127.0.0.1:6000".into()];
        let h = hosts_for(&c, "docker.io", None, None).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].base.as_str(), "http://127.0.0.1:6000/v2");
        assert!(!h[0].capabilities.push && h[0].capabilities.pull);
        assert_eq!(
            hosts_for(&c, "x.example", None, Some("http")).unwrap()[0]
                .base
                .scheme(),
            "http"
        );
    }

    #[test]
    fn hosts_toml_in_file_order_then_server() {
        let tmp = tempfile::tempdir().unwrap();
        write(
            tmp.path(),
            "registry.example:5000",
            r#"
server = "https://registry.example:5000"
ca = "ca.pem"

[host."http://127.0.0.1:7000"]
  capabilities = ["pull", "resolve"]

[host."https://127.0.0.1:6000/prefix"]
  capabilities = ["pull"]
  skip_verify = true
  override_path = true
  client = [["c.pem", "/abs/k.pem"]]
  [host."https://127.0.0.1:6000/prefix".header]
    x-token = "a"
    x-multi = ["b", "c"]
"#,
        );
        let c = RegistryConfig {
            config_path: tmp.path().to_owned(),
            ..Default::default()
        };
        let h = hosts_for(&c, "registry.example:5000", None, None).unwrap();
        let urls: Vec<_> = h.iter().map(|h| h.base.as_str().to_owned()).collect();
        assert_eq!(
            urls,
            [
                "http://127.0.0.1:7000/v2",
                "https://127.0.0.1:6000/prefix",
                "https://registry.example:5000/v2"
            ]
        );
        assert!(h[0].capabilities.resolve && !h[0].capabilities.push);
        assert!(h[1].skip_verify && !h[1].capabilities.resolve);
        assert_eq!(h[1].headers["x-multi"], ["b", "c"]);
        let dir = tmp.path().join("registry.example:5000");
        assert_eq!(
            h[1].client,
            [(dir.join("c.pem"), Some(PathBuf::from("/abs/k.pem")))]
        );
        assert_eq!(h[2].ca, [dir.join("ca.pem")]);
        assert!(h[2].capabilities.push);
    }

    #[test]
    fn default_dir_certs_d_and_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let c = RegistryConfig {
            config_path: tmp.path().to_owned(),
            ..Default::default()
        };
        write(tmp.path(), "_default", "server = \"http://127.0.0.1:9\"\n");
        assert_eq!(
            hosts_for(&c, "other.example", None, None).unwrap()[0]
                .base
                .as_str(),
            "http://127.0.0.1:9/v2"
        );
        let d = tmp.path().join("certs.example");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ca.crt"), "x").unwrap();
        std::fs::write(d.join("me.cert"), "x").unwrap();
        std::fs::write(d.join("me.key"), "x").unwrap();
        let h = hosts_for(&c, "certs.example", None, None).unwrap();
        assert_eq!(h[0].ca, [d.join("ca.crt")]);
        assert_eq!(h[0].client, [(d.join("me.cert"), Some(d.join("me.key")))]);
        write(
            tmp.path(),
            "bad.example",
            "[host.\"http://x\"]\ncapabilities = [\"fly\"]\n",
        );
        let e = hosts_for(&c, "bad.example", None, None).unwrap_err();
        assert!(e.to_string().contains("unknown capability"), "{e}");
        assert!(e.to_string().contains("bad.example/hosts.toml"), "{e}");
        write(tmp.path(), "broken.example", "server = [");
        assert!(hosts_for(&c, "broken.example", None, None).is_err());
    }
}
