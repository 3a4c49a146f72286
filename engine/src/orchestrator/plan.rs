//! The task graph of a job: validation and scheduling decisions.
//!
//! Pure logic with no I/O, so that the rules (what is ready, what gets
//! skipped) are tested on their own.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::RunState;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "the pipeline declares no tasks: give `pipeline(...)` a `tasks=[...]` list or decorate a function with `@pipeline`"
    )]
    Empty,

    #[error(
        "task name `{0}` is invalid: use 1 to 100 characters without `/` or control characters"
    )]
    InvalidName(String),

    #[error("task `{0}` is declared twice: give each task a unique name")]
    Duplicate(String),

    #[error(
        "task `{task}` needs `{missing}`, which is not a task of this pipeline: declare it with `@task` or fix the name"
    )]
    UnknownNeed { task: String, missing: String },

    #[error("tasks form a dependency cycle: {}; remove one of these `needs`", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// One node as declared.
#[derive(Clone, Debug)]
pub struct PlannedTask {
    pub name: String,
    pub needs: Vec<String>,
    pub image: Option<String>,
}

/// A validated graph plus the state of every task while the job runs.
#[derive(Debug)]
pub struct Plan {
    tasks: Vec<PlannedTask>,
    states: BTreeMap<String, RunState>,
}

impl Plan {
    /// Validates names, `needs` references and acyclicity.
    pub fn new(tasks: Vec<PlannedTask>) -> Result<Plan, PlanError> {
        if tasks.is_empty() {
            return Err(PlanError::Empty);
        }

        let mut names = BTreeSet::new();
        for task in &tasks {
            if !valid_name(&task.name) {
                return Err(PlanError::InvalidName(task.name.clone()));
            }
            if !names.insert(task.name.as_str()) {
                return Err(PlanError::Duplicate(task.name.clone()));
            }
        }
        for task in &tasks {
            if let Some(missing) = task
                .needs
                .iter()
                .find(|need| !names.contains(need.as_str()))
            {
                return Err(PlanError::UnknownNeed {
                    task: task.name.clone(),
                    missing: missing.clone(),
                });
            }
        }
        if let Some(cycle) = find_cycle(&tasks) {
            return Err(PlanError::Cycle(cycle));
        }

        let states = tasks
            .iter()
            .map(|task| (task.name.clone(), RunState::Pending))
            .collect();
        Ok(Plan { tasks, states })
    }

    pub fn tasks(&self) -> &[PlannedTask] {
        &self.tasks
    }

    pub fn task(&self, name: &str) -> Option<&PlannedTask> {
        self.tasks.iter().find(|task| task.name == name)
    }

    pub fn state(&self, name: &str) -> Option<RunState> {
        self.states.get(name).copied()
    }

    pub fn set_state(&mut self, name: &str, state: RunState) {
        if let Some(slot) = self.states.get_mut(name) {
            *slot = state;
        }
    }

    /// Pending tasks whose needs all succeeded, in declaration order.
    pub fn ready(&self) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|task| self.states[&task.name] == RunState::Pending)
            .filter(|task| {
                task.needs
                    .iter()
                    .all(|need| self.states[need] == RunState::Success)
            })
            .map(|task| task.name.clone())
            .collect()
    }

    /// Pending tasks that can never run because something they need, directly
    /// or not, ended without success. Returns them in declaration order.
    pub fn blocked(&self) -> Vec<String> {
        let mut blocked: BTreeSet<&str> = BTreeSet::new();
        // Declaration order is not necessarily topological, so iterate until
        // nothing changes; graphs are small enough for this to be cheap.
        loop {
            let before = blocked.len();
            for task in &self.tasks {
                if self.states[&task.name] != RunState::Pending {
                    continue;
                }
                let stuck = task.needs.iter().any(|need| {
                    let state = self.states[need];
                    (state.is_final() && state != RunState::Success)
                        || blocked.contains(need.as_str())
                });
                if stuck {
                    blocked.insert(&task.name);
                }
            }
            if blocked.len() == before {
                break;
            }
        }
        self.tasks
            .iter()
            .filter(|task| blocked.contains(task.name.as_str()))
            .map(|task| task.name.clone())
            .collect()
    }

    pub fn running_count(&self) -> usize {
        self.states
            .values()
            .filter(|state| **state == RunState::Running)
            .count()
    }

    pub fn all_final(&self) -> bool {
        self.states.values().all(|state| state.is_final())
    }

    pub fn all_succeeded(&self) -> bool {
        self.states
            .values()
            .all(|state| *state == RunState::Success)
    }

    /// Tasks in the given state, in declaration order.
    pub fn in_state(&self, state: RunState) -> Vec<String> {
        self.tasks
            .iter()
            .filter(|task| self.states[&task.name] == state)
            .map(|task| task.name.clone())
            .collect()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.chars().count() <= 100
        && !name.chars().any(|c| c == '/' || c.is_control())
}

/// Returns one cycle as a path that starts and ends at the same task.
fn find_cycle(tasks: &[PlannedTask]) -> Option<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Unvisited,
        OnPath,
        Done,
    }

    let index: BTreeMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, task)| (task.name.as_str(), i))
        .collect();
    let mut marks = vec![Mark::Unvisited; tasks.len()];

    for start in 0..tasks.len() {
        if marks[start] != Mark::Unvisited {
            continue;
        }
        // Iterative depth-first search; `path` contains (task, next need to visit).
        let mut path: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = path.last_mut() {
            if let Some(need) = tasks[node].needs.get(*next) {
                *next += 1;
                let child = index[need.as_str()];
                match marks[child] {
                    Mark::Unvisited => {
                        marks[child] = Mark::OnPath;
                        path.push((child, 0));
                    }
                    Mark::OnPath => {
                        let from = path
                            .iter()
                            .position(|(n, _)| *n == child)
                            .expect("a task marked on-path is on the path");
                        let mut cycle: Vec<String> = path[from..]
                            .iter()
                            .map(|(n, _)| tasks[*n].name.clone())
                            .collect();
                        cycle.push(tasks[child].name.clone());
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                path.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, needs: &[&str]) -> PlannedTask {
        PlannedTask {
            name: name.to_owned(),
            needs: needs.iter().map(|n| (*n).to_owned()).collect(),
            image: None,
        }
    }

    fn diamond() -> Plan {
        Plan::new(vec![
            task("install", &[]),
            task("lint", &["install"]),
            task("test", &["install"]),
            task("package", &["lint", "test"]),
        ])
        .unwrap()
    }

    #[test]
    fn ready_tasks_follow_dependencies() {
        let mut plan = diamond();
        assert_eq!(plan.ready(), vec!["install"]);

        plan.set_state("install", RunState::Running);
        assert!(plan.ready().is_empty());

        plan.set_state("install", RunState::Success);
        assert_eq!(plan.ready(), vec!["lint", "test"]);

        plan.set_state("lint", RunState::Success);
        plan.set_state("test", RunState::Running);
        assert!(plan.ready().is_empty());

        plan.set_state("test", RunState::Success);
        assert_eq!(plan.ready(), vec!["package"]);
    }

    #[test]
    fn failure_blocks_dependents_transitively() {
        let mut plan = Plan::new(vec![
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["b"]),
            task("d", &[]),
        ])
        .unwrap();
        plan.set_state("a", RunState::Failure);
        assert_eq!(plan.blocked(), vec!["b", "c"]);
        assert_eq!(plan.ready(), vec!["d"]);
    }

    #[test]
    fn blocked_handles_reverse_declaration_order() {
        let mut plan =
            Plan::new(vec![task("c", &["b"]), task("b", &["a"]), task("a", &[])]).unwrap();
        plan.set_state("a", RunState::Timeout);
        assert_eq!(plan.blocked(), vec!["c", "b"]);
    }

    #[test]
    fn unknown_need_names_task_and_missing() {
        let err = Plan::new(vec![task("a", &["nope"])]).unwrap_err();
        assert_eq!(
            err,
            PlanError::UnknownNeed {
                task: "a".into(),
                missing: "nope".into()
            }
        );
        assert!(err.to_string().contains("`nope`"));
    }

    #[test]
    fn cycle_is_reported_as_path() {
        let err = Plan::new(vec![
            task("a", &["c"]),
            task("b", &["a"]),
            task("c", &["b"]),
            task("d", &[]),
        ])
        .unwrap_err();
        let PlanError::Cycle(path) = err else {
            panic!("expected a cycle, got {err:?}");
        };
        assert_eq!(path.first(), path.last());
        assert_eq!(path.len(), 4);
    }

    #[test]
    fn self_dependency_is_a_cycle() {
        let err = Plan::new(vec![task("a", &["a"])]).unwrap_err();
        assert_eq!(err, PlanError::Cycle(vec!["a".into(), "a".into()]));
    }

    #[test]
    fn duplicate_and_invalid_names_are_rejected() {
        assert_eq!(
            Plan::new(vec![task("a", &[]), task("a", &[])]).unwrap_err(),
            PlanError::Duplicate("a".into())
        );
        assert_eq!(
            Plan::new(vec![task("a/b", &[])]).unwrap_err(),
            PlanError::InvalidName("a/b".into())
        );
        assert_eq!(Plan::new(vec![]).unwrap_err(), PlanError::Empty);
    }
}
