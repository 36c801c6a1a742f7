//! Integration test support: a harness that runs the real `hulld` on
//! temporary directories ([`daemon`]), builders for the image archives
//! the tests import ([`image`]), and a frame-level HTTP/2 client for
//! requests client libraries will not make ([`h2raw`]), and a real registry
//! seeded with skopeo ([`registry`]), and pods through CRI with a network
//! of the test's own ([`cri`]).

pub mod blobs;
pub mod containerd;
pub mod cri;
pub mod daemon;
pub mod h2raw;
pub mod image;
pub mod pty;
pub mod registry;
pub mod snapshot_dirs;
pub mod tcpproxy;
pub mod tokens;
