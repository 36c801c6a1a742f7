//! A spec a client hands over is its document: fields oci-spec does not
//! model reach the runtime unchanged, also where hull rewrites one.

use std::collections::BTreeMap;
use std::time::Duration;

use hull_oci::document::Object;
use hull_proto::containerd::services::containers::v1::{
    GetContainerRequest, UpdateContainerRequest,
};
use hull_tests::daemon::{eventually, is_root, Daemon};
use hull_tests::image::{busybox_layer, write_oci_layers};

const IMAGE: &str = "docker.io/hull/busybox:1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_spec_fields_survive_the_oom_score_rewrite() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("spec-passthrough").await;
    let tar = d.dir().join("busybox.tar");
    write_oci_layers(&tar, &[busybox_layer(&BTreeMap::new())], IMAGE);
    d.ctr_ok(&["images", "import", tar.to_str().expect("path")]);
    d.ctr_ok(&["containers", "create", IMAGE, "future", "sleep", "1000"]);
    let c = d.client().await;
    let mut container = c
        .containers()
        .get(GetContainerRequest {
            id: "future".into(),
        })
        .await
        .expect("get")
        .into_inner()
        .container
        .expect("container");
    // ctr's spec, plus what a newer client might send: fields no version
    // of oci-spec here knows, and a score below what the shim may set.
    let any = container.spec.as_mut().expect("spec");
    let mut spec = Object::parse(&any.value).expect("ctr's spec");
    let mut linux = spec.object("linux").expect("linux").expect("linux");
    linux.set("someFutureField", &1);
    spec.set("linux", &linux);
    let mut process = spec.object("process").expect("process").expect("process");
    process.set("oomScoreAdj", &-999);
    spec.set("process", &process);
    spec.set("x-hull-test", &BTreeMap::from([("a", vec![1, 2])]));
    any.value = spec.to_vec();
    c.containers()
        .update(UpdateContainerRequest {
            container: Some(container),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["spec".into()],
            }),
        })
        .await
        .expect("update the spec");
    d.ctr_ok(&["tasks", "start", "-d", "future"]);

    let bundle = d.dir().join(format!("state/shims/{}/future", d.ns));
    let written = std::fs::read(bundle.join("config.json")).expect("config.json");
    let shim_pid = std::fs::read_to_string(bundle.join("shim.pid")).expect("shim.pid");
    let shim_score: i64 =
        std::fs::read_to_string(format!("/proc/{}/oom_score_adj", shim_pid.trim()))
            .expect("shim score")
            .trim()
            .parse()
            .expect("score");
    d.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "future"]);
    assert!(
        eventually(Duration::from_secs(10), || d
            .ctr_ok(&["tasks", "ls"])
            .contains("STOPPED"))
        .await
    );
    d.ctr_ok(&["tasks", "rm", "future"]);

    let runc_saw = Object::parse(&written).expect("runc's config.json");
    let linux = runc_saw.object("linux").expect("linux").expect("linux");
    assert_eq!(linux.get::<i64>("someFutureField").expect("field"), Some(1));
    assert_eq!(
        runc_saw.raw("x-hull-test").map(|r| r.get()),
        Some(r#"{"a":[1,2]}"#)
    );
    let process = runc_saw
        .object("process")
        .expect("process")
        .expect("process");
    let score = process.get::<i64>("oomScoreAdj").expect("score");
    // Raised to the shim's own (this machine lacks CAP_SYS_RESOURCE).
    assert_eq!(
        score,
        Some(shim_score.max(-999)),
        "{}",
        String::from_utf8_lossy(&written)
    );
    // Everything else is as the client sent it.
    for key in spec.keys() {
        if key != "process" {
            assert_eq!(
                runc_saw.raw(key).map(|r| r.get()),
                spec.raw(key).map(|r| r.get()),
                "field {key}"
            );
        }
    }
}
