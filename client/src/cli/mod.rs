//! hullctl's Docker-style verbs: argument parsing and rendering over
//! [`hull_client::docker`].

pub mod debug;
mod table;
mod tty;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Subcommand};
use hull_client::docker::{
    self, human_duration, render_template, AttachEnd, ContainerSummary, Docker, ExecOptions,
    LogOptions, PortSpec, RunOptions, TOP_TITLES,
};
use hull_client::{Client, Error};
use hull_proto::errdefs::Kind;

use table::{ellipsis, Table};

/// Docker's container verbs.
#[derive(Debug, Subcommand)]
pub enum DockerCommand {
    /// Create and start a container (pulling its image first if needed).
    Run(RunArgs),
    /// Create a container without starting it; prints its id.
    Create(RunArgs),
    /// List containers (running ones unless -a).
    Ps {
        /// Show all containers, stopped ones too.
        #[arg(long, short = 'a')]
        all: bool,
        /// Only print ids.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Filter: status=, name=, id=, label=KEY[=VALUE], ancestor=.
        #[arg(long, short = 'f')]
        filter: Vec<String>,
        /// `json`, `table`, or a Go template over .ID .Image .Command
        /// .CreatedAt .RunningFor .Ports .Status .State .Names .Labels.
        #[arg(long)]
        format: Option<String>,
        /// Do not truncate ids and commands.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Print a container's output.
    Logs {
        /// Container name or id.
        container: String,
        /// Keep printing new output until the container stops.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Only the last N lines (`all` for everything).
        #[arg(long, short = 'n', default_value = "all")]
        tail: String,
        /// Only output since a time (RFC 3339, Unix seconds, or a
        /// duration like 10m).
        #[arg(long)]
        since: Option<String>,
        /// Only output before a time (same forms as --since).
        #[arg(long)]
        until: Option<String>,
        /// Prefix each line with its time.
        #[arg(long, short = 't')]
        timestamps: bool,
    },
    /// Run a command in a running container.
    Exec {
        /// Start it and return.
        #[arg(long, short = 'd')]
        detach: bool,
        /// Pass stdin.
        #[arg(long, short = 'i')]
        interactive: bool,
        /// Give it a terminal.
        #[arg(long, short = 't')]
        tty: bool,
        /// Working directory inside the container.
        #[arg(long, short = 'w')]
        workdir: Option<String>,
        /// Environment variable KEY=VALUE.
        #[arg(long, short = 'e')]
        env: Vec<String>,
        /// User (name or uid, optionally :group).
        #[arg(long, short = 'u')]
        user: Option<String>,
        /// Container name or id.
        container: String,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        cmd: Vec<String>,
    },
    /// Attach this terminal to a running container (Ctrl-P Ctrl-Q
    /// detaches).
    Attach {
        /// Container name or id.
        container: String,
    },
    /// Stop containers: their stop signal, then SIGKILL after the timeout.
    Stop {
        /// Seconds to wait before killing.
        #[arg(long, short = 't', default_value_t = 10)]
        time: u64,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Send a signal to containers' main processes.
    Kill {
        /// Signal name or number.
        #[arg(long, short = 's', default_value = "KILL")]
        signal: String,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Start stopped containers.
    Start {
        /// Attach to its output.
        #[arg(long, short = 'a')]
        attach: bool,
        /// Attach stdin too (implies -a).
        #[arg(long, short = 'i')]
        interactive: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Stop then start containers.
    Restart {
        /// Seconds to wait before killing.
        #[arg(long, short = 't', default_value_t = 10)]
        time: u64,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running ones first.
        #[arg(long, short = 'f')]
        force: bool,
        /// Remove their anonymous volumes too.
        #[arg(long, short = 'v')]
        volumes: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Rename a container.
    Rename {
        /// Container name or id.
        container: String,
        /// Its new name.
        new_name: String,
    },
    /// Show containers in detail (Docker's inspect JSON).
    Inspect {
        /// A Go template, e.g. '{{.State.Status}}' or '{{json .Config}}'.
        #[arg(long, short = 'f')]
        format: Option<String>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show a container's processes.
    Top {
        /// Container name or id.
        container: String,
    },
    /// Wait for containers to stop; prints their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Copy files between a container and the host:
    /// `cp CONTAINER:SRC DEST` or `cp SRC CONTAINER:DEST`.
    Cp {
        /// Source (`CONTAINER:PATH` or a host path).
        src: String,
        /// Destination (`CONTAINER:PATH` or a host path).
        dest: String,
    },
    /// Make an image of a container's changes.
    Commit {
        /// Comment for the history entry.
        #[arg(long, short = 'm', default_value = "")]
        message: String,
        /// Author.
        #[arg(long, short = 'a', default_value = "")]
        author: String,
        /// Do not pause the container meanwhile.
        #[arg(long, short = 'p', default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
        pause: bool,
        /// Container name or id.
        container: String,
        /// The new image's name (`repo[:tag]`).
        reference: Option<String>,
    },
    /// Show an image's layers and how they were made.
    History {
        /// Do not truncate.
        #[arg(long)]
        no_trunc: bool,
        /// Only layer ids.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// The image.
        image: String,
    },
    /// Remove images.
    Rmi {
        /// Even when containers use them.
        #[arg(long, short = 'f')]
        force: bool,
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Whole-system views and clean-up.
    #[command(subcommand)]
    System(SystemCommand),
    /// What the daemon runs and holds.
    Info,
    /// Manage volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// (Internal) wait for a `run -d --rm` container to exit, then remove it.
    #[command(hide = true)]
    ReapOnExit {
        /// Container id.
        id: String,
    },
    /// Manage networks.
    #[command(subcommand)]
    Network(NetworkCommand),
}

/// `system …`.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Remove stopped containers, dangling images (with -a: every unused
    /// image), unused networks (and with --volumes, unused volumes); the
    /// daemon then collects unreferenced layers and blobs.
    Prune {
        /// Every image no container uses, not only untagged ones.
        #[arg(long, short = 'a')]
        all: bool,
        /// Unused volumes too.
        #[arg(long)]
        volumes: bool,
        /// Do not ask.
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Disk use by images, containers and volumes.
    Df,
}

/// `volume …`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create {
        /// Its name (random when not given).
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls {
        /// Only names.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Show volumes in detail.
    Inspect {
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove volumes.
    Rm {
        /// Volumes.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every volume no container uses.
    Prune {
        /// Do not ask.
        #[arg(long, short = 'f')]
        force: bool,
    },
}

/// `network …`.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a bridge network.
    Create {
        /// Its name.
        name: String,
        /// Its subnet (a free private /16 when not given).
        #[arg(long)]
        subnet: Option<String>,
    },
    /// List networks.
    #[command(alias = "list")]
    Ls,
    /// Show networks in detail.
    Inspect {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks.
    Rm {
        /// Networks.
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove networks no container uses.
    Prune {
        /// Do not ask.
        #[arg(long, short = 'f')]
        force: bool,
    },
}

/// `run` and `create`'s flags, as Docker's.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run in the background and print the container id.
    #[arg(long, short = 'd')]
    detach: bool,
    /// Keep stdin open.
    #[arg(long, short = 'i')]
    interactive: bool,
    /// Give it a terminal.
    #[arg(long, short = 't')]
    tty: bool,
    /// Remove the container when it exits.
    #[arg(long)]
    rm: bool,
    /// Its name.
    #[arg(long)]
    name: Option<String>,
    /// Its hostname.
    #[arg(long)]
    hostname: Option<String>,
    /// Environment variable KEY=VALUE (KEY alone: take this shell's).
    #[arg(long, short = 'e')]
    env: Vec<String>,
    /// Read environment variables from a file.
    #[arg(long)]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(long, short = 'w')]
    workdir: Option<String>,
    /// User (name or uid, optionally :group).
    #[arg(long, short = 'u')]
    user: Option<String>,
    /// Replace the image's entrypoint.
    #[arg(long)]
    entrypoint: Option<String>,
    // (Help given as text: its brackets are not links.)
    #[arg(
        long,
        short = 'v',
        help = "Mount: NAME:/path, /host/path:/path[:ro], or /path (anonymous)"
    )]
    volume: Vec<String>,
    #[arg(
        long,
        help = "Mount: type=volume|bind|tmpfs,source=…,target=…[,readonly]"
    )]
    mount: Vec<String>,
    #[arg(long, help = "A tmpfs at this path (/path[:options])")]
    tmpfs: Vec<String>,
    /// Mount the root read-only.
    #[arg(long)]
    read_only: bool,
    #[arg(long, short = 'p', help = "Publish a port: [IP:][HOSTPORT:]PORT[/udp]")]
    publish: Vec<String>,
    /// Publish the image's exposed ports on free host ports.
    #[arg(long, short = 'P')]
    publish_all: bool,
    /// Network: bridge (default), host, none, or a network's name.
    #[arg(long, alias = "net")]
    network: Option<String>,
    /// Memory limit (e.g. 64m).
    #[arg(long, short = 'm')]
    memory: Option<String>,
    /// CPUs (e.g. 0.5).
    #[arg(long)]
    cpus: Option<f64>,
    /// Most processes it may have (-1: no limit).
    #[arg(long)]
    pids_limit: Option<i64>,
    /// Add a capability.
    #[arg(long)]
    cap_add: Vec<String>,
    /// Drop a capability.
    #[arg(long)]
    cap_drop: Vec<String>,
    /// Give it every capability and device.
    #[arg(long)]
    privileged: bool,
    #[arg(
        long,
        help = "Restart policy: no, always, unless-stopped, on-failure[:N]"
    )]
    restart: Option<String>,
    /// Log option: max-size=SIZE, max-file=N.
    #[arg(long)]
    log_opt: Vec<String>,
    /// Label KEY=VALUE.
    #[arg(long, short = 'l')]
    label: Vec<String>,
    /// Platform of the image to pull.
    #[arg(long)]
    platform: Option<String>,
    /// The image.
    image: String,
    /// The command and its arguments (default: the image's).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cmd: Vec<String>,
}

impl RunArgs {
    fn options(&self) -> anyhow::Result<RunOptions> {
        let mut env = Vec::new();
        for f in &self.env_file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("open {}: {e}", f.display()))?;
            env.extend(
                docker::parse_env_file(&text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", f.display()))?,
            );
        }
        env.extend(self.env.iter().cloned());
        Ok(RunOptions {
            image: self.image.clone(),
            cmd: self.cmd.clone(),
            entrypoint: self.entrypoint.clone(),
            name: self.name.clone(),
            hostname: self.hostname.clone(),
            env,
            workdir: self.workdir.clone(),
            user: self.user.clone(),
            volumes: self.volume.clone(),
            mounts: self.mount.clone(),
            tmpfs: self.tmpfs.clone(),
            read_only: self.read_only,
            publish: self.publish.clone(),
            publish_all: self.publish_all,
            network: self.network.clone(),
            memory: self.memory.clone(),
            cpus: self.cpus,
            pids_limit: self.pids_limit,
            cap_add: self.cap_add.clone(),
            cap_drop: self.cap_drop.clone(),
            privileged: self.privileged,
            restart: self.restart.clone(),
            log_opts: self.log_opt.clone(),
            interactive: self.interactive,
            tty: self.tty,
            auto_remove: self.rm,
            labels: self.label.clone(),
        })
    }
}

/// How `run` pulls a missing image (reference, platform).
pub type PullFn =
    dyn FnMut(
        String,
        Option<String>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>;

/// Connects the Docker workflow for `client`.
pub async fn docker(client: &Client, namespace: &str) -> anyhow::Result<Docker> {
    let d = Docker::new(client.clone(), namespace).await?;
    let subnet = std::env::var("HULL_BRIDGE_SUBNET")
        .ok()
        .filter(|s| !s.is_empty());
    let device = std::env::var("HULL_BRIDGE").ok().filter(|s| !s.is_empty());
    Ok(d.with_default_bridge(subnet, device))
}

/// Pulls `image` when it is not here, as `docker run` does.
async fn ensure_image(
    d: &Docker,
    image: &str,
    platform: Option<&str>,
    pull: &mut PullFn,
) -> anyhow::Result<()> {
    match d.image(image).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == Kind::NotFound => {
            // As Docker names it: familiar, with its tag.
            let full = docker::normalize(image);
            let shown = full
                .strip_prefix("docker.io/library/")
                .or_else(|| full.strip_prefix("docker.io/"))
                .unwrap_or(&full);
            eprintln!("Unable to find image '{shown}' locally");
            pull(image.to_owned(), platform.map(str::to_owned)).await
        }
        Err(e) => Err(e.into()),
    }
}

/// Parses --since/--until: a duration ago, RFC 3339, or Unix seconds.
fn parse_time(text: &str) -> anyhow::Result<SystemTime> {
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(SystemTime::now() - d);
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(text) {
        return Ok(t);
    }
    if let Ok(secs) = text.parse::<f64>() {
        if secs >= 0.0 && secs.is_finite() {
            return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(secs));
        }
    }
    anyhow::bail!("invalid time {text:?}: use RFC 3339, Unix seconds, or a duration like 10m")
}

fn short_layer(id: &str) -> String {
    if id.starts_with("sha256:") {
        docker::short(id)
    } else {
        id.to_owned()
    }
}

fn short_image(name: &str) -> String {
    let n = name
        .strip_prefix("docker.io/library/")
        .or_else(|| name.strip_prefix("docker.io/"))
        .unwrap_or(name);
    n.strip_suffix(":latest").unwrap_or(n).to_owned()
}

fn ports_text(ports: &[PortSpec]) -> String {
    ports
        .iter()
        .map(|p| {
            let ip = if p.host_ip.is_empty() {
                "0.0.0.0"
            } else {
                &p.host_ip
            };
            format!("{ip}:{}->{}/{}", p.host_port, p.container_port, p.protocol)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn quoted_command(cmd: &[String], trunc: bool) -> String {
    let text = cmd.join(" ");
    let text = if trunc { ellipsis(&text, 20) } else { text };
    format!("\"{text}\"")
}

fn ps_object(c: &ContainerSummary, trunc: bool) -> serde_json::Value {
    let created = SystemTime::now()
        .duration_since(c.created)
        .unwrap_or_default();
    serde_json::json!({
        "ID": if trunc { c.short_id().to_owned() } else { c.id.clone() },
        "Image": short_image(&c.image),
        "Command": quoted_command(&c.command, trunc),
        "CreatedAt": humantime::format_rfc3339_seconds(c.created).to_string(),
        "RunningFor": format!("{} ago", human_duration(created)),
        "Ports": ports_text(&c.ports),
        "Status": c.status.describe(),
        "State": c.status.name(),
        "Names": c.name,
        "Labels": c.labels.iter().filter(|(k, _)| !k.starts_with("io.hull.") && !k.starts_with("containerd.io/")).map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
    })
}

fn matches_filter(c: &ContainerSummary, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(k, v)| match k.as_str() {
        "status" => c.status.name() == v,
        "name" => c.name.contains(v.as_str()),
        "id" => c.id.starts_with(v.as_str()),
        "label" => match v.split_once('=') {
            Some((lk, lv)) => c.labels.get(lk).map(String::as_str) == Some(lv),
            None => c.labels.contains_key(v.as_str()),
        },
        "ancestor" => c.image == docker::normalize(v) || short_image(&c.image) == *v,
        _ => true,
    })
}

/// Runs one Docker verb; returns the exit code.
pub async fn run_docker(d: &Docker, cmd: DockerCommand, pull: &mut PullFn) -> anyhow::Result<u8> {
    match cmd {
        DockerCommand::Run(args) => return run(d, args, pull).await,
        DockerCommand::Create(args) => {
            let opts = args.options()?;
            ensure_image(d, &opts.image, args.platform.as_deref(), pull).await?;
            let c = d.create(&opts).await?;
            println!("{}", c.id);
        }
        DockerCommand::Ps {
            all,
            quiet,
            filter,
            format,
            no_trunc,
        } => {
            let mut filters = Vec::new();
            for f in &filter {
                let (k, v) = f.split_once('=').ok_or_else(|| {
                    anyhow::anyhow!("bad format of filter (expected name=value): {f}")
                })?;
                if !matches!(k, "status" | "name" | "id" | "label" | "ancestor") {
                    anyhow::bail!("invalid filter '{k}'");
                }
                filters.push((k.to_owned(), v.to_owned()));
            }
            // A status filter shows stopped containers too, as in Docker.
            let all = all || filters.iter().any(|(k, _)| k == "status");
            let list: Vec<ContainerSummary> = d
                .list(all)
                .await?
                .into_iter()
                .filter(|c| matches_filter(c, &filters))
                .collect();
            let trunc = !no_trunc;
            if quiet {
                for c in &list {
                    println!("{}", if trunc { c.short_id() } else { &c.id });
                }
                return Ok(0);
            }
            match format.as_deref() {
                Some("json") => {
                    for c in &list {
                        println!("{}", ps_object(c, trunc));
                    }
                }
                Some(t) if t != "table" => {
                    let t = t.strip_prefix("table ").unwrap_or(t);
                    for c in &list {
                        println!("{}", render_template(t, &ps_object(c, trunc))?);
                    }
                }
                _ => {
                    let mut table = Table::new(&[
                        "CONTAINER ID",
                        "IMAGE",
                        "COMMAND",
                        "CREATED",
                        "STATUS",
                        "PORTS",
                        "NAMES",
                    ]);
                    for c in &list {
                        let o = ps_object(c, trunc);
                        let s = |k: &str| o[k].as_str().unwrap_or_default().to_owned();
                        table.row(vec![
                            s("ID"),
                            s("Image"),
                            s("Command"),
                            s("RunningFor"),
                            s("Status"),
                            s("Ports"),
                            s("Names"),
                        ]);
                    }
                    table.print();
                }
            }
        }
        DockerCommand::Logs {
            container,
            follow,
            tail,
            since,
            until,
            timestamps,
        } => {
            let tail = match tail.as_str() {
                "all" | "-1" => None,
                n => Some(
                    n.parse::<usize>()
                        .map_err(|_| anyhow::anyhow!("invalid --tail {n:?}: a number or all"))?,
                ),
            };
            let opts = LogOptions {
                follow,
                tail,
                since: since.as_deref().map(parse_time).transpose()?,
                until: until.as_deref().map(parse_time).transpose()?,
            };
            use std::io::Write;
            d.logs(&container, &opts, |e| {
                let line = if timestamps {
                    format!("{} {}", humantime::format_rfc3339_nanos(e.time), e.log)
                } else {
                    e.log.clone()
                };
                let _ = match e.stream {
                    hull_logs::Stream::Stdout => {
                        let mut o = std::io::stdout().lock();
                        o.write_all(line.as_bytes()).and_then(|_| o.flush())
                    }
                    hull_logs::Stream::Stderr => std::io::stderr().write_all(line.as_bytes()),
                };
            })
            .await?;
        }
        DockerCommand::Exec {
            detach,
            interactive,
            tty,
            workdir,
            env,
            user,
            container,
            cmd,
        } => {
            let opts = ExecOptions {
                cmd,
                interactive,
                tty,
                detach,
                workdir,
                env,
                user,
            };
            let raw = if tty && std::io::stdin().is_terminal() {
                Some(tty::RawMode::enter()?)
            } else {
                None
            };
            let id = d.find(&container).await?.id;
            let (tx, rx) = tokio::sync::oneshot::channel::<String>();
            let (d2, id2) = (d.clone(), id.clone());
            let sizer = tokio::spawn(async move {
                if let (Ok(exec_id), true) = (rx.await, tty) {
                    keep_size(d2, id2, exec_id).await;
                }
            });
            let stdin = interactive.then(tokio::io::stdin);
            let exec = d.exec(
                &container,
                &opts,
                stdin,
                tokio::io::stdout(),
                tokio::io::stderr(),
                move |e| {
                    let _ = tx.send(e.to_owned());
                },
            );
            let code = exec.await;
            sizer.abort();
            drop(raw);
            return Ok(code? as u8);
        }
        DockerCommand::Attach { container } => {
            let c = d.find(&container).await?;
            let tty = c
                .labels
                .get(docker::labels::TTY)
                .is_some_and(|v| v == "true");
            let raw = if tty && std::io::stdin().is_terminal() {
                Some(tty::RawMode::enter()?)
            } else {
                None
            };
            let sizer =
                tty.then(|| tokio::spawn(keep_size(d.clone(), c.id.clone(), String::new())));
            let end = d
                .attach(
                    &c.id,
                    Some(tokio::io::stdin()),
                    tokio::io::stdout(),
                    tokio::io::stderr(),
                    true,
                )
                .await;
            if let Some(s) = sizer {
                s.abort();
            }
            drop(raw);
            return finish_attached(d, &c.id, end?, false).await;
        }
        DockerCommand::Stop { time, containers } => {
            each(&containers, |c| async move {
                d.stop(&c, Some(Duration::from_secs(time))).await
            })
            .await?;
        }
        DockerCommand::Kill { signal, containers } => {
            let sig = docker::parse_signal(&signal)?;
            each(&containers, |c| async move { d.kill(&c, sig).await }).await?;
        }
        DockerCommand::Start {
            attach,
            interactive,
            containers,
        } => {
            if attach || interactive {
                let [one] = containers.as_slice() else {
                    anyhow::bail!("you cannot start and attach multiple containers at once");
                };
                let c = d.find(one).await?;
                let tty = c
                    .labels
                    .get(docker::labels::TTY)
                    .is_some_and(|v| v == "true");
                let raw = if tty && interactive && std::io::stdin().is_terminal() {
                    Some(tty::RawMode::enter()?)
                } else {
                    None
                };
                let stdin = interactive.then(tokio::io::stdin);
                let sizer =
                    tty.then(|| tokio::spawn(keep_size(d.clone(), c.id.clone(), String::new())));
                let end = d
                    .start_attached(
                        &c.id,
                        stdin,
                        tokio::io::stdout(),
                        tokio::io::stderr(),
                        tty && interactive,
                    )
                    .await;
                if let Some(s) = sizer {
                    s.abort();
                }
                drop(raw);
                return finish_attached(d, &c.id, end?, false).await;
            }
            each(&containers, |c| async move { d.start(&c).await }).await?;
        }
        DockerCommand::Restart { time, containers } => {
            each(&containers, |c| async move {
                d.restart(&c, Some(Duration::from_secs(time))).await
            })
            .await?;
        }
        DockerCommand::Rm {
            force,
            volumes,
            containers,
        } => {
            each(&containers, |c| async move {
                d.remove(&c, force, volumes).await
            })
            .await?;
        }
        DockerCommand::Rename {
            container,
            new_name,
        } => d.rename(&container, &new_name).await?,
        DockerCommand::Inspect { format, containers } => {
            let mut out = Vec::new();
            for c in &containers {
                out.push(d.inspect(c).await?);
            }
            match format {
                Some(t) => {
                    for o in &out {
                        println!("{}", render_template(&t, o)?);
                    }
                }
                None => println!("{}", serde_json::to_string_pretty(&out)?),
            }
        }
        DockerCommand::Top { container } => {
            let rows = d.top(&container).await?;
            let mut t = Table::new(&TOP_TITLES);
            for r in rows {
                t.row(r);
            }
            t.print();
        }
        DockerCommand::Wait { containers } => {
            for c in &containers {
                println!("{}", d.wait(c).await?);
            }
        }
        DockerCommand::Cp { src, dest } => {
            let split = |s: &str| -> Option<(String, String)> {
                let (c, p) = s.split_once(':')?;
                (!c.is_empty() && !c.contains('/')).then(|| (c.to_owned(), p.to_owned()))
            };
            match (split(&src), split(&dest)) {
                (Some((c, p)), None) => d.copy_from(&c, &p, std::path::Path::new(&dest)).await?,
                (None, Some((c, p))) => d.copy_to(&c, std::path::Path::new(&src), &p).await?,
                (Some(_), Some(_)) => anyhow::bail!("copying between containers is not supported"),
                (None, None) => {
                    anyhow::bail!("must specify at least one container source (CONTAINER:PATH)")
                }
            }
        }
        DockerCommand::Commit {
            message,
            author,
            pause,
            container,
            reference,
        } => {
            let opts = docker::CommitOptions {
                reference: reference.unwrap_or_default(),
                message,
                author,
                pause,
            };
            println!("{}", d.commit(&container, &opts).await?);
        }
        DockerCommand::History {
            no_trunc,
            quiet,
            image,
        } => {
            let entries = d.history(&image).await?;
            if quiet {
                entries.iter().for_each(|e| {
                    println!(
                        "{}",
                        if no_trunc {
                            e.layer.clone()
                        } else {
                            short_layer(&e.layer)
                        }
                    )
                });
                return Ok(0);
            }
            let mut t = Table::new(&["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]);
            for e in entries {
                let created = e
                    .created
                    .map(|c| {
                        format!(
                            "{} ago",
                            human_duration(SystemTime::now().duration_since(c).unwrap_or_default())
                        )
                    })
                    .unwrap_or_else(|| "N/A".into());
                let by = if no_trunc {
                    e.created_by.clone()
                } else {
                    ellipsis(&e.created_by, 45)
                };
                let layer = if no_trunc {
                    e.layer.clone()
                } else {
                    short_layer(&e.layer)
                };
                t.row(vec![
                    layer,
                    created,
                    by,
                    docker::human_size(e.size),
                    e.comment,
                ]);
            }
            t.print();
        }
        DockerCommand::Rmi { force, images } => {
            for i in &images {
                let name = d.remove_image(i, force).await?;
                println!("Untagged: {name}");
            }
        }
        DockerCommand::System(SystemCommand::Prune {
            all,
            volumes,
            force: _,
        }) => {
            let r = d.prune(all, volumes).await?;
            let section = |title: &str, items: &[String]| {
                if !items.is_empty() {
                    println!("{title}:");
                    items.iter().for_each(|i| println!("{i}"));
                    println!();
                }
            };
            section("Deleted Containers", &r.containers);
            section("Deleted Images", &r.images);
            section("Deleted Networks", &r.networks);
            section("Deleted Volumes", &r.volumes);
            println!(
                "Total reclaimed: {} container(s), {} image(s), {} network(s), {} volume(s)",
                r.containers.len(),
                r.images.len(),
                r.networks.len(),
                r.volumes.len()
            );
        }
        DockerCommand::System(SystemCommand::Df) => {
            let mut t = Table::new(&["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]);
            for u in d.disk_usage().await? {
                let pct = (u.reclaimable * 100).checked_div(u.size).unwrap_or(0);
                t.row(vec![
                    u.kind.into(),
                    u.total.to_string(),
                    u.active.to_string(),
                    docker::human_size(u.size),
                    format!("{} ({pct}%)", docker::human_size(u.reclaimable)),
                ]);
            }
            t.print();
        }
        DockerCommand::Info => {
            let v = d.client().version().version(()).await?.into_inner();
            let list = d.list(true).await?;
            let running = list
                .iter()
                .filter(|c| matches!(c.status, docker::State::Running { .. }))
                .count();
            let paused = list
                .iter()
                .filter(|c| matches!(c.status, docker::State::Paused { .. }))
                .count();
            let images = d.images().await?.len();
            let uname = nix::sys::utsname::uname()?;
            println!("Server:");
            println!(" Containers: {}", list.len());
            println!("  Running: {running}");
            println!("  Paused: {paused}");
            println!("  Stopped: {}", list.len() - running - paused);
            println!(" Images: {images}");
            println!(" Server Version: {}", v.version);
            println!(" Storage Driver: overlayfs");
            println!(" Logging Driver: json-file");
            println!(
                " Cgroup Version: {}",
                if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
                    2
                } else {
                    1
                }
            );
            println!(" Runtimes: io.containerd.runc.v2");
            println!(" Kernel Version: {}", uname.release().to_string_lossy());
            println!(" Architecture: {}", uname.machine().to_string_lossy());
            println!(
                " CPUs: {}",
                std::thread::available_parallelism().map_or(1, |n| n.get())
            );
            println!(" Docker Root Dir: {}", d.root().display());
            println!(
                " Containerd Daemon: {}",
                if d.is_hull() { "hulld" } else { "containerd" }
            );
        }
        DockerCommand::ReapOnExit { .. } => {}
        DockerCommand::Volume(v) => volume(d, v).await?,
        DockerCommand::Network(n) => network(d, n).await?,
    }
    Ok(0)
}

/// Starts `hullctl reap-on-exit ID` in a process group of its own (no
/// terminal hang-up reaches it), with this command's address and
/// namespace.
fn spawn_reaper(id: &str) -> anyhow::Result<()> {
    use std::os::unix::process::CommandExt;
    let args: Vec<String> = std::env::args().collect();
    let flag = |long: &str, short: &str| -> Option<String> {
        args.iter().enumerate().find_map(|(i, a)| {
            if a == long || a == short {
                args.get(i + 1).cloned()
            } else {
                a.strip_prefix(&format!("{long}=")).map(str::to_owned)
            }
        })
    };
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    if let Some(a) = flag("--address", "-a") {
        cmd.args(["--address", &a]);
    }
    if let Some(n) = flag("--namespace", "-n") {
        cmd.args(["--namespace", &n]);
    }
    cmd.args(["reap-on-exit", id])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()?;
    Ok(())
}

/// `reap-on-exit ID`: waits for the container to exit, then removes it
/// (a `run -d --rm` container), reconnecting while the daemon restarts.
pub async fn reap_on_exit(
    address: &std::path::Path,
    namespace: &str,
    id: &str,
) -> anyhow::Result<u8> {
    let given_up = std::time::Instant::now();
    loop {
        let done = async {
            let client = Client::connect(address).await?;
            let d = Docker::new(client, namespace).await?;
            d.wait(id).await?;
            let c = d.find(id).await?;
            let auto = c
                .labels
                .get(docker::labels::AUTO_REMOVE)
                .is_some_and(|v| v == "true");
            let running = d.summary_of(id).await?.status.pid().is_some();
            if auto && !running {
                d.remove(id, true, true).await?;
            }
            Ok::<_, Error>(running)
        }
        .await;
        match done {
            Ok(false) => return Ok(0),
            // Started again meanwhile: wait for that run to end.
            Ok(true) => {}
            Err(e) if e.kind() == Kind::NotFound => return Ok(0),
            // The daemon is gone for good (its socket with it), or has not
            // come back in an hour: nothing left to wait for.
            Err(_) if !address.exists() || given_up.elapsed() > Duration::from_secs(3600) => {
                return Ok(1)
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// Keeps the terminal of process `exec_id` (the container's own when
/// empty) the size of this one: once as soon as the process exists, then
/// on every SIGWINCH. Runs until aborted.
async fn keep_size(d: Docker, id: String, exec_id: String) {
    let send = |w: u32, h: u32| {
        let (d, id, exec_id) = (d.clone(), id.clone(), exec_id.clone());
        async move { d.resize_exec(&id, &exec_id, w, h).await.is_ok() }
    };
    if let Some((w, h)) = tty::size() {
        // The task may still be starting.
        for _ in 0..40 {
            if send(w, h).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
    let Ok(mut winch) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
    else {
        return;
    };
    while winch.recv().await.is_some() {
        if let Some((w, h)) = tty::size() {
            send(w, h).await;
        }
    }
}

/// Runs `f` for each container, printing each name as Docker does;
/// the first error is returned after trying them all.
async fn each<F, Fut>(containers: &[String], f: F) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<(), Error>>,
{
    let mut failed = None;
    for c in containers {
        match f(c.clone()).await {
            Ok(()) => println!("{c}"),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                failed.get_or_insert(e);
            }
        }
    }
    match failed {
        Some(e) => Err(anyhow::anyhow!(Silent(e.to_string()))),
        None => Ok(()),
    }
}

/// An error already printed.
#[derive(Debug)]
pub struct Silent(pub String);

impl std::fmt::Display for Silent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Silent {}

async fn finish_attached(d: &Docker, id: &str, end: AttachEnd, remove: bool) -> anyhow::Result<u8> {
    match end {
        AttachEnd::Detached => {
            eprintln!("\r\nread escape sequence");
            Ok(0)
        }
        AttachEnd::Exited(code) => {
            if remove {
                d.remove(id, true, true).await?;
            }
            Ok(code.min(255) as u8)
        }
    }
}

async fn run(d: &Docker, args: RunArgs, pull: &mut PullFn) -> anyhow::Result<u8> {
    let opts = args.options()?;
    ensure_image(d, &opts.image, args.platform.as_deref(), pull).await?;
    let c = d.create(&opts).await?;
    if args.detach {
        if let Err(e) = d.start(&c.id).await {
            let _ = d.remove(&c.id, true, true).await;
            return Err(e.into());
        }
        if args.rm {
            // Nobody stays attached to remove it when it exits: a helper
            // of ours does, as Docker's daemon would.
            spawn_reaper(&c.id)?;
        }
        println!("{}", c.id);
        return Ok(0);
    }
    let raw = if args.tty && args.interactive && std::io::stdin().is_terminal() {
        Some(tty::RawMode::enter()?)
    } else {
        None
    };
    let stdin = args.interactive.then(tokio::io::stdin);
    let sizer = args
        .tty
        .then(|| tokio::spawn(keep_size(d.clone(), c.id.clone(), String::new())));
    let attach = d.start_attached(
        &c.id,
        stdin,
        tokio::io::stdout(),
        tokio::io::stderr(),
        args.tty && args.interactive,
    );
    let end = attach.await;
    if let Some(s) = sizer {
        s.abort();
    }
    drop(raw);
    let end = match end {
        Ok(e) => e,
        Err(e) => {
            if args.rm {
                let _ = d.remove(&c.id, true, true).await;
            }
            return Err(e.into());
        }
    };
    finish_attached(d, &c.id, end, args.rm).await
}

async fn volume(d: &Docker, cmd: VolumeCommand) -> anyhow::Result<()> {
    match cmd {
        VolumeCommand::Create { name } => {
            let (v, _) = d.volume_create(name.as_deref())?;
            println!("{}", v.name);
        }
        VolumeCommand::Ls { quiet } => {
            let list = d.volume_list()?;
            if quiet {
                list.iter().for_each(|v| println!("{}", v.name));
            } else {
                let mut t = Table::new(&["DRIVER", "VOLUME NAME"]);
                for v in list {
                    t.row(vec![v.driver, v.name]);
                }
                t.print();
            }
        }
        VolumeCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in &names {
                out.push(d.volume_inspect(n)?);
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        VolumeCommand::Rm { names } => {
            for n in &names {
                d.volume_remove(n).await?;
                println!("{n}");
            }
        }
        VolumeCommand::Prune { force: _ } => {
            let removed = d.volume_prune().await?;
            if !removed.is_empty() {
                println!("Deleted Volumes:");
                removed.iter().for_each(|n| println!("{n}"));
                println!();
            }
            println!("Total reclaimed: {} volume(s)", removed.len());
        }
    }
    Ok(())
}

async fn network(d: &Docker, cmd: NetworkCommand) -> anyhow::Result<()> {
    match cmd {
        NetworkCommand::Create { name, subnet } => {
            d.network_create(&name, subnet.as_deref()).await?;
            println!("{name}");
        }
        NetworkCommand::Ls => {
            let mut t = Table::new(&["NAME", "DRIVER", "SUBNET"]);
            for n in d.network_list().await? {
                t.row(vec![n.name, "bridge".into(), n.subnet.unwrap_or_default()]);
            }
            t.row(vec!["host".into(), "host".into(), String::new()]);
            t.row(vec!["none".into(), "null".into(), String::new()]);
            t.print();
        }
        NetworkCommand::Inspect { names } => {
            let mut out = Vec::new();
            for n in &names {
                let (net, users) = d.network_inspect(n).await?;
                out.push(serde_json::json!({
                    "Name": net.name,
                    "Driver": "bridge",
                    "IPAM": { "Config": [{ "Subnet": net.subnet }] },
                    "Bridge": net.bridge,
                    "Containers": users,
                }));
            }
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        NetworkCommand::Rm { names } => {
            for n in &names {
                d.network_remove(n).await?;
                println!("{n}");
            }
        }
        NetworkCommand::Prune { force: _ } => {
            let removed = d.network_prune().await?;
            if !removed.is_empty() {
                println!("Deleted Networks:");
                removed.iter().for_each(|n| println!("{n}"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_names() {
        let t = parse_time("10m").unwrap();
        let ago = SystemTime::now().duration_since(t).unwrap().as_secs();
        assert!((599..=601).contains(&ago));
        assert_eq!(
            parse_time("1700000000").unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
        );
        assert!(parse_time("2024-01-01T00:00:00Z").is_ok());
        assert!(parse_time("yesterday").is_err());
        assert_eq!(short_image("docker.io/library/busybox:latest"), "busybox");
        assert_eq!(short_image("127.0.0.1:5000/a:1"), "127.0.0.1:5000/a:1");
        let cmd = [
            "sh".into(),
            "-c".into(),
            "while true; do echo tick; done".into(),
        ];
        assert_eq!(quoted_command(&cmd, true), "\"sh -c while true; d…\"");
    }
}
