//! hull-client's Docker workflow as a library, against hulld and against a
//! real containerd 1.6: the same calls (create, start, list, logs, stop,
//! remove) behave the same on both.

use std::collections::BTreeMap;
use std::time::Duration;

use hull_client::docker::{Docker, LogOptions, RunOptions, State};
use hull_client::Client;
use hull_tests::containerd::Containerd;
use hull_tests::daemon::{eventually, is_root, workspace_bin, Daemon};
use hull_tests::image::{busybox_layer, write_oci_layers};

const IMAGE: &str = "docker.io/hull/busybox:1";

async fn logs(d: &Docker, name: &str) -> String {
    let mut out = String::new();
    d.logs(name, &LogOptions::default(), |e| out.push_str(&e.log))
        .await
        .expect("logs");
    out
}

/// The calls a front end makes, with what a user would check after each.
async fn workflow(client: Client, ns: &str, bridge: &(String, String)) {
    let d = Docker::new(client, ns)
        .await
        .expect("docker")
        .with_default_bridge(Some(bridge.1.clone()), Some(bridge.0.clone()))
        .with_logger(workspace_bin("hullctl"));
    let opts = RunOptions {
        image: IMAGE.into(),
        name: Some("lib".into()),
        cmd: vec![
            "sh".into(),
            "-c".into(),
            "trap 'exit 0' TERM; echo hello; echo oops >&2; while true; do sleep 0.1; done".into(),
        ],
        ..Default::default()
    };
    let created = d.create(&opts).await.expect("create");
    let again = d.create(&opts).await.expect_err("the name is taken");
    assert_eq!(again.kind(), hull_proto::errdefs::Kind::AlreadyExists);
    d.start("lib").await.expect("start");
    let list = d.list(false).await.expect("list");
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].name.as_str(), list[0].id.as_str()),
        ("lib", created.id.as_str())
    );
    assert!(
        matches!(list[0].status, State::Running { .. }),
        "{:?}",
        list[0].status
    );
    assert!(
        eventually(Duration::from_secs(10), || {
            let l = futures_lite(logs(&d, "lib"));
            l.contains("hello\n") && l.contains("oops\n")
        })
        .await,
        "logs: {:?}",
        futures_lite(logs(&d, "lib"))
    );
    let mut streams = Vec::new();
    d.logs("lib", &LogOptions::default(), |e| {
        streams.push((e.stream, e.log.clone()))
    })
    .await
    .expect("logs");
    assert!(
        streams.contains(&(hull_logs::Stream::Stderr, "oops\n".into())),
        "{streams:?}"
    );
    d.stop("lib", Some(Duration::from_secs(5)))
        .await
        .expect("stop");
    let list = d.list(true).await.expect("list -a");
    assert!(
        matches!(list[0].status, State::Exited { code: 0, .. }),
        "{:?}",
        list[0].status
    );
    assert!(d.list(false).await.expect("list").is_empty());
    d.remove("lib", false, true).await.expect("rm");
    assert!(d.list(true).await.expect("list").is_empty());
    assert!(!d.container_dir(&created.id).exists());
}

/// Runs a future to completion from a sync closure (the test's runtime is
/// multi-threaded).
fn futures_lite<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

fn image_tar(dir: &std::path::Path) -> std::path::PathBuf {
    let tar = dir.join("busybox.tar");
    write_oci_layers(&tar, &[busybox_layer(&BTreeMap::new())], IMAGE);
    tar
}

#[tokio::test(flavor = "multi_thread")]
async fn the_library_workflow_on_hulld() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("lib-hull").await;
    let tar = image_tar(d.dir());
    d.ctr_ok(&["images", "import", tar.to_str().expect("path")]);
    workflow(d.client().await, "lib-hull", &d.bridge).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_library_workflow_on_containerd() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let Some(c) = Containerd::start().await else {
        eprintln!("skipped: containerd is not installed");
        return;
    };
    // A bridge of its own, beside any hulld a parallel test runs.
    let helper = Daemon::start("lib-ctd-helper").await;
    let tar = image_tar(c.dir());
    let o = c.ctr(
        "lib-ctd",
        &["images", "import", tar.to_str().expect("path")],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let client = Client::connect(c.address()).await.expect("connect");
    workflow(client, "lib-ctd", &helper.bridge).await;
    let _ = std::process::Command::new("ip")
        .args(["link", "delete", &helper.bridge.0])
        .status();
}
