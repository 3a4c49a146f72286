//! Turns the file events of a project into change batches: one batch for
//! every burst of changes that is followed by a quiet debounce window.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use notify::EventKind;
use notify::event::{CreateKind, ModifyKind, RenameMode};
use notify_debouncer_full::DebouncedEvent;

use super::rules::IgnoreRules;

/// The project changed: one batch per burst of file events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeBatch {
    /// The first changed path, relative to the project. A batch with no
    /// known path (the kernel dropped events) names the project folder, `.`.
    pub trigger: PathBuf,
    /// How many different paths changed in the batch.
    pub paths: usize,
}

impl ChangeBatch {
    /// Merges a batch that arrived later, as one burst: the first trigger
    /// stays. Paths changed in both batches are counted twice.
    pub fn absorb(&mut self, later: ChangeBatch) {
        self.paths += later.paths;
    }
}

/// Collects the changed paths of one burst until the burst has been quiet
/// for the debounce window.
#[derive(Debug)]
pub struct BatchCollector {
    project: PathBuf,
    debounce: Duration,
    /// Changed paths in the order they first changed.
    changed: Vec<PathBuf>,
    seen: HashSet<PathBuf>,
    /// Paths created in this burst: when one is gone at the end, it was a
    /// temporary file (an editor's atomic save renames it over the real file).
    created: HashSet<PathBuf>,
    /// Folders created in this burst, counted as the files they contain
    /// when the burst ends. An empty folder changes no run, because the
    /// workspace copy leaves it out as Git does. Files written into a new
    /// folder before the OS watched it may have no event of their own.
    created_folders: HashSet<PathBuf>,
    /// The kernel dropped events, so any file may have changed.
    rescan: bool,
    last_event: Option<Instant>,
}

impl BatchCollector {
    pub fn new(project: &Path, debounce: Duration) -> BatchCollector {
        BatchCollector {
            project: project.to_owned(),
            debounce,
            changed: Vec::new(),
            seen: HashSet::new(),
            created: HashSet::new(),
            created_folders: HashSet::new(),
            rescan: false,
            last_event: None,
        }
    }

    /// Adds the paths that `event` changed, unless `rules` ignore them.
    /// Reads and other access events change nothing and are dropped.
    pub fn add(&mut self, event: &DebouncedEvent, rules: &IgnoreRules) {
        if event.need_rescan() {
            self.rescan = true;
            self.touch(event.time);
            return;
        }

        let mut relevant = false;
        match event.kind {
            EventKind::Create(kind) => {
                for path in &event.paths {
                    if rules.is_ignored(path) {
                        continue;
                    }
                    let folder = match kind {
                        CreateKind::Folder => true,
                        CreateKind::File => false,
                        _ => path.is_dir(),
                    };
                    if folder {
                        self.created_folders.insert(path.clone());
                    } else {
                        self.created.insert(path.clone());
                    }
                    relevant |= self.record(path);
                }
            }
            // A stitched rename: `paths` is [from, to]. The destination
            // changed; the source changed too unless it was a temporary file.
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {
                for path in event.paths.iter().rev() {
                    if !rules.is_ignored(path) {
                        relevant |= self.record(path);
                    }
                }
            }
            EventKind::Modify(_) | EventKind::Remove(_) | EventKind::Any => {
                for path in &event.paths {
                    if !rules.is_ignored(path) {
                        relevant |= self.record(path);
                    }
                }
            }
            EventKind::Access(_) | EventKind::Other => {}
        }
        if relevant {
            self.touch(event.time);
        }
    }

    fn record(&mut self, path: &Path) -> bool {
        if self.seen.insert(path.to_owned()) {
            self.changed.push(path.to_owned());
        }
        true
    }

    fn touch(&mut self, time: Instant) {
        self.last_event = Some(self.last_event.map_or(time, |last| last.max(time)));
    }

    /// When the pending burst is due: one debounce window after its last
    /// event. `None` when nothing is pending.
    pub fn deadline(&self) -> Option<Instant> {
        self.last_event.map(|last| last + self.debounce)
    }

    /// Ends the pending burst if it is due at `now`, and returns its batch.
    /// A burst whose only paths were temporary files that are gone again,
    /// or empty new folders, returns `None`.
    pub fn take_due(&mut self, now: Instant, rules: &IgnoreRules) -> Option<ChangeBatch> {
        if self.deadline().is_none_or(|deadline| now < deadline) {
            return None;
        }

        let changed = std::mem::take(&mut self.changed);
        let created = std::mem::take(&mut self.created);
        let created_folders = std::mem::take(&mut self.created_folders);
        let rescan = std::mem::replace(&mut self.rescan, false);
        self.seen.clear();
        self.last_event = None;

        let mut lasting = Vec::new();
        let mut listed = HashSet::new();
        for path in changed {
            if created_folders.contains(&path) {
                for file in files_under(&path, rules) {
                    if listed.insert(file.clone()) {
                        lasting.push(file);
                    }
                }
                continue;
            }
            let temporary = created.contains(&path) && !path.exists();
            if !temporary && listed.insert(path.clone()) {
                lasting.push(path);
            }
        }

        match lasting.first() {
            Some(first) => Some(ChangeBatch {
                trigger: self.relative(first),
                paths: lasting.len(),
            }),
            None if rescan => Some(ChangeBatch {
                trigger: PathBuf::from("."),
                paths: 0,
            }),
            None => None,
        }
    }

    fn relative(&self, path: &Path) -> PathBuf {
        path.strip_prefix(&self.project)
            .map(Path::to_path_buf)
            .unwrap_or_else(|_| path.to_owned())
    }
}

/// Lists the files under `folder` that `rules` do not ignore, in name order.
fn files_under(folder: &Path, rules: &IgnoreRules) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(folder) else {
        return files;
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|entry| Some(entry.ok()?.path()))
        .collect();
    paths.sort();
    for path in paths {
        if rules.is_ignored(&path) {
            continue;
        }
        // `symlink_metadata`, so a link to a folder is a file here, as in
        // the workspace copy, and a link cycle cannot recurse forever.
        match path.symlink_metadata() {
            Ok(metadata) if metadata.is_dir() => files.extend(files_under(&path, rules)),
            Ok(_) => files.push(path),
            Err(_) => {}
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use notify::Event;
    use notify::event::DataChange;

    use super::*;

    fn event(kind: EventKind, paths: &[&Path], time: Instant) -> DebouncedEvent {
        let mut event = Event::new(kind);
        for path in paths {
            event = event.add_path(path.to_path_buf());
        }
        DebouncedEvent::new(event, time)
    }

    fn write(path: &Path, time: Instant) -> DebouncedEvent {
        event(
            EventKind::Modify(ModifyKind::Data(DataChange::Content)),
            &[path],
            time,
        )
    }

    #[test]
    fn burst_ends_one_window_after_last_event() {
        let root = tempfile::tempdir().unwrap();
        let project = root.path().canonicalize().unwrap();
        let rules = IgnoreRules::load(&project, None);
        let window = Duration::from_millis(200);
        let mut collector = BatchCollector::new(&project, window);
        let start = Instant::now();

        for index in 0..100u64 {
            let file = project.join(format!("src/file{}.py", index % 10));
            collector.add(&write(&file, start + Duration::from_millis(index)), &rules);
        }

        let last = start + Duration::from_millis(99);
        assert_eq!(collector.deadline(), Some(last + window));
        assert_eq!(
            collector.take_due(last + window - Duration::from_millis(1), &rules),
            None
        );
        let batch = collector.take_due(last + window, &rules).unwrap();
        assert_eq!(batch.trigger, PathBuf::from("src/file0.py"));
        assert_eq!(batch.paths, 10);
        assert_eq!(collector.deadline(), None);
    }

    #[test]
    fn ignored_and_access_events_start_no_burst() {
        let root = tempfile::tempdir().unwrap();
        let project = root.path().canonicalize().unwrap();
        let rules = IgnoreRules::load(&project, None);
        let mut collector = BatchCollector::new(&project, Duration::from_millis(10));
        let now = Instant::now();

        collector.add(&write(&project.join(".git/index"), now), &rules);
        collector.add(&write(&project.join(".main.py.swp"), now), &rules);
        let read = event(
            EventKind::Access(notify::event::AccessKind::Read),
            &[&project.join("main.py")],
            now,
        );
        collector.add(&read, &rules);

        assert_eq!(collector.deadline(), None);
    }

    #[test]
    fn vanished_temporary_file_is_not_the_trigger() {
        let root = tempfile::tempdir().unwrap();
        let project = root.path().canonicalize().unwrap();
        let rules = IgnoreRules::load(&project, None);
        let mut collector = BatchCollector::new(&project, Duration::from_millis(10));
        let now = Instant::now();
        let temporary = project.join("main.py.k3x9");
        let real = project.join("main.py");
        std::fs::write(&real, "").unwrap();

        collector.add(
            &event(EventKind::Create(CreateKind::File), &[&temporary], now),
            &rules,
        );
        let rename = event(
            EventKind::Modify(ModifyKind::Name(RenameMode::Both)),
            &[&temporary, &real],
            now,
        );
        collector.add(&rename, &rules);

        let batch = collector
            .take_due(now + Duration::from_secs(1), &rules)
            .unwrap();
        assert_eq!(batch.trigger, PathBuf::from("main.py"));
        assert_eq!(batch.paths, 1);
    }

    #[test]
    fn new_folder_stands_for_its_files() {
        let root = tempfile::tempdir().unwrap();
        let project = root.path().canonicalize().unwrap();
        std::fs::create_dir_all(project.join("src/empty")).unwrap();
        std::fs::create_dir_all(project.join("src/__pycache__")).unwrap();
        std::fs::write(project.join("src/x.py"), "").unwrap();
        let rules = IgnoreRules::load(&project, None);
        let mut collector = BatchCollector::new(&project, Duration::from_millis(10));
        let now = Instant::now();
        let create_folder =
            |path: &Path| event(EventKind::Create(CreateKind::Folder), &[path], now);

        collector.add(&create_folder(&project.join("src")), &rules);
        let batch = collector
            .take_due(now + Duration::from_secs(1), &rules)
            .unwrap();
        assert_eq!(batch.trigger, PathBuf::from("src/x.py"));
        assert_eq!(batch.paths, 1);

        collector.add(&create_folder(&project.join("src/empty")), &rules);
        assert_eq!(
            collector.take_due(now + Duration::from_secs(1), &rules),
            None
        );
    }
}
