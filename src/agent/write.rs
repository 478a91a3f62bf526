//! Writing the secret onto the RAM disk: atomically, with the chosen mode, never outside the
//! output directory, never onto a disk-backed filesystem unless allowed.
//!
//! Every path step below the output directory is opened relative to its parent with
//! `O_NOFOLLOW`, so a symlink planted in the volume cannot redirect the write; the file is
//! written to a temporary name in its final directory, synced, given its mode and renamed over
//! the target, and the directory is synced. A reader sees the old file or the new one, never a
//! part.

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;

use crate::spec::RelativeFileName;

/// `statfs` magic numbers of the in-memory filesystems.
const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Why the secret could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The output directory is disk-backed.
    #[error("{dir} is on a filesystem of statfs type {fs_type:#x}, not tmpfs or ramfs")]
    NotInMemory {
        /// The directory.
        dir: PathBuf,
        /// Its filesystem type.
        fs_type: i64,
    },
    /// A path component is a symlink or not a directory.
    #[error(
        "{path}: a component of the file name is a symlink or not a directory; refusing to \
         write outside {dir}"
    )]
    Escapes {
        /// The path that was refused.
        path: PathBuf,
        /// The output directory.
        dir: PathBuf,
    },
    /// Another I/O error.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> WriteError + 'a {
    move |errno| WriteError::Io {
        action,
        path: path.to_owned(),
        source: errno.into(),
    }
}

/// Check that `dir` is in memory (tmpfs or ramfs); the check the agent runs before fetching.
pub fn check_in_memory(dir: &Path, allow_disk: bool) -> Result<(), WriteError> {
    let fd = open_dir(dir)?;
    check_fd_in_memory(&fd, dir, allow_disk)
}

fn open_dir(dir: &Path) -> Result<OwnedFd, WriteError> {
    rfs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(io("cannot open the output directory", dir))
}

fn check_fd_in_memory(fd: &OwnedFd, dir: &Path, allow_disk: bool) -> Result<(), WriteError> {
    let stat = rfs::fstatfs(fd).map_err(io("cannot statfs", dir))?;
    #[allow(clippy::unnecessary_cast)] // f_type's type differs between libc targets
    let fs_type = stat.f_type as i64;
    if allow_disk || fs_type == TMPFS_MAGIC || fs_type == RAMFS_MAGIC {
        Ok(())
    } else {
        Err(WriteError::NotInMemory {
            dir: dir.to_owned(),
            fs_type,
        })
    }
}

/// Atomically write `bytes` to `dir/name` with `mode`. Returns the written path.
pub fn write_secret(
    dir: &Path,
    name: &RelativeFileName,
    bytes: &[u8],
    mode: u32,
    allow_disk: bool,
) -> Result<PathBuf, WriteError> {
    let target = dir.join(name.as_str());
    let mut parent = open_dir(dir)?;
    check_fd_in_memory(&parent, dir, allow_disk)?;

    let mut components: Vec<&str> = name.as_str().split('/').collect();
    let file_name = components.pop().unwrap_or_default();
    let mut walked = dir.to_owned();
    for component in components {
        walked.push(component);
        match rfs::mkdirat(&parent, component, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(errno) => return Err(io("cannot create directory", &walked)(errno)),
        }
        parent = rfs::openat(
            &parent,
            component,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| match errno {
            Errno::LOOP | Errno::NOTDIR => WriteError::Escapes {
                path: walked.clone(),
                dir: dir.to_owned(),
            },
            errno => io("cannot open directory", &walked)(errno),
        })?;
    }

    let temp_name = format!(
        ".{file_name}.tmp-{}-{:x}",
        std::process::id(),
        super::random()
    );
    let temp = TempFile {
        dir: &parent,
        name: &temp_name,
        done: false,
    };
    let fd = rfs::openat(
        &parent,
        temp_name.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(io("cannot create a temporary file next to", &target))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes).map_err(|source| WriteError::Io {
        action: "cannot write",
        path: target.clone(),
        source,
    })?;
    file.sync_all().map_err(|source| WriteError::Io {
        action: "cannot sync",
        path: target.clone(),
        source,
    })?;
    rfs::fchmod(&file, Mode::from_raw_mode(mode)).map_err(io("cannot chmod", &target))?;
    drop(file);
    rfs::renameat(&parent, temp_name.as_str(), &parent, file_name).map_err(
        |errno| match errno {
            Errno::ISDIR | Errno::NOTEMPTY => WriteError::Escapes {
                path: target.clone(),
                dir: dir.to_owned(),
            },
            errno => io("cannot rename into place", &target)(errno),
        },
    )?;
    let mut temp = temp;
    temp.done = true;
    rfs::fsync(&parent).map_err(io("cannot sync the directory of", &target))?;
    Ok(target)
}

/// Removes the temporary file unless it was renamed into place.
struct TempFile<'a> {
    dir: &'a OwnedFd,
    name: &'a str,
    done: bool,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.done {
            let _ = rfs::unlinkat(self.dir, self.name, AtFlags::empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn name(s: &str) -> RelativeFileName {
        RelativeFileName::parse(s).unwrap()
    }

    #[test]
    fn writes_atomically_with_mode_and_sub_folders() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_secret(
            dir.path(),
            &name("db/creds.json"),
            b"{\"a\":1}",
            0o440,
            true,
        )
        .unwrap();
        assert_eq!(path, dir.path().join("db/creds.json"));
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}");
        assert_eq!(path.metadata().unwrap().permissions().mode() & 0o777, 0o440);
        // Overwrite keeps one file, no temporary left behind.
        write_secret(dir.path(), &name("db/creds.json"), b"new", 0o400, true).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let entries: Vec<_> = std::fs::read_dir(dir.path().join("db")).unwrap().collect();
        assert_eq!(entries.len(), 1);
    }

    #[test]
    fn refuses_planted_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), dir.path().join("db")).unwrap();
        let err = write_secret(dir.path(), &name("db/creds"), b"x", 0o400, true).unwrap_err();
        assert!(matches!(err, WriteError::Escapes { .. }), "{err}");
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        // A symlink at the file's own name is replaced, not followed.
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        symlink(&victim, dir.path().join("secret")).unwrap();
        write_secret(dir.path(), &name("secret"), b"x", 0o400, true).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert!(
            !dir.path()
                .join("secret")
                .symlink_metadata()
                .unwrap()
                .is_symlink()
        );
    }

    #[test]
    fn refuses_disk_unless_allowed() {
        // The test's temp dir: tmpfs on some machines, disk on others.
        let dir = tempfile::tempdir().unwrap();
        let on_disk = check_in_memory(dir.path(), false).is_err();
        let result = write_secret(dir.path(), &name("s"), b"x", 0o400, false);
        assert_eq!(result.is_err(), on_disk);
        assert_eq!(dir.path().join("s").exists(), !on_disk);
        if let Err(err) = result {
            assert!(err.to_string().contains("not tmpfs or ramfs"), "{err}");
        }
    }
}
