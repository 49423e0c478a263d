//! Snapshot files on disk, and moving the state machine's state between them and the column
//! families in bounded memory.
//!
//! Files live in `{data_dir}/snapshots/`: `snapshot-*.snap` (the current Raft snapshot, named in
//! the `snapshot` column family under `current` with its openraft `SnapshotMeta`),
//! `building-*.tmp` (a snapshot being built), `receiving-*.part` (chunks arriving from the
//! leader), `backup-*.tmp` (a backup being streamed; unlinked as soon as it is open). Only the
//! current snapshot survives a restart: everything else is removed when the store opens, and a
//! new receive removes earlier partial receives.
//!
//! **Building** ([`write_state`]) iterates a RocksDB snapshot (a consistent view taken under the
//! state lock, so it is exactly the state at the applied log id) and writes the
//! [`crate::snapshot_format`] stream through a buffered writer; the file is fsynced, renamed into
//! place and the directory fsynced before it becomes current.
//!
//! **Installing** ([`load_state`]) is crash-safe by redo: the received file is verified end to
//! end (SHA-256 trailer) first, then made current together with an `install_pending` marker in
//! `meta` (one synced write); only then are the old records and leases deleted and the new ones
//! written in batches of about [`INSTALL_BATCH_BYTES`]; the last batch writes the applied log id,
//! membership and revisions and removes the marker (synced). A member that crashes in between
//! finds the marker when it opens and installs the current snapshot file again before anything
//! reads the state (see `StateMachineStore::open`).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use beacon_mvcc::LeaseRecord;
use openraft::{LogId, SnapshotMeta, StoredMembership};
use rocksdb::{IteratorMode, ReadOptions, WriteBatch, DB};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncSeek, AsyncWrite, ReadBuf};

use crate::db::{cf, CF_KV, CF_META, CF_SNAPSHOT};
use crate::error::StorageError;
use crate::snapshot_format::{
    verify, SnapshotFrame, SnapshotHeader, SnapshotReader, SnapshotSummary, SnapshotWriter,
};
use crate::state_machine::{
    lease_key, KEY_APPLIED, KEY_COMPACT_REVISION, KEY_MEMBERSHIP, KEY_REVISION, LEASE_PREFIX,
    LEASE_PREFIX_END,
};
use crate::{Member, NodeId};

/// `snapshot` family: bincode [`CurrentSnapshot`].
const KEY_CURRENT: &[u8] = b"current";
/// `meta` family: present while an install has started and not finished.
pub(crate) const KEY_INSTALL_PENDING: &[u8] = b"install_pending";
/// An install writes records in batches of about this size.
pub const INSTALL_BATCH_BYTES: usize = 4 << 20;
const IO_BUFFER_BYTES: usize = 1 << 20;
const SNAPSHOT_DIR: &str = "snapshots";

/// openraft's `SnapshotData`: a snapshot file and its path, read and written through tokio (the
/// leader reads it in chunks, a follower writes the chunks it receives into it).
#[derive(Debug)]
pub struct SnapshotFile {
    file: tokio::fs::File,
    path: PathBuf,
}

impl SnapshotFile {
    /// Where the file is (a current snapshot may already be unlinked after a newer one replaced
    /// it; the open handle still reads it whole).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Wraps an open file.
    pub fn from_std(file: File, path: PathBuf) -> Self {
        SnapshotFile {
            file: tokio::fs::File::from_std(file),
            path,
        }
    }

    /// Flushes, fsyncs and closes the file, returning its path.
    pub async fn finish(mut self) -> std::io::Result<PathBuf> {
        use tokio::io::AsyncWriteExt;
        self.file.flush().await?;
        self.file.sync_all().await?;
        Ok(self.path)
    }
}

impl AsyncRead for SnapshotFile {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_read(cx, buf)
    }
}

impl AsyncWrite for SnapshotFile {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().file).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().file).poll_shutdown(cx)
    }
}

impl AsyncSeek for SnapshotFile {
    fn start_seek(self: Pin<&mut Self>, position: std::io::SeekFrom) -> std::io::Result<()> {
        Pin::new(&mut self.get_mut().file).start_seek(position)
    }

    fn poll_complete(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<u64>> {
        Pin::new(&mut self.get_mut().file).poll_complete(cx)
    }
}

/// openraft's description of a snapshot in Beacon's types.
pub(crate) type Meta = SnapshotMeta<NodeId, Member>;

/// The current snapshot as recorded in the `snapshot` family.
#[derive(Serialize, Deserialize)]
struct CurrentSnapshot {
    meta: SnapshotMeta<NodeId, Member>,
    /// File name inside the snapshot directory.
    file: String,
}

/// The snapshot directory of one member.
pub(crate) struct SnapshotStore {
    dir: PathBuf,
    db: Arc<DB>,
    /// Held while the current snapshot changes, so a build that finishes during an install can
    /// never replace the installed snapshot with an older one.
    publishing: Mutex<()>,
    sequence: AtomicU64,
}

impl SnapshotStore {
    /// Opens `{data_dir}/snapshots`, removing every file but the current snapshot (partial
    /// receives, unfinished builds, backups of a previous run).
    pub(crate) fn open(db: Arc<DB>, data_dir: &Path) -> Result<Self, StorageError> {
        let dir = data_dir.join(SNAPSHOT_DIR);
        std::fs::create_dir_all(&dir)
            .map_err(|e| StorageError::io(format!("cannot create {}", dir.display()), e))?;
        let store = SnapshotStore {
            dir,
            db,
            publishing: Mutex::new(()),
            sequence: AtomicU64::new(0),
        };
        let keep = store.read_current()?.map(|current| current.file);
        store.remove_files(|name| Some(name) != keep.as_deref())?;
        Ok(store)
    }

    /// The current snapshot's meta and file, if one was built or installed.
    pub(crate) fn current(&self) -> Result<Option<(Meta, PathBuf)>, StorageError> {
        Ok(self
            .read_current()?
            .map(|current| (current.meta, self.dir.join(current.file))))
    }

    /// The current snapshot opened for reading. Opened while no publish runs, so the file
    /// cannot be replaced (and deleted) between reading its name and opening it; once open, a
    /// newer snapshot may replace it and the handle still reads it whole.
    pub(crate) fn open_current(&self) -> Result<Option<(Meta, SnapshotFile)>, StorageError> {
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((meta, path)) = self.current()? else {
            return Ok(None);
        };
        let file = File::open(&path)
            .map_err(|e| StorageError::io(format!("cannot open {}", path.display()), e))?;
        Ok(Some((meta, SnapshotFile::from_std(file, path))))
    }

    fn read_current(&self) -> Result<Option<CurrentSnapshot>, StorageError> {
        let bytes = self.db.get_cf(cf(&self.db, CF_SNAPSHOT), KEY_CURRENT)?;
        bytes
            .map(|bytes| bincode::deserialize(&bytes))
            .transpose()
            .map_err(|e| StorageError::Corrupt {
                what: "snapshot",
                detail: e.to_string(),
            })
    }

    /// A new, unique path in the snapshot directory: `{kind}-{unique}.{extension}`.
    pub(crate) fn new_path(&self, kind: &str, extension: &str) -> PathBuf {
        self.dir.join(self.unique_name(kind, extension))
    }

    /// `{kind}-{unique}.{extension}`: the time and a counter, unique also across restarts.
    fn unique_name(&self, kind: &str, extension: &str) -> String {
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default();
        format!("{kind}-{nanos:x}-{sequence}.{extension}")
    }

    /// A new file to receive a snapshot's chunks into; earlier partial receives are removed
    /// (openraft abandoned them when it started this one).
    pub(crate) async fn begin_receiving(&self) -> Result<SnapshotFile, StorageError> {
        self.remove_files(|name| name.starts_with("receiving-"))?;
        let path = self.new_path("receiving", "part");
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .await
            .map_err(|e| StorageError::io(format!("cannot create {}", path.display()), e))?;
        Ok(SnapshotFile { file, path })
    }

    /// `path` itself when it is in the snapshot directory (a receive), else a copy of it there
    /// (a snapshot handed over from elsewhere, as tests do), fsynced.
    pub(crate) fn adopt(&self, path: &Path) -> Result<PathBuf, StorageError> {
        if path.parent() == Some(self.dir.as_path()) {
            return Ok(path.to_path_buf());
        }
        let copy = self.new_path("receiving", "part");
        std::fs::copy(path, &copy)
            .and_then(|_| File::open(&copy)?.sync_all())
            .map_err(|e| StorageError::io(format!("cannot copy {}", path.display()), e))?;
        Ok(copy)
    }

    /// Makes the complete, fsynced snapshot file at `path` the current snapshot: renames it into
    /// place, fsyncs the directory, records it (with `also` in the same synced batch) and removes
    /// the previous file. Unless `always`, a snapshot older than the current one is dropped
    /// instead (a build that finished after a newer install) and `None` is returned.
    pub(crate) fn publish(
        &self,
        meta: &SnapshotMeta<NodeId, Member>,
        path: &Path,
        always: bool,
        also: impl FnOnce(&mut WriteBatch),
    ) -> Result<Option<PathBuf>, StorageError> {
        let _publishing = self
            .publishing
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let previous = self.read_current()?;
        if let Some(previous) = &previous {
            if !always && previous.meta.last_log_id > meta.last_log_id {
                remove_file(path);
                return Ok(None);
            }
        }
        let index = meta.last_log_id.map(|id| id.index).unwrap_or(0);
        let name = self.unique_name(&format!("snapshot-{index:020}"), "snap");
        let target = self.dir.join(&name);
        std::fs::rename(path, &target)
            .map_err(|e| StorageError::io(format!("cannot rename {}", path.display()), e))?;
        sync_dir(&self.dir)?;
        let current = CurrentSnapshot {
            meta: meta.clone(),
            file: name,
        };
        let bytes = bincode::serialize(&current).map_err(|e| StorageError::Corrupt {
            what: "snapshot",
            detail: e.to_string(),
        })?;
        let mut batch = WriteBatch::default();
        batch.put_cf(cf(&self.db, CF_SNAPSHOT), KEY_CURRENT, bytes);
        also(&mut batch);
        crate::db::write_synced(&self.db, batch)?;
        if let Some(previous) = previous {
            if previous.file != current.file {
                remove_file(&self.dir.join(previous.file));
            }
        }
        Ok(Some(target))
    }

    fn remove_files(&self, remove: impl Fn(&str) -> bool) -> Result<(), StorageError> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| StorageError::io(format!("cannot list {}", self.dir.display()), e))?;
        for entry in entries.flatten() {
            if let Some(name) = entry.file_name().to_str() {
                if remove(name) {
                    remove_file(&entry.path());
                }
            }
        }
        Ok(())
    }
}

fn remove_file(path: &Path) {
    if let Err(error) = std::fs::remove_file(path) {
        if error.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), %error, "cannot remove a snapshot file");
        }
    }
}

/// fsyncs a directory, so a rename or a new file in it survives a power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)
        .and_then(|dir| dir.sync_all())
        .map_err(|e| StorageError::io(format!("cannot fsync {}", dir.display()), e))
}

/// Writes the records and leases visible in `view` as a snapshot stream to a new file at `path`
/// (fsynced). Memory: one record and the I/O buffer.
pub(crate) fn write_state(
    db: &DB,
    view: &rocksdb::Snapshot<'_>,
    header: SnapshotHeader,
    path: &Path,
) -> Result<SnapshotSummary, StorageError> {
    let file_error = |e| StorageError::io(format!("cannot write {}", path.display()), e);
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(file_error)?;
    let mut writer = SnapshotWriter::new(BufWriter::with_capacity(IO_BUFFER_BYTES, file), header)
        .map_err(file_error)?;
    for item in view.iterator_cf_opt(cf(db, CF_KV), scan_options(), IteratorMode::Start) {
        let (key, value) = item?;
        writer.record(&key, &value).map_err(file_error)?;
    }
    for item in view.iterator_cf_opt(
        cf(db, CF_META),
        scan_options(),
        IteratorMode::From(LEASE_PREFIX, rocksdb::Direction::Forward),
    ) {
        let (key, value) = item?;
        let Some(id) = key.strip_prefix(LEASE_PREFIX) else {
            break;
        };
        let corrupt = |detail: String| StorageError::Corrupt {
            what: "lease",
            detail,
        };
        let id = <[u8; 8]>::try_from(id)
            .map(i64::from_be_bytes)
            .map_err(|_| corrupt(format!("bad lease key of {} bytes", key.len())))?;
        let record: LeaseRecord =
            bincode::deserialize(&value).map_err(|e| corrupt(e.to_string()))?;
        writer.lease(id, &record).map_err(file_error)?;
    }
    let (out, summary) = writer.finish().map_err(file_error)?;
    let file = out.into_inner().map_err(|e| file_error(e.into_error()))?;
    file.sync_all().map_err(file_error)?;
    Ok(summary)
}

/// Read options for a whole-family scan: do not push the block cache's hot data out.
pub(crate) fn scan_options() -> ReadOptions {
    let mut options = ReadOptions::default();
    options.fill_cache(false);
    options
}

/// Where the state machine stands after an install.
pub(crate) struct InstallTarget {
    pub(crate) last_applied: Option<LogId<NodeId>>,
    pub(crate) membership: StoredMembership<NodeId, Member>,
    /// A restore into a new cluster: lease generations are log indexes of the old cluster's
    /// log, meaningless in the new one, so they start again from 0 (no new entry has index 0).
    pub(crate) reset_lease_generations: bool,
}

/// Opens and verifies a snapshot file end to end (one streaming pass).
pub(crate) fn verify_file(path: &Path) -> Result<SnapshotSummary, StorageError> {
    let file = File::open(path)
        .map_err(|e| StorageError::io(format!("cannot open {}", path.display()), e))?;
    verify(BufReader::with_capacity(IO_BUFFER_BYTES, file))
}

/// Replaces the records and leases in the column families with those of the (verified)
/// snapshot file at `path`, in batches of about [`INSTALL_BATCH_BYTES`]; the last batch sets the
/// position `target` says and removes the install marker, synced. The in-memory state is the
/// caller's to rebuild.
pub(crate) fn load_state(
    db: &DB,
    path: &Path,
    target: &InstallTarget,
) -> Result<SnapshotHeader, StorageError> {
    let file = File::open(path)
        .map_err(|e| StorageError::io(format!("cannot open {}", path.display()), e))?;
    let mut reader = SnapshotReader::new(BufReader::with_capacity(IO_BUFFER_BYTES, file))?;
    let kv = cf(db, CF_KV);
    let meta = cf(db, CF_META);
    let mut batch = WriteBatch::default();
    // Revision keys are 16 bytes of non-negative big-endian integers: all below 17 × 0xff.
    batch.delete_range_cf(kv, &[0u8; 16][..], &[0xffu8; 17][..]);
    batch.delete_range_cf(meta, LEASE_PREFIX, LEASE_PREFIX_END);
    while let Some(frame) = reader.next_frame()? {
        match frame {
            SnapshotFrame::Record { key, value } => batch.put_cf(kv, key, value),
            SnapshotFrame::Lease { id, mut record } => {
                if target.reset_lease_generations {
                    record.generation = 0;
                }
                let record = bincode::serialize(&record).map_err(|e| StorageError::Corrupt {
                    what: "lease",
                    detail: e.to_string(),
                })?;
                batch.put_cf(meta, lease_key(id), record);
            }
        }
        if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
            db.write(std::mem::take(&mut batch))?;
        }
    }
    let header = reader.header().clone();
    batch.put_cf(meta, KEY_APPLIED, encode(&target.last_applied)?);
    batch.put_cf(meta, KEY_MEMBERSHIP, encode(&target.membership)?);
    batch.put_cf(meta, KEY_REVISION, encode(&header.current_revision)?);
    batch.put_cf(
        meta,
        KEY_COMPACT_REVISION,
        encode(&header.compact_revision)?,
    );
    batch.delete_cf(meta, KEY_INSTALL_PENDING);
    crate::db::write_synced(db, batch)?;
    Ok(header)
}

fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StorageError> {
    bincode::serialize(value).map_err(|e| StorageError::Corrupt {
        what: "meta",
        detail: e.to_string(),
    })
}
