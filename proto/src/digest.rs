//! Content digests, `algorithm:hex`, validated the way go-digest does.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::errdefs::{Classify, Kind};

/// Hash algorithms a digest may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// The one hull writes.
    Sha256,
    /// Accepted in references; never produced.
    Sha384,
    /// Accepted in references; never produced.
    Sha512,
}

impl Algorithm {
    /// Name as it appears before the colon.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A digest string failed validation.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DigestError {
    /// No `algorithm:` prefix.
    #[error("invalid checksum digest format {0:?}")]
    Format(String),
    /// An algorithm go-digest does not know.
    #[error("unsupported digest algorithm {0:?}")]
    Algorithm(String),
    /// Hex part of the wrong length.
    #[error("invalid checksum digest length {0:?}")]
    Length(String),
    /// Hex part with characters outside `[a-f0-9]`.
    #[error("invalid checksum digest format {0:?}: encoded portion must be lowercase hex")]
    Encoding(String),
}

impl Classify for DigestError {
    fn kind(&self) -> Kind {
        Kind::InvalidArgument
    }
}

/// A validated digest. Its hex part is a safe file name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    /// A sha256 digest from raw hash bytes.
    pub fn sha256(hash: &[u8; 32]) -> Digest {
        let mut hex = String::with_capacity(64);
        for b in hash {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 0xf)]));
        }
        Digest {
            algorithm: Algorithm::Sha256,
            hex,
        }
    }

    /// The algorithm part.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part.
    pub fn hex(&self) -> &str {
        &self.hex
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some((alg, hex)) = s.split_once(':') else {
            return Err(DigestError::Format(s.to_owned()));
        };
        if alg.is_empty() || hex.is_empty() {
            return Err(DigestError::Format(s.to_owned()));
        }
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha384" => Algorithm::Sha384,
            "sha512" => Algorithm::Sha512,
            _ => return Err(DigestError::Algorithm(s.to_owned())),
        };
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::Encoding(s.to_owned()));
        }
        if hex.len() != algorithm.hex_len() {
            return Err(DigestError::Length(s.to_owned()));
        }
        Ok(Digest {
            algorithm,
            hex: hex.to_owned(),
        })
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.as_str(), self.hex)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn round_trips() {
        let d: Digest = EMPTY.parse().unwrap();
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(d.algorithm(), Algorithm::Sha256);
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            "nocolon".parse::<Digest>(),
            Err(DigestError::Format(_))
        ));
        assert!(matches!(
            "md5:abcd".parse::<Digest>(),
            Err(DigestError::Algorithm(_))
        ));
        assert!(matches!(
            "sha256:abcd".parse::<Digest>(),
            Err(DigestError::Length(_))
        ));
        let upper = EMPTY.to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(
            upper.parse::<Digest>(),
            Err(DigestError::Encoding(_))
        ));
        assert!(matches!(
            "sha256:../../etc/passwd".parse::<Digest>(),
            Err(DigestError::Encoding(_))
        ));
    }
}
