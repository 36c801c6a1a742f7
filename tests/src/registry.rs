//! A real registry for tests: Debian's `docker-registry` on 127.0.0.1 with
//! its own storage directory, seeded with `skopeo`, stopped on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running registry.
pub struct Registry {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub host: String,
}

/// A free TCP port on 127.0.0.1 (free when asked; the caller binds it next).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").port()
}

impl Registry {
    /// Starts a plain-HTTP registry; `extra` is YAML added to its config
    /// (an `auth:` section, TLS under `http:` is not supported here).
    pub fn start(extra: &str) -> Registry {
        Registry::start_with(extra, "")
    }

    /// Starts a registry with `extra` top-level YAML and `http_extra` YAML
    /// lines inside its `http:` section (indented two spaces).
    pub fn start_with(extra: &str, http_extra: &str) -> Registry {
        let dir = tempfile::Builder::new()
            .prefix("hull-registry-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let host = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {host}\n{http_extra}{extra}",
            dir.path().join("storage").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).expect("write registry config");
        let log = std::fs::File::create(dir.path().join("registry.log")).expect("log");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start docker-registry (Debian package docker-registry)");
        let mut r = Registry {
            dir,
            child: Some(child),
            host,
        };
        r.wait_listening();
        r
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&self.host).is_err() {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("docker-registry exited: {status}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "registry did not listen\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What the registry logged (its access log included).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// Copies the image of OCI archive `archive` (tag `latest` in it) to
    /// `repo:tag` here, with `skopeo` (`creds` as `user:pass` if set).
    pub fn seed(&self, archive: &Path, repo: &str, tag: &str, creds: Option<&str>) {
        self.seed_ref(
            &format!("oci-archive:{}:latest", archive.display()),
            repo,
            tag,
            creds,
            &[],
        );
    }

    /// Copies transport reference `from` to `repo:tag` with skopeo and
    /// `extra` flags (e.g. `--all`).
    pub fn seed_ref(&self, from: &str, repo: &str, tag: &str, creds: Option<&str>, extra: &[&str]) {
        let to = format!("docker://{}/{repo}:{tag}", self.host);
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--insecure-policy",
        ]);
        if let Some(c) = creds {
            cmd.args(["--dest-creds", c]);
        }
        cmd.args(extra).arg(from).arg(&to);
        let out = cmd.output().expect("run skopeo (Debian package skopeo)");
        assert!(
            out.status.success(),
            "skopeo copy {from} {to}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(c) = self.child.take() {
            crate::daemon::terminate(c);
        }
    }
}

/// Writes `<dir>/<host>/hosts.toml` with `text`; returns `dir`.
pub fn hosts_toml(dir: &Path, host: &str, text: &str) -> PathBuf {
    let d = dir.join(host);
    std::fs::create_dir_all(&d).expect("hosts dir");
    std::fs::write(d.join("hosts.toml"), text).expect("hosts.toml");
    dir.to_owned()
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, made
/// with openssl in `dir`: `(ca.pem, server.pem, server.key)`.
pub fn test_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec!["req", "-x509"];
    ca.extend(ec);
    ca.extend([
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=hull test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    ]);
    run(&ca);
    let mut csr = vec!["req"];
    csr.extend(ec);
    csr.extend([
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&csr);
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .expect("ext file");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "server.ext",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

/// An htpasswd file with `user:password` (bcrypt, as docker-registry
/// wants), made with apache2-utils' htpasswd.
pub fn htpasswd(path: &Path, user: &str, password: &str) {
    let out = Command::new("htpasswd")
        .args(["-Bbn", user, password])
        .output()
        .expect("run htpasswd (Debian package apache2-utils)");
    assert!(
        out.status.success(),
        "htpasswd: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(path, out.stdout).expect("write htpasswd");
}
