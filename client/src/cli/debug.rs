//! ctr's groups, for debugging: the containerd objects as they are
//! (plugins, namespaces, images, content, snapshots, containers, tasks,
//! leases, events), with ctr's columns.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;
use hull_client::docker::{human_duration, human_size, repo_tag, short, Docker};
use hull_client::Client;
use hull_proto::containerd::services::containers::v1::{
    DeleteContainerRequest, GetContainerRequest, ListContainersRequest,
};
use hull_proto::containerd::services::content::v1::{
    DeleteContentRequest, InfoRequest, ListContentRequest,
};
use hull_proto::containerd::services::events::v1::SubscribeRequest;
use hull_proto::containerd::services::images::v1::{
    DeleteImageRequest, GetImageRequest, ListImagesRequest, UpdateImageRequest,
};
use hull_proto::containerd::services::introspection::v1::PluginsRequest;
use hull_proto::containerd::services::leases::v1::{
    CreateRequest as CreateLeaseRequest, DeleteRequest as DeleteLeaseRequest,
    ListRequest as ListLeasesRequest,
};
use hull_proto::containerd::services::namespaces::v1::{
    CreateNamespaceRequest, DeleteNamespaceRequest, ListNamespacesRequest, Namespace,
};
use hull_proto::containerd::services::snapshots::v1::{
    ListSnapshotsRequest, MountsRequest, RemoveSnapshotRequest, StatSnapshotRequest, UsageRequest,
    ViewSnapshotRequest,
};
use hull_proto::containerd::services::tasks::v1::{
    DeleteTaskRequest, KillRequest, ListPidsRequest, ListTasksRequest,
};
use hull_proto::containerd::v1::types::Status as TaskStatus;

use super::table::Table;

/// ctr's object groups.
#[derive(Debug, Subcommand)]
pub enum DebugCommand {
    /// List the daemon's plugins.
    Plugins,
    /// Namespaces (lists them without a subcommand).
    Namespaces {
        #[command(subcommand)]
        cmd: Option<NamespacesCommand>,
    },
    /// Images (Docker's list without a subcommand).
    Images {
        /// Only image ids.
        #[arg(long, short = 'q')]
        quiet: bool,
        /// Do not truncate ids.
        #[arg(long)]
        no_trunc: bool,
        #[command(subcommand)]
        cmd: Option<ImagesCommand>,
    },
    /// Blobs (lists them without a subcommand).
    Content {
        #[command(subcommand)]
        cmd: Option<ContentCommand>,
    },
    /// Snapshots of a snapshotter.
    Snapshots {
        /// Snapshotter.
        #[arg(long, default_value = "overlayfs")]
        snapshotter: String,
        #[command(subcommand)]
        cmd: Option<SnapshotsCommand>,
    },
    /// Container records.
    Containers {
        #[command(subcommand)]
        cmd: Option<ContainersCommand>,
    },
    /// Tasks.
    Tasks {
        #[command(subcommand)]
        cmd: Option<TasksCommand>,
    },
    /// Leases.
    Leases {
        #[command(subcommand)]
        cmd: Option<LeasesCommand>,
    },
    /// Print events as they happen.
    Events,
}

/// `namespaces …`.
#[derive(Debug, Subcommand)]
pub enum NamespacesCommand {
    /// List.
    Ls,
    /// Create.
    Create {
        /// Name.
        name: String,
    },
    /// Remove (only when empty).
    Rm {
        /// Names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `images …`.
#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// List, as ctr does.
    Ls {
        /// Only names.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Import a tar archive (OCI layout or docker save).
    Import {
        /// The archive.
        file: PathBuf,
    },
    /// Export images to a tar archive.
    Export {
        /// The archive to write.
        file: PathBuf,
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Name an image again.
    Tag {
        /// Existing image.
        source: String,
        /// New name.
        target: String,
    },
    /// Remove image records.
    Rm {
        /// Images.
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Set (KEY=VALUE) or remove (KEY=) labels.
    Label {
        /// Image.
        image: String,
        /// Labels.
        labels: Vec<String>,
    },
    /// Check that every blob of each image is present.
    Check,
    /// Bytes an image's blobs and unpacked layers take.
    Usage {
        /// Image.
        image: String,
    },
    /// Mount an image's root read-only on a directory.
    Mount {
        /// Image.
        image: String,
        /// Directory.
        target: PathBuf,
    },
    /// Unmount a directory mounted by `images mount`.
    Unmount {
        /// Directory.
        target: PathBuf,
    },
}

/// `content …`.
#[derive(Debug, Subcommand)]
pub enum ContentCommand {
    /// List blobs.
    Ls,
    /// Remove blobs.
    Rm {
        /// Digests.
        #[arg(required = true)]
        digests: Vec<String>,
    },
}

/// `snapshots …`.
#[derive(Debug, Subcommand)]
pub enum SnapshotsCommand {
    /// List.
    Ls,
    /// One snapshot's record.
    Info {
        /// Key.
        key: String,
    },
    /// Disk use.
    Usage {
        /// Key (all when none).
        key: Option<String>,
    },
    /// Its mounts, as the mount commands that would mount it.
    Mounts {
        /// Directory.
        target: PathBuf,
        /// Key.
        key: String,
    },
    /// Remove.
    Rm {
        /// Keys.
        #[arg(required = true)]
        keys: Vec<String>,
    },
}

/// `containers …`.
#[derive(Debug, Subcommand)]
pub enum ContainersCommand {
    /// List.
    Ls,
    /// One record as JSON.
    Info {
        /// Id.
        id: String,
    },
    /// Remove records (their tasks must be gone).
    Rm {
        /// Ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// `tasks …`.
#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// List.
    Ls,
    /// A task's processes.
    Ps {
        /// Container id.
        id: String,
    },
    /// Signal a task.
    Kill {
        /// Signal.
        #[arg(long, short = 's', default_value = "TERM")]
        signal: String,
        /// Every process of the task.
        #[arg(long, short = 'a')]
        all: bool,
        /// Container id.
        id: String,
    },
    /// Delete stopped tasks.
    Rm {
        /// Container ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// `leases …`.
#[derive(Debug, Subcommand)]
pub enum LeasesCommand {
    /// List.
    Ls,
    /// Create one (prints its id).
    Create {
        /// Id (generated when none).
        #[arg(long, default_value = "")]
        id: String,
        /// Expire after this long (e.g. 1h).
        #[arg(long)]
        expires: Option<String>,
    },
    /// Remove.
    Rm {
        /// Ids.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

fn ts(t: &Option<prost_types::Timestamp>) -> String {
    t.and_then(|t| std::time::SystemTime::try_from(t).ok())
        .map(|t| humantime::format_rfc3339_seconds(t).to_string())
        .unwrap_or_default()
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    if l.is_empty() {
        return "-".into();
    }
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs one debug verb.
pub async fn run_debug(client: &Client, d: &Docker, cmd: DebugCommand) -> anyhow::Result<()> {
    match cmd {
        DebugCommand::Plugins => {
            let list = client
                .introspection()
                .plugins(PluginsRequest::default())
                .await?
                .into_inner();
            let mut t = Table::new(&["TYPE", "ID", "PLATFORMS", "STATUS"]);
            for p in list.plugins {
                let platforms = p
                    .platforms
                    .iter()
                    .map(|p| format!("{}/{}", p.os, p.architecture))
                    .collect::<Vec<_>>()
                    .join(",");
                let status = if p.init_err.is_some() { "error" } else { "ok" };
                t.row(vec![
                    p.r#type,
                    p.id,
                    if platforms.is_empty() {
                        "-".into()
                    } else {
                        platforms
                    },
                    status.into(),
                ]);
            }
            t.print();
        }
        DebugCommand::Namespaces { cmd } => match cmd.unwrap_or(NamespacesCommand::Ls) {
            NamespacesCommand::Ls => {
                let list = client
                    .namespaces()
                    .list(ListNamespacesRequest::default())
                    .await?
                    .into_inner();
                let mut t = Table::new(&["NAME", "LABELS"]);
                for ns in list.namespaces {
                    t.row(vec![ns.name, labels_text(&ns.labels)]);
                }
                t.print();
            }
            NamespacesCommand::Create { name } => {
                client
                    .namespaces()
                    .create(CreateNamespaceRequest {
                        namespace: Some(Namespace {
                            name,
                            labels: Default::default(),
                        }),
                    })
                    .await?;
            }
            NamespacesCommand::Rm { names } => {
                for name in names {
                    client
                        .namespaces()
                        .delete(DeleteNamespaceRequest { name: name.clone() })
                        .await?;
                    println!("{name}");
                }
            }
        },
        DebugCommand::Images {
            quiet,
            no_trunc,
            cmd,
        } => images(client, d, quiet, no_trunc, cmd).await?,
        DebugCommand::Content { cmd } => match cmd.unwrap_or(ContentCommand::Ls) {
            ContentCommand::Ls => {
                let mut stream = client
                    .content()
                    .list(ListContentRequest::default())
                    .await?
                    .into_inner();
                let mut t = Table::new(&["DIGEST", "SIZE", "AGE", "LABELS"]);
                while let Some(batch) = stream.message().await? {
                    for i in batch.info {
                        let age = i
                            .created_at
                            .and_then(|c| std::time::SystemTime::try_from(c).ok())
                            .and_then(|c| std::time::SystemTime::now().duration_since(c).ok())
                            .map(human_duration)
                            .unwrap_or_default();
                        t.row(vec![
                            i.digest,
                            human_size(i.size.max(0) as u64),
                            age,
                            labels_text(&i.labels),
                        ]);
                    }
                }
                t.print();
            }
            ContentCommand::Rm { digests } => {
                for digest in digests {
                    client
                        .content()
                        .delete(DeleteContentRequest {
                            digest: digest.clone(),
                        })
                        .await?;
                    println!("{digest}");
                }
            }
        },
        DebugCommand::Snapshots { snapshotter, cmd } => {
            snapshots(client, &snapshotter, cmd).await?
        }
        DebugCommand::Containers { cmd } => match cmd.unwrap_or(ContainersCommand::Ls) {
            ContainersCommand::Ls => {
                let list = client
                    .containers()
                    .list(ListContainersRequest::default())
                    .await?
                    .into_inner();
                let mut t = Table::new(&["CONTAINER", "IMAGE", "RUNTIME"]);
                for c in list.containers {
                    let runtime = c.runtime.map(|r| r.name).unwrap_or_default();
                    t.row(vec![
                        c.id,
                        if c.image.is_empty() {
                            "-".into()
                        } else {
                            c.image
                        },
                        runtime,
                    ]);
                }
                t.print();
            }
            ContainersCommand::Info { id } => {
                let c = client
                    .containers()
                    .get(GetContainerRequest { id })
                    .await?
                    .into_inner()
                    .container
                    .unwrap_or_default();
                let spec: serde_json::Value = c
                    .spec
                    .as_ref()
                    .and_then(|s| serde_json::from_slice(&s.value).ok())
                    .unwrap_or(serde_json::Value::Null);
                let out = serde_json::json!({
                    "ID": c.id,
                    "Labels": c.labels,
                    "Image": c.image,
                    "Runtime": { "Name": c.runtime.map(|r| r.name).unwrap_or_default() },
                    "SnapshotKey": c.snapshot_key,
                    "Snapshotter": c.snapshotter,
                    "CreatedAt": ts(&c.created_at),
                    "UpdatedAt": ts(&c.updated_at),
                    "Spec": spec,
                });
                println!("{}", serde_json::to_string_pretty(&out)?);
            }
            ContainersCommand::Rm { ids } => {
                for id in ids {
                    client
                        .containers()
                        .delete(DeleteContainerRequest { id: id.clone() })
                        .await?;
                    println!("{id}");
                }
            }
        },
        DebugCommand::Tasks { cmd } => match cmd.unwrap_or(TasksCommand::Ls) {
            TasksCommand::Ls => {
                let list = client
                    .tasks()
                    .list(ListTasksRequest::default())
                    .await?
                    .into_inner();
                let mut t = Table::new(&["TASK", "PID", "STATUS"]);
                for p in list.tasks {
                    let status = TaskStatus::try_from(p.status)
                        .map(|s| s.as_str_name().to_owned())
                        .unwrap_or_else(|_| "UNKNOWN".into());
                    t.row(vec![p.id, p.pid.to_string(), status]);
                }
                t.print();
            }
            TasksCommand::Ps { id } => {
                let list = client
                    .tasks()
                    .list_pids(ListPidsRequest { container_id: id })
                    .await?
                    .into_inner();
                let mut t = Table::new(&["PID", "INFO"]);
                for p in list.processes {
                    t.row(vec![p.pid.to_string(), "-".into()]);
                }
                t.print();
            }
            TasksCommand::Kill { signal, all, id } => {
                let signal = hull_client::docker::parse_signal(&signal)?;
                client
                    .tasks()
                    .kill(KillRequest {
                        container_id: id,
                        exec_id: String::new(),
                        signal,
                        all,
                    })
                    .await?;
            }
            TasksCommand::Rm { ids } => {
                for id in ids {
                    let r = client
                        .tasks()
                        .delete(DeleteTaskRequest {
                            container_id: id.clone(),
                        })
                        .await?
                        .into_inner();
                    println!("{id} exited with {}", r.exit_status);
                }
            }
        },
        DebugCommand::Leases { cmd } => match cmd.unwrap_or(LeasesCommand::Ls) {
            LeasesCommand::Ls => {
                let list = client
                    .leases()
                    .list(ListLeasesRequest::default())
                    .await?
                    .into_inner();
                let mut t = Table::new(&["ID", "CREATED AT", "LABELS"]);
                for l in list.leases {
                    t.row(vec![l.id, ts(&l.created_at), labels_text(&l.labels)]);
                }
                t.print();
            }
            LeasesCommand::Create { id, expires } => {
                let mut labels = std::collections::BTreeMap::new();
                if let Some(e) = expires {
                    let d = humantime::parse_duration(&e)
                        .map_err(|err| anyhow::anyhow!("--expires {e:?}: {err}"))?;
                    let at = std::time::SystemTime::now() + d;
                    labels.insert(
                        "containerd.io/gc.expire".to_owned(),
                        humantime::format_rfc3339_seconds(at).to_string(),
                    );
                }
                let l = client
                    .leases()
                    .create(CreateLeaseRequest { id, labels })
                    .await?
                    .into_inner();
                println!("{}", l.lease.map(|l| l.id).unwrap_or_default());
            }
            LeasesCommand::Rm { ids } => {
                for id in ids {
                    client
                        .leases()
                        .delete(DeleteLeaseRequest {
                            id: id.clone(),
                            sync: false,
                        })
                        .await?;
                    println!("{id}");
                }
            }
        },
        DebugCommand::Events => {
            let mut stream = client
                .events()
                .subscribe(SubscribeRequest::default())
                .await?
                .into_inner();
            use std::io::Write;
            while let Some(e) = stream.message().await? {
                let event = e.event.map(|a| a.type_url).unwrap_or_default();
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "{} {} {} {}",
                    ts(&e.timestamp),
                    e.namespace,
                    e.topic,
                    event
                );
                let _ = out.flush();
            }
        }
    }
    Ok(())
}

async fn images(
    client: &Client,
    d: &Docker,
    quiet: bool,
    no_trunc: bool,
    cmd: Option<ImagesCommand>,
) -> anyhow::Result<()> {
    match cmd {
        None => {
            let list = d.images().await?;
            if quiet {
                for (s, _) in &list {
                    println!("{}", if no_trunc { s.id.clone() } else { short(&s.id) });
                }
                return Ok(());
            }
            let mut t = Table::new(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
            for (s, _) in list {
                let created = s
                    .created
                    .and_then(|c| std::time::SystemTime::now().duration_since(c).ok())
                    .map(|c| format!("{} ago", human_duration(c)))
                    .unwrap_or_else(|| "N/A".into());
                let id = if no_trunc { s.id.clone() } else { short(&s.id) };
                t.row(vec![s.repository, s.tag, id, created, human_size(s.size)]);
            }
            t.print();
        }
        Some(ImagesCommand::Ls { quiet }) => {
            let list = client
                .images()
                .list(ListImagesRequest::default())
                .await?
                .into_inner();
            if quiet {
                list.images.iter().for_each(|i| println!("{}", i.name));
                return Ok(());
            }
            let mut t = Table::new(&["REF", "TYPE", "DIGEST", "SIZE", "LABELS"]);
            for i in list.images {
                let target = i.target.unwrap_or_default();
                t.row(vec![
                    i.name,
                    target.media_type,
                    target.digest,
                    human_size(target.size.max(0) as u64),
                    labels_text(&i.labels),
                ]);
            }
            t.print();
        }
        Some(ImagesCommand::Import { file }) => {
            let f = tokio::fs::File::open(&file)
                .await
                .map_err(|e| anyhow::anyhow!("open {}: {e}", file.display()))?;
            client
                .import(f, Some(String::new()), |p| {
                    if p.event == "saved" {
                        println!("unpacked {}", p.name);
                    }
                })
                .await?;
        }
        Some(ImagesCommand::Export { file, images }) => {
            let images: Vec<String> = images
                .iter()
                .map(|i| hull_client::docker::normalize(i))
                .collect();
            let f = tokio::fs::File::create(&file)
                .await
                .map_err(|e| anyhow::anyhow!("create {}: {e}", file.display()))?;
            client.export(&images, &[], f).await?;
        }
        Some(ImagesCommand::Tag { source, target }) => {
            let (s, t) = (
                hull_client::docker::normalize(&source),
                hull_client::docker::normalize(&target),
            );
            client.tag(&s, &t).await?;
            println!("{t}");
        }
        Some(ImagesCommand::Rm { images }) => {
            for i in images {
                let name = hull_client::docker::normalize(&i);
                client
                    .images()
                    .delete(DeleteImageRequest {
                        name: name.clone(),
                        sync: false,
                    })
                    .await?;
                println!("{name}");
            }
        }
        Some(ImagesCommand::Label { image, labels }) => {
            let name = hull_client::docker::normalize(&image);
            let mut img = client
                .images()
                .get(GetImageRequest { name: name.clone() })
                .await?
                .into_inner()
                .image
                .unwrap_or_default();
            let mut paths = Vec::new();
            for l in &labels {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                if v.is_empty() {
                    img.labels.remove(k);
                } else {
                    img.labels.insert(k.to_owned(), v.to_owned());
                }
                paths.push(format!("labels.{k}"));
            }
            let img = client
                .images()
                .update(UpdateImageRequest {
                    image: Some(img),
                    update_mask: Some(prost_types::FieldMask { paths }),
                })
                .await?
                .into_inner()
                .image
                .unwrap_or_default();
            println!("{}", labels_text(&img.labels));
        }
        Some(ImagesCommand::Check) => {
            let mut t = Table::new(&["REF", "STATUS", "MISSING"]);
            for (s, img) in d.images().await? {
                let mut missing = 0;
                let mut digests = vec![img.manifest_digest.clone(), img.config_digest.clone()];
                digests.extend(img.manifest.layers().iter().map(|l| l.digest().to_string()));
                for dg in digests {
                    if client
                        .content()
                        .info(InfoRequest { digest: dg })
                        .await
                        .is_err()
                    {
                        missing += 1;
                    }
                }
                let status = if missing == 0 {
                    "complete"
                } else {
                    "incomplete"
                };
                t.row(vec![s.name, status.into(), missing.to_string()]);
            }
            t.print();
        }
        Some(ImagesCommand::Usage { image }) => {
            let img = d.image(&image).await?;
            let blobs: u64 = img.manifest.layers().iter().map(|l| l.size()).sum::<u64>()
                + img.manifest.config().size();
            let diff_ids = img.config.rootfs().diff_ids().clone();
            let mut unpacked = 0u64;
            for i in 1..=diff_ids.len() {
                let key = hull_client::docker::chain_id(&diff_ids[..i]);
                if let Ok(u) = client
                    .snapshots()
                    .usage(UsageRequest {
                        snapshotter: "overlayfs".into(),
                        key,
                    })
                    .await
                {
                    unpacked += u.into_inner().size.max(0) as u64;
                }
            }
            let (repo, tag) = repo_tag(&img.name);
            println!(
                "{repo}:{tag}: blobs {} unpacked {}",
                human_size(blobs),
                human_size(unpacked)
            );
        }
        Some(ImagesCommand::Mount { image, target }) => {
            let img = d.image(&image).await?;
            let key = format!("mount-{}", target.display());
            let mounts = client
                .snapshots()
                .view(ViewSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key,
                    parent: img.chain_id.clone(),
                    labels: [("containerd.io/gc.root".to_owned(), "true".to_owned())].into(),
                })
                .await?
                .into_inner()
                .mounts;
            std::fs::create_dir_all(&target)?;
            for m in mounts {
                let status = std::process::Command::new("mount")
                    .args(["-t", &m.r#type, &m.source])
                    .arg(&target)
                    .args(["-o", &m.options.join(",")])
                    .status()?;
                anyhow::ensure!(status.success(), "mount {} failed", target.display());
            }
            println!("{}", target.display());
        }
        Some(ImagesCommand::Unmount { target }) => {
            let status = std::process::Command::new("umount").arg(&target).status()?;
            anyhow::ensure!(status.success(), "umount {} failed", target.display());
            let key = format!("mount-{}", target.display());
            client
                .snapshots()
                .remove(RemoveSnapshotRequest {
                    snapshotter: "overlayfs".into(),
                    key,
                })
                .await?;
            println!("{}", target.display());
        }
    }
    Ok(())
}

async fn snapshots(client: &Client, sn: &str, cmd: Option<SnapshotsCommand>) -> anyhow::Result<()> {
    match cmd.unwrap_or(SnapshotsCommand::Ls) {
        SnapshotsCommand::Ls => {
            let mut stream = client
                .snapshots()
                .list(ListSnapshotsRequest {
                    snapshotter: sn.to_owned(),
                    filters: vec![],
                })
                .await?
                .into_inner();
            let mut t = Table::new(&["KEY", "PARENT", "KIND"]);
            while let Some(batch) = stream.message().await? {
                for i in batch.info {
                    let kind = match i.kind {
                        1 => "View",
                        2 => "Active",
                        3 => "Committed",
                        _ => "Unknown",
                    };
                    t.row(vec![i.name, i.parent, kind.into()]);
                }
            }
            t.print();
        }
        SnapshotsCommand::Info { key } => {
            let i = client
                .snapshots()
                .stat(StatSnapshotRequest {
                    snapshotter: sn.to_owned(),
                    key,
                })
                .await?
                .into_inner()
                .info
                .unwrap_or_default();
            let out = serde_json::json!({
                "Kind": i.kind, "Name": i.name, "Parent": i.parent, "Labels": i.labels,
                "Created": ts(&i.created_at), "Updated": ts(&i.updated_at),
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        SnapshotsCommand::Usage { key } => {
            let keys = match key {
                Some(k) => vec![k],
                None => {
                    let mut stream = client
                        .snapshots()
                        .list(ListSnapshotsRequest {
                            snapshotter: sn.to_owned(),
                            filters: vec![],
                        })
                        .await?
                        .into_inner();
                    let mut keys = Vec::new();
                    while let Some(b) = stream.message().await? {
                        keys.extend(b.info.into_iter().map(|i| i.name));
                    }
                    keys
                }
            };
            let mut t = Table::new(&["KEY", "SIZE", "INODES"]);
            for k in keys {
                let u = client
                    .snapshots()
                    .usage(UsageRequest {
                        snapshotter: sn.to_owned(),
                        key: k.clone(),
                    })
                    .await?
                    .into_inner();
                t.row(vec![
                    k,
                    human_size(u.size.max(0) as u64),
                    u.inodes.to_string(),
                ]);
            }
            t.print();
        }
        SnapshotsCommand::Mounts { target, key } => {
            let mounts = client
                .snapshots()
                .mounts(MountsRequest {
                    snapshotter: sn.to_owned(),
                    key,
                })
                .await?
                .into_inner()
                .mounts;
            for m in mounts {
                println!(
                    "mount -t {} {} {} -o {}",
                    m.r#type,
                    m.source,
                    target.display(),
                    m.options.join(",")
                );
            }
        }
        SnapshotsCommand::Rm { keys } => {
            for key in keys {
                client
                    .snapshots()
                    .remove(RemoveSnapshotRequest {
                        snapshotter: sn.to_owned(),
                        key: key.clone(),
                    })
                    .await?;
                println!("{key}");
            }
        }
    }
    Ok(())
}
