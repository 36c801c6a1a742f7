//! Schema migrations, run once at open.
//!
//! Version 1 is the first layout; there is nothing to migrate from yet. A DB
//! written by a newer hulld is refused rather than misread.

use super::schema::{key, SCHEMA_VERSION};
use super::MetadataError;

/// Brings the DB to [`SCHEMA_VERSION`].
///
/// # Errors
/// FailedPrecondition when the DB is newer than this binary.
pub fn migrate(tree: &sled::Tree) -> Result<(), MetadataError> {
    let vkey = key(&["meta", "version"]);
    let current = match tree.get(&vkey)? {
        Some(v) => {
            u32::from_be_bytes(v.as_ref().try_into().map_err(|_| MetadataError::Corrupt {
                key: "meta/version".into(),
            })?)
        }
        None => 0,
    };
    if current > SCHEMA_VERSION {
        return Err(MetadataError::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    if current < SCHEMA_VERSION {
        tree.insert(vkey, &SCHEMA_VERSION.to_be_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_db_gets_current_version_and_newer_is_refused() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        migrate(&tree).unwrap();
        let v = tree.get(key(&["meta", "version"])).unwrap().unwrap();
        assert_eq!(v.as_ref(), SCHEMA_VERSION.to_be_bytes());
        tree.insert(
            key(&["meta", "version"]),
            &(SCHEMA_VERSION + 1).to_be_bytes(),
        )
        .unwrap();
        assert!(matches!(
            migrate(&tree),
            Err(MetadataError::SchemaTooNew { .. })
        ));
    }
}
