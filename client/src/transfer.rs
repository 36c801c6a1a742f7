//! Image transfers through hulld's Transfer API: pull (and tag), with
//! progress events streamed back while the transfer runs.

use prost::{Message as _, Name};
use prost_types::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use hull_proto::containerd::services::streaming::v1::StreamInit;
use hull_proto::containerd::services::transfer::v1::{TransferOptions, TransferRequest};
use hull_proto::containerd::types::transfer::{
    AuthRequest, AuthResponse, AuthType, Data, ImageExportStream, ImageImportStream, ImageStore,
    OciRegistry, Progress, RegistryResolver, UnpackConfiguration, WindowUpdate,
};
use hull_proto::containerd::types::Platform;
use hull_proto::typeurl;

use crate::{Client, Error};

/// What to pull and how.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Platforms (`os/arch[/variant]`); none means the daemon's host.
    pub platforms: Vec<String>,
    /// Every platform of an index.
    pub all_platforms: bool,
    /// Unpack into this snapshotter (empty: the daemon's default); None
    /// to fetch only.
    pub unpack: Option<String>,
    /// Directory of hosts.toml files instead of the daemon's.
    pub host_dir: String,
    /// `http` to reach unconfigured hosts over plain HTTP.
    pub default_scheme: String,
    /// Credentials handed to the daemon when the registry asks for them
    /// (through the Transfer API's auth stream); they win over the
    /// daemon's own.
    pub credentials: Option<hull_oci::credentials::Credentials>,
}

/// A platform string as the wire message.
///
/// # Errors
/// When it does not parse.
pub fn platform(text: &str) -> Result<Platform, hull_oci::platform::PlatformError> {
    let p = hull_oci::platform::parse(text)?;
    Ok(Platform {
        os: p.os().to_string(),
        architecture: p.architecture().to_string(),
        variant: p.variant().clone().unwrap_or_default(),
        os_version: String::new(),
    })
}

impl Client {
    /// Pulls `reference` on the daemon's side, calling `progress` for every
    /// event the daemon reports. Returns when the image is stored (and
    /// unpacked when asked).
    ///
    /// # Errors
    /// The daemon's error for the pull; InvalidArgument for a platform
    /// that does not parse.
    pub async fn pull(
        &self,
        reference: &str,
        options: &PullOptions,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<(), Error> {
        let mut platforms = Vec::new();
        for p in &options.platforms {
            platforms.push(platform(p).map_err(|e| {
                Error::Status(tonic::Status::invalid_argument(format!(
                    "platform {p:?}: {e}"
                )))
            })?);
        }
        let unpacks = match &options.unpack {
            Some(sn) => vec![UnpackConfiguration {
                platform: platforms.first().cloned(),
                snapshotter: sn.clone(),
            }],
            None => Vec::new(),
        };
        let source = OciRegistry {
            reference: reference.to_owned(),
            resolver: Some(self.resolver(options).await?),
        };
        let dest = ImageStore {
            name: String::new(),
            platforms,
            all_metadata: options.all_platforms,
            unpacks,
            ..Default::default()
        };
        self.transfer_with_progress(typeurl::pack(&source), typeurl::pack(&dest), &mut progress)
            .await
    }

    /// Pushes image `image` of the store to `reference` (empty: the
    /// image's own name), calling `progress` for every event.
    ///
    /// # Errors
    /// The daemon's error for the push.
    pub async fn push(
        &self,
        image: &str,
        reference: &str,
        options: &PullOptions,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<(), Error> {
        let source = ImageStore {
            name: image.to_owned(),
            ..Default::default()
        };
        let dest = OciRegistry {
            reference: if reference.is_empty() {
                image
            } else {
                reference
            }
            .to_owned(),
            resolver: Some(RegistryResolver {
                host_dir: options.host_dir.clone(),
                default_scheme: options.default_scheme.clone(),
                ..Default::default()
            }),
        };
        self.transfer_with_progress(typeurl::pack(&source), typeurl::pack(&dest), &mut progress)
            .await
    }

    /// Names `target` the image `source` names (docker tag).
    ///
    /// # Errors
    /// NotFound for an unknown source.
    pub async fn tag(&self, source: &str, target: &str) -> Result<(), Error> {
        let from = ImageStore {
            name: source.to_owned(),
            ..Default::default()
        };
        let to = ImageStore {
            name: target.to_owned(),
            ..Default::default()
        };
        self.transfer()
            .transfer(TransferRequest {
                source: Some(typeurl::pack(&from)),
                destination: Some(typeurl::pack(&to)),
                options: None,
            })
            .await?;
        Ok(())
    }

    /// Imports the archive (OCI layout or docker-archive tar) that
    /// `reader` yields, unpacking it when `unpack` names a snapshotter
    /// (empty: the daemon's default). Calls `progress` for every event;
    /// each image stored is a `saved` event naming it.
    ///
    /// # Errors
    /// The daemon's error for the archive; Unknown when `reader` fails.
    pub async fn import(
        &self,
        reader: impl tokio::io::AsyncRead + Send + Unpin + 'static,
        unpack: Option<String>,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<(), Error> {
        let (id, tx, mut inbound) = self.open_stream("import").await?;
        // Data within the windows the daemon grants, then the end.
        let pump = tokio::spawn(async move {
            use tokio::io::AsyncReadExt as _;
            let mut reader = reader;
            let mut credit: i64 = 0;
            let mut buf = vec![0u8; 32 << 10];
            loop {
                while credit <= 0 {
                    match inbound.message().await {
                        Ok(Some(any)) if any.type_url.ends_with(&WindowUpdate::full_name()) => {
                            if let Ok(w) = WindowUpdate::decode(any.value.as_slice()) {
                                credit += i64::from(w.update);
                            }
                        }
                        Ok(Some(_)) => {}
                        Ok(None) | Err(_) => return Ok(()),
                    }
                }
                let want = buf.len().min(usize::try_from(credit).unwrap_or(0));
                let n = reader.read(&mut buf[..want]).await?;
                if n == 0 {
                    // End of file: close our side, and keep the call open
                    // until the daemon has read everything and closes its
                    // own (dropping the call would cancel what is in
                    // flight).
                    drop(tx);
                    while let Ok(Some(_)) = inbound.message().await {}
                    return Ok(());
                }
                credit -= n as i64;
                let data = Data {
                    data: buf[..n].to_vec(),
                };
                if tx.send(typeurl::pack(&data)).await.is_err() {
                    return Ok(());
                }
            }
        });
        let source = ImageImportStream {
            stream: id,
            media_type: String::new(),
            force_compress: false,
        };
        let dest = ImageStore {
            unpacks: unpack
                .map(|sn| {
                    vec![UnpackConfiguration {
                        platform: None,
                        snapshotter: sn,
                    }]
                })
                .unwrap_or_default(),
            ..Default::default()
        };
        let result = self
            .transfer_with_progress(typeurl::pack(&source), typeurl::pack(&dest), &mut progress)
            .await;
        if let Ok(Err(e)) = pump.await {
            let e: std::io::Error = e;
            return Err(Error::Status(tonic::Status::unknown(format!(
                "read archive: {e}"
            ))));
        }
        result
    }

    /// Exports `images` as one archive (OCI layout with docker's
    /// manifest.json beside it) into `writer`; `all_platforms` keeps every
    /// platform present, else the daemon exports every one present too
    /// unless `platforms` narrows it.
    ///
    /// # Errors
    /// The daemon's error (NotFound for an unknown image); Unknown when
    /// `writer` fails.
    pub async fn export(
        &self,
        images: &[String],
        platforms: &[String],
        writer: impl tokio::io::AsyncWrite + Send + Unpin + 'static,
    ) -> Result<(), Error> {
        let mut wanted = Vec::new();
        for p in platforms {
            wanted.push(platform(p).map_err(|e| {
                Error::Status(tonic::Status::invalid_argument(format!(
                    "platform {p:?}: {e}"
                )))
            })?);
        }
        let (id, tx, mut inbound) = self.open_stream("export").await?;
        const WINDOW: i32 = 64 << 10;
        tx.send(typeurl::pack(&WindowUpdate { update: WINDOW }))
            .await
            .map_err(|_| Error::Status(tonic::Status::unavailable("export stream closed")))?;
        let pump = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt as _;
            let mut writer = writer;
            let mut window = i64::from(WINDOW);
            while let Ok(Some(any)) = inbound.message().await {
                if !any.type_url.ends_with(&Data::full_name()) {
                    continue;
                }
                let Ok(d) = Data::decode(any.value.as_slice()) else {
                    break;
                };
                writer.write_all(&d.data).await?;
                window -= d.data.len() as i64;
                if window < i64::from(WINDOW)
                    && tx
                        .send(typeurl::pack(&WindowUpdate { update: WINDOW }))
                        .await
                        .is_ok()
                {
                    window += i64::from(WINDOW);
                }
            }
            writer.flush().await?;
            Ok::<(), std::io::Error>(())
        });
        let source = ImageStore {
            export_images: images.to_vec(),
            ..Default::default()
        };
        let dest = ImageExportStream {
            stream: id,
            media_type: String::new(),
            platforms: wanted,
            all_platforms: platforms.is_empty(),
            skip_docker_manifest: false,
            skip_non_distributable: false,
        };
        let result = self
            .transfer()
            .transfer(TransferRequest {
                source: Some(typeurl::pack(&source)),
                destination: Some(typeurl::pack(&dest)),
                options: None,
            })
            .await;
        if let Ok(Err(e)) = pump.await {
            return Err(Error::Status(tonic::Status::unknown(format!(
                "write archive: {e}"
            ))));
        }
        result.map(|_| ()).map_err(Error::Status)
    }

    /// The resolver settings of `options`; with credentials, an auth
    /// stream that answers each of the daemon's AuthRequests with them.
    async fn resolver(&self, options: &PullOptions) -> Result<RegistryResolver, Error> {
        let mut resolver = RegistryResolver {
            host_dir: options.host_dir.clone(),
            default_scheme: options.default_scheme.clone(),
            ..Default::default()
        };
        if let Some(creds) = options.credentials.clone() {
            let (id, tx, mut inbound) = self.open_stream("auth").await?;
            tokio::spawn(async move {
                while let Ok(Some(any)) = inbound.message().await {
                    if !any.type_url.ends_with(&AuthRequest::full_name()) {
                        continue;
                    }
                    let answer = AuthResponse {
                        auth_type: AuthType::Credentials as i32,
                        secret: creds.password.clone(),
                        username: creds.username.clone(),
                        expire_at: None,
                    };
                    if tx.send(typeurl::pack(&answer)).await.is_err() {
                        break;
                    }
                }
            });
            resolver.auth_stream = id;
        }
        Ok(resolver)
    }

    /// Opens a stream on the Streaming service and waits for the daemon
    /// to take it: its id, the sender of messages, the messages back.
    async fn open_stream(
        &self,
        what: &str,
    ) -> Result<(String, mpsc::Sender<Any>, tonic::Streaming<Any>), Error> {
        let id = format!("{what}-{}-{}", std::process::id(), nanos());
        let (tx, rx) = mpsc::channel::<Any>(8);
        tx.send(typeurl::pack(&StreamInit { id: id.clone() }))
            .await
            .map_err(|_| Error::Status(tonic::Status::internal("stream closed")))?;
        let mut inbound = self
            .streaming()
            .stream(ReceiverStream::new(rx))
            .await?
            .into_inner();
        // The acknowledgement of the StreamInit.
        inbound.message().await?;
        Ok((id, tx, inbound))
    }

    /// Runs one transfer with a progress stream, handing each event to
    /// `progress` as it arrives.
    async fn transfer_with_progress(
        &self,
        source: Any,
        destination: Any,
        progress: &mut (dyn FnMut(Progress) + Send),
    ) -> Result<(), Error> {
        // A progress stream first, so that the transfer can name it.
        let id = format!("pull-{}-{}", std::process::id(), nanos());
        let (tx, rx) = mpsc::channel::<Any>(4);
        let init = typeurl::pack(&StreamInit { id: id.clone() });
        tx.send(init)
            .await
            .map_err(|_| Error::Status(tonic::Status::internal("progress stream closed")))?;
        let mut events = self
            .streaming()
            .stream(ReceiverStream::new(rx))
            .await?
            .into_inner();
        // The acknowledgement of the StreamInit.
        events.message().await?;
        let transfer = {
            let mut t = self.transfer();
            let req = TransferRequest {
                source: Some(source),
                destination: Some(destination),
                options: Some(TransferOptions {
                    progress_stream: id,
                }),
            };
            async move { t.transfer(req).await }
        };
        tokio::pin!(transfer);
        let result = loop {
            tokio::select! {
                r = &mut transfer => break r,
                msg = events.message() => match msg {
                    Ok(Some(any)) if any.type_url.ends_with(&Progress::full_name()) => {
                        if let Ok(p) = Progress::decode(any.value.as_slice()) {
                            progress(p);
                        }
                    }
                    Ok(Some(_)) => {}
                    // The stream ended or failed: the transfer's answer tells.
                    Ok(None) | Err(_) => break transfer.await,
                },
            }
        };
        // Events still queued when the transfer returned.
        drop(tx);
        while let Ok(Some(any)) = events.message().await {
            if let Ok(p) = Progress::decode(any.value.as_slice()) {
                progress(p);
            }
        }
        result.map(|_| ()).map_err(Error::Status)
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}
