//! Images from and to registries over the OCI distribution API.
//!
//! - [`reference`](mod@reference): image references, normalised as docker and containerd
//!   do (`busybox` is `docker.io/library/busybox:latest`).
//! - [`hosts`]: which hosts serve a registry name, and how to reach them:
//!   containerd's `hosts.toml` directories plus the `[registry]` keys
//!   Docker users know (`registry-mirrors`, `insecure-registries`).
//! - [`auth`]: credentials (hull's config, docker's `config.json` and its
//!   credential helpers) and the registry's challenges (basic, bearer
//!   tokens cached per scope).
//! - [`registry`]: the HTTP client of one repository over its hosts, with
//!   fallback from host to host.
//! - [`pull`]: resolve, fetch into the content store through resumable
//!   ingests (shared between concurrent pulls), unpack while downloading,
//!   and the image record.
//! - [`push`]: blobs asked for first, mounted across repositories where
//!   they came from, uploaded otherwise; then the manifests.
//!
//! - [`archive`]: OCI layout and docker-archive tars, both ways.
//!
//! Everything here reaches hulld's state only through the services'
//! library API (content store, snapshots, diff, images, leases).

pub mod archive;
pub mod auth;
mod error;
pub mod hosts;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;

pub use error::DistributionError;
pub use hosts::RegistryConfig;

/// Result of the distribution module.
pub type Result<T, E = DistributionError> = std::result::Result<T, E>;
