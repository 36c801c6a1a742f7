//! Registry credentials in docker's `config.json`: `auths` (base64
//! `user:password`, or user name and password, or an identity token),
//! `credHelpers` per host and `credsStore` for the rest, through the
//! `docker-credential-<name>` helper protocol. Read by hulld; written by
//! `hullctl login`/`logout`, field by field, so that whatever else the
//! file holds stays.

use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::document::Object;

/// A user name and password (or token) for one registry. Its Debug form
/// never shows the password.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Credentials {
    /// User name (empty with an identity token).
    pub username: String,
    /// Password, personal token or identity token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Credentials could not be read or written.
#[derive(Debug, Error)]
#[error("{path}: {reason}")]
pub struct CredentialsError {
    /// The file or helper.
    pub path: PathBuf,
    /// What failed.
    pub reason: String,
}

fn fail(path: &Path, reason: impl Into<String>) -> CredentialsError {
    CredentialsError {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, DockerAuth>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
    #[serde(default, rename = "credsStore")]
    creds_store: String,
}

#[derive(Debug, Default, Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: String,
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    identitytoken: String,
}

#[derive(Debug, Deserialize)]
struct HelperAnswer {
    #[serde(rename = "Username", default)]
    username: String,
    #[serde(rename = "Secret", default)]
    secret: String,
}

/// The keys a registry's credentials may be stored under; the first is
/// the one `login` writes (docker's `https://index.docker.io/v1/` for
/// docker.io).
pub fn keys_for(host: &str) -> Vec<String> {
    if matches!(
        host,
        "docker.io" | "registry-1.docker.io" | "index.docker.io"
    ) {
        vec![
            "https://index.docker.io/v1/".into(),
            "docker.io".into(),
            "index.docker.io".into(),
            "registry-1.docker.io".into(),
        ]
    } else {
        vec![
            host.to_owned(),
            format!("https://{host}"),
            format!("http://{host}"),
            format!("https://{host}/v1/"),
        ]
    }
}

/// The config file: `explicit` when given, else
/// `$DOCKER_CONFIG/config.json`, else `$HOME/.docker/config.json`.
pub fn config_path(explicit: &Path) -> PathBuf {
    if !explicit.as_os_str().is_empty() {
        return explicit.to_owned();
    }
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".docker/config.json")
}

/// The credentials `path` holds for registry `host`.
///
/// # Errors
/// A malformed file, a helper that fails.
pub fn lookup(path: &Path, host: &str) -> Result<Option<Credentials>, CredentialsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(fail(path, format!("read: {e}"))),
    };
    let docker: DockerConfig =
        serde_json::from_str(&text).map_err(|e| fail(path, format!("parse: {e}")))?;
    let keys = keys_for(host);
    if let Some(helper) = keys.iter().find_map(|k| docker.cred_helpers.get(k)) {
        return helper_get(helper, &keys[0]);
    }
    for k in &keys {
        let Some(a) = docker.auths.get(k) else {
            continue;
        };
        if !a.auth.is_empty() {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.auth.trim())
                .map_err(|e| fail(path, format!("auths.{k}.auth: {e}")))?;
            let raw = String::from_utf8_lossy(&raw).into_owned();
            let (u, p) = raw.split_once(':').unwrap_or((&raw, ""));
            return Ok(Some(Credentials {
                username: u.to_owned(),
                password: p.to_owned(),
            }));
        }
        if !a.identitytoken.is_empty() {
            return Ok(Some(Credentials {
                username: String::new(),
                password: a.identitytoken.clone(),
            }));
        }
        if !a.username.is_empty() {
            return Ok(Some(Credentials {
                username: a.username.clone(),
                password: a.password.clone(),
            }));
        }
    }
    if !docker.creds_store.is_empty() {
        return helper_get(&docker.creds_store, &keys[0]);
    }
    Ok(None)
}

/// Runs `docker-credential-<helper> get` with `key` on stdin.
fn helper_get(helper: &str, key: &str) -> Result<Option<Credentials>, CredentialsError> {
    use std::io::Write as _;
    let program = format!("docker-credential-{helper}");
    let p = Path::new(&program);
    let mut child = std::process::Command::new(&program)
        .arg("get")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(p, format!("run: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(key.as_bytes())
            .map_err(|e| fail(p, format!("write: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| fail(p, format!("wait: {e}")))?;
    if !out.status.success() {
        // The helper protocol's answer for a host it has nothing for.
        if String::from_utf8_lossy(&out.stdout).contains("credentials not found") {
            return Ok(None);
        }
        return Err(fail(
            p,
            format!(
                "get: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let a: HelperAnswer = serde_json::from_slice(&out.stdout)
        .map_err(|e| fail(p, format!("get printed no credentials: {e}")))?;
    Ok(Some(Credentials {
        username: if a.username == "<token>" {
            String::new()
        } else {
            a.username
        },
        password: a.secret,
    }))
}

fn read_object(path: &Path) -> Result<Object, CredentialsError> {
    match std::fs::read(path) {
        Ok(bytes) => Object::parse(&bytes).map_err(|e| fail(path, format!("parse: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Object::parse(b"{}").map_err(|e| fail(path, e.to_string()))
        }
        Err(e) => Err(fail(path, format!("read: {e}"))),
    }
}

fn write_object(path: &Path, doc: &Object) -> Result<(), CredentialsError> {
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, format!("create: {e}")))?;
    }
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| fail(&tmp, format!("create: {e}")))?;
    std::io::Write::write_all(&mut f, &doc.to_vec())
        .map_err(|e| fail(&tmp, format!("write: {e}")))?;
    let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    std::fs::rename(&tmp, path).map_err(|e| fail(path, format!("rename: {e}")))
}

/// Stores `creds` for `host` in `path`'s `auths`, as `docker login`.
///
/// # Errors
/// A malformed file; one that cannot be written.
pub fn store(path: &Path, host: &str, creds: &Credentials) -> Result<(), CredentialsError> {
    #[derive(Serialize)]
    struct Entry {
        auth: String,
    }
    let mut doc = read_object(path)?;
    let mut auths = doc
        .object("auths")
        .map_err(|e| fail(path, format!("auths: {e}")))?
        .map_or_else(|| Object::parse(b"{}"), Ok)
        .map_err(|e| fail(path, e.to_string()))?;
    let raw = format!("{}:{}", creds.username, creds.password);
    let key = &keys_for(host)[0];
    auths.set(
        key,
        &Entry {
            auth: base64::engine::general_purpose::STANDARD.encode(raw),
        },
    );
    doc.set("auths", &auths);
    write_object(path, &doc)
}

/// Removes `host`'s entries from `path`'s `auths`, as `docker logout`;
/// whether there were any.
///
/// # Errors
/// A malformed file; one that cannot be written.
pub fn erase(path: &Path, host: &str) -> Result<bool, CredentialsError> {
    let mut doc = read_object(path)?;
    let Some(mut auths) = doc
        .object("auths")
        .map_err(|e| fail(path, format!("auths: {e}")))?
    else {
        return Ok(false);
    };
    let mut removed = false;
    for k in keys_for(host) {
        removed |= auths.remove(&k);
    }
    if removed {
        doc.set("auths", &auths);
        write_object(path, &doc)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_then_lookup_then_logout_keeps_other_fields() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("sub/config.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(
            &path,
            r#"{"auths":{"other.example":{"auth":"eDp5"}},"psFormat":"table {{.ID}}"}"#,
        )
        .unwrap();
        let c = Credentials {
            username: "hull".into(),
            password: "pa:ss".into(),
        };
        store(&path, "127.0.0.1:5000", &c).unwrap();
        assert_eq!(lookup(&path, "127.0.0.1:5000").unwrap(), Some(c.clone()));
        assert_eq!(
            lookup(&path, "other.example").unwrap().unwrap().username,
            "x"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(r#""psFormat":"table {{.ID}}""#), "{text}");
        assert!(erase(&path, "127.0.0.1:5000").unwrap());
        assert!(!erase(&path, "127.0.0.1:5000").unwrap());
        assert!(lookup(&path, "127.0.0.1:5000").unwrap().is_none());
        assert!(lookup(&path, "other.example").unwrap().is_some());
        assert!(!format!("{c:?}").contains("pa:ss"));
        // docker.io goes under docker's own key.
        store(&path, "docker.io", &c).unwrap();
        assert!(std::fs::read_to_string(&path)
            .unwrap()
            .contains("https://index.docker.io/v1/"));
        // A missing file is no credentials; a helper that is not
        // installed is an error naming it.
        assert!(lookup(&tmp.path().join("none.json"), "x")
            .unwrap()
            .is_none());
        std::fs::write(&path, r#"{"credHelpers":{"h.example":"hull-test-absent"}}"#).unwrap();
        let e = lookup(&path, "h.example").unwrap_err();
        assert!(
            e.to_string().contains("docker-credential-hull-test-absent"),
            "{e}"
        );
        std::fs::write(&path, "{").unwrap();
        assert!(lookup(&path, "h.example").is_err());
    }
}
