//! Checking and extracting directory artifacts, which are tar.gz files.
//!
//! An archive is safe when extracting it into an empty directory can only
//! create regular files, directories and links inside that directory, and
//! every link resolves inside it. Both the upload check and the extraction
//! apply these rules to the whole archive before writing anything:
//!
//! - entry paths are relative and contain no `..`;
//! - no entry path goes through an entry that is a symbolic link;
//! - a symbolic link's target, resolved from the link's directory and
//!   following the archive's other symbolic links, never leaves the root;
//! - a hard link names an earlier regular file of the archive;
//! - there are no device files or FIFOs, and only the root directory entry
//!   (`.` or `./`) may name the root.
//!
//! Extraction also refuses to write through a symbolic link that already
//! existed in the output directory.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use flate2::read::MultiGzDecoder;
use tar::{Archive, EntryType};

use super::ArtifactError;

/// Maximum number of symbolic links one resolution follows, the same limit
/// as Linux's.
const MAX_SYMLINK_HOPS: usize = 40;

/// Reason an archive entry is rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnsafeReason {
    AbsolutePath,
    ParentComponent,
    /// A non-directory entry named `.`, which would replace the root.
    ReplacesRoot,
    ThroughSymlink,
    SymlinkEscapes,
    SymlinkLoop,
    HardLinkTarget,
    SpecialFile,
    UnsupportedType,
}

impl fmt::Display for UnsafeReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UnsafeReason::AbsolutePath => "the path is absolute",
            UnsafeReason::ParentComponent => "the path contains `..`",
            UnsafeReason::ReplacesRoot => "the entry would replace the directory itself",
            UnsafeReason::ThroughSymlink => "the path goes through a symbolic link",
            UnsafeReason::SymlinkEscapes => "the symbolic link points outside the directory",
            UnsafeReason::SymlinkLoop => {
                "the symbolic link is part of a loop or of a chain of more than 40 links"
            }
            UnsafeReason::HardLinkTarget => {
                "the hard link's target is not an earlier regular file of the archive"
            }
            UnsafeReason::SpecialFile => "device files and FIFOs are not allowed",
            UnsafeReason::UnsupportedType => "the entry type is not supported",
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum EntryKind {
    File,
    Directory,
    Symlink(PathBuf),
    /// Target, normalized like an entry path.
    HardLink(PathBuf),
    /// A pax global header, which describes no file.
    Ignored,
}

/// One entry that passed the checks on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct CheckedEntry {
    /// Relative path without `.` and `..`, empty for the root.
    path: PathBuf,
    kind: EntryKind,
}

/// Checks every entry of the tar.gz file at `path` and the gzip checksum,
/// and returns the entries in archive order. `archive_name` names the
/// archive in errors.
pub(super) fn verify(path: &Path, archive_name: &str) -> Result<Vec<CheckedEntry>, ArtifactError> {
    let invalid = |source| ArtifactError::InvalidArchive {
        archive: archive_name.to_owned(),
        source,
    };
    let mut archive = open_archive(path)?;

    let mut entries = Vec::new();
    for entry in archive.entries().map_err(invalid)? {
        let entry = entry.map_err(invalid)?;
        entries.push(check_entry(&entry, archive_name)?);
    }

    // tar stops at its end-of-archive blocks, so the rest of the gzip stream
    // is read to make the decoder verify its CRC and length.
    let mut decoder = archive.into_inner();
    io::copy(&mut decoder, &mut io::sink()).map_err(invalid)?;
    if decoder.header().is_none() {
        return Err(invalid(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the file is empty",
        )));
    }

    check_links(&entries, archive_name)?;
    Ok(entries)
}

/// Extracts a stored directory artifact into `out_dir`, refusing entries that
/// would land outside it.
///
/// The whole archive is checked before anything is written (see the module
/// docs). `out_dir` is created if needed. Entries replace files and links of
/// the same name in `out_dir`. File modes keep their permission bits, without
/// set-user-ID, set-group-ID and sticky bits, and always readable and
/// writable by the owner. Owners and modification times are not restored.
///
/// NOTE: There is no limit on the extracted size, so a small archive of
/// highly compressible data can fill the disk.
pub fn extract_directory(archive: &Path, out_dir: &Path) -> Result<(), ArtifactError> {
    let archive_name = archive.display().to_string();
    let invalid = |source| ArtifactError::InvalidArchive {
        archive: archive_name.clone(),
        source,
    };
    let checked = verify(archive, &archive_name)?;
    fs::create_dir_all(out_dir).map_err(|source| ArtifactError::Extract {
        entry: ".".to_owned(),
        path: out_dir.to_owned(),
        source,
    })?;

    // The archive is read a second time, because a gzip stream cannot seek
    // back. Each entry must match what the check saw.
    let mut reader = open_archive(archive)?;
    let mut entries = reader.entries().map_err(invalid)?;
    for expected in &checked {
        let changed = || {
            invalid(io::Error::new(
                io::ErrorKind::InvalidData,
                "the archive changed while it was extracted",
            ))
        };
        let mut entry = entries.next().ok_or_else(changed)?.map_err(invalid)?;
        if check_entry(&entry, &archive_name)? != *expected {
            return Err(changed());
        }
        unpack_entry(&mut entry, expected, out_dir, &archive_name)?;
    }
    Ok(())
}

fn open_archive(path: &Path) -> Result<Archive<MultiGzDecoder<BufReader<File>>>, ArtifactError> {
    let file = File::open(path).map_err(|source| ArtifactError::OpenArchive {
        path: path.to_owned(),
        source,
    })?;
    Ok(Archive::new(MultiGzDecoder::new(BufReader::new(file))))
}

/// Reads one entry's path and kind, rejecting what is unsafe on its own.
fn check_entry<R: Read>(
    entry: &tar::Entry<R>,
    archive_name: &str,
) -> Result<CheckedEntry, ArtifactError> {
    let shown = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    let unsafe_entry = |reason| ArtifactError::UnsafeEntry {
        archive: archive_name.to_owned(),
        entry: shown.clone(),
        reason,
    };
    let invalid = |source| ArtifactError::InvalidArchive {
        archive: archive_name.to_owned(),
        source,
    };

    let path = normalize(&entry.path().map_err(invalid)?).map_err(unsafe_entry)?;
    let entry_type = entry.header().entry_type();
    let kind = match entry_type {
        // Old archives mark directories only by a trailing slash.
        EntryType::Regular if entry.path_bytes().ends_with(b"/") => EntryKind::Directory,
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => EntryKind::File,
        EntryType::Directory => EntryKind::Directory,
        EntryType::Symlink => {
            let target = entry.link_name().map_err(invalid)?.ok_or_else(|| {
                invalid(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("symbolic link `{shown}` has no target"),
                ))
            })?;
            EntryKind::Symlink(target.into_owned())
        }
        EntryType::Link => {
            let target = entry
                .link_name()
                .map_err(invalid)?
                .ok_or(UnsafeReason::HardLinkTarget)
                .and_then(|target| match normalize(&target) {
                    Ok(target) if !target.as_os_str().is_empty() => Ok(target),
                    _ => Err(UnsafeReason::HardLinkTarget),
                })
                .map_err(unsafe_entry)?;
            EntryKind::HardLink(target)
        }
        EntryType::XGlobalHeader => EntryKind::Ignored,
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            return Err(unsafe_entry(UnsafeReason::SpecialFile));
        }
        _ => return Err(unsafe_entry(UnsafeReason::UnsupportedType)),
    };

    let names_root = path.as_os_str().is_empty();
    if names_root && !matches!(kind, EntryKind::Directory | EntryKind::Ignored) {
        return Err(unsafe_entry(UnsafeReason::ReplacesRoot));
    }
    Ok(CheckedEntry { path, kind })
}

/// Drops `.` components and rejects absolute paths and `..`.
fn normalize(path: &Path) -> Result<PathBuf, UnsafeReason> {
    let mut normal = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(name) => normal.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err(UnsafeReason::ParentComponent),
            Component::RootDir | Component::Prefix(_) => return Err(UnsafeReason::AbsolutePath),
        }
    }
    Ok(normal)
}

/// Checks the rules that involve more than one entry: paths through
/// symbolic links, where symbolic links resolve to, and hard link targets.
fn check_links(entries: &[CheckedEntry], archive_name: &str) -> Result<(), ArtifactError> {
    let symlinks: HashMap<&Path, &Path> = entries
        .iter()
        .filter_map(|entry| match &entry.kind {
            EntryKind::Symlink(target) => Some((entry.path.as_path(), target.as_path())),
            _ => None,
        })
        .collect();
    let through_symlink = |path: &Path| {
        path.ancestors()
            .skip(1)
            .any(|ancestor| symlinks.contains_key(ancestor))
    };
    let mut earlier_files: HashSet<&Path> = HashSet::new();

    for entry in entries {
        let unsafe_entry = |reason| ArtifactError::UnsafeEntry {
            archive: archive_name.to_owned(),
            entry: entry.path.display().to_string(),
            reason,
        };
        if through_symlink(&entry.path) {
            return Err(unsafe_entry(UnsafeReason::ThroughSymlink));
        }
        match &entry.kind {
            EntryKind::Symlink(target) => {
                let parent = entry.path.parent().unwrap_or(Path::new(""));
                let mut hops = 0;
                resolve_symlink(&symlinks, parent, target, &mut hops).map_err(unsafe_entry)?;
                earlier_files.remove(entry.path.as_path());
            }
            // A hard link to a symbolic link would copy the link to another
            // directory, where its relative target may point elsewhere, so
            // only names that are regular files at this point are accepted.
            EntryKind::HardLink(target) => {
                if through_symlink(target) || !earlier_files.contains(target.as_path()) {
                    return Err(unsafe_entry(UnsafeReason::HardLinkTarget));
                }
                earlier_files.insert(&entry.path);
            }
            EntryKind::File => {
                earlier_files.insert(&entry.path);
            }
            EntryKind::Directory => {
                earlier_files.remove(entry.path.as_path());
            }
            EntryKind::Ignored => {}
        }
    }
    Ok(())
}

/// Resolves `target` from the directory `dir` the way the kernel would
/// after extraction, following the archive's symbolic links, and fails if
/// the resolution leaves the root at any point.
///
/// Checking the target's text alone is not enough: with `s -> .`, the link
/// `x -> s/../etc` looks inside but resolves to `../etc`.
fn resolve_symlink(
    symlinks: &HashMap<&Path, &Path>,
    dir: &Path,
    target: &Path,
    hops: &mut usize,
) -> Result<PathBuf, UnsafeReason> {
    let mut current = dir.to_path_buf();
    for component in target.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !current.pop() {
                    return Err(UnsafeReason::SymlinkEscapes);
                }
            }
            Component::Normal(name) => {
                current.push(name);
                if let Some(next) = symlinks.get(current.as_path()) {
                    *hops += 1;
                    if *hops > MAX_SYMLINK_HOPS {
                        return Err(UnsafeReason::SymlinkLoop);
                    }
                    current.pop();
                    current = resolve_symlink(symlinks, &current, next, hops)?;
                }
            }
            Component::RootDir | Component::Prefix(_) => return Err(UnsafeReason::SymlinkEscapes),
        }
    }
    Ok(current)
}

/// Writes one checked entry below `out_dir`.
fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<R>,
    checked: &CheckedEntry,
    out_dir: &Path,
    archive_name: &str,
) -> Result<(), ArtifactError> {
    if checked.kind == EntryKind::Ignored {
        return Ok(());
    }
    let dest = out_dir.join(&checked.path);
    let extract_error = |source| ArtifactError::Extract {
        entry: checked.path.display().to_string(),
        path: dest.clone(),
        source,
    };
    reject_existing_symlinks(out_dir, &checked.path, archive_name)?;

    if checked.kind == EntryKind::Directory {
        return match fs::symlink_metadata(&dest) {
            Ok(metadata) if metadata.is_dir() => Ok(()),
            Ok(_) => fs::remove_file(&dest)
                .and_then(|()| fs::create_dir(&dest))
                .map_err(extract_error),
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                fs::create_dir_all(&dest).map_err(extract_error)
            }
            Err(err) => Err(extract_error(err)),
        };
    }

    // Archives need not list parent directories before their contents.
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(extract_error)?;
    }
    remove_non_directory(&dest).map_err(extract_error)?;
    match &checked.kind {
        EntryKind::File => {
            let mode = entry.header().mode().unwrap_or(0o644) & 0o777 | 0o600;
            // `create_new` fails on an existing name instead of following a
            // symbolic link that appeared since it was removed.
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&dest)
                .map_err(extract_error)?;
            io::copy(entry, &mut file).map_err(extract_error)?;
        }
        EntryKind::Symlink(target) => {
            std::os::unix::fs::symlink(target, &dest).map_err(extract_error)?;
        }
        // `link(2)` does not follow a symbolic link, and the check made sure
        // the target is a regular file of this archive.
        EntryKind::HardLink(target) => {
            fs::hard_link(out_dir.join(target), &dest).map_err(extract_error)?;
        }
        EntryKind::Directory | EntryKind::Ignored => {}
    }
    Ok(())
}

/// Fails if a directory on the way to `relative` below `out_dir` is a
/// symbolic link. The archive cannot have created one, because the check
/// rejects paths through its links, so it existed before.
fn reject_existing_symlinks(
    out_dir: &Path,
    relative: &Path,
    archive_name: &str,
) -> Result<(), ArtifactError> {
    let mut ancestors: Vec<&Path> = relative
        .ancestors()
        .skip(1)
        .filter(|ancestor| !ancestor.as_os_str().is_empty())
        .collect();
    ancestors.reverse();
    for ancestor in ancestors {
        match fs::symlink_metadata(out_dir.join(ancestor)) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(ArtifactError::UnsafeEntry {
                    archive: archive_name.to_owned(),
                    entry: relative.display().to_string(),
                    reason: UnsafeReason::ThroughSymlink,
                });
            }
            Ok(_) => {}
            // Nothing deeper exists either.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(source) => {
                return Err(ArtifactError::Extract {
                    entry: relative.display().to_string(),
                    path: out_dir.join(ancestor),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Removes a file or symbolic link at `path`. A directory is left for the
/// following create to fail on.
fn remove_non_directory(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(metadata) if !metadata.is_dir() => fs::remove_file(path),
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(err),
    }
}
