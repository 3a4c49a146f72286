//! The project watcher: inotify (or the platform's equivalent) through
//! `notify`, with `notify-debouncer-full` pairing the two halves of a rename
//! and folding a temporary file's events into the file it is renamed to,
//! then [`BatchCollector`] cutting the events into change batches.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, new_debouncer};
use tokio::sync::mpsc;

use super::WatchError;
use super::batch::{BatchCollector, ChangeBatch};
use super::rules::{GITIGNORE, IgnoreRules};

/// How long the debouncer keeps each raw event so that the `from` and `to`
/// halves of a rename meet. inotify reports both halves together, so a short
/// hold suffices; the quiet window of a burst is [`BatchCollector`]'s. A
/// longer hold would delay every run by as much.
const RENAME_PAIRING_HOLD: Duration = Duration::from_millis(50);

/// Change batches waiting for the session; more wait in the collector's
/// thread.
const BATCH_CHANNEL_CAPACITY: usize = 16;

/// Watches a project folder until dropped.
pub struct ProjectWatcher {
    /// Stops the OS watch and the debouncer's thread when dropped, which
    /// closes the event channel and so ends the collector's thread.
    _debouncer: notify_debouncer_full::Debouncer<
        notify::RecommendedWatcher,
        notify_debouncer_full::RecommendedCache,
    >,
}

impl ProjectWatcher {
    /// Watches `project` (a canonical path) and every folder below it, and
    /// sends a [`ChangeBatch`] for each burst of changes that was followed
    /// by `debounce` without a change. `data_dir` is left out when it lies
    /// inside the project.
    ///
    /// # Errors
    ///
    /// [`WatchError::Watch`] when the OS refuses the watch, for example when
    /// the limit on inotify watches is reached.
    pub fn start(
        project: &Path,
        data_dir: Option<&Path>,
        debounce: Duration,
    ) -> Result<(ProjectWatcher, mpsc::Receiver<ChangeBatch>), WatchError> {
        let (events_tx, events_rx) = std_mpsc::channel::<DebounceEventResult>();
        let hold = RENAME_PAIRING_HOLD.min(debounce);
        let watch_error = |source| WatchError::Watch {
            path: project.to_owned(),
            source,
        };
        let mut debouncer = new_debouncer(hold, None, events_tx).map_err(watch_error)?;
        // NOTE: recursive mode also watches ignored folders such as
        // `node_modules`, which costs one inotify watch per folder; their
        // events are dropped by `IgnoreRules`.
        debouncer
            .watch(project, RecursiveMode::Recursive)
            .map_err(watch_error)?;

        let (batches_tx, batches_rx) = mpsc::channel(BATCH_CHANNEL_CAPACITY);
        let collector = Collector {
            project: project.to_owned(),
            data_dir: data_dir.map(Path::to_path_buf),
            rules: IgnoreRules::load(project, data_dir),
            batches: BatchCollector::new(project, debounce),
        };
        std::thread::Builder::new()
            .name("danube-watch".into())
            .spawn(move || collector.run(&events_rx, &batches_tx))
            .map_err(|source| WatchError::Watch {
                path: project.to_owned(),
                source: notify::Error::io(source),
            })?;
        tracing::debug!(project = %project.display(), ?debounce, "watching the project");

        Ok((
            ProjectWatcher {
                _debouncer: debouncer,
            },
            batches_rx,
        ))
    }
}

/// The state of the thread that turns debounced events into batches.
struct Collector {
    project: PathBuf,
    data_dir: Option<PathBuf>,
    rules: IgnoreRules,
    batches: BatchCollector,
}

impl Collector {
    /// Runs until the watcher is dropped or the session stops listening.
    fn run(
        mut self,
        events: &std_mpsc::Receiver<DebounceEventResult>,
        batches: &mpsc::Sender<ChangeBatch>,
    ) {
        loop {
            let received = match self.batches.deadline() {
                Some(deadline) => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    match events.recv_timeout(wait) {
                        Ok(result) => Some(result),
                        Err(std_mpsc::RecvTimeoutError::Timeout) => None,
                        Err(std_mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
                None => match events.recv() {
                    Ok(result) => Some(result),
                    Err(_) => return,
                },
            };

            if let Some(result) = received {
                self.add(result);
            }
            if let Some(batch) = self.batches.take_due(Instant::now(), &self.rules) {
                tracing::debug!(trigger = %batch.trigger.display(), paths = batch.paths, "project changed");
                if batches.blocking_send(batch).is_err() {
                    return;
                }
            }
        }
    }

    fn add(&mut self, result: DebounceEventResult) {
        let events = match result {
            Ok(events) => events,
            Err(errors) => {
                for error in errors {
                    tracing::warn!(project = %self.project.display(), error = %error, "file watcher error");
                }
                return;
            }
        };

        // New ignore rules apply to the events that came with them.
        let rules_changed = events.iter().any(|event| {
            event
                .paths
                .iter()
                .any(|path| path.file_name().is_some_and(|name| name == GITIGNORE))
        });
        if rules_changed {
            tracing::debug!(project = %self.project.display(), "reloading ignore rules");
            self.rules = IgnoreRules::load(&self.project, self.data_dir.as_deref());
        }
        for event in &events {
            self.batches.add(event, &self.rules);
        }
    }
}
