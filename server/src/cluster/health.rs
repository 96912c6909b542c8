//! The health task: every `health_interval_ms`, ask every other node of
//! the map for `GET /health` at once, each with `health_timeout_ms`, and
//! record Up (200), Draining (503) or Down (anything else, or silence).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;

use super::{Cluster, NodeState, lock};

impl Cluster {
    /// Poll until `stop` turns true. The first round runs at once.
    pub async fn run_health(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if *stop.borrow() {
                return;
            }
            let interval = *lock(&self.health_interval);
            let timeout = *lock(&self.health_timeout);
            let round = self.clone().poll_all(timeout);
            let pause = tokio::time::sleep(interval);
            tokio::select! {
                _ = async { round.await; pause.await } => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// One round: every other node, concurrently.
    async fn poll_all(self: Arc<Self>, timeout: Duration) {
        let map = self.map();
        let mut polls = JoinSet::new();
        for node in map.other_nodes() {
            let (name, addr) = (node.name.clone(), node.http.to_string());
            polls.spawn(async move { (name, probe(&addr, timeout).await) });
        }
        while let Some(done) = polls.join_next().await {
            if let Ok((name, state)) = done {
                self.set_state(&name, state);
            }
        }
    }
}

/// One `GET /health`.
pub async fn probe(addr: &str, timeout: Duration) -> NodeState {
    let asked = cove_sync::http::http_request(addr, "GET", "/health");
    match tokio::time::timeout(timeout, asked).await {
        Ok(Ok((200, _))) => NodeState::Up,
        Ok(Ok((503, _))) => NodeState::Draining,
        _ => NodeState::Down,
    }
}
