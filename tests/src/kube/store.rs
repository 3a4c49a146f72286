//! The object store: namespaces, pods and nodes, one resource version
//! counter for all of them (as etcd's revision is), and the event history
//! that watches resume from.
//!
//! Every write takes the one lock, bumps the revision, records the event in
//! the history and broadcasts it while still holding the lock, so a watch
//! that subscribes under the same lock sees each event exactly once: either
//! in its backlog or on its receiver.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::broadcast;

use super::status::ApiError;

/// The resources the store holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    Namespace,
    Pod,
    Node,
}

impl Kind {
    /// Returns the plural resource name used in URLs, errors and RBAC.
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Namespace => "namespaces",
            Kind::Pod => "pods",
            Kind::Node => "nodes",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Node => "Node",
        }
    }
}

/// `ADDED`, `MODIFIED` or `DELETED`, as a watch stream spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change to one object.
#[derive(Debug)]
pub(crate) struct Event {
    pub kind: Kind,
    pub event_type: EventType,
    pub revision: u64,
    pub namespace: Option<String>,
    /// The object after the change (before it, for `DELETED`, with the
    /// deletion's resource version).
    pub object: Value,
}

/// A watch's starting point: the events after the requested version and a
/// receiver for everything later.
pub(crate) struct Subscription {
    pub backlog: Vec<Arc<Event>>,
    pub receiver: broadcast::Receiver<Arc<Event>>,
}

struct State {
    revision: u64,
    namespaces: BTreeMap<String, Namespace>,
    pods: BTreeMap<(String, String), Pod>,
    nodes: BTreeMap<String, Node>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    /// The newest revision no longer in `history`: a watch from it or any
    /// older one gets `410 Gone`.
    compacted: u64,
}

pub(crate) struct Store {
    state: Mutex<State>,
    events: broadcast::Sender<Arc<Event>>,
    /// Woken after every write, for the scheduler.
    pub changed: tokio::sync::Notify,
}

/// How many events a watcher may fall behind before the store ends its
/// stream; the client then resumes from the last version it saw.
const WATCH_BUFFER: usize = 4096;

impl Store {
    pub fn new(history_limit: usize) -> Store {
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        Store {
            state: Mutex::new(State {
                revision: 1,
                namespaces: BTreeMap::new(),
                pods: BTreeMap::new(),
                nodes: BTreeMap::new(),
                history: VecDeque::new(),
                history_limit: history_limit.max(1),
                compacted: 0,
            }),
            events,
            changed: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind, which
        // later calls may still read.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Advances the resource version for a write outside the watched
    /// kinds (network policies) and returns the new one.
    pub fn bump_revision(&self) -> u64 {
        let mut state = self.lock();
        state.revision += 1;
        state.revision
    }

    /// Returns the current resource version, for list responses.
    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    /// Drops the whole event history, as an etcd compaction does: every
    /// watch from an older version gets `410 Gone` afterwards.
    pub fn compact(&self) {
        let mut state = self.lock();
        state.history.clear();
        state.compacted = state.revision;
    }

    /// Subscribes to events after `since` (`None`: from now on).
    ///
    /// # Errors
    ///
    /// `410 Expired` when events after `since` are no longer in the history.
    pub fn subscribe(&self, since: Option<u64>) -> Result<Subscription, ApiError> {
        let state = self.lock();
        let backlog = match since {
            None => Vec::new(),
            Some(since) if since < state.compacted => {
                return Err(ApiError::expired(since, state.compacted + 1));
            }
            Some(since) => state
                .history
                .iter()
                .filter(|event| event.revision > since)
                .cloned()
                .collect(),
        };
        Ok(Subscription {
            backlog,
            receiver: self.events.subscribe(),
        })
    }

    /// Returns the objects of `kind` now, their version, and a receiver for every
    /// later event, taken at one instant.
    pub fn snapshot(&self, kind: Kind) -> (Vec<Value>, u64, broadcast::Receiver<Arc<Event>>) {
        let state = self.lock();
        let objects = match kind {
            Kind::Namespace => state.namespaces.values().map(to_value).collect(),
            Kind::Pod => state.pods.values().map(to_value).collect(),
            Kind::Node => state.nodes.values().map(to_value).collect(),
        };
        (objects, state.revision, self.events.subscribe())
    }

    fn record(
        &self,
        state: &mut State,
        kind: Kind,
        event_type: EventType,
        namespace: Option<String>,
        object: Value,
    ) {
        let event = Arc::new(Event {
            kind,
            event_type,
            revision: state.revision,
            namespace,
            object,
        });
        state.history.push_back(event.clone());
        while state.history.len() > state.history_limit {
            if let Some(dropped) = state.history.pop_front() {
                state.compacted = dropped.revision;
            }
        }
        // No receiver is not an error: nobody watches yet.
        let _ = self.events.send(event);
        self.changed.notify_waiters();
    }

    fn stamp(state: &mut State, metadata: &mut ObjectMeta) {
        state.revision += 1;
        metadata.resource_version = Some(state.revision.to_string());
    }

    pub fn namespace(&self, name: &str) -> Option<Namespace> {
        self.lock().namespaces.get(name).cloned()
    }

    pub fn namespaces(&self) -> (Vec<Namespace>, u64) {
        let state = self.lock();
        (state.namespaces.values().cloned().collect(), state.revision)
    }

    /// Stores a new namespace, filling the metadata the server owns.
    ///
    /// # Errors
    ///
    /// `409 AlreadyExists`.
    pub fn create_namespace(&self, mut namespace: Namespace) -> Result<Namespace, ApiError> {
        let mut state = self.lock();
        let name = namespace.metadata.name.clone().unwrap_or_default();
        if state.namespaces.contains_key(&name) {
            return Err(ApiError::already_exists("namespaces", &name));
        }
        fill_server_metadata(&mut namespace.metadata);
        let labels = namespace.metadata.labels.get_or_insert_default();
        labels.insert("kubernetes.io/metadata.name".to_owned(), name.clone());
        namespace.status = Some(k8s_openapi::api::core::v1::NamespaceStatus {
            phase: Some("Active".to_owned()),
            ..Default::default()
        });
        Self::stamp(&mut state, &mut namespace.metadata);
        state.namespaces.insert(name, namespace.clone());
        let object = to_value(&namespace);
        self.record(&mut state, Kind::Namespace, EventType::Added, None, object);
        Ok(namespace)
    }

    /// Changes a namespace in place and records a `MODIFIED` event.
    pub fn update_namespace(&self, name: &str, change: impl FnOnce(&mut Namespace)) {
        let mut state = self.lock();
        let mut namespace = match state.namespaces.get(name) {
            Some(namespace) => namespace.clone(),
            None => return,
        };
        change(&mut namespace);
        Self::stamp(&mut state, &mut namespace.metadata);
        state.namespaces.insert(name.to_owned(), namespace.clone());
        let object = to_value(&namespace);
        self.record(
            &mut state,
            Kind::Namespace,
            EventType::Modified,
            None,
            object,
        );
    }

    pub fn remove_namespace(&self, name: &str) -> Option<Namespace> {
        let mut state = self.lock();
        let mut namespace = state.namespaces.remove(name)?;
        Self::stamp(&mut state, &mut namespace.metadata);
        let object = to_value(&namespace);
        self.record(
            &mut state,
            Kind::Namespace,
            EventType::Deleted,
            None,
            object,
        );
        Some(namespace)
    }

    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.lock()
            .pods
            .get(&(namespace.to_owned(), name.to_owned()))
            .cloned()
    }

    /// Returns every pod, or the pods of one namespace, with the list's version.
    pub fn pods(&self, namespace: Option<&str>) -> (Vec<Pod>, u64) {
        let state = self.lock();
        let pods = state
            .pods
            .iter()
            .filter(|((pod_namespace, _), _)| namespace.is_none_or(|n| n == pod_namespace))
            .map(|(_, pod)| pod.clone())
            .collect();
        (pods, state.revision)
    }

    /// Stores a new pod in an existing namespace.
    ///
    /// # Errors
    ///
    /// `404` for a missing namespace, `403` for one being deleted, `409` for
    /// a taken name.
    pub fn create_pod(&self, namespace: &str, mut pod: Pod) -> Result<Pod, ApiError> {
        let mut state = self.lock();
        let Some(owner) = state.namespaces.get(namespace) else {
            return Err(ApiError::not_found("namespaces", namespace));
        };
        if owner.metadata.deletion_timestamp.is_some() {
            return Err(ApiError::forbidden(format!(
                "pods is forbidden: unable to create new content in namespace {namespace} \
                 because it is being terminated"
            )));
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let key = (namespace.to_owned(), name.clone());
        if state.pods.contains_key(&key) {
            return Err(ApiError::already_exists("pods", &name));
        }
        pod.metadata.namespace = Some(namespace.to_owned());
        fill_server_metadata(&mut pod.metadata);
        Self::stamp(&mut state, &mut pod.metadata);
        state.pods.insert(key, pod.clone());
        let object = to_value(&pod);
        self.record(
            &mut state,
            Kind::Pod,
            EventType::Added,
            Some(namespace.to_owned()),
            object,
        );
        Ok(pod)
    }

    /// Applies `change` to a pod and records a `MODIFIED` event when the pod
    /// differs afterwards. Returns the pod as stored, `None` when it is gone.
    pub fn update_pod(
        &self,
        namespace: &str,
        name: &str,
        change: impl FnOnce(&mut Pod),
    ) -> Option<Pod> {
        let mut state = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        let before = state.pods.get(&key)?;
        let mut pod = before.clone();
        change(&mut pod);
        if &pod == before {
            return Some(pod);
        }
        Self::stamp(&mut state, &mut pod.metadata);
        state.pods.insert(key, pod.clone());
        let object = to_value(&pod);
        self.record(
            &mut state,
            Kind::Pod,
            EventType::Modified,
            Some(namespace.to_owned()),
            object,
        );
        Some(pod)
    }

    /// Removes a pod and records `DELETED`. `uid` guards against removing a
    /// newer pod that took the same name.
    pub fn remove_pod(&self, namespace: &str, name: &str, uid: &str) -> Option<Pod> {
        let mut state = self.lock();
        let key = (namespace.to_owned(), name.to_owned());
        if state.pods.get(&key)?.metadata.uid.as_deref() != Some(uid) {
            return None;
        }
        let mut pod = state.pods.remove(&key)?;
        Self::stamp(&mut state, &mut pod.metadata);
        let object = to_value(&pod);
        self.record(
            &mut state,
            Kind::Pod,
            EventType::Deleted,
            Some(namespace.to_owned()),
            object,
        );
        Some(pod)
    }

    pub fn node(&self, name: &str) -> Option<Node> {
        self.lock().nodes.get(name).cloned()
    }

    pub fn nodes(&self) -> (Vec<Node>, u64) {
        let state = self.lock();
        (state.nodes.values().cloned().collect(), state.revision)
    }

    /// Stores or replaces a node.
    pub fn put_node(&self, mut node: Node) {
        let mut state = self.lock();
        let name = node.metadata.name.clone().unwrap_or_default();
        let event_type = if state.nodes.contains_key(&name) {
            EventType::Modified
        } else {
            fill_server_metadata(&mut node.metadata);
            EventType::Added
        };
        Self::stamp(&mut state, &mut node.metadata);
        state.nodes.insert(name, node.clone());
        let object = to_value(&node);
        self.record(&mut state, Kind::Node, event_type, None, object);
    }
}

/// Sets `uid` and `creationTimestamp` and clears what clients may not set.
fn fill_server_metadata(metadata: &mut ObjectMeta) {
    metadata.uid = Some(uuid::Uuid::now_v7().to_string());
    metadata.creation_timestamp = Some(now());
    metadata.deletion_timestamp = None;
    metadata.deletion_grace_period_seconds = None;
    metadata.generation = Some(1);
    metadata.managed_fields = None;
}

/// Returns the current time in the API's second precision.
pub(crate) fn now() -> Time {
    let seconds = Timestamp::now().as_second();
    Time(Timestamp::from_second(seconds).expect("the current second is a valid timestamp"))
}

/// Serialises an object the emulator built, with its `apiVersion` and `kind`.
pub(crate) fn to_value(object: &impl Serialize) -> Value {
    serde_json::to_value(object).expect("k8s-openapi objects serialise to JSON")
}
