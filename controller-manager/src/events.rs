//! Events the controllers record (`SuccessfulCreate`, `ScalingReplicaSet`, ...), written in the
//! background so a sync never waits for them. As upstream's recorder, an event repeating an
//! earlier one (same object, type, reason and message) bumps that event's `count` and
//! `lastTimestamp` instead of adding another.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

/// The component name events carry.
pub const COMPONENT: &str = "controller-manager";

/// How many distinct events are remembered for counting repeats.
const REMEMBERED: usize = 4096;

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<(ObjectReference, &'static str, &'static str, String)>,
}

/// The reference an event points at.
pub fn reference<K: kube::Resource<DynamicType = ()>>(o: &K) -> ObjectReference {
    let m = o.meta();
    ObjectReference {
        api_version: Some(K::api_version(&()).into_owned()),
        kind: Some(K::kind(&()).into_owned()),
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        ..Default::default()
    }
}

impl Recorder {
    pub fn new(client: kube::Client) -> Recorder {
        let (tx, mut rx) = mpsc::unbounded_channel::<(ObjectReference, &'static str, &'static str, String)>();
        tokio::spawn(async move {
            let mut seen: HashMap<(String, &'static str, String), (String, i32)> = HashMap::new();
            while let Some((object, type_, reason, message)) = rx.recv().await {
                let ns = object.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
                let api: Api<Event> = Api::namespaced(client.clone(), &ns);
                let now = Time(jiff::Timestamp::now());
                let key = (object.uid.clone().unwrap_or_default(), reason, message.clone());
                if let Some((name, count)) = seen.get_mut(&key) {
                    *count += 1;
                    let patch = serde_json::json!({"count": *count, "lastTimestamp": now});
                    if api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                        continue;
                    }
                }
                let name = format!(
                    "{}.{:x}",
                    object.name.clone().unwrap_or_default(),
                    jiff::Timestamp::now().as_nanosecond() as u64 ^ rand::random::<u32>() as u64
                );
                let ev = Event {
                    metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(ns), ..Default::default() },
                    involved_object: object,
                    reason: Some(reason.into()),
                    message: Some(message),
                    type_: Some(type_.into()),
                    count: Some(1),
                    first_timestamp: Some(now.clone()),
                    last_timestamp: Some(now),
                    source: Some(EventSource { component: Some(COMPONENT.into()), host: None }),
                    reporting_component: Some(COMPONENT.into()),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &ev).await {
                    Ok(_) => {
                        if seen.len() >= REMEMBERED {
                            seen.clear();
                        }
                        seen.insert(key, (name, 1));
                    }
                    Err(e) => tracing::debug!(error = %e, %reason, "Could not record an event"),
                }
            }
        });
        Recorder { tx }
    }

    /// A recorder that drops everything (unit tests).
    pub fn discard() -> Recorder {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move { while rx.recv().await.is_some() {} });
        Recorder { tx }
    }

    pub fn normal(&self, object: ObjectReference, reason: &'static str, message: String) {
        let _ = self.tx.send((object, "Normal", reason, message));
    }

    pub fn warning(&self, object: ObjectReference, reason: &'static str, message: String) {
        let _ = self.tx.send((object, "Warning", reason, message));
    }
}
