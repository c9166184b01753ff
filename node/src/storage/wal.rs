//! Segmented write-ahead log of opaque records.
//!
//! Layout: `dir/{seq:016x}.wal`, each starting with [`MAGIC`], followed by records framed as
//! `len: u32 LE | group: u64 LE | crc32c(len, group): u32 LE | crc32c(payload): u32 LE |
//! payload`. The group (the Raft group a record belongs to; the WAL is shared by all of a
//! node's groups) is in the header, under the header's checksum, so that a record whose
//! payload is damaged still says whose it was. Segments of the first format (`FLWAL001`:
//! no group in the header) are still read; new records always go to a segment of the
//! current one.
//!
//! The overriding rule is that an acknowledged (synced) record is never dropped silently. Replay
//! therefore only repairs damage that an interrupted, never-acknowledged write can leave behind
//! (a torn tail of the last segment) and refuses to start on anything else.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"FLWAL002";
const HEADER_LEN: usize = 20;
/// The first format: `len | crc32c(len) | crc32c(payload) | payload`, no group.
const LEGACY_MAGIC: &[u8; 8] = b"FLWAL001";
const LEGACY_HEADER_LEN: usize = 12;
const SEGMENT_SUFFIX: &str = ".wal";
const TMP_SUFFIX: &str = ".wal.tmp";
const LOCK_FILE: &str = "LOCK";

const CORRUPT_REMEDY: &str = "refusing to start because acknowledged writes may be lost; \
    restore this node's data directory from a backup or remove it so the node rejoins empty \
    and catches up from its peers";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalOptions {
    /// A segment is closed once a sync leaves it larger than this.
    pub segment_bytes_max: u64,
    /// Larger payloads are rejected on append, and a larger length on disk is corruption.
    pub record_bytes_max: u32,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_bytes_max: 64 << 20,
            record_bytes_max: 16 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WalError {
    #[error("WAL I/O error: cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "WAL record at {} offset {offset} ({}) is corrupt ({reason}) and is not the torn tail of the log: {CORRUPT_REMEDY}",
        path.display(),
        whose(*group)
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        /// The Raft group the record belongs to, when its header is intact.
        group: Option<u64>,
        reason: String,
    },
    #[error("WAL record of {len} bytes exceeds record_bytes_max ({max} bytes)")]
    RecordTooLarge { len: usize, max: u32 },
    #[error(
        "WAL directory is in use by another process (lock held on {}): only one node may use a data directory",
        path.display()
    )]
    Locked { path: PathBuf },
    #[error(
        "WAL is unusable after an earlier write or sync failure left the durability of its tail unknown; restart the node so it replays the log"
    )]
    Poisoned,
}

fn whose(group: Option<u64>) -> String {
    match group {
        Some(group) => format!("a record of group {group}"),
        None => "its header is damaged, so its group is not known".to_string(),
    }
}

/// Result of [`Wal::open`]: the log ready for appends and everything it held.
#[derive(Debug)]
pub struct Replay {
    pub wal: Wal,
    pub records: Vec<Vec<u8>>,
    /// The group of each record, as its header says (None in a first-format segment).
    pub groups: Vec<Option<u64>>,
    pub torn_tail: Option<TornTail>,
}

/// An interrupted write that was cut off the end of the last segment during replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    /// Length of the segment after truncation, i.e. where the torn record started.
    pub offset: u64,
    pub bytes_dropped: u64,
}

#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    options: WalOptions,
    /// Sequence numbers of the segment files on disk: ascending, contiguous, never empty.
    segments: Vec<u64>,
    /// The last segment, opened for appending.
    file: File,
    /// Bytes of the last segment that are known to be on disk.
    file_len: u64,
    /// Framed records appended since the last sync.
    buf: Vec<u8>,
    /// Set after a failed write or fsync. The kernel may have dropped the dirty pages and a
    /// retried fsync could then "succeed" without the data, so the only safe path is a restart.
    poisoned: bool,
    /// Held only for its advisory lock; released when the WAL is dropped.
    _lock: File,
}

impl Wal {
    /// Opens (creating the directory if missing) and replays every record in order.
    pub fn open(dir: &Path, options: WalOptions) -> Result<Replay, WalError> {
        create_dir_durably(dir)?;
        let lock = lock_dir(dir)?;
        let seqs = list_segments(dir)?;
        for pair in seqs.windows(2) {
            if pair[1] != pair[0] + 1 {
                return Err(WalError::Corrupt {
                    path: segment_path(dir, pair[0] + 1),
                    offset: 0,
                    group: None,
                    reason: format!(
                        "segment file is missing: the sequence jumps from {} to {}",
                        segment_name(pair[0]),
                        segment_name(pair[1])
                    ),
                });
            }
        }

        let Some((&last_seq, earlier)) = seqs.split_last() else {
            let (file, file_len) = install_segment(dir, 1, MAGIC)?;
            return Ok(Replay {
                wal: Wal {
                    dir: dir.to_path_buf(),
                    options,
                    segments: vec![1],
                    file,
                    file_len,
                    buf: Vec::new(),
                    poisoned: false,
                    _lock: lock,
                },
                records: Vec::new(),
                groups: Vec::new(),
                torn_tail: None,
            });
        };

        let mut found = Found::default();
        for &seq in earlier {
            let path = segment_path(dir, seq);
            let data = fs::read(&path).map_err(io_err("read segment", &path))?;
            match scan_segment(&path, &data, false, options.record_bytes_max, &mut found)? {
                SegmentEnd::Clean => {}
                end => {
                    return Err(WalError::Corrupt {
                        path,
                        offset: 0,
                        group: None,
                        reason: format!("a segment that is not the last one ends torn ({end:?})"),
                    });
                }
            }
        }

        let path = segment_path(dir, last_seq);
        let data = fs::read(&path).map_err(io_err("read segment", &path))?;
        let end = scan_segment(&path, &data, true, options.record_bytes_max, &mut found)?;
        let legacy = data.starts_with(LEGACY_MAGIC);
        let mut file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err("open segment", &path))?;
        let mut torn_tail = None;
        let file_len = match end {
            SegmentEnd::Clean => data.len() as u64,
            SegmentEnd::TornCreation => {
                // The crash hit between creating the file and making its magic durable, so no
                // record was ever acknowledged here: give it the magic it should have had.
                file.set_len(0)
                    .and_then(|()| file.write_all(MAGIC))
                    .map_err(io_err("repair torn segment header of", &path))?;
                MAGIC.len() as u64
            }
            SegmentEnd::TornTail { offset } => {
                // Appends must continue right after the last good record, otherwise the torn
                // bytes would sit in front of acknowledged records and look like corruption.
                file.set_len(offset)
                    .map_err(io_err("truncate torn tail of", &path))?;
                torn_tail = Some(TornTail {
                    path: path.clone(),
                    offset,
                    bytes_dropped: data.len() as u64 - offset,
                });
                offset
            }
        };
        // Replayed records may still be only in the page cache if the previous process died
        // between write and fdatasync; callers act on them, so they must be durable now.
        // The repairs above need this too.
        file.sync_all().map_err(io_err("sync segment", &path))?;
        // Likewise the segment's directory entry may never have been synced if the previous
        // process died right after creating it.
        sync_dir(dir)?;

        let mut wal = Wal {
            dir: dir.to_path_buf(),
            options,
            segments: seqs,
            file,
            file_len,
            buf: Vec::new(),
            poisoned: false,
            _lock: lock,
        };
        if legacy {
            // Records of the current format must not follow first-format ones in a segment.
            wal.roll()?;
        }
        Ok(Replay {
            wal,
            records: found.records,
            groups: found.groups,
            torn_tail,
        })
    }

    /// Buffers a record of group 0 in memory; see [`Wal::append_for`].
    pub fn append(&mut self, payload: &[u8]) -> Result<(), WalError> {
        self.append_for(0, payload)
    }

    /// Buffers a record of `group` in memory; nothing is durable until sync(). Errors if
    /// payload > record_bytes_max.
    pub fn append_for(&mut self, group: u64, payload: &[u8]) -> Result<(), WalError> {
        self.check_usable()?;
        self.check_size(payload)?;
        encode_record(&mut self.buf, group, payload);
        Ok(())
    }

    /// Writes all buffered records with one write and ONE fdatasync (group commit), then rolls
    /// to a new segment if the current one exceeds segment_bytes_max. No-op if nothing buffered.
    pub fn sync(&mut self) -> Result<(), WalError> {
        self.check_usable()?;
        if self.buf.is_empty() {
            return Ok(());
        }
        let path = self.current_path();
        let written = self
            .file
            .write_all(&self.buf)
            .map_err(io_err("write segment", &path))
            .and_then(|()| self.file.sync_data().map_err(io_err("sync segment", &path)));
        self.poison_on_err(written)?;
        self.file_len += self.buf.len() as u64;
        self.buf.clear();
        if self.file_len > self.options.segment_bytes_max {
            let rolled = self.roll();
            self.poison_on_err(rolled)?;
        }
        Ok(())
    }

    /// Starts a fresh segment containing exactly `records`, makes it durable (file fsync + directory fsync),
    /// then deletes every older segment. Used after a snapshot: the caller passes the state that must survive
    /// (hard state, snapshot metadata, retained log entries). Any buffered-but-unsynced records are written
    /// into the old segment and synced first.
    ///
    /// If the process dies before all old segments are deleted, the next replay yields the
    /// remaining old records followed by the checkpoint records, so the checkpoint records must
    /// be able to supersede whatever precedes them.
    pub fn checkpoint(&mut self, records: &[Vec<u8>]) -> Result<(), WalError> {
        let tagged: Vec<(u64, &[u8])> = records.iter().map(|r| (0, r.as_slice())).collect();
        self.checkpoint_for(&tagged)
    }

    /// [`Wal::checkpoint`] with each record's group.
    pub fn checkpoint_for(&mut self, records: &[(u64, &[u8])]) -> Result<(), WalError> {
        self.check_usable()?;
        for (_, record) in records {
            self.check_size(record)?;
        }
        self.sync()?;

        let mut contents = MAGIC.to_vec();
        for (group, record) in records {
            encode_record(&mut contents, *group, record);
        }
        let next = self.next_seq();
        let installed = next.and_then(|seq| Ok((seq, install_segment(&self.dir, seq, &contents)?)));
        let (seq, (file, file_len)) = self.poison_on_err(installed)?;
        self.file = file;
        self.file_len = file_len;
        let old = std::mem::replace(&mut self.segments, vec![seq]);

        // Oldest first, each deletion made durable before the next, so a crash can never leave a
        // gap in the sequence (which replay would rightly treat as a lost segment).
        for (i, &old_seq) in old.iter().enumerate() {
            let path = segment_path(&self.dir, old_seq);
            let deleted = fs::remove_file(&path)
                .map_err(io_err("delete old segment", &path))
                .and_then(|()| sync_dir(&self.dir));
            if let Err(e) = deleted {
                let mut remaining = old[i..].to_vec();
                remaining.push(seq);
                self.segments = remaining;
                self.poisoned = true;
                return Err(e);
            }
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn current_seq(&self) -> u64 {
        *self
            .segments
            .last()
            .expect("invariant: a WAL always has a current segment")
    }

    fn current_path(&self) -> PathBuf {
        segment_path(&self.dir, self.current_seq())
    }

    fn next_seq(&self) -> Result<u64, WalError> {
        self.current_seq()
            .checked_add(1)
            .ok_or_else(|| WalError::Io {
                op: "create the next segment after",
                path: self.current_path(),
                source: io::Error::other("segment sequence numbers exhausted"),
            })
    }

    fn roll(&mut self) -> Result<(), WalError> {
        let seq = self.next_seq()?;
        let (file, file_len) = install_segment(&self.dir, seq, MAGIC)?;
        self.file = file;
        self.file_len = file_len;
        self.segments.push(seq);
        Ok(())
    }

    fn check_usable(&self) -> Result<(), WalError> {
        if self.poisoned {
            Err(WalError::Poisoned)
        } else {
            Ok(())
        }
    }

    fn check_size(&self, payload: &[u8]) -> Result<(), WalError> {
        if payload.len() > self.options.record_bytes_max as usize {
            return Err(WalError::RecordTooLarge {
                len: payload.len(),
                max: self.options.record_bytes_max,
            });
        }
        Ok(())
    }

    fn poison_on_err<T>(&mut self, result: Result<T, WalError>) -> Result<T, WalError> {
        if result.is_err() {
            self.poisoned = true;
        }
        result
    }
}

#[derive(Debug, PartialEq, Eq)]
enum SegmentEnd {
    Clean,
    /// The file is shorter than the magic and holds a prefix of it.
    TornCreation,
    /// Everything from `offset` on is the remains of an unacknowledged write.
    TornTail {
        offset: u64,
    },
}

/// Appends every good record of `data` to `records`. Only the last segment may end torn: older
/// segments were fully synced before the next one was created.
fn scan_segment(
    path: &Path,
    data: &[u8],
    is_last: bool,
    record_bytes_max: u32,
    found: &mut Found,
) -> Result<SegmentEnd, WalError> {
    let corrupt_in = |offset: usize, group: Option<u64>, reason: String| WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        group,
        reason,
    };
    let corrupt = |offset: usize, reason: String| corrupt_in(offset, None, reason);

    if data.len() < MAGIC.len() {
        return if !MAGIC.starts_with(data) && !LEGACY_MAGIC.starts_with(data) {
            Err(corrupt(0, "bad segment magic".to_string()))
        } else if is_last {
            Ok(SegmentEnd::TornCreation)
        } else {
            Err(corrupt(
                0,
                format!(
                    "segment is only {} bytes long but is not the last segment",
                    data.len()
                ),
            ))
        };
    }
    let legacy = &data[..MAGIC.len()] == LEGACY_MAGIC;
    let header_len = if legacy {
        LEGACY_HEADER_LEN
    } else {
        HEADER_LEN
    };
    if &data[..MAGIC.len()] != MAGIC && !legacy {
        return Err(corrupt(
            0,
            format!(
                "bad segment magic \"{}\"",
                data[..MAGIC.len()].escape_ascii()
            ),
        ));
    }

    let mut offset = MAGIC.len();
    loop {
        let rest = &data[offset..];
        if rest.is_empty() {
            return Ok(SegmentEnd::Clean);
        }
        let torn_or_corrupt = |torn: bool, group: Option<u64>, reason: String| {
            if is_last && torn {
                Ok(SegmentEnd::TornTail {
                    offset: offset as u64,
                })
            } else {
                Err(corrupt_in(offset, group, reason))
            }
        };
        // A crash may leave the file extended with zeros that the data never reached.
        let zeros_to_end = || rest.iter().all(|&b| b == 0);

        if rest.len() < header_len {
            return torn_or_corrupt(
                true,
                None,
                format!(
                    "only {} bytes remain, less than a record header",
                    rest.len()
                ),
            );
        }
        let len = read_u32(rest, 0);
        let (group, covered, header_crc, payload_crc) = if legacy {
            (None, &rest[..4], read_u32(rest, 4), read_u32(rest, 8))
        } else {
            let group = u64::from_le_bytes(rest[4..12].try_into().expect("8 bytes"));
            (
                Some(group),
                &rest[..12],
                read_u32(rest, 12),
                read_u32(rest, 16),
            )
        };
        if crc32c::crc32c(covered) != header_crc {
            return torn_or_corrupt(zeros_to_end(), None, "header checksum mismatch".to_string());
        }
        // The header checksum vouches for this length, so an oversized one was written that way
        // (or the limit was lowered): no torn write explains it.
        if len > record_bytes_max {
            return Err(corrupt_in(
                offset,
                group,
                format!("record length {len} exceeds record_bytes_max {record_bytes_max}"),
            ));
        }
        let end = header_len + len as usize;
        if end > rest.len() {
            return torn_or_corrupt(
                true,
                group,
                format!(
                    "record of {len} bytes runs past the end of the segment ({} bytes remain)",
                    rest.len() - header_len
                ),
            );
        }
        let payload = &rest[header_len..end];
        if crc32c::crc32c(payload) != payload_crc {
            // Only the final record can be half-written; a bad payload with data after it means
            // the bytes changed after they were acknowledged.
            return torn_or_corrupt(
                end == rest.len() || zeros_to_end(),
                group,
                "payload checksum mismatch".to_string(),
            );
        }
        found.records.push(payload.to_vec());
        found.groups.push(group);
        offset += end;
    }
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

/// The records of the segments read so far, with their groups.
#[derive(Default)]
struct Found {
    records: Vec<Vec<u8>>,
    groups: Vec<Option<u64>>,
}

fn encode_record(out: &mut Vec<u8>, group: u64, payload: &[u8]) {
    let len = u32::try_from(payload.len())
        .expect("invariant: callers bound payloads by record_bytes_max, a u32");
    let mut covered = [0u8; 12];
    covered[..4].copy_from_slice(&len.to_le_bytes());
    covered[4..].copy_from_slice(&group.to_le_bytes());
    out.reserve(HEADER_LEN + payload.len());
    out.extend_from_slice(&covered);
    out.extend_from_slice(&crc32c::crc32c(&covered).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// What a crash in the middle of appending a record of `payload_len` bytes can leave at
/// the end of a segment: with `garbled` false, the header and the first `written` bytes
/// of the payload (the rest never reached the disk); with `garbled` true, the whole
/// record with payload bytes that were not the ones written (sectors written out of
/// order), so its checksum fails. Replay must treat both as a torn tail. The harness's
/// `corrupt-wal` nemesis appends these to a killed node's WAL.
pub fn torn_record(payload_len: u32, written: u32, garbled: bool) -> Vec<u8> {
    let payload: Vec<u8> = (0..payload_len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
        .collect();
    let mut record = Vec::new();
    encode_record(&mut record, 0, &payload);
    if garbled {
        if let Some(last) = record.last_mut() {
            *last ^= 0xff;
        }
    } else {
        record.truncate(HEADER_LEN + written.min(payload_len.saturating_sub(1)) as usize);
    }
    record
}

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}{SEGMENT_SUFFIX}")
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(segment_name(seq))
}

fn parse_seq(stem: &str) -> Option<u64> {
    // Exactly the names we generate, so stray files (even "1.wal") are never mistaken for log.
    if stem.len() == 16 && stem.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        u64::from_str_radix(stem, 16).ok()
    } else {
        None
    }
}

/// Sorted sequence numbers of the segments in `dir`; deletes leftover temporary segments.
fn list_segments(dir: &Path) -> Result<Vec<u64>, WalError> {
    let mut seqs = Vec::new();
    let entries = fs::read_dir(dir).map_err(io_err("list directory", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("list directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(seq) = name.strip_suffix(SEGMENT_SUFFIX).and_then(parse_seq) {
            seqs.push(seq);
        } else if name.strip_suffix(TMP_SUFFIX).and_then(parse_seq).is_some() {
            // A segment that was never renamed into place was never part of the log.
            let path = entry.path();
            fs::remove_file(&path).map_err(io_err("delete leftover temporary segment", &path))?;
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Creates segment `seq` holding `contents` (which starts with the magic) and makes both its
/// data and its directory entry durable. It is written under a temporary name and renamed so a
/// crash can never leave a half-written checkpoint looking like a torn tail of the real log.
/// Returns the file opened for appending and its length.
fn install_segment(dir: &Path, seq: u64, contents: &[u8]) -> Result<(File, u64), WalError> {
    let path = segment_path(dir, seq);
    let tmp = dir.join(format!("{seq:016x}{TMP_SUFFIX}"));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("delete leftover temporary segment", &tmp)(e)),
    }
    let mut file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&tmp)
        .map_err(io_err("create segment", &tmp))?;
    file.write_all(contents)
        .map_err(io_err("write segment", &tmp))?;
    file.sync_all().map_err(io_err("sync segment", &tmp))?;
    fs::rename(&tmp, &path).map_err(io_err("rename temporary segment into place as", &path))?;
    sync_dir(dir)?;
    Ok((file, contents.len() as u64))
}

/// Creates `dir` if needed and syncs the parent of every directory created, so the log's own
/// directory cannot vanish in a crash after records in it were acknowledged.
fn create_dir_durably(dir: &Path) -> Result<(), WalError> {
    let mut missing = Vec::new();
    let mut cursor = Some(dir);
    while let Some(p) = cursor {
        if p.as_os_str().is_empty() || p.exists() {
            break;
        }
        missing.push(p);
        cursor = p.parent();
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    for created in missing {
        match created.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent)?,
            _ => sync_dir(Path::new("."))?,
        }
    }
    Ok(())
}

fn lock_dir(dir: &Path) -> Result<File, WalError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err("open lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(WalError::Locked { path }),
        Err(TryLockError::Error(e)) => Err(io_err("lock", &path)(e)),
    }
}

fn sync_dir(dir: &Path) -> Result<(), WalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WalError {
    move |source| WalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(segment_bytes_max: u64) -> WalOptions {
        WalOptions {
            segment_bytes_max,
            record_bytes_max: 1024,
        }
    }

    fn rec(i: usize) -> Vec<u8> {
        format!("record-{i};").repeat(i % 4 + 1).into_bytes()
    }

    fn recs(n: usize) -> Vec<Vec<u8>> {
        (0..n).map(rec).collect()
    }

    fn open(dir: &Path, options: WalOptions) -> Replay {
        Wal::open(dir, options).expect("open WAL")
    }

    /// Appends and syncs each record on its own, as acknowledged writes.
    fn write_synced(dir: &Path, options: WalOptions, records: &[Vec<u8>]) {
        let mut wal = open(dir, options).wal;
        for r in records {
            wal.append(r).unwrap();
            wal.sync().unwrap();
        }
    }

    #[test]
    fn torn_records_left_by_a_crash_are_dropped_and_every_synced_record_kept() {
        for (garbled, written) in [(false, 0), (false, 9), (true, 40)] {
            let dir = tempfile::tempdir().unwrap();
            write_synced(dir.path(), opts(1 << 20), &recs(5));
            let segment = segment_path(dir.path(), 1);
            let mut bytes = std::fs::read(&segment).unwrap();
            let good_len = bytes.len() as u64;
            bytes.extend(torn_record(40, written, garbled));
            std::fs::write(&segment, &bytes).unwrap();
            let replay = open(dir.path(), opts(1 << 20));
            assert_eq!(
                replay.records,
                recs(5),
                "garbled {garbled}, written {written}"
            );
            let torn = replay.torn_tail.expect("a torn tail is reported");
            assert_eq!(torn.offset, good_len);
        }
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_record(&mut out, 0, payload);
        out
    }

    /// Offsets of the record headers in a segment, found by trusting the lengths.
    fn record_offsets(data: &[u8]) -> Vec<u64> {
        let mut offsets = Vec::new();
        let mut at = MAGIC.len();
        while at + HEADER_LEN <= data.len() {
            offsets.push(at as u64);
            at += HEADER_LEN + read_u32(data, at) as usize;
        }
        offsets
    }

    fn expect_corrupt(result: Result<Replay, WalError>) -> (PathBuf, u64, String) {
        match result {
            Err(WalError::Corrupt {
                path,
                offset,
                reason,
                ..
            }) => (path, offset, reason),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    fn append_bytes(path: &Path, bytes: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(path).unwrap();
        f.write_all(bytes).unwrap();
    }

    fn flip_byte(path: &Path, at: u64) {
        let mut data = fs::read(path).unwrap();
        data[at as usize] ^= 0x40;
        fs::write(path, data).unwrap();
    }

    fn wal_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(SEGMENT_SUFFIX))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn round_trip_across_many_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let records = recs(200);
        let mut wal = open(tmp.path(), opts(256)).wal;
        // Mix single-record syncs with group commits of several records.
        for chunk in records.chunks(3) {
            for r in chunk {
                wal.append(r).unwrap();
            }
            wal.sync().unwrap();
        }
        let segments = wal.segment_count();
        assert!(segments > 5, "expected several segments, got {segments}");
        drop(wal);

        let files = wal_files(tmp.path());
        assert_eq!(files.len(), segments);
        assert_eq!(files[0], "0000000000000001.wal");
        assert_eq!(files[1], "0000000000000002.wal");
        for name in &files {
            let data = fs::read(tmp.path().join(name)).unwrap();
            assert_eq!(&data[..8], MAGIC);
        }

        let replay = open(tmp.path(), opts(256));
        assert_eq!(replay.records, records);
        assert_eq!(replay.torn_tail, None);
        assert_eq!(replay.wal.segment_count(), segments);
    }

    #[test]
    fn reopen_preserves_synced_records_and_appends_continue() {
        let tmp = tempfile::tempdir().unwrap();
        write_synced(tmp.path(), opts(1 << 20), &recs(5));
        let mut replay = open(tmp.path(), opts(1 << 20));
        assert_eq!(replay.records, recs(5));
        assert_eq!(replay.wal.dir(), tmp.path());
        replay.wal.append(b"more").unwrap();
        replay.wal.append(b"").unwrap();
        replay.wal.sync().unwrap();
        drop(replay);

        let mut expected = recs(5);
        expected.push(b"more".to_vec());
        expected.push(Vec::new());
        assert_eq!(open(tmp.path(), opts(1 << 20)).records, expected);
    }

    #[test]
    fn unsynced_records_never_disturb_synced_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let mut wal = open(tmp.path(), opts(1 << 20)).wal;
        wal.append(b"synced-1").unwrap();
        wal.append(b"synced-2").unwrap();
        wal.sync().unwrap();
        wal.append(b"pending").unwrap();
        drop(wal);

        let replay = open(tmp.path(), opts(1 << 20));
        assert!(replay.records.len() <= 3);
        assert_eq!(
            replay.records[..2],
            [b"synced-1".to_vec(), b"synced-2".to_vec()]
        );
        assert_eq!(replay.torn_tail, None);
    }

    #[test]
    fn sync_without_buffered_records_writes_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        // With a zero limit any write would roll, so a roll would reveal a non-empty sync.
        let mut wal = open(tmp.path(), opts(0)).wal;
        wal.sync().unwrap();
        assert_eq!(wal.segment_count(), 1);
        let seg = segment_path(tmp.path(), 1);
        assert_eq!(fs::read(&seg).unwrap(), MAGIC);
    }

    /// Writes three acknowledged records, damages the end of the segment with `damage`
    /// (which returns the offset where the torn data starts), and checks that replay cuts
    /// exactly there, keeps `kept` records, and that appends then work across a reopen.
    fn check_torn_tail(damage: impl FnOnce(&Path) -> u64, kept: usize) {
        let tmp = tempfile::tempdir().unwrap();
        let options = opts(1 << 20);
        write_synced(tmp.path(), options, &recs(3));
        let seg = segment_path(tmp.path(), 1);
        let torn_at = damage(&seg);
        let damaged_len = fs::metadata(&seg).unwrap().len();
        assert!(damaged_len > torn_at, "the test must leave torn bytes");

        let mut replay = open(tmp.path(), options);
        assert_eq!(replay.records, recs(kept));
        assert_eq!(
            replay.torn_tail,
            Some(TornTail {
                path: seg.clone(),
                offset: torn_at,
                bytes_dropped: damaged_len - torn_at,
            })
        );
        assert_eq!(fs::metadata(&seg).unwrap().len(), torn_at);

        replay.wal.append(b"after-repair").unwrap();
        replay.wal.sync().unwrap();
        drop(replay);

        let replay = open(tmp.path(), options);
        let mut expected = recs(kept);
        expected.push(b"after-repair".to_vec());
        assert_eq!(replay.records, expected);
        assert_eq!(replay.torn_tail, None);
    }

    #[test]
    fn torn_tail_a_partial_header() {
        check_torn_tail(
            |seg| {
                let len = fs::metadata(seg).unwrap().len();
                append_bytes(seg, &frame(b"half written")[..11]);
                len
            },
            3,
        );
    }

    #[test]
    fn torn_tail_b_length_runs_past_end() {
        check_torn_tail(
            |seg| {
                let len = fs::metadata(seg).unwrap().len();
                let full = frame(&[7u8; 100]);
                append_bytes(seg, &full[..HEADER_LEN + 10]);
                len
            },
            3,
        );
    }

    #[test]
    fn torn_tail_c_bad_payload_checksum_at_end_of_file() {
        check_torn_tail(
            |seg| {
                let data = fs::read(seg).unwrap();
                let last = *record_offsets(&data).last().unwrap();
                flip_byte(seg, data.len() as u64 - 1);
                last
            },
            2,
        );
    }

    #[test]
    fn torn_tail_d_zeros_to_end_of_file() {
        check_torn_tail(
            |seg| {
                let len = fs::metadata(seg).unwrap().len();
                append_bytes(seg, &[0u8; 300]);
                len
            },
            3,
        );
    }

    #[test]
    fn corrupt_payload_in_middle_of_last_segment() {
        let tmp = tempfile::tempdir().unwrap();
        write_synced(tmp.path(), opts(1 << 20), &recs(5));
        let seg = segment_path(tmp.path(), 1);
        let offsets = record_offsets(&fs::read(&seg).unwrap());
        let bad = offsets[1];
        assert_eq!(bad, (MAGIC.len() + HEADER_LEN + rec(0).len()) as u64);
        flip_byte(&seg, bad + HEADER_LEN as u64 + 2);

        let err = Wal::open(tmp.path(), opts(1 << 20)).unwrap_err();
        let message = err.to_string();
        let (path, offset, reason) = expect_corrupt(Err(err));
        assert_eq!(path, seg);
        assert_eq!(offset, bad);
        assert_eq!(reason, "payload checksum mismatch");
        assert!(message.contains(&seg.display().to_string()), "{message}");
        assert!(message.contains(&format!("offset {bad} ")), "{message}");
        assert!(message.contains("payload checksum mismatch"), "{message}");
        assert!(message.contains("a record of group 0"), "{message}");
        assert!(message.contains("not the torn tail"), "{message}");
        assert!(
            message.contains("restore this node's data directory"),
            "{message}"
        );
        // Refusing must not have "repaired" anything.
        assert_eq!(
            fs::metadata(&seg).unwrap().len(),
            *offsets.last().unwrap() + (HEADER_LEN + rec(4).len()) as u64
        );
    }

    #[test]
    fn corrupt_header_in_middle_of_last_segment() {
        let tmp = tempfile::tempdir().unwrap();
        write_synced(tmp.path(), opts(1 << 20), &recs(5));
        let seg = segment_path(tmp.path(), 1);
        let bad = record_offsets(&fs::read(&seg).unwrap())[3];
        flip_byte(&seg, bad);
        let error = Wal::open(tmp.path(), opts(1 << 20)).unwrap_err();
        assert!(
            error.to_string().contains("its group is not known"),
            "{error}"
        );
        let (_, offset, reason) = expect_corrupt(Err(error));
        assert_eq!(offset, bad);
        assert_eq!(reason, "header checksum mismatch");
    }

    #[test]
    fn zeroed_record_followed_by_data_is_corrupt_not_torn() {
        let tmp = tempfile::tempdir().unwrap();
        write_synced(tmp.path(), opts(1 << 20), &recs(4));
        let seg = segment_path(tmp.path(), 1);
        let mut data = fs::read(&seg).unwrap();
        let offsets = record_offsets(&data);
        let (start, end) = (offsets[1] as usize, offsets[2] as usize);
        data[start..end].fill(0);
        fs::write(&seg, data).unwrap();
        let (_, offset, _) = expect_corrupt(Wal::open(tmp.path(), opts(1 << 20)));
        assert_eq!(offset, start as u64);
    }

    #[test]
    fn oversized_length_with_valid_header_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        write_synced(tmp.path(), opts(1 << 20), &[vec![1u8; 10], vec![2u8; 100]]);
        let smaller = WalOptions {
            segment_bytes_max: 1 << 20,
            record_bytes_max: 50,
        };
        let (_, offset, reason) = expect_corrupt(Wal::open(tmp.path(), smaller));
        assert_eq!(offset, (MAGIC.len() + HEADER_LEN + 10) as u64);
        assert!(reason.contains("exceeds"), "{reason}");
    }

    /// Three or more segments written with one record per sync.
    fn multi_segment_log(dir: &Path) -> (WalOptions, usize) {
        let options = opts(100);
        write_synced(dir, options, &recs(30));
        let segments = wal_files(dir).len();
        assert!(segments >= 3, "got {segments} segments");
        (options, segments)
    }

    #[test]
    fn truncated_non_last_segment_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let (options, _) = multi_segment_log(tmp.path());
        let seg = segment_path(tmp.path(), 1);
        let data = fs::read(&seg).unwrap();
        let last = *record_offsets(&data).last().unwrap();
        // In the last segment this would be torn tail (b); here it lost acknowledged data.
        fs::write(&seg, &data[..data.len() - 1]).unwrap();
        let (path, offset, _) = expect_corrupt(Wal::open(tmp.path(), options));
        assert_eq!(path, seg);
        assert_eq!(offset, last);
    }

    #[test]
    fn bad_checksum_in_non_last_segment_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let (options, _) = multi_segment_log(tmp.path());
        let seg = segment_path(tmp.path(), 2);
        let data = fs::read(&seg).unwrap();
        let last = *record_offsets(&data).last().unwrap();
        flip_byte(&seg, data.len() as u64 - 1);
        let (path, offset, reason) = expect_corrupt(Wal::open(tmp.path(), options));
        assert_eq!(path, seg);
        assert_eq!(offset, last);
        assert_eq!(reason, "payload checksum mismatch");
    }

    #[test]
    fn wrong_magic_is_corrupt_at_offset_zero() {
        for in_last_segment in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            let (options, segments) = multi_segment_log(tmp.path());
            let seq = if in_last_segment { segments as u64 } else { 1 };
            let seg = segment_path(tmp.path(), seq);
            flip_byte(&seg, 0);
            let (path, offset, reason) = expect_corrupt(Wal::open(tmp.path(), options));
            assert_eq!(path, seg);
            assert_eq!(offset, 0);
            assert!(reason.contains("magic"), "{reason}");
        }
    }

    #[test]
    fn missing_middle_segment_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let (options, _) = multi_segment_log(tmp.path());
        let missing = segment_path(tmp.path(), 2);
        fs::remove_file(&missing).unwrap();
        let err = Wal::open(tmp.path(), options).unwrap_err();
        assert!(err.to_string().contains("0000000000000002.wal"), "{err}");
        let (path, offset, _) = expect_corrupt(Err(err));
        assert_eq!(path, missing);
        assert_eq!(offset, 0);
    }

    #[test]
    fn empty_directory_starts_first_segment() {
        let tmp = tempfile::tempdir().unwrap();
        let replay = open(tmp.path(), WalOptions::default());
        assert!(replay.records.is_empty());
        assert_eq!(replay.torn_tail, None);
        assert_eq!(replay.wal.segment_count(), 1);
        assert_eq!(wal_files(tmp.path()), ["0000000000000001.wal"]);
        assert_eq!(fs::read(segment_path(tmp.path(), 1)).unwrap(), MAGIC);
    }

    #[test]
    fn missing_directory_is_created() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data").join("wal");
        let mut wal = open(&dir, opts(1 << 20)).wal;
        assert!(dir.is_dir());
        wal.append(b"x").unwrap();
        wal.sync().unwrap();
        drop(wal);
        assert_eq!(open(&dir, opts(1 << 20)).records, [b"x".to_vec()]);
    }

    #[test]
    fn empty_or_partial_magic_last_segment_is_repaired() {
        for header in [&b""[..], &b"FLW"[..], &MAGIC[..7]] {
            let tmp = tempfile::tempdir().unwrap();
            let options = opts(1 << 20);
            write_synced(tmp.path(), options, &recs(2));
            let seg2 = segment_path(tmp.path(), 2);
            fs::write(&seg2, header).unwrap();

            let mut replay = open(tmp.path(), options);
            assert_eq!(replay.records, recs(2));
            assert_eq!(replay.wal.segment_count(), 2);
            assert_eq!(fs::read(&seg2).unwrap(), MAGIC);
            replay.wal.append(b"in-repaired").unwrap();
            replay.wal.sync().unwrap();
            drop(replay);

            let replay = open(tmp.path(), options);
            let mut expected = recs(2);
            expected.push(b"in-repaired".to_vec());
            assert_eq!(replay.records, expected);
            assert!(fs::metadata(&seg2).unwrap().len() > MAGIC.len() as u64);
        }
    }

    #[test]
    fn short_garbage_last_segment_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        write_synced(tmp.path(), opts(1 << 20), &recs(2));
        fs::write(segment_path(tmp.path(), 2), b"XY").unwrap();
        let (_, offset, _) = expect_corrupt(Wal::open(tmp.path(), opts(1 << 20)));
        assert_eq!(offset, 0);
    }

    #[test]
    fn checkpoint_replaces_all_older_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let (options, segments) = multi_segment_log(tmp.path());
        let mut wal = open(tmp.path(), options).wal;
        wal.append(b"pending-before-checkpoint").unwrap();
        let checkpoint = vec![b"hard-state".to_vec(), b"snapshot-meta".to_vec()];
        wal.checkpoint(&checkpoint).unwrap();
        assert_eq!(wal.segment_count(), 1);
        let files = wal_files(tmp.path());
        assert_eq!(files.len(), 1);
        assert!(files[0] > segment_name(segments as u64), "{files:?}");
        wal.append(b"after").unwrap();
        wal.sync().unwrap();
        drop(wal);

        let mut replay = open(tmp.path(), options);
        let mut expected = checkpoint.clone();
        expected.push(b"after".to_vec());
        assert_eq!(replay.records, expected);

        // A second checkpoint on the reopened log works the same way.
        replay.wal.checkpoint(&[b"second".to_vec()]).unwrap();
        drop(replay);
        assert_eq!(open(tmp.path(), options).records, [b"second".to_vec()]);
    }

    #[test]
    fn leftover_temporary_segment_is_deleted_and_strangers_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        write_synced(tmp.path(), opts(1 << 20), &recs(2));
        let leftover = tmp.path().join("0000000000000002.wal.tmp");
        fs::write(&leftover, b"FLWAL001 half a checkpoint").unwrap();
        fs::write(tmp.path().join("README"), b"not a segment").unwrap();
        fs::write(tmp.path().join("7.wal"), b"not a segment either").unwrap();
        let replay = open(tmp.path(), opts(1 << 20));
        assert_eq!(replay.records, recs(2));
        assert!(!leftover.exists());
        assert!(tmp.path().join("README").exists());
    }

    #[test]
    fn record_too_large_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let options = WalOptions {
            segment_bytes_max: 1 << 20,
            record_bytes_max: 16,
        };
        let mut wal = open(tmp.path(), options).wal;
        match wal.append(&[0u8; 17]) {
            Err(WalError::RecordTooLarge { len: 17, max: 16 }) => {}
            other => panic!("expected RecordTooLarge, got {other:?}"),
        }
        assert!(matches!(
            wal.checkpoint(&[vec![1u8; 17]]),
            Err(WalError::RecordTooLarge { .. })
        ));
        wal.append(&[9u8; 16]).unwrap();
        wal.sync().unwrap();
        drop(wal);
        assert_eq!(open(tmp.path(), options).records, [vec![9u8; 16]]);
    }

    #[test]
    fn second_open_of_same_directory_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let first = open(tmp.path(), opts(1 << 20));
        assert!(matches!(
            Wal::open(tmp.path(), opts(1 << 20)),
            Err(WalError::Locked { .. })
        ));
        drop(first);
        open(tmp.path(), opts(1 << 20));
    }
}
