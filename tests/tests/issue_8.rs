//! Regressions: places where hulld differed from containerd 1.6 for real
//! clients and real images (namespaces labelled before use, umoci-built
//! layers, exec with a terminal, containers without a PID namespace,
//! runtime options old and new, resizing a terminal that is not there, a
//! missing runtime at start).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use prost::Message as _;

use hull_client::Client;
use hull_oci::oci_spec::runtime::{LinuxNamespaceType, ProcessBuilder, Spec, UserBuilder};
use hull_proto::containerd::linux::runc::RuncOptions;
use hull_proto::containerd::runc::v1::Options as RuncV2Options;
use hull_proto::containerd::services::containers::v1::{
    container::Runtime, Container, CreateContainerRequest, DeleteContainerRequest,
    GetContainerRequest,
};
use hull_proto::containerd::services::content::v1::{
    Info, InfoRequest, StatusRequest, UpdateRequest, WriteAction, WriteContentRequest,
};
use hull_proto::containerd::services::leases::v1::{
    AddResourceRequest, CreateRequest as LeaseCreateRequest, DeleteRequest as LeaseDeleteRequest,
    Resource as LeaseResource,
};
use hull_proto::containerd::services::namespaces::v1::{
    GetNamespaceRequest, Namespace as ProtoNamespace, UpdateNamespaceRequest,
};
use hull_proto::containerd::services::tasks::v1::{
    CreateTaskRequest, DeleteProcessRequest, DeleteTaskRequest, ExecProcessRequest, KillRequest,
    ResizePtyRequest, StartRequest, WaitRequest,
};
use hull_proto::containerd::services::version::v1::VersionResponse;
use hull_tests::blobs::{write_blob, Ingest};
use hull_tests::daemon::{eventually, is_root, Daemon};
use hull_tests::h2raw::RawH2;
use hull_tests::image::{busybox_layer, write_oci_layers, BUSYBOX};

const IMAGE: &str = "docker.io/hull/busybox:1";

fn import_busybox(d: &Daemon) {
    let tar = d.dir().join("busybox.tar");
    write_oci_layers(&tar, &[busybox_layer(&BTreeMap::new())], IMAGE);
    d.ctr_ok(&["images", "import", tar.to_str().expect("path")]);
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
}

/// Reads a FIFO to its end on a thread.
fn read_fifo(path: PathBuf) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut out = Vec::new();
        let mut f = std::fs::File::open(&path).expect("open fifo");
        f.read_to_end(&mut out).expect("read fifo");
        out
    })
}

/// Pids whose command line contains `needle`.
fn pids_running(needle: &str) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labelling_a_missing_namespace_creates_it() {
    let d = Daemon::start("ns-label").await;
    // ctr labels through Update with a `labels.KEY` mask.
    d.ctr_ok(&[
        "namespaces",
        "label",
        "testing",
        "containerd.io/defaults/snapshotter=native",
    ]);
    let ls = d.ctr_ok(&["namespaces", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("testing") && l.contains("snapshotter=native")),
        "{ls}"
    );
    // Update without a mask, as containerd's client test setup does.
    let c = d.client().await;
    c.namespaces()
        .update(UpdateNamespaceRequest {
            namespace: Some(ProtoNamespace {
                name: "fresh".into(),
                labels: [("team".to_owned(), "a".to_owned())].into(),
            }),
            update_mask: None,
        })
        .await
        .expect("update creates");
    let got = c
        .namespaces()
        .get(GetNamespaceRequest {
            name: "fresh".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .namespace
        .expect("namespace");
    assert_eq!(got.labels.get("team").map(String::as_str), Some("a"));
    // Setting nothing on a missing namespace creates nothing.
    c.namespaces()
        .update(UpdateNamespaceRequest {
            namespace: Some(ProtoNamespace {
                name: "ghost".into(),
                labels: Default::default(),
            }),
            update_mask: None,
        })
        .await
        .expect("empty update");
    assert!(!d.ctr_ok(&["namespaces", "ls", "-q"]).contains("ghost"));
}

/// A three-layer image built by umoci (whose layer tars end right after
/// their last entry's data), as an archive `ctr images import` reads.
fn umoci_image(dir: &Path, name: &str) -> PathBuf {
    let layout = dir.join("layout");
    let umoci = |args: &[&str]| {
        let out = Command::new("umoci")
            .args(args)
            .output()
            .expect("run umoci (Debian package umoci)");
        assert!(
            out.status.success(),
            "umoci {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let image = format!("{}:1", layout.display());
    umoci(&["init", "--layout", layout.to_str().expect("p")]);
    umoci(&["new", "--image", &image]);
    let l1 = dir.join("l1");
    std::fs::create_dir_all(l1.join("bin")).expect("mkdir");
    std::fs::copy(BUSYBOX, l1.join("bin/busybox")).expect("copy busybox");
    std::os::unix::fs::symlink("busybox", l1.join("bin/sh")).expect("symlink");
    let l2 = dir.join("l2");
    std::fs::create_dir_all(l2.join("etc")).expect("mkdir");
    std::fs::write(l2.join("etc/first"), "one\n").expect("write");
    std::fs::write(l2.join("etc/gone"), "soon removed\n").expect("write");
    let l3 = dir.join("l3");
    std::fs::create_dir_all(l3.join("etc")).expect("mkdir");
    std::fs::write(l3.join("etc/second"), "two\n").expect("write");
    for l in [&l1, &l2, &l3] {
        umoci(&["insert", "--image", &image, l.to_str().expect("p"), "/"]);
    }
    umoci(&["insert", "--image", &image, "--whiteout", "/etc/gone"]);
    umoci(&["config", "--image", &image, "--config.cmd", "/bin/sh"]);
    let archive = dir.join(format!("{name}.tar"));
    let mut b = tar::Builder::new(std::fs::File::create(&archive).expect("create"));
    b.append_dir_all(".", &layout).expect("tar layout");
    b.finish().expect("finish tar");
    archive
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn umoci_layers_unpack_on_both_snapshotters_and_run() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("umoci").await;
    let archive = umoci_image(d.dir(), "umoci");
    let archive = archive.to_str().expect("p");
    for snapshotter in ["overlayfs", "native"] {
        let out = d.ctr_ok(&[
            "images",
            "import",
            "--snapshotter",
            snapshotter,
            "--base-name",
            "docker.io/hull/umoci",
            archive,
        ]);
        assert!(out.contains("done"), "{out}");
        let id = format!("um-{snapshotter}");
        let out = d.ctr_ok(&[
            "run",
            "--rm",
            "--snapshotter",
            snapshotter,
            "docker.io/hull/umoci:1",
            &id,
            "sh",
            "-c",
            "cat /etc/first /etc/second; test -e /etc/gone || echo gone",
        ]);
        assert_eq!(out, "one\ntwo\ngone\n", "on {snapshotter}");
    }
}

/// Creates container `id` from `ctr containers create`'s record, changed
/// by `change` (ctr has no flags for what these tests set).
async fn container_from_ctr(
    d: &Daemon,
    c: &Client,
    id: &str,
    args: &[&str],
    change: impl FnOnce(&mut Container),
) {
    let mut argv = vec!["containers", "create", IMAGE, id];
    argv.extend_from_slice(args);
    d.ctr_ok(&argv);
    let mut container = c
        .containers()
        .get(GetContainerRequest { id: id.into() })
        .await
        .expect("get")
        .into_inner()
        .container
        .expect("container");
    // Between the delete and the create nothing holds the container's
    // snapshot: a lease does, or a collection could take it.
    let lease = format!("swap-{id}");
    c.leases()
        .create(LeaseCreateRequest {
            id: lease.clone(),
            ..Default::default()
        })
        .await
        .expect("lease");
    c.leases()
        .add_resource(AddResourceRequest {
            id: lease.clone(),
            resource: Some(LeaseResource {
                id: container.snapshot_key.clone(),
                r#type: format!("snapshots/{}", container.snapshotter),
            }),
        })
        .await
        .expect("hold the snapshot");
    c.containers()
        .delete(DeleteContainerRequest { id: id.into() })
        .await
        .expect("delete");
    change(&mut container);
    c.containers()
        .create(CreateContainerRequest {
            container: Some(container),
        })
        .await
        .expect("create the changed container");
    c.leases()
        .delete(LeaseDeleteRequest {
            id: lease,
            sync: false,
        })
        .await
        .expect("end the lease");
}

/// [`container_from_ctr`] with another runtime name and options.
async fn container_with_runtime(
    d: &Daemon,
    c: &Client,
    id: &str,
    args: &[&str],
    runtime: &str,
    options: Option<prost_types::Any>,
) {
    container_from_ctr(d, c, id, args, |container| {
        container.runtime = Some(Runtime {
            name: runtime.into(),
            options,
        });
    })
    .await;
}

async fn run_task(c: &Client, id: &str, stdout: &Path) -> Result<u32, tonic::Status> {
    c.tasks()
        .create(CreateTaskRequest {
            container_id: id.into(),
            stdout: stdout.display().to_string(),
            ..Default::default()
        })
        .await?;
    c.tasks()
        .start(StartRequest {
            container_id: id.into(),
            exec_id: String::new(),
        })
        .await?;
    let exit = c
        .tasks()
        .wait(WaitRequest {
            container_id: id.into(),
            exec_id: String::new(),
        })
        .await?
        .into_inner();
    c.tasks()
        .delete(DeleteTaskRequest {
            container_id: id.into(),
        })
        .await?;
    Ok(exit.exit_status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_runtime_options_are_honoured_and_missing_binaries_named() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("runtime-v1").await;
    import_busybox(&d);
    let c = d.client().await;

    // The v1 Linux runtime name, with its own options naming the binary.
    let v1 = |binary: &str| {
        hull_proto::typeurl::pack(&RuncOptions {
            runtime: binary.into(),
            ..Default::default()
        })
    };
    container_with_runtime(
        &d,
        &c,
        "v1-runc",
        &["echo", "v1", "ok"],
        "io.containerd.runtime.v1.linux",
        Some(v1("runc")),
    )
    .await;
    let fifo = d.dir().join("v1.out");
    mkfifo(&fifo);
    let reader = read_fifo(fifo.clone());
    let status = run_task(&c, "v1-runc", &fifo).await.expect("v1 task runs");
    assert_eq!(status, 0);
    assert_eq!(reader.join().expect("reader"), b"v1 ok\n");

    container_with_runtime(
        &d,
        &c,
        "v1-missing",
        &["true"],
        "io.containerd.runtime.v1.linux",
        Some(v1("no-runc")),
    )
    .await;
    let err = run_task(&c, "v1-missing", Path::new(""))
        .await
        .expect_err("no such runtime");
    assert!(
        err.message()
            .contains(r#"exec: "no-runc": executable file not found in $PATH"#),
        "{err:?}"
    );

    // The v2 options through ctr.
    let out = d.ctr_run(&[
        "run",
        "--rm",
        "--runc-binary",
        "no-runc",
        IMAGE,
        "v2-missing",
        "true",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(r#"exec: "no-runc": executable file not found in $PATH"#),
        "{stderr}"
    );
    // Nothing is left behind by the failed creates.
    assert!(!d.ctr_ok(&["tasks", "ls"]).contains("missing"));
}

/// Every mounted cgroup v1 hierarchy (the unified one when there is none).
fn cgroup_roots() -> Vec<PathBuf> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let (mut v1, mut v2) = (Vec::new(), Vec::new());
    for line in table.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mountpoint = PathBuf::from(left.split(' ').nth(4).expect("mountpoint"));
        match right.split(' ').next() {
            Some("cgroup") => v1.push(mountpoint),
            Some("cgroup2") => v2.push(mountpoint),
            _ => {}
        }
    }
    if v1.is_empty() {
        v2
    } else {
        v1
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shim_joins_the_cgroup_its_options_name() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("shim-cgroup").await;
    import_busybox(&d);
    let c = d.client().await;
    let name = format!("hull-test-shim-{}", std::process::id());
    let dirs: Vec<PathBuf> = cgroup_roots().iter().map(|r| r.join(&name)).collect();
    for dir in &dirs {
        std::fs::create_dir(dir).expect("create cgroup");
        // A new cpuset cgroup takes no process until it has cpus and mems.
        for knob in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = std::fs::read_to_string(dir.parent().expect("parent").join(knob)) {
                std::fs::write(dir.join(knob), v.trim()).expect("set cpuset");
            }
        }
    }
    let options = hull_proto::typeurl::pack(&RuncV2Options {
        shim_cgroup: format!("/{name}"),
        ..Default::default()
    });
    container_with_runtime(
        &d,
        &c,
        "cg",
        &["sleep", "1000"],
        "io.containerd.runc.v2",
        Some(options),
    )
    .await;
    c.tasks()
        .create(CreateTaskRequest {
            container_id: "cg".into(),
            ..Default::default()
        })
        .await
        .expect("create task");
    let bundle = d.dir().join(format!("state/shims/{}/cg", d.ns));
    let shim_pid: u32 = std::fs::read_to_string(bundle.join("shim.pid"))
        .expect("shim.pid")
        .trim()
        .parse()
        .expect("pid");
    let cgroups = std::fs::read_to_string(format!("/proc/{shim_pid}/cgroup")).expect("cgroup");
    let in_it = cgroups
        .lines()
        .filter(|l| l.ends_with(&format!(":/{name}")))
        .count();
    let procs = std::fs::read_to_string(dirs[0].join("cgroup.procs")).expect("procs");
    // Clean up before asserting, so that a failure leaves no cgroup.
    c.tasks()
        .kill(KillRequest {
            container_id: "cg".into(),
            signal: 9,
            ..Default::default()
        })
        .await
        .expect("kill");
    c.tasks()
        .wait(WaitRequest {
            container_id: "cg".into(),
            exec_id: String::new(),
        })
        .await
        .expect("wait");
    c.tasks()
        .delete(DeleteTaskRequest {
            container_id: "cg".into(),
        })
        .await
        .expect("delete");
    let gone = eventually(Duration::from_secs(5), || {
        dirs.iter()
            .all(|d| std::fs::remove_dir(d).is_ok() || !d.exists())
    })
    .await;
    assert!(gone, "cgroups {dirs:?} still in use");
    assert_eq!(in_it, dirs.len(), "shim cgroups:\n{cgroups}");
    assert!(
        procs.lines().any(|p| p.trim() == shim_pid.to_string()),
        "{procs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_exit_kills_the_rest_without_a_pid_namespace() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("hostpid").await;
    import_busybox(&d);
    // Marks no other test uses, to find the processes by.
    let (child, init) = (
        format!("sleep 73{}", std::process::id() % 1000),
        format!("sleep 74{}", std::process::id() % 1000),
    );
    let script = format!("{child} & exec {init}");
    let c = d.client().await;
    // ctr's spec without its PID namespace: the container's processes live
    // in hulld's.
    container_from_ctr(&d, &c, "hp", &[], |container| {
        let any = container.spec.as_mut().expect("spec");
        let mut spec: Spec = serde_json::from_slice(&any.value).expect("ctr's spec");
        let mut process = spec.process().clone().expect("process");
        process.set_args(Some(vec!["sh".into(), "-c".into(), script]));
        spec.set_process(Some(process));
        let mut linux = spec.linux().clone().expect("linux");
        let mut namespaces = linux.namespaces().clone().expect("namespaces");
        namespaces.retain(|n| n.typ() != LinuxNamespaceType::Pid);
        linux.set_namespaces(Some(namespaces));
        spec.set_linux(Some(linux));
        any.value = serde_json::to_vec(&spec).expect("json");
    })
    .await;
    d.ctr_ok(&["tasks", "start", "-d", "hp"]);
    assert!(
        eventually(Duration::from_secs(5), || !pids_running(&child).is_empty()).await,
        "child never started"
    );
    d.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "hp"]);
    assert!(
        eventually(Duration::from_secs(10), || d
            .ctr_ok(&["tasks", "ls"])
            .contains("STOPPED"))
        .await
    );
    let left = pids_running(&child);
    for pid in &left {
        // A process this test started, found by its mark.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    d.ctr_ok(&["tasks", "rm", "hp"]);
    assert!(left.is_empty(), "{child:?} outlived init: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_with_a_terminal_and_large_output() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("exec-tty").await;
    import_busybox(&d);
    d.ctr_ok(&["run", "-d", IMAGE, "tty", "sleep", "1000"]);
    let c = d.client().await;
    // The process spec from the container's own, which says no terminal:
    // the request's terminal flag decides, as in containerd.
    let spec = ProcessBuilder::default()
        .args(
            ["sh", "-c", "seq -s ' ' 1000000"]
                .map(String::from)
                .to_vec(),
        )
        .cwd("/")
        .env(vec!["PATH=/bin".to_owned()])
        .user(UserBuilder::default().build().expect("user"))
        .terminal(false)
        .build()
        .expect("process");
    for round in 0..3 {
        let exec_id = format!("e{round}");
        let fifo = d.dir().join(format!("{exec_id}.out"));
        mkfifo(&fifo);
        let reader = read_fifo(fifo.clone());
        c.tasks()
            .exec(ExecProcessRequest {
                container_id: "tty".into(),
                exec_id: exec_id.clone(),
                terminal: true,
                stdout: fifo.display().to_string(),
                spec: Some(prost_types::Any {
                    type_url: hull_proto::typeurl::PROCESS_SPEC.into(),
                    value: serde_json::to_vec(&spec).expect("json"),
                }),
                ..Default::default()
            })
            .await
            .expect("exec");
        c.tasks()
            .start(StartRequest {
                container_id: "tty".into(),
                exec_id: exec_id.clone(),
            })
            .await
            .expect("start exec with a terminal");
        let exit = c
            .tasks()
            .wait(WaitRequest {
                container_id: "tty".into(),
                exec_id: exec_id.clone(),
            })
            .await
            .expect("wait")
            .into_inner();
        assert_eq!(exit.exit_status, 0);
        c.tasks()
            .delete_process(DeleteProcessRequest {
                container_id: "tty".into(),
                exec_id,
            })
            .await
            .expect("delete exec");
        let out = reader.join().expect("reader");
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.trim_end().ends_with("999999 1000000"),
            "round {round}: output ends {:?}",
            &text[text.len().saturating_sub(40)..]
        );
    }
    // A process without a terminal: resizing is a no-op, as in containerd.
    c.tasks()
        .resize_pty(ResizePtyRequest {
            container_id: "tty".into(),
            exec_id: String::new(),
            width: 80,
            height: 25,
        })
        .await
        .expect("resize without a terminal");
    d.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "tty"]);
    assert!(
        eventually(Duration::from_secs(10), || d
            .ctr_ok(&["tasks", "ls"])
            .contains("STOPPED"))
        .await
    );
    d.ctr_ok(&["tasks", "rm", "tty"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_runc_is_warned_about_at_start() {
    let d = Daemon::start_with_env("no-runc", "", &[("PATH", "/nonexistent")]).await;
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("\"runc\"") && l.contains("not on PATH")),
        "{log}"
    );
}

/// Whether the namespace's content store has `digest`.
async fn has_blob(c: &Client, digest: &str) -> bool {
    c.content()
        .info(InfoRequest {
            digest: digest.to_owned(),
        })
        .await
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_runs_on_deletions_and_mutations_not_on_a_timer() {
    let d = Daemon::start("gc-schedule").await;
    let c = d.client().await;
    // A blob written without a lease: nothing references it. (The
    // startup collection ran before hulld served; a second later, a timer
    // started with the daemon would be due too.)
    tokio::time::sleep(Duration::from_secs(1)).await;
    let loose = write_blob(&c, "loose", b"nobody holds me")
        .await
        .expect("write");
    // A minute with no deletion: hulld used to collect on a 60 s timer.
    tokio::time::sleep(Duration::from_secs(65)).await;
    assert!(
        has_blob(&c, &loose).await,
        "an unreferenced blob went without a deletion or enough mutations"
    );
    // containerd's mutation threshold (100): label changes on a rooted blob.
    let kept = write_blob(&c, "kept", b"rooted").await.expect("write");
    for i in 0..100 {
        c.content()
            .update(UpdateRequest {
                info: Some(Info {
                    digest: kept.clone(),
                    labels: [
                        ("containerd.io/gc.root".to_owned(), "yes".to_owned()),
                        ("n".to_owned(), i.to_string()),
                    ]
                    .into(),
                    ..Default::default()
                }),
                update_mask: None,
            })
            .await
            .expect("label");
    }
    let mut gone = false;
    for _ in 0..100 {
        if !has_blob(&c, &loose).await {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "100 mutations did not lead to a collection");
    assert!(has_blob(&c, &kept).await, "a gc.root blob was collected");
    // A deletion leads to one soon.
    let loose = write_blob(&c, "loose-2", b"nobody holds me either")
        .await
        .expect("write");
    let doomed = write_blob(&c, "doomed", b"deleted by hand")
        .await
        .expect("write");
    d.ctr_ok(&["content", "rm", &doomed]);
    let mut gone = false;
    for _ in 0..100 {
        if !has_blob(&c, &loose).await {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone, "a deletion did not lead to a collection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_sending_the_socket_path_as_authority_are_served() {
    let d = Daemon::start("authority").await;
    let sock = d.address();
    let ns = d.ns.clone();
    let replies = tokio::task::spawn_blocking(move || {
        let mut h2 = RawH2::connect(&sock).expect("connect");
        let path = sock.display().to_string();
        let headers: &[(&[u8], &[u8])] = &[(b"containerd-namespace", ns.as_bytes())];
        let version = "/containerd.services.version.v1.Version/Version";
        // The path as grpc-java and crictl send it, twice (the second time
        // from the client's HPACK table), its %-encoding as Python's grpcio
        // sends it, and a CRI service hulld does not serve yet.
        let encoded = path.trim_start_matches('/').replace('/', "%2F");
        let calls = [
            (version, path.clone()),
            (version, path.clone()),
            (version, encoded),
            ("/runtime.v1.RuntimeService/Version", path.clone()),
            (version, "localhost".to_owned()),
        ];
        calls
            .iter()
            .map(|(method, authority)| {
                h2.call(method, authority.as_bytes(), headers, &[])
                    .expect("call")
            })
            .collect::<Vec<_>>()
    })
    .await
    .expect("client thread");
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.reset, None, "call {i} reset: {r:?}");
        assert_eq!(r.goaway, None, "call {i}: {r:?}");
        assert_eq!(r.http_status.as_deref(), Some("200"), "call {i}: {r:?}");
    }
    for i in [0, 1, 2, 4] {
        assert_eq!(
            replies[i].grpc_status,
            Some(0),
            "call {i}: {:?}",
            replies[i]
        );
        let v = VersionResponse::decode(replies[i].body.as_slice()).expect("version reply");
        assert!(!v.version.is_empty(), "{v:?}");
    }
    // crictl's Version, with the socket path as authority, is served too:
    // hulld speaks CRI on the same socket.
    assert_eq!(replies[3].grpc_status, Some(0), "{:?}", replies[3]);
    let v = hull_proto::runtime::v1::VersionResponse::decode(replies[3].body.as_slice())
        .expect("CRI version reply");
    assert_eq!(
        (v.runtime_name.as_str(), v.runtime_api_version.as_str()),
        ("hull", "v1")
    );
    // ctr on the same daemon is unaffected.
    assert!(d.ctr_ok(&["version"]).contains("Server:"));
}

fn wall_nanos() -> i64 {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    i64::try_from(d.as_nanos()).expect("nanos")
}

fn ts_nanos(t: Option<prost_types::Timestamp>) -> i64 {
    let t = t.expect("timestamp");
    t.seconds * 1_000_000_000 + i64::from(t.nanos)
}

async fn ingest_status(
    c: &Client,
    r: &str,
) -> hull_proto::containerd::services::content::v1::Status {
    c.content()
        .status(StatusRequest { r#ref: r.into() })
        .await
        .expect("status")
        .into_inner()
        .status
        .expect("status")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_times_are_exact_and_expected_is_kept() {
    let mut d = Daemon::start("ingest-times").await;
    let c = d.client().await;
    let data = vec![7u8; 4096];
    let digest = hull_tests::image::sha256(&data);
    for round in 0..20 {
        let r = format!("times-{round}");
        let before_open = wall_nanos();
        let (mut ingest, stat) = Ingest::open_with(
            &c,
            WriteContentRequest {
                action: WriteAction::Stat as i32,
                r#ref: r.clone(),
                total: data.len() as i64,
                expected: digest.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("open");
        let after_open = wall_nanos();
        let started = ts_nanos(stat.started_at);
        assert!(
            (before_open..=after_open).contains(&started),
            "round {round}: started_at {started} outside [{before_open}, {after_open}]"
        );
        let before_write = wall_nanos();
        ingest.write(0, data[..1000].to_vec()).await.expect("write");
        let st = ingest_status(&c, &r).await;
        let updated = ts_nanos(st.updated_at);
        assert!(
            updated >= before_write,
            "round {round}: updated_at {} ns before the write was sent",
            before_write - updated
        );
        assert_eq!(st.offset, 1000);
        assert_eq!(st.total, data.len() as i64);
        assert_eq!(st.expected, digest, "round {round}: expected digest");
        assert_eq!(ts_nanos(st.started_at), started);
    }
    // The times survive a restart to the nanosecond.
    let before = ingest_status(&c, "times-0").await;
    drop(c);
    d.restart().await;
    let c = d.client().await;
    let after = ingest_status(&c, "times-0").await;
    assert_eq!(after.updated_at, before.updated_at);
    assert_eq!(after.started_at, before.started_at);
    assert_eq!(after.expected, digest);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ref_reopened_right_after_its_writer_closed_is_not_locked() {
    let d = Daemon::start("ref-reopen").await;
    let c = d.client().await;
    for i in 0..200 {
        let (mut ingest, stat) = Ingest::open(&c, "again")
            .await
            .unwrap_or_else(|e| panic!("reopen {i}: {e:?}"));
        ingest.write(stat.offset, vec![1u8]).await.expect("write");
        // Closing the stream is all a client does.
        drop(ingest);
    }
    assert_eq!(ingest_status(&c, "again").await.offset, 200);
    // Two live writers still exclude each other.
    let (_first, _) = Ingest::open(&c, "again").await.expect("first");
    let second = Ingest::open(&c, "again")
        .await
        .err()
        .expect("second writer");
    assert_eq!(second.code(), tonic::Code::Unavailable, "{second:?}");
}
