//! Starts the built `hulld` (or `$HULLD_BIN`) on a temporary root, state and
//! socket, and stops it on drop: SIGTERM, then SIGKILL. Its log is printed
//! only when the test fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use hull_client::Client;

/// A hulld of this test's own.
pub struct Daemon {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Environment variables set for the daemon on top of the test's own.
    env: Vec<(String, String)>,
    /// Namespace the test works in.
    pub ns: String,
    /// The default bridge device and subnet hullctl's containers of this
    /// daemon get, so that tests running side by side never share one.
    pub bridge: (String, String),
}

/// A bridge device name and /24 no other daemon of this test process has.
pub fn unique_bridge() -> (String, String) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    (
        format!("ht{}x{n}", pid % 100_000),
        format!("10.{}.{}.0/24", 100 + pid % 100, n % 256),
    )
}

/// Path of a binary built by this workspace, next to the test executable.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` first",
        path.display()
    );
    path
}

fn hulld_bin() -> PathBuf {
    std::env::var_os("HULLD_BIN").map_or_else(|| workspace_bin("hulld"), PathBuf::from)
}

impl Daemon {
    /// Starts a daemon; `ns` names the test's namespace.
    pub async fn start(ns: &str) -> Daemon {
        Daemon::start_with_config(ns, "").await
    }

    /// Starts a daemon with `config` as its TOML config file.
    pub async fn start_with_config(ns: &str, config: &str) -> Daemon {
        Daemon::start_with_env(ns, config, &[]).await
    }

    /// Starts a daemon with `config` and these environment variables.
    pub async fn start_with_env(ns: &str, config: &str, env: &[(&str, &str)]) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("hull-test-")
            .tempdir()
            .expect("tempdir");
        std::fs::write(dir.path().join("none.toml"), config).expect("write config");
        let mut d = Daemon {
            dir,
            child: None,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ns: ns.to_owned(),
            bridge: unique_bridge(),
        };
        d.spawn().await;
        d
    }

    /// The temporary directory holding root, state and socket.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's root.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The socket path.
    pub fn address(&self) -> PathBuf {
        self.dir.path().join("hull.sock")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("hulld.log")
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open log");
        // An empty config file is the default config, and keeps any
        // /etc/hull/config.toml of this machine out of the test.
        let config = self.dir.path().join("none.toml");
        if !config.exists() {
            std::fs::write(&config, "").expect("write config");
        }
        let child = Command::new(hulld_bin())
            .arg("--config")
            .arg(self.dir.path().join("none.toml"))
            .arg("--root")
            .arg(self.root())
            .arg("--state")
            .arg(self.dir.path().join("state"))
            .arg("--address")
            .arg(self.address())
            .arg("--log-level")
            .arg("debug")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("start hulld");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Ok(c) = Client::connect(self.address()).await {
                if c.version().version(()).await.is_ok() {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("hulld exited during startup: {status}\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "hulld did not answer within 5s\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// A client in the test's namespace.
    pub async fn client(&self) -> Client {
        Client::connect(self.address())
            .await
            .expect("connect")
            .with_namespace(&self.ns)
    }

    /// Stops the daemon: SIGTERM, then SIGKILL after 10 s. Returns whether
    /// it exited cleanly. Blocks the calling thread; async tests use
    /// [`Daemon::stop_async`] so that their own clients can hang up.
    pub fn stop(&mut self) -> bool {
        self.child.take().is_none_or(terminate)
    }

    /// Kills the daemon with SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// Stops the daemon like [`Daemon::stop`], letting the test's runtime
    /// run meanwhile.
    pub async fn stop_async(&mut self) -> bool {
        match self.child.take() {
            None => true,
            Some(child) => tokio::task::spawn_blocking(move || terminate(child))
                .await
                .unwrap_or(false),
        }
    }

    /// Starts the daemon again on the same root, state and socket.
    pub async fn restart(&mut self) {
        assert!(
            self.stop_async().await,
            "hulld did not stop cleanly\n{}",
            self.log()
        );
        self.spawn().await;
    }

    /// Starts the daemon again after [`Daemon::kill`].
    pub async fn start_again(&mut self) {
        assert!(self.child.is_none(), "daemon still running");
        self.spawn().await;
    }

    /// `ctr` against this daemon in the test's namespace.
    pub fn ctr(&self) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(self.address())
            .arg("--namespace")
            .arg(&self.ns);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `ctr args...`, asserting success; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr_run(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `ctr args...`, returning its output whatever the status.
    pub fn ctr_run(&self, args: &[&str]) -> Output {
        self.ctr()
            .args(args)
            .output()
            .expect("run ctr (is the containerd package installed?)")
    }

    /// `hullctl` against this daemon in the test's namespace.
    pub fn hullctl(&self) -> Command {
        let mut c = Command::new(workspace_bin("hullctl"));
        c.env("HULL_BRIDGE", &self.bridge.0)
            .env("HULL_BRIDGE_SUBNET", &self.bridge.1)
            .arg("--address")
            .arg(self.address())
            .arg("--namespace")
            .arg(&self.ns);
        c.stdin(Stdio::null());
        c
    }

    /// Runs `hullctl args...`, returning its output whatever the status.
    pub fn hullctl_run(&self, args: &[&str]) -> Output {
        self.hullctl().args(args).output().expect("run hullctl")
    }

    /// Runs `hullctl args...`, asserting success (the daemon's log is in
    /// the failure); returns stdout.
    pub fn hullctl_ok(&self, args: &[&str]) -> String {
        let out = self.hullctl_run(args);
        assert!(
            out.status.success(),
            "hullctl {args:?} failed: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Blob files in the content store, whichever namespace holds them.
    pub fn blob_files(&self) -> Vec<String> {
        let dir = self.root().join("content/blobs/sha256");
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| format!("sha256:{}", e.file_name().to_string_lossy()))
                    .collect()
            })
            .unwrap_or_default();
        out.sort();
        out
    }
}

/// Whether the tests run as root (mounts need it).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// SIGTERM, then SIGKILL after 10 s; whether the process exited cleanly.
pub fn terminate(mut child: Child) -> bool {
    signal(&child, Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&child, Signal::SIGKILL);
    let _ = child.wait();
    false
}

fn signal(child: &Child, sig: Signal) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    // A child we spawned and have not reaped.
    let _ = kill(Pid::from_raw(pid), sig);
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let clean = self.stop();
        if std::thread::panicking() || !clean {
            eprintln!(
                "---- hulld log ({}) ----\n{}",
                self.dir.path().display(),
                self.log()
            );
        }
        self.remove_leftover_tasks();
        self.remove_leftover_networks();
        remove_ns_cgroups(&self.ns);
    }
}

impl Daemon {
    /// hulld's pid.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What a failed test may leave of hullctl's networking: CNI
    /// attachments (iptables rules, addresses), namespaces and the bridge.
    fn remove_leftover_networks(&self) {
        let cni = hull_cni::Cni::under(&self.root().join("cni"));
        let containers = self.root().join("containers");
        for net in cni.networks().unwrap_or_default() {
            for id in cni.attached(&net.name) {
                let ns = std::fs::read_dir(&containers)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|n| n.path().join(&id).join("netns"))
                    .find(|p| p.exists())
                    .unwrap_or_default();
                let _ = cni.del(&net, &id, &ns, "eth0");
            }
        }
        for ns in std::fs::read_dir(&containers)
            .into_iter()
            .flatten()
            .flatten()
        {
            for c in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                let _ = hull_cni::netns::remove(&c.path().join("netns"));
            }
        }
        // CRI's pods: their CNI attachments (the config named in the
        // daemon's config file), namespaces and shm mounts.
        let config = std::fs::read_to_string(self.dir.path().join("none.toml")).unwrap_or_default();
        let conf_dir = config
            .lines()
            .find_map(|l| l.strip_prefix("cni_conf_dir = "))
            .map(|v| PathBuf::from(v.trim_matches('"')));
        let cri = self.dir.path().join("state/cri");
        if let Some(conf_dir) = conf_dir {
            let cni = hull_cni::Cni {
                plugin_dirs: hull_cni::default_plugin_dirs(),
                conf_dir: conf_dir.clone(),
                state_dir: cri.join("cni"),
            };
            if let Ok(net) = hull_cni::Cni::first_network_in(&conf_dir) {
                for id in cni.attached(&net.name) {
                    let _ = cni.del(&net, &id, &cri.join("netns").join(&id), "eth0");
                }
            }
        }
        for ns in std::fs::read_dir(cri.join("netns"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = hull_cni::netns::remove(&ns.path());
        }
        for pod in std::fs::read_dir(cri.join("sandboxes"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = nix::mount::umount2(&pod.path().join("shm"), nix::mount::MntFlags::MNT_DETACH);
        }
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge.0])
            .stderr(Stdio::null())
            .status();
    }

    /// Shims outlive hulld by design: after a test (failed or not), end the
    /// shims this daemon started, their containers and their mounts.
    fn remove_leftover_tasks(&self) {
        let shims = self.dir.path().join("state/shims");
        let Ok(namespaces) = std::fs::read_dir(&shims) else {
            return;
        };
        for ns in namespaces.flatten() {
            let Ok(bundles) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for b in bundles.flatten() {
                let bundle = b.path();
                if let Some(pid) = std::fs::read_to_string(bundle.join("shim.pid"))
                    .ok()
                    .and_then(|p| p.trim().parse::<i32>().ok())
                    .filter(|p| *p > 1)
                {
                    // A shim this daemon started, read from its own bundle.
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                // A pod's pause that its shim started itself (no runtime
                // knows it), while that pid still runs the pause.
                if bundle.join("native-pause").exists() {
                    if let Some(pid) = std::fs::read_to_string(bundle.join("init.pid"))
                        .ok()
                        .and_then(|p| p.trim().parse::<i32>().ok())
                        .filter(|p| *p > 1)
                    {
                        let cmdline =
                            std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                        if cmdline.starts_with(b"/pause\0") {
                            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                        }
                    }
                }
                let runc_root = self.dir.path().join("runc").join(ns.file_name());
                let _ = Command::new("runc")
                    .arg("--root")
                    .arg(&runc_root)
                    .args(["delete", "--force"])
                    .arg(b.file_name())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
                let _ =
                    nix::mount::umount2(&bundle.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
            }
            remove_ns_cgroups(&ns.file_name().to_string_lossy());
        }
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Removes the empty per-namespace cgroup directories runc leaves behind:
/// ctr puts containers under `/<ns>/<id>`, and runc removes only the `<id>`
/// level (every controller of cgroup v1, and the unified hierarchy).
pub fn remove_ns_cgroups(ns: &str) {
    let Ok(controllers) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for c in controllers.flatten() {
        // rmdir only succeeds on an empty cgroup, which is the point.
        let _ = std::fs::remove_dir(c.path().join(ns));
    }
    let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(ns));
}
