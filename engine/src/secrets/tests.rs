use tempfile::TempDir;

use super::*;

/// Opens a vault on a fresh database and a fresh key file in one directory.
async fn temp_vault() -> (TempDir, SecretVault) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("danube.db")).await.unwrap();
    let cipher = Cipher::load_or_create(&dir.path().join("encryption.key")).unwrap();
    (dir, SecretVault::new(store, cipher))
}

fn web() -> Scope {
    Scope::Pipeline("web".to_owned())
}

async fn stored(vault: &SecretVault, scope: &Scope, key: &str) -> SecretRecord {
    vault
        .store
        .get_secret(&scope.as_db(), key)
        .await
        .unwrap()
        .expect("secret is stored")
}

#[test]
fn key_names_are_validated() {
    let long_valid = "K".repeat(128);
    let too_long = "K".repeat(129);
    let cases: &[(&str, bool)] = &[
        ("TOKEN", true),
        ("api_key", true),
        ("_PRIVATE", true),
        ("A1", true),
        ("x", true),
        (&long_valid, true),
        ("", false),
        (&too_long, false),
        ("1TOKEN", false),
        ("9", false),
        ("API-KEY", false),
        ("API KEY", false),
        ("API.KEY", false),
        ("KEY=VALUE", false),
        ("CLÉ", false),
        ("TAB\tKEY", false),
        ("NEWLINE\n", false),
    ];

    for (key, valid) in cases {
        let result = validate_key(key);
        assert_eq!(result.is_ok(), *valid, "{key:?}: {result:?}");
    }
}

#[test]
fn invalid_key_message_says_why_and_what_to_use() {
    let cases = [
        ("", "it is empty"),
        ("1TOKEN", "it starts with a digit"),
        ("API-KEY", "A-Z, a-z, 0-9 and _"),
    ];

    for (key, reason) in cases {
        let message = validate_key(key).unwrap_err().to_string();
        assert!(message.contains(&format!("`{key}`")), "{message}");
        assert!(message.contains(reason), "{message}");
        assert!(
            message.contains("1 to 128 letters, digits and underscores"),
            "{message}"
        );
    }
}

#[test]
fn invalid_key_message_shortens_long_keys() {
    let message = validate_key(&"K".repeat(500)).unwrap_err().to_string();

    assert!(
        message.contains(&format!("`{}…`", "K".repeat(64))),
        "{message}"
    );
    assert!(message.contains("it is too long"), "{message}");
}

#[test]
fn scope_round_trips_through_db_text() {
    for scope in [Scope::Global, web()] {
        assert_eq!(Scope::from_db(&scope.as_db()), Some(scope));
    }
    assert_eq!(Scope::from_db("pipeline:"), None);
    assert_eq!(Scope::from_db("team:web"), None);
}

#[tokio::test]
async fn set_then_read_round_trips() {
    let (_dir, vault) = temp_vault().await;

    vault
        .set(&Scope::Global, "TOKEN", b"hunter2")
        .await
        .unwrap();
    let value = vault
        .read_for_pipeline("web", "TOKEN", "job:1")
        .await
        .unwrap();

    assert_eq!(value.as_slice(), b"hunter2");
}

#[tokio::test]
async fn stored_blob_is_encrypted() {
    let (_dir, vault) = temp_vault().await;

    vault
        .set(&Scope::Global, "TOKEN", b"hunter2-plaintext")
        .await
        .unwrap();

    let record = stored(&vault, &Scope::Global, "TOKEN").await;
    assert_eq!(
        record.blob.len(),
        NONCE_LEN + b"hunter2-plaintext".len() + TAG_LEN
    );
    assert!(
        !record.blob.windows(7).any(|window| window == b"hunter2"),
        "plaintext found in the stored blob"
    );
}

#[tokio::test]
async fn new_secrets_get_distinct_random_ids() {
    let (_dir, vault) = temp_vault().await;

    vault.set(&Scope::Global, "FIRST", b"1").await.unwrap();
    vault.set(&Scope::Global, "SECOND", b"2").await.unwrap();

    let first = stored(&vault, &Scope::Global, "FIRST").await.id;
    let second = stored(&vault, &Scope::Global, "SECOND").await.id;
    assert_ne!(first, second);
    assert_eq!(first.len(), 32);
    assert!(first.chars().all(|character| character.is_ascii_hexdigit()));
}

#[tokio::test]
async fn updating_keeps_id_and_created_at() {
    let (_dir, vault) = temp_vault().await;
    vault.set(&web(), "TOKEN", b"old").await.unwrap();
    let before = stored(&vault, &web(), "TOKEN").await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;

    vault.set(&web(), "TOKEN", b"new").await.unwrap();

    let after = stored(&vault, &web(), "TOKEN").await;
    assert_eq!(after.id, before.id);
    assert_eq!(after.created_at, before.created_at);
    assert!(after.updated_at > before.updated_at);
    assert_ne!(after.blob, before.blob);
    let value = vault
        .read_for_pipeline("web", "TOKEN", "job:1")
        .await
        .unwrap();
    assert_eq!(value.as_slice(), b"new");
}

#[tokio::test]
async fn list_shows_keys_and_scopes_only() {
    let (_dir, vault) = temp_vault().await;
    vault.set(&web(), "DEPLOY", b"value-one").await.unwrap();
    vault
        .set(&Scope::Global, "TOKEN", b"value-two")
        .await
        .unwrap();

    let listed = vault.list().await.unwrap();

    let pairs: Vec<(&str, &str)> = listed
        .iter()
        .map(|info| (info.scope.as_str(), info.key.as_str()))
        .collect();
    assert_eq!(pairs, [("global", "TOKEN"), ("pipeline:web", "DEPLOY")]);
    let json = serde_json::to_string(&listed).unwrap();
    assert!(!json.contains("value-"), "{json}");
}

#[tokio::test]
async fn remove_reports_whether_it_existed() {
    let (_dir, vault) = temp_vault().await;
    vault.set(&web(), "TOKEN", b"hunter2").await.unwrap();

    assert!(!vault.remove(&Scope::Global, "TOKEN").await.unwrap());
    assert!(vault.remove(&web(), "TOKEN").await.unwrap());
    assert!(!vault.remove(&web(), "TOKEN").await.unwrap());

    let error = vault
        .read_for_pipeline("web", "TOKEN", "job:1")
        .await
        .unwrap_err();
    assert!(
        matches!(error, SecretsError::SecretNotFound { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn pipeline_secret_takes_precedence_over_global() {
    let (_dir, vault) = temp_vault().await;
    vault.set(&Scope::Global, "TOKEN", b"global").await.unwrap();
    vault.set(&web(), "TOKEN", b"web-only").await.unwrap();

    let for_web = vault
        .read_for_pipeline("web", "TOKEN", "job:1")
        .await
        .unwrap();
    let for_api = vault
        .read_for_pipeline("api", "TOKEN", "job:2")
        .await
        .unwrap();
    let undeclared = vault.read_for_pipeline("", "TOKEN", "job:3").await.unwrap();

    assert_eq!(for_web.as_slice(), b"web-only");
    assert_eq!(for_api.as_slice(), b"global");
    assert_eq!(undeclared.as_slice(), b"global");
}

#[tokio::test]
async fn pipeline_secret_is_invisible_to_other_pipelines() {
    let (_dir, vault) = temp_vault().await;
    vault.set(&web(), "DEPLOY", b"hunter2").await.unwrap();

    let error = vault
        .read_for_pipeline("api", "DEPLOY", "job:1")
        .await
        .unwrap_err();

    assert!(
        matches!(error, SecretsError::SecretNotFound { .. }),
        "{error:?}"
    );
}

#[tokio::test]
async fn missing_secret_message_gives_the_fix() {
    let (_dir, vault) = temp_vault().await;

    let for_web = vault
        .read_for_pipeline("web", "API_KEY", "job:1")
        .await
        .unwrap_err()
        .to_string();
    let undeclared = vault
        .read_for_pipeline("", "API_KEY", "job:1")
        .await
        .unwrap_err()
        .to_string();

    assert_eq!(
        for_web,
        "secret `API_KEY` not found for pipeline `web` or globally; add it with \
         `danube secret set API_KEY` or `danube secret set API_KEY --pipeline web`"
    );
    assert_eq!(
        undeclared,
        "secret `API_KEY` not found; add it with `danube secret set API_KEY`"
    );
}

#[tokio::test]
async fn read_records_audit_event() {
    let (_dir, vault) = temp_vault().await;
    vault
        .set(&Scope::Global, "TOKEN", b"hunter2")
        .await
        .unwrap();

    vault
        .read_for_pipeline("web", "TOKEN", "job:0190abcd")
        .await
        .unwrap();

    let events = vault.store.list_audit_events(10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].actor, "job:0190abcd");
    assert_eq!(events[0].action, "secret.read");
    assert_eq!(events[0].subject, "TOKEN");
}

#[tokio::test]
async fn failed_read_records_no_audit_event() {
    let (_dir, vault) = temp_vault().await;

    vault
        .read_for_pipeline("web", "TOKEN", "job:1")
        .await
        .unwrap_err();

    assert!(vault.store.list_audit_events(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn invalid_input_stores_nothing() {
    let (_dir, vault) = temp_vault().await;

    let bad_key = vault
        .set(&Scope::Global, "BAD-KEY", b"x")
        .await
        .unwrap_err();
    let empty_pipeline = vault
        .set(&Scope::Pipeline(String::new()), "TOKEN", b"x")
        .await
        .unwrap_err();
    let too_large = vault
        .set(&Scope::Global, "BIG", &vec![0; MAX_VALUE_BYTES + 1])
        .await
        .unwrap_err();

    assert!(
        matches!(bad_key, SecretsError::InvalidKey { .. }),
        "{bad_key:?}"
    );
    assert!(
        matches!(empty_pipeline, SecretsError::InvalidPipelineName(_)),
        "{empty_pipeline:?}"
    );
    assert!(
        matches!(too_large, SecretsError::ValueTooLarge { .. }),
        "{too_large:?}"
    );
    assert!(vault.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn value_at_size_limit_is_accepted() {
    let (_dir, vault) = temp_vault().await;

    vault
        .set(&Scope::Global, "BIG", &vec![0xA5; MAX_VALUE_BYTES])
        .await
        .unwrap();

    let value = vault.read_for_pipeline("", "BIG", "job:1").await.unwrap();
    assert_eq!(value.len(), MAX_VALUE_BYTES);
}

#[tokio::test]
async fn blob_copied_to_another_row_does_not_decrypt() {
    let (_dir, vault) = temp_vault().await;
    vault.set(&web(), "DEPLOY", b"hunter2").await.unwrap();
    let original = stored(&vault, &web(), "DEPLOY").await;

    // Copy the blob to a global secret of the same key, as someone with write
    // access to the database could, to widen who may read it.
    let copy = SecretRecord {
        id: "0123456789abcdef0123456789abcdef".to_owned(),
        scope: Scope::Global.as_db(),
        ..original
    };
    vault.store.put_secret(&copy).await.unwrap();
    let error = vault
        .read_for_pipeline("api", "DEPLOY", "job:1")
        .await
        .unwrap_err();

    assert!(
        matches!(error, SecretsError::DecryptSecret { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(!message.contains("hunter2"), "{message}");
    assert!(message.contains("`danube secret set DEPLOY`"), "{message}");
    assert!(vault.store.list_audit_events(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn secret_under_another_key_file_does_not_decrypt() {
    let (dir, vault) = temp_vault().await;
    vault.set(&web(), "DEPLOY", b"hunter2").await.unwrap();
    let other_cipher = Cipher::load_or_create(&dir.path().join("other.key")).unwrap();
    let other_vault = SecretVault::new(vault.store.clone(), other_cipher);

    let error = other_vault
        .read_for_pipeline("web", "DEPLOY", "job:1")
        .await
        .unwrap_err();

    assert!(
        matches!(error, SecretsError::DecryptSecret { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "failed to decrypt secret `DEPLOY` of pipeline `web`: the stored value is corrupted or \
         was encrypted under another key; store it again with \
         `danube secret set DEPLOY --pipeline web`"
    );
}

#[tokio::test]
async fn load_for_pipeline_merges_scopes_and_audits() {
    let (_dir, vault) = temp_vault().await;
    vault.set(&Scope::Global, "TOKEN", b"global").await.unwrap();
    vault
        .set(&Scope::Global, "SHARED", b"shared")
        .await
        .unwrap();
    vault.set(&web(), "TOKEN", b"web-only").await.unwrap();
    vault
        .set(&Scope::Pipeline("api".to_owned()), "API_ONLY", b"api")
        .await
        .unwrap();

    let loaded = vault.load_for_pipeline("web", "job:7").await.unwrap();

    let pairs: Vec<(&str, &[u8])> = loaded
        .iter()
        .map(|(key, value)| (key.as_str(), value.as_slice()))
        .collect();
    assert_eq!(
        pairs,
        [
            ("SHARED", b"shared".as_slice()),
            ("TOKEN", b"web-only".as_slice())
        ]
    );
    let events = vault.store.list_audit_events(10).await.unwrap();
    assert_eq!(events.len(), 2);
    for event in &events {
        assert_eq!(event.actor, "job:7");
        assert_eq!(event.action, AUDIT_SECRET_LOAD);
    }
}

#[tokio::test]
async fn load_for_undeclared_pipeline_reads_globals_only() {
    let (_dir, vault) = temp_vault().await;
    vault.set(&Scope::Global, "TOKEN", b"global").await.unwrap();
    vault.set(&web(), "DEPLOY", b"web-only").await.unwrap();

    let loaded = vault.load_for_pipeline("", "job:7").await.unwrap();

    let keys: Vec<&str> = loaded.iter().map(|(key, _)| key.as_str()).collect();
    assert_eq!(keys, ["TOKEN"]);
}
