//! The embedded engine as the desktop tests start it, with an HTTP client
//! that signs in with the launch token.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Once};
use std::time::Duration;

use danube::backend::targets::TargetSettings;
use danube_desktop::picker::FolderPicker;
use danube_desktop::{EmbeddedEngine, EngineOptions};
use danube_tests::shared_venv;
use reqwest::StatusCode;
use reqwest::blocking::{Client, RequestBuilder};
use serde_json::Value;

/// A dialog that the tests never open.
struct NoDialog;

impl FolderPicker for NoDialog {
    fn pick_folder(&self) -> Pin<Box<dyn Future<Output = Option<PathBuf>> + Send + '_>> {
        Box::pin(async { None })
    }
}

/// An embedded engine and a client whose requests carry its token.
pub struct TestApp {
    pub engine: EmbeddedEngine,
    client: Client,
}

impl TestApp {
    /// Starts the engine on `data_root` with `targets`; each request may
    /// take up to `timeout`.
    pub fn start(data_root: &Path, targets: TargetSettings, timeout: Duration) -> TestApp {
        static VENV: Once = Once::new();
        // SAFETY: set once, before the first engine starts and before any
        // other thread of the test binary reads the environment.
        VENV.call_once(|| unsafe { std::env::set_var("DANUBE_PYTHON_VENV", shared_venv()) });
        let engine = EmbeddedEngine::start(
            EngineOptions {
                data_root: data_root.to_owned(),
                project: None,
                picker: Arc::new(NoDialog),
                targets,
            },
            |_| {},
        )
        .expect("the embedded engine starts");
        let client = Client::builder().timeout(timeout).build().unwrap();
        TestApp { engine, client }
    }

    /// Returns a request to `path` of the engine, with its token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("http://{}{path}", self.engine.addr()))
            .bearer_auth(self.engine.token())
    }

    /// Reads `path`, which must return 200, as JSON.
    pub fn get(&self, path: &str) -> Value {
        let response = self.request(reqwest::Method::GET, path).send().unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().unwrap()
    }
}
