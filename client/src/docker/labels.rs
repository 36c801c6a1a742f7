//! The container labels the Docker workflow keeps its state in. hull's own
//! all start with `io.hull.`; restart policies use containerd's labels, so
//! that a restart monitor (hulld's, or containerd's) acts on them.

/// The container's name (unique within the namespace).
pub const NAME: &str = "io.hull.name";
/// Its mounts: JSON list of [`super::MountSpec`] as resolved at creation.
pub const MOUNTS: &str = "io.hull.mounts";
/// Its published ports: JSON list of [`super::PortSpec`].
pub const PORTS: &str = "io.hull.ports";
/// The network it was attached to (`bridge`, `host`, `none` or a name).
pub const NETWORK: &str = "io.hull.network";
/// The log file (current file; rotated ones carry `.1`, `.2`, …).
pub const LOG_PATH: &str = "io.hull.log-path";
/// How many log files are kept (for reading them back).
pub const LOG_MAX_FILE: &str = "io.hull.log-max-file";
/// The stdout/stderr URI every task of the container is created with.
pub const LOG_URI: &str = "io.hull.log-uri";
/// `true` when the container is removed once it exits (`run --rm`).
pub const AUTO_REMOVE: &str = "io.hull.auto-remove";
/// The signal `stop` sends first (the image's StopSignal).
pub const STOP_SIGNAL: &str = "io.hull.stop-signal";
/// `true` when the container's task keeps a stdin pipe (`-i`).
pub const STDIN: &str = "io.hull.stdin";
/// `true` when the container's task gets a terminal (`-t`).
pub const TTY: &str = "io.hull.tty";
/// The exit code of its last task, kept once the task is gone.
pub const EXIT_CODE: &str = "io.hull.exit-code";
/// When its last task exited (RFC 3339), kept once the task is gone.
pub const FINISHED_AT: &str = "io.hull.finished-at";
/// Its IP address on its network.
pub const IP_ADDRESS: &str = "io.hull.ip-address";

/// containerd's restart labels: the state the monitor keeps the container
/// in (`running` or `stopped`).
pub const RESTART_STATUS: &str = "containerd.io/restart.status";
/// `always`, `unless-stopped`, `on-failure[:N]` or `no`.
pub const RESTART_POLICY: &str = "containerd.io/restart.policy";
/// `true` once a person stopped the container (`unless-stopped` then
/// leaves it stopped).
pub const RESTART_EXPLICITLY_STOPPED: &str = "containerd.io/restart.explicitly-stopped";
/// How many times the monitor restarted it.
pub const RESTART_COUNT: &str = "containerd.io/restart.count";
/// The stdio URI a restarted task gets.
pub const RESTART_LOGURI: &str = "containerd.io/restart.loguri";
