//! Which paths under a project folder never trigger a run: `.git`, the
//! paths that Git ignore files exclude, Danube's data directory, editors'
//! scratch files and Python's bytecode caches.
//!
//! The ignore files are the ones the local backend honours when it copies a
//! project into a workspace. They are `.gitignore` at any depth of the
//! project and in its parent folders up to the repository root,
//! `.git/info/exclude`, and the user's global excludes file. A file that these rules exclude is not
//! copied, so changing it cannot change a run.

use std::ffi::OsStr;
use std::path::{Component, Path, PathBuf};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use super::editor::is_editor_file;

/// The file name of Git's per-folder ignore rules.
pub const GITIGNORE: &str = ".gitignore";

/// Paths of one project that must not trigger a run.
#[derive(Debug)]
pub struct IgnoreRules {
    project: PathBuf,
    data_dir: Option<PathBuf>,
    /// One matcher per ignore file, each rooted at its folder, shallowest
    /// first.
    matchers: Vec<Gitignore>,
}

impl IgnoreRules {
    /// Reads the ignore files that apply to `project`, a canonical path.
    /// `data_dir` is Danube's data directory, ignored when it sits inside
    /// the project. An ignore file that cannot be parsed is logged and its
    /// valid lines still apply.
    pub fn load(project: &Path, data_dir: Option<&Path>) -> IgnoreRules {
        let repository_root = repository_root(project);
        let mut matchers = Vec::new();

        let global = GitignoreBuilder::new(&repository_root);
        if let Some(matcher) = build(global, ignore::gitignore::gitconfig_excludes_path()) {
            matchers.push(matcher);
        }
        let exclude = repository_root.join(".git").join("info").join("exclude");
        if let Some(matcher) = build(GitignoreBuilder::new(&repository_root), Some(exclude)) {
            matchers.push(matcher);
        }
        for folder in folders_between(&repository_root, project) {
            let file = folder.join(GITIGNORE);
            if let Some(matcher) = build(GitignoreBuilder::new(&folder), Some(file)) {
                matchers.push(matcher);
            }
        }
        for file in nested_gitignores(project) {
            let folder = file.parent().unwrap_or(project).to_owned();
            if let Some(matcher) = build(GitignoreBuilder::new(folder), Some(file)) {
                matchers.push(matcher);
            }
        }
        matchers.sort_by_key(|matcher| matcher.path().components().count());

        IgnoreRules {
            project: project.to_owned(),
            data_dir: data_dir.map(|dir| dir.canonicalize().unwrap_or_else(|_| dir.to_owned())),
            matchers,
        }
    }

    /// Returns whether a change of `path` (absolute, under the project) is
    /// ignored. A path outside the project is ignored too.
    ///
    /// NOTE: a file that Git tracks although an ignore file matches it
    /// (added with `git add -f`) is copied into workspaces but ignored
    /// here, because the Git index is not read.
    pub fn is_ignored(&self, path: &Path) -> bool {
        let Ok(relative) = path.strip_prefix(&self.project) else {
            return true;
        };
        if self
            .data_dir
            .as_deref()
            .is_some_and(|data| path.starts_with(data))
        {
            return true;
        }

        let mut prefix = self.project.clone();
        let mut components = relative.components().peekable();
        while let Some(component) = components.next() {
            let Component::Normal(name) = component else {
                return true;
            };
            if is_never_watched(name) {
                return true;
            }
            prefix.push(name);
            // Every component but the last is a folder. The last may be a
            // deleted file, which cannot be asked; files are the usual case.
            let is_dir = components.peek().is_some() || prefix.is_dir();
            if self.excludes(&prefix, is_dir) {
                return true;
            }
        }
        false
    }

    /// Applies Git's precedence to one path: the deepest ignore file with a
    /// matching pattern decides, and within a file the last match wins
    /// (which [`Gitignore::matched`] does).
    fn excludes(&self, path: &Path, is_dir: bool) -> bool {
        let applicable = self
            .matchers
            .iter()
            .rev()
            .filter(|matcher| path.starts_with(matcher.path()) && path != matcher.path());
        for matcher in applicable {
            match matcher.matched(path, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }
}

/// Names that never trigger a run wherever they sit: Git's own folder,
/// editors' scratch files, and the bytecode caches that Python writes when
/// a pipeline imports a module of the project.
fn is_never_watched(name: &OsStr) -> bool {
    let Some(name) = name.to_str() else {
        return false;
    };
    name == ".git" || name == "__pycache__" || name.ends_with(".pyc") || is_editor_file(name)
}

fn build(mut builder: GitignoreBuilder, file: Option<PathBuf>) -> Option<Gitignore> {
    let file = file.filter(|file| file.is_file())?;
    if let Some(err) = builder.add(&file) {
        tracing::warn!(path = %file.display(), error = %err, "ignoring invalid lines of an ignore file");
    }
    match builder.build() {
        Ok(matcher) if !matcher.is_empty() => Some(matcher),
        Ok(_) => None,
        Err(err) => {
            tracing::warn!(path = %file.display(), error = %err, "failed to read an ignore file");
            None
        }
    }
}

/// Returns the working tree that contains `project`, or `project` itself
/// outside Git.
fn repository_root(project: &Path) -> PathBuf {
    git2::Repository::discover(project)
        .ok()
        .and_then(|repository| repository.workdir().map(Path::to_path_buf))
        .and_then(|root| root.canonicalize().ok())
        .filter(|root| project.starts_with(root))
        .unwrap_or_else(|| project.to_owned())
}

/// Lists the folders from `root` down to the parent of `project`, outermost
/// first.
fn folders_between(root: &Path, project: &Path) -> Vec<PathBuf> {
    let mut folders: Vec<PathBuf> = project
        .ancestors()
        .skip(1)
        .take_while(|folder| folder.starts_with(root))
        .map(Path::to_path_buf)
        .collect();
    folders.reverse();
    folders
}

/// Finds every `.gitignore` under `project`, without descending into folders
/// that the rules found so far exclude, such as `node_modules`.
fn nested_gitignores(project: &Path) -> Vec<PathBuf> {
    ignore::WalkBuilder::new(project)
        .hidden(false)
        .ignore(false)
        .parents(true)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(true)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|entry| entry.file_name() != OsStr::new(".git"))
        .build()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name() == OsStr::new(GITIGNORE))
        .map(ignore::DirEntry::into_path)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project_with(files: &[(&str, &str)]) -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let project = root.path().canonicalize().unwrap();
        for (relative, contents) in files {
            let path = project.join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, contents).unwrap();
        }
        (root, project)
    }

    #[test]
    fn gitignore_excludes_files_and_folders() {
        let (_root, project) =
            project_with(&[(".gitignore", "*.log\nbuild/\n"), ("build/out.o", "")]);
        let rules = IgnoreRules::load(&project, None);

        assert!(rules.is_ignored(&project.join("debug.log")));
        assert!(rules.is_ignored(&project.join("build/out.o")));
        assert!(rules.is_ignored(&project.join("src/deep/trace.log")));
        assert!(!rules.is_ignored(&project.join("src/main.py")));
        assert!(!rules.is_ignored(&project.join(".gitignore")));
    }

    #[test]
    fn nested_gitignore_applies_below_its_folder() {
        let (_root, project) = project_with(&[
            (".gitignore", "*.log\n"),
            ("web/.gitignore", "dist/\n!keep.log\n"),
        ]);
        let rules = IgnoreRules::load(&project, None);

        assert!(rules.is_ignored(&project.join("web/dist/app.js")));
        assert!(!rules.is_ignored(&project.join("dist/app.js")));
        assert!(!rules.is_ignored(&project.join("web/keep.log")));
        assert!(rules.is_ignored(&project.join("web/other.log")));
    }

    #[test]
    fn excluded_folder_cannot_be_reincluded_below() {
        let (_root, project) =
            project_with(&[(".gitignore", "vendor/\n"), ("vendor/.gitignore", "!*\n")]);
        let rules = IgnoreRules::load(&project, None);

        assert!(rules.is_ignored(&project.join("vendor/lib.py")));
    }

    #[test]
    fn git_editor_and_data_paths_ignored() {
        let (_root, project) = project_with(&[("danubefile.py", "")]);
        let data = project.join(".danube-data");
        std::fs::create_dir(&data).unwrap();
        let rules = IgnoreRules::load(&project, Some(&data));

        assert!(rules.is_ignored(&project.join(".git/index")));
        assert!(rules.is_ignored(&project.join("sub/.git/HEAD")));
        assert!(rules.is_ignored(&project.join(".danubefile.py.swp")));
        assert!(rules.is_ignored(&project.join("src/__pycache__/x.cpython-312.pyc")));
        assert!(rules.is_ignored(&data.join("danube.db-wal")));
        assert!(!rules.is_ignored(&project.join("danubefile.py")));
    }

    #[test]
    fn parent_gitignore_up_to_repository_root_applies() {
        let (_root, repository) =
            project_with(&[(".gitignore", "*.bak\n"), ("app/danubefile.py", "")]);
        git2::Repository::init(&repository).unwrap();
        std::fs::write(repository.join(".git/info/exclude"), "secret.txt\n").unwrap();
        let project = repository.join("app");
        let rules = IgnoreRules::load(&project, None);

        assert!(rules.is_ignored(&project.join("old.bak")));
        assert!(rules.is_ignored(&project.join("secret.txt")));
        assert!(!rules.is_ignored(&project.join("danubefile.py")));
    }

    #[test]
    fn path_outside_project_is_ignored() {
        let (_root, project) = project_with(&[]);
        let rules = IgnoreRules::load(&project, None);

        assert!(rules.is_ignored(Path::new("/etc/passwd")));
    }
}
