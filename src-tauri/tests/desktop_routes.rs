//! The desktop app's own routes on the embedded engine, over loopback and
//! in headless Chromium as the window shows them. The target list follows
//! the kubeconfig while the app runs, and both run forms offer the targets.
//! Recent projects whose folder is gone are marked and can be removed.
//! The project page keeps each project's choices, and the header lists
//! the active watches with a Stop button.

use std::path::{Path, PathBuf};
use std::time::Duration;

use danube::backend::targets::TargetSettings;
use danube_tests::Sandbox;
use danube_tests::browser::{Browser, LaunchOptions, Site, wait_until};
use reqwest::StatusCode;
use reqwest::blocking::Response;
use serde_json::{Value, json};

/// Returns a kubeconfig with the contexts `names`, each for a cluster on a
/// loopback port that is never contacted.
fn kubeconfig(names: &[&str]) -> String {
    let mut text = String::from("apiVersion: v1\nkind: Config\nclusters:\n");
    for name in names {
        text.push_str(&format!(
            "- name: {name}\n  cluster: {{server: 'https://127.0.0.1:9'}}\n"
        ));
    }
    text.push_str("contexts:\n");
    for name in names {
        text.push_str(&format!(
            "- name: {name}\n  context: {{cluster: {name}, user: someone}}\n"
        ));
    }
    text.push_str("users:\n- name: someone\n  user: {token: not-a-secret}\n");
    text
}

mod common;

use common::TestApp as App;

/// Starts the app's engine with `kubeconfig`.
fn start_app(data_root: &Path, kubeconfig: &Path) -> App {
    let targets = TargetSettings {
        kubeconfig: Some(kubeconfig.to_owned()),
        ..TargetSettings::default()
    };
    App::start(data_root, targets, Duration::from_secs(30))
}

/// Posts `body` to `path` of the app's engine.
fn post(app: &App, path: &str, body: Value) -> Response {
    app.request(reqwest::Method::POST, path)
        .json(&body)
        .send()
        .unwrap()
}

fn open_project(app: &App, parent: &Path, name: &str) -> String {
    let project = parent.join(name);
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("danubefile.py"),
        "from danube import pipeline\n",
    )
    .unwrap();
    let opened = post(app, "/api/v1/desktop/projects", json!({"path": project}));
    assert_eq!(opened.status(), StatusCode::OK);
    opened.json::<Value>().unwrap()["path"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn target_ids(list: &Value) -> Vec<String> {
    list["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|target| target["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn context_added_while_app_runs_is_listed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    std::fs::write(&config, kubeconfig(&["kind-dev"])).unwrap();
    let app = start_app(&dir.path().join("data"), &config);
    assert_eq!(
        target_ids(&app.get("/api/v1/desktop/targets")),
        ["local", "kube:kind-dev"]
    );

    std::fs::write(&config, kubeconfig(&["kind-dev", "k3d-lab"])).unwrap();

    assert_eq!(
        target_ids(&app.get("/api/v1/desktop/targets")),
        ["local", "kube:kind-dev", "kube:k3d-lab"]
    );
}

#[test]
fn missing_recent_project_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("kubeconfig");
    std::fs::write(&config, kubeconfig(&["kind-dev"])).unwrap();
    let app = start_app(&dir.path().join("data"), &config);
    let path = open_project(&app, dir.path(), "gone");
    let project = PathBuf::from(&path);

    std::fs::remove_dir_all(&project).unwrap();

    let listed = app.get("/api/v1/desktop/projects");
    let entry = &listed["projects"][0];
    assert_eq!(entry["path"], path.as_str(), "{listed:#}");
    assert_eq!(entry["available"], false, "{listed:#}");
    let problem = entry["problem"].as_str().unwrap();
    assert!(problem.contains(&path), "{problem}");
    let forgotten = post(
        &app,
        "/api/v1/desktop/projects/forget",
        json!({"path": path}),
    );
    assert_eq!(forgotten.status(), StatusCode::OK);
    assert_eq!(forgotten.json::<Value>().unwrap()["projects"], json!([]));
    assert_eq!(app.get("/api/v1/desktop/projects")["projects"], json!([]));
    let again = post(
        &app,
        "/api/v1/desktop/projects/forget",
        json!({"path": path}),
    );
    assert_eq!(again.status(), StatusCode::NOT_FOUND);
}

/// How long the page gets to show what the test waits for.
const UI_TIMEOUT: Duration = Duration::from_secs(20);

/// Returns the values of the target choice's options.
async fn target_options(browser: &Browser) -> Vec<String> {
    let values = browser
        .eval(
            "return [...document.querySelectorAll('[data-testid=target-select] option')]\
             .map(option => option.value);",
        )
        .await;
    serde_json::from_value(values).unwrap_or_default()
}

#[test]
fn window_removes_missing_project_and_offers_new_context() {
    let sandbox = Sandbox::new();
    let config = sandbox.path().join("kubeconfig");
    std::fs::write(&config, kubeconfig(&["kind-dev"])).unwrap();
    let app = start_app(&sandbox.data_dir(), &config);
    let kept = open_project(&app, sandbox.path(), "kept");
    let gone = open_project(&app, sandbox.path(), "gone");
    std::fs::remove_dir_all(&gone).unwrap();
    let site = Site {
        base: format!("http://{}", app.engine.addr()),
        token: app.engine.token().to_owned(),
    };

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let name = "desktop_window_recent_and_targets";
        let browser =
            Browser::launch_at(&sandbox, site.clone(), name, LaunchOptions::default()).await;
        browser.goto(&format!("/?token={}", site.token)).await;
        browser.goto(&format!("/project?path={kept}")).await;
        let missing = "[data-testid=recent-entry][data-available=false]";
        let shown = wait_until("the missing project to be marked", UI_TIMEOUT, async || {
            let text = browser
                .eval_with(
                    "return document.querySelector(arguments[0])?.textContent ?? null;",
                    vec![json!(missing)],
                )
                .await;
            text.as_str()
                .map(str::to_owned)
                .ok_or_else(|| text.to_string())
        })
        .await;
        assert!(shown.contains("gone (missing)"), "{shown}");
        browser.screenshot("missing").await;

        // The missing project's page shows one message and no run form.
        browser.goto(&format!("/project?path={gone}")).await;
        let message = wait_until("the page to say the folder is gone", UI_TIMEOUT, async || {
            let alerts = browser
                .eval("return [...document.querySelectorAll('[role=alert]')].map(alert => alert.textContent);")
                .await;
            match alerts.as_array().map(Vec::len) {
                Some(1) => Ok(alerts[0].as_str().unwrap_or_default().to_owned()),
                _ => Err(alerts.to_string()),
            }
        })
        .await;
        assert!(message.contains(&format!("`{gone}` does not exist")), "{message}");
        assert!(message.contains("Remove from Recent"), "{message}");
        let hidden = browser
            .eval("return document.querySelector('[data-testid=project-body]').hidden;")
            .await;
        assert_eq!(hidden, true);
        browser.screenshot("missing-page").await;

        // Removing it leaves its page for the project chooser.
        browser
            .click(&format!("{missing} [data-testid=recent-forget]"))
            .await;
        wait_until("the missing project to go", UI_TIMEOUT, async || {
            let left = browser
                .eval_with(
                    "return [document.querySelectorAll(arguments[0]).length, \
                     document.querySelectorAll('[role=alert]').length, location.search];",
                    vec![json!(missing)],
                )
                .await;
            if left == json!([0, 0, "?path="]) {
                Ok(())
            } else {
                Err(left.to_string())
            }
        })
        .await;

        // The jobs page's run form offers the project page's targets.
        browser.goto("/run").await;
        let listed = wait_until("the targets to be listed", UI_TIMEOUT, async || {
            let options = target_options(&browser).await;
            if options.is_empty() {
                Err("none yet".to_owned())
            } else {
                Ok(options)
            }
        })
        .await;
        assert_eq!(listed, ["local", "kube:kind-dev"]);
        std::fs::write(&config, kubeconfig(&["kind-dev", "k3d-lab"])).unwrap();
        browser
            .eval("document.querySelector('[data-testid=target-select]').focus();")
            .await;
        let updated = wait_until("the new context to be listed", UI_TIMEOUT, async || {
            let options = target_options(&browser).await;
            if options.len() == 3 {
                Ok(options)
            } else {
                Err(format!("{options:?}"))
            }
        })
        .await;
        assert_eq!(updated, ["local", "kube:kind-dev", "kube:k3d-lab"]);
    });

    let recent = app.get("/api/v1/desktop/projects");
    let paths: Vec<&str> = recent["projects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|project| project["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, [kept.as_str()]);
}

/// Reads the project page's form: target, pause-before steps, and the
/// pause-after-failure checkbox.
async fn form_choices(browser: &Browser) -> Value {
    browser
        .eval(
            "return [document.querySelector('[data-testid=target-select]').value, \
             document.querySelector('[data-testid=project-break-before]').value, \
             document.querySelector('[data-testid=project-break-on-failure]').checked];",
        )
        .await
}

/// Returns the names the recent projects list shows, in order.
async fn recent_names(browser: &Browser) -> Value {
    browser
        .eval(
            "return [...document.querySelectorAll('[data-testid=recent-project]')]\
             .map(link => link.textContent);",
        )
        .await
}

#[test]
fn project_page_keeps_choices_and_lists_watches() {
    let sandbox = Sandbox::new();
    let config = sandbox.path().join("kubeconfig");
    std::fs::write(&config, kubeconfig(&["kind-dev"])).unwrap();
    let app = start_app(&sandbox.data_dir(), &config);
    let first = open_project(&app, sandbox.path(), "first");
    open_project(&app, sandbox.path(), "second");
    let site = Site {
        base: format!("http://{}", app.engine.addr()),
        token: app.engine.token().to_owned(),
    };

    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let name = "desktop_window_choices_and_watches";
        let browser =
            Browser::launch_at(&sandbox, site.clone(), name, LaunchOptions::default()).await;
        browser.goto(&format!("/?token={}", site.token)).await;
        browser.goto(&format!("/project?path={first}")).await;
        wait_until("the targets to be listed", UI_TIMEOUT, async || {
            let options = target_options(&browser).await;
            (options.len() == 2).then_some(()).ok_or(format!("{options:?}"))
        })
        .await;
        browser
            .eval(
                "const target = document.querySelector('[data-testid=target-select]'); \
                 target.value = 'kube:kind-dev'; target.dispatchEvent(new Event('change')); \
                 const steps = document.querySelector('[data-testid=project-break-before]'); \
                 steps.value = 'test/unit'; steps.dispatchEvent(new Event('input')); \
                 document.querySelector('[data-testid=project-break-on-failure]').click();",
            )
            .await;
        let chosen = json!(["kube:kind-dev", "test/unit", true]);
        assert_eq!(form_choices(&browser).await, chosen);

        // Opening another project from Recent moves it up the list, on
        // the same page; its form has its own choices.
        wait_until("Recent to show first first", UI_TIMEOUT, async || {
            let names = recent_names(&browser).await;
            (names == json!(["first", "second"]))
                .then_some(())
                .ok_or(names.to_string())
        })
        .await;
        browser
            .eval(
                "[...document.querySelectorAll('[data-testid=recent-project]')]\
                 .find(link => link.textContent === 'second').click();",
            )
            .await;
        wait_until("Recent to show second first", UI_TIMEOUT, async || {
            let names = recent_names(&browser).await;
            (names == json!(["second", "first"]))
                .then_some(())
                .ok_or(names.to_string())
        })
        .await;
        assert_eq!(form_choices(&browser).await, json!(["local", "", false]));

        browser.goto(&format!("/project?path={first}")).await;
        wait_until("the first project's choices to be back", UI_TIMEOUT, async || {
            let shown = form_choices(&browser).await;
            (shown == chosen).then_some(()).ok_or(shown.to_string())
        })
        .await;

        // A kept context that left the kubeconfig falls back to local.
        std::fs::write(&config, kubeconfig(&["k3d-lab"])).unwrap();
        browser
            .eval("document.querySelector('[data-testid=target-select]').focus();")
            .await;
        wait_until("the target to fall back to local", UI_TIMEOUT, async || {
            let shown = form_choices(&browser).await;
            (shown == json!(["local", "test/unit", true]))
                .then_some(())
                .ok_or(shown.to_string())
        })
        .await;

        // A watch shows in the header on every page, and stops from there.
        let started = tokio::task::block_in_place(|| {
            post(
                &app,
                "/api/v1/watches",
                json!({"project": first, "target": "local"}),
            )
        });
        assert_eq!(started.status(), StatusCode::CREATED);
        browser.goto("/").await;
        let chip = wait_until("the header to list the watch", UI_TIMEOUT, async || {
            let chips = browser
                .eval("return [...document.querySelectorAll('[data-testid=active-watch]')].map(chip => [chip.dataset.project, chip.textContent]);")
                .await;
            match chips.as_array().map(Vec::len) {
                Some(1) => Ok(chips[0].clone()),
                _ => Err(chips.to_string()),
            }
        })
        .await;
        assert_eq!(chip, json!([first, "firstStop"]));
        browser.screenshot("watching").await;
        browser.click("[data-testid=stop-watch]").await;
        wait_until("the header to drop the watch", UI_TIMEOUT, async || {
            let left = browser
                .eval("return document.querySelectorAll('[data-testid=active-watch]').length;")
                .await;
            (left == 0).then_some(()).ok_or(left.to_string())
        })
        .await;
    });

    assert_eq!(app.get("/api/v1/watches")["watches"], json!([]));
}
