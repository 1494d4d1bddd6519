//! Kubernetes events from the node (as `kubelet`) and its scheduler (as `default-scheduler`),
//! published by one background task so a slow API never stalls a pod worker.
//!
//! Events go through kube-rs' `Recorder` (`events.k8s.io/v1`). An API server that serves only
//! core `v1` events (what `kubectl describe` reads) gets core events instead, with repeats
//! folded into a count the way kubelet's recorder does.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event as CoreEvent, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Which component an event is reported by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Kubelet,
    Scheduler,
}

impl Source {
    fn component(self) -> &'static str {
        match self {
            Source::Kubelet => "kubelet",
            Source::Scheduler => "default-scheduler",
        }
    }
}

struct Outgoing {
    source: Source,
    regarding: ObjectReference,
    event: Event,
}

/// Cheap to clone; events are dropped (with a log line) if the publisher falls far behind.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::Sender<Outgoing>,
}

const QUEUE: usize = 1024;
/// Repeats of the same event within this window update one core event's count.
const FOLD_WINDOW: Duration = Duration::from_secs(600);

impl EventSink {
    /// Starts the publisher; it ends when every sink is dropped.
    pub fn spawn(client: kube::Client, node_name: &str) -> EventSink {
        let (tx, rx) = mpsc::channel::<Outgoing>(QUEUE);
        tokio::spawn(publish(client, node_name.to_owned(), rx));
        EventSink { tx }
    }

    pub fn send(&self, source: Source, regarding: &ObjectReference, warning: bool, reason: &str, note: String) {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_owned(),
            note: Some(note),
            action: reason.to_owned(),
            secondary: None,
        };
        let outgoing = Outgoing { source, regarding: regarding.clone(), event };
        if self.tx.try_send(outgoing).is_err() {
            tracing::warn!(reason, "event queue full; dropping event");
        }
    }

    pub fn normal(&self, regarding: &ObjectReference, reason: &str, note: String) {
        self.send(Source::Kubelet, regarding, false, reason, note);
    }

    pub fn warning(&self, regarding: &ObjectReference, reason: &str, note: String) {
        self.send(Source::Kubelet, regarding, true, reason, note);
    }
}

type FoldKey = (Source, String, String, String);

async fn publish(client: kube::Client, node_name: String, mut rx: mpsc::Receiver<Outgoing>) {
    let kubelet =
        Recorder::new(client.clone(), Reporter { controller: "kubelet".into(), instance: Some(node_name.clone()) });
    let scheduler = Recorder::new(client.clone(), Reporter { controller: "default-scheduler".into(), instance: None });
    let mut core_only = false;
    let mut folded: HashMap<FoldKey, (String, i32, Instant)> = HashMap::new();
    while let Some(outgoing) = rx.recv().await {
        if !core_only {
            let recorder = match outgoing.source {
                Source::Kubelet => &kubelet,
                Source::Scheduler => &scheduler,
            };
            match recorder.publish(&outgoing.event, &outgoing.regarding).await {
                Ok(()) => continue,
                Err(kube::Error::Api(response)) if response.code == 404 && response.reason == "NotFound" => {
                    tracing::info!("events.k8s.io/v1 is not served; recording core v1 events");
                    core_only = true;
                }
                Err(error) => {
                    tracing::debug!(%error, reason = %outgoing.event.reason, "cannot publish event");
                    continue;
                }
            }
        }
        publish_core(&client, &node_name, &outgoing, &mut folded).await;
    }
}

async fn publish_core(
    client: &kube::Client,
    node_name: &str,
    outgoing: &Outgoing,
    folded: &mut HashMap<FoldKey, (String, i32, Instant)>,
) {
    let regarding = &outgoing.regarding;
    let namespace = regarding.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let api: Api<CoreEvent> = Api::namespaced(client.clone(), &namespace);
    let note = outgoing.event.note.clone().unwrap_or_default();
    let now = Timestamp::now();
    let seconds = Time(Timestamp::from_second(now.as_second()).unwrap_or(now));
    folded.retain(|_, (_, _, at)| at.elapsed() < FOLD_WINDOW);
    let key = (outgoing.source, regarding.uid.clone().unwrap_or_default(), outgoing.event.reason.clone(), note.clone());
    if let Some((name, count, at)) = folded.get_mut(&key) {
        *count += 1;
        *at = Instant::now();
        let patch = serde_json::json!({ "count": *count, "lastTimestamp": seconds });
        match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return,
            Err(error) => tracing::debug!(%error, "cannot update event count; recording a new one"),
        }
    }
    let object = regarding.name.clone().unwrap_or_else(|| "object".to_owned());
    let name = format!("{object}.{:x}", now.as_nanosecond());
    let event = CoreEvent {
        metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(namespace), ..Default::default() },
        involved_object: regarding.clone(),
        reason: Some(outgoing.event.reason.clone()),
        message: Some(note),
        type_: Some(match outgoing.event.type_ {
            EventType::Normal => "Normal".to_owned(),
            EventType::Warning => "Warning".to_owned(),
        }),
        source: Some(EventSource {
            component: Some(outgoing.source.component().to_owned()),
            host: (outgoing.source == Source::Kubelet).then(|| node_name.to_owned()),
        }),
        first_timestamp: Some(seconds.clone()),
        last_timestamp: Some(seconds),
        count: Some(1),
        reporting_component: Some(outgoing.source.component().to_owned()),
        reporting_instance: Some(node_name.to_owned()),
        action: Some(outgoing.event.action.clone()),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &event).await {
        Ok(_) => {
            folded.insert(key, (name, 1, Instant::now()));
        }
        Err(error) => tracing::debug!(%error, "cannot record event"),
    }
}
