//! Small files (snapshots, metadata) that are replaced atomically and verified on read.
//!
//! Layout: `b"FLSNAP01" | len: u64 LE | crc32c(bytes): u32 LE | bytes`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: &[u8; 8] = b"FLSNAP01";
const HEADER_LEN: usize = 8 + 8 + 4;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("snapshot file I/O error: cannot {op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "snapshot file {} is corrupt ({reason}): refusing to use it; restore this node's data directory from a backup or remove it so the node rejoins empty and catches up from its peers",
        path.display()
    )]
    Corrupt { path: PathBuf, reason: String },
    #[error("invalid snapshot file name {name:?}: it must be a plain file name")]
    InvalidName { name: String },
}

/// Writes `bytes` to dir/name atomically: write dir/name.tmp, fsync it, rename over dir/name, fsync dir.
/// The file gets an 8-byte magic b"FLSNAP01", a u64 LE length and a crc32c u32 LE before the bytes.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), SnapshotFileError> {
    check_name(name)?;
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let result = write_synced(&tmp, bytes).and_then(|()| {
        fs::rename(&tmp, &path).map_err(io_err("rename temporary file into place as", &path))
    });
    if let Err(e) = result {
        // Best effort: the error being returned matters more than a failed cleanup, and a stale
        // .tmp is harmless because it is truncated by the next write and never read.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    // Without this the rename itself may not survive a crash, and the old contents would return.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("sync directory", dir))
}

/// Ok(None) when the file does not exist; Err naming the file and the problem when magic, length or checksum is wrong.
pub fn read(dir: &Path, name: &str) -> Result<Option<Vec<u8>>, SnapshotFileError> {
    check_name(name)?;
    let path = dir.join(name);
    let mut data = match fs::read(&path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let corrupt = |reason: String| SnapshotFileError::Corrupt {
        path: path.clone(),
        reason,
    };
    if data.len() < HEADER_LEN {
        return Err(corrupt(format!(
            "file is {} bytes, shorter than the {HEADER_LEN}-byte header",
            data.len()
        )));
    }
    if &data[..8] != MAGIC {
        return Err(corrupt(format!(
            "bad magic \"{}\"",
            data[..8].escape_ascii()
        )));
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&data[8..16]);
    let len = u64::from_le_bytes(len_bytes);
    let crc = u32::from_le_bytes([data[16], data[17], data[18], data[19]]);
    let actual = (data.len() - HEADER_LEN) as u64;
    if len != actual {
        return Err(corrupt(format!(
            "header records {len} bytes of data but the file holds {actual}"
        )));
    }
    if crc32c::crc32c(&data[HEADER_LEN..]) != crc {
        return Err(corrupt("checksum mismatch".to_string()));
    }
    data.drain(..HEADER_LEN);
    Ok(Some(data))
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), SnapshotFileError> {
    let mut header = [0u8; HEADER_LEN];
    header[..8].copy_from_slice(MAGIC);
    header[8..16].copy_from_slice(&(bytes.len() as u64).to_le_bytes());
    header[16..].copy_from_slice(&crc32c::crc32c(bytes).to_le_bytes());
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(io_err("create", path))?;
    file.write_all(&header)
        .and_then(|()| file.write_all(bytes))
        .map_err(io_err("write", path))?;
    file.sync_all().map_err(io_err("sync", path))
}

/// Names are joined onto `dir`, so anything that could point elsewhere is refused.
fn check_name(name: &str) -> Result<(), SnapshotFileError> {
    let plain =
        !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']);
    if plain {
        Ok(())
    } else {
        Err(SnapshotFileError::InvalidName {
            name: name.to_string(),
        })
    }
}

fn io_err(op: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SnapshotFileError {
    move |source| SnapshotFileError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect_corrupt(result: Result<Option<Vec<u8>>, SnapshotFileError>) -> String {
        match result {
            Err(e @ SnapshotFileError::Corrupt { .. }) => e.to_string(),
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn round_trip_and_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic(tmp.path(), "snap", b"first version").unwrap();
        assert_eq!(
            read(tmp.path(), "snap").unwrap(),
            Some(b"first version".to_vec())
        );
        let big: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        write_atomic(tmp.path(), "snap", &big).unwrap();
        assert_eq!(read(tmp.path(), "snap").unwrap(), Some(big));
        write_atomic(tmp.path(), "snap", b"").unwrap();
        assert_eq!(read(tmp.path(), "snap").unwrap(), Some(Vec::new()));
        assert!(!tmp.path().join("snap.tmp").exists());

        let data = fs::read(tmp.path().join("snap")).unwrap();
        assert_eq!(&data[..8], MAGIC);
        assert_eq!(data.len(), HEADER_LEN);
    }

    #[test]
    fn missing_file_is_none() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(read(tmp.path(), "absent").unwrap(), None);
    }

    #[test]
    fn stale_tmp_does_not_interfere() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("snap.tmp"), vec![0xAB; 5000]).unwrap();
        write_atomic(tmp.path(), "snap", b"fresh").unwrap();
        assert_eq!(read(tmp.path(), "snap").unwrap(), Some(b"fresh".to_vec()));
    }

    #[test]
    fn flipped_byte_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic(tmp.path(), "snap", b"some snapshot bytes").unwrap();
        let path = tmp.path().join("snap");
        let mut data = fs::read(&path).unwrap();
        data[HEADER_LEN + 3] ^= 1;
        fs::write(&path, data).unwrap();
        let message = expect_corrupt(read(tmp.path(), "snap"));
        assert!(message.contains(&path.display().to_string()), "{message}");
        assert!(message.contains("checksum mismatch"), "{message}");
    }

    #[test]
    fn wrong_magic_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic(tmp.path(), "snap", b"payload").unwrap();
        let path = tmp.path().join("snap");
        let mut data = fs::read(&path).unwrap();
        data[0] = b'X';
        fs::write(&path, data).unwrap();
        assert!(expect_corrupt(read(tmp.path(), "snap")).contains("magic"));
    }

    #[test]
    fn truncated_file_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        write_atomic(tmp.path(), "snap", b"payload that gets cut").unwrap();
        let path = tmp.path().join("snap");
        let data = fs::read(&path).unwrap();

        fs::write(&path, &data[..data.len() - 1]).unwrap();
        let message = expect_corrupt(read(tmp.path(), "snap"));
        assert!(message.contains("file holds"), "{message}");

        fs::write(&path, &data[..10]).unwrap();
        let message = expect_corrupt(read(tmp.path(), "snap"));
        assert!(message.contains("shorter than"), "{message}");
    }

    #[test]
    fn names_that_escape_the_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["", ".", "..", "../x", "a/b"] {
            assert!(matches!(
                write_atomic(tmp.path(), name, b"x"),
                Err(SnapshotFileError::InvalidName { .. })
            ));
            assert!(matches!(
                read(tmp.path(), name),
                Err(SnapshotFileError::InvalidName { .. })
            ));
        }
    }
}
