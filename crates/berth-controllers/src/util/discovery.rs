//! The resources the API server serves, found through discovery (`/api`, `/apis`).

use kube::Client;
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};

/// One served resource (at its group's preferred version).
#[derive(Debug, Clone)]
pub struct Served {
    /// Group, version, kind and plural.
    pub resource: ApiResource,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Verbs the resource supports.
    pub verbs: Vec<String>,
}

impl Served {
    /// Whether the resource supports `verb`.
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// Whether it can be listed, watched and deleted (what the garbage collector needs).
    pub fn collectable(&self) -> bool {
        self.supports(verbs::LIST) && self.supports(verbs::WATCH) && self.supports(verbs::DELETE)
    }

    /// `plural.group`, e.g. `replicasets.apps` or `pods` for the core group.
    pub fn key(&self) -> String {
        if self.resource.group.is_empty() {
            self.resource.plural.clone()
        } else {
            format!("{}.{}", self.resource.plural, self.resource.group)
        }
    }

    /// Events are never owners of anything worth collecting and churn constantly (upstream's
    /// garbage collector ignores them too).
    pub fn is_event(&self) -> bool {
        self.resource.plural == "events" && (self.resource.group.is_empty() || self.resource.group == "events.k8s.io")
    }
}

fn served(resource: ApiResource, caps: ApiCapabilities) -> Served {
    Served { resource, namespaced: caps.scope == Scope::Namespaced, verbs: caps.operations }
}

/// Every resource the server serves, at each group's preferred version.
pub async fn discover(client: Client) -> Result<Vec<Served>, kube::Error> {
    let discovery = Discovery::new(client).run().await?;
    let mut out = Vec::new();
    for group in discovery.groups() {
        for (resource, caps) in group.recommended_resources() {
            out.push(served(resource, caps));
        }
    }
    Ok(out)
}
