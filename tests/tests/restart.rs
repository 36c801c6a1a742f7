//! Everything acknowledged survives a restart, clean or SIGKILL, even with
//! writers in flight.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest as _, Sha256};

use hull_proto::containerd::services::content::v1::{
    InfoRequest, ListStatusesRequest, ReadContentRequest,
};
use hull_proto::containerd::services::leases::v1::{
    AddResourceRequest, CreateRequest, ListRequest, ListResourcesRequest, Resource,
};
use hull_tests::blobs::{write_blob, Ingest};
use hull_tests::daemon::Daemon;
use hull_tests::image::{busybox_layer, image, sha256, write_oci_archive};

async fn state(d: &Daemon) -> String {
    let c = d.client().await;
    let leases = c
        .leases()
        .list(ListRequest::default())
        .await
        .expect("leases")
        .into_inner();
    let mut lease_lines: Vec<String> = Vec::new();
    for l in leases.leases {
        let mut labels: Vec<_> = l.labels.into_iter().collect();
        labels.sort();
        let res = c
            .leases()
            .list_resources(ListResourcesRequest { id: l.id.clone() })
            .await
            .expect("resources")
            .into_inner()
            .resources;
        let mut res: Vec<_> = res
            .into_iter()
            .map(|r| format!("{}:{}", r.r#type, r.id))
            .collect();
        res.sort();
        lease_lines.push(format!("{} {labels:?} {res:?}", l.id));
    }
    format!(
        "{}\n{}\n{}\n{}",
        d.ctr_ok(&["namespaces", "ls"]),
        d.ctr_ok(&["images", "ls"])
            .lines()
            .map(|l| l
                .split_whitespace()
                .filter(|w| !w.contains("ago"))
                .collect::<Vec<_>>()
                .join(" "))
            .collect::<Vec<_>>()
            .join("\n"),
        d.ctr_ok(&["content", "ls"])
            .lines()
            .map(|l| {
                // Drop the AGE column, which changes with time.
                let f: Vec<&str> = l.split('\t').collect();
                // ctr prints labels in Go's random map order.
                let mut labels: Vec<&str> = f.last().unwrap_or(&"").split(',').collect();
                labels.sort();
                format!("{} {} {}", f[0], f.get(1).unwrap_or(&""), labels.join(","))
            })
            .collect::<Vec<_>>()
            .join("\n"),
        lease_lines.join("\n")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_clean_restart_and_sigkill() {
    let mut d = Daemon::start("persist").await;
    d.ctr_ok(&["namespaces", "create", "persist", "env=test"]);
    let img = image(busybox_layer(&BTreeMap::new()));
    let tar = d.dir().join("img.tar");
    write_oci_archive(&tar, &img, "docker.io/hull/persist:1");
    d.ctr_ok(&["images", "import", "--no-unpack", tar.to_str().expect("p")]);
    d.ctr_ok(&["images", "label", "docker.io/hull/persist:1", "keep=yes"]);
    d.ctr_ok(&["content", "label", &img.layer.digest, "layer=busybox"]);
    let c = d.client().await;
    c.leases()
        .create(CreateRequest {
            id: "held".into(),
            labels: [("purpose".to_string(), "restart".to_string())].into(),
        })
        .await
        .expect("lease");
    let leased = write_blob(&c.with_lease("held"), "leased", b"leased data")
        .await
        .expect("leased blob");
    c.leases()
        .add_resource(AddResourceRequest {
            id: "held".into(),
            resource: Some(Resource {
                id: "some-ingest".into(),
                r#type: "ingests".into(),
            }),
        })
        .await
        .expect("add");
    // What the import's lease held goes at the collection its deletion
    // calls for; have it run now, so that a restart has nothing left to do.
    d.ctr_ok(&["leases", "create", "--id", "flush-gc"]);
    d.ctr_ok(&["leases", "rm", "--sync", "flush-gc"]);
    let before = state(&d).await;
    assert!(
        before.contains(&leased) && before.contains("keep=yes") && before.contains("env=test"),
        "{before}"
    );

    d.restart().await;
    assert_eq!(state(&d).await, before, "clean restart lost state");

    d.kill();
    d.start_again().await;
    assert_eq!(state(&d).await, before, "SIGKILL lost acknowledged state");
    // The leased blob reads back.
    assert_eq!(
        d.ctr_ok(&["content", "get", &leased]).as_bytes(),
        b"leased data"
    );
}

fn blob_data(writer: usize, n: usize) -> Vec<u8> {
    let len = 4096 + (writer * 7919 + n * 104_729) % (2 << 20);
    let mut x = ((writer as u64) << 32 | n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_twenty_concurrent_writers_loses_nothing_acknowledged() {
    let mut d = Daemon::start("crash").await;
    let committed: Arc<Mutex<Vec<(String, usize, usize)>>> = Arc::default();
    let attempted: Arc<Mutex<HashMap<String, (usize, usize)>>> = Arc::default();
    // Blobs nothing refers to are garbage (GC also runs at startup, as
    // containerd's does), so the writers work under a lease, as clients do.
    d.client()
        .await
        .leases()
        .create(CreateRequest {
            id: "writers".into(),
            labels: Default::default(),
        })
        .await
        .expect("lease");
    let mut tasks = Vec::new();
    for w in 0..20 {
        let c = d.client().await.with_lease("writers");
        let committed = committed.clone();
        let attempted = attempted.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let data = blob_data(w, n);
                let r = format!("w{w}-{n}");
                attempted.lock().expect("lock").insert(r.clone(), (w, n));
                match write_blob(&c, &r, &data).await {
                    Ok(dg) => {
                        assert_eq!(dg, sha256(&data));
                        committed.lock().expect("lock").push((dg, w, n));
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    d.kill();
    for t in tasks {
        t.await.expect("writer task");
    }
    let committed = committed.lock().expect("lock").clone();
    assert!(
        committed.len() >= 20,
        "only {} blobs committed before the kill",
        committed.len()
    );

    d.start_again().await;
    let c = d.client().await.with_lease("writers");
    // Every acknowledged blob is there and reads back whole.
    for (dg, w, n) in &committed {
        let info = c
            .content()
            .info(InfoRequest { digest: dg.clone() })
            .await
            .unwrap_or_else(|e| panic!("acknowledged blob {dg} lost: {e}"))
            .into_inner()
            .info
            .expect("info");
        assert_eq!(info.size as usize, blob_data(*w, *n).len());
        let mut s = c
            .content()
            .read(ReadContentRequest {
                digest: dg.clone(),
                offset: 0,
                size: 0,
            })
            .await
            .expect("read")
            .into_inner();
        let mut h = Sha256::new();
        while let Some(m) = s.message().await.expect("read") {
            h.update(&m.data);
        }
        assert_eq!(&format!("sha256:{:x}", h.finalize()), dg);
    }
    // No partial blob is visible: every file hashes to its name.
    for name in d.blob_files() {
        let path = d.root().join("content/blobs/sha256").join(&name[7..]);
        let data = std::fs::read(&path).expect("blob file");
        assert_eq!(sha256(&data), name, "blob file with wrong content");
    }
    // Unfinished refs are listed, and each resumes to a correct commit.
    let statuses = c
        .content()
        .list_statuses(ListStatusesRequest::default())
        .await
        .expect("statuses")
        .into_inner()
        .statuses;
    let attempted = attempted.lock().expect("lock").clone();
    for st in &statuses {
        let (w, n) = *attempted
            .get(&st.r#ref)
            .unwrap_or_else(|| panic!("unknown ref {}", st.r#ref));
        let data = blob_data(w, n);
        assert!(st.offset as usize <= data.len());
        let (mut ing, stat) = Ingest::open(&c, &st.r#ref).await.expect("resume");
        assert_eq!(stat.offset, st.offset);
        let mut at = stat.offset;
        for chunk in data[at as usize..].chunks(1 << 20) {
            at = ing.write(at, chunk.to_vec()).await.expect("write").offset;
        }
        let done = ing
            .commit(at, data.len() as i64, &sha256(&data))
            .await
            .expect("commit resumed");
        assert_eq!(done.digest, sha256(&data));
    }
    let left = c
        .content()
        .list_statuses(ListStatusesRequest::default())
        .await
        .expect("statuses")
        .into_inner()
        .statuses;
    assert!(left.is_empty(), "{left:?}");
    eprintln!(
        "{} committed before the kill, {} resumed after",
        committed.len(),
        statuses.len()
    );
}

/// What the snapshot clients saw acknowledged before the daemon died.
#[derive(Default)]
struct SnapshotLog {
    /// Committed names not removed since.
    committed: Vec<String>,
    /// Active keys (never committed or removed).
    active: Vec<String>,
    /// Removed names.
    removed: Vec<String>,
}

fn gc_root() -> BTreeMap<String, String> {
    // Committed snapshots nothing holds are garbage: the clients label
    // theirs as roots.
    [("containerd.io/gc.root".to_string(), "t".to_string())].into()
}

/// `Snapshots/Prepare` of `key` on `parent` in the overlayfs snapshotter.
fn prepare_req(
    key: &str,
    parent: &str,
) -> hull_proto::containerd::services::snapshots::v1::PrepareSnapshotRequest {
    hull_proto::containerd::services::snapshots::v1::PrepareSnapshotRequest {
        snapshotter: "overlayfs".into(),
        key: key.to_owned(),
        parent: parent.to_owned(),
        labels: gc_root(),
    }
}

fn commit_req(
    name: &str,
    key: &str,
) -> hull_proto::containerd::services::snapshots::v1::CommitSnapshotRequest {
    hull_proto::containerd::services::snapshots::v1::CommitSnapshotRequest {
        snapshotter: "overlayfs".into(),
        name: name.to_owned(),
        key: key.to_owned(),
        labels: gc_root(),
    }
}

fn remove_req(key: &str) -> hull_proto::containerd::services::snapshots::v1::RemoveSnapshotRequest {
    hull_proto::containerd::services::snapshots::v1::RemoveSnapshotRequest {
        snapshotter: "overlayfs".into(),
        key: key.to_owned(),
    }
}

/// Checks that the daemon has exactly what `log` says, on disk too.
async fn check_snapshots(d: &Daemon, log: &SnapshotLog) {
    use hull_proto::containerd::services::snapshots::v1::StatSnapshotRequest;
    let c = d.client().await;
    let mut s = c.snapshots();
    let stat = |key: &String| StatSnapshotRequest {
        snapshotter: "overlayfs".into(),
        key: key.clone(),
    };
    for (names, kind) in [(&log.committed, 3), (&log.active, 2)] {
        for name in names {
            let info = s
                .stat(stat(name))
                .await
                .unwrap_or_else(|e| panic!("acknowledged {name} lost: {e}"))
                .into_inner()
                .info
                .expect("info");
            assert_eq!(info.kind, kind, "{name}");
        }
    }
    for name in &log.removed {
        let e = s
            .stat(stat(name))
            .await
            .expect_err("an acknowledged remove came back");
        assert_eq!(e.code(), tonic::Code::NotFound, "{name}: {e}");
    }
    // Nothing else is there; every snapshot has its directory, and none
    // is left without a record once the restarted snapshotter cleaned up.
    let listed = d.ctr_ok(&["snapshots", "ls"]).lines().skip(1).count();
    assert_eq!(listed, log.committed.len() + log.active.len());
    let dir = d.root().join("snapshots/overlayfs/snapshots");
    hull_tests::snapshot_dirs::settle_to(&dir, listed).await;
    for key in &log.active {
        let mounts = d.ctr_ok(&["snapshots", "mounts", "/tmp/x", key]);
        assert!(mounts.contains("mount"), "{key}: {mounts}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_snapshot_changes_loses_nothing_acknowledged() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let mut d = Daemon::start("snapcrash").await;
    let log: Arc<Mutex<SnapshotLog>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    // Many clients at once: prepare, commit, remove every other one, and
    // leave an active child on every fourth.
    let mut tasks = Vec::new();
    for w in 0..8 {
        let c = d.client().await;
        let (log, stop) = (log.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = c.snapshots();
            for n in 0.. {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let (key, name) = (format!("k{w}-{n}"), format!("n{w}-{n}"));
                s.prepare(prepare_req(&key, "")).await.expect("prepare");
                s.commit(commit_req(&name, &key)).await.expect("commit");
                if n % 2 == 1 {
                    s.remove(remove_req(&name)).await.expect("remove");
                    log.lock().expect("lock").removed.push(name);
                    continue;
                }
                if n % 4 == 2 {
                    let child = format!("{key}-a");
                    s.prepare(prepare_req(&child, &name))
                        .await
                        .expect("prepare child");
                    log.lock().expect("lock").active.push(child);
                }
                log.lock().expect("lock").committed.push(name);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.expect("snapshot client");
    }
    let mut log = std::mem::take(&mut *log.lock().expect("lock"));
    assert!(
        log.committed.len() >= 8 && log.removed.len() >= 8,
        "too little done: {} committed, {} removed",
        log.committed.len(),
        log.removed.len()
    );
    d.kill();
    d.start_again().await;
    check_snapshots(&d, &log).await;

    // Each kind of change made last, with nothing after it that could
    // flush it along, then SIGKILL: each is durable on its own.
    for last in ["prepare", "commit", "remove"] {
        let c = d.client().await;
        let mut s = c.snapshots();
        let (key, name) = (format!("last-{last}"), format!("last-{last}-c"));
        s.prepare(prepare_req(&key, "")).await.expect("prepare");
        if last == "prepare" {
            log.active.push(key);
        } else {
            s.commit(commit_req(&name, &key)).await.expect("commit");
            if last == "commit" {
                log.committed.push(name);
            } else {
                s.remove(remove_req(&name)).await.expect("remove");
                log.removed.push(name);
            }
        }
        d.kill();
        d.start_again().await;
        check_snapshots(&d, &log).await;
    }
}
