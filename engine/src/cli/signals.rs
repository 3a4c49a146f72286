//! The signals that stop `danube run`: Ctrl-C (SIGINT), SIGTERM, and SIGHUP
//! from a closed terminal or a dropped SSH session.
//!
//! Handlers are installed at once, before any setup work, so a signal never
//! falls back to its default action (or to an inherited "ignore") while a job
//! could be starting.

use tokio::signal::unix::{Signal, SignalKind, signal};

pub struct Interrupts {
    listeners: Vec<(&'static str, Signal)>,
}

impl Interrupts {
    /// Installs the handlers. A signal whose handler cannot be installed is
    /// left out rather than failing the command.
    pub fn install() -> Interrupts {
        let kinds = [
            ("SIGINT", SignalKind::interrupt()),
            ("SIGTERM", SignalKind::terminate()),
            ("SIGHUP", SignalKind::hangup()),
        ];
        let listeners = kinds
            .into_iter()
            .filter_map(|(name, kind)| signal(kind).ok().map(|listener| (name, listener)))
            .collect();
        Interrupts { listeners }
    }

    /// Waits for the next signal and returns its name.
    pub async fn next(&mut self) -> &'static str {
        if self.listeners.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.listeners.iter_mut().map(|(name, listener)| {
            Box::pin(async move {
                listener.recv().await;
                *name
            })
        });
        futures::future::select_all(waits).await.0
    }
}
