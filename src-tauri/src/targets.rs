//! Where a job can run: local processes, or a context of the user's
//! kubeconfig.
//!
//! The kubeconfig is found as kubectl finds it: the files listed in
//! `KUBECONFIG`, merged, or `~/.kube/config`, unless `--kubeconfig` names
//! one. Contexts are listed by name (kind-*, k3d-* and remote ones alike)
//! with the cluster they point at. Listing reads the file only; whether a
//! cluster answers shows when a job starts there
//! ([`danube::backend::targets::TargetBackends`]).

use std::path::{Path, PathBuf};

use kube::config::Kubeconfig;
use serde::Serialize;

/// The id of the local target.
pub const LOCAL: &str = "local";

/// One place a job can run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Target {
    /// `local`, or `kube:<context>`.
    pub id: String,
    /// What the picker shows: `Local processes` or the context's name.
    pub name: String,
    /// `local` or `kubernetes`.
    pub kind: &'static str,
    /// The cluster a context points at.
    pub cluster: Option<String>,
    /// Whether this is the kubeconfig's current context.
    pub current: bool,
    /// Whether a job can start there now.
    pub available: bool,
    /// Why it cannot, when it cannot.
    pub note: Option<String>,
}

/// The targets, and what went wrong reading the kubeconfig, if anything.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetList {
    /// Local processes first, then the contexts in kubeconfig order.
    pub targets: Vec<Target>,
    /// The kubeconfig files that were read.
    pub kubeconfig: Vec<String>,
    /// A kubeconfig that could not be read; local processes stay listed.
    pub error: Option<String>,
}

/// Returns the kubeconfig files to read: the non-empty entries of
/// `KUBECONFIG` (its value is `kubeconfig_var`) or else
/// `~/.kube/config` under `home`. Files that do not exist are left out, as
/// kubectl leaves them out.
pub fn kubeconfig_paths(
    kubeconfig_var: Option<&std::ffi::OsStr>,
    home: Option<&Path>,
) -> Vec<PathBuf> {
    let listed: Vec<PathBuf> = kubeconfig_var
        .map(|value| {
            std::env::split_paths(value)
                .filter(|path| !path.as_os_str().is_empty())
                .collect()
        })
        .unwrap_or_default();
    let candidates = if listed.is_empty() {
        home.map(|home| vec![home.join(".kube").join("config")])
            .unwrap_or_default()
    } else {
        listed
    };
    candidates
        .into_iter()
        .filter(|path| path.is_file())
        .collect()
}

/// Lists the targets of `kubeconfig` (`--kubeconfig`), else those of this
/// process's environment.
pub fn list(kubeconfig: Option<&Path>) -> TargetList {
    let paths = match kubeconfig {
        Some(path) => vec![path.to_owned()],
        None => {
            let home = std::env::home_dir();
            kubeconfig_paths(std::env::var_os("KUBECONFIG").as_deref(), home.as_deref())
        }
    };
    list_from(&paths)
}

/// Lists local processes and every context of the kubeconfig `paths`,
/// merged with kubectl's rules (the first file to set a value wins).
pub fn list_from(paths: &[PathBuf]) -> TargetList {
    let mut targets = vec![Target {
        id: LOCAL.to_owned(),
        name: "Local processes".to_owned(),
        kind: "local",
        cluster: None,
        current: false,
        available: true,
        note: None,
    }];
    let kubeconfig = paths
        .iter()
        .map(|path| path.display().to_string())
        .collect();

    let merged = paths
        .iter()
        .try_fold(Kubeconfig::default(), |merged, path| {
            let next = Kubeconfig::read_from(path).map_err(|err| (path, err))?;
            merged.merge(next).map_err(|err| (path, err))
        });
    let config = match merged {
        Ok(config) => config,
        Err((path, err)) => {
            tracing::warn!(path = %path.display(), error = %err, "failed to read the kubeconfig");
            return TargetList {
                targets,
                kubeconfig,
                error: Some(format!(
                    "failed to read the kubeconfig `{}`: {err}; fix the file or point KUBECONFIG at another one",
                    path.display()
                )),
            };
        }
    };

    let current = config.current_context.as_deref();
    targets.extend(config.contexts.iter().map(|named| {
        Target {
            id: format!("kube:{}", named.name),
            name: named.name.clone(),
            kind: "kubernetes",
            cluster: named
                .context
                .as_ref()
                .map(|context| context.cluster.clone()),
            current: current == Some(named.name.as_str()),
            available: true,
            note: None,
        }
    }));
    TargetList {
        targets,
        kubeconfig,
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIND_AND_REMOTE: &str = "\
apiVersion: v1
kind: Config
current-context: kind-dev
clusters:
- name: kind-dev
  cluster: {server: 'https://127.0.0.1:6443'}
- name: prod
  cluster: {server: 'https://k8s.example.invalid'}
contexts:
- name: kind-dev
  context: {cluster: kind-dev, user: kind-dev}
- name: prod-admin
  context: {cluster: prod, user: admin}
users:
- name: kind-dev
  user: {token: abc}
- name: admin
  user: {token: def}
";

    const K3D: &str = "\
apiVersion: v1
kind: Config
current-context: k3d-lab
clusters:
- name: k3d-lab
  cluster: {server: 'https://127.0.0.1:7443'}
contexts:
- name: k3d-lab
  context: {cluster: k3d-lab, user: k3d}
- name: kind-dev
  context: {cluster: shadowed, user: k3d}
users:
- name: k3d
  user: {token: ghi}
";

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn names(list: &TargetList) -> Vec<&str> {
        list.targets
            .iter()
            .map(|target| target.name.as_str())
            .collect()
    }

    #[test]
    fn no_kubeconfig_lists_local_only() {
        let list = list_from(&[]);

        assert_eq!(names(&list), ["Local processes"]);
        assert!(list.targets[0].available);
        assert_eq!(list.error, None);
    }

    #[test]
    fn contexts_listed_and_available() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "config", KIND_AND_REMOTE);

        let list = list_from(&[path]);

        assert_eq!(names(&list), ["Local processes", "kind-dev", "prod-admin"]);
        let kind = &list.targets[1];
        assert_eq!(kind.id, "kube:kind-dev");
        assert_eq!(kind.cluster.as_deref(), Some("kind-dev"));
        assert!(kind.current);
        assert!(kind.available);
        assert_eq!(kind.note, None);
        assert!(!list.targets[2].current);
    }

    #[test]
    fn kubeconfig_files_merge_first_wins() {
        let dir = tempfile::tempdir().unwrap();
        let first = write(dir.path(), "a", KIND_AND_REMOTE);
        let second = write(dir.path(), "b", K3D);

        let list = list_from(&[first, second]);

        assert_eq!(
            names(&list),
            ["Local processes", "kind-dev", "prod-admin", "k3d-lab"]
        );
        assert_eq!(list.targets[1].cluster.as_deref(), Some("kind-dev"));
        assert!(list.targets[1].current, "current-context of the first file");
    }

    #[test]
    fn broken_kubeconfig_keeps_local_target() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "config", "contexts: [this is: not valid");

        let list = list_from(std::slice::from_ref(&path));

        assert_eq!(names(&list), ["Local processes"]);
        let error = list.error.expect("an error for the broken file");
        assert!(error.contains(&path.display().to_string()), "{error}");
        assert!(error.contains("KUBECONFIG"), "{error}");
    }

    #[test]
    fn kubeconfig_variable_beats_home_file() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".kube")).unwrap();
        let home_config = write(&home.join(".kube"), "config", K3D);
        let listed = write(dir.path(), "listed", KIND_AND_REMOTE);
        let variable = std::env::join_paths([listed.clone(), dir.path().join("missing")]).unwrap();

        assert_eq!(kubeconfig_paths(Some(&variable), Some(&home)), [listed]);
        assert_eq!(
            kubeconfig_paths(None, Some(&home)),
            std::slice::from_ref(&home_config)
        );
        assert_eq!(
            kubeconfig_paths(Some(std::ffi::OsStr::new("")), Some(&home)),
            [home_config]
        );
        assert!(kubeconfig_paths(None, None).is_empty());
    }
}
