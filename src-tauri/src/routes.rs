//! The HTTP routes only the desktop app mounts, under `/api/v1/desktop`.
//!
//! They sit behind the same token check as the rest of `/api/v1`
//! ([`danube::server::Server::serve`] merges them in). The web UI asks
//! `GET /api/v1/desktop` at start: a 404 there means a plain `danube
//! serve`, an answer means desktop mode, with the project picker, the
//! target choice and the run history.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use danube::api::{ApiError, ApiJson, AppState};
use danube::orchestrator::check_project;
use danube::store::{RecentProject, StoreError};
use serde::{Deserialize, Serialize};

use crate::picker::FolderPicker;
use crate::targets::{self, TargetList};

/// Recent projects the picker lists at most.
pub const RECENT_LIMIT: u32 = 20;

/// What the desktop routes share besides the engine.
pub struct DesktopState {
    picker: Arc<dyn FolderPicker>,
    /// The project given with `--project`, canonical.
    initial_project: Option<PathBuf>,
    /// The kubeconfig given with `--kubeconfig`.
    kubeconfig: Option<PathBuf>,
}

impl DesktopState {
    pub fn new(
        picker: Arc<dyn FolderPicker>,
        initial_project: Option<PathBuf>,
        kubeconfig: Option<PathBuf>,
    ) -> DesktopState {
        DesktopState {
            picker,
            initial_project,
            kubeconfig,
        }
    }

    /// Puts the `--project` folder at the top of the recent projects.
    pub async fn remember_initial(&self, app: &AppState) -> Result<(), StoreError> {
        if let Some(project) = &self.initial_project {
            let path = project.display().to_string();
            app.store
                .touch_recent_project(&path, None, danube::model::now_millis())
                .await?;
        }
        Ok(())
    }
}

/// Builds the desktop routes, to merge into `/api/v1`.
pub fn router(desktop: Arc<DesktopState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/desktop", get(info))
        .route("/desktop/projects", get(recent).post(open))
        .route("/desktop/projects/pick", post(pick))
        .route("/desktop/projects/forget", post(forget))
        .route("/desktop/targets", get(list_targets))
        .layer(Extension(desktop))
}

/// `GET /api/v1/desktop`.
#[derive(Debug, Serialize, Deserialize)]
pub struct DesktopInfo {
    pub version: String,
    /// The project given with `--project`, to open first.
    pub project: Option<Project>,
    /// The data directory the app shares with the `danube` command line.
    pub data_dir: String,
}

/// A project folder as the picker shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Project {
    /// Canonical absolute path; jobs of this project carry it.
    pub path: String,
    /// The folder's name.
    pub name: String,
    /// The pipeline last chosen, when its file defines several.
    pub pipeline: Option<String>,
    /// When it was last opened, in milliseconds since the epoch.
    pub opened_at: i64,
    /// Whether the folder still holds a `danubefile.py`.
    pub available: bool,
    /// Why it is not available: the folder is gone, or lacks the file.
    pub problem: Option<String>,
}

impl From<RecentProject> for Project {
    fn from(recent: RecentProject) -> Project {
        let problem = check_project(Path::new(&recent.path))
            .err()
            .map(|err| err.to_string());
        Project {
            name: folder_name(&recent.path),
            path: recent.path,
            pipeline: recent.pipeline,
            opened_at: recent.opened_at,
            available: problem.is_none(),
            problem,
        }
    }
}

fn folder_name(path: &str) -> String {
    Path::new(path)
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.to_owned())
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProjectList {
    /// Most recently opened first.
    pub projects: Vec<Project>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenProject {
    /// Absolute path of the folder that contains `danubefile.py`.
    pub path: String,
    /// The pipeline chosen, to preselect next time.
    pub pipeline: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForgetProject {
    pub path: String,
}

/// `POST /api/v1/desktop/projects/pick`: the folder chosen, or none when
/// the dialog was cancelled.
#[derive(Debug, Serialize, Deserialize)]
pub struct Picked {
    pub project: Option<Project>,
}

async fn info(
    State(app): State<Arc<AppState>>,
    Extension(desktop): Extension<Arc<DesktopState>>,
) -> Result<Json<DesktopInfo>, ApiError> {
    let project = match &desktop.initial_project {
        Some(path) => Some(find_recent(&app, path).await?),
        None => None,
    };
    Ok(Json(DesktopInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        project,
        data_dir: app.data.root().display().to_string(),
    }))
}

async fn recent(State(app): State<Arc<AppState>>) -> Result<Json<ProjectList>, ApiError> {
    let projects = app
        .store
        .list_recent_projects(RECENT_LIMIT)
        .await?
        .into_iter()
        .map(Project::from)
        .collect();
    Ok(Json(ProjectList { projects }))
}

async fn open(
    State(app): State<Arc<AppState>>,
    ApiJson(body): ApiJson<OpenProject>,
) -> Result<Json<Project>, ApiError> {
    let path = expand_home(&body.path, dirs::home_dir().as_deref());
    if !path.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "project `{}` is not an absolute path; pass the absolute path of the folder that contains danubefile.py, or one that starts with `~/`",
            body.path
        )));
    }
    let project = check_project(&path).map_err(|err| ApiError::unprocessable(err.to_string()))?;
    let pipeline = body.pipeline.filter(|name| !name.is_empty());
    Ok(Json(remember(&app, &project, pipeline.as_deref()).await?))
}

/// Replaces a leading `~` of a typed path with the user's home folder, as
/// a shell does, because the app runs on the user's own machine. `~user`
/// stays as typed.
fn expand_home(typed: &str, home: Option<&Path>) -> PathBuf {
    let rest = match typed.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest.trim_start_matches('/'),
        _ => return PathBuf::from(typed),
    };
    match home {
        Some(home) if rest.is_empty() => home.to_owned(),
        Some(home) => home.join(rest),
        None => PathBuf::from(typed),
    }
}

async fn pick(
    State(app): State<Arc<AppState>>,
    Extension(desktop): Extension<Arc<DesktopState>>,
) -> Result<Json<Picked>, ApiError> {
    let Some(folder) = desktop.picker.pick_folder().await else {
        tracing::debug!("the folder dialog was cancelled");
        return Ok(Json(Picked { project: None }));
    };
    let project = check_project(&folder).map_err(|err| ApiError::unprocessable(err.to_string()))?;
    Ok(Json(Picked {
        project: Some(remember(&app, &project, None).await?),
    }))
}

/// `POST /api/v1/desktop/projects/forget`: takes a project off the recent
/// list, whether or not its folder still exists, and returns the list.
async fn forget(
    State(app): State<Arc<AppState>>,
    ApiJson(body): ApiJson<ForgetProject>,
) -> Result<Json<ProjectList>, ApiError> {
    if !app.store.remove_recent_project(&body.path).await? {
        return Err(ApiError::not_found(format!(
            "`{}` is not among the recent projects; list them with GET /api/v1/desktop/projects",
            body.path
        )));
    }
    recent(State(app)).await
}

/// Reads the kubeconfig on every call, so contexts added while the app
/// runs show up.
async fn list_targets(Extension(desktop): Extension<Arc<DesktopState>>) -> Json<TargetList> {
    Json(targets::list(desktop.kubeconfig.as_deref()))
}

/// Records `project` (canonical) as opened now and returns it as listed.
async fn remember(
    app: &AppState,
    project: &Path,
    pipeline: Option<&str>,
) -> Result<Project, ApiError> {
    let path = project.display().to_string();
    app.store
        .touch_recent_project(&path, pipeline, danube::model::now_millis())
        .await?;
    tracing::info!(project = %path, "project opened");
    find_recent(app, project).await
}

async fn find_recent(app: &AppState, project: &Path) -> Result<Project, ApiError> {
    let path = project.display().to_string();
    let recent = app
        .store
        .list_recent_projects(RECENT_LIMIT)
        .await?
        .into_iter()
        .find(|recent| recent.path == path)
        .unwrap_or(RecentProject {
            path,
            pipeline: None,
            opened_at: danube::model::now_millis(),
        });
    Ok(recent.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expand_home_replaces_leading_tilde() {
        let home = Path::new("/home/me");

        assert_eq!(
            expand_home("~/src/app", Some(home)),
            Path::new("/home/me/src/app")
        );
        assert_eq!(expand_home("~", Some(home)), Path::new("/home/me"));
        assert_eq!(expand_home("~/", Some(home)), Path::new("/home/me"));
    }

    #[test]
    fn expand_home_keeps_other_paths() {
        let home = Path::new("/home/me");

        assert_eq!(
            expand_home("/srv/~/app", Some(home)),
            Path::new("/srv/~/app")
        );
        assert_eq!(
            expand_home("~other/app", Some(home)),
            Path::new("~other/app")
        );
        assert_eq!(expand_home("src/app", Some(home)), Path::new("src/app"));
        assert_eq!(expand_home("~/app", None), Path::new("~/app"));
    }
}
