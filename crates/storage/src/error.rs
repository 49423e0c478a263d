//! Errors of the storage crate (opening, identity checks, snapshot files and restores). Errors inside openraft's storage
//! traits are openraft's own `StorageError`, which stops the node.

/// Why a data directory could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// RocksDB failed (permissions, corruption, disk).
    #[error("rocksdb: {0}")]
    Rocks(#[from] rocksdb::Error),
    /// The data directory was created by another cluster or another member.
    #[error("data directory {path} belongs to {found}, but this node is configured as {expected}")]
    IdentityMismatch {
        path: String,
        found: String,
        expected: String,
    },
    /// The data directory was written by a build with another on-disk format.
    #[error("data directory {path} has storage format {found}, this build reads format {expected}; restore from a backup or start with an empty directory")]
    IncompatibleFormat {
        path: String,
        found: String,
        expected: u64,
    },
    /// The log syncer thread could not be started.
    #[error("cannot start the log syncer thread: {0}")]
    Thread(std::io::Error),
    /// A stored record could not be decoded.
    #[error("corrupt record in {what}: {detail}")]
    Corrupt { what: &'static str, detail: String },
    /// A snapshot or backup stream is truncated, corrupt or not Beacon's.
    #[error("invalid snapshot: {0}")]
    InvalidSnapshot(String),
    /// A file operation failed (snapshot files, the restore directory).
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// A restore was asked to write into a directory that already holds data.
    #[error("{0} is not empty; a restore only creates a new data directory")]
    NotEmpty(String),
}

impl StorageError {
    /// An I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StorageError::Io {
            context: context.into(),
            source,
        }
    }
}
