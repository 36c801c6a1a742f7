//! hull-shim entry point.

use std::io::Write;
use std::os::fd::FromRawFd;
use std::process::ExitCode;
use std::time::Duration;

use hull_shim::start::{self, Action, Args, LISTENER_FD};

fn main() -> ExitCode {
    let argv0 = std::env::args().next().unwrap_or_default();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if hull_shim::pause::wanted(&argv0, &argv) {
        return ExitCode::from(hull_shim::pause::run() as u8);
    }
    if argv.first().map(String::as_str) == Some(hull_shim::native::SUBCOMMAND) {
        return ExitCode::from(hull_shim::native::init() as u8);
    }
    let args = match Args::parse(&argv) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hull-shim: {e}");
            eprintln!("usage: hull-shim -namespace NS -id ID -address SOCK [-publish-binary BIN] start|delete");
            return ExitCode::from(2);
        }
    };
    match args.action {
        Some(Action::Start) => match start::start(&args) {
            Ok(address) => {
                // The daemon reads the address from our stdout.
                let mut out = std::io::stdout();
                if out
                    .write_all(address.as_bytes())
                    .and_then(|()| out.flush())
                    .is_err()
                {
                    return ExitCode::FAILURE;
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hull-shim start: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Action::Delete) => match start::delete(&args) {
            Ok(resp) => {
                let mut out = std::io::stdout();
                if out.write_all(&resp).and_then(|()| out.flush()).is_err() {
                    return ExitCode::FAILURE;
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hull-shim delete: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Action::Serve) => serve(&args),
        None => {
            eprintln!("usage: hull-shim -namespace NS -id ID -address SOCK [-publish-binary BIN] start|delete");
            ExitCode::from(2)
        }
    }
}

fn serve(args: &Args) -> ExitCode {
    // A shim runs per container: keep it small. One malloc arena (it has
    // one async thread and a few copy threads), and a plain level filter
    // rather than an env filter, whose regex engine would be paged in.
    // SAFETY: mallopt only sets allocator parameters; no other thread
    // exists yet. It is glibc's, so nix has no wrapper for it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let level = if args.debug {
        tracing::level_filters::LevelFilter::DEBUG
    } else {
        tracing::level_filters::LevelFilter::INFO
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
        tracing::error!(cause = %e, "cannot become a subreaper");
        return ExitCode::FAILURE;
    }
    // One thread: a shim serves one container and must stay small.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(cause = %e, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let socket = args.socket_path();
    // The socket file this shim listens on: a shim started for the same
    // container after this one shut down binds a new file at the same
    // path, which this one must then leave alone.
    let own_socket = socket_inode(&socket);
    let code = rt.block_on(async {
        // SAFETY: `start` put the bound listening socket on this fd, and
        // nothing else in this process owns it. Taking ownership of an
        // inherited fd is std's unsafe conversion; nix has none safer.
        let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(LISTENER_FD) };
        if let Err(e) = std_listener.set_nonblocking(true) {
            tracing::error!(cause = %e, "listener");
            return ExitCode::FAILURE;
        }
        let listener = match tokio::net::UnixListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(cause = %e, "listener");
                return ExitCode::FAILURE;
            }
        };
        let monitor = match hull_shim::reaper::Monitor::start() {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(cause = %e, "cannot watch SIGCHLD");
                return ExitCode::FAILURE;
            }
        };
        let publisher = hull_shim::events::Publisher::start(
            args.ttrpc_address(std::env::var_os("TTRPC_ADDRESS")),
            args.namespace.clone(),
        );
        let config = hull_shim::service::ShimConfig {
            namespace: args.namespace.clone(),
            runc_root: args.runc_root(),
        };
        let service = hull_shim::service::TaskService::new(config, monitor, publisher.clone());
        tracing::info!(id = %args.id, namespace = %args.namespace, "shim serving");
        let server = hull_ttrpc::Server::new().register(service.clone());
        let svc = service.clone();
        server
            .serve(listener, async move { svc.wait_shutdown().await })
            .await;
        // No new connection may reach a shim that is going away.
        if own_socket.is_some() && socket_inode(&socket) == own_socket {
            let _ = std::fs::remove_file(&socket);
        }
        // serve returned after the Shutdown reply was written.
        publisher.flush(Duration::from_secs(2)).await;
        ExitCode::SUCCESS
    });
    if own_socket.is_some() && socket_inode(&socket) == own_socket {
        let _ = std::fs::remove_file(&socket);
    }
    // Copy threads may still block on FIFOs; they end with the process.
    rt.shutdown_timeout(Duration::from_millis(100));
    tracing::info!("shim exited");
    code
}

/// The inode of the socket file at `path`, if there is one.
fn socket_inode(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).ok().map(|m| m.ino())
}
