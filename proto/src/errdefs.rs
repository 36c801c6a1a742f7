//! Error kinds and their single mapping to gRPC and ttrpc status codes.
//!
//! Clients branch on these codes (containerd's `errdefs`), so every RPC
//! boundary in hull converts errors through [`to_status`] or [`to_ttrpc`].

use std::error::Error;
use std::fmt;

/// The class of an error, as containerd's errdefs names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The request is malformed.
    InvalidArgument,
    /// The object does not exist.
    NotFound,
    /// The object exists already.
    AlreadyExists,
    /// The object is in a state that does not allow the operation.
    FailedPrecondition,
    /// The resource is busy (a locked ingest ref); retry later.
    Unavailable,
    /// The operation is not supported.
    NotImplemented,
    /// The caller went away.
    Cancelled,
    /// The operation ran out of time.
    DeadlineExceeded,
    /// An offset or size points past the end of an object.
    OutOfRange,
    /// No credentials, or ones the other side refused (containerd 2's
    /// Unauthorized).
    Unauthenticated,
    /// Credentials accepted but not allowed to do this.
    PermissionDenied,
    /// A limit was reached: disk full, a queue over its bound.
    ResourceExhausted,
    /// Data arrived corrupt (a blob that does not match its digest).
    DataLoss,
    /// Anything else: I/O failures, corrupted state.
    Unknown,
}

/// A gRPC status code, numbered as in `google.rpc.Code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

/// The one table between kinds and codes.
const TABLE: &[(Kind, Code)] = &[
    (Kind::InvalidArgument, Code::InvalidArgument),
    (Kind::NotFound, Code::NotFound),
    (Kind::AlreadyExists, Code::AlreadyExists),
    (Kind::FailedPrecondition, Code::FailedPrecondition),
    (Kind::Unavailable, Code::Unavailable),
    (Kind::NotImplemented, Code::Unimplemented),
    (Kind::Cancelled, Code::Cancelled),
    (Kind::DeadlineExceeded, Code::DeadlineExceeded),
    (Kind::OutOfRange, Code::OutOfRange),
    (Kind::Unauthenticated, Code::Unauthenticated),
    (Kind::PermissionDenied, Code::PermissionDenied),
    (Kind::ResourceExhausted, Code::ResourceExhausted),
    (Kind::DataLoss, Code::DataLoss),
    (Kind::Unknown, Code::Unknown),
];

impl Kind {
    /// The status code this kind travels as.
    pub fn code(self) -> Code {
        TABLE
            .iter()
            .find(|(k, _)| *k == self)
            .map_or(Code::Unknown, |(_, c)| *c)
    }

    /// The kind a status code came from; codes with no kind are Unknown.
    pub fn from_code(code: i32) -> Kind {
        TABLE
            .iter()
            .find(|(_, c)| *c as i32 == code)
            .map_or(Kind::Unknown, |(k, _)| *k)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Kind::InvalidArgument => "invalid argument",
            Kind::NotFound => "not found",
            Kind::AlreadyExists => "already exists",
            Kind::FailedPrecondition => "failed precondition",
            Kind::Unavailable => "unavailable",
            Kind::NotImplemented => "not implemented",
            Kind::Cancelled => "cancelled",
            Kind::DeadlineExceeded => "deadline exceeded",
            Kind::OutOfRange => "out of range",
            Kind::Unauthenticated => "unauthorized",
            Kind::PermissionDenied => "permission denied",
            Kind::ResourceExhausted => "resource exhausted",
            Kind::DataLoss => "data loss",
            Kind::Unknown => "unknown",
        };
        f.write_str(s)
    }
}

/// Every hull error says which kind it is.
pub trait Classify {
    /// The class that decides the wire code.
    fn kind(&self) -> Kind;
}

/// The error and all its sources, joined by ": ".
pub fn message(err: &(dyn Error + 'static)) -> String {
    let mut msg = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        // Some errors already fold their source into their own text.
        if !msg.ends_with(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}

/// Converts an error into the gRPC status clients expect.
pub fn to_status<E: Error + Classify + 'static>(err: &E) -> tonic::Status {
    status(err.kind(), message(err))
}

/// A status of the given kind and message.
pub fn status(kind: Kind, message: impl Into<String>) -> tonic::Status {
    tonic::Status::new(tonic::Code::from_i32(kind.code() as i32), message)
}

/// Converts an error into the `google.rpc.Status` of a ttrpc response.
pub fn to_ttrpc<E: Error + Classify + 'static>(err: &E) -> crate::google::rpc::Status {
    crate::google::rpc::Status {
        code: err.kind().code() as i32,
        message: message(err),
        details: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_matches_containerd_errdefs() {
        let expected = [
            (Kind::InvalidArgument, 3),
            (Kind::NotFound, 5),
            (Kind::AlreadyExists, 6),
            (Kind::FailedPrecondition, 9),
            (Kind::Unavailable, 14),
            (Kind::NotImplemented, 12),
            (Kind::Cancelled, 1),
            (Kind::DeadlineExceeded, 4),
            (Kind::OutOfRange, 11),
            (Kind::Unknown, 2),
        ];
        for (kind, code) in expected {
            assert_eq!(kind.code() as i32, code, "{kind:?}");
            assert_eq!(Kind::from_code(code), kind);
        }
        assert_eq!(Kind::from_code(13), Kind::Unknown);
    }

    #[derive(Debug, thiserror::Error)]
    #[error("outer {id}")]
    struct Outer {
        id: u32,
        #[source]
        inner: std::io::Error,
    }
    impl Classify for Outer {
        fn kind(&self) -> Kind {
            Kind::NotFound
        }
    }

    #[test]
    fn status_joins_sources() {
        let err = Outer {
            id: 7,
            inner: std::io::Error::other("disk gone"),
        };
        let st = to_status(&err);
        assert_eq!(st.code(), tonic::Code::NotFound);
        assert_eq!(st.message(), "outer 7: disk gone");
        assert_eq!(to_ttrpc(&err).code, 5);
    }
}
