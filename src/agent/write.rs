//! Writing a pod's files onto the RAM disk: all together, with the chosen mode, never outside
//! the output directory, never onto a disk-backed filesystem unless allowed.
//!
//! The layout is the kubelet's AtomicWriter's for Secret volumes: the set is written into a
//! fresh directory `..<timestamp>`, each file synced and given its mode; the symlink `..data`
//! is then swapped to it with one `rename`, and each top-level name is a symlink into `..data`.
//! A reader sees the whole old set or the whole new set, never a mix or a partial file. Every
//! step is taken relative to an open directory with `O_NOFOLLOW`/`O_EXCL`, so a symlink planted
//! in the volume cannot redirect a write.

use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::render::OutputFile;
use crate::spec::size::{self, human};

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
    /// Two files of the set have the same path.
    #[error("{path} would be written twice; give each secret its own file name")]
    Collision {
        /// The path.
        path: PathBuf,
    },
    /// The volume has no room for the new set beside the files in place.
    #[error(
        "the new set of {files} file(s) takes {} (in whole 4 KiB pages), and {dir} has {} free of \
         {}: the volume must hold the files in place and the new set side by side",
        human(*needed),
        human(*free),
        human(*total)
    )]
    NoSpace {
        /// The output directory.
        dir: PathBuf,
        /// Files of the new set.
        files: usize,
        /// Bytes the new set takes, in whole pages.
        needed: u64,
        /// Bytes free on the volume.
        free: u64,
        /// The volume's size.
        total: u64,
    },
    /// Another I/O error.
    #[error("{action} {path}")]
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

impl WriteError {
    /// Whether the volume ran out of room (checked before writing, or `ENOSPC`/`EDQUOT` while
    /// writing).
    pub fn is_no_space(&self) -> bool {
        match self {
            WriteError::NoSpace { .. } => true,
            WriteError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(code) if code == Errno::NOSPC.raw_os_error() || code == Errno::DQUOT.raw_os_error()
            ),
            _ => false,
        }
    }
}

/// What a set of `files` takes on a tmpfs, as the webhook counts it ([`crate::spec::size`]):
/// (the pages of the set's files, the pages of the links beside the sets). A tmpfs charges each
/// file whole pages, keeps a short symlink target in the inode and gives a long one a page.
pub fn set_pages(files: &[OutputFile]) -> (u64, u64) {
    let set = files
        .iter()
        .map(|f| size::pages(f.bytes.len() as u64))
        .sum();
    let mut tops: Vec<&str> = files
        .iter()
        .filter_map(|f| f.path.split('/').next())
        .filter(|top| !top.starts_with(".."))
        .collect();
    tops.sort_unstable();
    tops.dedup();
    let links = size::link_pages(tops);
    (set, links)
}

/// Refuse a set that cannot fit beside the files in place, before writing any of it: a tmpfs
/// with a size (an emptyDir's `sizeLimit`) says how much is free.
fn check_room(root: &OwnedFd, dir: &Path, files: &[OutputFile]) -> Result<(), WriteError> {
    let Ok(stat) = rfs::fstatvfs(root) else {
        return Ok(());
    };
    // ramfs, or a tmpfs without a size: no limit to check against.
    if stat.f_blocks == 0 {
        return Ok(());
    }
    let block = stat.f_frsize.max(1);
    let (set, links) = set_pages(files);
    let needed = (set + links) * size::PAGE_BYTES;
    let free = stat.f_bavail.saturating_mul(block);
    if needed <= free {
        return Ok(());
    }
    Err(WriteError::NoSpace {
        dir: dir.to_owned(),
        files: files.len(),
        needed,
        free,
        total: stat.f_blocks.saturating_mul(block),
    })
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

/// The symlink to the current set.
pub const DATA_LINK: &str = "..data";

/// Write `files` (paths relative to `dir`) as one set with `mode`, replacing the previous set.
/// Returns the set's directory.
pub fn write_set(
    dir: &Path,
    files: &[OutputFile],
    mode: u32,
    allow_disk: bool,
) -> Result<PathBuf, WriteError> {
    let root = open_dir(dir)?;
    check_fd_in_memory(&root, dir, allow_disk)?;
    check_room(&root, dir, files)?;
    let set_name = format!(
        "..{}.{:08x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
        fastrand::u32(..)
    );
    let set_path = dir.join(&set_name);
    let cleanup = RemoveOnDrop {
        root: &root,
        name: set_name.clone(),
        armed: true,
    };
    rfs::mkdirat(&root, set_name.as_str(), Mode::from_raw_mode(0o755))
        .map_err(io("cannot create directory", &set_path))?;
    let set = open_below(&root, &set_name, dir)?;
    rfs::fchmod(&set, Mode::from_raw_mode(0o755)).map_err(io("cannot chmod", &set_path))?;
    let mut top_level: Vec<&str> = Vec::new();
    for file in files {
        let mut components: Vec<&str> = file.path.split('/').collect();
        let file_name = components.pop().unwrap_or_default();
        // `..`-names (the env file) are reached through `..data` only.
        let top = components.first().copied().unwrap_or(file_name);
        if !top.starts_with("..") && !top_level.contains(&top) {
            top_level.push(top);
        }
        let target = set_path.join(&file.path);
        let mut parent = rfs::openat(
            &set,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io("cannot open directory", &set_path))?;
        let mut walked = set_path.clone();
        for component in components {
            walked.push(component);
            match rfs::mkdirat(&parent, component, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(errno) => return Err(io("cannot create directory", &walked)(errno)),
            }
            parent = open_below(&parent, component, &walked)?;
            rfs::fchmod(&parent, Mode::from_raw_mode(0o755))
                .map_err(io("cannot chmod", &walked))?;
        }
        let fd = rfs::openat(
            &parent,
            file_name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|errno| match errno {
            Errno::EXIST => WriteError::Collision {
                path: target.clone(),
            },
            errno => io("cannot create", &target)(errno),
        })?;
        let mut out = std::fs::File::from(fd);
        out.write_all(&file.bytes)
            .map_err(|source| WriteError::Io {
                action: "cannot write",
                path: target.clone(),
                source,
            })?;
        out.sync_all().map_err(|source| WriteError::Io {
            action: "cannot sync",
            path: target.clone(),
            source,
        })?;
        rfs::fchmod(&out, Mode::from_raw_mode(mode)).map_err(io("cannot chmod", &target))?;
        rfs::fsync(&parent).map_err(io("cannot sync the directory of", &target))?;
    }
    rfs::fsync(&set).map_err(io("cannot sync", &set_path))?;

    // Swap `..data` to the new set.
    let previous = rfs::readlinkat(&root, DATA_LINK, Vec::new())
        .ok()
        .and_then(|target| target.into_string().ok());
    let temp_link = format!("{DATA_LINK}_tmp.{:08x}", fastrand::u32(..));
    rfs::symlinkat(set_name.as_str(), &root, temp_link.as_str())
        .map_err(io("cannot create the symlink", &dir.join(&temp_link)))?;
    if let Err(errno) = rfs::renameat(&root, temp_link.as_str(), &root, DATA_LINK) {
        let _ = rfs::unlinkat(&root, temp_link.as_str(), AtFlags::empty());
        return Err(io("cannot swap", &dir.join(DATA_LINK))(errno));
    }
    let mut cleanup = cleanup;
    cleanup.armed = false;

    // Each top-level name points into `..data`; a file or symlink in its place is replaced.
    for name in &top_level {
        let link_target = format!("{DATA_LINK}/{name}");
        let current = rfs::readlinkat(&root, *name, Vec::new()).ok();
        if current
            .as_ref()
            .is_some_and(|t| t.as_bytes() == link_target.as_bytes())
        {
            continue;
        }
        let temp = format!("..{name}.link-{:08x}", fastrand::u32(..));
        let temp = &temp[..temp.len().min(255)];
        rfs::symlinkat(link_target.as_str(), &root, temp)
            .map_err(io("cannot create the symlink", &dir.join(name)))?;
        if let Err(errno) = rfs::renameat(&root, temp, &root, *name) {
            let _ = rfs::unlinkat(&root, temp, AtFlags::empty());
            return Err(match errno {
                Errno::ISDIR | Errno::NOTEMPTY | Errno::EXIST => WriteError::Escapes {
                    path: dir.join(name),
                    dir: dir.to_owned(),
                },
                errno => io("cannot link", &dir.join(name))(errno),
            });
        }
    }
    // Names of the previous set that the new one no longer has, and the previous set itself.
    if let Some(previous) = previous.filter(|p| p.starts_with("..") && *p != set_name) {
        if let Ok(old) = open_below(&root, &previous, dir) {
            for entry in rfs::Dir::read_from(&old).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name == "." || name == ".." || top_level.contains(&name.as_str()) {
                    continue;
                }
                let ours = rfs::readlinkat(&root, name.as_str(), Vec::new())
                    .is_ok_and(|t| t.as_bytes() == format!("{DATA_LINK}/{name}").as_bytes());
                if ours {
                    let _ = rfs::unlinkat(&root, name.as_str(), AtFlags::empty());
                }
            }
        }
        remove_tree(&root, &previous);
    }
    rfs::fsync(&root).map_err(io("cannot sync", dir))?;
    Ok(set_path)
}

/// Open the directory `name` below `parent`, refusing a symlink.
fn open_below(parent: &OwnedFd, name: &str, path: &Path) -> Result<OwnedFd, WriteError> {
    rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| match errno {
        Errno::LOOP | Errno::NOTDIR => WriteError::Escapes {
            path: path.to_owned(),
            dir: path.to_owned(),
        },
        errno => io("cannot open directory", path)(errno),
    })
}

/// Remove the directory tree `name` below `parent`, never following a symlink.
fn remove_tree(parent: &OwnedFd, name: &str) {
    if let Ok(dir) = rfs::openat(
        parent,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        let entries: Vec<(String, bool)> = rfs::Dir::read_from(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.file_type() == rfs::FileType::Directory,
                )
            })
            .filter(|(n, _)| n != "." && n != "..")
            .collect();
        for (entry, is_dir) in entries {
            if is_dir {
                remove_tree(&dir, &entry);
            } else {
                let _ = rfs::unlinkat(&dir, entry.as_str(), AtFlags::empty());
            }
        }
    }
    let _ = rfs::unlinkat(parent, name, AtFlags::REMOVEDIR);
}

/// Removes a half-written set unless it became the current one.
struct RemoveOnDrop<'a> {
    root: &'a OwnedFd,
    name: String,
    armed: bool,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            remove_tree(self.root, &self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn file(path: &str, bytes: &[u8]) -> OutputFile {
        OutputFile {
            path: path.to_owned(),
            bytes: bytes.to_vec(),
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_a_set_with_mode_and_sub_folders_behind_data() {
        let dir = tempfile::tempdir().unwrap();
        let set = write_set(
            dir.path(),
            &[file("db/creds.json", b"{\"a\":1}"), file("secret", b"s")],
            0o440,
            true,
        )
        .unwrap();
        let path = dir.path().join("db/creds.json");
        assert_eq!(std::fs::read(&path).unwrap(), b"{\"a\":1}");
        assert_eq!(std::fs::read(dir.path().join("secret")).unwrap(), b"s");
        assert_eq!(path.metadata().unwrap().permissions().mode() & 0o777, 0o440);
        assert_eq!(
            std::fs::read_link(dir.path().join("db")).unwrap(),
            Path::new("..data/db")
        );
        assert_eq!(
            std::fs::read_link(dir.path().join(DATA_LINK)).unwrap(),
            Path::new(set.file_name().unwrap())
        );
        // A new set replaces the old one: a name it no longer has goes, the old set goes.
        write_set(dir.path(), &[file("secret", b"new")], 0o400, true).unwrap();
        assert_eq!(std::fs::read(dir.path().join("secret")).unwrap(), b"new");
        assert!(!dir.path().join("db").exists());
        let left = names(dir.path());
        assert_eq!(left.len(), 3, "{left:?}");
        assert!(left.contains(&"..data".to_owned()) && left.contains(&"secret".to_owned()));
    }

    #[test]
    fn the_same_path_twice_is_refused_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let err =
            write_set(dir.path(), &[file("a", b"1"), file("a", b"2")], 0o400, true).unwrap_err();
        assert!(matches!(err, WriteError::Collision { .. }), "{err}");
        assert!(names(dir.path()).is_empty(), "{:?}", names(dir.path()));
    }

    #[test]
    fn planted_symlinks_are_replaced_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        symlink(outside.path(), dir.path().join("db")).unwrap();
        let victim = outside.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        symlink(&victim, dir.path().join("secret")).unwrap();
        write_set(
            dir.path(),
            &[file("db/creds", b"x"), file("secret", b"x")],
            0o400,
            true,
        )
        .unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(names(outside.path()), ["victim"]);
        assert_eq!(std::fs::read(dir.path().join("db/creds")).unwrap(), b"x");
        // A planted `..data` link to elsewhere is swapped, not written through.
        let outside2 = tempfile::tempdir().unwrap();
        std::fs::remove_file(dir.path().join(DATA_LINK)).unwrap();
        symlink(outside2.path(), dir.path().join(DATA_LINK)).unwrap();
        write_set(dir.path(), &[file("secret", b"y")], 0o400, true).unwrap();
        assert!(names(outside2.path()).is_empty());
        assert_eq!(std::fs::read(dir.path().join("secret")).unwrap(), b"y");
    }

    #[test]
    fn no_room_is_told_apart_from_other_io_errors_and_pages_are_whole() {
        let io = |errno: Errno| WriteError::Io {
            action: "cannot write",
            path: PathBuf::from("/tmp/x"),
            source: errno.into(),
        };
        assert!(io(Errno::NOSPC).is_no_space());
        assert!(io(Errno::DQUOT).is_no_space());
        assert!(!io(Errno::IO).is_no_space());
        assert!(
            !WriteError::Collision {
                path: PathBuf::from("a")
            }
            .is_no_space()
        );
        let long = "d".repeat(130);
        let (set, links) = set_pages(&[
            file("a", &[b'x'; 4097]),
            file("b", b""),
            file(&format!("{long}/c"), b"c"),
            file("..versions", b"{}"),
        ]);
        // 2 + 0 + 1 + 1 pages; `..data` and a link being swapped, and the long name's link.
        assert_eq!((set, links), (4, 2));
    }

    #[test]
    fn refuses_disk_unless_allowed() {
        // The test's temp dir: tmpfs on some machines, disk on others.
        let dir = tempfile::tempdir().unwrap();
        let on_disk = check_in_memory(dir.path(), false).is_err();
        let result = write_set(dir.path(), &[file("s", b"x")], 0o400, false);
        assert_eq!(result.is_err(), on_disk);
        assert_eq!(dir.path().join("s").exists(), !on_disk);
        if let Err(err) = result {
            assert!(err.to_string().contains("not tmpfs or ramfs"), "{err}");
        }
    }
}
