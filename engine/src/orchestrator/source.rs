//! The source of a project folder: repository, branch and
//! commit, for `ctx` and the job record.

use std::path::Path;

#[derive(Clone, Debug, Default)]
pub struct SourceInfo {
    /// The `origin` remote's URL, or the folder path when there is none.
    pub repo: String,
    pub branch: String,
    /// The tag a repository job named, when it named one.
    pub tag: String,
    pub commit_sha: String,
}

/// Reads the Git repository that contains `project`, if any. A folder outside
/// Git, or a repository with no commit yet, gives empty branch and commit.
pub fn describe(project: &Path) -> SourceInfo {
    let fallback = SourceInfo {
        repo: project.display().to_string(),
        ..SourceInfo::default()
    };
    let Ok(repo) = git2::Repository::discover(project) else {
        return fallback;
    };

    let remote_url = repo
        .find_remote("origin")
        .ok()
        .and_then(|remote| remote.url().map(str::to_owned));
    let head = repo.head().ok();
    let branch = head
        .as_ref()
        .filter(|head| head.is_branch())
        .and_then(|head| head.shorthand().map(str::to_owned))
        .unwrap_or_default();
    let commit_sha = head
        .and_then(|head| head.peel_to_commit().ok())
        .map(|commit| commit.id().to_string())
        .unwrap_or_default();

    SourceInfo {
        repo: remote_url.unwrap_or(fallback.repo),
        branch,
        tag: String::new(),
        commit_sha,
    }
}
