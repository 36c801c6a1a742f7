//! `ctr version`, `ctr namespaces ...` and `ctr plugins ls` against hulld.

use hull_proto::containerd::services::introspection::v1::PluginsRequest;
use hull_proto::containerd::services::namespaces::v1::GetNamespaceRequest;
use hull_tests::daemon::Daemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_version_reports_server_and_uuid_survives_restart() {
    let mut d = Daemon::start("basics").await;
    let out = d.ctr_ok(&["version"]);
    assert!(out.contains("Server:"), "{out}");
    assert!(
        out.contains(&format!("Version:  {}", env!("CARGO_PKG_VERSION"))),
        "{out}"
    );
    let uuid = |out: &str| {
        out.lines()
            .find_map(|l| l.trim().strip_prefix("UUID: "))
            .map(str::to_owned)
            .expect("UUID line")
    };
    let first = uuid(&out);
    assert_eq!(first.len(), 36);
    d.restart().await;
    assert_eq!(uuid(&d.ctr_ok(&["version"])), first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_namespaces_create_label_list_remove() {
    let d = Daemon::start("default").await;
    d.ctr_ok(&["namespaces", "create", "team-a", "owner=alice"]);
    d.ctr_ok(&["namespaces", "label", "team-a", "tier=gold"]);
    let ls = d.ctr_ok(&["namespaces", "ls"]);
    let line = ls.lines().find(|l| l.starts_with("team-a")).expect(&ls);
    assert!(
        line.contains("owner=alice") && line.contains("tier=gold"),
        "{ls}"
    );

    // Removing a label: `ctr namespaces label NS key=`.
    d.ctr_ok(&["namespaces", "label", "team-a", "owner="]);
    let ls = d.ctr_ok(&["namespaces", "ls"]);
    assert!(!ls.contains("owner=alice"), "{ls}");

    let dup = d.ctr_run(&["namespaces", "create", "team-a"]);
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already exists"));

    let bad = d.ctr_run(&["namespaces", "create", "Bad/Name"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("identifier"),
        "{bad:?}"
    );

    d.ctr_ok(&["namespaces", "rm", "team-a"]);
    assert!(!d
        .ctr_ok(&["namespaces", "ls", "-q"])
        .lines()
        .any(|l| l == "team-a"));
    let err = d
        .client()
        .await
        .namespaces()
        .get(GetNamespaceRequest {
            name: "team-a".into(),
        })
        .await
        .expect_err("namespace is gone");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_holding_content_cannot_be_removed() {
    let d = Daemon::start("busy").await;
    let mut ingest = d.ctr();
    ingest
        .args(["content", "ingest", "r1"])
        .stdin(std::process::Stdio::piped());
    let mut child = ingest.spawn().expect("ctr");
    {
        use std::io::Write;
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(b"keep me")
            .expect("write");
    }
    assert!(child.wait().expect("wait").success());
    let out = d
        .ctr()
        .args(["namespaces", "rm", "busy"])
        .output()
        .expect("ctr");
    // ctr prints the error per namespace and exits non-zero.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("must be empty") && err.contains("blobs"),
        "{err}"
    );
    assert!(d
        .ctr_ok(&["namespaces", "ls", "-q"])
        .lines()
        .any(|l| l == "busy"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_plugins_ls_lists_served_services() {
    let d = Daemon::start("plugins").await;
    let out = d.ctr_ok(&["plugins", "ls"]);
    for (ty, id) in [
        ("io.containerd.grpc.v1", "content"),
        ("io.containerd.grpc.v1", "images"),
        ("io.containerd.grpc.v1", "leases"),
        ("io.containerd.grpc.v1", "namespaces"),
        ("io.containerd.grpc.v1", "events"),
        ("io.containerd.grpc.v1", "version"),
        ("io.containerd.grpc.v1", "introspection"),
        ("io.containerd.content.v1", "content"),
    ] {
        assert!(
            out.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() >= 4 && f[0] == ty && f[1] == id && f[3] == "ok"
            }),
            "{ty} {id} missing from:\n{out}"
        );
    }
    // Filters narrow the list as containerd's do.
    let c = d.client().await;
    let only = c
        .introspection()
        .plugins(PluginsRequest {
            filters: vec!["type==io.containerd.grpc.v1,id==content".into()],
        })
        .await
        .expect("plugins")
        .into_inner();
    assert_eq!(only.plugins.len(), 1);
    assert_eq!(only.plugins[0].id, "content");
}
