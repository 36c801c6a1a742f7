//! hull's snapshotters served on their own socket: real containerd runs a
//! container on one as a proxy plugin, and hulld forwards to one named in
//! its config.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hull_tests::daemon::{is_root, terminate, workspace_bin, Daemon};
use hull_tests::image::{busybox_layer, chain_ids, image, write_oci_archive, write_oci_layers};

/// A child process stopped with SIGTERM (then SIGKILL) on drop.
struct Guard(Option<Child>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(child) = self.0.take() {
            terminate(child);
        }
    }
}

fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn serve_snapshotter(dir: &Path) -> (Guard, PathBuf) {
    let sock = dir.join("snapshotter.sock");
    let child = Command::new(workspace_bin("hulld"))
        .args(["snapshotter-serve", "--snapshotter", "overlayfs", "--root"])
        .arg(dir.join("sn-root"))
        .arg("--address")
        .arg(&sock)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("sn.log")).expect("log"))
        .spawn()
        .expect("hulld snapshotter-serve");
    let guard = Guard(Some(child));
    wait_for(&sock);
    (guard, sock)
}

#[test]
fn containerd_runs_containers_on_hulls_snapshotter_and_shim() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("hull-proxy-")
        .tempdir()
        .expect("tempdir");
    let d = dir.path();
    let (_sn, sn_sock) = serve_snapshotter(d);
    let ctd_sock = d.join("containerd.sock");
    let config = format!(
        "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = {sock:?}\n[ttrpc]\n  address = {ttrpc:?}\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n\
         [proxy_plugins.hull]\n  type = \"snapshot\"\n  address = {sn:?}\n",
        root = d.join("ctd-root"),
        state = d.join("ctd-state"),
        sock = ctd_sock,
        ttrpc = d.join("containerd.sock.ttrpc"),
        opt = d.join("opt"),
        sn = sn_sock,
    );
    std::fs::write(d.join("containerd.toml"), config).expect("config");
    // hull-shim installed as containerd-shim-hull-v1, on containerd's PATH.
    let bin = d.join("bin");
    std::fs::create_dir_all(&bin).expect("bin dir");
    std::os::unix::fs::symlink(
        workspace_bin("hull-shim"),
        bin.join("containerd-shim-hull-v1"),
    )
    .expect("link shim");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let _ctd = Guard(Some(
        Command::new("containerd")
            .env("PATH", path)
            .arg("--config")
            .arg(d.join("containerd.toml"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("containerd.log")).expect("log"))
            .spawn()
            .expect("containerd"),
    ));
    wait_for(&ctd_sock);
    let ns = format!("hull-proxy-{}", std::process::id());
    let ctr = |args: &[&str]| {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&ctd_sock)
            .arg("--namespace")
            .arg(&ns)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("ctr");
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\ncontainerd log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(d.join("containerd.log")).unwrap_or_default()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plugins = ctr(&["plugins", "ls"]);
    assert!(
        plugins
            .lines()
            .any(|l| l.contains("io.containerd.snapshotter.v1")
                && l.contains("hull")
                && l.trim_end().ends_with("ok")),
        "{plugins}"
    );
    let img = image(busybox_layer(&BTreeMap::new()));
    let tar = d.join("img.tar");
    write_oci_archive(&tar, &img, "docker.io/hull/proxy:1");
    ctr(&[
        "images",
        "import",
        "--snapshotter",
        "hull",
        tar.to_str().expect("p"),
    ]);
    let ls = ctr(&["snapshots", "--snapshotter", "hull", "ls"]);
    assert!(ls.contains(&img.layer.digest), "{ls}");
    let out = ctr(&[
        "run",
        "--rm",
        "--snapshotter",
        "hull",
        "docker.io/hull/proxy:1",
        "hull-proxy-echo",
        "/bin/echo",
        "ok",
    ]);
    assert_eq!(out.trim(), "ok");
    // containerd drives hull-shim, on containerd's own snapshotter.
    ctr(&["images", "import", tar.to_str().expect("p")]);
    let out = ctr(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.hull.v1",
        "docker.io/hull/proxy:1",
        "hull-shim-echo",
        "sh",
        "-c",
        "echo from-hull-shim",
    ]);
    assert_eq!(out.trim(), "from-hull-shim");
    ctr(&[
        "run",
        "-d",
        "--runtime",
        "io.containerd.hull.v1",
        "docker.io/hull/proxy:1",
        "hull-shim-sleep",
        "sleep",
        "100",
    ]);
    let ls = ctr(&["tasks", "ls"]);
    assert!(
        ls.contains("hull-shim-sleep") && ls.contains("RUNNING"),
        "{ls}"
    );
    ctr(&["tasks", "kill", "-s", "SIGKILL", "hull-shim-sleep"]);
    let mut stopped = false;
    for _ in 0..100 {
        if ctr(&["tasks", "ls"]).contains("STOPPED") {
            stopped = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(stopped, "containerd never saw the task exit");
    ctr(&["tasks", "rm", "hull-shim-sleep"]);
    ctr(&["containers", "rm", "hull-shim-sleep"]);
    ctr(&["images", "rm", "--sync", "docker.io/hull/proxy:1"]);
    drop(_ctd);
    hull_tests::daemon::remove_ns_cgroups(&ns);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mountinfo.contains(d.to_str().expect("p")),
        "mounts left behind:\n{mountinfo}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hulld_forwards_to_a_proxy_snapshotter_from_its_config() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("hull-proxy-")
        .tempdir()
        .expect("tempdir");
    let (_sn, sock) = serve_snapshotter(dir.path());
    let config = format!("[proxy_plugins.remote]\ntype = \"snapshot\"\naddress = {sock:?}\n");
    let d = Daemon::start_with_config("proxied", &config).await;
    let tar = d.dir().join("img.tar");
    let chains = chain_ids(&write_oci_layers(
        &tar,
        &[busybox_layer(&BTreeMap::new())],
        "docker.io/hull/remote:1",
    ));
    d.ctr_ok(&[
        "images",
        "import",
        "--snapshotter",
        "remote",
        tar.to_str().expect("p"),
    ]);
    let ls = d.ctr_ok(&["snapshots", "--snapshotter", "remote", "ls"]);
    assert!(ls.contains(&chains[0]), "{ls}");
    // The data lives with the proxy, not in hulld's root.
    assert_eq!(
        hull_tests::snapshot_dirs::count(&dir.path().join("sn-root/snapshots")),
        1
    );
    let mnt = d.dir().join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let m = mnt.to_str().expect("p");
    d.ctr_ok(&[
        "images",
        "mount",
        "--snapshotter",
        "remote",
        "docker.io/hull/remote:1",
        m,
    ]);
    let busybox = mnt.join("bin/busybox").exists();
    d.ctr_ok(&["images", "unmount", "--rm", m]);
    assert!(busybox);
    // Collection reaches the proxy too.
    d.ctr_ok(&["images", "rm", "--sync", "docker.io/hull/remote:1"]);
    hull_tests::snapshot_dirs::settle_to(&dir.path().join("sn-root/snapshots"), 0).await;
}
