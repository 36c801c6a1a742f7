//! Container lifecycle measures: `ctr run --rm` latency (against bare
//! `runc run` of the same bundle too), daemon and shim memory with 20
//! containers running, and 100 containers started by 10 concurrent clients.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};

use hull_tests::image::{busybox_layer, write_oci_layers};

/// The image every measure runs.
pub const IMAGE: &str = "docker.io/hull/bench-busybox:1";

/// Writes the busybox image archive.
pub fn build_image(dir: &Path) -> PathBuf {
    let tar = dir.join("busybox.tar");
    write_oci_layers(&tar, &[busybox_layer(&BTreeMap::new())], IMAGE);
    tar
}

fn ctr(address: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(address)
        .args(["--namespace", "bench"])
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        bail!("ctr {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The middle value (the upper one of an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Proportional set size: shared pages (the shim binary, libc) divided
/// among the processes mapping them.
pub(crate) fn pss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Pids of the shims serving containers of this daemon, found by the
/// `-address` they were started with (a whole argument: hulld's own
/// `--address` does not count).
pub(crate) fn shim_pids(address: &Path) -> Vec<u32> {
    let needle = format!("\0-address\0{}\0", address.display());
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd);
        if cmd.contains(&needle) && !cmd.ends_with("start\0") {
            out.push(pid);
        }
    }
    out
}

/// What one daemon measured.
pub struct TaskResults {
    /// Median wall time of `ctr run --rm IMAGE id /bin/true`, seconds.
    pub run_rm: f64,
    /// Median wall time of `ctr version` against the daemon, seconds.
    pub ctr_version: f64,
    /// Daemon RSS with 20 containers running, MiB.
    pub daemon_rss: f64,
    /// Median shim RSS with 20 containers running, MiB.
    pub shim_rss: f64,
    /// Median shim PSS with 20 containers running, MiB.
    pub shim_pss: f64,
    /// 100 containers started by 10 concurrent clients, seconds.
    pub start_100: f64,
}

fn remove_all(address: &Path, ids: &[String]) -> Result<()> {
    for id in ids {
        // Already stopped is fine: kill reports NotFound then.
        let _ = ctr(address, &["tasks", "kill", "-s", "SIGKILL", id]);
    }
    for id in ids {
        let deadline = Instant::now() + std::time::Duration::from_secs(20);
        while ctr(address, &["tasks", "rm", id]).is_err() && Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    for chunk in ids.chunks(50) {
        let mut args = vec!["containers", "rm"];
        args.extend(chunk.iter().map(String::as_str));
        ctr(address, &args)?;
    }
    Ok(())
}

/// Runs every lifecycle measure against the daemon at `address`.
pub fn measure(address: &Path, daemon_pid: u32, image: &Path, runs: usize) -> Result<TaskResults> {
    ctr(
        address,
        &["images", "import", image.to_str().context("path")?],
    )?;
    // One untimed run warms caches and the shim binary.
    ctr(address, &["run", "--rm", IMAGE, "warm", "/bin/true"])?;
    let mut times = Vec::new();
    for i in 0..runs {
        let id = format!("rm{i}");
        let t = Instant::now();
        ctr(address, &["run", "--rm", IMAGE, &id, "/bin/true"])?;
        times.push(t.elapsed().as_secs_f64());
    }
    let run_rm = median(times);
    // What ctr itself costs: its start-up and one call.
    let mut times = Vec::new();
    for _ in 0..runs {
        let t = Instant::now();
        ctr(address, &["version"])?;
        times.push(t.elapsed().as_secs_f64());
    }
    let ctr_version = median(times);

    let ids: Vec<String> = (0..20).map(|i| format!("idle{i}")).collect();
    for id in &ids {
        ctr(address, &["run", "-d", IMAGE, id, "sleep", "600"])?;
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let daemon_rss = rss_kib(daemon_pid) as f64 / 1024.0;
    let pids = shim_pids(address);
    let mut shims: Vec<f64> = pids.iter().map(|p| rss_kib(*p) as f64 / 1024.0).collect();
    let mut pss: Vec<f64> = pids.iter().map(|p| pss_kib(*p) as f64 / 1024.0).collect();
    if shims.is_empty() {
        shims.push(f64::NAN);
        pss.push(f64::NAN);
    }
    let shim_rss = median(shims);
    let shim_pss = median(pss);
    remove_all(address, &ids)?;

    let t = Instant::now();
    let workers: Vec<_> = (0..10)
        .map(|w| {
            let address = address.to_owned();
            std::thread::spawn(move || -> Result<()> {
                for i in 0..10 {
                    ctr(
                        &address,
                        &["run", "-d", IMAGE, &format!("many{w}-{i}"), "sleep", "600"],
                    )?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("client thread panicked"))??;
    }
    let start_100 = t.elapsed().as_secs_f64();
    let ids: Vec<String> = (0..10)
        .flat_map(|w| (0..10).map(move |i| format!("many{w}-{i}")))
        .collect();
    remove_all(address, &ids)?;
    Ok(TaskResults {
        run_rm,
        ctr_version,
        daemon_rss,
        shim_rss,
        shim_pss,
        start_100,
    })
}

/// The OCI runtime's own cost of a container's life, timed by hand.
pub struct BareRunc {
    /// Median of `runc create` + `runc start` + `runc delete` of one
    /// container, seconds.
    pub create_start_delete: f64,
    /// Median of `runc run` (all three in one process), seconds.
    pub run: f64,
}

/// Times runc by hand on a bundle holding the image's root (mounted
/// through `address`) and `/bin/true`: three calls per container as a
/// shim makes them, and `runc run` doing all in one.
pub fn bare_runc(address: &Path, work: &Path, runs: usize) -> Result<BareRunc> {
    let bundle = work.join("runc-bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(&rootfs)?;
    ctr(
        address,
        &[
            "images",
            "mount",
            "--rw",
            IMAGE,
            rootfs.to_str().context("path")?,
        ],
    )?;
    // containerd's default spec, as `ctr oci spec` prints it.
    let mut spec = hull_oci::spec::default_spec("bench", "bare-runc")?;
    let mut process = spec.process().clone().context("process")?;
    process.set_args(Some(vec!["/bin/true".to_owned()]));
    process.set_terminal(Some(false));
    spec.set_process(Some(process));
    std::fs::write(bundle.join("config.json"), serde_json::to_vec(&spec)?)?;
    let root = work.join("runc-root");
    let result = (|| -> Result<BareRunc> {
        let runc = |args: &[&str]| -> Result<f64> {
            let t = Instant::now();
            let status = Command::new("runc")
                .arg("--root")
                .arg(&root)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("runc {args:?} failed: {status}");
            }
            Ok(t.elapsed().as_secs_f64())
        };
        let bundle = bundle.to_str().context("path")?;
        let mut three = Vec::new();
        let mut run = Vec::new();
        for i in 0..=runs {
            let id = format!("bare{i}");
            let pid_file = work.join(format!("{id}.pid"));
            let pid_arg = pid_file.to_str().context("path")?;
            let create = runc(&["create", "--bundle", bundle, "--pid-file", pid_arg, &id])?;
            let pid = std::fs::read_to_string(&pid_file)?;
            let start = runc(&["start", &id])?;
            // Not timed: waiting for /bin/true to end, as a client would.
            let proc_dir = PathBuf::from(format!("/proc/{}", pid.trim()));
            let deadline = Instant::now() + std::time::Duration::from_secs(10);
            while proc_dir.exists() && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            let delete = runc(&["delete", &id])?;
            let whole = runc(&["run", "--bundle", bundle, &format!("{id}r")])?;
            // The first round warms caches, as for the daemons.
            if i > 0 {
                three.push(create + start + delete);
                run.push(whole);
            }
        }
        Ok(BareRunc {
            create_start_delete: median(three),
            run: median(run),
        })
    })();
    ctr(
        address,
        &[
            "images",
            "unmount",
            "--rm",
            rootfs.to_str().context("path")?,
        ],
    )?;
    result
}
