//! The shim's command line and the two one-shot actions of containerd's
//! shim start protocol: `start` (daemonise and print the address) and
//! `delete` (clean up after a dead shim).

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use prost::Message;
use sha2::{Digest, Sha256};

/// Subcommands a daemon invokes a shim with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Daemonise, listen, print the socket address.
    Start,
    /// Clean up after a dead shim.
    Delete,
    /// Serve in the foreground (the daemonised child).
    Serve,
}

/// Flags as containerd passes them (`-namespace NS -id ID -address SOCK
/// -publish-binary BIN [-debug]`), then the action.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// Namespace of the containers.
    pub namespace: String,
    /// Container (or group) id.
    pub id: String,
    /// The daemon's gRPC socket.
    pub address: String,
    /// The daemon binary, for the exec-based event fallback.
    pub publish_binary: String,
    /// Log at debug level.
    pub debug: bool,
    /// The action; `None` when no known action was given.
    pub action: Option<Action>,
}

/// The fd the listening socket is handed over on, as in containerd's shims.
pub const LISTENER_FD: i32 = 3;

impl Args {
    /// Parses Go-flag style arguments: `-name value`, `--name=value`.
    ///
    /// # Errors
    /// An unknown flag, or one missing its value.
    pub fn parse(args: &[String]) -> Result<Args, String> {
        let mut out = Args::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
                out.action = match arg.as_str() {
                    "start" => Some(Action::Start),
                    "delete" => Some(Action::Delete),
                    "serve" => Some(Action::Serve),
                    other => return Err(format!("unknown action {other:?}")),
                };
                continue;
            };
            let (name, inline) = match flag.split_once('=') {
                Some((n, v)) => (n, Some(v.to_owned())),
                None => (flag, None),
            };
            if name == "debug" || name == "v" {
                out.debug = inline.as_deref() != Some("false");
                continue;
            }
            let value = match inline {
                Some(v) => v,
                None => it
                    .next()
                    .cloned()
                    .ok_or_else(|| format!("flag -{name} needs a value"))?,
            };
            match name {
                "namespace" => out.namespace = value,
                "id" => out.id = value,
                "address" => out.address = value,
                "publish-binary" => out.publish_binary = value,
                // Accepted for compatibility; the bundle is the working dir.
                "bundle" => {}
                other => return Err(format!("unknown flag -{other}")),
            }
        }
        Ok(out)
    }

    fn base(&self) -> PathBuf {
        Path::new(&self.address)
            .parent()
            .map_or_else(|| PathBuf::from("/run/hull"), Path::to_owned)
    }

    /// The shim's socket: `<dir of the daemon socket>/s/<sha256 of address,
    /// namespace and id>`, short enough for sun_path.
    pub fn socket_path(&self) -> PathBuf {
        let mut h = Sha256::new();
        h.update(self.address.as_bytes());
        h.update(b"\0");
        h.update(self.namespace.as_bytes());
        h.update(b"\0");
        h.update(self.id.as_bytes());
        self.base().join("s").join(hex::encode(h.finalize()))
    }

    /// The runtime's default state root for this namespace.
    pub fn runc_root(&self) -> PathBuf {
        self.base().join("runc").join(&self.namespace)
    }

    /// The daemon's ttrpc socket for events: `$TTRPC_ADDRESS`, else
    /// `<address>.ttrpc`.
    pub fn ttrpc_address(&self, env: Option<OsString>) -> PathBuf {
        match env.filter(|v| !v.is_empty()) {
            Some(v) => PathBuf::from(v),
            None => PathBuf::from(format!("{}.ttrpc", self.address)),
        }
    }

    fn argv(&self, action: &str) -> Vec<String> {
        let mut v = vec![
            "-namespace".to_owned(),
            self.namespace.clone(),
            "-id".to_owned(),
            self.id.clone(),
            "-address".to_owned(),
            self.address.clone(),
        ];
        if !self.publish_binary.is_empty() {
            v.push("-publish-binary".to_owned());
            v.push(self.publish_binary.clone());
        }
        if self.debug {
            v.push("-debug".to_owned());
        }
        v.push(action.to_owned());
        v
    }
}

/// `start`: binds the socket, starts the serving shim in a new session with
/// the socket on fd 3, records `address` and `shim.pid` in the bundle (the
/// working directory), and returns the address to print.
///
/// A live shim already on the socket is reused, as containerd's shims do.
///
/// # Errors
/// When the socket cannot be bound or the shim cannot be spawned.
pub fn start(args: &Args) -> std::io::Result<String> {
    // The daemon writes the runtime options to stdin and closes it.
    let mut options = Vec::new();
    std::io::stdin().read_to_end(&mut options)?;
    let shim_cgroup = shim_cgroup(&options)?;
    let bundle = std::env::current_dir()?;
    // The containers of one pod share the shim of their sandbox, as
    // containerd's shims group them: by the sandbox id annotation.
    let grouped;
    let args = match group_of(&bundle.join("config.json")) {
        Some(group) if group != args.id => {
            grouped = Args {
                id: group,
                ..args.clone()
            };
            &grouped
        }
        _ => args,
    };
    let sock = args.socket_path();
    let address = format!("unix://{}", sock.display());
    if UnixStream::connect(&sock).is_ok() {
        return Ok(address);
    }
    // A stale socket from a dead shim.
    let _ = std::fs::remove_file(&sock);
    if let Some(dir) = sock.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let listener = UnixListener::bind(&sock)?;
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(bundle.join("shim.log"))?;
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(args.argv("serve"))
        .current_dir(&bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    // SAFETY: setsid, fcntl and dup2 are async-signal-safe; `fd` stays open in the
    // parent until spawn returns. pre_exec is std's and unsafe in itself;
    // fcntl and dup2 stay on libc because the child's fd 3 is a raw number
    // there, which nix's fd-owning calls cannot take without another unsafe
    // conversion.
    unsafe {
        cmd.pre_exec(move || {
            nix::unistd::setsid()?;
            if fd == LISTENER_FD {
                // dup2 onto itself is a no-op that would leave
                // close-on-exec set; clear it instead.
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, LISTENER_FD) < 0 {
                // (dup2 clears close-on-exec on the new descriptor.)
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&sock);
            return Err(e);
        }
    };
    if let Some(cgroup) = shim_cgroup {
        if let Err(e) = crate::cgroup::join(child.id(), &cgroup) {
            // A shim outside the cgroup it was asked into must not serve.
            let mut child = child;
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_file(&sock);
            return Err(std::io::Error::other(hull_proto::errdefs::message(&e)));
        }
    }
    std::fs::write(bundle.join("address"), &address)?;
    std::fs::write(bundle.join("shim.pid"), child.id().to_string())?;
    Ok(address)
}

/// The annotation naming the pod sandbox a container belongs to.
pub const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// The group (pod sandbox id) the bundle's spec puts its container in.
fn group_of(config: &Path) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Spec {
        #[serde(default)]
        annotations: std::collections::HashMap<String, String>,
    }
    let bytes = std::fs::read(config).ok()?;
    let spec: Spec = serde_json::from_slice(&bytes).ok()?;
    spec.annotations
        .get(SANDBOX_ID)
        .filter(|g| !g.is_empty())
        .cloned()
}

/// The `shim_cgroup` of the runtime options `start` got on stdin.
fn shim_cgroup(options: &[u8]) -> std::io::Result<Option<String>> {
    if options.is_empty() {
        return Ok(None);
    }
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let any = prost_types::Any::decode(options)
        .map_err(|_| invalid("runtime options on stdin are not an Any"))?;
    let opts = hull_proto::runtime_options::runc_options(&any)
        .map_err(|_| invalid("runtime options on stdin do not decode"))?;
    Ok(opts.map(|o| o.shim_cgroup).filter(|c| !c.is_empty()))
}

/// `delete`: cleans up after a shim that died: forces the runtime to delete
/// the container, unmounts the rootfs, and returns an encoded
/// `DeleteResponse` reporting a SIGKILL exit.
///
/// # Errors
/// Never for a missing container or mount: those are already clean.
pub fn delete(args: &Args) -> std::io::Result<Vec<u8>> {
    let bundle = std::env::current_dir()?;
    // A pause the shim started itself is not the runtime's to delete.
    if !crate::native::remove_orphan(&bundle) {
        let status = Command::new("runc")
            .arg("--root")
            .arg(args.runc_root())
            .args(["delete", "--force", &args.id])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = status {
            eprintln!("hull-shim delete: runc: {e}");
        }
    }
    let rootfs = bundle.join("rootfs");
    // Not mounted is fine: the shim may have died before mounting.
    let _ = hull_snapshots::mount::unmount(&rootfs);
    let now = SystemTime::now();
    let resp = hull_proto::containerd::task::v2::DeleteResponse {
        pid: 0,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: Some(crate::events::timestamp(now)),
    };
    Ok(resp.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_containerd_flags() {
        let a = Args::parse(&strings(&[
            "-namespace",
            "default",
            "-address",
            "/run/containerd/containerd.sock",
            "-publish-binary",
            "/usr/bin/containerd",
            "-id",
            "c1",
            "-debug",
            "start",
        ]))
        .unwrap();
        assert_eq!(a.action, Some(Action::Start));
        assert_eq!((a.namespace.as_str(), a.id.as_str()), ("default", "c1"));
        assert!(a.debug);
        assert_eq!(a.runc_root(), PathBuf::from("/run/containerd/runc/default"));
        assert!(a.socket_path().starts_with("/run/containerd/s/"));
        assert!(a.socket_path().as_os_str().len() < 108);
        let b = Args::parse(&strings(&["--namespace=x", "-id=y", "delete"])).unwrap();
        assert_eq!(
            (b.namespace.as_str(), b.id.as_str(), b.action),
            ("x", "y", Some(Action::Delete))
        );
        assert!(Args::parse(&strings(&["-bogus", "1"])).is_err());
        assert!(Args::parse(&strings(&["-id"])).is_err());
    }

    #[test]
    fn a_pods_containers_are_grouped_by_the_sandbox_annotation() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config.json");
        assert_eq!(group_of(&config), None);
        std::fs::write(&config, r#"{"ociVersion":"1.0.2"}"#).unwrap();
        assert_eq!(group_of(&config), None);
        std::fs::write(
            &config,
            r#"{"annotations":{"io.kubernetes.cri.sandbox-id":"pod1"}}"#,
        )
        .unwrap();
        assert_eq!(group_of(&config).as_deref(), Some("pod1"));
    }

    #[test]
    fn sockets_differ_per_container() {
        let mut a = Args {
            address: "/run/hull/hull.sock".into(),
            namespace: "n".into(),
            id: "a".into(),
            ..Default::default()
        };
        let first = a.socket_path();
        a.id = "b".into();
        assert_ne!(first, a.socket_path());
        assert_eq!(
            a.ttrpc_address(None),
            PathBuf::from("/run/hull/hull.sock.ttrpc")
        );
        assert_eq!(a.ttrpc_address(Some("/x".into())), PathBuf::from("/x"));
    }
}
