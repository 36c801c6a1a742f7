//! containerd's identifier rule, and newtypes that have passed it.
//!
//! An identifier starts and ends with an ASCII letter or digit, may contain
//! single `.`, `_` or `-` separators between such runs, and is at most 76
//! bytes long. Once validated, an identifier is a safe path component.

use std::fmt;

use thiserror::Error;

use crate::errdefs::{Classify, Kind};

/// Longest identifier, in bytes.
pub const MAX_LENGTH: usize = 76;

/// An identifier broke the rule.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentifierError {
    /// Empty string.
    #[error("identifier must not be empty")]
    Empty,
    /// Longer than [`MAX_LENGTH`].
    #[error("identifier {0:?} greater than maximum length ({MAX_LENGTH} characters)")]
    TooLong(String),
    /// Characters or separators out of place.
    #[error("identifier {0:?} must match ^[A-Za-z0-9]+(?:[._-](?:[A-Za-z0-9]+))*$")]
    Malformed(String),
}

impl Classify for IdentifierError {
    fn kind(&self) -> Kind {
        Kind::InvalidArgument
    }
}

/// Checks `s` against containerd's identifier rule.
///
/// # Errors
/// InvalidArgument, saying which part of the rule failed.
pub fn validate(s: &str) -> Result<(), IdentifierError> {
    if s.is_empty() {
        return Err(IdentifierError::Empty);
    }
    if s.len() > MAX_LENGTH {
        return Err(IdentifierError::TooLong(s.to_owned()));
    }
    let mut after_separator = true;
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' => after_separator = false,
            b'.' | b'_' | b'-' if !after_separator => after_separator = true,
            _ => return Err(IdentifierError::Malformed(s.to_owned())),
        }
    }
    if after_separator {
        return Err(IdentifierError::Malformed(s.to_owned()));
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// Validates `s` and wraps it.
            ///
            /// # Errors
            /// InvalidArgument when `s` breaks the identifier rule.
            pub fn new(s: impl Into<String>) -> Result<Self, IdentifierError> {
                let s = s.into();
                validate(&s)?;
                Ok(Self(s))
            }

            /// The identifier as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

identifier!(
    /// A namespace name.
    Namespace
);
identifier!(
    /// A container id.
    ContainerId
);
/// A lease id. containerd does not hold lease ids to the identifier rule
/// (its clients generate ids such as `307015574-_gS-`), so neither does
/// hull: any non-empty string without NUL is a lease id. Lease ids are never
/// used as path components.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LeaseId(String);

impl LeaseId {
    /// Wraps `s` if it can be a lease id.
    ///
    /// # Errors
    /// InvalidArgument for an empty id or one containing NUL.
    pub fn new(s: impl Into<String>) -> Result<Self, IdentifierError> {
        let s = s.into();
        if s.is_empty() {
            return Err(IdentifierError::Empty);
        }
        if s.contains('\0') {
            return Err(IdentifierError::Malformed(s));
        }
        Ok(LeaseId(s))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_containerd_identifiers() {
        for ok in [
            "default",
            "k8s.io",
            "a",
            "a-b_c.d",
            "A9",
            "moby",
            &"x".repeat(76),
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_the_rest() {
        assert_eq!(validate(""), Err(IdentifierError::Empty));
        assert!(matches!(
            validate(&"x".repeat(77)),
            Err(IdentifierError::TooLong(_))
        ));
        for bad in ["-a", "a-", "a..b", "a/b", "../x", "a b", ".", "é", "a\0"] {
            assert!(
                matches!(validate(bad), Err(IdentifierError::Malformed(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            Namespace::new("a/b").unwrap_err().kind(),
            Kind::InvalidArgument
        );
    }
}
