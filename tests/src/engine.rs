//! An engine on the local backend inside the test process, for tests that
//! drive the library rather than the `danube` binary.

use std::sync::Arc;

use danube::backend::local::LocalBackend;
use danube::config::DataDir;
use std::time::Duration;

use danube::orchestrator::debug::Pause;
use danube::orchestrator::{Breakpoints, Engine, EngineParts, JobEvent, JobHandle};
use danube::store::Store;

use crate::{Sandbox, shared_venv};

/// Starts an engine on the local backend over the sandbox's data
/// directory, with the shared Python environment and a 1 MiB artifact cap.
pub async fn local_engine(sandbox: &Sandbox) -> Engine {
    let data = DataDir::open(&sandbox.data_dir()).expect("open the data directory");
    let store = Store::open(&data.database_path())
        .await
        .expect("open the database");
    // SAFETY: every test sets the same value before it starts an engine, so
    // a concurrent read of the environment gets that value either way.
    unsafe { std::env::set_var("DANUBE_PYTHON_VENV", shared_venv()) };
    let python = danube::python::ensure_env(&data, &|_| {})
        .await
        .expect("set up the Python environment");
    Engine::start(EngineParts {
        backend: Arc::new(LocalBackend::new(data.workspaces_dir())),
        data,
        store,
        python,
        max_artifact_bytes: 1 << 20,
    })
    .await
    .expect("start the engine")
}

/// Waits up to `limit` for the job's next pause, and panics when the job
/// ends first or the limit passes.
pub async fn next_pause(handle: &mut JobHandle, limit: Duration) -> Pause {
    let wait = async {
        loop {
            match handle.events.recv().await {
                Ok(JobEvent::Paused { pause }) => return pause,
                Ok(JobEvent::JobState { state, reason }) if state.is_final() => {
                    panic!("the job ended {state} without pausing: {reason:?}")
                }
                Ok(_) => {}
                Err(err) => panic!("job events ended: {err}"),
            }
        }
    };
    tokio::time::timeout(limit, wait)
        .await
        .expect("the job pauses")
}

/// Breakpoints that pause a job after its first failing step.
pub fn on_failure() -> Breakpoints {
    Breakpoints {
        before: Vec::new(),
        on_failure: true,
    }
}
