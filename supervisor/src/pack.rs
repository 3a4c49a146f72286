//! `danube-supervisor pack DIR`: writes a tar stream of DIR to stdout, so
//! that the engine can copy what a step changed in the pod's workspace back
//! to the coordinator's copy, in images without `tar`.
//!
//! With `--newer-than PATH` only entries whose status-change time (ctime) is
//! at or after PATH's are packed. A step cannot set ctime back, so a file it
//! wrote, renamed or unpacked with old modification times is still found.
//! The last entry is always [`MANIFEST_NAME`]: every path found under DIR,
//! one per line, NUL-separated, which lets the reader delete what the step
//! deleted. The top-level `.danube` folder (step state) is neither packed
//! nor listed.
//!
//! Regular files, directories and symbolic links are packed (links as
//! links, never followed); sockets, devices and FIFOs are skipped. With
//! `--max-bytes N` a file whose data would take the packed total past N
//! bytes is skipped with a line on stderr, but still listed.
//!
//! Entries use GNU tar headers with `L` and `K` records for names and link
//! targets longer than 100 bytes, which `untar` and common readers accept.

use std::ffi::OsStr;
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

const BLOCK: usize = 512;

/// Name of the entry that lists every path found, NUL-separated. It lies
/// under `.danube/`, which `pack` never packs otherwise, so it cannot clash
/// with a workspace file.
pub const MANIFEST_NAME: &str = ".danube/pack-manifest";

/// The top-level folder left out, where steps keep their state.
const STATE_FOLDER: &str = ".danube";

/// Settings of `pack`.
pub struct PackOptions {
    pub root: PathBuf,
    /// Pack only entries changed at or after this file's ctime.
    pub newer_than: Option<PathBuf>,
    /// Upper bound on the packed file data, in bytes.
    pub max_bytes: Option<u64>,
}

/// Entry counts of one `pack`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PackSummary {
    pub packed: usize,
    pub listed: usize,
    pub skipped_over_limit: usize,
}

/// A ctime with nanoseconds, comparable.
type ChangeTime = (i64, i64);

fn change_time(metadata: &Metadata) -> ChangeTime {
    (metadata.ctime(), metadata.ctime_nsec())
}

/// Packs `options.root` into `output`.
///
/// # Errors
///
/// The root or the marker cannot be read, or writing to `output` failed.
/// A file that disappears or cannot be read while packing is skipped with a
/// line on stderr, since a step may still have left processes running.
pub fn pack(options: &PackOptions, output: &mut impl Write) -> Result<PackSummary, String> {
    let since = match &options.newer_than {
        Some(marker) => Some(change_time(&fs::symlink_metadata(marker).map_err(
            |err| format!("failed to read marker `{}`: {err}", marker.display()),
        )?)),
        None => None,
    };
    let root_metadata = fs::metadata(&options.root)
        .map_err(|err| format!("failed to read `{}`: {err}", options.root.display()))?;
    if !root_metadata.is_dir() {
        return Err(format!("`{}` is not a directory", options.root.display()));
    }

    let mut packer = Packer {
        output,
        since,
        budget: options.max_bytes.unwrap_or(u64::MAX),
        manifest: Vec::new(),
        summary: PackSummary::default(),
    };
    packer.walk(&options.root, Path::new(""))?;

    let manifest = std::mem::take(&mut packer.manifest);
    let header = Header::new(MANIFEST_NAME.as_bytes(), Kind::File, manifest.len() as u64);
    packer.write_entry(&header, &mut manifest.as_slice())?;
    packer
        .output
        .write_all(&[0; 2 * BLOCK])
        .and_then(|()| packer.output.flush())
        .map_err(write_error)?;
    Ok(packer.summary)
}

fn write_error(err: io::Error) -> String {
    format!("failed to write the tar stream: {err}")
}

struct Packer<'a, W: Write> {
    output: &'a mut W,
    since: Option<ChangeTime>,
    budget: u64,
    manifest: Vec<u8>,
    summary: PackSummary,
}

impl<W: Write> Packer<'_, W> {
    /// Packs the entries of `dir`, named `relative` in the stream, sorted
    /// by name so that the stream does not depend on directory order.
    fn walk(&mut self, dir: &Path, relative: &Path) -> Result<(), String> {
        let entries = match fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(err) => {
                eprintln!("danube-supervisor: skipping `{}`: {err}", dir.display());
                return Ok(());
            }
        };
        let mut names: Vec<_> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.file_name()))
            .collect();
        names.sort();

        for name in names {
            if relative.as_os_str().is_empty() && name == OsStr::new(STATE_FOLDER) {
                continue;
            }
            let path = dir.join(&name);
            let name_in_stream = relative.join(&name);
            let Ok(metadata) = fs::symlink_metadata(&path) else {
                continue;
            };
            self.entry(&path, &name_in_stream, &metadata)?;
        }
        Ok(())
    }

    fn entry(&mut self, path: &Path, relative: &Path, metadata: &Metadata) -> Result<(), String> {
        let file_type = metadata.file_type();
        if file_type.is_socket()
            || file_type.is_fifo()
            || file_type.is_block_device()
            || file_type.is_char_device()
        {
            return Ok(());
        }
        let name = relative.as_os_str().as_bytes();
        self.manifest.extend_from_slice(name);
        self.manifest.push(0);
        self.summary.listed += 1;
        let changed = self
            .since
            .is_none_or(|since| change_time(metadata) >= since);

        if file_type.is_dir() {
            if changed {
                let header = Header::new(name, Kind::Directory, 0).metadata(metadata);
                self.write_entry(&header, &mut io::empty())?;
                self.summary.packed += 1;
            }
            return self.walk(path, relative);
        }
        if !changed {
            return Ok(());
        }
        if file_type.is_symlink() {
            let Ok(target) = fs::read_link(path) else {
                return Ok(());
            };
            let header = Header::new(name, Kind::Symlink, 0)
                .metadata(metadata)
                .link(target.as_os_str().as_bytes());
            self.summary.packed += 1;
            return self.write_entry(&header, &mut io::empty());
        }

        let size = metadata.len();
        if size > self.budget {
            eprintln!(
                "danube-supervisor: not packed: `{}` ({size} bytes) would pass the limit of the packed size",
                relative.display()
            );
            self.summary.skipped_over_limit += 1;
            return Ok(());
        }
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(err) => {
                eprintln!(
                    "danube-supervisor: skipping `{}`: {err}",
                    relative.display()
                );
                return Ok(());
            }
        };
        self.budget -= size;
        let header = Header::new(name, Kind::File, size).metadata(metadata);
        // The file may grow or shrink while it is read, so the data is cut
        // or padded with zeros to the size in the header.
        let mut data = (&mut file).take(size).chain(io::repeat(0)).take(size);
        self.summary.packed += 1;
        self.write_entry(&header, &mut data)
    }

    /// Writes long-name records when needed, then the header, the data and
    /// its padding.
    fn write_entry(&mut self, header: &Header, data: &mut impl Read) -> Result<(), String> {
        if header.name.len() > 100 {
            self.write_long_record(b'L', &header.name)?;
        }
        if header.link.len() > 100 {
            self.write_long_record(b'K', &header.link)?;
        }
        self.output
            .write_all(&header.encode())
            .map_err(write_error)?;
        let copied = io::copy(data, self.output).map_err(write_error)?;
        self.pad(copied)
    }

    fn write_long_record(&mut self, kind: u8, value: &[u8]) -> Result<(), String> {
        let mut data = value.to_vec();
        data.push(0);
        let mut header = Header::new(b"././@LongLink", Kind::File, data.len() as u64);
        header.raw_kind = Some(kind);
        self.output
            .write_all(&header.encode())
            .and_then(|()| self.output.write_all(&data))
            .map_err(write_error)?;
        self.pad(data.len() as u64)
    }

    fn pad(&mut self, written: u64) -> Result<(), String> {
        let remainder = (written % BLOCK as u64) as usize;
        if remainder == 0 {
            return Ok(());
        }
        self.output
            .write_all(&[0; BLOCK][..BLOCK - remainder])
            .map_err(write_error)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    File,
    Directory,
    Symlink,
}

/// The fields of one GNU tar header that `pack` sets.
struct Header {
    name: Vec<u8>,
    link: Vec<u8>,
    kind: Kind,
    /// A type byte that overrides `kind`, for `L` and `K` records.
    raw_kind: Option<u8>,
    size: u64,
    mode: u32,
    mtime: u64,
}

impl Header {
    fn new(name: &[u8], kind: Kind, size: u64) -> Header {
        Header {
            name: name.to_vec(),
            link: Vec::new(),
            kind,
            raw_kind: None,
            size,
            mode: if kind == Kind::Directory {
                0o755
            } else {
                0o644
            },
            mtime: 0,
        }
    }

    fn metadata(mut self, metadata: &Metadata) -> Header {
        self.mode = metadata.mode() & 0o7777;
        self.mtime = u64::try_from(metadata.mtime()).unwrap_or(0);
        self
    }

    fn link(mut self, target: &[u8]) -> Header {
        self.link = target.to_vec();
        self
    }

    fn encode(&self) -> [u8; BLOCK] {
        let mut block = [0u8; BLOCK];
        copy_truncated(&mut block[0..100], &self.name);
        write_octal(&mut block[100..108], u64::from(self.mode));
        write_octal(&mut block[108..116], 0);
        write_octal(&mut block[116..124], 0);
        write_size(&mut block[124..136], self.size);
        write_octal(&mut block[136..148], self.mtime);
        block[156] = self.raw_kind.unwrap_or(match self.kind {
            Kind::File => b'0',
            Kind::Directory => b'5',
            Kind::Symlink => b'2',
        });
        copy_truncated(&mut block[157..257], &self.link);
        // The GNU magic and version, which announce `L` and `K` records.
        block[257..265].copy_from_slice(b"ustar  \0");

        block[148..156].fill(b' ');
        let sum: u64 = block.iter().map(|byte| u64::from(*byte)).sum();
        write_octal(&mut block[148..155], sum);
        block[155] = b' ';
        block
    }
}

fn copy_truncated(field: &mut [u8], value: &[u8]) {
    let length = value.len().min(field.len());
    field[..length].copy_from_slice(&value[..length]);
}

/// Writes `value` as zero-padded octal digits and a NUL, filling `field`.
fn write_octal(field: &mut [u8], value: u64) {
    let digits = field.len() - 1;
    let text = format!("{value:0digits$o}");
    let text = &text.as_bytes()[text.len().saturating_sub(digits)..];
    field[..digits].copy_from_slice(text);
    field[digits] = 0;
}

/// Writes a size in octal, or in GNU base-256 when it does not fit in 11
/// octal digits (8 GiB and more).
fn write_size(field: &mut [u8], size: u64) {
    if size < 1 << 33 {
        write_octal(field, size);
        return;
    }
    field.fill(0);
    let bytes = size.to_be_bytes();
    let start = field.len() - bytes.len();
    field[start..].copy_from_slice(&bytes);
    field[0] |= 0x80;
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;
    use crate::untar::untar;

    fn options(root: &Path) -> PackOptions {
        PackOptions {
            root: root.to_owned(),
            newer_than: None,
            max_bytes: None,
        }
    }

    fn manifest_of(root: &Path) -> Vec<String> {
        let text = fs::read(root.join(MANIFEST_NAME)).unwrap();
        text.split(|byte| *byte == 0)
            .filter(|name| !name.is_empty())
            .map(|name| String::from_utf8(name.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn pack_round_trips_through_untar() {
        let source = tempfile::tempdir().unwrap();
        let long = "d".repeat(120);
        fs::create_dir_all(source.path().join(&long)).unwrap();
        fs::write(source.path().join(&long).join("inner.txt"), b"deep").unwrap();
        fs::write(source.path().join("a.txt"), b"alpha").unwrap();
        symlink("a.txt", source.path().join("link")).unwrap();
        fs::create_dir_all(source.path().join(".danube/steps/1")).unwrap();
        fs::write(source.path().join(".danube/steps/1/stdout"), b"x").unwrap();

        let mut stream = Vec::new();
        let summary = pack(&options(source.path()), &mut stream).unwrap();
        let target = tempfile::tempdir().unwrap();
        untar(&mut stream.as_slice(), target.path()).unwrap();

        assert_eq!(summary.listed, 4);
        assert_eq!(fs::read(target.path().join("a.txt")).unwrap(), b"alpha");
        assert_eq!(
            fs::read(target.path().join(&long).join("inner.txt")).unwrap(),
            b"deep"
        );
        assert_eq!(
            fs::read_link(target.path().join("link")).unwrap(),
            Path::new("a.txt")
        );
        assert!(!target.path().join(".danube/steps").exists());
        let manifest = manifest_of(target.path());
        assert_eq!(
            manifest,
            vec![
                "a.txt".into(),
                long.clone(),
                format!("{long}/inner.txt"),
                "link".into()
            ]
        );
    }

    #[test]
    fn only_entries_changed_after_the_marker_are_packed() {
        let source = tempfile::tempdir().unwrap();
        fs::write(source.path().join("old.txt"), b"old").unwrap();
        let marker = source.path().join(".danube/started");
        fs::create_dir_all(marker.parent().unwrap()).unwrap();
        // ctime has the resolution of the kernel's clock tick, so wait for
        // the next one before writing the marker.
        std::thread::sleep(std::time::Duration::from_millis(20));
        fs::write(&marker, b"").unwrap();
        fs::write(source.path().join("new.txt"), b"new").unwrap();

        let mut stream = Vec::new();
        let summary = pack(
            &PackOptions {
                newer_than: Some(marker),
                ..options(source.path())
            },
            &mut stream,
        )
        .unwrap();
        let target = tempfile::tempdir().unwrap();
        untar(&mut stream.as_slice(), target.path()).unwrap();

        assert!(target.path().join("new.txt").exists());
        assert!(!target.path().join("old.txt").exists());
        assert_eq!(summary.listed, 2);
        assert_eq!(manifest_of(target.path()), vec!["new.txt", "old.txt"]);
    }

    #[test]
    fn files_over_limit_listed_not_packed() {
        let source = tempfile::tempdir().unwrap();
        fs::write(source.path().join("big.bin"), vec![7u8; 4000]).unwrap();
        fs::write(source.path().join("small.txt"), b"fits").unwrap();

        let mut stream = Vec::new();
        let summary = pack(
            &PackOptions {
                max_bytes: Some(1000),
                ..options(source.path())
            },
            &mut stream,
        )
        .unwrap();
        let target = tempfile::tempdir().unwrap();
        untar(&mut stream.as_slice(), target.path()).unwrap();

        assert_eq!(summary.skipped_over_limit, 1);
        assert!(!target.path().join("big.bin").exists());
        assert_eq!(fs::read(target.path().join("small.txt")).unwrap(), b"fits");
        assert_eq!(manifest_of(target.path()), vec!["big.bin", "small.txt"]);
    }

    #[test]
    fn large_sizes_use_base_256() {
        let mut field = [0u8; 12];
        write_size(&mut field, 10 << 30);
        assert_eq!(field[0], 0x80);
        assert_eq!(
            u64::from_be_bytes(field[4..12].try_into().unwrap()),
            10 << 30
        );

        write_size(&mut field, 0o777);
        assert_eq!(&field, b"00000000777\0");
    }
}
