//! Helpers shared by the controllers: label selectors, pod predicates, owner references, events,
//! informers (watch-fed caches that fan events out to controllers) and per-object retry back-off.

pub mod backoff;
pub mod claim;
pub mod discovery;
pub mod events;
pub mod informer;
pub mod meta;
pub mod overlay;
pub mod pods;
pub mod selector;
pub mod semantic;
pub mod time;
pub mod workqueue;
