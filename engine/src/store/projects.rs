//! The desktop app's recent projects: folders it opened, newest first.

use super::{Store, StoreError};
use crate::model::UnixMillis;

/// A project folder the desktop app opened.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RecentProject {
    /// Canonical absolute path of the folder.
    pub path: String,
    /// The pipeline last chosen for it, when its file defines several.
    pub pipeline: Option<String>,
    pub opened_at: UnixMillis,
}

impl Store {
    /// Records that `path` was opened at `opened_at`, moving it to the top
    /// of [`Store::list_recent_projects`]. A `pipeline` of `None` keeps the
    /// one recorded before.
    pub async fn touch_recent_project(
        &self,
        path: &str,
        pipeline: Option<&str>,
        opened_at: UnixMillis,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO recent_projects (path, pipeline, opened_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (path) DO UPDATE SET \
                 pipeline = coalesce(excluded.pipeline, recent_projects.pipeline), \
                 opened_at = excluded.opened_at",
        )
        .bind(path)
        .bind(pipeline)
        .bind(opened_at)
        .execute(&self.pool)
        .await
        .map_err(|source| StoreError::PutRecentProject {
            path: path.to_owned(),
            source,
        })?;
        Ok(())
    }

    /// Lists up to `limit` recent projects, most recently opened first.
    pub async fn list_recent_projects(&self, limit: u32) -> Result<Vec<RecentProject>, StoreError> {
        let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
            "SELECT path, pipeline, opened_at FROM recent_projects \
             ORDER BY opened_at DESC, path LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(|source| StoreError::ListRecentProjects { source })?;
        Ok(rows
            .into_iter()
            .map(|(path, pipeline, opened_at)| RecentProject {
                path,
                pipeline,
                opened_at,
            })
            .collect())
    }

    /// Forgets a recent project; returns whether it was listed.
    pub async fn remove_recent_project(&self, path: &str) -> Result<bool, StoreError> {
        let result = sqlx::query("DELETE FROM recent_projects WHERE path = ?1")
            .bind(path)
            .execute(&self.pool)
            .await
            .map_err(|source| StoreError::RemoveRecentProject {
                path: path.to_owned(),
                source,
            })?;
        Ok(result.rows_affected() > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open_store(dir: &tempfile::TempDir) -> Store {
        Store::open(&dir.path().join("danube.db")).await.unwrap()
    }

    #[tokio::test]
    async fn recent_projects_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir).await;

        store
            .touch_recent_project("/src/a", None, 10)
            .await
            .unwrap();
        store
            .touch_recent_project("/src/b", None, 20)
            .await
            .unwrap();
        store
            .touch_recent_project("/src/a", None, 30)
            .await
            .unwrap();

        let paths: Vec<String> = store
            .list_recent_projects(10)
            .await
            .unwrap()
            .into_iter()
            .map(|project| project.path)
            .collect();
        assert_eq!(paths, ["/src/a", "/src/b"]);
        assert_eq!(store.list_recent_projects(1).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn reopening_keeps_chosen_pipeline() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir).await;

        store
            .touch_recent_project("/src/a", Some("release"), 10)
            .await
            .unwrap();
        store
            .touch_recent_project("/src/a", None, 20)
            .await
            .unwrap();

        let listed = store.list_recent_projects(10).await.unwrap();
        assert_eq!(
            listed,
            [RecentProject {
                path: "/src/a".to_owned(),
                pipeline: Some("release".to_owned()),
                opened_at: 20,
            }]
        );
    }

    #[tokio::test]
    async fn removed_project_leaves_list() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(&dir).await;
        store
            .touch_recent_project("/src/a", None, 10)
            .await
            .unwrap();

        assert!(store.remove_recent_project("/src/a").await.unwrap());
        assert!(!store.remove_recent_project("/src/a").await.unwrap());
        assert!(store.list_recent_projects(10).await.unwrap().is_empty());
    }
}
