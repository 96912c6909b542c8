//! The `[http]` admin endpoint's answers: Prometheus metrics, replication
//! status and `sync now` (served by `cove_sync::http`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cove_sync::http::AdminHandler;
use cove_sync::replicator::{Replicator, summarize};

pub struct Admin {
    pub replicator: Option<Arc<Replicator>>,
    /// The cluster map, when `[cluster]` is set: its drain flag.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// This node's directory, for `/cluster/user`.
    pub users: Arc<crate::cluster::lookup::Users>,
}

impl AdminHandler for Admin {
    fn metrics(&self) -> String {
        let mut out = format!(
            "# HELP cove_up 1 while cove serves\n# TYPE cove_up gauge\ncove_up 1\n# HELP cove_build_info cove's version\n# TYPE cove_build_info gauge\ncove_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        );
        out.push_str(&crate::metrics::METRICS.render());
        if let Some(r) = &self.replicator {
            out.push_str(&r.metrics());
        }
        out
    }

    fn sync_status(&self) -> String {
        match &self.replicator {
            Some(r) => r.status_json(),
            None => "{\"replication\":\"not configured\",\"peers\":[]}".to_string(),
        }
    }

    fn sync_now(
        &self,
        user: Option<String>,
    ) -> Pin<Box<dyn Future<Output = Result<String, String>> + Send + '_>> {
        Box::pin(async move {
            let Some(r) = &self.replicator else {
                return Err("replication is not configured on this node ([replication])".into());
            };
            r.sync_now(user).await.map(|reports| summarize(&reports))
        })
    }

    fn health(&self) -> (u16, String) {
        match &self.cluster {
            Some(c) if c.is_draining() => (503, "draining\n".into()),
            _ => (200, "serving\n".into()),
        }
    }

    // GET /cluster/user?address=: cove::cluster::lookup.
    fn cluster_user(
        &self,
        address: String,
    ) -> Pin<Box<dyn Future<Output = (u16, String)> + Send + '_>> {
        Box::pin(
            async move { crate::cluster::lookup::cluster_user_answer(&self.users, &address).await },
        )
    }
}
