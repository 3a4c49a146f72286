use std::collections::BTreeSet;
use std::time::Instant;

use tempfile::TempDir;

use super::*;

/// Opens a store on a fresh database file in its own temporary directory.
async fn temp_store() -> (TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("danube.db")).await.unwrap();
    (dir, store)
}

fn new_job(id: &str, created_at: UnixMillis) -> NewJob {
    NewJob {
        id: JobId(id.to_owned()),
        pipeline: "build".to_owned(),
        project_dir: "/home/dev/project".to_owned(),
        trigger_type: TriggerType::Local,
        trigger_ref: "cli".to_owned(),
        repo: "https://example.invalid/project.git".to_owned(),
        branch: "main".to_owned(),
        commit_sha: "0123456789abcdef0123456789abcdef01234567".to_owned(),
        created_at,
        target: None,
    }
}

async fn insert_new_job(store: &Store) -> JobId {
    let id = JobId::new();
    store
        .insert_job(&new_job(id.as_str(), now_millis()))
        .await
        .unwrap();
    id
}

fn new_step(job: &JobId, name: &str, started_at: UnixMillis) -> NewStep {
    NewStep {
        job_id: job.clone(),
        task: "main".to_owned(),
        name: name.to_owned(),
        command: format!("echo {name}"),
        image: None,
        started_at,
    }
}

fn task(name: &str, needs: &[&str]) -> NewTask {
    NewTask {
        name: name.to_owned(),
        needs: needs.iter().map(|need| (*need).to_owned()).collect(),
        image: None,
    }
}

fn secret(id: &str, scope: &str, key: &str, blob: &[u8], at: UnixMillis) -> SecretRecord {
    SecretRecord {
        id: id.to_owned(),
        scope: scope.to_owned(),
        key: key.to_owned(),
        blob: blob.to_vec(),
        created_at: at,
        updated_at: at,
    }
}

async fn pragma(store: &Store, name: &str) -> String {
    let value: sqlx::sqlite::SqliteRow = sqlx::query(&format!("PRAGMA {name}"))
        .fetch_one(&store.pool)
        .await
        .unwrap();
    use sqlx::Row;
    value
        .try_get::<String, _>(0)
        .or_else(|_| value.try_get::<i64, _>(0).map(|number| number.to_string()))
        .unwrap()
}

#[tokio::test]
async fn open_creates_every_table() {
    let (_dir, store) = temp_store().await;

    let tables: BTreeSet<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '_sqlx_migrations'",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap()
    .into_iter()
    .collect();

    let expected: BTreeSet<String> = [
        "users",
        "teams",
        "team_members",
        "pipelines",
        "pipeline_permissions",
        "jobs",
        "tasks",
        "steps",
        "secrets",
        "artifacts",
        "api_tokens",
        "audit_events",
        "settings",
        "recent_projects",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(tables, expected);
}

#[tokio::test]
async fn open_sets_connection_pragmas() {
    let (_dir, store) = temp_store().await;

    assert_eq!(pragma(&store, "journal_mode").await, "wal");
    assert_eq!(pragma(&store, "foreign_keys").await, "1");
    assert_eq!(pragma(&store, "busy_timeout").await, "5000");
    // 1 is NORMAL.
    assert_eq!(pragma(&store, "synchronous").await, "1");
}

#[tokio::test]
async fn reopening_keeps_data_and_applies_no_migration_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("danube.db");
    let store = Store::open(&path).await.unwrap();
    let id = insert_new_job(&store).await;
    store.pool.close().await;

    let store = Store::open(&path).await.unwrap();

    assert_eq!(store.find_job(id.as_str()).await.unwrap().id, id);
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(applied, i64::try_from(MIGRATOR.iter().count()).unwrap());
}

#[tokio::test]
async fn watch_migration_keeps_rows_that_reference_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("danube.db");
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .foreign_keys(true);
    let old_schema = sqlx::migrate::Migrator {
        migrations: std::borrow::Cow::Owned(MIGRATOR.migrations[..1].to_vec()),
        ..sqlx::migrate::Migrator::DEFAULT
    };
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    old_schema.run(&pool).await.unwrap();
    let old = Store { pool };
    // Written as the first schema's columns, since `insert_job` now also
    // writes columns of later migrations.
    let id = JobId::new();
    sqlx::query(
        "INSERT INTO jobs (id, pipeline, project_dir, state, trigger_type, trigger_ref, \
         repo, branch, commit_sha, created_at) \
         VALUES (?1, 'build', '/p', 'pending', 'local', 'main', '/p', 'main', '', 1)",
    )
    .bind(id.as_str())
    .execute(&old.pool)
    .await
    .unwrap();
    old.insert_tasks(&id, &[task("main", &[])]).await.unwrap();
    old.insert_step(&new_step(&id, "compile", 1)).await.unwrap();
    old.pool.close().await;

    let store = Store::open(&path).await.unwrap();

    assert_eq!(store.list_tasks(&id).await.unwrap().len(), 1);
    assert_eq!(store.list_steps(&id).await.unwrap().len(), 1);
    let mut watch_job = new_job(&JobId::new().0, now_millis());
    watch_job.trigger_type = TriggerType::Watch;
    watch_job.trigger_ref = "src/x.py".to_owned();
    store.insert_job(&watch_job).await.unwrap();
    let found = store.find_job(watch_job.id.as_str()).await.unwrap();
    assert_eq!(found.trigger_type, TriggerType::Watch);
    assert_eq!(found.trigger_ref, "src/x.py");
    assert_eq!(found.target, None);
    let mut kube_job = new_job(&JobId::new().0, now_millis());
    kube_job.target = Some("kube:kind-dev".to_owned());
    store.insert_job(&kube_job).await.unwrap();
    let found = store.find_job(kube_job.id.as_str()).await.unwrap();
    assert_eq!(found.target.as_deref(), Some("kube:kind-dev"));
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name = 'jobs' \
         AND name NOT LIKE 'sqlite_%' ORDER BY name",
    )
    .fetch_all(&store.pool)
    .await
    .unwrap();
    assert_eq!(
        indexes,
        ["jobs_by_created_at", "jobs_by_pipeline", "jobs_by_state"]
    );

    // Foreign keys are back on and still point at the rebuilt table.
    sqlx::query("DELETE FROM jobs WHERE id = ?1")
        .bind(id.as_str())
        .execute(&store.pool)
        .await
        .unwrap();
    assert!(store.list_tasks(&id).await.unwrap().is_empty());
    assert!(store.list_steps(&id).await.unwrap().is_empty());
}

#[tokio::test]
async fn open_non_sqlite_file_names_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("danube.db");
    std::fs::write(&path, "this is a text file, not a database\n".repeat(200)).unwrap();

    let error = Store::open(&path).await.unwrap_err();

    assert!(
        matches!(error, StoreError::NotADatabase { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&format!("`{}`", path.display())),
        "{message}"
    );
    assert!(message.contains("--data-dir"), "{message}");
}

#[tokio::test]
async fn open_database_of_newer_danube_is_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("danube.db");
    let store = Store::open(&path).await.unwrap();
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', 1, x'00', 0)",
    )
    .execute(&store.pool)
    .await
    .unwrap();
    store.pool.close().await;

    let error = Store::open(&path).await.unwrap_err();

    assert!(
        matches!(error, StoreError::DatabaseTooNew { version: 9999, .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("upgrade danube"), "{error}");
}

#[tokio::test]
async fn job_round_trips() {
    let (_dir, store) = temp_store().await;
    let new = new_job("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 1_700_000_000_123);

    store.insert_job(&new).await.unwrap();
    let job = store.find_job(new.id.as_str()).await.unwrap();

    assert_eq!(job.id, new.id);
    assert_eq!(job.pipeline, new.pipeline);
    assert_eq!(job.project_dir, new.project_dir);
    assert_eq!(job.state, JobState::Pending);
    assert_eq!(job.reason, None);
    assert_eq!(job.trigger_type, TriggerType::Local);
    assert_eq!(job.trigger_ref, new.trigger_ref);
    assert_eq!(job.repo, new.repo);
    assert_eq!(job.branch, new.branch);
    assert_eq!(job.commit_sha, new.commit_sha);
    assert_eq!(job.created_at, 1_700_000_000_123);
    assert_eq!(job.started_at, None);
    assert_eq!(job.finished_at, None);
}

#[tokio::test]
async fn duplicate_job_id_is_rejected() {
    let (_dir, store) = temp_store().await;
    let new = new_job("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", 1);
    store.insert_job(&new).await.unwrap();

    let error = store.insert_job(&new).await.unwrap_err();

    assert!(matches!(error, StoreError::InsertJob { .. }), "{error:?}");
}

#[tokio::test]
async fn set_job_pipeline_updates_name() {
    let (_dir, store) = temp_store().await;
    let id = insert_new_job(&store).await;

    store.set_job_pipeline(&id, "web").await.unwrap();

    assert_eq!(store.find_job(id.as_str()).await.unwrap().pipeline, "web");
}

#[tokio::test]
async fn set_job_pipeline_of_missing_job_fails() {
    let (_dir, store) = temp_store().await;
    let missing = JobId::new();

    let error = store.set_job_pipeline(&missing, "web").await.unwrap_err();

    assert!(
        matches!(&error, StoreError::JobNotFound(id) if *id == missing.0),
        "{error:?}"
    );
}

#[tokio::test]
async fn job_states_set_timestamps() {
    let (_dir, store) = temp_store().await;
    let id = insert_new_job(&store).await;
    let before = now_millis();

    store
        .set_job_state(&id, JobState::Scheduling, None)
        .await
        .unwrap();
    let scheduling = store.find_job(id.as_str()).await.unwrap();
    assert_eq!(scheduling.state, JobState::Scheduling);
    let started_at = scheduling.started_at.expect("scheduling sets started_at");
    assert!(started_at >= before);
    assert_eq!(scheduling.finished_at, None);

    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .set_job_state(&id, JobState::Running, None)
        .await
        .unwrap();
    let running = store.find_job(id.as_str()).await.unwrap();
    assert_eq!(running.state, JobState::Running);
    assert_eq!(running.started_at, Some(started_at), "kept from scheduling");
    assert_eq!(running.finished_at, None);

    store
        .set_job_state(&id, JobState::Failure, Some("task `test` failed"))
        .await
        .unwrap();
    let failed = store.find_job(id.as_str()).await.unwrap();
    assert_eq!(failed.state, JobState::Failure);
    assert_eq!(failed.reason.as_deref(), Some("task `test` failed"));
    let finished_at = failed.finished_at.expect("a final state sets finished_at");
    assert!(finished_at >= started_at);
}

#[tokio::test]
async fn job_running_without_scheduling_sets_started_at() {
    let (_dir, store) = temp_store().await;
    let id = insert_new_job(&store).await;

    store
        .set_job_state(&id, JobState::Running, None)
        .await
        .unwrap();

    assert!(
        store
            .find_job(id.as_str())
            .await
            .unwrap()
            .started_at
            .is_some()
    );
}

#[tokio::test]
async fn job_cancelled_while_pending_has_no_start() {
    let (_dir, store) = temp_store().await;
    let id = insert_new_job(&store).await;

    store
        .set_job_state(&id, JobState::Cancelled, Some("cancelled by user"))
        .await
        .unwrap();

    let job = store.find_job(id.as_str()).await.unwrap();
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.started_at, None);
    assert!(job.finished_at.is_some());
}

#[tokio::test]
async fn job_reason_kept_when_none_given() {
    let (_dir, store) = temp_store().await;
    let id = insert_new_job(&store).await;

    store
        .set_job_state(&id, JobState::Scheduling, Some("waiting for the workspace"))
        .await
        .unwrap();
    store
        .set_job_state(&id, JobState::Running, None)
        .await
        .unwrap();

    let job = store.find_job(id.as_str()).await.unwrap();
    assert_eq!(job.reason.as_deref(), Some("waiting for the workspace"));
}

#[tokio::test]
async fn final_job_state_never_changes() {
    let (_dir, store) = temp_store().await;
    let id = insert_new_job(&store).await;
    store
        .set_job_state(&id, JobState::Success, None)
        .await
        .unwrap();
    let finished_at = store.find_job(id.as_str()).await.unwrap().finished_at;

    tokio::time::sleep(Duration::from_millis(5)).await;
    store
        .set_job_state(&id, JobState::Cancelled, Some("too late"))
        .await
        .unwrap();
    store
        .set_job_state(&id, JobState::Running, None)
        .await
        .unwrap();

    let job = store.find_job(id.as_str()).await.unwrap();
    assert_eq!(job.state, JobState::Success);
    assert_eq!(job.reason, None);
    assert_eq!(job.finished_at, finished_at);
}

#[tokio::test]
async fn set_job_state_of_missing_job_fails() {
    let (_dir, store) = temp_store().await;

    let error = store
        .set_job_state(&JobId::new(), JobState::Running, None)
        .await
        .unwrap_err();

    assert!(matches!(error, StoreError::JobNotFound(_)), "{error:?}");
}

#[tokio::test]
async fn list_jobs_newest_first_up_to_limit() {
    let (_dir, store) = temp_store().await;
    let ids = [
        "00000000-0000-7000-8000-000000000001",
        "00000000-0000-7000-8000-000000000002",
        "00000000-0000-7000-8000-000000000003",
        "00000000-0000-7000-8000-000000000004",
    ];
    // Inserted out of order; the last two share a creation time.
    for (id, created_at) in [(ids[2], 300), (ids[0], 100), (ids[3], 300), (ids[1], 200)] {
        store.insert_job(&new_job(id, created_at)).await.unwrap();
    }

    let listed: Vec<String> = store
        .list_jobs(3)
        .await
        .unwrap()
        .into_iter()
        .map(|job| job.id.0)
        .collect();

    assert_eq!(listed, [ids[3], ids[2], ids[1]]);
    assert_eq!(store.list_jobs(10).await.unwrap().len(), 4);
    assert!(store.list_jobs(0).await.unwrap().is_empty());
}

#[tokio::test]
async fn find_job_by_unique_prefix() {
    let (_dir, store) = temp_store().await;
    for id in [
        "0190aaaa-0000-7000-8000-000000000001",
        "0190bbbb-0000-7000-8000-000000000002",
    ] {
        store.insert_job(&new_job(id, 1)).await.unwrap();
    }

    let job = store.find_job("0190b").await.unwrap();

    assert_eq!(job.id.as_str(), "0190bbbb-0000-7000-8000-000000000002");
}

#[tokio::test]
async fn find_job_ignores_case_and_whitespace() {
    let (_dir, store) = temp_store().await;
    store
        .insert_job(&new_job("0190abcd-0000-7000-8000-000000000001", 1))
        .await
        .unwrap();

    let job = store.find_job("  0190ABCD\n").await.unwrap();

    assert_eq!(job.id.as_str(), "0190abcd-0000-7000-8000-000000000001");
}

#[tokio::test]
async fn find_job_with_ambiguous_prefix_lists_candidates() {
    let (_dir, store) = temp_store().await;
    let ids = [
        "0190aaaa-0000-7000-8000-000000000001",
        "0190aaab-0000-7000-8000-000000000002",
        "0190bbbb-0000-7000-8000-000000000003",
    ];
    for id in ids {
        store.insert_job(&new_job(id, 1)).await.unwrap();
    }

    let error = store.find_job("0190aa").await.unwrap_err();

    match &error {
        StoreError::AmbiguousJobId { prefix, matches } => {
            assert_eq!(prefix, "0190aa");
            assert_eq!(matches, &[ids[0], ids[1]]);
        }
        other => panic!("expected AmbiguousJobId, got {other:?}"),
    }
    let message = error.to_string();
    assert!(message.contains(ids[0]), "{message}");
    assert!(message.contains(ids[1]), "{message}");
}

#[tokio::test]
async fn find_job_lists_at_most_ten_candidates() {
    let (_dir, store) = temp_store().await;
    for index in 0..15 {
        let id = format!("0190aaaa-0000-7000-8000-{index:012}");
        store.insert_job(&new_job(&id, 1)).await.unwrap();
    }

    let error = store.find_job("0190").await.unwrap_err();

    match error {
        StoreError::AmbiguousJobId { matches, .. } => assert_eq!(matches.len(), 10),
        other => panic!("expected AmbiguousJobId, got {other:?}"),
    }
}

#[tokio::test]
async fn find_job_without_match_fails() {
    let (_dir, store) = temp_store().await;
    store
        .insert_job(&new_job("0190aaaa-0000-7000-8000-000000000001", 1))
        .await
        .unwrap();

    let error = store.find_job("0190b").await.unwrap_err();

    assert!(
        matches!(&error, StoreError::JobNotFound(text) if text == "0190b"),
        "{error:?}"
    );
}

#[tokio::test]
async fn find_job_rejects_short_prefix() {
    let (_dir, store) = temp_store().await;
    store
        .insert_job(&new_job("0190aaaa-0000-7000-8000-000000000001", 1))
        .await
        .unwrap();

    let error = store.find_job("019").await.unwrap_err();

    assert!(
        matches!(error, StoreError::JobIdTooShort { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("at least 4 characters"),
        "{error}"
    );
    assert!(matches!(
        store.find_job("").await.unwrap_err(),
        StoreError::JobIdTooShort { .. }
    ));
}

#[tokio::test]
async fn find_job_treats_like_wildcards_literally() {
    let (_dir, store) = temp_store().await;
    store
        .insert_job(&new_job("0190aaaa-0000-7000-8000-000000000001", 1))
        .await
        .unwrap();

    for pattern in ["019%", "0190____", "%%%%"] {
        let error = store.find_job(pattern).await.unwrap_err();
        assert!(
            matches!(error, StoreError::JobNotFound(_)),
            "{pattern}: {error:?}"
        );
    }
}

#[tokio::test]
async fn tasks_round_trip_in_declaration_order() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;
    let mut package = task("package", &["lint", "test"]);
    package.image = Some("python:3.12".to_owned());
    let plan = [
        task("install", &[]),
        task("lint", &["install"]),
        task("test", &["install"]),
        package,
    ];

    store.insert_tasks(&job, &plan).await.unwrap();
    let tasks = store.list_tasks(&job).await.unwrap();

    let names: Vec<&str> = tasks.iter().map(|task| task.name.as_str()).collect();
    assert_eq!(names, ["install", "lint", "test", "package"]);
    let positions: Vec<i64> = tasks.iter().map(|task| task.position).collect();
    assert_eq!(positions, [0, 1, 2, 3]);
    assert_eq!(tasks[3].needs, ["lint", "test"]);
    assert_eq!(tasks[3].image.as_deref(), Some("python:3.12"));
    assert!(tasks[0].needs.is_empty());
    for task in &tasks {
        assert_eq!(task.job_id, job);
        assert_eq!(task.state, RunState::Pending);
        assert_eq!(task.error, None);
        assert_eq!(task.started_at, None);
        assert_eq!(task.finished_at, None);
    }
}

#[tokio::test]
async fn duplicate_task_name_records_no_task() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;

    let error = store
        .insert_tasks(&job, &[task("build", &[]), task("build", &[])])
        .await
        .unwrap_err();

    assert!(matches!(error, StoreError::InsertTasks { .. }), "{error:?}");
    assert!(store.list_tasks(&job).await.unwrap().is_empty());
}

#[tokio::test]
async fn tasks_of_missing_job_are_rejected() {
    let (_dir, store) = temp_store().await;

    let error = store
        .insert_tasks(&JobId::new(), &[task("build", &[])])
        .await
        .unwrap_err();

    assert!(matches!(error, StoreError::JobNotFound(_)), "{error:?}");
}

#[tokio::test]
async fn task_states_set_timestamps() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;
    store
        .insert_tasks(&job, &[task("test", &[]), task("deploy", &["test"])])
        .await
        .unwrap();

    store
        .set_task_state(&job, "test", RunState::Running, None)
        .await
        .unwrap();
    let running = &store.list_tasks(&job).await.unwrap()[0];
    assert_eq!(running.state, RunState::Running);
    assert!(running.started_at.is_some());
    assert_eq!(running.finished_at, None);

    store
        .set_task_state(
            &job,
            "test",
            RunState::Failure,
            Some("step `unit` exited with 1"),
        )
        .await
        .unwrap();
    store
        .set_task_state(&job, "deploy", RunState::Skipped, None)
        .await
        .unwrap();
    let tasks = store.list_tasks(&job).await.unwrap();
    assert_eq!(tasks[0].state, RunState::Failure);
    assert_eq!(tasks[0].error.as_deref(), Some("step `unit` exited with 1"));
    assert!(tasks[0].finished_at >= tasks[0].started_at);
    assert_eq!(tasks[1].state, RunState::Skipped);
    assert_eq!(tasks[1].started_at, None);
    assert!(tasks[1].finished_at.is_some());
}

#[tokio::test]
async fn final_task_state_never_changes() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;
    store
        .insert_tasks(&job, &[task("test", &[])])
        .await
        .unwrap();
    store
        .set_task_state(&job, "test", RunState::Success, None)
        .await
        .unwrap();

    store
        .set_task_state(&job, "test", RunState::Cancelled, Some("late cancel"))
        .await
        .unwrap();

    let task = &store.list_tasks(&job).await.unwrap()[0];
    assert_eq!(task.state, RunState::Success);
    assert_eq!(task.error, None);
}

#[tokio::test]
async fn set_state_of_missing_task_fails() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;

    let error = store
        .set_task_state(&job, "nope", RunState::Running, None)
        .await
        .unwrap_err();

    assert!(
        matches!(&error, StoreError::TaskNotFound { task, .. } if task == "nope"),
        "{error:?}"
    );
}

#[tokio::test]
async fn steps_round_trip() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;
    let mut build = new_step(&job, "build", 1_000);
    build.image = Some("rust:1".to_owned());

    let id = store.insert_step(&build).await.unwrap();
    let running = store.list_steps(&job).await.unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(running[0].id, id);
    assert_eq!(running[0].state, RunState::Running);
    assert_eq!(running[0].exit_code, None);
    assert_eq!(running[0].finished_at, None);

    store
        .finish_step(id, RunState::Failure, Some(2))
        .await
        .unwrap();
    let steps = store.list_steps(&job).await.unwrap();

    let step = &steps[0];
    assert_eq!(step.id, id);
    assert_eq!(step.job_id, job);
    assert_eq!(step.task, "main");
    assert_eq!(step.name, "build");
    assert_eq!(step.command, "echo build");
    assert_eq!(step.image.as_deref(), Some("rust:1"));
    assert_eq!(step.state, RunState::Failure);
    assert_eq!(step.exit_code, Some(2));
    assert_eq!(step.started_at, 1_000);
    assert!(step.finished_at.is_some());
}

#[tokio::test]
async fn steps_listed_in_start_order() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;
    let other_job = insert_new_job(&store).await;

    let late = store
        .insert_step(&new_step(&job, "late", 300))
        .await
        .unwrap();
    let early = store
        .insert_step(&new_step(&job, "early", 100))
        .await
        .unwrap();
    let tied = store
        .insert_step(&new_step(&job, "tied", 300))
        .await
        .unwrap();
    store
        .insert_step(&new_step(&other_job, "elsewhere", 200))
        .await
        .unwrap();

    let ids: Vec<i64> = store
        .list_steps(&job)
        .await
        .unwrap()
        .iter()
        .map(|step| step.id)
        .collect();

    assert!(early > late, "ids increase with insertion");
    assert!(tied > early, "ids increase with insertion");
    assert_eq!(ids, [early, late, tied]);
}

#[tokio::test]
async fn steps_of_missing_job_are_rejected() {
    let (_dir, store) = temp_store().await;

    let error = store
        .insert_step(&new_step(&JobId::new(), "orphan", 1))
        .await
        .unwrap_err();

    assert!(matches!(error, StoreError::JobNotFound(_)), "{error:?}");
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM steps")
        .fetch_one(&store.pool)
        .await
        .unwrap();
    assert_eq!(count, 0);
}

#[tokio::test]
async fn restarted_step_counts_attempts_and_runs_again() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;
    let id = store
        .insert_step(&new_step(&job, "test", 1_000))
        .await
        .unwrap();
    assert_eq!(store.list_steps(&job).await.unwrap()[0].attempt, 1);
    store
        .finish_step(id, RunState::Failure, Some(1))
        .await
        .unwrap();

    let attempt = store.restart_step(id).await.unwrap();

    assert_eq!(attempt, 2);
    let step = &store.list_steps(&job).await.unwrap()[0];
    assert_eq!(step.attempt, 2);
    assert_eq!(step.state, RunState::Running);
    assert_eq!(step.exit_code, None);
    assert_eq!(step.finished_at, None);
    assert_eq!(step.started_at, 1_000);
}

#[tokio::test]
async fn restart_missing_step_fails() {
    let (_dir, store) = temp_store().await;

    let error = store.restart_step(42).await.unwrap_err();

    assert!(matches!(error, StoreError::StepNotFound(42)), "{error:?}");
}

#[tokio::test]
async fn finish_missing_step_fails() {
    let (_dir, store) = temp_store().await;

    let error = store
        .finish_step(42, RunState::Success, Some(0))
        .await
        .unwrap_err();

    assert!(matches!(error, StoreError::StepNotFound(42)), "{error:?}");
}

#[tokio::test]
async fn deleting_job_deletes_its_rows() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;
    store
        .insert_tasks(&job, &[task("main", &[])])
        .await
        .unwrap();
    store
        .insert_step(&new_step(&job, "build", 1))
        .await
        .unwrap();

    sqlx::query("DELETE FROM jobs WHERE id = ?1")
        .bind(job.as_str())
        .execute(&store.pool)
        .await
        .unwrap();

    assert!(store.list_tasks(&job).await.unwrap().is_empty());
    assert!(store.list_steps(&job).await.unwrap().is_empty());
}

#[tokio::test]
async fn check_constraints_reject_unknown_state() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;

    let result = sqlx::query("UPDATE jobs SET state = 'exploded' WHERE id = ?1")
        .bind(job.as_str())
        .execute(&store.pool)
        .await;

    let error = result.unwrap_err();
    assert!(
        error
            .as_database_error()
            .is_some_and(|error| error.is_check_violation()),
        "{error:?}"
    );
}

#[tokio::test]
async fn unknown_state_in_row_is_invalid_row() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;
    // A single connection, so the pragma applies to the update that follows.
    let mut connection = store.pool.acquire().await.unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = ON")
        .execute(&mut *connection)
        .await
        .unwrap();
    sqlx::query("UPDATE jobs SET state = 'exploded' WHERE id = ?1")
        .bind(job.as_str())
        .execute(&mut *connection)
        .await
        .unwrap();
    sqlx::query("PRAGMA ignore_check_constraints = OFF")
        .execute(&mut *connection)
        .await
        .unwrap();
    drop(connection);

    let error = store.find_job(job.as_str()).await.unwrap_err();

    assert!(
        matches!(
            error,
            StoreError::InvalidRow {
                table: "jobs",
                column: "state",
                ..
            }
        ),
        "{error:?}"
    );
}

fn artifact(job: &JobId, name: &str, created_at: UnixMillis) -> ArtifactRecord {
    ArtifactRecord {
        job_id: job.clone(),
        name: name.to_owned(),
        kind: "directory".to_owned(),
        size_bytes: 2048,
        sha256: "ab".repeat(32),
        source_path: format!("{name}/"),
        task: "test".to_owned(),
        created_at,
    }
}

#[tokio::test]
async fn artifacts_round_trip_in_record_order() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;
    let coverage = artifact(&job, "coverage", 200);
    let dist = artifact(&job, "dist", 100);

    store.insert_artifact(&coverage).await.unwrap();
    store.insert_artifact(&dist).await.unwrap();
    let artifacts = store.list_artifacts(&job).await.unwrap();

    let names: Vec<&str> = artifacts.iter().map(|item| item.name.as_str()).collect();
    assert_eq!(names, ["dist", "coverage"]);
    let stored = &artifacts[1];
    assert_eq!(stored.job_id, job);
    assert_eq!(stored.kind, "directory");
    assert_eq!(stored.size_bytes, 2048);
    assert_eq!(stored.sha256, coverage.sha256);
    assert_eq!(stored.source_path, "coverage/");
    assert_eq!(stored.task, "test");
    assert_eq!(stored.created_at, 200);
}

#[tokio::test]
async fn duplicate_artifact_name_is_rejected() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;
    store
        .insert_artifact(&artifact(&job, "dist", 1))
        .await
        .unwrap();

    let error = store
        .insert_artifact(&artifact(&job, "dist", 2))
        .await
        .unwrap_err();

    assert!(
        matches!(error, StoreError::ArtifactExists { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn artifact_of_missing_job_is_rejected() {
    let (_dir, store) = temp_store().await;

    let error = store
        .insert_artifact(&artifact(&JobId::new(), "dist", 1))
        .await
        .unwrap_err();

    assert!(matches!(error, StoreError::JobNotFound(_)), "{error:?}");
}

#[tokio::test]
async fn secrets_round_trip() {
    let (_dir, store) = temp_store().await;
    let blob = vec![7_u8; 40];

    store
        .put_secret(&secret("id-1", "global", "TOKEN", &blob, 10))
        .await
        .unwrap();
    let stored = store.get_secret("global", "TOKEN").await.unwrap().unwrap();

    assert_eq!(stored.id, "id-1");
    assert_eq!(stored.scope, "global");
    assert_eq!(stored.key, "TOKEN");
    assert_eq!(stored.blob, blob);
    assert_eq!(stored.created_at, 10);
    assert_eq!(stored.updated_at, 10);
    assert!(
        store
            .get_secret("pipeline:web", "TOKEN")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn put_secret_replaces_blob_and_keeps_created_at() {
    let (_dir, store) = temp_store().await;
    store
        .put_secret(&secret("id-1", "global", "TOKEN", &[1; 30], 10))
        .await
        .unwrap();

    store
        .put_secret(&secret("id-2", "global", "TOKEN", &[2; 30], 20))
        .await
        .unwrap();

    let stored = store.get_secret("global", "TOKEN").await.unwrap().unwrap();
    assert_eq!(stored.id, "id-2");
    assert_eq!(stored.blob, [2; 30]);
    assert_eq!(stored.created_at, 10);
    assert_eq!(stored.updated_at, 20);
    assert_eq!(store.list_secrets().await.unwrap().len(), 1);
}

#[tokio::test]
async fn secrets_listed_by_scope_then_key() {
    let (_dir, store) = temp_store().await;
    for (id, scope, key) in [
        ("1", "pipeline:web", "B"),
        ("2", "global", "Z"),
        ("3", "pipeline:web", "A"),
        ("4", "global", "A"),
    ] {
        store
            .put_secret(&secret(id, scope, key, &[0; 28], 1))
            .await
            .unwrap();
    }

    let listed: Vec<(String, String)> = store
        .list_secrets()
        .await
        .unwrap()
        .into_iter()
        .map(|record| (record.scope, record.key))
        .collect();

    let expected = [
        ("global", "A"),
        ("global", "Z"),
        ("pipeline:web", "A"),
        ("pipeline:web", "B"),
    ]
    .map(|(scope, key)| (scope.to_owned(), key.to_owned()));
    assert_eq!(listed, expected);
}

#[tokio::test]
async fn delete_secret_reports_whether_it_existed() {
    let (_dir, store) = temp_store().await;
    store
        .put_secret(&secret("id-1", "global", "TOKEN", &[0; 28], 1))
        .await
        .unwrap();

    assert!(store.delete_secret("global", "TOKEN").await.unwrap());
    assert!(!store.delete_secret("global", "TOKEN").await.unwrap());
    assert!(store.get_secret("global", "TOKEN").await.unwrap().is_none());
}

#[tokio::test]
async fn secret_with_malformed_scope_is_rejected() {
    let (_dir, store) = temp_store().await;

    for scope in ["pipeline:", "team:web", ""] {
        let error = store
            .put_secret(&secret("id-1", scope, "TOKEN", &[0; 28], 1))
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::PutSecret { .. }),
            "{scope}: {error:?}"
        );
    }
}

#[tokio::test]
async fn audit_events_round_trip_newest_first() {
    let (_dir, store) = temp_store().await;
    let before = now_millis();

    store
        .record_audit_event("job:1", "secret.read", "TOKEN")
        .await
        .unwrap();
    store
        .record_audit_event("user:ana", "job.cancel", "job-2")
        .await
        .unwrap();
    let events = store.list_audit_events(10).await.unwrap();

    assert_eq!(events.len(), 2);
    assert_eq!(events[0].actor, "user:ana");
    assert_eq!(events[0].action, "job.cancel");
    assert_eq!(events[0].subject, "job-2");
    assert_eq!(events[1].actor, "job:1");
    assert_eq!(events[1].action, "secret.read");
    assert_eq!(events[1].subject, "TOKEN");
    assert!(events[1].at >= before);
    assert!(events[0].id > events[1].id);
    assert_eq!(store.list_audit_events(1).await.unwrap().len(), 1);
}

#[tokio::test]
async fn settings_round_trip() {
    let (_dir, store) = temp_store().await;

    assert_eq!(store.get_setting("draining").await.unwrap(), None);
    store.put_setting("draining", "true").await.unwrap();
    store.put_setting("draining", "false").await.unwrap();

    assert_eq!(
        store.get_setting("draining").await.unwrap().as_deref(),
        Some("false")
    );
}

/// Several processes may open a new data directory at the same moment, as
/// two `danube run` started together do. The race is short, so it is tried
/// many times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_opens_all_succeed() {
    for _ in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("danube.db");

        let (first, second, third) =
            tokio::join!(Store::open(&path), Store::open(&path), Store::open(&path));

        let first = first.unwrap();
        let second = second.unwrap();
        third.unwrap();
        let id = insert_new_job(&first).await;
        assert_eq!(second.find_job(id.as_str()).await.unwrap().id, id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_one_file_do_not_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("danube.db");
    let first = Store::open(&path).await.unwrap();
    let second = Store::open(&path).await.unwrap();
    const JOBS_PER_WRITER: usize = 10;
    const STEPS_PER_JOB: usize = 20;

    let write = |store: Store| async move {
        let mut handles = Vec::new();
        for _ in 0..JOBS_PER_WRITER {
            let store = store.clone();
            handles.push(tokio::spawn(async move {
                let job = insert_new_job(&store).await;
                store
                    .insert_tasks(&job, &[task("main", &[]), task("extra", &["main"])])
                    .await
                    .unwrap();
                store
                    .set_job_state(&job, JobState::Running, None)
                    .await
                    .unwrap();
                for index in 0..STEPS_PER_JOB {
                    let name = format!("step-{index}");
                    let step = store
                        .insert_step(&new_step(&job, &name, now_millis()))
                        .await
                        .unwrap();
                    store
                        .finish_step(step, RunState::Success, Some(0))
                        .await
                        .unwrap();
                }
                store
                    .set_job_state(&job, JobState::Success, None)
                    .await
                    .unwrap();
            }));
        }
        for handle in handles {
            handle.await.unwrap();
        }
    };
    tokio::join!(write(first.clone()), write(second.clone()));

    let jobs = first.list_jobs(100).await.unwrap();
    assert_eq!(jobs.len(), 2 * JOBS_PER_WRITER);
    for job in &jobs {
        assert_eq!(job.state, JobState::Success);
        assert_eq!(
            first.list_steps(&job.id).await.unwrap().len(),
            STEPS_PER_JOB
        );
        assert_eq!(second.list_tasks(&job.id).await.unwrap().len(), 2);
    }
}

/// Steps are recorded once per `step.run`, so recording one must stay far
/// below the time a command takes. The bound is loose (2 ms per step, in a
/// debug build) to hold on a busy CI machine.
#[tokio::test]
async fn recording_a_thousand_steps_is_cheap() {
    let (_dir, store) = temp_store().await;
    let job = insert_new_job(&store).await;
    const STEPS: u32 = 1_000;

    let start = Instant::now();
    for index in 0..STEPS {
        let step = store
            .insert_step(&new_step(&job, &format!("step-{index}"), now_millis()))
            .await
            .unwrap();
        store
            .finish_step(step, RunState::Success, Some(0))
            .await
            .unwrap();
    }
    let elapsed = start.elapsed();

    let per_step = elapsed / STEPS;
    eprintln!("insert_step + finish_step: {per_step:?} per step");
    assert!(per_step < Duration::from_millis(2), "{per_step:?} per step");
}

#[tokio::test]
async fn open_corrupted_database_names_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("danube.db");
    let store = Store::open(&path).await.unwrap();
    insert_new_job(&store).await;
    // Move every page from the WAL into the database file, so the damage
    // below is not hidden by newer copies of the page in the WAL.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&store.pool)
        .await
        .unwrap();
    store.pool.close().await;
    // Overwrite the schema page after the 100-byte file header, keeping the
    // header so SQLite still recognises the file as a database.
    let mut bytes = std::fs::read(&path).unwrap();
    for byte in &mut bytes[100..4096] {
        *byte = 0xEE;
    }
    std::fs::write(&path, &bytes).unwrap();

    let error = Store::open(&path).await.unwrap_err();

    assert!(
        matches!(error, StoreError::NotADatabase { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains(&format!("`{}`", path.display())),
        "{error}"
    );
}
