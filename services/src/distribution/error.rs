//! What can go wrong talking to registries, with the code clients see.

use hull_proto::errdefs::{Classify, Kind};
use thiserror::Error;

/// An error of the distribution module.
#[derive(Debug, Error)]
pub enum DistributionError {
    /// The reference does not parse.
    #[error("invalid reference {text:?}")]
    Reference {
        /// What was given.
        text: String,
        /// Why it is refused.
        #[source]
        source: hull_oci::oci_spec::distribution::ParseError,
    },
    /// A hosts.toml or certificate file cannot be used.
    #[error("registry host config {path}: {reason}")]
    HostConfig {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The host could not be reached (unknown name, refused, TLS failure,
    /// dropped connection).
    #[error("{url}: {}", describe(source))]
    Connect {
        /// What was asked for.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// The registry refused the credentials, or wants some.
    #[error("{url}: {status}: {}", if *with_credentials { "the registry refused the credentials given" } else { "the registry needs credentials and none are configured for this host" })]
    Unauthorized {
        /// What was asked for.
        url: String,
        /// 401 or 403.
        status: u16,
        /// Whether credentials were sent.
        with_credentials: bool,
    },
    /// The registry does not have it.
    #[error("{what} {name}: not found")]
    NotFound {
        /// "manifest", "blob", ...
        what: &'static str,
        /// The reference or digest.
        name: String,
    },
    /// No manifest of the index matches the platforms asked for.
    #[error("{reference}: no manifest for platform {platforms}")]
    PlatformNotFound {
        /// The image.
        reference: String,
        /// The platforms asked for.
        platforms: String,
    },
    /// A blob's bytes are not what its descriptor says.
    #[error("{digest}: content does not match its descriptor: {reason}")]
    Verify {
        /// The blob.
        digest: String,
        /// Digest or size mismatch.
        reason: String,
    },
    /// The registry answered something else than the protocol allows.
    #[error("{url}: unexpected response {status}: {body}")]
    Protocol {
        /// What was asked for.
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of the body.
        body: String,
    },
    /// A manifest, index or config that does not parse.
    #[error("{digest}: malformed {what}")]
    Document {
        /// The blob.
        digest: String,
        /// "manifest", "index", "config".
        what: &'static str,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A media type hull cannot pull.
    #[error("{digest}: unsupported media type {media_type:?}")]
    MediaType {
        /// The blob.
        digest: String,
        /// Its media type.
        media_type: String,
    },
    /// Credentials could not be read (config.json, a credential helper).
    #[error("credentials for {host}: {reason}")]
    Credentials {
        /// The registry host.
        host: String,
        /// What failed.
        reason: String,
    },
    /// A store of hulld failed (content, snapshots, images, leases).
    #[error("{op}: {status}")]
    Store {
        /// What was being done.
        op: String,
        /// The service's answer.
        status: Box<tonic::Status>,
    },
}

impl DistributionError {
    /// A service's error while doing `op`.
    pub fn store(op: impl Into<String>) -> impl FnOnce(tonic::Status) -> DistributionError {
        let op = op.into();
        move |status| DistributionError::Store {
            op,
            status: Box::new(status),
        }
    }
}

/// Names the cause the way a person can act on: the deepest source.
fn describe(err: &reqwest::Error) -> String {
    let mut text = if err.is_connect() {
        "cannot connect".to_owned()
    } else if err.is_timeout() {
        "timed out".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        let t = s.to_string();
        if !text.ends_with(&t) {
            text.push_str(": ");
            text.push_str(&t);
        }
        source = s.source();
    }
    text
}

impl Classify for DistributionError {
    fn kind(&self) -> Kind {
        match self {
            DistributionError::Reference { .. } => Kind::InvalidArgument,
            DistributionError::HostConfig { .. } => Kind::FailedPrecondition,
            DistributionError::Connect { .. } => Kind::Unavailable,
            DistributionError::Unauthorized { status: 403, .. } => Kind::PermissionDenied,
            DistributionError::Unauthorized { .. } => Kind::Unauthenticated,
            DistributionError::NotFound { .. } | DistributionError::PlatformNotFound { .. } => {
                Kind::NotFound
            }
            DistributionError::Verify { .. } => Kind::DataLoss,
            DistributionError::Protocol { .. } => Kind::Unknown,
            DistributionError::Document { .. } | DistributionError::MediaType { .. } => {
                Kind::FailedPrecondition
            }
            DistributionError::Credentials { .. } => Kind::FailedPrecondition,
            DistributionError::Store { status, .. } => Kind::from_code(status.code() as i32),
        }
    }
}
