//! Image transfers through hulld's Transfer API: pull (and tag), with
//! progress events streamed back while the transfer runs.

use prost::{Message as _, Name};
use prost_types::Any;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use hull_proto::containerd::services::streaming::v1::StreamInit;
use hull_proto::containerd::services::transfer::v1::{TransferOptions, TransferRequest};
use hull_proto::containerd::types::transfer::{
    ImageStore, OciRegistry, Progress, RegistryResolver, UnpackConfiguration,
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
            resolver: Some(RegistryResolver {
                host_dir: options.host_dir.clone(),
                default_scheme: options.default_scheme.clone(),
                ..Default::default()
            }),
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
