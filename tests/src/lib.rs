//! Integration test support: a harness that runs the real `hulld` on
//! temporary directories ([`daemon`]), and builders for the image archives
//! the tests import ([`image`]).

pub mod blobs;
pub mod daemon;
pub mod image;
