//! The snapshot stream: one framed, versioned byte format for Raft snapshots (sent to a lagging
//! member in chunks) and for backups (`Maintenance.Snapshot`, `beacond restore`).
//!
//! ```text
//! magic "BEACONSN" (8 bytes) ‖ format version (u32 BE, 1)
//! frames, each: tag (u8) ‖ payload length (u32 BE) ‖ payload
//!   1 header  bincode SnapshotHeader (revisions, where and when in Raft terms it was taken); first
//!   2 record  revision key (16 bytes: main i64 BE ‖ sub i64 BE) ‖ protobuf mvccpb.KeyValue
//!             (exactly a `kv` column family entry), in revision order
//!   3 lease   id (i64 BE) ‖ bincode LeaseRecord{ttl, generation}
//!   4 end     record count (u64 BE) ‖ lease count (u64 BE) ‖ zero padding; last
//! trailer: SHA-256 of every byte before it (32 bytes)
//! ```
//!
//! The padding makes the bytes before the trailer a multiple of 512: etcdctl 3.4's `snapshot
//! save` refuses a stream whose size is not 32 more than a multiple of 512 (a bbolt file is
//! whole pages; it looks for etcd's appended SHA-256 that way).
//!
//! Writing and reading are streaming: memory is one frame plus the I/O buffers, whatever the
//! size of the state. A reader checks the framing, the counts and the trailer, so a truncated or
//! corrupted file is refused; a frame longer than [`MAX_FRAME_BYTES`] is refused before anything
//! is allocated for it.

use std::io::{self, Read, Write};

use beacon_mvcc::{LeaseRecord, Revision};
use beacon_proto::mvccpb::KeyValue;
use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::StorageError;

const MAGIC: &[u8; 8] = b"BEACONSN";
/// The format version this build writes and reads.
pub const SNAPSHOT_FORMAT_VERSION: u32 = 1;
/// The largest frame a reader accepts (a record is bounded by the request size limit).
pub const MAX_FRAME_BYTES: u32 = 64 << 20;
const TRAILER_BYTES: usize = 32;
/// The bytes before the trailer are padded to a multiple of this (see the module docs).
const ALIGNMENT: u64 = 512;

const TAG_HEADER: u8 = 1;
const TAG_RECORD: u8 = 2;
const TAG_LEASE: u8 = 3;
const TAG_END: u8 = 4;

/// What a snapshot says about itself, in its first frame.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotHeader {
    /// The store revision of the state.
    pub current_revision: i64,
    /// The compaction revision of the state (-1: never compacted).
    pub compact_revision: i64,
    /// The cluster and member it was taken on (informational: a restore gets a new identity).
    pub cluster_id: u64,
    pub member_id: u64,
    /// The Raft log position of the state on the member that took it (0 when none).
    pub applied_index: u64,
    pub applied_term: u64,
}

/// What a complete, verified snapshot holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub header: SnapshotHeader,
    /// Number of MVCC records (every revision kept, tombstones included).
    pub records: u64,
    /// Number of leases.
    pub leases: u64,
    /// Size of the stream in bytes, trailer included.
    pub bytes: u64,
    /// The trailer: SHA-256 of the stream before it.
    pub sha256: [u8; 32],
}

/// One item of a snapshot after its header.
#[derive(Debug, Clone, PartialEq)]
pub enum SnapshotFrame {
    /// A `kv` column family entry: the revision key and the encoded `mvccpb.KeyValue`.
    Record { key: Vec<u8>, value: Vec<u8> },
    /// A granted lease.
    Lease { id: i64, record: LeaseRecord },
}

/// Writes a snapshot stream, hashing as it goes. Call [`SnapshotWriter::finish`] to write the
/// end frame and the trailer; a dropped writer leaves an incomplete (refused) stream.
pub struct SnapshotWriter<W: Write> {
    out: W,
    hasher: Sha256,
    bytes: u64,
    records: u64,
    leases: u64,
    header: SnapshotHeader,
}

impl<W: Write> SnapshotWriter<W> {
    /// Writes the magic, the version and the header frame.
    pub fn new(out: W, header: SnapshotHeader) -> io::Result<Self> {
        let mut writer = SnapshotWriter {
            out,
            hasher: Sha256::new(),
            bytes: 0,
            records: 0,
            leases: 0,
            header,
        };
        writer.write_raw(MAGIC)?;
        writer.write_raw(&SNAPSHOT_FORMAT_VERSION.to_be_bytes())?;
        let header = bincode::serialize(&writer.header).map_err(io::Error::other)?;
        writer.frame(TAG_HEADER, &[&header])?;
        Ok(writer)
    }

    /// Adds a `kv` entry (revision key and encoded record), in revision order.
    pub fn record(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        self.records += 1;
        self.frame(TAG_RECORD, &[key, value])
    }

    /// Adds a lease.
    pub fn lease(&mut self, id: i64, record: &LeaseRecord) -> io::Result<()> {
        self.leases += 1;
        let record = bincode::serialize(record).map_err(io::Error::other)?;
        self.frame(TAG_LEASE, &[&id.to_be_bytes(), &record])
    }

    /// Writes the end frame and the trailer, flushes, and hands back the output.
    pub fn finish(mut self) -> io::Result<(W, SnapshotSummary)> {
        let (records, leases) = (self.records, self.leases);
        let unpadded = self.bytes + 5 + 16;
        let padding = vec![0u8; ((ALIGNMENT - unpadded % ALIGNMENT) % ALIGNMENT) as usize];
        self.frame(
            TAG_END,
            &[&records.to_be_bytes(), &leases.to_be_bytes(), &padding],
        )?;
        let sha256: [u8; 32] = self.hasher.finalize_reset().into();
        self.out.write_all(&sha256)?;
        self.out.flush()?;
        let summary = SnapshotSummary {
            header: self.header,
            records,
            leases,
            bytes: self.bytes + TRAILER_BYTES as u64,
            sha256,
        };
        Ok((self.out, summary))
    }

    fn frame(&mut self, tag: u8, parts: &[&[u8]]) -> io::Result<()> {
        let length: usize = parts.iter().map(|part| part.len()).sum();
        let length = u32::try_from(length)
            .ok()
            .filter(|length| *length <= MAX_FRAME_BYTES)
            .ok_or_else(|| io::Error::other(format!("snapshot frame of {length} bytes")))?;
        self.write_raw(&[tag])?;
        self.write_raw(&length.to_be_bytes())?;
        for part in parts {
            self.write_raw(part)?;
        }
        Ok(())
    }

    fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
        self.out.write_all(bytes)
    }
}

/// Reads a snapshot stream frame by frame, checking it as it goes: the last call to
/// [`SnapshotReader::next_frame`] (the one returning `None`) checks the counts, the trailer and
/// that nothing follows it. Frames are only trustworthy once that call succeeded, so a caller
/// that must not act on a corrupt stream reads it through once first ([`verify`]).
pub struct SnapshotReader<R: Read> {
    input: R,
    hasher: Sha256,
    bytes: u64,
    records: u64,
    leases: u64,
    header: SnapshotHeader,
    summary: Option<SnapshotSummary>,
}

fn invalid(detail: impl Into<String>) -> StorageError {
    StorageError::InvalidSnapshot(detail.into())
}

impl<R: Read> SnapshotReader<R> {
    /// Reads the magic, the version and the header frame.
    pub fn new(input: R) -> Result<Self, StorageError> {
        let mut reader = SnapshotReader {
            input,
            hasher: Sha256::new(),
            bytes: 0,
            records: 0,
            leases: 0,
            header: SnapshotHeader::default(),
            summary: None,
        };
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic)?;
        if &magic != MAGIC {
            return Err(invalid(
                "not a Beacon snapshot (bad magic bytes; an etcd backup cannot be restored into Beacon)",
            ));
        }
        let mut version = [0u8; 4];
        reader.read_exact(&mut version)?;
        let version = u32::from_be_bytes(version);
        if version != SNAPSHOT_FORMAT_VERSION {
            return Err(invalid(format!(
                "snapshot format version {version}, this build reads version {SNAPSHOT_FORMAT_VERSION}"
            )));
        }
        let (tag, payload) = reader.read_frame()?;
        if tag != TAG_HEADER {
            return Err(invalid(format!("first frame has tag {tag}, not a header")));
        }
        reader.header = bincode::deserialize(&payload)
            .map_err(|error| invalid(format!("bad header frame: {error}")))?;
        Ok(reader)
    }

    /// The header frame.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// The next record or lease; `None` after the end frame and a matching trailer.
    pub fn next_frame(&mut self) -> Result<Option<SnapshotFrame>, StorageError> {
        if self.summary.is_some() {
            return Ok(None);
        }
        let (tag, payload) = self.read_frame()?;
        match tag {
            TAG_RECORD => {
                if payload.len() < 16 {
                    return Err(invalid("record frame shorter than its revision key"));
                }
                self.records += 1;
                let mut key = payload;
                let value = key.split_off(16);
                Ok(Some(SnapshotFrame::Record { key, value }))
            }
            TAG_LEASE => {
                let id = payload
                    .get(..8)
                    .and_then(|id| <[u8; 8]>::try_from(id).ok())
                    .map(i64::from_be_bytes)
                    .ok_or_else(|| invalid("lease frame shorter than its id"))?;
                let record = bincode::deserialize(&payload[8..])
                    .map_err(|error| invalid(format!("bad lease frame: {error}")))?;
                self.leases += 1;
                Ok(Some(SnapshotFrame::Lease { id, record }))
            }
            TAG_END => {
                self.finish(&payload)?;
                Ok(None)
            }
            other => Err(invalid(format!("unknown frame tag {other}"))),
        }
    }

    /// The summary, once the whole stream was read and checked.
    pub fn summary(&self) -> Option<&SnapshotSummary> {
        self.summary.as_ref()
    }

    fn finish(&mut self, end: &[u8]) -> Result<(), StorageError> {
        let count = |at: usize| {
            end.get(at..at + 8)
                .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| invalid("end frame too short"))
        };
        let (records, leases) = (count(0)?, count(8)?);
        if end[16..].iter().any(|byte| *byte != 0) {
            return Err(invalid("end frame padding is not zero"));
        }
        if (records, leases) != (self.records, self.leases) {
            return Err(invalid(format!(
                "end frame counts {records} records and {leases} leases, the stream held {} and {}",
                self.records, self.leases
            )));
        }
        let computed: [u8; 32] = self.hasher.finalize_reset().into();
        let mut trailer = [0u8; TRAILER_BYTES];
        self.input
            .read_exact(&mut trailer)
            .map_err(|error| read_error(&error))?;
        if trailer != computed {
            return Err(invalid(
                "SHA-256 mismatch: the snapshot is corrupt (its trailer does not match its contents)",
            ));
        }
        let mut extra = [0u8; 1];
        match self.input.read(&mut extra) {
            Ok(0) => {}
            Ok(_) => return Err(invalid("bytes after the SHA-256 trailer")),
            Err(error) => return Err(read_error(&error)),
        }
        self.summary = Some(SnapshotSummary {
            header: self.header.clone(),
            records,
            leases,
            bytes: self.bytes + TRAILER_BYTES as u64,
            sha256: trailer,
        });
        Ok(())
    }

    fn read_frame(&mut self) -> Result<(u8, Vec<u8>), StorageError> {
        let mut head = [0u8; 5];
        self.read_exact(&mut head)?;
        let length = u32::from_be_bytes([head[1], head[2], head[3], head[4]]);
        if length > MAX_FRAME_BYTES {
            return Err(invalid(format!(
                "frame of {length} bytes (at most {MAX_FRAME_BYTES}): the snapshot is corrupt"
            )));
        }
        let mut payload = vec![0u8; length as usize];
        self.read_exact(&mut payload)?;
        Ok((head[0], payload))
    }

    fn read_exact(&mut self, buffer: &mut [u8]) -> Result<(), StorageError> {
        self.input
            .read_exact(buffer)
            .map_err(|error| read_error(&error))?;
        self.hasher.update(&*buffer);
        self.bytes += buffer.len() as u64;
        Ok(())
    }
}

fn read_error(error: &io::Error) -> StorageError {
    if error.kind() == io::ErrorKind::UnexpectedEof {
        invalid("truncated: the snapshot ends before its end frame and SHA-256 trailer")
    } else {
        invalid(format!("cannot read the snapshot: {error}"))
    }
}

/// Reads a whole snapshot stream and checks everything a restore or an install relies on: the
/// framing, every record (a revision key and a decodable `KeyValue`), the counts and the SHA-256
/// trailer. Nothing is kept in memory but the current frame.
pub fn verify(input: impl Read) -> Result<SnapshotSummary, StorageError> {
    let mut reader = SnapshotReader::new(input)?;
    while let Some(frame) = reader.next_frame()? {
        if let SnapshotFrame::Record { key, value } = frame {
            Revision::from_bytes(&key).ok_or_else(|| invalid("bad revision key in a record"))?;
            KeyValue::decode(value.as_slice())
                .map_err(|error| invalid(format!("undecodable record: {error}")))?;
        }
    }
    reader
        .summary()
        .cloned()
        .ok_or_else(|| invalid("snapshot ended without a summary"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(main: i64, key: &str, value: &str) -> (Vec<u8>, Vec<u8>) {
        let kv = KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: main,
            mod_revision: main,
            version: 1,
            lease: 0,
        };
        (
            Revision::new(main, 0).to_bytes().to_vec(),
            kv.encode_to_vec(),
        )
    }

    fn sample() -> (Vec<u8>, SnapshotSummary) {
        let header = SnapshotHeader {
            current_revision: 3,
            compact_revision: -1,
            cluster_id: 7,
            member_id: 1,
            applied_index: 10,
            applied_term: 2,
        };
        let mut writer = SnapshotWriter::new(Vec::new(), header).expect("writer");
        for (main, key) in [(2, "a"), (3, "b")] {
            let (key, value) = record(main, key, "v");
            writer.record(&key, &value).expect("record");
        }
        writer
            .lease(
                5,
                &LeaseRecord {
                    ttl: 30,
                    generation: 9,
                },
            )
            .expect("lease");
        writer.finish().expect("finish")
    }

    #[test]
    fn round_trip_keeps_every_frame_and_the_summary() {
        let (bytes, written) = sample();
        assert_eq!(written.bytes, bytes.len() as u64);
        assert_eq!(written.bytes % 512, 32, "etcdctl 3.4 checks this");
        assert_eq!(written.records, 2);
        assert_eq!(written.leases, 1);
        let mut reader = SnapshotReader::new(bytes.as_slice()).expect("reader");
        assert_eq!(reader.header().applied_index, 10);
        let mut frames = Vec::new();
        while let Some(frame) = reader.next_frame().expect("frame") {
            frames.push(frame);
        }
        assert_eq!(frames.len(), 3);
        assert_eq!(
            frames[2],
            SnapshotFrame::Lease {
                id: 5,
                record: LeaseRecord {
                    ttl: 30,
                    generation: 9
                }
            }
        );
        assert_eq!(reader.summary(), Some(&written));
        assert_eq!(verify(bytes.as_slice()).expect("verify"), written);
    }

    #[test]
    fn every_truncation_is_refused() {
        let (bytes, _) = sample();
        for length in 0..bytes.len() {
            let error = verify(&bytes[..length]).expect_err("truncated stream accepted");
            assert!(matches!(error, StorageError::InvalidSnapshot(_)), "{error}");
        }
    }

    #[test]
    fn every_flipped_byte_is_refused() {
        let (bytes, _) = sample();
        for at in 0..bytes.len() {
            let mut corrupt = bytes.clone();
            corrupt[at] ^= 0x40;
            assert!(verify(corrupt.as_slice()).is_err(), "flip at {at} accepted");
        }
    }

    #[test]
    fn trailing_bytes_and_foreign_files_are_refused() {
        let (mut bytes, _) = sample();
        bytes.push(0);
        assert!(verify(bytes.as_slice()).is_err());
        let error = verify(&b"\xed\xda\x0c\x00 bolt database"[..]).expect_err("foreign file");
        assert!(
            error.to_string().contains("not a Beacon snapshot"),
            "{error}"
        );
    }

    #[test]
    fn a_huge_frame_length_is_refused_before_allocating() {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&SNAPSHOT_FORMAT_VERSION.to_be_bytes());
        bytes.push(TAG_HEADER);
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        let error = verify(bytes.as_slice()).expect_err("huge frame");
        assert!(error.to_string().contains("at most"), "{error}");
    }
}
