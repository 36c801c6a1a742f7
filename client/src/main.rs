//! hullctl: hull's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;
mod progress;

use hull_client::oci::credentials;
use hull_client::transfer::PullOptions;
use hull_client::Client;

/// Run and inspect containers on hulld (or containerd) the way you would
/// with docker: `hullctl run -d --name web -p 8080:80 nginx`, `hullctl ps`,
/// `hullctl logs -f web`, `hullctl exec -it web sh`, `hullctl rm -f web`.
///
/// ctr's object groups (images, content, snapshots, containers, tasks,
/// leases, events, plugins, namespaces) show the daemon's records as they
/// are, for debugging.
#[derive(Debug, Parser)]
#[command(name = "hullctl", version, about, long_about)]
struct Cli {
    /// Daemon socket.
    #[arg(
        long,
        short = 'a',
        default_value = "/run/hull/hull.sock",
        env = "HULL_ADDRESS"
    )]
    address: PathBuf,
    /// Namespace.
    #[arg(long, short = 'n', default_value = "default", env = "HULL_NAMESPACE")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

/// How pull and push reach registries.
#[derive(Debug, clap::Args)]
struct HostArgs {
    /// Directory of `<host>/hosts.toml` files instead of the daemon's.
    #[arg(long, default_value = "")]
    hosts_dir: String,
    /// Reach hosts without a configuration over plain HTTP.
    #[arg(long)]
    plain_http: bool,
}

impl HostArgs {
    /// These choices and `reference`'s stored credentials as options.
    fn options(self, reference: &str) -> anyhow::Result<PullOptions> {
        Ok(PullOptions {
            credentials: credentials_for(reference)?,
            host_dir: self.hosts_dir,
            default_scheme: if self.plain_http {
                "http".into()
            } else {
                String::new()
            },
            ..Default::default()
        })
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Docker(Box<cli::DockerCommand>),
    /// Print client and server versions.
    Version,
    #[command(flatten)]
    Debug(Box<cli::debug::DebugCommand>),
    /// Pull an image from a registry (on the daemon's side) and unpack it.
    Pull {
        /// Image reference, e.g. `busybox` or `127.0.0.1:5000/app:1`.
        reference: String,
        /// Platform to pull (`os/arch[/variant]`) instead of the host's.
        #[arg(long)]
        platform: Option<String>,
        /// Pull every platform of a multi-platform image.
        #[arg(long)]
        all_platforms: bool,
        /// Snapshotter to unpack into.
        #[arg(long, default_value = "")]
        snapshotter: String,
        #[command(flatten)]
        hosts: HostArgs,
        /// Print only the image name at the end.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Push an image to a registry.
    Push {
        /// The image (as named in the store); it is pushed under its name.
        name: String,
        #[command(flatten)]
        hosts: HostArgs,
        /// Print nothing but errors.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Write images to a tar archive (OCI layout with docker's
    /// manifest.json), to a file or stdout.
    Save {
        /// Images to save.
        #[arg(required = true)]
        images: Vec<String>,
        /// Write to this file instead of stdout.
        #[arg(long, short = 'o')]
        output: Option<PathBuf>,
        /// Only these platforms of multi-platform images.
        #[arg(long)]
        platform: Vec<String>,
    },
    /// Load images from a tar archive (OCI layout or `docker save`), from
    /// a file or stdin, and unpack them.
    Load {
        /// Read from this file instead of stdin.
        #[arg(long, short = 'i')]
        input: Option<PathBuf>,
        /// Snapshotter to unpack into.
        #[arg(long, default_value = "")]
        snapshotter: String,
        /// Print only the names of the images loaded.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Store credentials for a registry in docker's config.json (default
    /// registry: docker.io).
    Login {
        /// Registry host, e.g. `127.0.0.1:5000`.
        server: Option<String>,
        /// User name.
        #[arg(long, short = 'u')]
        username: String,
        /// Password (prefer --password-stdin).
        #[arg(long, short = 'p')]
        password: Option<String>,
        /// Read the password from stdin.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Remove a registry's credentials from docker's config.json.
    Logout {
        /// Registry host (default: docker.io).
        server: Option<String>,
    },
    /// Print a shell completion script: `hullctl completion bash >
    /// /etc/bash_completion.d/hullctl`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Give an image another name: `tag SOURCE TARGET`.
    Tag {
        /// An image of the store.
        source: String,
        /// The new name (normalised as a reference).
        target: String,
    },
}

/// Pulls an image the Docker way (`run` of a missing image): through the
/// daemon, with progress, using stored credentials.
async fn pull_for_run(
    client: &Client,
    reference: String,
    platform: Option<String>,
) -> anyhow::Result<()> {
    let options = PullOptions {
        platforms: platform.into_iter().collect(),
        unpack: Some(String::new()),
        credentials: credentials_for(&reference)?,
        ..Default::default()
    };
    let mut view = progress::PullView::new(false);
    client
        .pull(&reference, &options, |p| view.event(&p))
        .await?;
    view.finish();
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    if let Command::Completion { shell } = &cli.command {
        use clap::CommandFactory;
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "hullctl", &mut script);
        // A closed pipe (`| head`) is not an error worth a word.
        use std::io::Write as _;
        let _ = std::io::stdout().write_all(&script);
        return Ok(0);
    }
    if let Command::Docker(cmd) = &cli.command {
        if let cli::DockerCommand::ReapOnExit { id } = cmd.as_ref() {
            return cli::reap_on_exit(&cli.address, &cli.namespace, id).await;
        }
    }
    let client = Client::connect(&cli.address)
        .await?
        .with_namespace(&cli.namespace);
    match cli.command {
        Command::Docker(cmd) => {
            let d = cli::docker(&client, &cli.namespace).await?;
            let c = client.clone();
            let mut pull = move |r: String,
                                 p: Option<String>|
                  -> std::pin::Pin<
                Box<dyn std::future::Future<Output = anyhow::Result<()>>>,
            > {
                let c = c.clone();
                Box::pin(async move { pull_for_run(&c, r, p).await })
            };
            return cli::run_docker(&d, *cmd, &mut pull).await;
        }
        Command::Version => {
            let v = client.version().version(()).await?.into_inner();
            println!(
                "client: {}\nserver: {} ({})",
                env!("CARGO_PKG_VERSION"),
                v.version,
                v.revision
            );
        }
        Command::Debug(cmd) => {
            let d = cli::docker(&client, &cli.namespace).await?;
            cli::debug::run_debug(&client, &d, *cmd).await?;
        }
        Command::Pull {
            reference,
            platform,
            all_platforms,
            snapshotter,
            hosts,
            quiet,
        } => {
            let options = PullOptions {
                platforms: platform.into_iter().collect(),
                all_platforms,
                unpack: Some(snapshotter),
                ..hosts.options(&reference)?
            };
            let mut view = progress::PullView::new(quiet);
            client
                .pull(&reference, &options, |p| view.event(&p))
                .await?;
            view.finish();
        }
        Command::Push { name, hosts, quiet } => {
            let options = hosts.options(&name)?;
            let name = normalise(&name);
            let mut view = progress::PushView::new(quiet);
            client.push(&name, "", &options, |p| view.event(&p)).await?;
        }
        Command::Save {
            images,
            output,
            platform,
        } => {
            let images: Vec<String> = images.iter().map(|i| normalise(i)).collect();
            match output {
                Some(path) => {
                    let file = tokio::fs::File::create(&path)
                        .await
                        .map_err(|e| anyhow::anyhow!("create {}: {e}", path.display()))?;
                    client.export(&images, &platform, file).await?;
                }
                None => {
                    use std::io::IsTerminal as _;
                    if std::io::stdout().is_terminal() {
                        anyhow::bail!(
                            "refusing to write an archive to a terminal; use -o FILE or redirect"
                        );
                    }
                    client
                        .export(&images, &platform, tokio::io::stdout())
                        .await?;
                }
            }
        }
        Command::Load {
            input,
            snapshotter,
            quiet,
        } => {
            let show = |p: hull_proto::containerd::types::transfer::Progress| {
                if p.event == "saved" {
                    if quiet {
                        println!("{}", p.name);
                    } else {
                        println!("Loaded image: {}", p.name);
                    }
                }
            };
            match input {
                Some(path) => {
                    let file = tokio::fs::File::open(&path)
                        .await
                        .map_err(|e| anyhow::anyhow!("open {}: {e}", path.display()))?;
                    client.import(file, Some(snapshotter), show).await?;
                }
                None => {
                    client
                        .import(tokio::io::stdin(), Some(snapshotter), show)
                        .await?
                }
            }
        }
        Command::Login {
            server,
            username,
            password,
            password_stdin,
        } => {
            let password = match (password, password_stdin) {
                (Some(p), false) => p,
                (None, true) => {
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line)?;
                    line.trim_end_matches(['\n', '\r']).to_owned()
                }
                _ => anyhow::bail!(
                    "give the password with exactly one of --password or --password-stdin"
                ),
            };
            let host = registry_host(server.as_deref());
            let path = credentials::config_path(std::path::Path::new(""));
            credentials::store(
                &path,
                &host,
                &credentials::Credentials { username, password },
            )?;
            println!("Login Succeeded (credentials stored in {})", path.display());
        }
        Command::Logout { server } => {
            let host = registry_host(server.as_deref());
            let path = credentials::config_path(std::path::Path::new(""));
            if credentials::erase(&path, &host)? {
                println!("Removing login credentials for {host}");
            } else {
                println!("Not logged in to {host}");
            }
        }
        Command::Completion { .. } => {}
        Command::Tag { source, target } => {
            client.tag(&normalise(&source), &normalise(&target)).await?;
        }
    }
    Ok(0)
}

/// The registry a login names: docker.io when none is given, the host of
/// a URL as given.
fn registry_host(server: Option<&str>) -> String {
    let s = server.unwrap_or("docker.io");
    let s = s
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    s.split('/').next().unwrap_or(s).to_owned()
}

/// The stored credentials for `reference`'s registry, if any.
fn credentials_for(reference: &str) -> anyhow::Result<Option<credentials::Credentials>> {
    let Ok(r) = hull_client::oci::reference::parse(reference) else {
        // The daemon names a malformed reference.
        return Ok(None);
    };
    let path = credentials::config_path(std::path::Path::new(""));
    Ok(credentials::lookup(&path, &r.registry)?)
}

/// A reference as the store names images (`busybox` is
/// `docker.io/library/busybox:latest`); left as given when it does not
/// parse, so that the daemon's error names it.
fn normalise(name: &str) -> String {
    hull_client::oci::reference::normalize(name).unwrap_or_else(|_| name.to_owned())
}

fn main() -> ExitCode {
    // Started by containerd's shim as a container's logger.
    let args: Vec<String> = std::env::args().skip(1).collect();
    if hull_client::docker::is_log_driver(&args) {
        return ExitCode::from(hull_client::docker::run_log_driver(&args) as u8);
    }
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hullctl: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    // A read of stdin may still block a runtime thread: do not wait for it.
    rt.shutdown_background();
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if e.downcast_ref::<cli::Silent>().is_some() {
                // Already reported.
            } else if let Some(e) = e.downcast_ref::<hull_client::Error>() {
                // The daemon's message is the whole story.
                eprintln!("Error: {e}");
            } else {
                eprintln!("Error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent_and_completes() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let mut script = Vec::new();
        clap_complete::generate(
            clap_complete::Shell::Bash,
            &mut Cli::command(),
            "hullctl",
            &mut script,
        );
        let script = String::from_utf8(script).expect("text");
        for verb in [
            "run",
            "ps",
            "logs",
            "exec",
            "volume",
            "network",
            "snapshots",
        ] {
            assert!(script.contains(verb), "{verb}");
        }
        // Docker's flags parse as Docker's do.
        let cli = Cli::try_parse_from([
            "hullctl",
            "run",
            "-itd",
            "--rm",
            "--name",
            "db",
            "-p",
            "3307:3306",
            "-e",
            "K=V",
            "img",
            "sh",
            "-c",
            "x",
        ])
        .expect("parse");
        let Command::Docker(cmd) = cli.command else {
            panic!("not a docker verb")
        };
        assert!(matches!(*cmd, cli::DockerCommand::Run(_)));
    }
}
