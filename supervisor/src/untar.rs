//! `danube-supervisor untar DIR`: unpacks a tar stream from stdin into DIR,
//! so that the project folder reaches the workspace in images without `tar`.
//!
//! Understood: ustar and GNU headers, regular files, directories, symbolic
//! links, GNU long names (`L`, `K`) and the `path` and `linkpath` records of
//! pax headers (`x`). Other entry types (devices, FIFOs, hard links) are
//! skipped with a note on stderr. Names that are absolute or contain `..`
//! are rejected, and nothing is written through a symbolic link, so the
//! stream cannot reach outside DIR. Permission bits are kept without setuid,
//! setgid and sticky bits; owners and modification times are not.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

const BLOCK: usize = 512;

/// Unpacks `input` into `root` and returns how many entries were written.
pub fn untar(input: &mut impl Read, root: &Path) -> Result<usize, String> {
    fs::create_dir_all(root)
        .map_err(|err| format!("failed to create `{}`: {err}", root.display()))?;
    let mut written = 0;
    let mut long_name: Option<Vec<u8>> = None;
    let mut long_link: Option<Vec<u8>> = None;
    let mut header = [0u8; BLOCK];

    loop {
        if !read_block(input, &mut header)? {
            return Err("the tar stream ended without its end-of-archive blocks".into());
        }
        if header.iter().all(|byte| *byte == 0) {
            return Ok(written);
        }
        check_checksum(&header)?;
        let size = parse_size(&header[124..136])?;
        let kind = header[156];

        match kind {
            b'L' => long_name = Some(read_data(input, size)?),
            b'K' => long_link = Some(read_data(input, size)?),
            b'x' => {
                let records = read_data(input, size)?;
                let (path, linkpath) = pax_paths(&records)?;
                long_name = path.or(long_name);
                long_link = linkpath.or(long_link);
            }
            b'g' => skip_data(input, size)?,
            _ => {
                let name = long_name.take().unwrap_or_else(|| header_name(&header));
                let link = long_link
                    .take()
                    .unwrap_or_else(|| field(&header[157..257]).to_vec());
                let relative = safe_relative(&name)?;
                // `./`, the root itself, as `tar -C DIR -cf - .` writes it.
                if relative.as_os_str().is_empty() && kind == b'5' {
                    skip_data(input, size)?;
                    continue;
                }
                if relative.as_os_str().is_empty() {
                    return Err(format!(
                        "tar entry `{}` has an empty name",
                        String::from_utf8_lossy(&name)
                    ));
                }
                let target = root.join(&relative);
                check_no_symlink_between(root, &relative)?;
                let mode = parse_octal(&header[100..108]).unwrap_or(0o644) as u32 & 0o777;

                match kind {
                    b'0' | 0 | b'7' => {
                        write_file(input, &target, size, mode)?;
                        written += 1;
                    }
                    b'5' => {
                        fs::create_dir_all(&target).map_err(|err| write_error(&target, err))?;
                        fs::set_permissions(&target, fs::Permissions::from_mode(mode | 0o700))
                            .map_err(|err| write_error(&target, err))?;
                        skip_data(input, size)?;
                        written += 1;
                    }
                    b'2' => {
                        make_parent(&target)?;
                        let link = String::from_utf8_lossy(&link).into_owned();
                        let _ = fs::remove_file(&target);
                        std::os::unix::fs::symlink(&link, &target)
                            .map_err(|err| write_error(&target, err))?;
                        skip_data(input, size)?;
                        written += 1;
                    }
                    other => {
                        eprintln!(
                            "danube-supervisor: skipping `{}`: tar entry type `{}` is not unpacked",
                            relative.display(),
                            other as char
                        );
                        skip_data(input, size)?;
                    }
                }
            }
        }
    }
}

fn write_error(path: &Path, err: io::Error) -> String {
    format!("failed to write `{}`: {err}", path.display())
}

/// Reads one block; false at a clean end of input.
fn read_block(input: &mut impl Read, block: &mut [u8; BLOCK]) -> Result<bool, String> {
    let mut filled = 0;
    while filled < BLOCK {
        match input.read(&mut block[filled..]) {
            Ok(0) if filled == 0 => return Ok(false),
            Ok(0) => return Err("the tar stream ended inside a block".into()),
            Ok(read) => filled += read,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(format!("failed to read the tar stream: {err}")),
        }
    }
    Ok(true)
}

fn padded(size: u64) -> u64 {
    size.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// Maximum size of a long-name or pax record, a bound on memory.
const MAX_METADATA_BYTES: u64 = 1 << 20;

fn read_data(input: &mut impl Read, size: u64) -> Result<Vec<u8>, String> {
    if size > MAX_METADATA_BYTES {
        return Err(format!(
            "a tar metadata entry of {size} bytes is larger than 1 MiB"
        ));
    }
    let mut data = vec![0; padded(size) as usize];
    input
        .read_exact(&mut data)
        .map_err(|err| format!("failed to read the tar stream: {err}"))?;
    data.truncate(size as usize);
    while data.last() == Some(&0) {
        data.pop();
    }
    Ok(data)
}

/// Skips an entry's data and the padding after it.
fn skip_data(input: &mut impl Read, size: u64) -> Result<(), String> {
    skip_bytes(input, padded(size))
}

fn skip_bytes(input: &mut impl Read, count: u64) -> Result<(), String> {
    let skipped = io::copy(&mut input.take(count), &mut io::sink())
        .map_err(|err| format!("failed to read the tar stream: {err}"))?;
    if skipped != count {
        return Err("the tar stream ended inside an entry".into());
    }
    Ok(())
}

fn write_file(input: &mut impl Read, target: &Path, size: u64, mode: u32) -> Result<(), String> {
    make_parent(target)?;
    // A symbolic link at the target is replaced, never followed.
    if fs::symlink_metadata(target).is_ok_and(|metadata| metadata.file_type().is_symlink()) {
        fs::remove_file(target).map_err(|err| write_error(target, err))?;
    }
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode)
        .open(target)
        .map_err(|err| write_error(target, err))?;
    let copied =
        io::copy(&mut input.take(size), &mut file).map_err(|err| write_error(target, err))?;
    if copied != size {
        return Err(format!(
            "the tar stream ended inside `{}`",
            target.display()
        ));
    }
    file.flush().map_err(|err| write_error(target, err))?;
    fs::set_permissions(target, fs::Permissions::from_mode(mode))
        .map_err(|err| write_error(target, err))?;
    skip_bytes(input, padded(size) - size)
}

fn make_parent(target: &Path) -> Result<(), String> {
    match target.parent() {
        Some(parent) => fs::create_dir_all(parent).map_err(|err| write_error(parent, err)),
        None => Ok(()),
    }
}

/// Rejects a name whose parent directories include a symbolic link, so no
/// entry is written outside the root through one.
fn check_no_symlink_between(root: &Path, relative: &Path) -> Result<(), String> {
    let mut current = root.to_path_buf();
    let parents: Vec<_> = relative.components().collect();
    for component in &parents[..parents.len().saturating_sub(1)] {
        current.push(component);
        if fs::symlink_metadata(&current).is_ok_and(|metadata| metadata.file_type().is_symlink()) {
            return Err(format!(
                "tar entry `{}` lies below the symbolic link `{}`",
                relative.display(),
                current.display()
            ));
        }
    }
    Ok(())
}

fn safe_relative(name: &[u8]) -> Result<PathBuf, String> {
    let text = String::from_utf8_lossy(name);
    let path = Path::new(text.as_ref());
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            _ => return Err(format!("tar entry `{text}` is absolute or contains `..`")),
        }
    }
    Ok(relative)
}

/// Returns the bytes of a NUL-terminated header field.
fn field(bytes: &[u8]) -> &[u8] {
    let end = bytes
        .iter()
        .position(|byte| *byte == 0)
        .unwrap_or(bytes.len());
    &bytes[..end]
}

/// Returns the entry name, with the ustar prefix when the header has one.
fn header_name(header: &[u8; BLOCK]) -> Vec<u8> {
    let name = field(&header[0..100]);
    let is_ustar = &header[257..263] == b"ustar\0";
    let prefix = field(&header[345..500]);
    if is_ustar && !prefix.is_empty() {
        let mut full = prefix.to_vec();
        full.push(b'/');
        full.extend_from_slice(name);
        full
    } else {
        name.to_vec()
    }
}

fn parse_octal(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(field(bytes)).ok()?.trim();
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

/// Sizes above 8 GiB use GNU's base-256 form: high bit set, big-endian.
fn parse_size(bytes: &[u8]) -> Result<u64, String> {
    if bytes[0] & 0x80 != 0 {
        let mut size: u64 = u64::from(bytes[0] & 0x7f);
        for byte in &bytes[1..] {
            size = size
                .checked_mul(256)
                .and_then(|size| size.checked_add(u64::from(*byte)))
                .ok_or("a tar entry size does not fit in 64 bits")?;
        }
        return Ok(size);
    }
    parse_octal(bytes).ok_or_else(|| "a tar header has an invalid size field".to_owned())
}

fn check_checksum(header: &[u8; BLOCK]) -> Result<(), String> {
    let expected =
        parse_octal(&header[148..156]).ok_or("a tar header has an invalid checksum field")?;
    let actual: u64 = header
        .iter()
        .enumerate()
        .map(|(index, byte)| {
            if (148..156).contains(&index) {
                u64::from(b' ')
            } else {
                u64::from(*byte)
            }
        })
        .sum();
    if actual != expected {
        return Err(format!(
            "a tar header has checksum {expected}, but its bytes sum to {actual}"
        ));
    }
    Ok(())
}

/// The `path` and `linkpath` values of a pax header, when present.
type PaxPaths = (Option<Vec<u8>>, Option<Vec<u8>>);

/// Reads `path` and `linkpath` from pax records (`LEN key=value\n`).
fn pax_paths(records: &[u8]) -> Result<PaxPaths, String> {
    let mut path = None;
    let mut linkpath = None;
    let mut rest = records;
    while !rest.is_empty() {
        let space = rest
            .iter()
            .position(|byte| *byte == b' ')
            .ok_or("a pax record has no length")?;
        let length: usize = std::str::from_utf8(&rest[..space])
            .ok()
            .and_then(|text| text.parse().ok())
            .filter(|length| *length > space && *length <= rest.len())
            .ok_or("a pax record has an invalid length")?;
        let record = &rest[space + 1..length];
        let record = record.strip_suffix(b"\n").unwrap_or(record);
        if let Some(value) = record.strip_prefix(b"path=") {
            path = Some(value.to_vec());
        } else if let Some(value) = record.strip_prefix(b"linkpath=") {
            linkpath = Some(value.to_vec());
        }
        rest = &rest[length..];
    }
    Ok((path, linkpath))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a ustar header block by hand.
    fn header(name: &str, kind: u8, size: u64, mode: u32, link: &str) -> [u8; BLOCK] {
        let mut block = [0u8; BLOCK];
        block[..name.len()].copy_from_slice(name.as_bytes());
        block[100..107].copy_from_slice(format!("{mode:07o}").as_bytes());
        block[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
        block[156] = kind;
        block[157..157 + link.len()].copy_from_slice(link.as_bytes());
        block[257..263].copy_from_slice(b"ustar\0");
        block[148..156].copy_from_slice(b"        ");
        let sum: u64 = block.iter().map(|byte| u64::from(*byte)).sum();
        block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        block
    }

    fn entry(stream: &mut Vec<u8>, name: &str, kind: u8, data: &[u8], mode: u32, link: &str) {
        stream.extend_from_slice(&header(name, kind, data.len() as u64, mode, link));
        stream.extend_from_slice(data);
        stream.resize(stream.len().next_multiple_of(BLOCK), 0);
    }

    fn finish(stream: &mut Vec<u8>) {
        stream.extend_from_slice(&[0; 2 * BLOCK]);
    }

    #[test]
    fn files_directories_links_and_long_names_unpack() {
        let long = format!("{}/file.txt", "d".repeat(120));
        let mut stream = Vec::new();
        entry(&mut stream, "src", b'5', b"", 0o755, "");
        entry(
            &mut stream,
            "src/run.sh",
            b'0',
            b"#!/bin/sh\necho hi\n",
            0o755,
            "",
        );
        entry(&mut stream, "link", b'2', b"", 0o777, "src/run.sh");
        entry(
            &mut stream,
            "././@LongLink",
            b'L',
            long.as_bytes(),
            0o644,
            "",
        );
        entry(&mut stream, "ignored-short-name", b'0', b"long", 0o644, "");
        finish(&mut stream);

        let temp = tempfile::tempdir().unwrap();
        let count = untar(&mut stream.as_slice(), temp.path()).unwrap();

        assert_eq!(count, 4);
        let script = temp.path().join("src/run.sh");
        assert_eq!(fs::read_to_string(&script).unwrap(), "#!/bin/sh\necho hi\n");
        assert_eq!(
            fs::metadata(&script).unwrap().permissions().mode() & 0o777,
            0o755
        );
        assert_eq!(
            fs::read_link(temp.path().join("link")).unwrap(),
            Path::new("src/run.sh")
        );
        assert_eq!(fs::read_to_string(temp.path().join(&long)).unwrap(), "long");
    }

    #[test]
    fn escaping_names_are_rejected() {
        for name in ["../outside", "/etc/passwd", "a/../../b"] {
            let mut stream = Vec::new();
            entry(&mut stream, name, b'0', b"x", 0o644, "");
            finish(&mut stream);
            let temp = tempfile::tempdir().unwrap();
            let error = untar(&mut stream.as_slice(), temp.path()).unwrap_err();
            assert!(
                error.contains("absolute or contains `..`"),
                "{name}: {error}"
            );
        }
    }

    #[test]
    fn writes_through_a_symlink_are_rejected() {
        let outside = tempfile::tempdir().unwrap();
        let mut stream = Vec::new();
        entry(
            &mut stream,
            "escape",
            b'2',
            b"",
            0o777,
            outside.path().to_str().unwrap(),
        );
        entry(&mut stream, "escape/owned", b'0', b"x", 0o644, "");
        finish(&mut stream);

        let temp = tempfile::tempdir().unwrap();
        let error = untar(&mut stream.as_slice(), temp.path()).unwrap_err();

        assert!(error.contains("below the symbolic link"), "{error}");
        assert!(!outside.path().join("owned").exists());
    }

    #[test]
    fn corrupt_and_truncated_streams_are_rejected() {
        let mut stream = Vec::new();
        entry(&mut stream, "a", b'0', b"data", 0o644, "");
        let mut corrupt = stream.clone();
        corrupt[0] = b'b';
        let temp = tempfile::tempdir().unwrap();
        assert!(
            untar(&mut corrupt.as_slice(), temp.path())
                .unwrap_err()
                .contains("checksum")
        );
        let error = untar(&mut stream.as_slice(), temp.path()).unwrap_err();
        assert!(error.contains("end-of-archive"), "{error}");
        let cut = &stream[..BLOCK + 2];
        assert!(untar(&mut &cut[..], temp.path()).is_err());
    }

    #[test]
    fn pax_records_give_the_path() {
        let mut stream = Vec::new();
        let record = "path=from/pax.txt\n";
        let line = format!("{} {record}", record.len() + 3);
        entry(
            &mut stream,
            "PaxHeaders/x",
            b'x',
            line.as_bytes(),
            0o644,
            "",
        );
        entry(&mut stream, "short", b'0', b"pax", 0o600, "");
        finish(&mut stream);

        let temp = tempfile::tempdir().unwrap();
        untar(&mut stream.as_slice(), temp.path()).unwrap();

        assert_eq!(
            fs::read_to_string(temp.path().join("from/pax.txt")).unwrap(),
            "pax"
        );
    }
}
