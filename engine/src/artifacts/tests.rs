use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use flate2::Compression;
use flate2::write::GzEncoder;
use futures::stream;

use super::*;

/// One archive entry for `tar_gz`, written with raw header fields so that
/// tests can build archives `tar::Builder` would refuse.
enum Spec<'a> {
    File(&'a str, &'a [u8]),
    FileWithMode(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Fifo(&'a str),
    CharDevice(&'a str),
}

fn tar_gz(entries: &[Spec]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::fast()));
    for spec in entries {
        let (path, entry_type, data, link, mode): (&str, tar::EntryType, &[u8], Option<&str>, u32) =
            match *spec {
                Spec::File(path, data) => (path, tar::EntryType::Regular, data, None, 0o644),
                Spec::FileWithMode(path, data, mode) => {
                    (path, tar::EntryType::Regular, data, None, mode)
                }
                Spec::Dir(path) => (path, tar::EntryType::Directory, b"", None, 0o755),
                Spec::Symlink(path, target) => {
                    (path, tar::EntryType::Symlink, b"", Some(target), 0o777)
                }
                Spec::HardLink(path, target) => {
                    (path, tar::EntryType::Link, b"", Some(target), 0o644)
                }
                Spec::Fifo(path) => (path, tar::EntryType::Fifo, b"", None, 0o644),
                Spec::CharDevice(path) => (path, tar::EntryType::Char, b"", None, 0o644),
            };
        let mut header = tar::Header::new_gnu();
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_entry_type(entry_type);
        header.set_mode(mode);
        header.set_size(data.len() as u64);
        if let Some(link) = link {
            header.set_link_name_literal(link).unwrap();
        }
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap().finish().unwrap()
}

fn store(temp: &tempfile::TempDir, max_bytes: u64) -> ArtifactStore {
    ArtifactStore::new(temp.path().join("artifacts"), max_bytes)
}

fn incoming(name: &str, kind: ArtifactKind) -> IncomingArtifact {
    IncomingArtifact {
        job_id: JobId("job-1".to_owned()),
        name: name.to_owned(),
        kind,
        source_path: format!("out/{name}"),
        task: "build".to_owned(),
    }
}

fn chunks_of(data: &[u8], size: usize) -> impl Stream<Item = io::Result<Bytes>> + Send + Unpin {
    let chunks: Vec<io::Result<Bytes>> = data
        .chunks(size.max(1))
        .map(|chunk| Ok(Bytes::copy_from_slice(chunk)))
        .collect();
    stream::iter(chunks)
}

/// Lists the names in the job's artifact directory, partial uploads
/// included, sorted.
fn stored_names(store: &ArtifactStore) -> Vec<String> {
    let dir = store.root.join("job-1");
    let Ok(entries) = fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

async fn receive_directory(
    store: &ArtifactStore,
    name: &str,
    archive: &[u8],
) -> Result<ArtifactRecord, ArtifactError> {
    store
        .receive(
            incoming(name, ArtifactKind::Directory),
            chunks_of(archive, 1000),
        )
        .await
}

#[test]
fn validate_name_applies_each_rule() {
    let long_ok = "a".repeat(128);
    let too_long = "a".repeat(129);
    let cases: &[(&str, bool)] = &[
        ("coverage", true),
        ("report.html", true),
        ("build-output_2.tar.gz", true),
        ("A-Z_a-z.0-9", true),
        (&long_ok, true),
        ("", false),
        (&too_long, false),
        (".hidden", false),
        ("..", false),
        ("a/b", false),
        ("../etc", false),
        ("with space", false),
        ("é", false),
        ("semi;colon", false),
        ("provenance.json", false),
        ("provenance.json.bak", true),
    ];

    for &(name, valid) in cases {
        let result = validate_name(name);
        assert_eq!(result.is_ok(), valid, "name {name:?}: {result:?}");
        if let Err(err) = result {
            assert!(
                matches!(err, ArtifactError::InvalidName { .. }),
                "name {name:?}"
            );
        }
    }
}

#[test]
fn invalid_name_error_names_the_rule() {
    let err = validate_name(".env").unwrap_err();

    assert_eq!(
        err.to_string(),
        "invalid artifact name `.env`: a name must not start with `.`"
    );
}

#[test]
fn size_limit_message_uses_binary_units() {
    let err = ArtifactError::TooLarge {
        name: "x".to_owned(),
        limit: DEFAULT_MAX_ARTIFACT_BYTES,
    };

    assert_eq!(
        err.to_string(),
        "artifact `x` exceeds the size limit of 1 GiB"
    );
    assert_eq!(format_size(512 << 20), "512 MiB");
    assert_eq!(format_size(1536 << 10), "1536 KiB");
    assert_eq!(format_size(1000), "1000 bytes");
}

#[test]
fn kind_round_trips_through_text() {
    for kind in [ArtifactKind::File, ArtifactKind::Directory] {
        assert_eq!(kind.as_str().parse::<ArtifactKind>().unwrap(), kind);
    }
    assert!("dir".parse::<ArtifactKind>().is_err());
}

#[tokio::test]
async fn file_upload_round_trips_with_digest() {
    let temp = tempfile::tempdir().unwrap();
    let store = store(&temp, DEFAULT_MAX_ARTIFACT_BYTES);

    let record = store
        .receive(
            incoming("greeting.txt", ArtifactKind::File),
            chunks_of(b"hello world\n", 5),
        )
        .await
        .unwrap();

    // sha256sum of "hello world\n".
    assert_eq!(
        record.sha256,
        "a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447"
    );
    assert_eq!(record.size_bytes, 12);
    assert_eq!(record.kind, "file");
    assert_eq!(record.name, "greeting.txt");
    assert_eq!(record.source_path, "out/greeting.txt");
    assert_eq!(record.task, "build");
    assert_eq!(record.job_id, JobId("job-1".to_owned()));
    let path = store.path_of(&record.job_id, "greeting.txt", ArtifactKind::File);
    assert_eq!(fs::read(&path).unwrap(), b"hello world\n");
    assert_eq!(stored_names(&store), vec!["greeting.txt"]);
}

#[tokio::test]
async fn empty_file_upload_is_stored() {
    let temp = tempfile::tempdir().unwrap();
    let store = store(&temp, DEFAULT_MAX_ARTIFACT_BYTES);

    let record = store
        .receive(incoming("empty", ArtifactKind::File), chunks_of(b"", 1))
        .await
        .unwrap();

    assert_eq!(record.size_bytes, 0);
    assert_eq!(
        record.sha256,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    assert_eq!(stored_names(&store), vec!["empty"]);
}

#[tokio::test]
async fn upload_over_the_limit_is_rejected_and_deleted() {
    let temp = tempfile::tempdir().unwrap();
    let store = store(&temp, 10);

    let exact = store
        .receive(
            incoming("exact", ArtifactKind::File),
            chunks_of(b"0123456789", 4),
        )
        .await;
    let over = store
        .receive(
            incoming("over", ArtifactKind::File),
            chunks_of(b"0123456789A", 4),
        )
        .await;

    assert_eq!(exact.unwrap().size_bytes, 10);
    let err = over.unwrap_err();
    assert!(
        matches!(err, ArtifactError::TooLarge { limit: 10, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "artifact `over` exceeds the size limit of 10 bytes"
    );
    assert_eq!(stored_names(&store), vec!["exact"]);
}

#[tokio::test]
async fn duplicate_name_is_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let store = store(&temp, DEFAULT_MAX_ARTIFACT_BYTES);
    store
        .receive(
            incoming("report", ArtifactKind::File),
            chunks_of(b"first", 5),
        )
        .await
        .unwrap();

    let again = store
        .receive(
            incoming("report", ArtifactKind::File),
            chunks_of(b"second", 5),
        )
        .await;
    let as_directory = receive_directory(&store, "report", &tar_gz(&[Spec::File("a", b"x")])).await;

    assert!(
        matches!(again, Err(ArtifactError::Duplicate { .. })),
        "{again:?}"
    );
    assert!(
        matches!(as_directory, Err(ArtifactError::Duplicate { .. })),
        "{as_directory:?}"
    );
    let path = store.path_of(&JobId("job-1".to_owned()), "report", ArtifactKind::File);
    assert_eq!(fs::read(path).unwrap(), b"first");
    assert_eq!(stored_names(&store), vec!["report"]);
}

#[tokio::test]
async fn file_and_directory_spellings_do_not_collide() {
    let temp = tempfile::tempdir().unwrap();
    let store = store(&temp, DEFAULT_MAX_ARTIFACT_BYTES);
    receive_directory(&store, "site", &tar_gz(&[Spec::File("index.html", b"<p>")]))
        .await
        .unwrap();

    let file = store
        .receive(
            incoming("site.tar.gz", ArtifactKind::File),
            chunks_of(b"other", 5),
        )
        .await;

    let Err(ArtifactError::Duplicate { stored, .. }) = file else {
        panic!("expected a duplicate, got {file:?}");
    };
    assert_eq!(stored, "site.tar.gz");
    assert_eq!(stored_names(&store), vec!["site.tar.gz"]);
}

#[tokio::test]
async fn stream_error_aborts_and_deletes_the_upload() {
    let temp = tempfile::tempdir().unwrap();
    let store = store(&temp, DEFAULT_MAX_ARTIFACT_BYTES);
    let chunks = stream::iter(vec![
        Ok(Bytes::from_static(b"partial data")),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "coordinator went away",
        )),
    ]);

    let result = store
        .receive(incoming("broken", ArtifactKind::File), chunks)
        .await;

    let err = result.unwrap_err();
    assert!(matches!(err, ArtifactError::Upload { .. }), "{err:?}");
    assert_eq!(err.to_string(), "upload of artifact `broken` failed");
    assert!(
        stored_names(&store).is_empty(),
        "{:?}",
        stored_names(&store)
    );
}

#[tokio::test]
async fn dropped_upload_deletes_the_partial_file() {
    let temp = tempfile::tempdir().unwrap();
    let store = store(&temp, DEFAULT_MAX_ARTIFACT_BYTES);
    let chunks =
        stream::iter(vec![Ok(Bytes::from_static(b"first chunk"))]).chain(stream::pending());

    let upload = store.receive(incoming("stalled", ArtifactKind::File), chunks);
    let timed_out = tokio::time::timeout(Duration::from_millis(200), upload).await;

    assert!(timed_out.is_err(), "the upload should still be waiting");
    assert!(
        stored_names(&store).is_empty(),
        "{:?}",
        stored_names(&store)
    );
}

#[tokio::test]
async fn invalid_job_id_is_rejected() {
    let temp = tempfile::tempdir().unwrap();
    let store = store(&temp, DEFAULT_MAX_ARTIFACT_BYTES);

    for job in ["", "..", "a/b"] {
        let mut meta = incoming("x", ArtifactKind::File);
        meta.job_id = JobId(job.to_owned());
        let result = store.receive(meta, chunks_of(b"x", 1)).await;
        assert!(
            matches!(result, Err(ArtifactError::InvalidJobId { .. })),
            "job {job:?}: {result:?}"
        );
    }
}

#[tokio::test]
async fn directory_upload_is_stored_and_extracts() {
    let temp = tempfile::tempdir().unwrap();
    let source = temp.path().join("source");
    fs::create_dir_all(source.join("lib/deep")).unwrap();
    fs::write(source.join("index.html"), b"<h1>coverage</h1>").unwrap();
    fs::write(source.join("lib/deep/data.bin"), [0u8, 159, 146, 150]).unwrap();
    fs::write(source.join("run.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(source.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("deep/data.bin", source.join("lib/link")).unwrap();
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    builder.follow_symlinks(false);
    builder.append_dir_all(".", &source).unwrap();
    let archive = builder.into_inner().unwrap().finish().unwrap();
    let store = store(&temp, DEFAULT_MAX_ARTIFACT_BYTES);

    let record = receive_directory(&store, "coverage", &archive)
        .await
        .unwrap();

    assert_eq!(record.kind, "directory");
    assert_eq!(record.size_bytes, archive.len() as i64);
    assert_eq!(stored_names(&store), vec!["coverage.tar.gz"]);
    let stored = store.path_of(&record.job_id, "coverage", ArtifactKind::Directory);
    assert_eq!(fs::read(&stored).unwrap(), archive);

    let out = temp.path().join("out");
    extract_directory(&stored, &out).unwrap();
    assert_eq!(
        fs::read(out.join("index.html")).unwrap(),
        b"<h1>coverage</h1>"
    );
    assert_eq!(
        fs::read(out.join("lib/deep/data.bin")).unwrap(),
        [0u8, 159, 146, 150]
    );
    assert_eq!(
        fs::read_link(out.join("lib/link")).unwrap(),
        Path::new("deep/data.bin")
    );
    let mode = fs::metadata(out.join("run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "mode {mode:o}");
}

#[tokio::test]
async fn invalid_archive_is_rejected_and_deleted() {
    let temp = tempfile::tempdir().unwrap();
    let store = store(&temp, DEFAULT_MAX_ARTIFACT_BYTES);
    let mut truncated = tar_gz(&[Spec::File("a.txt", &[7u8; 5000])]);
    truncated.truncate(truncated.len() - 6);

    for (name, bytes) in [
        ("garbage", b"this is not gzip".to_vec()),
        ("empty", Vec::new()),
        ("truncated", truncated),
    ] {
        let result = receive_directory(&store, name, &bytes).await;
        assert!(
            matches!(result, Err(ArtifactError::InvalidArchive { .. })),
            "{name}: {result:?}"
        );
    }
    assert!(
        stored_names(&store).is_empty(),
        "{:?}",
        stored_names(&store)
    );
}

#[tokio::test]
async fn unsafe_entries_are_rejected() {
    let cases: Vec<(&str, Vec<Spec>, UnsafeReason)> = vec![
        (
            "absolute",
            vec![Spec::File("/etc/cron.d/x", b"x")],
            UnsafeReason::AbsolutePath,
        ),
        (
            "parent",
            vec![Spec::File("../x", b"x")],
            UnsafeReason::ParentComponent,
        ),
        (
            "inner-parent",
            vec![Spec::File("a/../../x", b"x")],
            UnsafeReason::ParentComponent,
        ),
        (
            "symlink-up",
            vec![Spec::Dir("a"), Spec::Symlink("a/l", "../../etc")],
            UnsafeReason::SymlinkEscapes,
        ),
        (
            "symlink-absolute",
            vec![Spec::Symlink("l", "/etc/passwd")],
            UnsafeReason::SymlinkEscapes,
        ),
        (
            "symlink-chain",
            vec![Spec::Symlink("s", "."), Spec::Symlink("x", "s/../etc")],
            UnsafeReason::SymlinkEscapes,
        ),
        (
            "symlink-loop",
            vec![Spec::Symlink("a", "b"), Spec::Symlink("b", "a")],
            UnsafeReason::SymlinkLoop,
        ),
        (
            "through-symlink",
            vec![Spec::Symlink("s", "sub"), Spec::File("s/f", b"x")],
            UnsafeReason::ThroughSymlink,
        ),
        (
            "through-later-symlink",
            vec![
                Spec::Dir("d"),
                Spec::File("d/f", b"x"),
                Spec::Symlink("d", "e"),
            ],
            UnsafeReason::ThroughSymlink,
        ),
        (
            "hardlink-up",
            vec![Spec::HardLink("h", "../outside")],
            UnsafeReason::HardLinkTarget,
        ),
        (
            "hardlink-absolute",
            vec![Spec::HardLink("h", "/etc/passwd")],
            UnsafeReason::HardLinkTarget,
        ),
        (
            "hardlink-missing",
            vec![Spec::HardLink("h", "later"), Spec::File("later", b"x")],
            UnsafeReason::HardLinkTarget,
        ),
        (
            "hardlink-to-symlink",
            vec![
                Spec::Dir("a"),
                Spec::File("a/f", b"x"),
                Spec::Symlink("a/f", "../y"),
                Spec::HardLink("h", "a/f"),
            ],
            UnsafeReason::HardLinkTarget,
        ),
        ("fifo", vec![Spec::Fifo("pipe")], UnsafeReason::SpecialFile),
        (
            "device",
            vec![Spec::CharDevice("null")],
            UnsafeReason::SpecialFile,
        ),
        (
            "root-symlink",
            vec![Spec::Symlink(".", "/")],
            UnsafeReason::ReplacesRoot,
        ),
    ];

    for (name, specs, expected) in cases {
        let temp = tempfile::tempdir().unwrap();
        let store = store(&temp, DEFAULT_MAX_ARTIFACT_BYTES);

        let result = receive_directory(&store, name, &tar_gz(&specs)).await;

        let Err(ArtifactError::UnsafeEntry { reason, .. }) = result else {
            panic!("{name}: expected an unsafe entry, got {result:?}");
        };
        assert_eq!(reason, expected, "{name}");
        assert!(
            stored_names(&store).is_empty(),
            "{name}: {:?}",
            stored_names(&store)
        );
    }
}

#[test]
fn unsafe_entry_message_names_entry_and_fix() {
    let temp = tempfile::tempdir().unwrap();
    let archive = temp.path().join("a.tar.gz");
    fs::write(&archive, tar_gz(&[Spec::File("../evil", b"x")])).unwrap();

    let err = extract_directory(&archive, &temp.path().join("out")).unwrap_err();

    assert_eq!(
        err.to_string(),
        format!(
            "archive `{}` contains an unsafe entry `../evil`: the path contains `..` \
             (archive only regular files, directories and links that stay inside the directory)",
            archive.display()
        )
    );
}

#[test]
fn safe_links_inside_the_archive_are_accepted() {
    let temp = tempfile::tempdir().unwrap();
    let archive = temp.path().join("a.tar.gz");
    fs::write(
        &archive,
        tar_gz(&[
            Spec::Dir("node_modules/.bin"),
            Spec::File("node_modules/pkg/cli.js", b"console.log(1)"),
            Spec::Symlink("node_modules/.bin/cli", "../pkg/cli.js"),
            Spec::Symlink("current", "node_modules/./pkg"),
            Spec::Symlink("via-link", "current/../node_modules"),
            Spec::HardLink("copy.js", "node_modules/pkg/cli.js"),
            Spec::Dir("./"),
        ]),
    )
    .unwrap();
    let out = temp.path().join("out");

    extract_directory(&archive, &out).unwrap();

    assert_eq!(
        fs::read(out.join("node_modules/.bin/cli")).unwrap(),
        b"console.log(1)"
    );
    assert_eq!(
        fs::read(out.join("current/cli.js")).unwrap(),
        b"console.log(1)"
    );
    assert_eq!(
        fs::read_link(out.join("via-link")).unwrap(),
        Path::new("current/../node_modules")
    );
    let original = fs::metadata(out.join("node_modules/pkg/cli.js")).unwrap();
    let copy = fs::metadata(out.join("copy.js")).unwrap();
    assert_eq!(original.ino(), copy.ino());
}

#[test]
fn unsafe_archive_writes_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let archive = temp.path().join("a.tar.gz");
    fs::write(
        &archive,
        tar_gz(&[
            Spec::File("fine.txt", b"x"),
            Spec::Symlink("escape", "../../x"),
        ]),
    )
    .unwrap();
    let out = temp.path().join("out");

    let result = extract_directory(&archive, &out);

    assert!(
        matches!(result, Err(ArtifactError::UnsafeEntry { .. })),
        "{result:?}"
    );
    assert!(!out.exists());
}

#[test]
fn extraction_never_writes_through_an_existing_symlink() {
    let temp = tempfile::tempdir().unwrap();
    let outside = temp.path().join("outside");
    let out = temp.path().join("out");
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("dir")).unwrap();
    let archive = temp.path().join("a.tar.gz");
    fs::write(&archive, tar_gz(&[Spec::File("dir/f", b"x")])).unwrap();

    let result = extract_directory(&archive, &out);

    let Err(ArtifactError::UnsafeEntry { reason, .. }) = result else {
        panic!("expected an unsafe entry, got {result:?}");
    };
    assert_eq!(reason, UnsafeReason::ThroughSymlink);
    assert!(!outside.join("f").exists());
}

#[test]
fn directory_entry_replaces_an_existing_symlink() {
    let temp = tempfile::tempdir().unwrap();
    let outside = temp.path().join("outside");
    let out = temp.path().join("out");
    fs::create_dir_all(&outside).unwrap();
    fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&outside, out.join("dir")).unwrap();
    let archive = temp.path().join("a.tar.gz");
    fs::write(
        &archive,
        tar_gz(&[Spec::Dir("dir"), Spec::File("dir/f", b"x")]),
    )
    .unwrap();

    extract_directory(&archive, &out).unwrap();

    assert!(fs::symlink_metadata(out.join("dir")).unwrap().is_dir());
    assert_eq!(fs::read(out.join("dir/f")).unwrap(), b"x");
    assert!(!outside.join("f").exists());
}

#[test]
fn extraction_replaces_an_existing_symlink_file() {
    let temp = tempfile::tempdir().unwrap();
    let target = temp.path().join("target.txt");
    let out = temp.path().join("out");
    fs::write(&target, b"untouched").unwrap();
    fs::create_dir_all(&out).unwrap();
    std::os::unix::fs::symlink(&target, out.join("f")).unwrap();
    let archive = temp.path().join("a.tar.gz");
    fs::write(&archive, tar_gz(&[Spec::File("f", b"from the archive")])).unwrap();

    extract_directory(&archive, &out).unwrap();

    assert_eq!(fs::read(&target).unwrap(), b"untouched");
    assert!(
        !fs::symlink_metadata(out.join("f"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read(out.join("f")).unwrap(), b"from the archive");
}

#[test]
fn extraction_drops_setuid_and_keeps_exec_bits() {
    let temp = tempfile::tempdir().unwrap();
    let archive = temp.path().join("a.tar.gz");
    fs::write(
        &archive,
        tar_gz(&[
            Spec::FileWithMode("tool", b"#!/bin/sh\n", 0o4755),
            Spec::FileWithMode("readonly", b"x", 0o444),
        ]),
    )
    .unwrap();
    let out = temp.path().join("out");

    extract_directory(&archive, &out).unwrap();

    let tool = fs::metadata(out.join("tool")).unwrap().permissions().mode();
    let readonly = fs::metadata(out.join("readonly"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(tool & 0o4000, 0, "mode {tool:o}");
    assert_eq!(tool & 0o100, 0o100, "mode {tool:o}");
    assert_eq!(readonly & 0o600, 0o600, "mode {readonly:o}");
}
