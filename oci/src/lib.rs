//! hull-oci: the OCI documents of hull, and the helpers that hulld,
//! hull-client and the tests share.
//!
//! - [`oci_spec`] (re-exported) is the one definition of OCI documents:
//!   manifests, indexes, image configs, descriptors and the image layout
//!   on the image side; runtime specs on the runtime side.
//! - [`credentials`]: registry credentials in docker's `config.json`.
//! - [`media`]: media types, OCI's and Docker's, and what each one is.
//! - [`platform`]: the host's platform, parsing `os/arch[/variant]`, and
//!   matching manifests to a platform as containerd does.
//! - [`spec`]: runtime specs that hull *generates*: containerd's default
//!   spec and an image config applied to it, users resolved from an
//!   image's `/etc/passwd` and `/etc/group`.
//! - [`document`]: a document a client *hands over* (a container's spec),
//!   changed field by field with every other field kept as the client
//!   wrote it, including fields oci-spec does not model.
//!
//! No I/O: callers read and write the files. Depends on no hull crate.

#![warn(missing_docs)]

pub use oci_spec;

pub mod credentials;
pub mod document;
pub mod media;
pub mod platform;
pub mod reference;
pub mod spec;
