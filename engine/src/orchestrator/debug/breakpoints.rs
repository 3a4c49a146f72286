//! Breakpoints: the steps a job pauses at for debugging, and how a
//! breakpoint's name matches a step.

use std::collections::BTreeSet;

use crate::orchestrator::plan::PlannedTask;

/// Maximum length of a breakpoint in characters: a task name, `/` and a
/// step name.
const MAX_BREAKPOINT_CHARS: usize = 301;

/// The places a job pauses at so that a user can look inside.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Breakpoints {
    /// Steps to pause before. Each is `task/step`, a step name (in any
    /// task), or a task name (the first step that task runs).
    pub before: Vec<String>,
    /// Pause after a failing step, before its task is marked failed. Once
    /// the user continues past a failure, later failures no longer pause.
    pub on_failure: bool,
}

impl Breakpoints {
    pub fn is_empty(&self) -> bool {
        self.before.is_empty() && !self.on_failure
    }

    /// Checks the form of every `before` entry, before a job starts.
    ///
    /// # Errors
    ///
    /// Returns a message for the first entry that is empty, too long, has an
    /// empty side around its `/`, or contains control characters.
    pub fn validate(&self) -> Result<(), String> {
        for breakpoint in &self.before {
            let shown: String = breakpoint.chars().take(MAX_BREAKPOINT_CHARS).collect();
            let invalid = |why: &str| {
                Err(format!(
                    "breakpoint `{shown}` is invalid: {why}; name a step as `task/step`, a step name, or a task name"
                ))
            };
            if breakpoint.trim().is_empty() {
                return invalid("it is empty");
            }
            if breakpoint.chars().count() > MAX_BREAKPOINT_CHARS {
                return invalid("it is too long");
            }
            if breakpoint.chars().any(char::is_control) {
                return invalid("it contains control characters");
            }
            if let Some((task, step)) = breakpoint.split_once('/')
                && (task.is_empty() || step.is_empty())
            {
                return invalid("a side of `/` is empty");
            }
        }
        Ok(())
    }

    /// Checks every `task/step` entry against the declared tasks. Bare names
    /// may name a step, and steps are only known once they run, so those
    /// are checked when the job ends ([`Breakpoints::unmatched`]).
    ///
    /// # Errors
    ///
    /// Returns a message that names the breakpoint and lists the tasks.
    pub(crate) fn check_plan(&self, pipeline: &str, tasks: &[PlannedTask]) -> Result<(), String> {
        for breakpoint in &self.before {
            let Some((task, _)) = breakpoint.split_once('/') else {
                continue;
            };
            if tasks.iter().all(|planned| planned.name != task) {
                let names: Vec<&str> = tasks.iter().map(|planned| planned.name.as_str()).collect();
                return Err(format!(
                    "breakpoint `{breakpoint}` names task `{task}`, which pipeline `{pipeline}` does not have; its tasks are: {}",
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Returns a warning for each bare name that names none of the
    /// declared tasks. Such a name can still name a step, but steps are
    /// declared by the task functions as they run, so no step name is known
    /// when the plan is declared.
    pub(crate) fn plan_warnings(&self, pipeline: &str, tasks: &[PlannedTask]) -> Vec<String> {
        let names: Vec<&str> = tasks.iter().map(|planned| planned.name.as_str()).collect();
        self.before
            .iter()
            .filter(|breakpoint| !breakpoint.contains('/') && !names.contains(&breakpoint.as_str()))
            .map(|breakpoint| {
                format!(
                    "danube: warning: breakpoint `{breakpoint}` names no task of pipeline `{pipeline}` (its tasks are: {}); \
                     it pauses only before a step of that name, and step names are known only when steps start; \
                     if no step has that name, the job fails at its end. Check the spelling, or write it as `task/step`",
                    names.join(", ")
                )
            })
            .collect()
    }

    /// Returns the first breakpoint that names step `step` of task `task`.
    /// `first_in_task` is true when no other step of the task started before.
    pub(crate) fn before_step(&self, task: &str, step: &str, first_in_task: bool) -> Option<&str> {
        self.before
            .iter()
            .find(|breakpoint| names_step(breakpoint, task, step, first_in_task))
            .map(String::as_str)
    }

    /// Returns the `before` entries that name none of `ran`, the steps the
    /// job ran as `(task, step)`. A task name counts when the task ran a
    /// step.
    pub(crate) fn unmatched<'a>(&'a self, ran: &BTreeSet<(String, String)>) -> Vec<&'a str> {
        self.before
            .iter()
            .filter(|breakpoint| {
                !ran.iter()
                    .any(|(task, step)| names_step(breakpoint, task, step, true))
            })
            .map(String::as_str)
            .collect()
    }
}

/// Returns whether `breakpoint` names step `step` of task `task`. A bare
/// task name counts only when `task_name_counts` (for the task's first step).
fn names_step(breakpoint: &str, task: &str, step: &str, task_name_counts: bool) -> bool {
    match breakpoint.split_once('/') {
        Some((wanted_task, wanted_step)) => wanted_task == task && wanted_step == step,
        None => breakpoint == step || (task_name_counts && breakpoint == task),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn before(names: &[&str]) -> Breakpoints {
        Breakpoints {
            before: names.iter().map(|name| (*name).to_owned()).collect(),
            on_failure: false,
        }
    }

    fn planned(name: &str) -> PlannedTask {
        PlannedTask {
            name: name.to_owned(),
            needs: Vec::new(),
            image: None,
        }
    }

    #[test]
    fn qualified_name_matches_only_its_task() {
        let breakpoints = before(&["test/unit"]);

        assert_eq!(
            breakpoints.before_step("test", "unit", false),
            Some("test/unit")
        );
        assert_eq!(breakpoints.before_step("lint", "unit", true), None);
    }

    #[test]
    fn bare_step_name_matches_any_task() {
        let breakpoints = before(&["unit"]);

        assert_eq!(breakpoints.before_step("test", "unit", false), Some("unit"));
        assert_eq!(breakpoints.before_step("other", "unit", true), Some("unit"));
        assert_eq!(breakpoints.before_step("test", "lint", true), None);
    }

    #[test]
    fn task_name_matches_its_first_step() {
        let breakpoints = before(&["build"]);

        assert_eq!(
            breakpoints.before_step("build", "compile", true),
            Some("build")
        );
        assert_eq!(breakpoints.before_step("build", "link", false), None);
    }

    #[test]
    fn malformed_breakpoints_are_rejected() {
        for wrong in ["", "  ", "build/", "/compile", "a\nb"] {
            let error = before(&[wrong]).validate().unwrap_err();
            assert!(error.contains("is invalid"), "{wrong:?}: {error}");
        }
        assert_eq!(before(&["build/compile", "unit"]).validate(), Ok(()));
    }

    #[test]
    fn unknown_task_is_reported_with_task_list() {
        let tasks = [planned("build"), planned("test")];

        let error = before(&["deploy/push"])
            .check_plan("ci", &tasks)
            .unwrap_err();

        assert!(error.contains("`deploy`"), "{error}");
        assert!(error.contains("build, test"), "{error}");
        assert_eq!(
            before(&["test/unit", "anything"]).check_plan("ci", &tasks),
            Ok(())
        );
    }

    #[test]
    fn bare_name_of_no_task_is_warned_about() {
        let tasks = [planned("build"), planned("test")];

        let warnings = before(&["test", "unti", "test/unit"]).plan_warnings("ci", &tasks);

        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("breakpoint `unti`"), "{}", warnings[0]);
        assert!(warnings[0].contains("build, test"), "{}", warnings[0]);
        assert!(before(&["build"]).plan_warnings("ci", &tasks).is_empty());
    }

    #[test]
    fn unmatched_lists_names_no_step_had() {
        let ran: BTreeSet<(String, String)> = [("build", "compile"), ("test", "unit")]
            .into_iter()
            .map(|(task, step)| (task.to_owned(), step.to_owned()))
            .collect();

        let breakpoints = before(&["build", "unit", "test/compile", "typo"]);

        assert_eq!(breakpoints.unmatched(&ran), ["test/compile", "typo"]);
    }
}
