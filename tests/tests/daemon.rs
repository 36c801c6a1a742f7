//! hulld as a process: config, socket, root lock, health.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use hull_proto::grpc::health::v1::health_check_response::ServingStatus;
use hull_proto::grpc::health::v1::health_client::HealthClient;
use hull_proto::grpc::health::v1::HealthCheckRequest;
use hull_tests::daemon::{workspace_bin, Daemon};

#[test]
fn config_default_prints_a_complete_parseable_config() {
    let out = Command::new(workspace_bin("hulld"))
        .args(["config", "default"])
        .output()
        .expect("hulld");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf8");
    for key in [
        "version = 2",
        "root = \"/var/lib/hull\"",
        "state = \"/run/hull\"",
        "[grpc]",
        "address = \"/run/hull/hull.sock\"",
        "[gc]",
        "[debug]",
    ] {
        assert!(text.contains(key), "{key} missing from\n{text}");
    }
    // The printed default is what deploy/ ships.
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../deploy/config.toml"
    ))
    .expect("deploy config");
    assert_eq!(
        text, shipped,
        "deploy/config.toml is stale: regenerate with `hulld config default`"
    );
}

#[test]
fn bad_config_is_refused_at_startup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("c.toml");
    std::fs::write(&cfg, "[grpc]\nadress = \"/typo\"\n").expect("write");
    let out = Command::new(workspace_bin("hulld"))
        .arg("--config")
        .arg(&cfg)
        .arg("--root")
        .arg(dir.path().join("root"))
        .output()
        .expect("hulld");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("adress"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_is_0660_and_health_is_serving() {
    let d = Daemon::start("health").await;
    let mode = std::fs::metadata(d.address())
        .expect("socket")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o660);
    let c = d.client().await;
    let resp = HealthClient::new(c.channel())
        .check(HealthCheckRequest::default())
        .await
        .expect("check")
        .into_inner();
    assert_eq!(resp.status, ServingStatus::Serving as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_cannot_share_the_root_or_the_socket() {
    let d = Daemon::start("lock").await;
    let other = tempfile::tempdir().expect("tempdir");
    let run = |root: &std::path::Path, address: &std::path::Path| {
        Command::new(workspace_bin("hulld"))
            .arg("--config")
            .arg("/dev/null")
            .arg("--root")
            .arg(root)
            .arg("--state")
            .arg(other.path().join("state"))
            .arg("--address")
            .arg(address)
            .output()
            .expect("hulld")
    };
    let same_root = run(&d.root(), &other.path().join("x.sock"));
    assert!(!same_root.status.success());
    assert!(
        String::from_utf8_lossy(&same_root.stderr).contains("in use by another hulld"),
        "{same_root:?}"
    );

    let same_socket = run(&other.path().join("root"), &d.address());
    assert!(!same_socket.status.success());
    assert!(
        String::from_utf8_lossy(&same_socket.stderr).contains("in use by a running server"),
        "{same_socket:?}"
    );
    // The first daemon still answers.
    d.ctr_ok(&["version"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_socket_is_replaced() {
    let mut d = Daemon::start("stale").await;
    d.kill();
    // SIGKILL leaves the socket file behind with nobody listening.
    assert!(d.address().exists());
    d.start_again().await;
    d.ctr_ok(&["version"]);
}
