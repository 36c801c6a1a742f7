//! hull-bench: the same client load against hulld and, when it is
//! installed, containerd, each on a temporary root; prints a table with
//! the ratio hull/containerd for each measure.
//!
//! Run from a release build: `cargo build --release --workspace --bins &&
//! target/release/hull-bench`. `--quick` shrinks the workloads for a smoke
//! run; `--tasks` runs the container lifecycle measures instead, `--cli`
//! what hullctl adds over ctr on the same hulld, `--pull`
//! the pull from a local registry, `--cri` pods through CRI.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

mod cli;
mod cri;
mod pull;
mod tasks;

use hull_client::Client;
use hull_proto::containerd::services::content::v1::{WriteAction, WriteContentRequest};
use hull_proto::containerd::services::images::v1::{CreateImageRequest, Image, ListImagesRequest};
use hull_proto::containerd::services::leases::v1::CreateRequest;
use hull_proto::containerd::types::Descriptor;

struct Sizes {
    big_mib: usize,
    small_count: usize,
    images: usize,
    cycles: usize,
}

/// A daemon under test.
struct Server {
    child: Child,
    address: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        // A child we spawned and have not reaped.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().context("exe dir")?.join(name);
    if !p.exists() {
        bail!(
            "{} not built (cargo build --release --workspace --bins)",
            p.display()
        );
    }
    Ok(p)
}

async fn wait_ready(address: &Path, child: &mut Child) -> Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(c) = Client::connect(address).await {
            if c.version().version(()).await.is_ok() {
                return Ok(c.with_namespace("bench"));
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("server exited: {status}");
        }
        if Instant::now() > deadline {
            bail!("server did not come up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn start_hulld() -> Result<(Server, Client)> {
    start_hulld_with("").await
}

/// hulld on a fresh root with `config` as its config file.
async fn start_hulld_with(config: &str) -> Result<(Server, Client)> {
    let dir = tempfile::Builder::new().prefix("hull-bench-").tempdir()?;
    let address = dir.path().join("hull.sock");
    std::fs::write(dir.path().join("config.toml"), config)?;
    let mut child = Command::new(sibling("hulld")?)
        .arg("--config")
        .arg(dir.path().join("config.toml"))
        .arg("--root")
        .arg(dir.path().join("root"))
        .arg("--state")
        .arg(dir.path().join("state"))
        .arg("--address")
        .arg(&address)
        .arg("--log-level")
        .arg(std::env::var("HULL_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()?;
    let client = wait_ready(&address, &mut child).await?;
    Ok((
        Server {
            child,
            address,
            _dir: dir,
        },
        client,
    ))
}

async fn start_containerd() -> Result<Option<(Server, Client)>> {
    let Ok(bin) = which("containerd") else {
        return Ok(None);
    };
    let dir = tempfile::Builder::new()
        .prefix("containerd-bench-")
        .tempdir()?;
    let d = dir.path();
    let address = d.join("containerd.sock");
    // A private root, state and socket; CRI off (it needs a CNI setup and
    // is not part of what is measured).
    let config = format!(
        "version = 2\nroot = {root:?}\nstate = {state:?}\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = {sock:?}\n[ttrpc]\n  address = {ttrpc:?}\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = {opt:?}\n",
        root = d.join("root"),
        state = d.join("state"),
        sock = address,
        ttrpc = d.join("containerd.sock.ttrpc"),
        opt = d.join("opt"),
    );
    std::fs::write(d.join("config.toml"), config)?;
    let mut child = Command::new(bin)
        .arg("--config")
        .arg(d.join("config.toml"))
        .arg("--log-level")
        .arg("warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let client = wait_ready(&address, &mut child).await?;
    Ok(Some((
        Server {
            child,
            address,
            _dir: dir,
        },
        client,
    )))
}

fn which(name: &str) -> Result<PathBuf> {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let p = Path::new(dir).join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    bail!("{name} not on PATH")
}

fn digest_of(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Writes one blob with digest `expected` through a `Write` stream, `chunk`
/// bytes per message, waiting for each reply as containerd's client does.
async fn write(client: &Client, r: &str, data: &[u8], expected: &str, chunk: usize) -> Result<()> {
    let (tx, rx) = mpsc::channel(8);
    let mut content = client.content();
    let expected = expected.to_owned();
    tx.send(WriteContentRequest {
        action: WriteAction::Stat as i32,
        r#ref: r.to_owned(),
        total: data.len() as i64,
        expected: expected.clone(),
        ..Default::default()
    })
    .await?;
    let mut resp = content.write(ReceiverStream::new(rx)).await?.into_inner();
    resp.message().await?;
    let mut offset = 0usize;
    let chunks: Vec<&[u8]> = data.chunks(chunk).collect();
    let last = chunks.len().saturating_sub(1);
    for (i, c) in chunks.into_iter().enumerate() {
        let commit = i == last;
        tx.send(WriteContentRequest {
            action: if commit {
                WriteAction::Commit
            } else {
                WriteAction::Write
            } as i32,
            offset: offset as i64,
            data: c.to_vec(),
            total: data.len() as i64,
            expected: if commit {
                expected.clone()
            } else {
                String::new()
            },
            ..Default::default()
        })
        .await?;
        offset += c.len();
        resp.message().await?;
    }
    Ok(())
}

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

struct Results(HashMap<&'static str, f64>);

fn median(runs: &[Results]) -> Results {
    let mut out = HashMap::new();
    for (name, _) in ORDER {
        let mut v: Vec<f64> = runs.iter().filter_map(|r| r.0.get(name).copied()).collect();
        v.sort_by(f64::total_cmp);
        if !v.is_empty() {
            out.insert(*name, v[v.len() / 2]);
        }
    }
    Results(out)
}

async fn run(server: &Server, client: &Client, sizes: &Sizes, seed: u64) -> Result<Results> {
    let mut r = HashMap::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.insert("idle RSS at start (MiB)", server.rss_kib() as f64 / 1024.0);

    let big = pseudo_random(sizes.big_mib << 20, seed);
    // The client's own hashing is not the daemon's work: keep it out.
    let big_digest = digest_of(&big);
    let t = Instant::now();
    write(client, "big", &big, &big_digest, 1 << 20)
        .await
        .context("big blob")?;
    r.insert(
        "large blob write (MB/s)",
        big.len() as f64 / 1e6 / t.elapsed().as_secs_f64(),
    );
    drop(big);

    client
        .leases()
        .create(CreateRequest {
            id: "bench".into(),
            labels: Default::default(),
        })
        .await?;
    let leased = client.with_lease("bench");
    let blobs: Vec<(Vec<u8>, String)> = (0..sizes.small_count)
        .map(|i| {
            let b = pseudo_random(4096, seed ^ (i as u64 + 1));
            let d = digest_of(&b);
            (b, d)
        })
        .collect();
    let t = Instant::now();
    for (i, (b, d)) in blobs.iter().enumerate().take(sizes.small_count / 2) {
        write(&leased, &format!("s{i}"), b, d, 1 << 20)
            .await
            .context("small blob")?;
    }
    r.insert(
        "4 KiB blobs, 1 client (blobs/s)",
        (sizes.small_count / 2) as f64 / t.elapsed().as_secs_f64(),
    );
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let per = sizes.small_count / 2 / 16;
    for w in 0..16 {
        let c = leased.clone();
        let mine: Vec<(Vec<u8>, String)> =
            blobs[sizes.small_count / 2 + w * per..sizes.small_count / 2 + (w + 1) * per].to_vec();
        tasks.spawn(async move {
            for (i, (b, d)) in mine.iter().enumerate() {
                write(&c, &format!("c{w}-{i}"), b, d, 1 << 20).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(res) = tasks.join_next().await {
        res??;
    }
    r.insert(
        "4 KiB blobs, 16 clients (blobs/s)",
        (per * 16) as f64 / t.elapsed().as_secs_f64(),
    );

    let target = Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: blobs[0].1.clone(),
        size: 4096,
        annotations: Default::default(),
    };
    for i in 0..sizes.images {
        client
            .images()
            .create(CreateImageRequest {
                image: Some(Image {
                    name: format!("registry.example/bench/image-{i}:latest"),
                    labels: [("bench".to_string(), i.to_string())].into(),
                    target: Some(target.clone()),
                    ..Default::default()
                }),
            })
            .await?;
    }
    let mut times = Vec::new();
    for _ in 0..11 {
        let t = Instant::now();
        let n = client
            .images()
            .list(ListImagesRequest::default())
            .await?
            .into_inner()
            .images
            .len();
        times.push(t.elapsed().as_secs_f64() * 1e3);
        if n != sizes.images {
            bail!("listed {n} images, expected {}", sizes.images);
        }
    }
    times.sort_by(f64::total_cmp);
    r.insert("List of images, median (ms)", times[times.len() / 2]);

    tokio::time::sleep(Duration::from_millis(1000)).await;
    r.insert(
        "idle RSS after load (MiB)",
        server.rss_kib() as f64 / 1024.0,
    );
    Ok(Results(r))
}

/// Builds a 3-layer gzip OCI image from host directories; returns the
/// archive path and its size on disk.
fn build_image(dir: &Path) -> Result<(PathBuf, u64)> {
    let sources: Vec<PathBuf> = ["/usr/lib/python3.11", "/usr/lib/gcc", "/usr/share/doc"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .collect();
    let mut layers = Vec::new();
    let mut diff_ids = Vec::new();
    for src in &sources {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let mut hashing = HashWriter {
            inner: &mut gz,
            hasher: Sha256::new(),
        };
        {
            let mut t = tar::Builder::new(&mut hashing);
            t.follow_symlinks(false);
            let name = src.strip_prefix("/").unwrap_or(src);
            t.append_dir_all(name, src)?;
            t.finish()?;
        }
        diff_ids.push(format!("sha256:{:x}", hashing.hasher.finalize()));
        layers.push(gz.finish()?);
    }
    // The largest layer alone, for the physical floor of an unpack.
    if let Some(largest) = layers.iter().max_by_key(|l| l.len()) {
        std::fs::write(dir.join(LARGEST_LAYER), largest)?;
    }
    let path = dir.join("bench-image.tar");
    hull_tests::image::write_oci_gzip_layers(&path, layers, diff_ids, "bench.local/unpack:1");
    let size = std::fs::metadata(&path)?.len();
    Ok((path, size))
}

struct HashWriter<'a, W: std::io::Write> {
    inner: &'a mut W,
    hasher: Sha256,
}

impl<W: std::io::Write> std::io::Write for HashWriter<'_, W> {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(b)?;
        self.hasher.update(&b[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Where [`build_image`] leaves the image's largest layer (gzip tar).
const LARGEST_LAYER: &str = "largest-layer.tar.gz";

/// The physical floor of an unpack: `tar -xzf` of the image's largest
/// layer alone onto the same disk, wall time, after earlier writeback.
fn tar_floor(work: &Path) -> Result<f64> {
    let dest = tempfile::Builder::new()
        .prefix("hull-bench-floor-")
        .tempdir()?;
    nix::unistd::sync();
    let t = Instant::now();
    let out = Command::new("tar")
        .arg("-xzf")
        .arg(work.join(LARGEST_LAYER))
        .arg("-C")
        .arg(dest.path())
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("tar -x failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(secs)
}

/// `ctr images import` (unpack on) of `image` into `server`, wall time.
fn import_time(server: &Server, image: &Path) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&server.address)
        .args(["--namespace", "bench", "images", "import"])
        .arg(image)
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("import failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(secs)
}

/// Prepare+commit+remove cycles per second from `clients` clients.
async fn snapshot_cycles(client: &Client, clients: usize, per_client: usize) -> Result<f64> {
    use hull_proto::containerd::services::snapshots::v1::{
        CommitSnapshotRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
    };
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..clients {
        let c = client.clone();
        tasks.spawn(async move {
            for i in 0..per_client {
                let (key, name) = (
                    format!("cyc-{clients}-{w}-{i}"),
                    format!("cyc-{clients}-{w}-{i}-c"),
                );
                let mut s = c.snapshots();
                s.prepare(PrepareSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: key.clone(),
                    parent: String::new(),
                    labels: [("containerd.io/gc.root".to_string(), "bench".to_string())].into(),
                })
                .await?;
                s.commit(CommitSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    name: name.clone(),
                    key,
                    // Unheld snapshots are garbage to containerd's GC.
                    labels: [("containerd.io/gc.root".to_string(), "bench".to_string())].into(),
                })
                .await?;
                s.remove(RemoveSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key: name,
                })
                .await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok((clients * per_client) as f64 / t.elapsed().as_secs_f64())
}

async fn run_snapshots(
    server: &Server,
    client: &Client,
    sizes: &Sizes,
    image: &Path,
) -> Result<Results> {
    let mut r = HashMap::new();
    nix::unistd::sync();
    r.insert("import+unpack 3 layers (s)", import_time(server, image)?);
    r.insert(
        "prepare+commit+remove, 1 client (/s)",
        snapshot_cycles(client, 1, sizes.cycles).await?,
    );
    r.insert(
        "prepare+commit+remove, 16 clients (/s)",
        snapshot_cycles(client, 16, sizes.cycles / 16).await?,
    );
    Ok(Results(r))
}

const ORDER: &[(&str, bool)] = &[
    ("import+unpack 3 layers (s)", false),
    ("prepare+commit+remove, 1 client (/s)", true),
    ("prepare+commit+remove, 16 clients (/s)", true),
    ("large blob write (MB/s)", true),
    ("4 KiB blobs, 1 client (blobs/s)", true),
    ("4 KiB blobs, 16 clients (blobs/s)", true),
    ("List of images, median (ms)", false),
    ("idle RSS at start (MiB)", false),
    ("idle RSS after load (MiB)", false),
];

/// `--tasks`: the container lifecycle measures alone.
async fn main_tasks(quick: bool) -> Result<()> {
    let runs = if quick { 5 } else { 20 };
    let work = tempfile::Builder::new()
        .prefix("hull-bench-tasks-")
        .tempdir()?;
    let image = tasks::build_image(work.path());
    let (hull, _hc) = start_hulld().await?;
    let h = tasks::measure(&hull.address, hull.child.id(), &image, runs)?;
    let bare = tasks::bare_runc(&hull.address, work.path(), runs)?;
    drop(hull);
    let c = match start_containerd().await? {
        Some((ctd, _cc)) => Some(tasks::measure(&ctd.address, ctd.child.id(), &image, runs)?),
        None => None,
    };
    // runc leaves the namespace level of the cgroup tree behind.
    hull_tests::daemon::remove_ns_cgroups("bench");
    println!("container lifecycle, median of {runs} where repeated");
    println!(
        "{:<44} {:>10} {:>12} {:>11}",
        "measure", "hulld", "containerd", "hull/ctrd"
    );
    let row = |name: &str, h: f64, c: Option<f64>| match c {
        Some(c) => println!("{name:<44} {h:>10.3} {c:>12.3} {:>11.2}", h / c),
        None => println!("{name:<44} {h:>10.3} {:>12} {:>11}", "-", "-"),
    };
    row(
        "ctr run --rm /bin/true (s)",
        h.run_rm,
        c.as_ref().map(|c| c.run_rm),
    );
    row(
        "  ctr version (s)",
        h.ctr_version,
        c.as_ref().map(|c| c.ctr_version),
    );
    println!(
        "{:<44} {:>10.3}   (by hand, the same for both)",
        "  runc create+start+delete (s)", bare.create_start_delete
    );
    // What the daemon and its shim add to the client's and the runtime's
    // own time.
    let overhead = |r: &tasks::TaskResults| r.run_rm - r.ctr_version - bare.create_start_delete;
    row(
        "  daemon overhead: run - version - runc (s)",
        overhead(&h),
        c.as_ref().map(overhead),
    );
    println!(
        "{:<44} {:>10.3}   (hull/runc {:.2})",
        "bare runc run /bin/true (s)",
        bare.run,
        h.run_rm / bare.run
    );
    row(
        "daemon RSS, 20 containers running (MiB)",
        h.daemon_rss,
        c.as_ref().map(|c| c.daemon_rss),
    );
    row(
        "shim RSS, median of 20 (MiB)",
        h.shim_rss,
        c.as_ref().map(|c| c.shim_rss),
    );
    row(
        "shim PSS, median of 20 (MiB)",
        h.shim_pss,
        c.as_ref().map(|c| c.shim_pss),
    );
    row(
        "100 containers, 10 clients (s)",
        h.start_100,
        c.as_ref().map(|c| c.start_100),
    );
    Ok(())
}

/// `--cli`: what hullctl adds over ctr on the same hulld.
async fn main_cli(quick: bool) -> Result<()> {
    let runs = if quick { 5 } else { 20 };
    let work = tempfile::Builder::new()
        .prefix("hull-bench-cli-")
        .tempdir()?;
    let image = tasks::build_image(work.path());
    let (hull, _hc) = start_hulld().await?;
    let address = hull.address.clone();
    let hullctl = sibling("hullctl")?;
    let r = tokio::task::spawn_blocking(move || cli::measure(&hullctl, &address, &image, runs))
        .await??;
    drop(hull);
    hull_tests::daemon::remove_ns_cgroups("bench");
    println!("hullctl on hulld, median of {runs} (version: of 30, ps: of 10)");
    println!(
        "{:<52} {:>10} {:>10} {:>8}",
        "measure", "hullctl", "ctr", "ratio"
    );
    let row =
        |name: &str, h: f64, c: f64| println!("{name:<52} {h:>10.4} {c:>10.4} {:>8.2}", h / c);
    row(
        "run --rm /bin/true, --network none (s)",
        r.hullctl_run_none,
        r.ctr_run,
    );
    row(
        "run --rm /bin/true, default bridge (s)",
        r.hullctl_run_bridge,
        r.ctr_run,
    );
    row(
        "version: start-up and one call (s)",
        r.hullctl_version,
        r.ctr_version,
    );
    row(
        "ps -a / containers ls, 100 containers (s)",
        r.ps_100,
        r.ctr_ls_100,
    );
    println!(
        "{:<52} {:>10.3}",
        "100 x create --network none (s)", r.create_100
    );
    Ok(())
}

/// One client's durable mutations per second, on a fresh daemon: 4 KiB
/// blob commits (under a lease) and snapshot prepare+commit+remove cycles.
async fn mutations(client: &Client, blobs: usize, cycles: usize, seed: u64) -> Result<(f64, f64)> {
    let lease = format!("bench-{seed}");
    client
        .leases()
        .create(CreateRequest {
            id: lease.clone(),
            labels: Default::default(),
        })
        .await?;
    let leased = client.with_lease(&lease);
    let data: Vec<(Vec<u8>, String)> = (0..blobs)
        .map(|i| {
            let b = pseudo_random(4096, seed.wrapping_mul(1_000_003) ^ (i as u64 + 1));
            let d = digest_of(&b);
            (b, d)
        })
        .collect();
    let t = Instant::now();
    for (i, (b, d)) in data.iter().enumerate() {
        write(&leased, &format!("m{seed}-{i}"), b, d, 1 << 20).await?;
    }
    let blob_rate = blobs as f64 / t.elapsed().as_secs_f64();
    let cycle_rate = snapshot_cycles(client, 1, cycles).await?;
    Ok((blob_rate, cycle_rate))
}

/// `--mutations`: the durable-mutation rates alone, alternating daemons,
/// with median and spread.
async fn main_mutations(quick: bool) -> Result<()> {
    let (rounds, blobs, cycles) = if quick { (1, 200, 100) } else { (5, 1000, 500) };
    let mut h = (Vec::new(), Vec::new());
    let mut c = (Vec::new(), Vec::new());
    for round in 0..rounds {
        for hull_first in [round % 2 == 0, round % 2 == 1] {
            nix::unistd::sync();
            let seed = round as u64 + 1;
            if hull_first {
                let (_s, client) = start_hulld().await?;
                let (b, y) = mutations(&client, blobs, cycles, seed).await?;
                h.0.push(b);
                h.1.push(y);
            } else if let Some((_s, client)) = start_containerd().await? {
                let (b, y) = mutations(&client, blobs, cycles, seed).await?;
                c.0.push(b);
                c.1.push(y);
            }
        }
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        (v[v.len() / 2], v[0], v[v.len() - 1])
    };
    println!("durable mutations from one client, {rounds} round(s), median [min-max]");
    println!(
        "{:<36} {:>22} {:>22} {:>9}",
        "measure", "hulld", "containerd", "hull/ctrd"
    );
    for (name, hv, cv) in [
        ("4 KiB blob commits (/s)", &mut h.0, &mut c.0),
        ("prepare+commit+remove (/s)", &mut h.1, &mut c.1),
    ] {
        let (hm, hl, hh) = stats(hv);
        if cv.is_empty() {
            println!("{name:<36} {hm:>8.0} [{hl:>5.0}-{hh:>5.0}]");
            continue;
        }
        let (cm, cl, ch) = stats(cv);
        println!(
            "{name:<36} {hm:>8.0} [{hl:>5.0}-{hh:>5.0}] {cm:>8.0} [{cl:>5.0}-{ch:>5.0}] {:>9.2}",
            hm / cm
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--cli") {
        return main_cli(quick).await;
    }
    if std::env::args().any(|a| a == "--cri") {
        return cri::main_cri(quick).await;
    }
    if std::env::args().any(|a| a == "--tasks") {
        return main_tasks(quick).await;
    }
    if std::env::args().any(|a| a == "--mutations") {
        return main_mutations(quick).await;
    }
    if std::env::args().any(|a| a == "--pull") {
        let work = tempfile::Builder::new()
            .prefix("hull-bench-image-")
            .tempdir()?;
        let (image, image_size) = build_image(work.path())?;
        eprintln!("bench image: {} MB compressed", image_size / 1_000_000);
        return pull::main_pull(&image, if quick { 1 } else { 3 }).await;
    }
    let sizes = if quick {
        Sizes {
            big_mib: 64,
            small_count: 320,
            images: 100,
            cycles: 32,
        }
    } else {
        Sizes {
            big_mib: 512,
            small_count: 4000,
            images: 1000,
            cycles: 320,
        }
    };
    let rounds: usize = if quick { 1 } else { 3 };
    let work = tempfile::Builder::new()
        .prefix("hull-bench-image-")
        .tempdir()?;
    let (image, image_size) = build_image(work.path())?;
    eprintln!("bench image: {} MB compressed", image_size / 1_000_000);
    let have_containerd = which("containerd").is_ok();
    if !have_containerd {
        eprintln!("containerd not installed: hull numbers only");
    }
    let mut hull_runs = Vec::new();
    let mut ctd_runs = Vec::new();
    // Alternate which daemon goes first, and let earlier writeback settle,
    // so that neither inherits the other's disk load.
    for round in 0..rounds {
        for first in [round % 2 == 0, round % 2 == 1] {
            nix::unistd::sync();
            if first {
                let (hull, hc) = start_hulld().await?;
                let mut r = run(&hull, &hc, &sizes, round as u64 + 1).await?;
                r.0.extend(run_snapshots(&hull, &hc, &sizes, &image).await?.0);
                hull_runs.push(r);
            } else if have_containerd {
                if let Some((s, c)) = start_containerd().await? {
                    let mut r = run(&s, &c, &sizes, round as u64 + 1).await?;
                    r.0.extend(run_snapshots(&s, &c, &sizes, &image).await?.0);
                    ctd_runs.push(r);
                }
            }
        }
    }
    let mut floors = Vec::new();
    for _ in 0..rounds {
        floors.push(tar_floor(work.path())?);
    }
    floors.sort_by(f64::total_cmp);
    let floor = floors[floors.len() / 2];
    let hull_r = median(&hull_runs);
    let ctd = (!ctd_runs.is_empty()).then(|| median(&ctd_runs));
    println!("{rounds} round(s) each, medians");
    println!(
        "{:<36} {:>12} {:>12} {:>14}",
        "measure", "hulld", "containerd", "hull/ctrd"
    );
    for (name, higher_better) in ORDER {
        let h = hull_r.0.get(name).copied().unwrap_or(f64::NAN);
        match &ctd {
            Some(c) => {
                let c = c.0.get(name).copied().unwrap_or(f64::NAN);
                let note = if *higher_better {
                    "higher is better"
                } else {
                    "lower is better"
                };
                println!("{name:<36} {h:>12.2} {c:>12.2} {:>14.2}  ({note})", h / c);
            }
            None => println!("{name:<36} {h:>12.2} {:>12} {:>14}", "-", "-"),
        }
    }
    let import = |r: &Results| r.0.get("import+unpack 3 layers (s)").copied();
    println!(
        "{:<36} {floor:>12.2}   (import/floor: hull {:.2}, containerd {})",
        "  tar -xzf largest layer alone (s)",
        import(&hull_r).unwrap_or(f64::NAN) / floor,
        ctd.as_ref()
            .and_then(import)
            .map(|c| format!("{:.2}", c / floor))
            .unwrap_or_else(|| "-".into()),
    );
    Ok(())
}
