//! hullctl's Docker workflow against a real hulld, runc and CNI plugins:
//! the lifecycle, logs, exec, restart policies, ports, volumes.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hull_tests::daemon::{eventually, is_root, Daemon};
use hull_tests::image::{busybox_layer, write_oci_layers};

const IMAGE: &str = "docker.io/hull/busybox:1";

fn import_busybox(d: &Daemon) {
    let tar = d.dir().join("busybox.tar");
    write_oci_layers(&tar, &[busybox_layer(&BTreeMap::new())], IMAGE);
    d.ctr_ok(&["images", "import", tar.to_str().expect("path")]);
}

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const TICKER: &str = "trap '' TERM; while true; do echo tick; sleep 0.2; done";

#[tokio::test(flavor = "multi_thread")]
async fn the_container_lifecycle_end_to_end() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("dw-life").await;
    import_busybox(&d);
    let id = d.hullctl_ok(&["run", "-d", "--name", "web", IMAGE, "sh", "-c", TICKER]);
    let id = id.trim().to_owned();
    assert_eq!(id.len(), 64, "run -d prints the full id: {id}");

    // ps: Docker's columns, the short id, the name, "Up".
    let ps = d.hullctl_ok(&["ps"]);
    let mut lines = ps.lines();
    let header = lines.next().expect("header");
    for col in [
        "CONTAINER ID",
        "IMAGE",
        "COMMAND",
        "CREATED",
        "STATUS",
        "PORTS",
        "NAMES",
    ] {
        assert!(header.contains(col), "{header}");
    }
    let row = lines.next().expect("one row");
    assert!(row.starts_with(&id[..12]), "{row}");
    assert!(
        row.contains("Up ") && row.trim_end().ends_with("web"),
        "{row}"
    );
    assert!(row.contains("hull/busybox:1"), "{row}");
    assert_eq!(d.hullctl_ok(&["ps", "-q"]).trim(), &id[..12]);

    // logs --tail 2 gives the last two lines; logs -f streams new ones.
    assert!(
        eventually(Duration::from_secs(5), || d
            .hullctl_ok(&["logs", "web"])
            .lines()
            .count()
            >= 3)
        .await
    );
    let tail = d.hullctl_ok(&["logs", "--tail", "2", "web"]);
    assert_eq!(tail, "tick\ntick\n");
    let mut follow = d
        .hullctl()
        .args(["logs", "-f", "--tail", "0", "web"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("logs -f");
    let stdout = follow.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut lines = std::io::BufReader::new(stdout).lines();
        let mut got = Vec::new();
        while got.len() < 3 {
            match lines.next() {
                Some(Ok(l)) => got.push(l),
                _ => break,
            }
        }
        got
    });
    let got = tokio::task::spawn_blocking(move || reader.join().expect("reader"))
        .await
        .expect("join");
    assert_eq!(got, ["tick", "tick", "tick"], "logs -f streams new lines");
    let _ = follow.kill();
    let _ = follow.wait();

    // exec, top, inspect.
    assert_eq!(
        d.hullctl_ok(&["exec", "web", "cat", "/etc/hostname"])
            .trim(),
        &id[..12]
    );
    let o = d.hullctl_run(&["exec", "web", "sh", "-c", "echo out; echo err >&2; exit 3"]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!((out(&o).as_str(), err(&o).as_str()), ("out\n", "err\n"));
    let top = d.hullctl_ok(&["top", "web"]);
    assert!(
        top.starts_with("UID") && top.contains("sh -c trap"),
        "{top}"
    );
    let inspect = d.hullctl_ok(&[
        "inspect",
        "--format",
        "{{.State.Status}} {{.Name}} {{.State.Pid}}",
        "web",
    ]);
    let fields: Vec<&str> = inspect.split_whitespace().collect();
    assert_eq!(&fields[..2], ["running", "/web"]);
    assert!(fields[2].parse::<u32>().expect("pid") > 1);
    let log_path = d.hullctl_ok(&["inspect", "-f", "{{.LogPath}}", "web"]);
    assert!(log_path.trim().ends_with(&format!("{id}-json.log")));
    let first = std::fs::read_to_string(log_path.trim()).expect("log file");
    let line: serde_json::Value =
        serde_json::from_str(first.lines().next().expect("a line")).expect("json line");
    assert_eq!(
        (line["log"].as_str(), line["stream"].as_str()),
        (Some("tick\n"), Some("stdout"))
    );
    assert!(line["time"].as_str().is_some_and(|t| t.ends_with('Z')));

    // stop -t 1 of a process that ignores SIGTERM: killed after a second.
    let t = Instant::now();
    d.hullctl_ok(&["stop", "-t", "1", "web"]);
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    let ps = d.hullctl_ok(&["ps", "-a"]);
    assert!(ps.contains("Exited (137)"), "{ps}");
    assert_eq!(
        d.hullctl_ok(&["ps", "-q"]),
        "",
        "stopped containers are not in ps without -a"
    );

    // start, restart, rename, rm -f.
    d.hullctl_ok(&["start", "web"]);
    assert!(d.hullctl_ok(&["ps"]).contains("Up "));
    let pid1 = d.hullctl_ok(&["inspect", "-f", "{{.State.Pid}}", "web"]);
    d.hullctl_ok(&["restart", "-t", "0", "web"]);
    let pid2 = d.hullctl_ok(&["inspect", "-f", "{{.State.Pid}}", "web"]);
    assert_ne!(pid1, pid2, "restart runs a new process");
    d.hullctl_ok(&["rename", "web", "web2"]);
    assert!(d.hullctl_ok(&["ps"]).trim_end().ends_with("web2"));
    let o = d.hullctl_run(&["logs", "web"]);
    assert!(
        !o.status.success() && err(&o).contains("No such container: web"),
        "{}",
        err(&o)
    );
    d.hullctl_ok(&["rm", "-f", "web2"]);
    assert_eq!(d.hullctl_ok(&["ps", "-a", "-q"]), "");
    assert!(
        !d.root().join("containers/dw-life").join(&id).exists(),
        "the container's files are gone"
    );
    let c = d.client().await;
    let snaps = c
        .snapshots()
        .list(
            hull_proto::containerd::services::snapshots::v1::ListSnapshotsRequest {
                snapshotter: "overlayfs".into(),
                filters: vec![],
            },
        )
        .await
        .expect("list snapshots");
    let mut s = snaps.into_inner();
    while let Some(batch) = s.message().await.expect("batch") {
        assert!(
            batch.info.iter().all(|i| i.name != id),
            "the container's snapshot is removed"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn foreground_run_passes_output_and_exit_code_and_rm_cleans_up() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("dw-fg").await;
    import_busybox(&d);
    let o = d.hullctl_run(&[
        "run",
        "--rm",
        "-e",
        "A=1",
        IMAGE,
        "sh",
        "-c",
        "echo $A; echo e >&2; exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", err(&o));
    assert_eq!(out(&o), "1\n");
    assert_eq!(err(&o), "e\n");
    assert_eq!(d.hullctl_ok(&["ps", "-a", "-q"]), "", "--rm removed it");
    // Piped stdin with -i.
    let mut child = d
        .hullctl()
        .args([
            "run",
            "--rm",
            "-i",
            IMAGE,
            "sh",
            "-c",
            "read x; echo got $x",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run -i");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hello\n")
        .expect("write");
    let o = child.wait_with_output().expect("wait");
    assert_eq!(out(&o), "got hello\n");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn nat_rules() -> String {
    let o = std::process::Command::new("iptables")
        .args(["-t", "nat", "-S"])
        .output()
        .expect("iptables");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// GET `path` from 127.0.0.1:`port`, retrying while the server starts.
async fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    for _ in 0..100 {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let req = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            if s.write_all(req.as_bytes()).is_ok() {
                let mut body = String::new();
                if s.read_to_string(&mut body).is_ok() && body.starts_with("HTTP/1") {
                    return Some(body);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn a_published_port_answers_on_loopback_and_rm_leaves_no_rules() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("dw-ports").await;
    import_busybox(&d);
    let port = free_port();
    let spec = format!("127.0.0.1:{port}:80");
    let id = d.hullctl_ok(&[
        "run", "-d", "--name", "web", "-p", &spec, IMAGE, "busybox", "httpd", "-f", "-p", "80",
        "-h", "/etc",
    ]);
    let id = id.trim().to_owned();
    let body = http_get(port, "/hostname")
        .await
        .expect("httpd answers through the published port");
    assert!(body.contains(&id[..12]), "{body}");
    let ps = d.hullctl_ok(&["ps"]);
    assert!(ps.contains(&format!("127.0.0.1:{port}->80/tcp")), "{ps}");
    let ip = d.hullctl_ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "web"]);
    let ip: std::net::Ipv4Addr = ip.trim().parse().expect("an IPv4 address");
    let subnet = d.bridge.1.trim_end_matches(".0/24");
    assert!(ip.to_string().starts_with(subnet), "{ip} in {}", d.bridge.1);
    assert!(
        nat_rules().contains(&format!("--dport {port}")),
        "a DNAT rule for the port"
    );
    let netns = d.root().join("containers/dw-ports").join(&id).join("netns");
    assert!(netns.exists());

    // The same host port again: refused, nothing created.
    let o = d.hullctl_run(&["run", "-d", "-p", &spec, IMAGE, "sleep", "5"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("port is already allocated"), "{}", err(&o));
    assert_eq!(d.hullctl_ok(&["ps", "-a", "-q"]).lines().count(), 1);

    d.hullctl_ok(&["rm", "-f", "web"]);
    assert!(
        !nat_rules().contains(&format!("--dport {port}")),
        "the DNAT rule is gone"
    );
    assert!(!netns.exists(), "the namespace is gone");
    let ipam = d.root().join("cni/state/ipam/bridge");
    let leased: Vec<String> = std::fs::read_dir(&ipam)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        !leased.iter().any(|f| f == &ip.to_string()),
        "the address is released: {leased:?}"
    );
    // Removing again is a clear NotFound, and teardown twice is harmless.
    let o = d.hullctl_run(&["rm", "-f", "web"]);
    assert!(err(&o).contains("No such container: web"));
}

#[tokio::test(flavor = "multi_thread")]
async fn networks_host_none_and_named() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("dw-nets").await;
    import_busybox(&d);
    let none = d.hullctl_ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "cat",
        "/proc/net/dev",
    ]);
    assert!(none.contains("lo:") && !none.contains("eth0"), "{none}");
    let host = d.hullctl_ok(&[
        "run",
        "--rm",
        "--network",
        "host",
        IMAGE,
        "cat",
        "/proc/net/dev",
    ]);
    assert!(host.contains("eth0"), "{host}");
    let name = format!("n{}", &d.bridge.0[2..]);
    d.hullctl_ok(&["network", "create", &name]);
    let info: serde_json::Value =
        serde_json::from_str(&d.hullctl_ok(&["network", "inspect", &name])).expect("json");
    let subnet = info[0]["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .expect("subnet")
        .to_owned();
    let prefix: String = subnet.split('.').take(2).collect::<Vec<_>>().join(".");
    let ls = d.hullctl_ok(&["network", "ls"]);
    assert!(
        ls.contains(&name) && ls.contains("host") && ls.contains("none"),
        "{ls}"
    );
    let o = d.hullctl_run(&["network", "create", &name]);
    assert!(
        !o.status.success() && err(&o).contains("already exists"),
        "{}",
        err(&o)
    );
    d.hullctl_ok(&[
        "run",
        "-d",
        "--name",
        "a",
        "--network",
        &name,
        IMAGE,
        "sleep",
        "30",
    ]);
    let ip = d.hullctl_ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", "a"]);
    assert!(
        ip.trim().starts_with(&format!("{prefix}.")),
        "{ip} is in the named network's {subnet}"
    );
    let o = d.hullctl_run(&["network", "rm", &name]);
    assert!(
        !o.status.success() && err(&o).contains("active endpoints"),
        "{}",
        err(&o)
    );
    let o = d.hullctl_run(&["run", "--rm", "--network", "nosuch", IMAGE, "true"]);
    assert!(
        !o.status.success() && err(&o).contains("network nosuch not found"),
        "{}",
        err(&o)
    );
    d.hullctl_ok(&["rm", "-f", "a"]);
    d.hullctl_ok(&["network", "rm", &name]);
    let bridge = net_bridge_gone(&name);
    assert!(bridge, "the named network's bridge device is deleted");
}

fn net_bridge_gone(name: &str) -> bool {
    let o = std::process::Command::new("ip")
        .args(["-br", "link"])
        .output()
        .expect("ip");
    !String::from_utf8_lossy(&o.stdout).contains(&format!("hull-{name}"))
}

fn import_with_data(d: &Daemon) {
    let mut extra = BTreeMap::new();
    extra.insert("data/seed.txt".to_owned(), b"from the image\n".to_vec());
    let tar = d.dir().join("seeded.tar");
    write_oci_layers(&tar, &[busybox_layer(&extra)], IMAGE);
    d.ctr_ok(&["images", "import", tar.to_str().expect("path")]);
}

#[tokio::test(flavor = "multi_thread")]
async fn volumes_keep_data_are_prefilled_and_prune_only_unused() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("dw-vol").await;
    import_with_data(&d);
    // A new named volume over /data is filled from the image first.
    let got = d.hullctl_ok(&[
        "run",
        "--rm",
        "-v",
        "store:/data",
        IMAGE,
        "sh",
        "-c",
        "cat /data/seed.txt; echo kept > /data/new.txt",
    ]);
    assert_eq!(got, "from the image\n");
    let vol = d.root().join("volumes/store/_data");
    assert_eq!(
        std::fs::read_to_string(vol.join("new.txt")).expect("written through"),
        "kept\n"
    );
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(vol.join("seed.txt")).expect("seed");
    assert_eq!(
        (meta.mode() & 0o777, meta.uid()),
        (0o644, 0),
        "modes and owners kept"
    );
    // Another container sees what the first wrote.
    assert_eq!(
        d.hullctl_ok(&[
            "run",
            "--rm",
            "-v",
            "store:/data",
            IMAGE,
            "cat",
            "/data/new.txt"
        ]),
        "kept\n"
    );
    assert!(d.hullctl_ok(&["volume", "ls"]).contains("store"));

    // A read-only bind mount refuses writes.
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("f"), "host file").expect("write");
    let bind = format!("{}:/x:ro", host.path().display());
    assert_eq!(
        d.hullctl_ok(&["run", "--rm", "-v", &bind, IMAGE, "cat", "/x/f"]),
        "host file"
    );
    let o = d.hullctl_run(&[
        "run",
        "--rm",
        "-v",
        &bind,
        IMAGE,
        "sh",
        "-c",
        "echo no > /x/g",
    ]);
    assert!(!o.status.success(), "write to a read-only bind mount fails");
    assert!(err(&o).contains("Read-only file system"), "{}", err(&o));
    assert!(!host.path().join("g").exists());
    // The root is writable, unless --read-only.
    assert_eq!(
        d.hullctl_ok(&["run", "--rm", IMAGE, "sh", "-c", "echo w > /w && cat /w"]),
        "w\n"
    );
    let o = d.hullctl_run(&[
        "run",
        "--rm",
        "--read-only",
        IMAGE,
        "sh",
        "-c",
        "echo w > /w",
    ]);
    assert!(
        !o.status.success() && err(&o).contains("Read-only file system"),
        "{}",
        err(&o)
    );
    // tmpfs.
    let t = d.hullctl_ok(&["run", "--rm", "--tmpfs", "/scratch", IMAGE, "mount"]);
    assert!(
        t.lines()
            .any(|l| l.contains(" /scratch ") && l.starts_with("tmpfs")),
        "{t}"
    );

    // prune removes only unused volumes.
    d.hullctl_ok(&["volume", "create", "spare"]);
    d.hullctl_ok(&[
        "run",
        "-d",
        "--name",
        "user",
        "-v",
        "busy:/data",
        IMAGE,
        "sleep",
        "30",
    ]);
    let pruned = d.hullctl_ok(&["volume", "prune", "-f"]);
    assert!(
        pruned.contains("spare") && pruned.contains("store") && !pruned.contains("busy"),
        "{pruned}"
    );
    let ls = d.hullctl_ok(&["volume", "ls", "-q"]);
    assert_eq!(ls.trim(), "busy");
    let o = d.hullctl_run(&["volume", "rm", "busy"]);
    assert!(
        !o.status.success() && err(&o).contains("volume is in use"),
        "{}",
        err(&o)
    );
    d.hullctl_ok(&["rm", "-f", "user"]);
    d.hullctl_ok(&["volume", "rm", "busy"]);
    assert_eq!(d.hullctl_ok(&["volume", "ls", "-q"]), "");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_one_clear_line_and_changes_nothing() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("dw-bad").await;
    import_busybox(&d);
    d.hullctl_ok(&["run", "-d", "--name", "taken", IMAGE, "sleep", "30"]);
    let env_file = d.dir().join("bad.env");
    std::fs::write(&env_file, "GOOD=1\nBAD KEY=2\n").expect("write");
    let env_file = env_file.to_string_lossy().into_owned();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["logs", "nosuch"], "No such container: nosuch"),
        (vec!["stop", "nosuch"], "No such container: nosuch"),
        (vec!["rm", "nosuch"], "No such container: nosuch"),
        (vec!["exec", "nosuch", "true"], "No such container: nosuch"),
        (vec!["inspect", "nosuch"], "No such container: nosuch"),
        (
            vec!["run", "--rm", "-v", "rel/path:/x", IMAGE, "true"],
            "invalid characters for a local volume name",
        ),
        (
            vec!["run", "--rm", "-v", "/a:b", IMAGE, "true"],
            "mount path must be absolute",
        ),
        (
            vec!["run", "--rm", "-p", "99999:80", IMAGE, "true"],
            "invalid port",
        ),
        (
            vec!["run", "--rm", "-p", "80/icmp", IMAGE, "true"],
            "invalid proto",
        ),
        (
            vec!["run", "--rm", "-e", "BAD KEY=1", IMAGE, "true"],
            "contains whitespaces",
        ),
        (
            vec!["run", "--rm", "--env-file", &env_file, IMAGE, "true"],
            "line 2",
        ),
        (
            vec!["run", "-d", "--name", "taken", IMAGE, "true"],
            "is already in use",
        ),
        (
            vec!["run", "--rm", "--name", "bad/name", IMAGE, "true"],
            "Invalid container name",
        ),
        (
            vec!["run", "--rm", "--restart", "sometimes", IMAGE, "true"],
            "invalid restart policy",
        ),
        (
            vec!["run", "--rm", "--log-opt", "max-size=lots", IMAGE, "true"],
            "invalid size",
        ),
        (vec!["rename", "taken", "taken"], "same name"),
        (vec!["kill", "-s", "NOPE", "taken"], "invalid signal"),
    ];
    for (args, want) in cases {
        let o = d.hullctl_run(&args);
        assert!(!o.status.success(), "{args:?} succeeded");
        let e = err(&o);
        assert!(e.contains(want), "{args:?}: {e}");
        assert_eq!(
            e.trim_end().lines().count(),
            1,
            "{args:?}: one line, got {e:?}"
        );
    }
    // run of an image that is nowhere: pull fails, nothing is created.
    let o = d.hullctl_run(&["run", "--rm", "127.0.0.1:1/none:1", "true"]);
    assert!(!o.status.success());
    assert!(
        err(&o).contains("Unable to find image '127.0.0.1:1/none:1' locally"),
        "{}",
        err(&o)
    );
    assert_eq!(
        d.hullctl_ok(&["ps", "-a", "-q"]).lines().count(),
        1,
        "only the first container exists"
    );
    assert!(d.hullctl_ok(&["ps"]).contains("taken"));
    assert_eq!(d.hullctl_ok(&["volume", "ls", "-q"]), "");
    d.hullctl_ok(&["rm", "-f", "taken"]);
}

fn inspect(d: &Daemon, name: &str, template: &str) -> String {
    d.hullctl_ok(&["inspect", "-f", template, name])
        .trim()
        .to_owned()
}

fn kill9(pid: &str) {
    let pid: i32 = pid.parse().expect("pid");
    assert!(pid > 1);
    // A container process this test started.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_policies_are_kept_by_hulld() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut d = Daemon::start("dw-restart").await;
    import_busybox(&d);

    // on-failure:3 restarts a failing container exactly three times.
    d.hullctl_ok(&[
        "run",
        "-d",
        "--name",
        "flaky",
        "--restart",
        "on-failure:3",
        IMAGE,
        "sh",
        "-c",
        "echo run; exit 1",
    ]);
    assert!(
        eventually(Duration::from_secs(20), || inspect(
            &d,
            "flaky",
            "{{.RestartCount}}"
        ) == "3"
            && inspect(&d, "flaky", "{{.State.Status}}") == "exited")
        .await,
        "restart count {}\n{}",
        inspect(&d, "flaky", "{{.RestartCount}}"),
        d.log()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        inspect(&d, "flaky", "{{.RestartCount}}"),
        "3",
        "no fourth restart"
    );
    assert_eq!(
        d.hullctl_ok(&["logs", "flaky"]),
        "run\nrun\nrun\nrun\n",
        "one run and three restarts"
    );

    // always: restarted after its process is killed.
    d.hullctl_ok(&[
        "run",
        "-d",
        "--name",
        "steady",
        "--restart",
        "always",
        IMAGE,
        "sleep",
        "1000",
    ]);
    let pid1 = inspect(&d, "steady", "{{.State.Pid}}");
    kill9(&pid1);
    assert!(
        eventually(Duration::from_secs(10), || {
            let p = inspect(&d, "steady", "{{.State.Pid}}");
            p != pid1 && p != "0"
        })
        .await,
        "steady was not restarted"
    );
    // ... and after hulld is killed, its process dies meanwhile, and
    // hulld comes back.
    let pid2 = inspect(&d, "steady", "{{.State.Pid}}");
    d.kill();
    kill9(&pid2);
    d.start_again().await;
    assert!(
        eventually(Duration::from_secs(15), || {
            let p = inspect(&d, "steady", "{{.State.Pid}}");
            p != pid2 && p != "0" && inspect(&d, "steady", "{{.State.Status}}") == "running"
        })
        .await,
        "steady was not restarted after hulld came back\n{}",
        d.log()
    );

    // stop is not undone, not even across a hulld restart.
    d.hullctl_ok(&["stop", "-t", "1", "steady"]);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(inspect(&d, "steady", "{{.State.Status}}"), "exited");
    d.restart().await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(inspect(&d, "steady", "{{.State.Status}}"), "exited");
    // start brings the policy back.
    d.hullctl_ok(&["start", "steady"]);
    let pid3 = inspect(&d, "steady", "{{.State.Pid}}");
    kill9(&pid3);
    assert!(
        eventually(Duration::from_secs(10), || {
            let p = inspect(&d, "steady", "{{.State.Pid}}");
            p != pid3 && p != "0"
        })
        .await
    );
    d.hullctl_ok(&["rm", "-f", "steady", "flaky"]);

    // containerd's own labels, set by ctr, are honoured too.
    let log = d.dir().join("ctr.log");
    let uri = format!("containerd.io/restart.loguri=file://{}", log.display());
    d.ctr_ok(&[
        "run",
        "-d",
        "--label",
        "containerd.io/restart.status=running",
        "--label",
        "containerd.io/restart.policy=on-failure:2",
        "--label",
        &uri,
        IMAGE,
        "byctr",
        "sh",
        "-c",
        "echo hi; exit 2",
    ]);
    assert!(
        eventually(Duration::from_secs(15), || {
            d.ctr_ok(&["containers", "info", "byctr"])
                .contains("\"containerd.io/restart.count\": \"2\"")
        })
        .await,
        "{}",
        d.ctr_ok(&["containers", "info", "byctr"])
    );
    // ctr's own run printed to ctr; the two restarts to the log URI.
    assert!(
        eventually(Duration::from_secs(5), || std::fs::read_to_string(&log)
            .unwrap_or_default()
            == "hi\nhi\n")
        .await
    );
    let _ = d.ctr_run(&["task", "delete", "-f", "byctr"]);
    d.ctr_ok(&["containers", "delete", "byctr"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_rotate_and_survive_a_hulld_restart() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut d = Daemon::start("dw-logs").await;
    import_busybox(&d);
    let script = "i=0; while [ $i -lt 400 ]; do echo line-$i; i=$((i+1)); done; sleep 1000";
    d.hullctl_ok(&[
        "run",
        "-d",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=3",
        IMAGE,
        "sh",
        "-c",
        script,
    ]);
    assert!(
        eventually(Duration::from_secs(10), || d
            .hullctl_ok(&["logs", "--tail", "1", "chatty"])
            == "line-399\n")
        .await
    );
    let path = inspect(&d, "chatty", "{{.LogPath}}");
    let dir = std::path::Path::new(&path)
        .parent()
        .expect("dir")
        .to_owned();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("log dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("-json.log"))
        .collect();
    files.sort();
    let base = std::path::Path::new(&path)
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        files,
        [base.clone(), format!("{base}.1"), format!("{base}.2")],
        "max-file files kept"
    );
    for f in &files {
        let len = std::fs::metadata(dir.join(f)).expect("stat").len();
        assert!(len <= 2048, "{f} is {len} bytes");
    }
    let all = d.hullctl_ok(&["logs", "chatty"]);
    let lines: Vec<&str> = all.lines().collect();
    assert!(
        lines.len() > 20 && lines.len() < 400,
        "older lines rotated away: {}",
        lines.len()
    );
    assert_eq!(*lines.last().expect("last"), "line-399");
    let first: u32 = lines[0].trim_start_matches("line-").parse().expect("n");
    let want: Vec<String> = (first..400).map(|i| format!("line-{i}")).collect();
    assert_eq!(lines, want, "what is kept is contiguous and in order");
    let ts = d.hullctl_ok(&["logs", "--tail", "1", "--timestamps", "chatty"]);
    let (t, rest) = ts.split_once(' ').expect("timestamp prefix");
    assert!(
        humantime::parse_rfc3339_weak(t).is_ok() && rest == "line-399\n",
        "{ts}"
    );

    // The shim keeps writing while hulld is away.
    d.hullctl_ok(&["exec", "chatty", "sh", "-c", "echo before > /proc/1/fd/1"]);
    d.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.start_again().await;
    d.hullctl_ok(&["exec", "chatty", "sh", "-c", "echo after > /proc/1/fd/1"]);
    assert!(
        eventually(Duration::from_secs(5), || d
            .hullctl_ok(&["logs", "--tail", "2", "chatty"])
            == "before\nafter\n")
        .await
    );
    d.hullctl_ok(&["rm", "-f", "chatty"]);
    assert!(!dir.exists(), "rm removes the logs");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminal_session_runs_detaches_attaches_and_restarts() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    use hull_tests::pty::Pty;
    let d = Daemon::start("dw-tty").await;
    import_busybox(&d);
    let t = Duration::from_secs(10);

    // run --rm -it: a shell that answers and exits with its code.
    let mut cmd = d.hullctl();
    cmd.args(["run", "--rm", "-it", IMAGE, "sh"]);
    let mut p = Pty::spawn(cmd);
    p.send(b"echo hi-$((40+2))\r");
    assert!(p.expect("hi-42", t), "screen: {:?}", p.screen());
    p.send(b"exit 5\r");
    let status = tokio::task::block_in_place(|| p.wait(t)).expect("exits");
    assert_eq!(status.code(), Some(5), "screen: {:?}", p.screen());
    assert_eq!(d.hullctl_ok(&["ps", "-a", "-q"]), "");

    // Ctrl-P Ctrl-Q detaches; attach comes back to the same shell.
    let mut cmd = d.hullctl();
    cmd.args(["run", "-it", "--name", "sess", IMAGE, "sh"]);
    let mut p = Pty::spawn(cmd);
    p.send(b"X=kept; echo one-$((0+1))\r");
    assert!(p.expect("one-1", t), "screen: {:?}", p.screen());
    p.send(&[0x10, 0x11]);
    let status = tokio::task::block_in_place(|| p.wait(t)).expect("detaches");
    assert!(status.success(), "screen: {:?}", p.screen());
    assert!(
        d.hullctl_ok(&["ps"]).contains("sess"),
        "still running after detach"
    );

    let mut cmd = d.hullctl();
    cmd.args(["attach", "sess"]);
    let mut p = Pty::spawn(cmd);
    p.send(b"echo again-$X\r");
    assert!(
        p.expect("again-kept", t),
        "the same shell: {:?}",
        p.screen()
    );
    p.send(&[0x10, 0x11]);
    assert!(tokio::task::block_in_place(|| p.wait(t))
        .expect("detaches")
        .success());

    // exec -it: a second shell on a terminal of its own, with its code.
    let mut cmd = d.hullctl();
    cmd.args(["exec", "-it", "sess", "sh"]);
    let mut p = Pty::spawn(cmd);
    p.send(b"tty; echo in-exec-$((2+2))\r");
    assert!(p.expect("in-exec-4", t), "screen: {:?}", p.screen());
    assert!(
        p.screen().contains("/dev/pts/"),
        "a terminal: {:?}",
        p.screen()
    );
    p.send(b"exit 3\r");
    let status = tokio::task::block_in_place(|| p.wait(t)).expect("exits");
    assert_eq!(status.code(), Some(3), "screen: {:?}", p.screen());

    // Stopped, then start -i re-enters a shell.
    d.hullctl_ok(&["stop", "-t", "1", "sess"]);
    let mut cmd = d.hullctl();
    cmd.args(["start", "-i", "sess"]);
    let mut p = Pty::spawn(cmd);
    // The new shell prints its prompt once it reads the terminal.
    std::thread::sleep(Duration::from_millis(300));
    p.send(b"echo three-$((1+2))\r");
    assert!(p.expect("three-3", t), "screen: {:?}", p.screen());
    p.send(b"exit 0\r");
    let status = tokio::task::block_in_place(|| p.wait(t)).expect("exits");
    assert_eq!(status.code(), Some(0));
    d.hullctl_ok(&["rm", "-f", "sess"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn cp_commit_history_and_images() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("dw-commit").await;
    import_busybox(&d);
    d.hullctl_ok(&["run", "-d", "--name", "box", IMAGE, "sleep", "1000"]);
    // cp both ways, on a running container.
    let host = tempfile::tempdir().expect("tempdir");
    std::fs::write(host.path().join("in.txt"), "from the host\n").expect("write");
    let src = host.path().join("in.txt");
    d.hullctl_ok(&["cp", src.to_str().expect("path"), "box:/tmp/"]);
    assert_eq!(
        d.hullctl_ok(&["exec", "box", "cat", "/tmp/in.txt"]),
        "from the host\n"
    );
    d.hullctl_ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "mkdir -p /made/sub && echo inside > /made/sub/f",
    ]);
    let out_dir = host.path().join("out");
    d.hullctl_ok(&["cp", "box:/made", out_dir.to_str().expect("path")]);
    assert_eq!(
        std::fs::read_to_string(out_dir.join("sub/f")).expect("copied out"),
        "inside\n"
    );
    let o = d.hullctl_run(&["cp", "box:/nope", out_dir.to_str().expect("path")]);
    assert!(
        !o.status.success() && err(&o).contains("Could not find the file /nope"),
        "{}",
        err(&o)
    );

    // commit, then run the new image: it sees the change.
    let id = d.hullctl_ok(&["commit", "-m", "added files", "box", "hull/committed:v1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(
        d.hullctl_ok(&[
            "run",
            "--rm",
            "hull/committed:v1",
            "cat",
            "/tmp/in.txt",
            "/made/sub/f"
        ]),
        "from the host\ninside\n"
    );
    let hist = d.hullctl_ok(&["history", "hull/committed:v1"]);
    let rows: Vec<&str> = hist.lines().collect();
    assert!(
        rows[0].starts_with("IMAGE") && rows[0].contains("CREATED BY"),
        "{hist}"
    );
    assert!(rows.len() >= 3, "the new layer over the image's: {hist}");
    assert!(
        rows[1].contains("sleep 1000") && rows[1].contains("added files"),
        "{hist}"
    );
    let images = d.hullctl_ok(&["images"]);
    let header = images.lines().next().expect("header");
    for col in ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"] {
        assert!(header.contains(col), "{header}");
    }
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("hull/committed") && l.contains("v1")),
        "{images}"
    );
    assert!(
        images
            .lines()
            .any(|l| l.starts_with("hull/busybox") && l.contains(" 1 ")),
        "{images}"
    );
    assert!(d
        .hullctl_ok(&["images", "check"])
        .lines()
        .skip(1)
        .all(|l| l.contains("complete")));
    let o = d.hullctl_run(&["rmi", IMAGE]);
    assert!(
        !o.status.success() && err(&o).contains("is using its referenced image"),
        "{}",
        err(&o)
    );
    d.hullctl_ok(&["rm", "-f", "box"]);
    d.hullctl_ok(&["rmi", "hull/committed:v1"]);
    assert!(!d.hullctl_ok(&["images"]).contains("committed"));
    // The base still runs: its layers were kept.
    assert_eq!(d.hullctl_ok(&["run", "--rm", IMAGE, "echo", "ok"]), "ok\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn system_prune_removes_exactly_what_is_unused() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("dw-prune").await;
    import_busybox(&d);
    d.hullctl_ok(&["tag", IMAGE, "hull/spare:1"]);
    d.hullctl_ok(&[
        "run",
        "-d",
        "--name",
        "alive",
        "-v",
        "inuse:/data",
        IMAGE,
        "sleep",
        "1000",
    ]);
    d.hullctl_ok(&[
        "run",
        "--name",
        "done",
        "-v",
        "leftover:/data",
        IMAGE,
        "true",
    ]);
    d.hullctl_ok(&["create", "--name", "fresh", IMAGE, "true"]);
    d.hullctl_ok(&["volume", "create", "orphan"]);
    let net = format!("p{}", &d.bridge.0[2..]);
    d.hullctl_ok(&["network", "create", &net]);
    let df = d.hullctl_ok(&["system", "df"]);
    assert!(
        df.contains("Images") && df.contains("Containers") && df.contains("Local Volumes"),
        "{df}"
    );
    let blobs_before = d.blob_files().len();

    let out = d.hullctl_ok(&["system", "prune", "-a", "--volumes", "-f"]);
    assert!(out.contains("Deleted Containers"), "{out}");
    let ps = d.hullctl_ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(
        ps.trim(),
        "alive",
        "stopped and created containers are gone, the running one stays"
    );
    let images = d.hullctl_ok(&["images", "ls", "-q"]);
    assert_eq!(
        images.trim(),
        IMAGE,
        "the unused tag is gone, the used image stays"
    );
    let vols = d.hullctl_ok(&["volume", "ls", "-q"]);
    assert_eq!(vols.trim(), "inuse", "unused volumes are gone");
    assert!(
        !d.hullctl_ok(&["network", "ls"]).contains(&net),
        "the unused network is gone"
    );
    assert_eq!(
        d.blob_files().len(),
        blobs_before,
        "the running container's image keeps its blobs"
    );
    assert_eq!(d.hullctl_ok(&["exec", "alive", "echo", "still"]), "still\n");
    d.hullctl_ok(&["rm", "-f", "alive"]);
    // Now the image is unused: prune -a takes it and the daemon's GC its blobs.
    d.hullctl_ok(&["system", "prune", "-a", "-f"]);
    assert_eq!(d.hullctl_ok(&["images", "ls", "-q"]), "");
    assert!(
        eventually(Duration::from_secs(5), || d.blob_files().is_empty()).await,
        "{:?}",
        d.blob_files()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn ctr_groups_show_the_daemons_objects() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("dw-debug").await;
    import_busybox(&d);
    let id = d.hullctl_ok(&["run", "-d", "--name", "dbg", IMAGE, "sleep", "1000"]);
    let id = id.trim();
    let plugins = d.hullctl_ok(&["plugins"]);
    assert!(
        plugins.contains("io.containerd.snapshotter.v1")
            || plugins.contains("io.containerd.runtime.v2"),
        "{plugins}"
    );
    assert!(d.hullctl_ok(&["namespaces"]).contains("dw-debug"));
    assert!(d.hullctl_ok(&["containers"]).contains(id));
    assert!(d
        .hullctl_ok(&["containers", "info", id])
        .contains("io.hull.name"));
    let tasks = d.hullctl_ok(&["tasks"]);
    assert!(
        tasks
            .lines()
            .any(|l| l.starts_with(id) && l.contains("RUNNING")),
        "{tasks}"
    );
    assert!(d
        .hullctl_ok(&["snapshots"])
        .lines()
        .any(|l| l.starts_with(id) && l.contains("Active")));
    assert!(d.hullctl_ok(&["images", "ls"]).contains(IMAGE));
    assert!(d.hullctl_ok(&["content"]).contains("sha256:"));
    let lease = d.hullctl_ok(&["leases", "create", "--id", "L1", "--expires", "1h"]);
    assert_eq!(lease.trim(), "L1");
    assert!(d
        .hullctl_ok(&["leases"])
        .contains("containerd.io/gc.expire"));
    d.hullctl_ok(&["leases", "rm", "L1"]);
    let mnt = d.dir().join("mnt");
    d.hullctl_ok(&["images", "mount", IMAGE, mnt.to_str().expect("path")]);
    assert!(mnt.join("bin/busybox").exists());
    d.hullctl_ok(&["images", "unmount", mnt.to_str().expect("path")]);
    assert!(!mnt.join("bin/busybox").exists());
    // events: a subscriber sees a container's deletion.
    let mut ev = d
        .hullctl()
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("events");
    tokio::time::sleep(Duration::from_millis(300)).await;
    d.hullctl_ok(&["rm", "-f", "dbg"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = ev.kill();
    let o = ev.wait_with_output().expect("events output");
    let text = out(&o);
    assert!(
        text.contains("/containers/delete") && text.contains("/tasks/delete"),
        "{text}"
    );
}

fn cap_eff(status: &str) -> u64 {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff")
        .trim();
    u64::from_str_radix(hex, 16).expect("hex")
}

#[tokio::test(flavor = "multi_thread")]
async fn run_and_exec_flags_reach_the_process() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("dw-flags").await;
    import_busybox(&d);
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "none"];
        all.extend_from_slice(args);
        d.hullctl_ok(&all)
    };
    assert_eq!(run(&["--hostname", "h1", IMAGE, "hostname"]), "h1\n");
    assert_eq!(run(&["-w", "/tmp", IMAGE, "pwd"]), "/tmp\n");
    assert_eq!(
        run(&["-u", "1234:5678", IMAGE, "id"]).trim(),
        "uid=1234 gid=5678"
    );
    assert_eq!(run(&["--entrypoint", "echo", IMAGE, "a", "b"]), "a b\n");
    let env_file = d.dir().join("ok.env");
    std::fs::write(&env_file, "# comment\nFROM_FILE=yes\n").expect("write");
    let env = run(&[
        "-e",
        "A=1",
        "--env-file",
        env_file.to_str().expect("path"),
        IMAGE,
        "env",
    ]);
    assert!(
        env.lines().any(|l| l == "A=1") && env.lines().any(|l| l == "FROM_FILE=yes"),
        "{env}"
    );
    let caps = cap_eff(&run(&[
        "--cap-drop",
        "ALL",
        "--cap-add",
        "NET_BIND_SERVICE",
        IMAGE,
        "cat",
        "/proc/self/status",
    ]));
    assert_eq!(caps, 1 << 10, "only CAP_NET_BIND_SERVICE");
    let default_caps = cap_eff(&run(&[IMAGE, "cat", "/proc/self/status"]));
    let privileged = cap_eff(&run(&["--privileged", IMAGE, "cat", "/proc/self/status"]));
    assert!(
        privileged & (1 << 21) != 0 && default_caps & (1 << 21) == 0,
        "CAP_SYS_ADMIN only when privileged"
    );
    // Resource limits land in the spec runc is given.
    let id = d.hullctl_ok(&[
        "create",
        "--memory",
        "64m",
        "--pids-limit",
        "20",
        "--cpus",
        "0.5",
        IMAGE,
        "true",
    ]);
    let info: serde_json::Value =
        serde_json::from_str(&d.hullctl_ok(&["containers", "info", id.trim()])).expect("json");
    let res = &info["Spec"]["linux"]["resources"];
    assert_eq!(res["memory"]["limit"], 64 << 20);
    assert_eq!(res["pids"]["limit"], 20);
    assert_eq!(
        (res["cpu"]["quota"].as_i64(), res["cpu"]["period"].as_u64()),
        (Some(50_000), Some(100_000))
    );
    d.hullctl_ok(&["rm", id.trim()]);

    // exec's own -w, -u, -e.
    d.hullctl_ok(&[
        "run",
        "-d",
        "--name",
        "x",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "1000",
    ]);
    assert_eq!(d.hullctl_ok(&["exec", "-w", "/tmp", "x", "pwd"]), "/tmp\n");
    assert_eq!(d.hullctl_ok(&["exec", "-u", "42", "x", "id", "-u"]), "42\n");
    assert_eq!(
        d.hullctl_ok(&["exec", "-e", "Y=2", "x", "sh", "-c", "echo $Y"]),
        "2\n"
    );
    let mut child = d
        .hullctl()
        .args(["exec", "-i", "x", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("exec -i");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"piped\n")
        .expect("write");
    assert_eq!(out(&child.wait_with_output().expect("wait")), "piped\n");
    d.hullctl_ok(&["rm", "-f", "x"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_daemons_log_rotation_applies_when_the_client_sets_none() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start_with_config(
        "dw-logcfg",
        "[shim]\nlog_max_size = \"1k\"\nlog_max_file = 2\n",
    )
    .await;
    import_busybox(&d);
    let script = "i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done";
    d.hullctl_ok(&["run", "--name", "c", IMAGE, "sh", "-c", script]);
    let path = inspect(&d, "c", "{{.LogPath}}");
    assert!(
        std::path::Path::new(&format!("{path}.1")).exists(),
        "rotated at the daemon's 1k"
    );
    assert!(
        !std::path::Path::new(&format!("{path}.2")).exists(),
        "two files kept"
    );
    assert!(std::fs::metadata(&path).expect("log").len() <= 1024);
    // logs reads every file the shim kept, though the client asked for none.
    let logs = d.hullctl_ok(&["logs", "c"]);
    assert!(
        logs.lines().count() > 10 && logs.ends_with("line-299\n"),
        "{logs}"
    );
    d.hullctl_ok(&["rm", "c"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_detached_rm_container_is_removed_when_it_exits() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("dw-detrm").await;
    import_busybox(&d);
    let id = d.hullctl_ok(&[
        "run",
        "-d",
        "--rm",
        "--network",
        "none",
        IMAGE,
        "sleep",
        "1",
    ]);
    let id = id.trim().to_owned();
    assert!(
        d.hullctl_ok(&["ps", "-q"]).contains(&id[..12]),
        "running first"
    );
    assert!(
        eventually(Duration::from_secs(10), || d
            .hullctl_ok(&["ps", "-a", "-q"])
            .is_empty())
        .await,
        "removed once it exited"
    );
    assert!(!d.root().join("containers/dw-detrm").join(&id).exists());
}
