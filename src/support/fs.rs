//! Files written safely and files watched cheaply.
//!
//! - [`write_private`] and [`write_replacing`] replace a file atomically (a temp file renamed over it), so a
//!   reader never sees half a file; private files (keys, secrets, sessions) are created owner-only.
//! - [`update_locked`] is the read-change-replace cycle under an exclusive lock that the file stores share,
//!   so a CLI and a server (or two replicas on one volume) writing at once cannot lose an update.
//! - [`FileStamp`] is how every watcher tells that a file changed: modification time and length.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// A file that could not be read or written, naming it.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: cannot read: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: cannot write: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

impl FileError {
    fn read(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
        move |source| FileError::Read { path: path.to_path_buf(), source }
    }

    fn write(path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
        move |source| FileError::Write { path: path.to_path_buf(), source }
    }
}

/// Who may read a file written here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Owner only (mode 0600): keys, secrets, sessions, credentials.
    Private,
    /// As the umask says: lists other processes read (revocations).
    Shared,
}

/// Write `data` to `path` readable only by its owner, replacing the file atomically.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), FileError> {
    write_atomic(path, data, Access::Private)
}

/// Write `data` to `path` with the umask's mode, replacing the file atomically.
pub fn write_replacing(path: &Path, data: &[u8]) -> Result<(), FileError> {
    write_atomic(path, data, Access::Shared)
}

fn write_atomic(path: &Path, data: &[u8], access: Access) -> Result<(), FileError> {
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    if access == Access::Private {
        opts.mode(0o600);
    }
    let mut f = opts.open(&tmp).map_err(FileError::write(path))?;
    f.write_all(data).map_err(FileError::write(path))?;
    f.sync_all().map_err(FileError::write(path))?;
    std::fs::rename(&tmp, path).map_err(FileError::write(path))
}

/// Create the directory a file is to be written in.
pub fn create_parent(path: &Path) -> Result<(), FileError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::create_dir_all(dir).map_err(FileError::write(dir)),
        _ => Ok(()),
    }
}

/// Create the directory a private file is to be written in, and make it owner-only (0700) whatever the
/// umask, also when it existed already with a wider mode.
pub fn create_private_parent(path: &Path) -> Result<(), FileError> {
    create_parent(path)?;
    #[cfg(unix)]
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(FileError::write(dir))?;
    }
    Ok(())
}

/// Read `path`, `None` when it does not exist.
pub fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, FileError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(FileError::read(path)(e)),
    }
}

/// Read, change and atomically replace `path` under an exclusive lock on `path.lock`.
///
/// `change` gets the current contents (`None` when the file does not exist yet) and returns its result
/// and, when the file is to change, the new contents. The lock is held across the read and the rename.
/// The outer error is the file's; the inner one is `change`'s own, returned with nothing written.
pub fn update_locked<T, E>(
    path: &Path,
    access: Access,
    change: impl FnOnce(Option<Vec<u8>>) -> Result<(T, Option<Vec<u8>>), E>,
) -> Result<Result<T, E>, FileError> {
    create_parent(path)?;
    let lock_path = path.with_extension("lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(FileError::write(&lock_path))?;
    lock.lock().map_err(FileError::write(&lock_path))?;
    let out = match change(read_if_exists(path)?) {
        Ok((out, Some(data))) => write_atomic(path, &data, access).map(|()| Ok(out)),
        Ok((out, None)) => Ok(Ok(out)),
        Err(e) => Ok(Err(e)),
    };
    lock.unlock().map_err(FileError::write(&lock_path))?;
    out
}

/// Read a secret from `path` (surrounding whitespace trimmed), or create it: `make()` written owner-only.
pub fn read_or_create_secret(path: &Path, make: impl FnOnce() -> String) -> Result<Vec<u8>, FileError> {
    match read_if_exists(path)? {
        Some(bytes) => Ok(String::from_utf8_lossy(&bytes).trim().as_bytes().to_vec()),
        None => {
            create_parent(path)?;
            let secret = make();
            write_private(path, secret.as_bytes())?;
            Ok(secret.into_bytes())
        }
    }
}

/// What a watcher remembers of a file to tell that it changed: modification time, length, and which file
/// it is (the inode), so a file replaced by a rename is told from one rewritten in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    modified: SystemTime,
    len: u64,
    inode: u64,
}

impl FileStamp {
    /// The stamp of `path`; `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<FileStamp>, FileError> {
        match std::fs::metadata(path) {
            Ok(m) => Ok(Some(FileStamp {
                modified: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                len: m.len(),
                inode: inode(&m),
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(FileError::read(path)(e)),
        }
    }

    /// The stamp of `path`, `None` when it cannot be read (a change from or to unreadable is a change too).
    pub fn of(path: &Path) -> Option<FileStamp> {
        FileStamp::read(path).ok().flatten()
    }

    /// Whether this is another file than `before` at the same path: it was replaced by a rename, which
    /// makes a new version appear whole (an in-place write can be seen half-way).
    pub fn replaced(&self, before: &FileStamp) -> bool {
        self.inode != before.inode
    }
}

/// The rule every watcher applies before a changed file is read and applied: a file rewritten in place may
/// be caught half-way (a writer stalled before its last lines leaves a shorter file that still parses), so a
/// new version is applied only once it has looked the same for `settle`; a file replaced by a rename, or
/// removed, is whole the moment it is seen and is applied at once. (Then it is validated as at start.)
#[derive(Debug, Default)]
pub struct Settle {
    /// The stamps last seen changed, and since when they have looked so.
    pending: Option<(Vec<Option<FileStamp>>, std::time::Instant)>,
}

impl Settle {
    /// Whether the files, in force as `applied` and now stamped `now`, may be read and applied now.
    pub fn ready(
        &mut self,
        applied: &[Option<FileStamp>],
        now: &[Option<FileStamp>],
        settle: std::time::Duration,
    ) -> bool {
        if applied == now {
            self.pending = None;
            return false;
        }
        let whole = applied.len() == now.len()
            && applied.iter().zip(now).all(|(before, after)| match (before, after) {
                (b, a) if b == a => true,
                (Some(b), Some(a)) => a.replaced(b),
                (Some(_), None) => true,
                (None, _) => false,
            });
        let ready = match &self.pending {
            _ if whole => true,
            Some((seen, since)) if seen.as_slice() == now => since.elapsed() >= settle,
            _ => {
                self.pending = Some((now.to_vec(), std::time::Instant::now()));
                false
            }
        };
        if ready {
            self.pending = None;
        }
        ready
    }
}

#[cfg(unix)]
fn inode(m: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(m)
}

#[cfg(not(unix))]
fn inode(_: &std::fs::Metadata) -> u64 {
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_owner_only_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        assert!(!path.with_extension("tmp").exists(), "no temp file left behind");
    }

    #[test]
    fn update_locked_sees_the_previous_contents_and_writes_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/list.json");
        let seen = update_locked(&path, Access::Shared, |cur| Ok::<_, ()>((cur, Some(b"a".to_vec())))).unwrap();
        assert_eq!(seen, Ok(None), "a missing file reads as None and its directory is created");
        let seen = update_locked(&path, Access::Shared, |cur| Ok::<_, ()>((cur, None))).unwrap();
        assert_eq!(seen.unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(std::fs::read(&path).unwrap(), b"a", "unchanged when no new contents are returned");
        let refused = update_locked(&path, Access::Shared, |_| Err::<((), _), _>("no")).unwrap();
        assert_eq!(refused, Err("no"));
        assert_eq!(std::fs::read(&path).unwrap(), b"a", "nothing written when the change fails");
    }

    #[test]
    fn stamps_change_with_the_file_and_a_missing_file_has_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert_eq!(FileStamp::read(&path).unwrap(), None);
        std::fs::write(&path, b"x").unwrap();
        let a = FileStamp::of(&path);
        std::fs::write(&path, b"xy").unwrap();
        assert!(a.is_some());
        assert_ne!(a, FileStamp::of(&path), "a longer file has another stamp");
        let b = FileStamp::of(&path).unwrap();
        assert!(!b.replaced(&a.unwrap()), "rewritten in place: the same file");
        write_replacing(&path, b"xyz").unwrap();
        assert!(FileStamp::of(&path).unwrap().replaced(&b), "renamed over: another file");
    }

    #[test]
    fn secrets_are_created_once_and_read_back_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d/refresh-secret");
        let made = read_or_create_secret(&path, || "s3cret".into()).unwrap();
        assert_eq!(made, b"s3cret");
        std::fs::write(&path, b"  other\n").unwrap();
        assert_eq!(read_or_create_secret(&path, || unreachable!()).unwrap(), b"other");
    }
}
