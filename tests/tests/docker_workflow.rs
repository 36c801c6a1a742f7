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
