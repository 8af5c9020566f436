//! The repository `config` object.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::format::envelope::{self, CONFIG_MAGIC, FormatError};
use crate::format::id::Id;
use crate::format::keys::KeyMaterial;

/// The chunking algorithm name stored in `config`.
pub const CHUNKER_ALGORITHM: &str = "fastcdc-2020-keyed-gear";

/// Repository-wide settings, fixed at `init`: every client that writes must
/// chunk, compress and pack the same way for deduplication to work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// Repository format version (1).
    pub version: u32,
    /// Random repository id; names the local cache directory.
    pub id: Id,
    /// When the repository was created.
    pub created: jiff::Timestamp,
    /// Content-defined chunking parameters.
    pub chunker: ChunkerConfig,
    /// Compression of blobs and metadata.
    pub compression: CompressionConfig,
    /// Target pack size in bytes: a pack is closed once it reaches this size.
    pub pack_size: u32,
    /// The repository X25519 public key (hex) that session keys are agreed with.
    pub repository_public_key: String,
}

/// Chunker parameters in `config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerConfig {
    /// Always [`CHUNKER_ALGORITHM`].
    pub algorithm: String,
    /// Smallest chunk in bytes (except a stream's last).
    pub min_size: u32,
    /// Target average chunk size in bytes.
    pub avg_size: u32,
    /// Largest chunk in bytes.
    pub max_size: u32,
}

/// Compression settings in `config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompressionConfig {
    /// Always `zstd`.
    pub algorithm: String,
    /// zstd level; 0 stores everything uncompressed.
    pub level: i32,
}

impl Config {
    /// Default pack size target: 16 MiB (packs end up 16–24 MiB with 8 MiB chunks).
    pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;
    /// Smallest pack size target accepted.
    pub const MIN_PACK_SIZE: u32 = 1024 * 1024;
    /// Largest pack size target accepted.
    pub const MAX_PACK_SIZE: u32 = 1024 * 1024 * 1024;
    /// Default zstd level.
    pub const DEFAULT_COMPRESSION_LEVEL: i32 = 1;

    /// The chunker parameters as the chunker crate takes them.
    pub fn chunker_params(&self) -> cairn_chunker::ChunkerParams {
        cairn_chunker::ChunkerParams {
            min_size: self.chunker.min_size,
            avg_size: self.chunker.avg_size,
            max_size: self.chunker.max_size,
        }
    }

    /// Checks every value against what this version supports.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.version != 1 {
            return Err(format!("version {}", self.version));
        }
        if self.chunker.algorithm != CHUNKER_ALGORITHM {
            return Err(format!("unknown chunker {:?}", self.chunker.algorithm));
        }
        self.chunker_params().validate().map_err(|e| e.to_string())?;
        if self.compression.algorithm != "zstd" || !(-7..=22).contains(&self.compression.level) {
            return Err(format!(
                "unsupported compression {} level {}",
                self.compression.algorithm, self.compression.level
            ));
        }
        if !(Self::MIN_PACK_SIZE..=Self::MAX_PACK_SIZE).contains(&self.pack_size) {
            return Err(format!(
                "pack size {} outside {}..={} bytes",
                self.pack_size,
                Self::MIN_PACK_SIZE,
                Self::MAX_PACK_SIZE
            ));
        }
        Ok(())
    }

    /// The stored form: an envelope keyed by the repository id.
    pub(crate) fn encode(&self, keys: &KeyMaterial) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("config serializes");
        envelope::seal_object(&CONFIG_MAGIC, &self.id.0, keys.config_key(), &json, 0)
    }

    /// The repository id, readable without a key.
    pub(crate) fn peek_id(bytes: &[u8]) -> Result<Id> {
        envelope::key_ref(&CONFIG_MAGIC, bytes).map(Id).map_err(|e| match e {
            FormatError::NewerVersion { found } => Error::UnsupportedVersion { found },
            e => Error::corrupt("config", e),
        })
    }

    /// Opens and validates `config` with a key's material.
    pub(crate) fn decode(bytes: &[u8], keys: &KeyMaterial) -> Result<Config> {
        let corrupt = |e: FormatError| Error::corrupt("config", e);
        let id = Self::peek_id(bytes)?;
        let json = envelope::open_object(&CONFIG_MAGIC, bytes, keys.config_key()).map_err(corrupt)?;
        let value: serde_json::Value =
            serde_json::from_slice(&json).map_err(|e| corrupt(FormatError::Json(e.to_string())))?;
        match value.get("version").and_then(|v| v.as_u64()) {
            Some(1) => {}
            Some(v) => return Err(Error::UnsupportedVersion { found: v.min(u32::MAX as u64) as u32 }),
            None => return Err(corrupt(FormatError::Json("no version".into()))),
        }
        let config: Config = serde_json::from_value(value).map_err(|e| corrupt(FormatError::Json(e.to_string())))?;
        config.validate().map_err(|e| corrupt(FormatError::Json(e)))?;
        if config.id != id {
            return Err(corrupt(FormatError::Mismatch("the sealed id differs from the outer id".into())));
        }
        if config.repository_public_key != hex::encode(keys.repository_public()) {
            return Err(corrupt(FormatError::Mismatch("its public key differs from the one in the key file".into())));
        }
        Ok(config)
    }
}
