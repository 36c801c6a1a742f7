//! Server-side pull from a real registry (Debian's docker-registry on
//! 127.0.0.1, seeded with skopeo): through hullctl and the Transfer API,
//! with hosts.toml, mirrors and fallback, platforms, and ctr's own
//! client-side pull still working.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use hull_tests::daemon::{is_root, Daemon};
use hull_tests::image::{busybox_layer, image, write_oci_archive, write_oci_multi_platform};
use hull_tests::registry::{free_port, hosts_toml, Registry};

fn have_registry_tools() -> bool {
    let found = |b: &str| {
        Command::new("which")
            .arg(b)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !(found("docker-registry") && found("skopeo")) {
        eprintln!(
            "skipped: docker-registry and skopeo are not installed (tests/run.sh installs them)"
        );
        return false;
    }
    true
}

/// A busybox image whose /hello holds `text`, as an OCI archive.
fn archive(dir: &Path, text: &str) -> std::path::PathBuf {
    let extra = BTreeMap::from([("hello".to_owned(), text.as_bytes().to_vec())]);
    let path = dir.join(format!("img-{}.tar", text.len()));
    write_oci_archive(&path, &image(busybox_layer(&extra)), "seed");
    path
}

fn config_for(certs: &Path) -> String {
    format!("[registry]\nconfig_path = \"{}\"\n", certs.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hullctl_pulls_over_http_from_hosts_toml_and_ctr_runs_it() {
    if !is_root() || !have_registry_tools() {
        return;
    }
    let reg = Registry::start("");
    let tmp = tempfile::tempdir().expect("tempdir");
    reg.seed(
        &archive(tmp.path(), "pulled by hulld\n"),
        "team/app",
        "v1",
        None,
    );
    let certs = tmp.path().join("certs.d");
    hosts_toml(
        &certs,
        &reg.host,
        &format!("server = \"http://{}\"\n", reg.host),
    );
    let d = Daemon::start_with_config("pull-http", &config_for(&certs)).await;
    let name = format!("{}/team/app:v1", reg.host);

    let out = d.hullctl_ok(&["pull", &name]);
    assert!(out.contains("Pull complete"), "{out}");
    assert!(out.trim_end().ends_with(&name), "{out}");
    let listed = d.ctr_ok(&["images", "ls", "-q"]);
    assert!(listed.lines().any(|l| l == name), "{listed}");
    let run = d.ctr_ok(&["run", "--rm", &name, "pulled", "cat", "/hello"]);
    assert_eq!(run, "pulled by hulld\n");
    // Pulled again: nothing is downloaded, the layer is already there.
    let again = d.hullctl_ok(&["pull", &name]);
    assert!(again.contains("Already exists"), "{again}");

    // ctr's own client-side pull against hulld still works.
    reg.seed(
        &archive(tmp.path(), "pulled by ctr\n"),
        "team/app",
        "v2",
        None,
    );
    let v2 = format!("{}/team/app:v2", reg.host);
    d.ctr_ok(&["images", "pull", "--plain-http", &v2]);
    let run = d.ctr_ok(&["run", "--rm", &v2, "pulled2", "cat", "/hello"]);
    assert_eq!(run, "pulled by ctr\n");

    // Without a hosts.toml for the host, https is tried and fails clearly.
    let other = Registry::start("");
    other.seed(&archive(tmp.path(), "x\n"), "a", "1", None);
    let out = d.hullctl_run(&["pull", &format!("{}/a:1", other.host)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("https://{}/v2/a/manifests/1", other.host)),
        "{err}"
    );
    // --plain-http reaches it.
    d.hullctl_ok(&["pull", "--plain-http", &format!("{}/a:1", other.host)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_pulls_the_host_platform_unless_all_are_asked() {
    if !is_root() || !have_registry_tools() {
        return;
    }
    let reg = Registry::start("");
    let tmp = tempfile::tempdir().expect("tempdir");
    let host_arch = hull_tests::image::host_arch();
    let other_arch = if host_arch == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let mine = BTreeMap::from([("hello".to_owned(), b"host\n".to_vec())]);
    let theirs = BTreeMap::from([("hello".to_owned(), b"other\n".to_vec())]);
    let path = tmp.path().join("multi.tar");
    write_oci_multi_platform(
        &path,
        &[
            (other_arch, busybox_layer(&theirs)),
            (host_arch, busybox_layer(&mine)),
        ],
    );
    reg.seed_ref(
        &format!("oci-archive:{}:latest", path.display()),
        "multi",
        "1",
        None,
        &["--all"],
    );
    let certs = tmp.path().join("certs.d");
    hosts_toml(
        &certs,
        &reg.host,
        &format!("server = \"http://{}\"\n", reg.host),
    );
    let d = Daemon::start_with_config("pull-platforms", &config_for(&certs)).await;
    let name = format!("{}/multi:1", reg.host);
    d.hullctl_ok(&["pull", &name]);
    // skopeo recompresses layers on the way in, so digests are the
    // registry's: count what came instead. Index, the host's manifest,
    // config and layer; nothing of the other platform.
    let blobs = |d: &Daemon| d.ctr_ok(&["content", "ls", "-q"]).lines().count();
    assert_eq!(blobs(&d), 4, "{}", d.ctr_ok(&["content", "ls"]));
    // The record's target is the index itself, as containerd's.
    let images = d.ctr_ok(&["images", "ls"]);
    assert!(
        images.contains("application/vnd.oci.image.index.v1+json"),
        "{images}"
    );
    assert_eq!(
        d.ctr_ok(&["run", "--rm", &name, "p1", "cat", "/hello"]),
        "host\n"
    );

    d.hullctl_ok(&["pull", "--all-platforms", &name]);
    assert_eq!(blobs(&d), 7, "{}", d.ctr_ok(&["content", "ls"]));
    // A platform the index does not have is a clear NotFound.
    let out = d.hullctl_run(&["pull", "--platform", "linux/s390x", &name]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no manifest for platform linux/s390x"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_serves_the_pull_and_a_dead_one_falls_back() {
    if !is_root() || !have_registry_tools() {
        return;
    }
    let upstream = Registry::start("");
    let mirror = Registry::start("");
    let tmp = tempfile::tempdir().expect("tempdir");
    // Only the mirror has the image; the record keeps the upstream name.
    mirror.seed(
        &archive(tmp.path(), "from the mirror\n"),
        "lib/app",
        "1",
        None,
    );
    let certs = tmp.path().join("certs.d");
    let dead = format!("127.0.0.1:{}", free_port());
    hosts_toml(
        &certs,
        &upstream.host,
        &format!(
            "server = \"http://{}\"\n\n[host.\"http://{dead}\"]\n  capabilities = [\"pull\", \"resolve\"]\n\n[host.\"http://{}\"]\n  capabilities = [\"pull\", \"resolve\"]\n",
            upstream.host, mirror.host
        ),
    );
    let d = Daemon::start_with_config("pull-mirror", &config_for(&certs)).await;
    let name = format!("{}/lib/app:1", upstream.host);
    d.hullctl_ok(&["pull", &name]);
    let listed = d.ctr_ok(&["images", "ls", "-q"]);
    assert!(listed.lines().any(|l| l == name), "{listed}");
    assert_eq!(
        d.ctr_ok(&["run", "--rm", &name, "m", "cat", "/hello"]),
        "from the mirror\n"
    );
    // The upstream was never needed.
    assert!(
        !upstream.log().contains("/v2/lib/app/"),
        "{}",
        upstream.log()
    );
}

/// Bytes that do not compress: a layer's size on the wire is its size.
fn noise(len: usize) -> Vec<u8> {
    use sha2::{Digest as _, Sha256};
    let mut out = Vec::with_capacity(len + 32);
    let mut block = Sha256::digest(b"hull");
    while out.len() < len {
        out.extend_from_slice(&block);
        block = Sha256::digest(block);
    }
    out.truncate(len);
    out
}

/// An image of a small busybox layer and a large layer of noise, both
/// gzipped (so skopeo keeps their digests); returns (small, big) as
/// `(digest, compressed size)`.
fn two_layer_image(path: &Path, big: usize) -> ((String, usize), (String, usize)) {
    use hull_tests::image::{gzip, layer, sha256, write_oci_gzip_layers, Entry};
    let small = busybox_layer(&BTreeMap::from([(
        "hello".to_owned(),
        b"resumed\n".to_vec(),
    )]));
    // Entries borrow static data; one leak per test process is fine.
    let large = layer(&[Entry::File("big", Box::leak(noise(big).into_boxed_slice()))]);
    let (gs, gl) = (gzip(&small), gzip(&large));
    let out = ((sha256(&gs), gs.len()), (sha256(&gl), gl.len()));
    write_oci_gzip_layers(
        path,
        vec![gs, gl],
        vec![sha256(&small), sha256(&large)],
        "two",
    );
    out
}

/// The two-layer image in a registry that a fresh hulld reaches through a
/// proxy in the test (counting, and slowing or spoiling what it serves).
struct Proxied {
    proxy: hull_tests::tcpproxy::TcpProxy,
    d: Daemon,
    reg: Registry,
    /// `REGISTRY/two:1`.
    name: String,
    /// (digest, compressed size) of the busybox layer and the noise layer.
    small: (String, usize),
    big: (String, usize),
    _tmp: tempfile::TempDir,
}

async fn proxied(ns: &str, big: usize) -> Proxied {
    let reg = Registry::start("");
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("two.tar");
    let (small, big) = two_layer_image(&path, big);
    reg.seed_ref(
        &format!("oci-archive:{}", path.display()),
        "two",
        "1",
        None,
        &[],
    );
    let proxy = hull_tests::tcpproxy::TcpProxy::start(&reg.host);
    let certs = tmp.path().join("certs.d");
    hosts_toml(
        &certs,
        &reg.host,
        &format!("server = \"http://{}\"\n", proxy.addr),
    );
    let d = Daemon::start_with_config(ns, &config_for(&certs)).await;
    let name = format!("{}/two:1", reg.host);
    Proxied {
        proxy,
        d,
        reg,
        name,
        small,
        big,
        _tmp: tmp,
    }
}

/// The offset of ingest `r`, if it exists (through the content API:
/// `ctr content active` rounds sizes for people).
async fn ingest_offset(d: &Daemon, r: &str) -> Option<u64> {
    use hull_proto::containerd::services::content::v1::ListStatusesRequest;
    let client = hull_client::Client::connect(d.address())
        .await
        .ok()?
        .with_namespace(&d.ns);
    let list = client
        .content()
        .list_statuses(ListStatusesRequest::default())
        .await
        .ok()?
        .into_inner();
    list.statuses
        .into_iter()
        .find(|s| s.r#ref == r)
        .and_then(|s| u64::try_from(s.offset).ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pull_killed_half_way_resumes_without_fetching_finished_layers() {
    if !is_root() || !have_registry_tools() {
        return;
    }
    use std::sync::atomic::Ordering;
    let Proxied {
        proxy,
        mut d,
        reg: _reg,
        name,
        small,
        big,
        _tmp,
    } = proxied("pull-resume", 24 << 20).await;
    let ((small, _), (big, big_len)) = (small, big);
    // The daemon reaches the registry through a proxy that counts and
    // slows what it serves.
    proxy.behaviour.rate.store(4 << 20, Ordering::SeqCst);

    let mut pulling = d
        .hullctl()
        .args(["pull", "-q", &name])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("hullctl");
    let r = format!("layer-{big}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let at_kill = loop {
        if let Some(off) = ingest_offset(&d, &r).await {
            if off > 4 << 20 {
                break off;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no progress\n{}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    d.kill();
    let status = pulling.wait().expect("wait hullctl");
    assert!(!status.success(), "the pull finished before the kill");
    assert!((at_kill as usize) < big_len);

    d.start_again().await;
    // The partial layer is still there, the small one committed.
    let kept = ingest_offset(&d, &r)
        .await
        .expect("the ingest survived the restart");
    assert!(kept >= at_kill, "{kept} < {at_kill}");
    let content = d.ctr_ok(&["content", "ls", "-q"]);
    assert!(
        content.contains(&small),
        "small layer not committed:\n{content}"
    );
    proxy.behaviour.rate.store(0, Ordering::SeqCst);
    let before = proxy.served();
    d.hullctl_ok(&["pull", "-q", &name]);
    let second = proxy.served() - before;
    // The rest of the big layer plus small documents and headers: never
    // the small layer again, never the big one from its start.
    let rest = (big_len as u64) - kept;
    assert!(
        second < rest + (64 << 10),
        "served {second} bytes on resume; {rest} were missing\n{}",
        d.log()
    );
    assert!(
        second >= rest,
        "served {second}, fewer than the {rest} missing"
    );
    assert_eq!(
        d.ctr_ok(&["run", "--rm", &name, "resumed", "cat", "/hello"]),
        "resumed\n"
    );
    assert!(
        ingest_offset(&d, &r).await.is_none(),
        "ingest left after commit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_with_wrong_bytes_fails_naming_it_and_leaves_nothing_corrupt() {
    if !is_root() || !have_registry_tools() {
        return;
    }
    use std::sync::atomic::Ordering;
    let Proxied {
        proxy,
        d,
        reg: _reg,
        name,
        small,
        big,
        _tmp,
    } = proxied("pull-corrupt", 8 << 20).await;
    let (_, (big, _)) = (small, big);
    // Past the documents and the small layer (about 1 MB), inside the big
    // one, on whichever connection carries it.
    proxy.behaviour.corrupt_at.store(3 << 20, Ordering::SeqCst);
    let out = d.hullctl_run(&["pull", "-q", &name]);
    assert!(!out.status.success(), "a corrupt pull succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&big) && err.contains("does not match"),
        "{err}"
    );
    // Nothing of it is kept: no blob, no ingest, and every blob stored
    // matches its digest.
    assert!(!d.ctr_ok(&["content", "ls", "-q"]).contains(&big));
    assert!(ingest_offset(&d, &format!("layer-{big}")).await.is_none());
    for digest in d.ctr_ok(&["content", "ls", "-q"]).lines() {
        let data = d
            .ctr()
            .args(["content", "get", digest])
            .output()
            .expect("get")
            .stdout;
        assert_eq!(hull_tests::image::sha256(&data), digest);
    }
    // With the proxy honest again the same pull works.
    proxy.behaviour.corrupt_at.store(0, Ordering::SeqCst);
    d.hullctl_ok(&["pull", "-q", &name]);
}

/// Commits a layer on top of image `base` the way a client's `commit`
/// does: a snapshot over its chain, a file written into it, the Diff
/// service's layer, a new config and manifest, a new image record.
/// Returns the new manifest's digest.
async fn commit_layer(d: &Daemon, base: &str, name: &str, file: &str, text: &str) -> String {
    use hull_oci::oci_spec::image::{
        Descriptor, Digest as OciDigest, ImageConfiguration, ImageManifest, MediaType,
    };
    use hull_proto::containerd::services::diff::v1::DiffRequest;
    use hull_proto::containerd::services::images::v1::{
        CreateImageRequest, GetImageRequest, Image,
    };
    use hull_proto::containerd::services::leases::v1::CreateRequest as Lease;
    use hull_proto::containerd::services::snapshots::v1::{
        PrepareSnapshotRequest, ViewSnapshotRequest,
    };
    use hull_proto::containerd::types::Descriptor as Desc;
    use std::str::FromStr;

    let client = hull_client::Client::connect(d.address())
        .await
        .expect("connect")
        .with_namespace(&d.ns);
    client
        .leases()
        .create(Lease {
            id: "commit".into(),
            labels: Default::default(),
        })
        .await
        .expect("lease");
    let client = client.with_lease("commit");
    let read = |digest: String| {
        let d = d
            .ctr()
            .args(["content", "get", &digest])
            .output()
            .expect("content get");
        d.stdout
    };
    let image = client
        .images()
        .get(GetImageRequest {
            name: base.to_owned(),
        })
        .await
        .expect("base image")
        .into_inner()
        .image
        .expect("image");
    let manifest: ImageManifest =
        serde_json::from_slice(&read(image.target.expect("target").digest)).expect("manifest");
    let mut config: ImageConfiguration =
        serde_json::from_slice(&read(manifest.config().digest().to_string())).expect("config");
    let chain = hull_tests::image::chain_ids(config.rootfs().diff_ids())
        .pop()
        .expect("chain");
    let active = client
        .snapshots()
        .prepare(PrepareSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "commit-work".into(),
            parent: chain.clone(),
            labels: Default::default(),
        })
        .await
        .expect("prepare")
        .into_inner()
        .mounts;
    let upper = active[0]
        .options
        .iter()
        .find_map(|o| o.strip_prefix("upperdir="))
        .expect("overlay upperdir")
        .to_owned();
    std::fs::write(Path::new(&upper).join(file), text).expect("write into snapshot");
    let base_view = client
        .snapshots()
        .view(ViewSnapshotRequest {
            snapshotter: "overlayfs".into(),
            key: "commit-base".into(),
            parent: chain,
            labels: Default::default(),
        })
        .await
        .expect("view")
        .into_inner()
        .mounts;
    let layer = client
        .diff()
        .diff(DiffRequest {
            left: base_view,
            right: active,
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            r#ref: String::new(),
            labels: Default::default(),
        })
        .await
        .expect("diff")
        .into_inner()
        .diff
        .expect("layer");
    let layer_gz = read(layer.digest.clone());
    let diff_id = {
        use std::io::Read as _;
        let mut raw = Vec::new();
        flate2::read::GzDecoder::new(layer_gz.as_slice())
            .read_to_end(&mut raw)
            .expect("gunzip");
        hull_tests::image::sha256(&raw)
    };
    let mut rootfs = config.rootfs().clone();
    let mut ids = rootfs.diff_ids().clone();
    ids.push(diff_id);
    rootfs.set_diff_ids(ids);
    config.set_rootfs(rootfs);
    let config_bytes = serde_json::to_vec(&config).expect("config json");
    let config_digest = hull_tests::blobs::write_blob(&client, "commit-config", &config_bytes)
        .await
        .expect("write config");
    let mut manifest = manifest.clone();
    manifest.set_config(Descriptor::new(
        MediaType::ImageConfig,
        config_bytes.len() as u64,
        OciDigest::from_str(&config_digest).expect("digest"),
    ));
    let mut layers = manifest.layers().clone();
    layers.push(Descriptor::new(
        MediaType::ImageLayerGzip,
        layer.size as u64,
        OciDigest::from_str(&layer.digest).expect("digest"),
    ));
    manifest.set_layers(layers);
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest json");
    let manifest_digest =
        hull_tests::blobs::write_blob(&client, "commit-manifest", &manifest_bytes)
            .await
            .expect("write manifest");
    client
        .images()
        .create(CreateImageRequest {
            image: Some(Image {
                name: name.to_owned(),
                labels: Default::default(),
                target: Some(Desc {
                    media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                    digest: manifest_digest.clone(),
                    size: manifest_bytes.len() as i64,
                    annotations: Default::default(),
                }),
                created_at: None,
                updated_at: None,
            }),
        })
        .await
        .expect("create image");
    manifest_digest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_image_pushes_mounting_what_the_registry_has_and_pulls_back_identical() {
    if !is_root() || !have_registry_tools() {
        return;
    }
    let reg = Registry::start("");
    let tmp = tempfile::tempdir().expect("tempdir");
    reg.seed(&archive(tmp.path(), "base layer\n"), "team/base", "1", None);
    let certs = tmp.path().join("certs.d");
    hosts_toml(
        &certs,
        &reg.host,
        &format!("server = \"http://{}\"\n", reg.host),
    );
    let a = Daemon::start_with_config("push-a", &config_for(&certs)).await;
    let base = format!("{}/team/base:1", reg.host);
    a.hullctl_ok(&["pull", "-q", &base]);
    let name = format!("{}/team/committed:1", reg.host);
    let digest = commit_layer(&a, &base, &name, "committed.txt", "made here\n").await;

    let out = a.hullctl_ok(&["push", &name]);
    // The base layer came from team/base of this registry: mounted, not
    // uploaded; the new layer and config are uploaded.
    assert!(out.contains("Mounted from another repository"), "{out}");
    assert!(out.contains("Pushed"), "{out}");
    assert!(out.contains(&format!("digest: {digest}")), "{out}");
    // Pushing again uploads nothing.
    let again = a.hullctl_ok(&["push", &name]);
    assert!(
        !again.contains("Pushed\n") && again.contains("Layer already exists"),
        "{again}"
    );

    // A fresh root pulls the same digests back and runs it.
    let b = Daemon::start_with_config("push-b", &config_for(&certs)).await;
    b.hullctl_ok(&["pull", "-q", &name]);
    let listed = b.ctr_ok(&["images", "ls"]);
    assert!(listed.contains(&digest), "{listed}");
    assert_eq!(
        b.ctr_ok(&[
            "run",
            "--rm",
            &name,
            "pushed",
            "cat",
            "/committed.txt",
            "/hello"
        ]),
        "made here\nbase layer\n"
    );
    // tag: another name for the same image, pushed under that name.
    let tagged = format!("{}/team/tagged:2", reg.host);
    a.hullctl_ok(&["tag", &name, &tagged]);
    a.hullctl_ok(&["push", "-q", &tagged]);
    b.hullctl_ok(&["pull", "-q", &tagged]);
    assert!(b
        .ctr_ok(&["images", "ls"])
        .lines()
        .any(|l| l.starts_with(&tagged) && l.contains(&digest)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pulls_at_once_share_one_download_and_an_unknown_tag_is_not_found() {
    if !is_root() || !have_registry_tools() {
        return;
    }
    use std::sync::atomic::Ordering;
    let Proxied {
        proxy,
        d,
        reg,
        name,
        small,
        big,
        _tmp,
    } = proxied("pull-shared", 8 << 20).await;
    let (_, (_, big_len)) = (small, big);
    proxy.behaviour.rate.store(8 << 20, Ordering::SeqCst);
    let spawn = || {
        d.hullctl()
            .args(["pull", "-q", &name])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("hullctl")
    };
    let (a, b) = (spawn(), spawn());
    for p in [a, b] {
        let out = p.wait_with_output().expect("wait");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // One copy of the big layer (plus the small one and documents), not two.
    let served = proxy.served();
    assert!(
        served < (big_len as u64) * 3 / 2,
        "served {served} bytes for two pulls of a {big_len}-byte layer"
    );
    assert_eq!(
        d.ctr_ok(&["run", "--rm", &name, "shared", "cat", "/hello"]),
        "resumed\n"
    );

    let out = d.hullctl_run(&["pull", &format!("{}/two:nope", reg.host)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("two:nope: not found"), "{err}");
    let out = d.hullctl_run(&["pull", "UPPER CASE"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid reference"));
}
