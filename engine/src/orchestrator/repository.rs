//! Server jobs from a Git repository at a commit: which repository URLs a
//! server accepts, and the clone (with git2, no `git` binary) that becomes
//! the job's project folder.
//!
//! The clone lives in `<data_dir>/checkouts/<job id>` and is removed when
//! the job ends, with its workspace. It is a project folder like any other,
//! so both backends copy or stream it as they do a folder, without `.git`,
//! and no credential reaches a step or a pod.

use std::path::{Path, PathBuf};

use super::PIPELINE_FILE;
use super::source::SourceInfo;

/// A repository and the commit to run, as a client names them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepositorySource {
    /// `https://` (with the `git-https` feature), `http://`, `git://`, or a
    /// `file://` URL or absolute path inside a folder the server allows
    /// ([`RepositoryPolicy`]).
    pub url: String,
    /// A full or abbreviated commit SHA, a branch or a tag.
    pub commit: String,
    /// The branch and tag that an earlier job of this commit named, which a
    /// rerun of it records again, since it names the commit by its SHA.
    pub known_refs: Option<KnownRefs>,
}

/// The branch or tag a repository job named, as its record keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownRefs {
    pub branch: String,
    pub tag: String,
}

/// The repository URLs a server clones.
#[derive(Clone, Debug, Default)]
pub struct RepositoryPolicy {
    /// Folders whose repositories `file://` URLs and local paths may name.
    /// Empty by default: a server then clones only remote repositories, so
    /// that a client cannot read the server's own files through a job.
    pub allowed_local_roots: Vec<PathBuf>,
    /// Hosts that remote URLs may name: `git.example`, `*.example` for
    /// its subdomains, or `*` for any. Empty by default, so that a client
    /// cannot make the server reach hosts of its own network.
    pub allowed_hosts: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RepositoryError {
    #[error(
        "repository `{url}` is invalid: {reason}; pass an `https://`, `http://` or `git://` \
         URL, or a `file://` URL inside a folder the server allows"
    )]
    InvalidUrl { url: String, reason: String },

    #[error(
        "repository `{url}` is a local path, which this server does not clone; start the server \
         with --allow-repository-path naming a folder that contains it"
    )]
    LocalNotAllowed { url: String },

    #[error(
        "repository host `{host}` is not allowed on this server; start the server with \
         --allow-repository-host {host} (or `*.DOMAIN` for a domain's hosts, `*` for any host)"
    )]
    HostNotAllowed { host: String },

    #[error(
        "commit `{commit}` is invalid: pass a commit SHA, a branch or a tag without spaces or \
         control characters, not starting with `-`"
    )]
    InvalidCommit { commit: String },

    #[error("failed to create the checkout folder `{path}`", path = .path.display())]
    CreateCheckout {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("failed to clone repository `{url}` (check the URL and that the server can reach it)")]
    Clone {
        url: String,
        #[source]
        source: git2::Error,
    },

    #[error(
        "commit `{commit}` was not found in repository `{url}`; pass a commit SHA, branch or \
         tag that the repository has"
    )]
    UnknownCommit { url: String, commit: String },

    #[error("failed to check out commit `{commit}` of repository `{url}`")]
    Checkout {
        url: String,
        commit: String,
        #[source]
        source: git2::Error,
    },

    #[error(
        "no {PIPELINE_FILE} at the root of repository `{url}` at commit `{commit}` \
         ({sha}); add one, or pass the commit that has it"
    )]
    NoPipelineFile {
        url: String,
        commit: String,
        sha: String,
    },

    #[error("the clone of repository `{url}` did not finish")]
    Task {
        url: String,
        #[source]
        source: tokio::task::JoinError,
    },
}

impl RepositoryPolicy {
    /// Checks `source` before anything is cloned.
    ///
    /// # Errors
    ///
    /// An unsupported scheme, a URL with credentials or a query, a host
    /// outside [`RepositoryPolicy::allowed_hosts`], a local path outside
    /// [`RepositoryPolicy::allowed_local_roots`], or a malformed commit.
    pub fn check(&self, source: &RepositorySource) -> Result<(), RepositoryError> {
        check_commit(&source.commit)?;
        let url = &source.url;
        // Messages show the URL with what may be a credential masked.
        let invalid = |reason: &str| RepositoryError::InvalidUrl {
            url: shown_url(url),
            reason: reason.to_owned(),
        };
        if url.is_empty() || url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("it is empty or contains spaces"));
        }
        // URL parsers read `\` as `/` in some places, which would hide a
        // user name from the checks below.
        if url.contains('\\') {
            return Err(invalid("it contains `\\`; write `/` instead"));
        }
        if let Some((scheme, rest)) = url.split_once("://") {
            if !matches!(
                scheme.to_ascii_lowercase().as_str(),
                "https" | "http" | "git" | "file"
            ) {
                return Err(invalid(&format!("scheme `{scheme}` is not supported")));
            }
            let (authority, _) = split_authority(rest);
            if authority.contains('@') {
                return Err(invalid(
                    "it contains a user name or password, which may be a token and would be \
                     stored with the job (remove it: the server clones without credentials)",
                ));
            }
            if rest.contains(['?', '#']) {
                return Err(invalid(
                    "it has a query or fragment, which may hold a token and would be stored \
                     with the job (remove it)",
                ));
            }
        }

        let local = if let Some(path) = file_url_path(url) {
            Some(PathBuf::from(path))
        } else if url.starts_with('/') {
            Some(PathBuf::from(url))
        } else {
            None
        };
        if let Some(path) = local {
            return self.check_local(url, &path);
        }

        let Ok(parsed) = url::Url::parse(url) else {
            return Err(invalid("it is not a URL"));
        };
        let has_credentials = !parsed.username().is_empty() || parsed.password().is_some();
        if has_credentials || parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(invalid(
                "it contains a user name, password, query or fragment, which may hold a token \
                 and would be stored with the job (remove it)",
            ));
        }
        if !matches!(parsed.scheme(), "https" | "http" | "git") {
            return Err(invalid(&format!(
                "scheme `{}` is not supported",
                parsed.scheme()
            )));
        }
        let Some(host) = parsed.host_str().filter(|host| !host.is_empty()) else {
            return Err(invalid("it names no host"));
        };
        if !self.allows_host(host) {
            return Err(RepositoryError::HostNotAllowed {
                host: host.to_owned(),
            });
        }
        if parsed.scheme() == "https" && !cfg!(feature = "git-https") {
            return Err(invalid(
                "this build of danube cannot clone over HTTPS (build it with \
                 `--features git-https`, as the coordinator image is)",
            ));
        }
        Ok(())
    }

    fn allows_host(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        self.allowed_hosts.iter().any(|allowed| {
            let allowed = allowed.trim().to_ascii_lowercase();
            match allowed.strip_prefix('*') {
                Some("") => true,
                Some(suffix) if suffix.starts_with('.') => {
                    host.len() > suffix.len() && host.ends_with(suffix)
                }
                _ => host == allowed,
            }
        })
    }

    fn check_local(&self, url: &str, path: &Path) -> Result<(), RepositoryError> {
        let not_allowed = || RepositoryError::LocalNotAllowed {
            url: shown_url(url),
        };
        if self.allowed_local_roots.is_empty() {
            return Err(not_allowed());
        }
        // Canonical paths, so that `..` and symbolic links cannot leave an
        // allowed folder.
        let Ok(path) = path.canonicalize() else {
            return Err(RepositoryError::InvalidUrl {
                url: shown_url(url),
                reason: "no such folder on the server".into(),
            });
        };
        let allowed = self
            .allowed_local_roots
            .iter()
            .filter_map(|root| root.canonicalize().ok())
            .any(|root| path.starts_with(root));
        if allowed { Ok(()) } else { Err(not_allowed()) }
    }
}

fn check_commit(commit: &str) -> Result<(), RepositoryError> {
    let valid = (1..=255).contains(&commit.len())
        && !commit.starts_with('-')
        && !commit
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == ':');
    if valid {
        Ok(())
    } else {
        Err(RepositoryError::InvalidCommit {
            commit: commit.chars().take(100).collect(),
        })
    }
}

/// Returns the path of a `file://` URL, its scheme in any case.
fn file_url_path(url: &str) -> Option<&str> {
    let scheme = url.get(..7)?;
    scheme.eq_ignore_ascii_case("file://").then(|| &url[7..])
}

/// Splits what follows a URL's `://` into its authority (user name,
/// password, host and port) and the rest.
fn split_authority(rest: &str) -> (&str, &str) {
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest.split_at(end)
}

/// Returns `url` for messages: at most 300 characters, with its user name
/// and password, query and fragment replaced by `***`.
pub(crate) fn shown_url(url: &str) -> String {
    let masked = match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, tail) = split_authority(rest);
            let host = match authority.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => authority.to_owned(),
            };
            let path = match tail.find(['?', '#']) {
                Some(start) => format!("{}{}***", &tail[..start], &tail[start..=start]),
                None => tail.to_owned(),
            };
            format!("{scheme}://{host}{path}")
        }
        // `user:token@host:path`, as scp and Git write SSH addresses.
        None if !url.starts_with('/') => match url.rsplit_once('@') {
            Some((_, host)) => format!("***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    };
    masked.chars().take(300).collect()
}

/// Clones `source` into `into` (which must not exist) and checks out its
/// commit. Returns the source information of the checkout: the URL as
/// given, the branch when `commit` named one, and the full commit SHA.
///
/// Blocking: run it off the async runtime.
///
/// # Errors
///
/// An unreachable or missing repository, an unknown commit, a failed
/// checkout, or a commit without [`PIPELINE_FILE`].
pub fn clone_at(source: &RepositorySource, into: &Path) -> Result<SourceInfo, RepositoryError> {
    let url = shown_url(&source.url);
    if let Some(parent) = into.parent() {
        std::fs::create_dir_all(parent).map_err(|err| RepositoryError::CreateCheckout {
            path: parent.to_owned(),
            source: err,
        })?;
    }
    let clone_url = file_url_path(&source.url).unwrap_or(&source.url).to_owned();
    // NOTE: a full clone, every branch's history included; a shallow fetch
    // of just the commit would be faster on large repositories.
    let repository = git2::build::RepoBuilder::new()
        .bare(false)
        .clone(&clone_url, into)
        .map_err(|err| RepositoryError::Clone {
            url: url.clone(),
            source: err,
        })?;

    let (object, named) =
        resolve(&repository, &source.commit).ok_or_else(|| RepositoryError::UnknownCommit {
            url: url.clone(),
            commit: source.commit.clone(),
        })?;
    let commit = object
        .peel_to_commit()
        .map_err(|_| RepositoryError::UnknownCommit {
            url: url.clone(),
            commit: source.commit.clone(),
        })?;
    let checkout_error = |err| RepositoryError::Checkout {
        url: url.clone(),
        commit: source.commit.clone(),
        source: err,
    };
    let mut options = git2::build::CheckoutBuilder::new();
    options.force().remove_untracked(true);
    repository
        .checkout_tree(commit.as_object(), Some(&mut options))
        .map_err(checkout_error)?;
    repository
        .set_head_detached(commit.id())
        .map_err(checkout_error)?;

    let sha = commit.id().to_string();
    if !into.join(PIPELINE_FILE).is_file() {
        return Err(RepositoryError::NoPipelineFile {
            url,
            commit: source.commit.clone(),
            sha,
        });
    }
    let (branch, tag) = match (&source.known_refs, named) {
        (Some(known), _) => (known.branch.clone(), known.tag.clone()),
        (None, Named::Branch(branch)) => (branch, String::new()),
        (None, Named::Tag(tag)) => (String::new(), tag),
        (None, Named::Commit) => (String::new(), String::new()),
    };
    Ok(SourceInfo {
        repo: url,
        branch,
        tag,
        commit_sha: sha,
    })
}

/// The kind of reference a client's `commit` resolved to.
enum Named {
    Branch(String),
    Tag(String),
    Commit,
}

/// Finds `commit` as a remote branch, a tag, or a (possibly abbreviated)
/// SHA, in that order.
fn resolve<'r>(
    repository: &'r git2::Repository,
    commit: &str,
) -> Option<(git2::Object<'r>, Named)> {
    let branch = commit.strip_prefix("refs/heads/").unwrap_or(commit);
    if let Ok(object) = repository.revparse_single(&format!("refs/remotes/origin/{branch}")) {
        return Some((object, Named::Branch(branch.to_owned())));
    }
    let tag = commit.strip_prefix("refs/tags/").unwrap_or(commit);
    if let Ok(object) = repository.revparse_single(&format!("refs/tags/{tag}")) {
        return Some((object, Named::Tag(tag.to_owned())));
    }
    let object = repository.revparse_single(commit).ok()?;
    Some((object, Named::Commit))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(url: &str, commit: &str) -> RepositorySource {
        RepositorySource {
            url: url.into(),
            commit: commit.into(),
            known_refs: None,
        }
    }

    /// Makes a repository with `danubefile.py` on `main`, a second commit
    /// on branch `next` and a tag `v1` on the first commit. Returns the
    /// SHAs of both commits.
    fn repository(dir: &Path) -> (String, String) {
        let repository = git2::Repository::init(dir).unwrap();
        let signature = git2::Signature::now("Test", "test@example.com").unwrap();
        let commit_files = |files: &[(&str, &str)], parents: &[&git2::Commit]| {
            for (name, text) in files {
                std::fs::write(dir.join(name), text).unwrap();
            }
            let mut index = repository.index().unwrap();
            for (name, _) in files {
                index.add_path(Path::new(name)).unwrap();
            }
            index.write().unwrap();
            let tree = repository.find_tree(index.write_tree().unwrap()).unwrap();
            repository
                .commit(None, &signature, &signature, "commit", &tree, parents)
                .unwrap()
        };
        let first = commit_files(&[(PIPELINE_FILE, "# first\n")], &[]);
        let first_commit = repository.find_commit(first).unwrap();
        let second = commit_files(&[("next.txt", "next\n")], &[&first_commit]);
        repository
            .reference("refs/heads/main", first, true, "main")
            .unwrap();
        repository
            .reference("refs/heads/next", second, true, "next")
            .unwrap();
        repository.set_head("refs/heads/main").unwrap();
        repository
            .tag_lightweight("v1", first_commit.as_object(), false)
            .unwrap();
        (first.to_string(), second.to_string())
    }

    #[test]
    fn branch_tag_and_sha_are_checked_out() {
        let temp = tempfile::tempdir().unwrap();
        let origin = temp.path().join("origin");
        let (first, second) = repository(&origin);
        let url = format!("file://{}", origin.display());

        let branch = clone_at(&source(&url, "next"), &temp.path().join("a")).unwrap();
        assert_eq!(branch.branch, "next");
        assert_eq!(branch.commit_sha, second);
        assert_eq!(branch.repo, url);
        assert!(temp.path().join("a/next.txt").is_file());

        let tag = clone_at(&source(&url, "v1"), &temp.path().join("b")).unwrap();
        assert_eq!(tag.branch, "");
        assert_eq!(tag.tag, "v1");
        assert_eq!(tag.commit_sha, first);
        assert!(!temp.path().join("b/next.txt").exists());

        let sha = clone_at(&source(&url, &second[..10]), &temp.path().join("c")).unwrap();
        assert_eq!(sha.commit_sha, second);
        assert_eq!((sha.branch.as_str(), sha.tag.as_str()), ("", ""));
    }

    #[test]
    fn unknown_commit_and_missing_repository_are_named() {
        let temp = tempfile::tempdir().unwrap();
        let origin = temp.path().join("origin");
        repository(&origin);
        let url = format!("file://{}", origin.display());

        let unknown = clone_at(&source(&url, "no-such-branch"), &temp.path().join("a"))
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("commit `no-such-branch` was not found"),
            "{unknown}"
        );

        let missing = format!("file://{}", temp.path().join("missing").display());
        let error = clone_at(&source(&missing, "main"), &temp.path().join("b")).unwrap_err();
        assert!(matches!(error, RepositoryError::Clone { .. }), "{error}");
        assert!(error.to_string().contains(&missing), "{error}");
    }

    #[test]
    fn commit_without_pipeline_file_is_rejected() {
        let temp = tempfile::tempdir().unwrap();
        let origin = temp.path().join("origin");
        let (_, second) = repository(&origin);
        let git = git2::Repository::open(&origin).unwrap();
        let signature = git2::Signature::now("Test", "test@example.com").unwrap();
        let empty = git
            .find_tree(git.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let parent = git
            .find_commit(git2::Oid::from_str(&second).unwrap())
            .unwrap();
        let bare = git
            .commit(None, &signature, &signature, "empty", &empty, &[&parent])
            .unwrap();
        git.reference("refs/heads/bare", bare, true, "bare")
            .unwrap();
        let url = format!("file://{}", origin.display());

        let error = clone_at(&source(&url, "bare"), &temp.path().join("a"))
            .unwrap_err()
            .to_string();

        assert!(error.contains("no danubefile.py at the root"), "{error}");
        assert!(error.contains(&bare.to_string()), "{error}");
    }

    #[test]
    fn local_repositories_need_an_allowed_folder() {
        let temp = tempfile::tempdir().unwrap();
        let inside = temp.path().join("repos/one");
        std::fs::create_dir_all(&inside).unwrap();
        let url = format!("file://{}", inside.display());

        let closed = RepositoryPolicy::default()
            .check(&source(&url, "main"))
            .unwrap_err();
        assert!(matches!(closed, RepositoryError::LocalNotAllowed { .. }));

        let open = RepositoryPolicy {
            allowed_local_roots: vec![temp.path().join("repos")],
            ..RepositoryPolicy::default()
        };
        open.check(&source(&url, "main")).unwrap();
        open.check(&source(&inside.display().to_string(), "main"))
            .unwrap();
        let escaping = format!("file://{}/repos/../", temp.path().display());
        assert!(matches!(
            open.check(&source(&escaping, "main")).unwrap_err(),
            RepositoryError::LocalNotAllowed { .. }
        ));
    }

    #[test]
    fn remote_urls_and_commits_are_checked() {
        let policy = RepositoryPolicy {
            allowed_hosts: vec!["git.example".into()],
            ..RepositoryPolicy::default()
        };
        let https = policy.check(&source("https://git.example/team/app.git", "main"));
        if cfg!(feature = "git-https") {
            https.unwrap();
        } else {
            let error = https.unwrap_err().to_string();
            assert!(error.contains("--features git-https"), "{error}");
        }
        policy
            .check(&source("http://git.example/team/app.git", "main"))
            .unwrap();
        for (url, reason) in [
            (
                "ssh://git@git.example/app.git",
                "scheme `ssh` is not supported",
            ),
            ("ext::sh -c touch% /tmp/x", "contains spaces"),
            (
                "https://user:secret@git.example/app.git",
                "contains a user name or password",
            ),
            (
                "https://secret@git.example/app.git",
                "contains a user name or password",
            ),
            (
                "https://git.example/app.git?access_token=secret",
                "has a query or fragment",
            ),
            (
                "https://git.example/app.git#secret",
                "has a query or fragment",
            ),
            (
                "file://user:secret@/tmp/app",
                "contains a user name or password",
            ),
            ("file:///tmp/app?token=secret", "has a query or fragment"),
            ("http:\\\\user:secret@git.example/app.git", "contains `\\`"),
            (
                "user:secret@git.example:app.git",
                "scheme `user` is not supported",
            ),
            ("not a url", "contains spaces"),
            (
                "git.example:app.git",
                "scheme `git.example` is not supported",
            ),
        ] {
            let error = policy.check(&source(url, "main")).unwrap_err().to_string();
            assert!(error.contains(reason), "{url}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
        for commit in ["", "-x", "a b", "main:path"] {
            let error = policy
                .check(&source("https://git.example/app.git", commit))
                .unwrap_err();
            assert!(
                matches!(error, RepositoryError::InvalidCommit { .. }),
                "{commit:?}"
            );
        }
    }

    #[test]
    fn remote_hosts_need_to_be_allowed() {
        let url = |host: &str| source(&format!("http://{host}/app.git"), "main");
        for closed in [
            url("git.example"),
            source("https://git.example/app.git", "main"),
        ] {
            let error = RepositoryPolicy::default()
                .check(&closed)
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("--allow-repository-host git.example"),
                "{error}"
            );
        }

        let policy = RepositoryPolicy {
            allowed_hosts: vec!["git.example".into(), "*.corp.example".into()],
            ..RepositoryPolicy::default()
        };
        for allowed in [
            "git.example",
            "GIT.example",
            "a.corp.example",
            "a.b.corp.example",
        ] {
            policy.check(&url(allowed)).unwrap();
        }
        for rejected in [
            "corp.example",
            "git.example.evil",
            "169.254.169.254",
            "localhost",
        ] {
            let error = policy.check(&url(rejected)).unwrap_err();
            assert!(
                matches!(error, RepositoryError::HostNotAllowed { .. }),
                "{rejected}: {error}"
            );
        }

        let any = RepositoryPolicy {
            allowed_hosts: vec!["*".into()],
            ..RepositoryPolicy::default()
        };
        any.check(&url("10.0.0.1")).unwrap();
    }
}
