//! A real containerd (Debian's 1.6) on a private root, state and socket,
//! for tests that check hull's clients against it; stopped on drop, with
//! the shims and containers it started.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hull_client::Client;

/// A containerd of this test's own.
pub struct Containerd {
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl Containerd {
    /// Starts containerd, or None when it is not installed.
    pub async fn start() -> Option<Containerd> {
        let bin = ["/usr/bin/containerd", "/usr/local/bin/containerd"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists())?;
        let dir = tempfile::Builder::new()
            .prefix("containerd-test-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        // CRI off: it is not what these tests drive.
        let config = format!(
            "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [grpc]\n  address = {sock:?}\n[ttrpc]\n  address = {ttrpc:?}\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n",
            root = d.join("root"),
            state = d.join("state"),
            sock = d.join("containerd.sock"),
            ttrpc = d.join("containerd.sock.ttrpc"),
            opt = d.join("opt"),
        );
        std::fs::write(d.join("config.toml"), config).expect("config");
        let log = std::fs::File::create(d.join("containerd.log")).expect("log");
        let child = Command::new(bin)
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start containerd");
        let c = Containerd {
            dir,
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(client) = Client::connect(c.address()).await {
                if client.version().version(()).await.is_ok() {
                    return Some(c);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("containerd did not answer\n{}", c.log());
    }

    /// Its socket.
    pub fn address(&self) -> PathBuf {
        self.dir.path().join("containerd.sock")
    }

    /// Its private directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` against it.
    pub fn ctr(&self, ns: &str, args: &[&str]) -> std::process::Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.address())
            .arg("--namespace")
            .arg(ns)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr")
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // The shims it started, read from their own bundles.
        let tasks = self.dir.path().join("state/io.containerd.runtime.v2.task");
        for ns in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
            for b in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                if let Some(pid) = std::fs::read_to_string(b.path().join("shim.pid"))
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                    .filter(|p| *p > 1)
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                let _ =
                    nix::mount::umount2(&b.path().join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
            }
            crate::daemon::remove_ns_cgroups(&ns.file_name().to_string_lossy());
        }
        if let Some(child) = self.child.take() {
            crate::daemon::terminate(child);
        }
    }
}
