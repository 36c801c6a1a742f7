//! `--cli`: what hullctl adds on top of the daemon. `hullctl run --rm`
//! against `ctr run --rm` on the same hulld, the start-up of `hullctl
//! version` against `ctr version`, and `hullctl ps -a` over 100 containers.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Result};

use crate::tasks::{median, IMAGE};

fn run(cmd: &mut Command) -> Result<f64> {
    let t = Instant::now();
    let out = cmd.stdin(Stdio::null()).output()?;
    let took = t.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(took)
}

struct Tools {
    hullctl: PathBuf,
    address: PathBuf,
}

impl Tools {
    fn hullctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.hullctl);
        c.env("HULL_BRIDGE", "hbench0")
            .env("HULL_BRIDGE_SUBNET", "10.251.0.0/24")
            .arg("-a")
            .arg(&self.address)
            .args(["-n", "bench"])
            .args(args);
        c
    }

    fn ctr(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.address)
            .args(["--namespace", "bench"])
            .args(args);
        c
    }
}

/// The medians, in seconds.
pub struct CliResults {
    /// `hullctl run --rm --network none IMAGE /bin/true`.
    pub hullctl_run_none: f64,
    /// The same on the default bridge network (CNI ADD and DEL included).
    pub hullctl_run_bridge: f64,
    /// `ctr run --rm IMAGE ID /bin/true`.
    pub ctr_run: f64,
    /// `hullctl version`.
    pub hullctl_version: f64,
    /// `ctr version`.
    pub ctr_version: f64,
    /// 100 × `hullctl create`, in all.
    pub create_100: f64,
    /// `hullctl ps -a` with 100 containers.
    pub ps_100: f64,
    /// `ctr containers ls` with the same 100.
    pub ctr_ls_100: f64,
}

/// Runs the measures against the hulld at `address`.
pub fn measure(hullctl: &Path, address: &Path, image: &Path, runs: usize) -> Result<CliResults> {
    let t = Tools {
        hullctl: hullctl.to_owned(),
        address: address.to_owned(),
    };
    run(&mut t.ctr(&["images", "import", &image.to_string_lossy()]))?;
    // Untimed warm-up of both paths (shim binary, page cache, the bridge).
    run(&mut t.hullctl(&["run", "--rm", "--network", "none", IMAGE, "/bin/true"]))?;
    run(&mut t.hullctl(&["run", "--rm", IMAGE, "/bin/true"]))?;
    run(&mut t.ctr(&["run", "--rm", IMAGE, "warm", "/bin/true"]))?;
    let (mut none, mut bridge, mut ctr) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..runs {
        // Alternating, so that neither gets a quieter moment.
        none.push(run(&mut t.hullctl(&[
            "run",
            "--rm",
            "--network",
            "none",
            IMAGE,
            "/bin/true",
        ]))?);
        ctr.push(run(&mut t.ctr(&[
            "run",
            "--rm",
            IMAGE,
            &format!("c{i}"),
            "/bin/true",
        ]))?);
        bridge.push(run(&mut t.hullctl(&["run", "--rm", IMAGE, "/bin/true"]))?);
    }
    let (mut hv, mut cv) = (Vec::new(), Vec::new());
    for _ in 0..30 {
        hv.push(run(&mut t.hullctl(&["version"]))?);
        cv.push(run(&mut t.ctr(&["version"]))?);
    }
    let start = Instant::now();
    for _ in 0..100 {
        run(&mut t.hullctl(&["create", "--network", "none", IMAGE, "/bin/true"]))?;
    }
    let create_100 = start.elapsed().as_secs_f64();
    let (mut ps, mut ls) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        ps.push(run(&mut t.hullctl(&["ps", "-a"]))?);
        ls.push(run(&mut t.ctr(&["containers", "ls"]))?);
    }
    let ids = String::from_utf8_lossy(
        &t.hullctl(&["ps", "-a", "-q", "--no-trunc"])
            .output()?
            .stdout,
    )
    .into_owned();
    let ids: Vec<&str> = ids.lines().collect();
    for chunk in ids.chunks(25) {
        let mut args = vec!["rm"];
        args.extend(chunk);
        run(&mut t.hullctl(&args))?;
    }
    let _ = Command::new("ip")
        .args(["link", "delete", "hbench0"])
        .status();
    Ok(CliResults {
        hullctl_run_none: median(none),
        hullctl_run_bridge: median(bridge),
        ctr_run: median(ctr),
        hullctl_version: median(hv),
        ctr_version: median(cv),
        create_100,
        ps_100: median(ps),
        ctr_ls_100: median(ls),
    })
}
