//! Credentials for registries and the answers to their challenges.
//!
//! Credentials come, first found first: from the request, from hull's
//! `[registry.auths]`, from docker's `config.json` (`auths`, then
//! `credHelpers` / `credsStore` through the `docker-credential-*` helper
//! protocol). A 401 carries a `WWW-Authenticate` challenge: `Basic` sends
//! the credentials as they are, `Bearer` exchanges them (or nothing) at the
//! named token server for a token, kept per scope until it expires.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Deserialize;

use hull_oci::credentials::{self, Credentials};

use super::hosts::RegistryConfig;
use super::{DistributionError, Result};

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    /// `basic` or `bearer` (lower case).
    pub scheme: String,
    /// Its parameters (`realm`, `service`, `scope`, ...), names lower case.
    pub params: BTreeMap<String, String>,
}

/// Parses the challenges of one `WWW-Authenticate` value.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        // A token: either a new scheme or a parameter name.
        let end = rest
            .find(|c: char| c == '=' || c == ',' || c.is_whitespace())
            .unwrap_or(rest.len());
        let token = &rest[..end];
        rest = rest[end..].trim_start();
        if let Some(after) = rest.strip_prefix('=') {
            let after = after.trim_start();
            let (value, remaining) = if let Some(q) = after.strip_prefix('"') {
                let mut value = String::new();
                let mut chars = q.char_indices();
                let mut close = q.len();
                while let Some((i, c)) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some((_, n)) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => {
                            close = i + 1;
                            break;
                        }
                        c => value.push(c),
                    }
                }
                (value, &q[close.min(q.len())..])
            } else {
                let e = after.find(',').unwrap_or(after.len());
                (after[..e].trim().to_owned(), &after[e..])
            };
            if let Some(c) = out.last_mut() {
                c.params.insert(token.to_ascii_lowercase(), value);
            }
            rest = remaining.trim_start();
        } else if !token.is_empty() {
            out.push(Challenge {
                scheme: token.to_ascii_lowercase(),
                params: BTreeMap::new(),
            });
        }
        rest = rest.trim_start_matches(|c: char| c == ',' || c.is_whitespace());
    }
    out
}

/// Credentials for `host` (the registry name, e.g. `docker.io`), from
/// hull's `[registry.auths]`, then docker's config.json and its helpers.
///
/// # Errors
/// FailedPrecondition when config.json is malformed or a helper fails.
pub fn lookup(config: &RegistryConfig, host: &str) -> Result<Option<Credentials>> {
    for k in credentials::keys_for(host) {
        if let Some(c) = config.auths.get(&k) {
            return Ok(Some(c.clone()));
        }
    }
    let path = credentials::config_path(&config.docker_config);
    credentials::lookup(&path, host).map_err(|e| DistributionError::Credentials {
        host: host.to_owned(),
        reason: e.to_string(),
    })
}

/// The value of an `Authorization: Basic` header.
pub fn basic(c: &Credentials) -> String {
    let raw = format!("{}:{}", c.username, c.password);
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// A token server's answer.
#[derive(Debug, Deserialize)]
pub struct TokenAnswer {
    /// The token (docker's name).
    #[serde(default)]
    pub token: String,
    /// The token (OAuth's name).
    #[serde(default)]
    pub access_token: String,
    /// Lifetime in seconds.
    #[serde(default)]
    pub expires_in: u64,
}

impl TokenAnswer {
    /// The token, whichever name it came under.
    pub fn value(&self) -> &str {
        if self.token.is_empty() {
            &self.access_token
        } else {
            &self.token
        }
    }

    /// How long it may be used: the server's word, else the 60 s the
    /// token specification gives.
    pub fn lifetime(&self) -> Duration {
        Duration::from_secs(if self.expires_in == 0 {
            60
        } else {
            self.expires_in
        })
    }
}

/// Authorization headers that worked, per host and scope, until they
/// expire.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<(String, String), Kept>>,
}

/// A header and when it stops being good (None: when refused).
type Kept = (String, Option<Instant>);

impl TokenCache {
    /// The header kept for `host` and `scope`, unless it expired.
    pub fn get(&self, host: &str, scope: &str) -> Option<String> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (host.to_owned(), scope.to_owned());
        match map.get(&key) {
            Some((v, None)) => Some(v.clone()),
            // A little early, so that a token does not expire in flight.
            Some((v, Some(until))) if Instant::now() + Duration::from_secs(5) < *until => {
                Some(v.clone())
            }
            Some(_) => {
                map.remove(&key);
                None
            }
            None => None,
        }
    }

    /// Keeps `header` for `host` and `scope`, for `lifetime` (None: until
    /// refused).
    pub fn put(&self, host: &str, scope: &str, header: String, lifetime: Option<Duration>) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(
            (host.to_owned(), scope.to_owned()),
            (header, lifetime.map(|l| Instant::now() + l)),
        );
    }

    /// Forgets what was kept for `host` and `scope` (the registry refused it).
    pub fn forget(&self, host: &str, scope: &str) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(&(host.to_owned(), scope.to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges_parse() {
        let c = parse_challenges(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].params["realm"], "https://auth.example/token");
        assert_eq!(c[0].params["scope"], "repository:a/b:pull,push");
        let c = parse_challenges(r#"Basic realm="Registry Realm", Bearer realm="x\"y""#);
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].params["realm"], "Registry Realm");
        assert_eq!(
            (c[1].scheme.as_str(), c[1].params["realm"].as_str()),
            ("bearer", "x\"y")
        );
        assert!(parse_challenges("").is_empty());
        assert_eq!(parse_challenges("Basic")[0].scheme, "basic");
    }

    #[test]
    fn credentials_from_config_and_docker_json() {
        let tmp = tempfile::tempdir().unwrap();
        let json = tmp.path().join("config.json");
        std::fs::write(
            &json,
            r#"{"auths":{"127.0.0.1:5000":{"auth":"dXNlcjpwYTpzcw=="},
                "https://index.docker.io/v1/":{"username":"hub","password":"pw"}}}"#,
        )
        .unwrap();
        let mut config = RegistryConfig {
            docker_config: json.clone(),
            ..Default::default()
        };
        let c = lookup(&config, "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("user", "pa:ss")
        );
        assert_eq!(
            lookup(&config, "docker.io").unwrap().unwrap().username,
            "hub"
        );
        assert!(lookup(&config, "other.example").unwrap().is_none());
        config.auths.insert(
            "127.0.0.1:5000".into(),
            Credentials {
                username: "mine".into(),
                password: "x".into(),
            },
        );
        assert_eq!(
            lookup(&config, "127.0.0.1:5000").unwrap().unwrap().username,
            "mine"
        );
        std::fs::write(&json, r#"{"credHelpers":{"h.example":"hull-test-absent"}}"#).unwrap();
        let e = lookup(&config, "h.example").unwrap_err();
        assert!(
            e.to_string().contains("docker-credential-hull-test-absent"),
            "{e}"
        );
        std::fs::write(&json, "{").unwrap();
        assert!(lookup(&config, "h.example").is_err());
        assert_eq!(
            basic(&Credentials {
                username: "a".into(),
                password: "b".into()
            }),
            "Basic YTpi"
        );
    }

    #[test]
    fn tokens_expire() {
        let cache = TokenCache::default();
        cache.put("h", "s", "Bearer t".into(), Some(Duration::from_secs(60)));
        assert_eq!(cache.get("h", "s").as_deref(), Some("Bearer t"));
        assert!(cache.get("h", "other").is_none());
        cache.put("h", "s", "Bearer old".into(), Some(Duration::from_secs(1)));
        assert!(cache.get("h", "s").is_none());
        cache.put("h", "b", "Basic x".into(), None);
        cache.forget("h", "b");
        assert!(cache.get("h", "b").is_none());
    }
}
