//! 32-byte identifiers and their hex form.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 32-byte identifier: a content id (keyed BLAKE3 of a blob's plaintext), or
/// the name of a stored object (BLAKE3 of its bytes), or a repository id.
///
/// Displayed and parsed as 64 lowercase hex digits.
#[derive(Default, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(pub [u8; 32]);

impl Id {
    /// Length of an id in bytes.
    pub const LEN: usize = 32;

    /// The id of stored bytes: unkeyed BLAKE3, so anyone holding the bucket can
    /// verify an object against its name without a key.
    pub fn of_object(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    /// A random id (repository ids).
    pub fn random() -> Id {
        Id(crate::format::crypto::random_array())
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Full hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The first 8 hex digits, as shown in listings.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// Whether the hex form of this id starts with `prefix` (lowercase hex).
    pub fn has_hex_prefix(&self, prefix: &str) -> bool {
        self.to_hex().starts_with(&prefix.to_ascii_lowercase())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

/// An id string that is not 64 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an id: expected 64 hex digits")]
pub struct ParseIdError(pub String);

impl FromStr for Id {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Id, ParseIdError> {
        // Lowercase only: object names are canonical (FORMAT.md §1).
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Err(ParseIdError(s.to_string()));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).map_err(|_| ParseIdError(s.to_string()))?;
        Ok(Id(out))
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Ids of one kind of object. Each wraps an [`Id`] (and derefs to it, so
/// hex forms and generic reads work), but one kind cannot be passed where
/// another is expected: a tree where a snapshot is, a data blob where a
/// tree is. Serialized exactly as an [`Id`].
macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Default, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Id);

        impl std::ops::Deref for $name {
            type Target = Id;
            fn deref(&self) -> &Id {
                &self.0
            }
        }

        impl From<$name> for Id {
            fn from(id: $name) -> Id {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0.short())
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;
            fn from_str(s: &str) -> Result<$name, ParseIdError> {
                s.parse().map($name)
            }
        }
    };
}

typed_id!(
    /// A snapshot file's id (`snapshots/<id>`).
    ///
    /// A tree's id is not a snapshot's:
    ///
    /// ```compile_fail
    /// # async fn f(repo: cairn_repo::Repository, snapshot: cairn_repo::Snapshot) {
    /// let _ = repo.read_snapshot(&snapshot.tree).await; // expected `&SnapshotId`, found `&TreeId`
    /// # }
    /// ```
    SnapshotId
);
typed_id!(
    /// A tree blob's content id.
    TreeId
);
typed_id!(
    /// A data blob's content id (a chunk of file content).
    DataId
);
typed_id!(
    /// A pack's id (`data/<2 hex>/<id>`).
    PackId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_prefix() {
        let id = Id::of_object(b"hello");
        let parsed: Id = id.to_hex().parse().unwrap();
        assert_eq!(parsed, id);
        assert!(id.has_hex_prefix(&id.to_hex()[..6].to_uppercase()));
        assert_eq!(id.short().len(), 8);
        assert!("xyz".parse::<Id>().is_err());
        assert!(id.to_hex()[..62].parse::<Id>().is_err());
    }
}
