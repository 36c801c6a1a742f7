//! The built-in pause process: holds on until SIGTERM (or SIGINT), then
//! exits 0; as PID 1 of a PID namespace it reaps the orphans it inherits.

use std::process::Command;
use std::time::{Duration, Instant};

fn wait(child: &mut std::process::Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[test]
fn pause_waits_for_a_signal_and_exits_cleanly() {
    let bin = env!("CARGO_BIN_EXE_hull-shim");
    for sig in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
    ] {
        let mut child = Command::new(bin).arg("pause").spawn().expect("start pause");
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "pause stays up"
        );
        // A child this test started.
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), sig).expect("signal");
        let status = wait(&mut child, Duration::from_secs(5)).expect("exits");
        assert!(status.success(), "{sig:?}: {status}");
    }
}

#[test]
fn as_pid_1_it_reaps_orphans_and_stops_on_sigterm() {
    if !nix::unistd::geteuid().is_root()
        || Command::new("unshare").arg("--version").output().is_err()
    {
        eprintln!("skipped: needs root and unshare");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_hull-shim");
    // pause as PID 1 of a new PID namespace (unshare forks it).
    let mut unshare = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", bin, "pause"])
        .spawn()
        .expect("unshare");
    let children = format!("/proc/{}/task/{}/children", unshare.id(), unshare.id());
    let mut pause = 0;
    for _ in 0..200 {
        if let Some(p) = std::fs::read_to_string(&children).ok().and_then(|c| {
            c.split_whitespace()
                .next()
                .and_then(|p| p.parse::<i32>().ok())
        }) {
            pause = p;
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(pause > 1, "pause started");
    // An orphan handed to the namespace's init: a shell that exits before
    // its background child.
    let st = Command::new("nsenter")
        .args([
            "-t",
            &pause.to_string(),
            "-p",
            "--",
            "sh",
            "-c",
            "(sleep 0.2 &); true",
        ])
        .status()
        .expect("nsenter");
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(800));
    let zombies: Vec<String> = std::fs::read_dir("/proc")
        .expect("proc")
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let rest = stat.rsplit_once(')').map(|r| r.1).unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.first() == Some(&"Z") && f.get(1) == Some(&pause.to_string().as_str())
        })
        .collect();
    // SIGTERM reaches a PID namespace's init (blocked and waited for).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pause),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    let status = wait(&mut unshare, Duration::from_secs(5));
    if status.is_none() {
        // A process this test started.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pause),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = unshare.wait();
    }
    assert!(zombies.is_empty(), "orphans are reaped: {zombies:?}");
    assert!(status.expect("pause stops on SIGTERM as PID 1").success());
}
