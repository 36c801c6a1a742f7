//! Images become filesystems: `ctr images import` unpacks into snapshots,
//! `ctr snapshots ...` and `ctr images mount` work, layers apply with
//! whiteouts, and hostile layers are refused without touching anything
//! outside the snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use tonic::Code;

use hull_proto::containerd::services::diff::v1::ApplyRequest;
use hull_proto::containerd::services::snapshots::v1::{
    ListSnapshotsRequest, PrepareSnapshotRequest,
};
use hull_proto::containerd::types::Descriptor;
use hull_tests::blobs::write_blob;
use hull_tests::daemon::{is_root, Daemon};
use hull_tests::image::{busybox_layer, chain_ids, gzip, layer, write_oci_layers, Entry};

/// Every path under `root` with a one-letter kind (d, f, l, c).
fn listing(root: &Path) -> BTreeMap<String, char> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, char>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .expect("read")
            .map(|e| e.expect("entry"))
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p
                .strip_prefix(root)
                .expect("under root")
                .to_string_lossy()
                .into_owned();
            let ft = e.file_type().expect("type");
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_file() {
                'f'
            } else {
                'c'
            };
            out.insert(rel, kind);
            if ft.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// What a stack of layers should look like, computed from the entries
/// alone: later layers replace, `.wh.NAME` deletes, `.wh..wh..opq` empties
/// a directory of what lower layers put there.
fn reference(layers: &[&[Entry]]) -> BTreeMap<String, char> {
    let mut tree: BTreeMap<String, char> = BTreeMap::new();
    for entries in layers {
        let mut this_layer: BTreeSet<String> = BTreeSet::new();
        for e in *entries {
            let (name, kind) = match e {
                Entry::Dir(n) => (n.trim_end_matches('/'), 'd'),
                Entry::File(n, _) => (*n, 'f'),
                Entry::Symlink(n, _) => (*n, 'l'),
                Entry::Link(n, _) => (*n, 'f'),
            };
            let (dir, base) = name.rsplit_once('/').map_or(("", name), |(d, b)| (d, b));
            let child = |b: &str| {
                if dir.is_empty() {
                    b.to_owned()
                } else {
                    format!("{dir}/{b}")
                }
            };
            if base == ".wh..wh..opq" {
                let prefix = format!("{dir}/");
                tree.retain(|k, _| !k.starts_with(&prefix) || this_layer.contains(k));
                continue;
            }
            if let Some(hidden) = base.strip_prefix(".wh.") {
                let gone = child(hidden);
                tree.retain(|k, _| k != &gone && !k.starts_with(&format!("{gone}/")));
                continue;
            }
            let path = child(base);
            if kind != 'd' || tree.get(&path) != Some(&'d') {
                tree.retain(|k, _| !k.starts_with(&format!("{path}/")));
            }
            tree.insert(path.clone(), kind);
            this_layer.insert(path);
        }
    }
    tree
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_unpacks_and_ctr_snapshot_verbs_work() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("unpack").await;
    let layers = vec![
        busybox_layer(&BTreeMap::new()),
        layer(&[Entry::Dir("etc/"), Entry::File("etc/hostname", b"hull\n")]),
    ];
    let tar = d.dir().join("img.tar");
    let chains = chain_ids(&write_oci_layers(&tar, &layers, "docker.io/hull/unpack:1"));
    let tar = tar.to_str().expect("path");

    for sn in ["overlayfs", "native"] {
        d.ctr_ok(&["images", "import", "--snapshotter", sn, tar]);
        let ls = d.ctr_ok(&["snapshots", "--snapshotter", sn, "ls"]);
        // The chain IDs are the ones containerd computes for this archive.
        assert!(
            ls.lines()
                .any(|l| l.starts_with(&chains[0]) && l.contains("Committed")),
            "{ls}"
        );
        let top = ls
            .lines()
            .find(|l| l.starts_with(&chains[1]))
            .unwrap_or_else(|| panic!("{ls}"));
        assert!(top.contains(&chains[0]), "parent of the top layer: {top}");
        let info = d.ctr_ok(&["snapshots", "--snapshotter", sn, "info", &chains[1]]);
        assert!(
            info.contains(&format!("\"Parent\": \"{}\"", chains[0])),
            "{info}"
        );
        let tree = d.ctr_ok(&["snapshots", "--snapshotter", sn, "tree"]);
        assert!(
            tree.contains(&chains[0]) && tree.contains(&chains[1]),
            "{tree}"
        );
        let usage = d.ctr_ok(&["snapshots", "--snapshotter", sn, "usage", &chains[0]]);
        assert!(usage.contains(&chains[0]), "{usage}");

        let mnt = d.dir().join(format!("mnt-{sn}"));
        std::fs::create_dir_all(&mnt).expect("mkdir");
        let m = mnt.to_str().expect("path");
        d.ctr_ok(&[
            "images",
            "mount",
            "--snapshotter",
            sn,
            "docker.io/hull/unpack:1",
            m,
        ]);
        let hostname = std::fs::read_to_string(mnt.join("etc/hostname"));
        let busybox = std::fs::metadata(mnt.join("bin/busybox")).map(|m| m.len());
        d.ctr_ok(&["images", "unmount", "--rm", m]);
        assert_eq!(hostname.expect("hostname"), "hull\n");
        assert!(busybox.expect("busybox") > 100_000);
        // The snapshots below have no lease (ctr's snapshot verbs take
        // none), so a collection would take them, as containerd's would:
        // run the one the unmount's removal calls for now.
        let flush = format!("flush-{sn}");
        d.ctr_ok(&["leases", "create", "--id", &flush]);
        d.ctr_ok(&["leases", "rm", "--sync", &flush]);

        // The everyday verbs on a snapshot of our own.
        d.ctr_ok(&[
            "snapshots",
            "--snapshotter",
            sn,
            "prepare",
            "work",
            &chains[1],
        ]);
        let mounts = d.ctr_ok(&["snapshots", "--snapshotter", sn, "mounts", m, "work"]);
        assert!(mounts.contains("mount -t"), "{mounts}");
        d.ctr_ok(&["snapshots", "--snapshotter", sn, "commit", "done", "work"]);
        d.ctr_ok(&["snapshots", "--snapshotter", sn, "view", "look", "done"]);
        d.ctr_ok(&[
            "snapshots",
            "--snapshotter",
            sn,
            "label",
            "done",
            "team=runtime",
        ]);
        let info = d.ctr_ok(&["snapshots", "--snapshotter", sn, "info", "done"]);
        assert!(info.contains("\"team\": \"runtime\""), "{info}");
        let busy = d.ctr_run(&["snapshots", "--snapshotter", sn, "rm", "done"]);
        assert!(
            !busy.status.success(),
            "a snapshot with a child must not be removed"
        );
        d.ctr_ok(&["snapshots", "--snapshotter", sn, "rm", "look", "done"]);
        assert!(!d
            .ctr_ok(&["snapshots", "--snapshotter", sn, "ls"])
            .contains("done"));
        d.ctr_ok(&["images", "rm", "docker.io/hull/unpack:1"]);
    }
    // Nothing is left mounted.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(
        !mountinfo.contains(d.dir().to_str().expect("path")),
        "{mountinfo}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whiteouts_opaque_dirs_and_replaced_dirs_mount_as_expected() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("whiteouts").await;
    let l1: &[Entry] = &[
        Entry::Dir("a/"),
        Entry::File("a/x", b"x"),
        Entry::File("a/y", b"y"),
        Entry::Dir("b/"),
        Entry::File("b/old", b"old"),
        Entry::Dir("b/sub/"),
        Entry::File("b/sub/deep", b"deep"),
        Entry::Dir("c/"),
        Entry::File("c/inner", b"inner"),
        Entry::File("keep", b"keep"),
        Entry::Symlink("link", "keep"),
    ];
    let l2: &[Entry] = &[
        Entry::File("a/.wh.x", b""),
        Entry::File("c", b"now a file"),
        Entry::File(".wh.link", b""),
    ];
    let l3: &[Entry] = &[
        Entry::Dir("b/"),
        Entry::File("b/.wh..wh..opq", b""),
        Entry::File("b/new", b"new"),
        Entry::Link("a/y2", "a/y"),
    ];
    let expected = reference(&[l1, l2, l3]);
    let tar = d.dir().join("wh.tar");
    write_oci_layers(
        &tar,
        &[layer(l1), layer(l2), layer(l3)],
        "docker.io/hull/wh:1",
    );
    for sn in ["overlayfs", "native"] {
        d.ctr_ok(&[
            "images",
            "import",
            "--snapshotter",
            sn,
            tar.to_str().expect("p"),
        ]);
        let mnt = d.dir().join(format!("wh-{sn}"));
        std::fs::create_dir_all(&mnt).expect("mkdir");
        let m = mnt.to_str().expect("p");
        d.ctr_ok(&[
            "images",
            "mount",
            "--snapshotter",
            sn,
            "docker.io/hull/wh:1",
            m,
        ]);
        let got = listing(&mnt);
        let c = std::fs::read_to_string(mnt.join("c"));
        d.ctr_ok(&["images", "unmount", "--rm", m]);
        assert_eq!(got, expected, "{sn}");
        assert_eq!(c.expect("c"), "now a file");
        d.ctr_ok(&["images", "rm", "docker.io/hull/wh:1"]);
    }
}

/// Writes `layer` as a gzip blob, prepares a fresh snapshot and applies the
/// layer onto it. Returns the apply result and the snapshot's directory
/// through its mounts (bind source).
async fn apply(d: &Daemon, key: &str, data: Vec<u8>) -> Result<String, tonic::Status> {
    let c = d.client().await;
    let blob = gzip(&data);
    let digest = match write_blob(&c, key, &blob).await {
        Ok(dg) => dg,
        Err(e) if e.code() == Code::AlreadyExists => hull_tests::image::sha256(&blob),
        Err(e) => return Err(e),
    };
    let mounts = c
        .snapshots()
        .prepare(PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: key.into(),
            parent: String::new(),
            labels: Default::default(),
        })
        .await?
        .into_inner()
        .mounts;
    let applied = c
        .diff()
        .apply(ApplyRequest {
            diff: Some(Descriptor {
                media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
                digest,
                size: blob.len() as i64,
                annotations: Default::default(),
            }),
            mounts: mounts.clone(),
            payloads: Default::default(),
        })
        .await?
        .into_inner();
    Ok(applied.applied.expect("applied").digest)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_layers_are_refused_and_touch_nothing_outside() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start_with_config(
        "hostile",
        "[diff]\nmax_uncompressed_bytes = 33554432\nmax_compression_ratio = 100\n",
    )
    .await;
    let canary_dir = d.dir().join("outside");
    std::fs::create_dir_all(&canary_dir).expect("mkdir");
    let canary = canary_dir.join("canary");
    std::fs::write(&canary, "untouched").expect("canary");
    // The canary's absolute path without its leading slash, leaked on
    // purpose so that entries can name it from a 'static slice.
    let rel: &'static str = Box::leak(
        canary
            .to_string_lossy()
            .trim_start_matches('/')
            .to_owned()
            .into_boxed_str(),
    );
    let up: &'static str = Box::leak(format!("{}{rel}", "../".repeat(20)).into_boxed_str());
    let dir_abs: &'static str =
        Box::leak(canary_dir.to_string_lossy().into_owned().into_boxed_str());
    let up_link: &'static str = Box::leak("../".repeat(20).into_boxed_str());
    let through_up: &'static str = Box::leak(format!("up/{rel}").into_boxed_str());

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("traversal", layer(&[Entry::File(up, b"pwned")])),
        (
            "relative-symlink",
            layer(&[
                Entry::Symlink("up", up_link),
                Entry::File(through_up, b"pwned"),
            ]),
        ),
        ("hardlink-out", layer(&[Entry::Link("hl", up)])),
        (
            "hardlink-via-abs-symlink",
            layer(&[
                Entry::Symlink("abs", dir_abs),
                Entry::Link("hl", "abs/canary"),
            ]),
        ),
        (
            "symlink-loop",
            layer(&[
                Entry::Symlink("l1", "l2"),
                Entry::Symlink("l2", "l1"),
                Entry::File("l1/x", b"x"),
            ]),
        ),
        ("truncated", {
            let mut t = layer(&[Entry::File("big", &[7u8; 20_000])]);
            t.truncate(5_000);
            t
        }),
        ("gzip-bomb", {
            let zeros = vec![0u8; 64 << 20];
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_path("zeros").expect("path");
            h.set_size(zeros.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append(&h, zeros.as_slice()).expect("tar");
            b.into_inner().expect("tar")
        }),
    ];
    for (name, data) in cases {
        let err = apply(&d, name, data).await.expect_err(name);
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err}");
        assert_eq!(
            std::fs::read_to_string(&canary).expect("canary"),
            "untouched",
            "{name}"
        );
        assert_eq!(
            std::fs::read_dir(&canary_dir).expect("dir").count(),
            1,
            "{name} wrote beside the canary"
        );
    }

    // An absolute symlink resolves inside the root, as containerd's: the
    // write lands in the snapshot, not beside the canary.
    let ok = apply(
        &d,
        "absolute-symlink",
        layer(&[
            Entry::Symlink("abs", dir_abs),
            Entry::File("abs/canary", b"inside"),
        ]),
    )
    .await;
    assert!(ok.is_ok(), "{ok:?}");
    assert_eq!(
        std::fs::read_to_string(&canary).expect("canary"),
        "untouched"
    );

    // None of it was committed.
    let c = d.client().await;
    let mut s = c
        .snapshots()
        .list(ListSnapshotsRequest {
            snapshotter: "overlayfs".into(),
            filters: vec![],
        })
        .await
        .expect("list")
        .into_inner();
    while let Some(m) = s.message().await.expect("list") {
        for i in m.info {
            assert_eq!(i.kind, 2, "{} is not active", i.name);
        }
    }

    // Through ctr, a hostile image fails to unpack and leaves no committed
    // snapshot behind.
    let tar = d.dir().join("hostile.tar");
    let chains = chain_ids(&write_oci_layers(
        &tar,
        &[layer(&[Entry::File(up, b"pwned")])],
        "docker.io/hull/bad:1",
    ));
    let out = d.ctr_run(&["images", "import", tar.to_str().expect("p")]);
    assert!(!out.status.success(), "hostile image imported");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("escapes"),
        "{out:?}"
    );
    assert!(!d.ctr_ok(&["snapshots", "ls"]).contains(&chains[0]));
    assert_eq!(
        std::fs::read_to_string(&canary).expect("canary"),
        "untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_an_image_collects_its_snapshots_but_not_shared_ones() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("snapgc").await;
    let base = layer(&[Entry::Dir("etc/"), Entry::File("etc/base", b"base")]);
    let a_top = layer(&[Entry::File("etc/a", b"a")]);
    let b_top = layer(&[Entry::File("etc/b", b"b")]);
    let (ta, tb) = (d.dir().join("a.tar"), d.dir().join("b.tar"));
    let a = chain_ids(&write_oci_layers(
        &ta,
        &[base.clone(), a_top],
        "docker.io/hull/a:1",
    ));
    let b = chain_ids(&write_oci_layers(&tb, &[base, b_top], "docker.io/hull/b:1"));
    assert_eq!(a[0], b[0], "the images share their base");
    d.ctr_ok(&["images", "import", ta.to_str().expect("p")]);
    d.ctr_ok(&["images", "import", tb.to_str().expect("p")]);
    let ls = d.ctr_ok(&["snapshots", "ls"]);
    for k in [&a[0], &a[1], &b[1]] {
        assert!(ls.contains(k.as_str()), "{k} missing\n{ls}");
    }
    d.ctr_ok(&["images", "rm", "--sync", "docker.io/hull/a:1"]);
    let ls = d.ctr_ok(&["snapshots", "ls"]);
    assert!(!ls.contains(&a[1]), "a's top layer survived\n{ls}");
    assert!(
        ls.contains(&a[0]) && ls.contains(&b[1]),
        "b's layers were collected\n{ls}"
    );
    d.ctr_ok(&["images", "rm", "--sync", "docker.io/hull/b:1"]);
    let ls = d.ctr_ok(&["snapshots", "ls"]);
    assert_eq!(
        ls.lines().count(),
        1,
        "only the header should be left\n{ls}"
    );
    // Their directories went too (removed in the background after the
    // records).
    hull_tests::snapshot_dirs::settle_to(&d.root().join("snapshots/overlayfs/snapshots"), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctr_snapshots_diff_writes_the_changes_as_a_layer() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let d = Daemon::start("diffs").await;
    let base = layer(&[
        Entry::Dir("etc/"),
        Entry::File("etc/hello", b"hi"),
        Entry::File("etc/same", b"same"),
    ]);
    let tar = d.dir().join("base.tar");
    let chains = chain_ids(&write_oci_layers(
        &tar,
        &[base],
        "docker.io/hull/diffbase:1",
    ));
    d.ctr_ok(&["images", "import", tar.to_str().expect("p")]);
    d.ctr_ok(&["snapshots", "prepare", "work", &chains[0]]);
    let mnt = d.dir().join("work");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let cmd = d.ctr_ok(&["snapshots", "mounts", mnt.to_str().expect("p"), "work"]);
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .status()
        .expect("mount");
    assert!(status.success(), "{cmd}");
    std::fs::write(mnt.join("etc/new"), "new").expect("write");
    std::fs::remove_file(mnt.join("etc/hello")).expect("rm");
    let status = std::process::Command::new("umount")
        .arg(&mnt)
        .status()
        .expect("umount");
    assert!(status.success());

    let out = d
        .ctr()
        .args(["snapshots", "diff", "work"])
        .output()
        .expect("ctr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(out.stdout.as_slice()));
    for e in ar.entries().expect("tar") {
        names.push(
            e.expect("entry")
                .path()
                .expect("path")
                .to_string_lossy()
                .into_owned(),
        );
    }
    names.sort();
    assert_eq!(names, ["etc", "etc/.wh.hello", "etc/new"], "{names:?}");
    // The layer is in the content store with its diff ID label.
    let ls = d.ctr_ok(&["content", "ls"]);
    assert!(ls.contains("containerd.io/uncompressed=sha256:"), "{ls}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_unpack_leaves_nothing_incomplete() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut d = Daemon::start("crashunpack").await;
    let big: Vec<u8> = (0..(24u32 << 20))
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let big: &'static [u8] = Box::leak(big.into_boxed_slice());
    let layers = vec![
        busybox_layer(&BTreeMap::new()),
        layer(&[Entry::Dir("data/"), Entry::File("data/one", big)]),
        layer(&[Entry::File("data/two", big)]),
    ];
    let tar = d.dir().join("crash.tar");
    let chains = chain_ids(&write_oci_layers(&tar, &layers, "docker.io/hull/crash:1"));
    let mut import = d
        .ctr()
        .args(["images", "import", tar.to_str().expect("p")])
        .spawn()
        .expect("ctr");
    // Kill hulld once the first layer is committed, while later ones apply.
    let snapshots_dir = d.root().join("snapshots/overlayfs/snapshots");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while hull_tests::snapshot_dirs::count(&snapshots_dir) < 2 {
        assert!(std::time::Instant::now() < deadline, "unpack never started");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    d.kill();
    let _ = import.wait();
    d.start_again().await;

    // Every committed snapshot is a whole layer: its chain is a prefix of
    // the image's, and nothing on disk lacks a record.
    let ls = d.ctr_ok(&["snapshots", "ls"]);
    let listed = ls.lines().skip(1).count();
    for line in ls.lines().skip(1).filter(|l| l.contains("Committed")) {
        let key = line.split_whitespace().next().expect("key");
        assert!(
            chains.iter().any(|c| c == key),
            "unexpected committed snapshot {key}"
        );
    }
    let dirs = hull_tests::snapshot_dirs::entries(&snapshots_dir);
    assert_eq!(
        dirs.len(),
        listed,
        "directories without records survived the restart: {dirs:?}\n{ls}"
    );
    // The import completes on a second try, and the image is whole.
    d.ctr_ok(&["images", "import", tar.to_str().expect("p")]);
    let mnt = d.dir().join("mnt");
    std::fs::create_dir_all(&mnt).expect("mkdir");
    let m = mnt.to_str().expect("p");
    d.ctr_ok(&["images", "mount", "docker.io/hull/crash:1", m]);
    let one = std::fs::read(mnt.join("data/one")).map(|v| v == big);
    let two = std::fs::read(mnt.join("data/two")).map(|v| v == big);
    d.ctr_ok(&["images", "unmount", "--rm", m]);
    assert!(one.expect("one") && two.expect("two"));
}
