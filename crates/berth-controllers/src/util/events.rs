//! Event recording in the shape `kubectl describe` and `kubectl get events` show: core/v1 Events
//! with `source.component`, `count` and first/last timestamps. Like client-go's recorder, events are
//! written in the background (a full queue drops events rather than stalling a controller), and
//! an identical event (same object, type, reason and message) within ten minutes bumps `count`
//! on the existing Event instead of creating another.
//!
//! As client-go's spam filter does, each object gets a burst of 25 events per type and reason,
//! refilled at one per five minutes, so scaling to a thousand pods does not write a thousand
//! SuccessfulCreate events.
//!
//! kube-rs' `events::Recorder` is not used because it folds every event with the same reason into
//! one series that keeps the first message, so "Scaled down ..." would show as "Scaled up ...".

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use tokio::sync::mpsc;

use super::time;

const QUEUE_CAPACITY: usize = 1000;
const DEDUP_WINDOW: Duration = Duration::from_secs(600);
const MAX_MESSAGE_LEN: usize = 1024;
const SPAM_BURST: f64 = 25.0;
const SPAM_REFILL_EVERY: Duration = Duration::from_secs(300);

/// Normal or Warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Routine progress.
    Normal,
    /// Something went wrong.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

struct Pending {
    regarding: ObjectReference,
    type_: EventType,
    reason: String,
    message: String,
}

/// Records events for one controller (`component`, e.g. "deployment-controller").
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Pending>,
}

impl Recorder {
    /// Starts the background writer and returns a handle to record through.
    pub fn new(client: Client, component: &str) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        tokio::spawn(write_events(client, component.to_string(), rx));
        Recorder { tx }
    }

    /// A recorder whose events go nowhere (for unit tests of code that records).
    #[cfg(test)]
    pub fn discard() -> Self {
        let (tx, mut rx) = mpsc::channel::<Pending>(QUEUE_CAPACITY);
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        Recorder { tx }
    }

    /// Records an event about `obj`.
    pub fn record<K: Resource<DynamicType = ()>>(&self, obj: &K, type_: EventType, reason: &str, message: String) {
        let meta = obj.meta();
        let regarding = ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            uid: meta.uid.clone(),
            resource_version: meta.resource_version.clone(),
            field_path: None,
        };
        let pending = Pending { regarding, type_, reason: reason.to_string(), message };
        if self.tx.try_send(pending).is_err() {
            tracing::warn!(reason, "event queue full, dropping event");
        }
    }
}

struct Seen {
    name: String,
    count: i32,
    at: Instant,
}

type DedupKey = (String, EventType, String, String);

/// Token buckets per (object uid, type, reason).
#[derive(Default)]
pub struct SpamFilter {
    buckets: HashMap<(String, EventType, String), (f64, Instant)>,
}

impl SpamFilter {
    /// Whether an event may be written now (and takes a token if so).
    pub fn allow(&mut self, uid: &str, type_: EventType, reason: &str, now: Instant) -> bool {
        if self.buckets.len() > 10_000 {
            self.buckets.retain(|_, (_, at)| now.duration_since(*at) < SPAM_REFILL_EVERY * 25);
        }
        let (tokens, last) =
            self.buckets.entry((uid.to_string(), type_, reason.to_string())).or_insert((SPAM_BURST, now));
        let refill = now.duration_since(*last).as_secs_f64() / SPAM_REFILL_EVERY.as_secs_f64();
        *tokens = (*tokens + refill).min(SPAM_BURST);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

async fn write_events(client: Client, component: String, mut rx: mpsc::Receiver<Pending>) {
    let mut seen: HashMap<DedupKey, Seen> = HashMap::new();
    let mut spam = SpamFilter::default();
    while let Some(ev) = rx.recv().await {
        seen.retain(|_, s| s.at.elapsed() < DEDUP_WINDOW);
        let uid = ev.regarding.uid.clone().unwrap_or_default();
        if !spam.allow(&uid, ev.type_, &ev.reason, Instant::now()) {
            continue;
        }
        let namespace = ev.regarding.namespace.clone().unwrap_or_else(|| "default".to_string());
        let api: Api<Event> = Api::namespaced(client.clone(), &namespace);
        let mut message = ev.message;
        if message.len() > MAX_MESSAGE_LEN {
            let mut cut = MAX_MESSAGE_LEN;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        let key = (ev.regarding.uid.clone().unwrap_or_default(), ev.type_, ev.reason.clone(), message.clone());
        let now = time::now_time();
        if let Some(prev) = seen.get_mut(&key) {
            let count = prev.count + 1;
            let patch = serde_json::json!({"count": count, "lastTimestamp": now});
            match api.patch(&prev.name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(_) => {
                    prev.count = count;
                    prev.at = Instant::now();
                    continue;
                }
                Err(err) => {
                    tracing::debug!(%err, "could not bump event count, creating a new event");
                    seen.remove(&key);
                }
            }
        }
        let base = ev.regarding.name.clone().unwrap_or_else(|| component.clone());
        let nanos = k8s_openapi::jiff::Timestamp::now().as_nanosecond();
        let name = format!("{base}.{nanos:x}");
        let event = Event {
            metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace.clone()), ..Default::default() },
            involved_object: ev.regarding,
            reason: Some(ev.reason),
            message: Some(message),
            type_: Some(ev.type_.as_str().to_string()),
            source: Some(EventSource { component: Some(component.clone()), host: None }),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            count: Some(1),
            reporting_component: Some(component.clone()),
            reporting_instance: Some(component.clone()),
            event_time: None,
            action: None,
            related: None,
            series: None,
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                seen.insert(key, Seen { name, count: 1, at: Instant::now() });
            }
            Err(err) => tracing::warn!(%err, "could not write event"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spam_filter_allows_a_burst_then_refills_slowly() {
        let mut f = SpamFilter::default();
        let t0 = Instant::now();
        for _ in 0..25 {
            assert!(f.allow("u", EventType::Normal, "SuccessfulCreate", t0));
        }
        assert!(!f.allow("u", EventType::Normal, "SuccessfulCreate", t0));
        // Other reasons and objects have their own buckets.
        assert!(f.allow("u", EventType::Warning, "FailedCreate", t0));
        assert!(f.allow("v", EventType::Normal, "SuccessfulCreate", t0));
        assert!(f.allow("u", EventType::Normal, "SuccessfulCreate", t0 + SPAM_REFILL_EVERY));
        assert!(!f.allow("u", EventType::Normal, "SuccessfulCreate", t0 + SPAM_REFILL_EVERY));
    }
}
