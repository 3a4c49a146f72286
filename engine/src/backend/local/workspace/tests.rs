use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tempfile::TempDir;

use super::*;

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().expect("test paths have a parent")).expect("create parent");
    fs::write(path, content).expect("write test file");
}

fn init_repo(dir: &Path) -> git2::Repository {
    git2::Repository::init(dir).expect("git init")
}

fn track(repository: &git2::Repository, paths: &[&str]) {
    let mut index = repository.index().expect("open index");
    for path in paths {
        index.add_path(Path::new(path)).expect("add to index");
    }
    index.write().expect("write index");
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .expect("stat")
        .permissions()
        .mode()
        & 0o7777
}

struct Setup {
    _temp: TempDir,
    project: PathBuf,
    root: PathBuf,
}

fn setup() -> Setup {
    let temp = TempDir::new().expect("temp dir");
    let project = temp.path().join("project");
    let root = temp.path().join("data/workspaces");
    fs::create_dir_all(&project).expect("create project");
    Setup {
        _temp: temp,
        project,
        root,
    }
}

async fn copy(setup: &Setup) -> Workspace {
    prepare_workspace(&setup.root, &JobId::new(), &setup.project, false)
        .await
        .expect("prepare workspace")
}

#[tokio::test]
async fn copy_of_git_repo_looks_like_a_checkout() {
    let setup = setup();
    let project = &setup.project;
    let repository = init_repo(project);
    write(&project.join(".gitignore"), "*.log\nbuild/\n");
    write(&project.join("src/main.rs"), "fn main() {}\n");
    write(&project.join("build/out.bin"), "ignored output");
    write(&project.join("build/keep.txt"), "force-added");
    write(&project.join("debug.log"), "ignored log");
    write(&project.join("notes.txt"), "untracked, not ignored");
    write(&project.join(".env.example"), "hidden, untracked");
    track(
        &repository,
        &[".gitignore", "src/main.rs", "build/keep.txt"],
    );

    let workspace = copy(&setup).await;
    let copied = &workspace.path;

    assert!(!workspace.in_place);
    assert!(copied.starts_with(fs::canonicalize(&setup.root).unwrap()));
    assert_eq!(
        fs::read_to_string(copied.join("src/main.rs")).unwrap(),
        "fn main() {}\n"
    );
    assert!(copied.join(".gitignore").is_file());
    assert!(
        copied.join("build/keep.txt").is_file(),
        "tracked file matching .gitignore"
    );
    assert!(
        copied.join("notes.txt").is_file(),
        "untracked file that is not ignored"
    );
    assert!(
        copied.join(".env.example").is_file(),
        "hidden untracked file"
    );
    assert!(!copied.join("build/out.bin").exists(), "ignored file");
    assert!(!copied.join("debug.log").exists(), "ignored file");
    assert!(!copied.join(".git").exists(), ".git folder");
}

#[tokio::test]
async fn nested_gitignore_and_info_exclude_are_honoured() {
    let setup = setup();
    let project = &setup.project;
    init_repo(project);
    write(&project.join(".git/info/exclude"), "local-only.txt\n");
    write(&project.join("local-only.txt"), "excluded");
    write(&project.join("sub/.gitignore"), "secret.txt\n");
    write(&project.join("sub/secret.txt"), "ignored below sub");
    write(&project.join("sub/visible.txt"), "kept");
    write(&project.join("secret.txt"), "not ignored at the top");

    let copied = copy(&setup).await.path;

    assert!(!copied.join("local-only.txt").exists());
    assert!(!copied.join("sub/secret.txt").exists());
    assert!(copied.join("sub/visible.txt").is_file());
    assert!(copied.join("sub/.gitignore").is_file());
    assert!(copied.join("secret.txt").is_file());
}

#[tokio::test]
async fn folder_without_git_honours_gitignore() {
    let setup = setup();
    let project = &setup.project;
    write(&project.join(".gitignore"), "target/\n*.tmp\n");
    write(&project.join("target/debug/app"), "build output");
    write(&project.join("scratch.tmp"), "temporary");
    write(&project.join("danubefile.py"), "pipeline");
    write(&project.join("deep/er/file.txt"), "nested");

    let copied = copy(&setup).await.path;

    assert!(copied.join("danubefile.py").is_file());
    assert!(copied.join("deep/er/file.txt").is_file());
    assert!(copied.join(".gitignore").is_file());
    assert!(!copied.join("target").exists());
    assert!(!copied.join("scratch.tmp").exists());
}

#[tokio::test]
async fn file_modes_and_symlinks_are_kept() {
    let setup = setup();
    let project = &setup.project;
    init_repo(project);
    write(&project.join("run.sh"), "#!/bin/sh\necho hi\n");
    fs::set_permissions(project.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    write(&project.join("frozen.txt"), "read only");
    fs::set_permissions(
        project.join("frozen.txt"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    write(&project.join("data/real.txt"), "target of a link");
    std::os::unix::fs::symlink("data/real.txt", project.join("inside-link")).unwrap();
    std::os::unix::fs::symlink("../../etc/hostname", project.join("outside-link")).unwrap();
    std::os::unix::fs::symlink("/", project.join("root-link")).unwrap();

    let copied = copy(&setup).await.path;

    assert_eq!(mode_of(&copied.join("run.sh")), 0o755);
    assert_eq!(mode_of(&copied.join("frozen.txt")), 0o444);
    assert_eq!(
        fs::read_link(copied.join("inside-link")).unwrap(),
        Path::new("data/real.txt")
    );
    assert_eq!(
        fs::read_link(copied.join("outside-link")).unwrap(),
        Path::new("../../etc/hostname")
    );
    assert_eq!(
        fs::read_link(copied.join("root-link")).unwrap(),
        Path::new("/")
    );
    assert_eq!(
        fs::read_dir(&copied).unwrap().count(),
        6,
        "nothing was copied through root-link"
    );
}

#[tokio::test]
async fn tracked_path_below_a_symlink_is_not_followed() {
    let setup = setup();
    let project = &setup.project;
    let repository = init_repo(project);
    write(&project.join("dir/file.txt"), "tracked");
    track(&repository, &["dir/file.txt"]);
    let outside = setup.project.parent().unwrap().join("outside");
    write(&outside.join("file.txt"), "must not be copied");
    fs::remove_dir_all(project.join("dir")).unwrap();
    std::os::unix::fs::symlink(&outside, project.join("dir")).unwrap();

    let copied = copy(&setup).await.path;

    assert!(
        fs::symlink_metadata(copied.join("dir"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(fs::read_link(copied.join("dir")).unwrap(), outside);
}

#[tokio::test]
async fn tracked_file_deleted_from_working_tree_is_skipped() {
    let setup = setup();
    let project = &setup.project;
    let repository = init_repo(project);
    write(&project.join("gone.txt"), "soon deleted");
    write(&project.join("kept.txt"), "kept");
    track(&repository, &["gone.txt", "kept.txt"]);
    fs::remove_file(project.join("gone.txt")).unwrap();

    let copied = copy(&setup).await.path;

    assert!(copied.join("kept.txt").is_file());
    assert!(!copied.join("gone.txt").exists());
}

#[tokio::test]
async fn repository_subfolder_uses_parent_index() {
    let temp = TempDir::new().unwrap();
    let repository = init_repo(temp.path());
    write(&temp.path().join(".gitignore"), "*.gen\n");
    write(&temp.path().join("other/file.txt"), "another project");
    write(
        &temp.path().join("app/schema.gen"),
        "tracked although ignored",
    );
    write(&temp.path().join("app/cache.gen"), "ignored");
    write(&temp.path().join("app/main.py"), "untracked");
    track(&repository, &["app/schema.gen", "other/file.txt"]);
    let root = temp.path().join("workspaces");

    let workspace = prepare_workspace(&root, &JobId::new(), &temp.path().join("app"), false)
        .await
        .expect("prepare workspace");
    let copied = workspace.path;

    assert!(copied.join("schema.gen").is_file());
    assert!(copied.join("main.py").is_file());
    assert!(!copied.join("cache.gen").exists());
    assert!(!copied.join("other").exists());
    assert!(!copied.join("app").exists());
}

#[tokio::test]
async fn workspaces_inside_the_project_are_not_copied() {
    let setup = setup();
    let root = setup.project.join(".danube/workspaces");
    write(&setup.project.join("file.txt"), "content");

    let first = prepare_workspace(&root, &JobId::new(), &setup.project, false)
        .await
        .unwrap();
    let second = prepare_workspace(&root, &JobId::new(), &setup.project, false)
        .await
        .unwrap();

    assert!(second.path.join("file.txt").is_file());
    assert!(!second.path.join(".danube").exists());
    assert!(!first.path.join(".danube").exists());
}

#[tokio::test]
async fn in_place_workspace_is_the_project_itself() {
    let setup = setup();
    write(&setup.project.join("file.txt"), "content");

    let workspace = prepare_workspace(&setup.root, &JobId::new(), &setup.project, true)
        .await
        .unwrap();

    assert!(workspace.in_place);
    assert_eq!(workspace.path, fs::canonicalize(&setup.project).unwrap());
    assert!(
        !setup.root.exists(),
        "nothing is created under the workspaces root"
    );

    remove_workspace(&setup.root, &workspace).await.unwrap();
    assert!(
        setup.project.join("file.txt").is_file(),
        "removing an in-place workspace keeps the project"
    );
}

#[tokio::test]
async fn missing_project_error_names_the_path() {
    let setup = setup();
    let missing = setup.project.join("nope");

    let err = prepare_workspace(&setup.root, &JobId::new(), &missing, false)
        .await
        .unwrap_err();

    assert!(matches!(err, BackendError::OpenProject { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn remove_deletes_read_only_trees() {
    let setup = setup();
    write(&setup.project.join("file.txt"), "content");
    let workspace = copy(&setup).await;
    let module_cache = workspace.path.join("go/pkg/mod/example.com@v1");
    write(&module_cache.join("go.mod"), "module example.com");
    fs::set_permissions(
        module_cache.join("go.mod"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    fs::set_permissions(&module_cache, fs::Permissions::from_mode(0o555)).unwrap();

    remove_workspace(&setup.root, &workspace)
        .await
        .expect("remove workspace");

    assert!(!workspace.path.exists());
    remove_workspace(&setup.root, &workspace)
        .await
        .expect("removing twice is fine");
}

#[tokio::test]
async fn remove_refuses_paths_outside_the_workspaces_root() {
    let setup = setup();
    write(&setup.project.join("file.txt"), "content");
    fs::create_dir_all(&setup.root).unwrap();
    let not_a_workspace = Workspace {
        path: fs::canonicalize(&setup.project).unwrap(),
        in_place: false,
    };

    let err = remove_workspace(&setup.root, &not_a_workspace)
        .await
        .unwrap_err();

    assert!(
        matches!(err, BackendError::RemoveOutsideRoot { .. }),
        "{err:?}"
    );
    assert!(setup.project.join("file.txt").is_file());
}

#[test]
fn listing_is_sorted_and_relative() {
    let setup = setup();
    write(&setup.project.join("b.txt"), "b");
    write(&setup.project.join("a/z.txt"), "z");

    let files = list_project_files(&setup.project).unwrap();

    assert_eq!(
        files,
        vec![PathBuf::from("a/z.txt"), PathBuf::from("b.txt")]
    );
}
