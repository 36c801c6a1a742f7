//! Containers and tasks: `ctr run` and the `ctr tasks` / `ctr containers`
//! verbs against hulld, with hull-shim and Debian's runc.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use hull_client::Client;
use hull_oci::oci_spec::runtime::{ProcessBuilder, RootBuilder, UserBuilder};
use hull_proto::containerd::services::containers::v1::{
    container::Runtime, Container, CreateContainerRequest,
};
use hull_proto::containerd::services::tasks::v1::{
    CreateTaskRequest, ExecProcessRequest, GetRequest, KillRequest, StartRequest,
};
use hull_proto::containerd::v1::types::Status as TaskStatus;
use hull_proto::errdefs::Kind;
use hull_tests::daemon::{eventually, is_root, Daemon};
use hull_tests::image::{busybox_layer, write_oci_layers};

const IMAGE: &str = "docker.io/hull/busybox:1";

/// Imports a busybox image into `d`.
fn import_busybox(d: &Daemon) {
    let tar = d.dir().join("busybox.tar");
    write_oci_layers(&tar, &[busybox_layer(&BTreeMap::new())], IMAGE);
    d.ctr_ok(&["images", "import", tar.to_str().expect("path")]);
}

fn kind(s: &tonic::Status) -> Kind {
    hull_client::from_status(s)
}

async fn task_status(c: &Client, id: &str) -> (TaskStatus, u32) {
    let p = c
        .tasks()
        .get(GetRequest {
            container_id: id.into(),
            exec_id: String::new(),
        })
        .await
        .expect("get task")
        .into_inner()
        .process
        .expect("process");
    (
        TaskStatus::try_from(p.status).expect("status"),
        p.exit_status,
    )
}

/// Mount points under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let d = dir.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .filter(|l| l.contains(&d))
        .map(str::to_owned)
        .collect()
}

/// Processes whose command line mentions `needle`, not zombies.
fn processes_with(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
        }
    }
    out
}

/// Zombie children of `pid`.
fn zombies_of(pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").expect("proc").flatten() {
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") && f.get(1) == Some(&pid.to_string().as_str()) {
            out.push(stat);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_rm_prints_output_and_passes_exit_codes() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("tasks-run").await;
    import_busybox(&d);
    let out = d.ctr_ok(&["run", "--rm", IMAGE, "hello1", "echo", "hello"]);
    assert_eq!(out, "hello\n");
    let out = d.ctr_run(&[
        "run",
        "--rm",
        IMAGE,
        "exit3",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("err\n"));
    // stdin reaches the process, and its end ends the process.
    let mut child = d
        .ctr()
        .args(["run", "--rm", IMAGE, "stdin1", "sh"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ctr");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"echo from-stdin; exit 4\n")
        .expect("write");
    let out = child.wait_with_output().expect("ctr");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "from-stdin\n");
    assert_eq!(out.status.code(), Some(4));
    // Nothing left behind.
    assert!(d.ctr_ok(&["containers", "ls", "-q"]).trim().is_empty());
    assert!(
        mounts_under(d.dir()).is_empty(),
        "{:?}",
        mounts_under(d.dir())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_a_terminal() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("tasks-tty").await;
    import_busybox(&d);
    // script(1) gives ctr a terminal of its own.
    let cmd = format!(
        "ctr --address {} --namespace {} run -t --rm {IMAGE} tty1 sh -c 'tty; exit 5'",
        d.address().display(),
        d.ns
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("/dev/pts/"), "{text}");
    assert_eq!(out.status.code(), Some(5), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_task_verbs() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("tasks-verbs").await;
    import_busybox(&d);
    let c = d.client().await;
    let mut events = c
        .events()
        .subscribe(
            hull_proto::containerd::services::events::v1::SubscribeRequest {
                filters: vec![format!("namespace=={}", d.ns)],
            },
        )
        .await
        .expect("subscribe")
        .into_inner();
    // A process that exits on SIGTERM (a trap, as pid 1 ignores it otherwise).
    d.ctr_ok(&[
        "run",
        "-d",
        IMAGE,
        "v1",
        "sh",
        "-c",
        "trap 'exit 143' TERM; while true; do sleep 0.1; done",
    ]);
    let ls = d.ctr_ok(&["tasks", "ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with("v1 ") && l.contains("RUNNING")),
        "{ls}"
    );
    let ps = d.ctr_ok(&["tasks", "ps", "v1"]);
    assert!(ps.lines().count() >= 2, "{ps}");
    // The runtime agrees that the shim started it: `runc state` says
    // running, not created.
    let state = std::process::Command::new("runc")
        .arg("--root")
        .arg(d.dir().join("runc").join(&d.ns))
        .args(["state", "v1"])
        .output()
        .expect("runc state");
    let state = String::from_utf8_lossy(&state.stdout);
    assert!(state.contains("\"status\": \"running\""), "{state}");
    // hulld logs at debug, so its shims do too, and every request's span
    // reports its time when it closes.
    let shim_log =
        std::fs::read_to_string(d.dir().join("state/shims").join(&d.ns).join("v1/shim.log"))
            .unwrap_or_default();
    assert!(shim_log.contains(" DEBUG "), "{shim_log}");
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains("Tasks/Create") && l.contains("close time.busy=")),
        "no timed span for Tasks/Create in the daemon's log"
    );
    let out = d.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "x1",
        "v1",
        "sh",
        "-c",
        "echo in-exec",
    ]);
    assert_eq!(out, "in-exec\n");
    let out = d.ctr_run(&[
        "tasks",
        "exec",
        "--exec-id",
        "x2",
        "v1",
        "sh",
        "-c",
        "exit 6",
    ]);
    assert_eq!(out.status.code(), Some(6));
    d.ctr_ok(&["tasks", "pause", "v1"]);
    assert!(d.ctr_ok(&["tasks", "ls"]).contains("PAUSED"));
    d.ctr_ok(&["tasks", "resume", "v1"]);
    assert!(d.ctr_ok(&["tasks", "ls"]).contains("RUNNING"));
    let metrics = d.ctr_ok(&["tasks", "metrics", "v1"]);
    assert!(
        metrics.contains("memory.usage_in_bytes") && metrics.contains("pids.current"),
        "{metrics}"
    );
    let info = d.ctr_ok(&["containers", "info", "v1"]);
    assert!(
        info.contains("\"Runtime\"") && info.contains("io.containerd.runc.v2"),
        "{info}"
    );
    assert!(d.ctr_ok(&["containers", "ls"]).contains("v1"));
    d.ctr_ok(&["tasks", "kill", "-s", "SIGTERM", "v1"]);
    assert!(
        eventually(Duration::from_secs(10), || d
            .ctr_ok(&["tasks", "ls"])
            .contains("STOPPED"))
        .await,
        "SIGTERM did not stop the task"
    );
    let (status, code) = task_status(&c, "v1").await;
    assert_eq!((status, code), (TaskStatus::Stopped, 143));
    // A kill of an exited task is NotFound, as in containerd.
    let err = c
        .tasks()
        .kill(KillRequest {
            container_id: "v1".into(),
            exec_id: String::new(),
            signal: 9,
            all: false,
        })
        .await
        .expect_err("kill after exit");
    assert_eq!(kind(&err), Kind::NotFound, "{err:?}");
    d.ctr_ok(&["tasks", "rm", "v1"]);
    d.ctr_ok(&["containers", "rm", "v1"]);
    assert!(d.ctr_ok(&["containers", "ls", "-q"]).trim().is_empty());

    // kill -a reaches every process.
    d.ctr_ok(&[
        "run",
        "-d",
        IMAGE,
        "v2",
        "sh",
        "-c",
        "sleep 100 & sleep 100; wait",
    ]);
    d.ctr_ok(&["tasks", "kill", "-a", "-s", "SIGKILL", "v2"]);
    assert!(
        eventually(Duration::from_secs(10), || d
            .ctr_ok(&["tasks", "ls"])
            .contains("STOPPED"))
        .await
    );
    d.ctr_ok(&["tasks", "rm", "v2"]);
    d.ctr_ok(&["containers", "rm", "v2"]);

    // The task lifecycle went out as containerd's events.
    let mut topics = Vec::new();
    while let Ok(Ok(Some(e))) =
        tokio::time::timeout(Duration::from_millis(500), events.message()).await
    {
        topics.push(e.topic);
    }
    for t in [
        "/containers/create",
        "/tasks/create",
        "/tasks/start",
        "/tasks/exec-added",
        "/tasks/exec-started",
        "/tasks/paused",
        "/tasks/resumed",
        "/tasks/exit",
        "/tasks/delete",
        "/containers/delete",
    ] {
        assert!(topics.iter().any(|x| x == t), "no {t} in {topics:?}");
    }
    assert!(
        mounts_under(d.dir()).is_empty(),
        "{:?}",
        mounts_under(d.dir())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spec_env_cwd_user_mounts_and_hostname_are_honoured() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("tasks-spec").await;
    import_busybox(&d);
    let data = d.dir().join("data");
    std::fs::create_dir_all(&data).expect("data");
    std::fs::write(data.join("f"), "from-host\n").expect("f");
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        data.display()
    );
    let out = d.ctr_ok(&[
        "run",
        "--rm",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "--mount",
        &mount,
        IMAGE,
        "spec1",
        "sh",
        "-c",
        "echo $FOO; pwd; cat /data/f",
    ]);
    assert_eq!(out, "bar\n/tmp\nfrom-host\n");
    // A whole spec: user, hostname, env, cwd; root on an image mount.
    let root = d.dir().join("root-mnt");
    std::fs::create_dir_all(&root).expect("root");
    d.ctr_ok(&["images", "mount", "--rw", IMAGE, root.to_str().expect("p")]);
    let mut spec = hull_oci::spec::default_spec(&d.ns, "spec2").expect("spec");
    let mut process = spec.process().clone().expect("process");
    process.set_user(
        UserBuilder::default()
            .uid(1000u32)
            .gid(1001u32)
            .build()
            .expect("user"),
    );
    process.set_args(Some(
        ["sh", "-c", "id -u; id -g; hostname; pwd; echo $HULL"]
            .map(String::from)
            .to_vec(),
    ));
    process.set_cwd("/etc".into());
    process.set_env(Some(vec!["PATH=/bin".into(), "HULL=yes".into()]));
    spec.set_process(Some(process));
    spec.set_hostname(Some("hulltest".into()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(&root)
            .readonly(false)
            .build()
            .expect("root"),
    ));
    let spec_path = d.dir().join("spec.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec).expect("json")).expect("spec");
    let out = d.ctr_ok(&[
        "run",
        "--rm",
        "--config",
        spec_path.to_str().expect("p"),
        "spec2",
    ]);
    assert_eq!(out, "1000\n1001\nhulltest\n/etc\nyes\n");
    d.ctr_ok(&["images", "unmount", "--rm", root.to_str().expect("p")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_sends_sigterm_then_sigkill_after_the_timeout() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("tasks-stop").await;
    import_busybox(&d);
    let c = d.client().await;
    // pid 1 without a handler ignores SIGTERM: only SIGKILL ends it.
    d.ctr_ok(&["run", "-d", IMAGE, "stubborn", "sleep", "1000"]);
    let started = Instant::now();
    let code = c
        .stop_task("stubborn", Duration::from_millis(500))
        .await
        .expect("stop");
    assert_eq!(code, 137);
    assert!(started.elapsed() >= Duration::from_millis(500));
    // One that handles SIGTERM exits with its own code.
    d.ctr_ok(&[
        "run",
        "-d",
        IMAGE,
        "polite",
        "sh",
        "-c",
        "trap 'exit 42' TERM; while true; do sleep 0.1; done",
    ]);
    let code = c
        .stop_task("polite", Duration::from_secs(30))
        .await
        .expect("stop");
    assert_eq!(code, 42);
    let err = c
        .stop_task("nope", Duration::from_secs(1))
        .await
        .expect_err("unknown task");
    assert_eq!(err.kind(), Kind::NotFound);
    for id in ["stubborn", "polite"] {
        d.ctr_ok(&["tasks", "rm", id]);
        d.ctr_ok(&["containers", "rm", id]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_containerds_codes() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("tasks-bad").await;
    import_busybox(&d);
    let c = d.client().await;
    let create = |id: &str| CreateTaskRequest {
        container_id: id.into(),
        ..Default::default()
    };
    // Unknown container.
    let err = c
        .tasks()
        .create(create("ghost"))
        .await
        .expect_err("unknown");
    assert_eq!(kind(&err), Kind::NotFound, "{err:?}");
    for (method, err) in [
        (
            "get",
            c.tasks()
                .get(GetRequest {
                    container_id: "ghost".into(),
                    exec_id: String::new(),
                })
                .await
                .map(drop),
        ),
        (
            "start",
            c.tasks()
                .start(StartRequest {
                    container_id: "ghost".into(),
                    exec_id: String::new(),
                })
                .await
                .map(drop),
        ),
    ] {
        assert_eq!(kind(&err.expect_err(method)), Kind::NotFound, "{method}");
    }
    // A container without a snapshot, whose spec roots it in the bundle.
    let spec = d.ctr_ok(&["oci", "spec"]);
    let container = Container {
        id: "nosnap".into(),
        runtime: Some(Runtime {
            name: "io.containerd.runc.v2".into(),
            options: None,
        }),
        spec: Some(prost_types::Any {
            type_url: hull_proto::typeurl::RUNTIME_SPEC.into(),
            value: spec.into_bytes(),
        }),
        ..Default::default()
    };
    c.containers()
        .create(CreateContainerRequest {
            container: Some(container),
        })
        .await
        .expect("create container");
    let err = c
        .tasks()
        .create(create("nosnap"))
        .await
        .expect_err("no rootfs");
    assert_eq!(kind(&err), Kind::FailedPrecondition, "{err:?}");
    // Bad container records.
    let err = c
        .containers()
        .create(CreateContainerRequest {
            container: Some(Container {
                id: "no-runtime".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("no runtime");
    assert_eq!(kind(&err), Kind::InvalidArgument);
    let err = c
        .containers()
        .create(CreateContainerRequest {
            container: Some(Container {
                id: "bad/id".into(),
                ..Default::default()
            }),
        })
        .await
        .expect_err("bad id");
    assert_eq!(kind(&err), Kind::InvalidArgument);

    // A second task for the same container, an exec id reused.
    d.ctr_ok(&["run", "-d", IMAGE, "busy", "sleep", "1000"]);
    let err = c
        .tasks()
        .create(create("busy"))
        .await
        .expect_err("second task");
    assert_eq!(kind(&err), Kind::AlreadyExists, "{err:?}");
    let spec = ProcessBuilder::default()
        .args(vec!["sleep".to_owned(), "100".to_owned()])
        .cwd("/")
        .env(vec!["PATH=/bin".to_owned()])
        .user(UserBuilder::default().build().expect("user"))
        .build()
        .expect("process");
    let exec = |id: &str| ExecProcessRequest {
        container_id: "busy".into(),
        exec_id: id.into(),
        spec: Some(prost_types::Any {
            type_url: hull_proto::typeurl::PROCESS_SPEC.into(),
            value: serde_json::to_vec(&spec).expect("json"),
        }),
        ..Default::default()
    };
    c.tasks().exec(exec("e1")).await.expect("exec");
    let err = c
        .tasks()
        .exec(exec("e1"))
        .await
        .expect_err("reused exec id");
    assert_eq!(kind(&err), Kind::AlreadyExists, "{err:?}");
    let err = c.tasks().exec(exec("")).await.expect_err("empty exec id");
    assert_eq!(kind(&err), Kind::InvalidArgument, "{err:?}");
    // The daemon is fine after all of it.
    assert_eq!(task_status(&c, "busy").await.0, TaskStatus::Running);
    d.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "busy"]);
    assert!(
        eventually(Duration::from_secs(10), || d
            .ctr_ok(&["tasks", "ls"])
            .contains("STOPPED"))
        .await
    );
    d.ctr_ok(&["tasks", "rm", "busy"]);
    d.ctr_ok(&["containers", "rm", "busy", "nosnap"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_shim_is_reported_exited_and_cleaned_up() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("tasks-shimkill").await;
    import_busybox(&d);
    let c = d.client().await;
    // An argument no other test uses, to find the process by.
    d.ctr_ok(&["run", "-d", IMAGE, "victim", "sleep", "7341"]);
    let bundle = d.dir().join("state/shims").join(&d.ns).join("victim");
    let shim_pid: i32 = std::fs::read_to_string(bundle.join("shim.pid"))
        .expect("shim.pid")
        .trim()
        .parse()
        .expect("pid");
    assert!(!mounts_under(&bundle).is_empty(), "rootfs not mounted");
    let mut events = c
        .events()
        .subscribe(
            hull_proto::containerd::services::events::v1::SubscribeRequest {
                filters: vec!["topic==\"/tasks/exit\"".into()],
            },
        )
        .await
        .expect("subscribe")
        .into_inner();
    let killed = Instant::now();
    // The shim this test started through hulld.
    kill(Pid::from_raw(shim_pid), Signal::SIGKILL).expect("kill the shim");
    let e = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("exit event in time")
        .expect("stream")
        .expect("event");
    eprintln!(
        "exit reported {:?} after the shim was killed",
        killed.elapsed()
    );
    let exit = <hull_proto::containerd::events::TaskExit as prost::Message>::decode(
        e.event.expect("payload").value.as_slice(),
    )
    .expect("TaskExit");
    assert_eq!(
        (exit.container_id.as_str(), exit.exit_status),
        ("victim", 255)
    );
    assert!(
        eventually(Duration::from_secs(5), || mounts_under(&bundle).is_empty()
            && !bundle.exists())
        .await,
        "rootfs still mounted or bundle left: {:?}",
        mounts_under(&bundle)
    );
    // The container's process went with it (runc delete --force).
    assert!(
        eventually(Duration::from_secs(5), || processes_with("sleep 7341")
            .is_empty())
        .await
    );
    let err = c
        .tasks()
        .get(GetRequest {
            container_id: "victim".into(),
            exec_id: String::new(),
        })
        .await
        .expect_err("task gone");
    assert_eq!(kind(&err), Kind::NotFound);
    d.ctr_ok(&["containers", "rm", "victim"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn debians_runc_shim_runs_under_hulld() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let config = "[shim.runtimes]\n\"io.containerd.runc.v2\" = \"hull-shim\"\n\"io.containerd.debian.v2\" = \"containerd-shim-runc-v2\"\n";
    let d = Daemon::start_with_config("tasks-debian", config).await;
    import_busybox(&d);
    let out = d.ctr_ok(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.debian.v2",
        IMAGE,
        "deb1",
        "sh",
        "-c",
        "echo via-debian; exit 0",
    ]);
    assert_eq!(out, "via-debian\n");
    let out = d.ctr_run(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.debian.v2",
        IMAGE,
        "deb2",
        "sh",
        "-c",
        "exit 9",
    ]);
    assert_eq!(out.status.code(), Some(9));
    assert!(mounts_under(d.dir()).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_survive_a_hulld_crash_and_exits_are_kept() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut d = Daemon::start("tasks-restore").await;
    import_busybox(&d);
    for i in 0..50 {
        d.ctr_ok(&["run", "-d", IMAGE, &format!("long{i}"), "sleep", "1000"]);
    }
    for i in 0..10 {
        let script = format!("sleep 3; exit {}", 10 + i);
        d.ctr_ok(&[
            "run",
            "-d",
            IMAGE,
            &format!("short{i}"),
            "sh",
            "-c",
            &script,
        ]);
    }
    d.kill();
    // The short ones exit while hulld is down.
    tokio::time::sleep(Duration::from_secs(4)).await;
    d.start_again().await;
    let c = d.client().await;
    let ls = d.ctr_ok(&["tasks", "ls"]);
    for i in 0..50 {
        let id = format!("long{i}");
        assert!(
            ls.lines()
                .any(|l| l.split_whitespace().next() == Some(id.as_str()) && l.contains("RUNNING")),
            "{id} not running after the restart:\n{ls}"
        );
    }
    for i in 0..10 {
        let id = format!("short{i}");
        assert!(
            eventually(Duration::from_secs(10), || d
                .ctr_ok(&["tasks", "ls"])
                .lines()
                .any(|l| l.starts_with(&format!("{id} ")) && l.contains("STOPPED")))
            .await,
            "{id} not stopped"
        );
        assert_eq!(task_status(&c, &id).await, (TaskStatus::Stopped, 10 + i));
        let out = d.ctr_ok(&["tasks", "rm", &id]);
        let _ = out;
    }
    for i in 0..50 {
        let id = format!("long{i}");
        d.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", &id]);
    }
    for i in 0..50 {
        let id = format!("long{i}");
        assert!(
            eventually(Duration::from_secs(10), || task_status_blocking(&d, &id)).await,
            "{id}"
        );
        d.ctr_ok(&["tasks", "rm", &id]);
    }
    let ids: Vec<String> = (0..50)
        .map(|i| format!("long{i}"))
        .chain((0..10).map(|i| format!("short{i}")))
        .collect();
    let mut args = vec!["containers", "rm"];
    args.extend(ids.iter().map(String::as_str));
    d.ctr_ok(&args);
    assert!(mounts_under(d.dir()).is_empty());
}

/// Whether `ctr tasks ls` shows `id` stopped.
fn task_status_blocking(d: &Daemon, id: &str) -> bool {
    d.ctr_ok(&["tasks", "ls"])
        .lines()
        .any(|l| l.split_whitespace().next() == Some(id) && l.contains("STOPPED"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_run_rm_cycles_leak_nothing() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("tasks-cycles").await;
    import_busybox(&d);
    let pid = d.pid();
    let fds_before = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count();
    let cycles: usize = std::env::var("HULL_RUN_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let started = Instant::now();
    for i in 0..cycles {
        let out = d.ctr_ok(&["run", "--rm", IMAGE, &format!("cycle{i}"), "true"]);
        assert!(out.is_empty(), "{out}");
    }
    eprintln!("{cycles} run --rm cycles in {:?}", started.elapsed());
    let bundles = d.dir().join("state/shims").join(&d.ns);
    assert!(
        eventually(Duration::from_secs(10), || {
            mounts_under(d.dir()).is_empty()
                && processes_with(&d.address().display().to_string())
                    .iter()
                    .all(|p| !p.contains("hull-shim"))
                && zombies_of(pid).is_empty()
                && std::fs::read_dir(&bundles).map(|r| r.count()).unwrap_or(0) == 0
        })
        .await,
        "leaked: mounts {:?}, shims {:?}, zombies {:?}, bundles {:?}",
        mounts_under(d.dir()),
        processes_with(&d.address().display().to_string()),
        zombies_of(pid),
        std::fs::read_dir(&bundles).map(|r| r.count()).ok()
    );
    let fds_after = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .count();
    assert!(
        fds_after <= fds_before + 4,
        "hulld fds grew from {fds_before} to {fds_after}"
    );
    assert!(d.ctr_ok(&["containers", "ls", "-q"]).trim().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oom_kill_is_published() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    if !Path::new("/sys/fs/cgroup/memory/cgroup.event_control").exists() {
        eprintln!("skipped: no cgroup v1 memory controller");
        return;
    }
    let d = Daemon::start("tasks-oom").await;
    import_busybox(&d);
    let c = d.client().await;
    let mut events = c
        .events()
        .subscribe(
            hull_proto::containerd::services::events::v1::SubscribeRequest {
                filters: vec!["topic==\"/tasks/oom\"".into()],
            },
        )
        .await
        .expect("subscribe")
        .into_inner();
    let out = d.ctr_run(&[
        "run",
        "--rm",
        "--memory-limit",
        "16777216",
        IMAGE,
        "hungry",
        "sh",
        "-c",
        "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done",
    ]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let e = tokio::time::timeout(Duration::from_secs(10), events.message())
        .await
        .expect("oom event in time")
        .expect("stream")
        .expect("event");
    let oom = <hull_proto::containerd::events::TaskOom as prost::Message>::decode(
        e.event.expect("payload").value.as_slice(),
    )
    .expect("TaskOOM");
    assert_eq!(oom.container_id, "hungry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_goes_to_file_and_binary_log_uris() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("tasks-loguri").await;
    import_busybox(&d);
    let log = d.dir().join("logs/out.log");
    let uri = format!("file://{}", log.display());
    d.ctr_ok(&[
        "run",
        "--rm",
        "--log-uri",
        &uri,
        IMAGE,
        "tofile",
        "sh",
        "-c",
        "echo to-file; echo err-to-file >&2",
    ]);
    let text = std::fs::read_to_string(&log).expect("log file");
    assert!(
        text.contains("to-file\n") && text.contains("err-to-file\n"),
        "{text}"
    );
    // A logger binary gets stdout on fd 3 and stderr on fd 4, and closes
    // fd 5 once it is ready.
    let logger = d.dir().join("logger.sh");
    let captured = d.dir().join("captured");
    std::fs::write(
        &logger,
        format!(
            "#!/bin/sh\nexec 5>&-\ncat <&3 > {0}.out &\ncat <&4 > {0}.err\nwait\n",
            captured.display()
        ),
    )
    .expect("logger");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&logger, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let uri = format!("binary://{}", logger.display());
    d.ctr_ok(&[
        "run",
        "--rm",
        "--log-uri",
        &uri,
        IMAGE,
        "tobinary",
        "sh",
        "-c",
        "echo to-binary; echo err-to-binary >&2",
    ]);
    let out = captured.with_extension("out");
    let err = captured.with_extension("err");
    assert!(
        eventually(Duration::from_secs(5), || {
            std::fs::read_to_string(&out).unwrap_or_default() == "to-binary\n"
                && std::fs::read_to_string(&err).unwrap_or_default() == "err-to-binary\n"
        })
        .await,
        "logger got {:?} / {:?}",
        std::fs::read_to_string(&out),
        std::fs::read_to_string(&err)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resize_reaches_the_containers_terminal() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("tasks-resize").await;
    import_busybox(&d);
    let c = d.client().await;
    // ctr -t needs a terminal of its own: script(1) gives it one.
    let cmd = format!(
        "ctr --address {} --namespace {} run -d -t {IMAGE} sized sleep 1000",
        d.address().display(),
        d.ns
    );
    let out = Command::new("script")
        .args(["-qec", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("script");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    c.tasks()
        .resize_pty(
            hull_proto::containerd::services::tasks::v1::ResizePtyRequest {
                container_id: "sized".into(),
                exec_id: String::new(),
                width: 77,
                height: 33,
            },
        )
        .await
        .expect("resize");
    let size = d.ctr_ok(&[
        "tasks",
        "exec",
        "--exec-id",
        "stty",
        "sized",
        "sh",
        "-c",
        "stty size < /proc/1/fd/0",
    ]);
    assert_eq!(size.trim(), "33 77");
    d.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "sized"]);
    assert!(
        eventually(Duration::from_secs(10), || task_status_blocking(
            &d, "sized"
        ))
        .await
    );
    d.ctr_ok(&["tasks", "rm", "sized"]);
    d.ctr_ok(&["containers", "rm", "sized"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_on_140_layers_runs() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // Overlay options for this many layers exceed a page: the shim mounts
    // them through a `mount` child, which must keep its exit status.
    let d = Daemon::start("tasks-layers").await;
    // Entry names are &'static str; leaking a few bytes in a test is fine.
    let names: Vec<&'static str> = (0..139)
        .map(|i| &*Box::leak(format!("l{i:03}").into_boxed_str()))
        .collect();
    let mut layers = vec![busybox_layer(&BTreeMap::new())];
    for n in &names {
        layers.push(hull_tests::image::layer(&[hull_tests::image::Entry::File(
            n,
            n.as_bytes(),
        )]));
    }
    let tar = d.dir().join("layers.tar");
    write_oci_layers(&tar, &layers, "docker.io/hull/layers:1");
    d.ctr_ok(&["images", "import", tar.to_str().expect("path")]);
    let out = d.ctr_ok(&[
        "run",
        "--rm",
        "docker.io/hull/layers:1",
        "deep",
        "cat",
        "/l000",
        "/l138",
    ]);
    assert_eq!(out, "l000l138");
    assert!(
        mounts_under(d.dir()).is_empty(),
        "{:?}",
        mounts_under(d.dir())
    );
}
