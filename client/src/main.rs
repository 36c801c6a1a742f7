//! hullctl: hull's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use hull_client::Client;
use hull_proto::containerd::services::content::v1::ListContentRequest;
use hull_proto::containerd::services::images::v1::ListImagesRequest;
use hull_proto::containerd::services::namespaces::v1::ListNamespacesRequest;

/// Talk to hulld (or containerd).
#[derive(Debug, Parser)]
#[command(name = "hullctl", version)]
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

#[derive(Debug, Subcommand)]
enum Command {
    /// Print client and server versions.
    Version,
    /// List namespaces.
    Namespaces,
    /// List images.
    Images,
    /// List blobs.
    Content,
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let client = Client::connect(&cli.address)
        .await?
        .with_namespace(&cli.namespace);
    match cli.command {
        Command::Version => {
            let v = client.version().version(()).await?.into_inner();
            println!(
                "client: {}\nserver: {} ({})",
                env!("CARGO_PKG_VERSION"),
                v.version,
                v.revision
            );
        }
        Command::Namespaces => {
            let list = client
                .namespaces()
                .list(ListNamespacesRequest::default())
                .await?
                .into_inner();
            println!("NAME");
            for ns in list.namespaces {
                println!("{}", ns.name);
            }
        }
        Command::Images => {
            let list = client
                .images()
                .list(ListImagesRequest::default())
                .await?
                .into_inner();
            println!("{:<50} {:<72} SIZE", "REF", "DIGEST");
            for i in list.images {
                let t = i.target.unwrap_or_default();
                println!("{:<50} {:<72} {}", i.name, t.digest, t.size);
            }
        }
        Command::Content => {
            let mut stream = client
                .content()
                .list(ListContentRequest::default())
                .await?
                .into_inner();
            println!("{:<72} SIZE", "DIGEST");
            while let Some(batch) = stream.message().await? {
                for i in batch.info {
                    println!("{:<72} {}", i.digest, i.size);
                }
            }
        }
    }
    Ok(())
}

fn main() -> ExitCode {
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
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hullctl: {e:#}");
            ExitCode::FAILURE
        }
    }
}
