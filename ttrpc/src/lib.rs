//! hull-ttrpc: containerd's ttrpc protocol, the RPC that daemons and shims
//! speak to each other over unix sockets.
//!
//! - [`frame`]: the 10-byte frame header and the request and response
//!   envelopes (`ttrpc.Request`, `ttrpc.Response`).
//! - [`client`]: a multiplexing [`Client`] that calls unary methods.
//! - [`server`]: a [`Server`] that dispatches requests to registered
//!   [`Service`]s, one task per request.
//!
//! Payloads are prost messages from `hull-proto`; this crate knows no
//! service. Only unary calls exist, which is all containerd 1.6's shim and
//! event APIs use. It depends on `hull-proto` and tokio only.

#![warn(missing_docs)]

pub mod client;
pub mod frame;
pub mod server;

pub use client::Client;
pub use frame::{Metadata, Status};
pub use server::{Context, Server, Service};

use hull_proto::errdefs::{Classify, Kind};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The socket could not be reached or broke.
    #[error("ttrpc connection {op}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The connection closed before the reply came.
    #[error("ttrpc connection closed")]
    Closed,
    /// The call did not finish in time.
    #[error("ttrpc call timed out")]
    Timeout,
    /// A frame or message could not be decoded.
    #[error("malformed ttrpc message")]
    Decode(#[source] prost::DecodeError),
    /// A frame longer than the protocol allows.
    #[error("ttrpc message of {0} bytes is over the limit")]
    TooLarge(usize),
    /// The peer answered with an error status.
    #[error("{}", .0.message)]
    Status(Status),
}

impl Classify for Error {
    fn kind(&self) -> Kind {
        match self {
            Error::Io { .. } | Error::Closed => Kind::Unavailable,
            Error::Timeout => Kind::DeadlineExceeded,
            Error::Decode(_) | Error::TooLarge(_) => Kind::InvalidArgument,
            Error::Status(s) => Kind::from_code(s.code),
        }
    }
}

/// Result of a ttrpc call.
pub type Result<T, E = Error> = std::result::Result<T, E>;
