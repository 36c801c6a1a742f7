//! `--pull`: pull with unpack of the 3-layer bench image from a local
//! docker-registry (127.0.0.1, plain HTTP): hulld's server-side pull
//! (through the Transfer API, as `hullctl pull`), `ctr images pull`
//! against hulld (client-side over content, images and diff), and `ctr
//! images pull` against containerd, each on a fresh root, alternating;
//! with the daemon's peak RSS during the pull.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use hull_client::transfer::PullOptions;
use hull_tests::registry::{hosts_toml, Registry};

use super::{start_containerd, start_hulld_with, Server};

/// Samples `pid`'s RSS every 20 ms until `done`; the peak in MiB.
fn peak_rss(
    pid: u32,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<f64> {
    std::thread::spawn(move || {
        let mut peak = 0u64;
        while !done.load(std::sync::atomic::Ordering::SeqCst) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0u64);
            peak = peak.max(kib);
            std::thread::sleep(Duration::from_millis(20));
        }
        peak as f64 / 1024.0
    })
}

fn ctr_pull(server: &Server, name: &str) -> Result<f64> {
    let t = Instant::now();
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&server.address)
        .args([
            "--namespace",
            "bench",
            "images",
            "pull",
            "--plain-http",
            name,
        ])
        .output()?;
    let secs = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("ctr pull failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(secs)
}

/// One measurement: (wall seconds, peak daemon RSS MiB).
type Sample = (f64, f64);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the pull measures `rounds` times each.
pub async fn main_pull(image: &Path, rounds: usize) -> Result<()> {
    let registry = Registry::start("");
    registry.seed_ref(
        &format!("oci-archive:{}", image.display()),
        "bench/unpack",
        "1",
        None,
        &[],
    );
    let name = format!("{}/bench/unpack:1", registry.host);
    let hosts = tempfile::Builder::new()
        .prefix("hull-bench-hosts-")
        .tempdir()?;
    hosts_toml(
        hosts.path(),
        &registry.host,
        &format!("server = \"http://{}\"\n", registry.host),
    );
    let config = format!("[registry]\nconfig_path = \"{}\"\n", hosts.path().display());
    let mut server_side: Vec<Sample> = Vec::new();
    let mut client_side: Vec<Sample> = Vec::new();
    let mut containerd: Vec<Sample> = Vec::new();
    for round in 0..rounds {
        let order: [u8; 3] = if round % 2 == 0 { [0, 1, 2] } else { [2, 1, 0] };
        for which in order {
            nix::unistd::sync();
            let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
            match which {
                0 => {
                    let (hull, client) = start_hulld_with(&config).await?;
                    let sampler = peak_rss(hull.child.id(), done.clone());
                    let t = Instant::now();
                    client
                        .with_namespace("bench")
                        .pull(
                            &name,
                            &PullOptions {
                                unpack: Some(String::new()),
                                ..Default::default()
                            },
                            |_| {},
                        )
                        .await?;
                    let secs = t.elapsed().as_secs_f64();
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                    server_side.push((secs, sampler.join().unwrap_or(0.0)));
                }
                1 => {
                    let (hull, _c) = start_hulld_with(&config).await?;
                    let sampler = peak_rss(hull.child.id(), done.clone());
                    let secs = ctr_pull(&hull, &name)?;
                    done.store(true, std::sync::atomic::Ordering::SeqCst);
                    client_side.push((secs, sampler.join().unwrap_or(0.0)));
                }
                _ => {
                    if let Some((ctd, _c)) = start_containerd().await? {
                        let sampler = peak_rss(ctd.child.id(), done.clone());
                        let secs = ctr_pull(&ctd, &name)?;
                        done.store(true, std::sync::atomic::Ordering::SeqCst);
                        containerd.push((secs, sampler.join().unwrap_or(0.0)));
                    }
                }
            }
        }
    }
    let t = |v: &[Sample]| median(v.iter().map(|s| s.0).collect());
    let m = |v: &[Sample]| median(v.iter().map(|s| s.1).collect());
    println!("pull with unpack from a local registry, {rounds} round(s), medians");
    println!(
        "{:<48} {:>10} {:>14}",
        "measure", "wall (s)", "peak RSS (MiB)"
    );
    println!(
        "{:<48} {:>10.2} {:>14.1}",
        "hulld server-side (Transfer API)",
        t(&server_side),
        m(&server_side)
    );
    println!(
        "{:<48} {:>10.2} {:>14.1}",
        "ctr images pull -> hulld (client-side)",
        t(&client_side),
        m(&client_side)
    );
    if containerd.is_empty() {
        println!("containerd not installed: no ratios");
        return Ok(());
    }
    println!(
        "{:<48} {:>10.2} {:>14.1}",
        "ctr images pull -> containerd",
        t(&containerd),
        m(&containerd)
    );
    println!(
        "hull server-side / containerd: {:.2}",
        t(&server_side) / t(&containerd)
    );
    println!(
        "ctr->hulld / ctr->containerd: {:.2}",
        t(&client_side) / t(&containerd)
    );
    Ok(())
}
