//! Events the controllers record (`SuccessfulCreate`, `ScalingReplicaSet`, ...), written in the
//! background so a sync never waits for them. What is written is decided by [`EventCorrelator`],
//! as upstream's: an event repeating an earlier one (same source, object, type, reason and
//! message) bumps that event's `count` and `lastTimestamp` instead of adding another; and once
//! [`MAX_SIMILAR`] events of one object with the same type and reason but different messages
//! arrive with less than [`SIMILAR_WINDOW`] between each and the next, the further ones are folded
//! into one event, `(combined from similar events): <latest message>`, whose count rises.
//!
//! Memory stays bounded: the correlator remembers at most [`REMEMBERED`] written events and as
//! many groups of similar ones, forgetting the least recently seen first, and a group keeps at
//! most [`MAX_SIMILAR`] messages. Forgetting only means the next repeat is written afresh.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

/// The component name events carry.
pub const COMPONENT: &str = "controller-manager";

/// How many written events, and how many groups of similar events, are remembered.
pub const REMEMBERED: usize = 4096;
/// Similar events with different messages written separately before they are combined.
pub const MAX_SIMILAR: usize = 10;
/// The longest quiet gap between similar events for them to count as one burst.
pub const SIMILAR_WINDOW: Duration = Duration::from_secs(600);
/// How a combined event's message begins, as upstream.
pub const COMBINED_PREFIX: &str = "(combined from similar events): ";

/// Where the correlator reads the time (tests set it by hand).
pub trait Clock: Send + 'static {
    fn now(&self) -> jiff::Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> jiff::Timestamp {
        jiff::Timestamp::now()
    }
}

/// A map that keeps at most `cap` entries, dropping the least recently used.
struct Lru<V> {
    cap: usize,
    tick: u64,
    entries: HashMap<String, (u64, V)>,
    order: BTreeMap<u64, String>,
}

impl<V> Lru<V> {
    fn new(cap: usize) -> Lru<V> {
        Lru { cap: cap.max(1), tick: 0, entries: HashMap::new(), order: BTreeMap::new() }
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.tick += 1;
        let (used, v) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = self.tick;
        self.order.insert(self.tick, key.to_string());
        Some(v)
    }

    fn insert(&mut self, key: String, v: V) {
        self.tick += 1;
        if let Some((used, _)) = self.entries.remove(&key) {
            self.order.remove(&used);
        }
        while self.entries.len() >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.entries.remove(&oldest);
        }
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (self.tick, v));
    }

    fn remove(&mut self, key: &str) -> Option<V> {
        let (used, v) = self.entries.remove(key)?;
        self.order.remove(&used);
        Some(v)
    }

    fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Messages of one object's similar events seen in the current burst.
struct Similar {
    messages: HashSet<String>,
    last: jiff::Timestamp,
}

/// An event already written, which a repeat updates.
struct Written {
    name: String,
    count: i32,
    first: jiff::Timestamp,
}

/// Decides, for each event recorded, what to write: a new event (count 1) or an update of one
/// written before (count above 1, same name). Pure but for the clock.
pub struct EventCorrelator<C: Clock = SystemClock> {
    clock: C,
    similar: Lru<Similar>,
    written: Lru<Written>,
    /// Keeps names unique when the clock does not move between events.
    sequence: u64,
}

const SEP: char = '\u{1f}';

/// What makes events similar: the source, the object, the type and the reason.
fn aggregate_key(object: &ObjectReference, type_: &str, reason: &str) -> String {
    let o = |v: &Option<String>| v.clone().unwrap_or_default();
    [
        COMPONENT.to_string(),
        o(&object.kind),
        o(&object.namespace),
        o(&object.name),
        o(&object.uid),
        o(&object.api_version),
        type_.to_string(),
        reason.to_string(),
    ]
    .join(&SEP.to_string())
}

/// What makes events the same: similar, with the same field path and message.
fn event_key(aggregate: &str, object: &ObjectReference, message: &str) -> String {
    format!("{aggregate}{SEP}{}{SEP}{message}", object.field_path.as_deref().unwrap_or_default())
}

impl EventCorrelator<SystemClock> {
    pub fn new() -> Self {
        EventCorrelator::with_clock(SystemClock)
    }
}

impl Default for EventCorrelator<SystemClock> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Clock> EventCorrelator<C> {
    pub fn with_clock(clock: C) -> Self {
        EventCorrelator { clock, similar: Lru::new(REMEMBERED), written: Lru::new(REMEMBERED), sequence: 0 }
    }

    /// The event to write for this one: `count` 1 to create it, more to update the event of that
    /// name (`count`, `lastTimestamp` and `message`).
    pub fn correlate(&mut self, object: ObjectReference, type_: &str, reason: &str, message: String) -> Event {
        let now = self.clock.now();
        let aggregate = aggregate_key(&object, type_, reason);
        let window = jiff::SignedDuration::try_from(SIMILAR_WINDOW).unwrap_or(jiff::SignedDuration::MAX);
        let mut group = self
            .similar
            .remove(&aggregate)
            .filter(|g| now.duration_since(g.last) <= window)
            .unwrap_or_else(|| Similar { messages: HashSet::new(), last: now });
        group.messages.insert(message.clone());
        group.last = now;
        let (key, message) = if group.messages.len() < MAX_SIMILAR {
            (event_key(&aggregate, &object, &message), message)
        } else {
            // Keep the set below the limit, so every further new message is combined too.
            if let Some(any) = group.messages.iter().next().cloned() {
                group.messages.remove(&any);
            }
            (aggregate.clone(), format!("{COMBINED_PREFIX}{message}"))
        };
        self.similar.insert(aggregate, group);

        let (name, count, first) = match self.written.get_mut(&key) {
            Some(w) => {
                w.count = w.count.saturating_add(1);
                (w.name.clone(), w.count, w.first)
            }
            None => {
                self.sequence += 1;
                let stamp = (now.as_nanosecond() as u64).wrapping_add(self.sequence);
                let name = format!("{}.{stamp:x}", object.name.as_deref().unwrap_or_default());
                self.written.insert(key, Written { name: name.clone(), count: 1, first: now });
                (name, 1, now)
            }
        };
        let namespace = object.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
        Event {
            metadata: ObjectMeta { name: Some(name), namespace: Some(namespace), ..Default::default() },
            involved_object: object,
            reason: Some(reason.into()),
            message: Some(message),
            type_: Some(type_.into()),
            count: Some(count),
            first_timestamp: Some(Time(first)),
            last_timestamp: Some(Time(now)),
            source: Some(EventSource { component: Some(COMPONENT.into()), host: None }),
            reporting_component: Some(COMPONENT.into()),
            ..Default::default()
        }
    }

    /// How many groups and written events are remembered (both at most [`REMEMBERED`]).
    pub fn remembered(&self) -> (usize, usize) {
        (self.similar.len(), self.written.len())
    }
}

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

/// Writes what the correlator decided: an update of an earlier event (created again if it was
/// deleted meanwhile), or a new one.
async fn write(client: &kube::Client, event: Event) {
    let ns = event.metadata.namespace.clone().unwrap_or_default();
    let name = event.metadata.name.clone().unwrap_or_default();
    let api: Api<Event> = Api::namespaced(client.clone(), &ns);
    if event.count.unwrap_or(1) > 1 {
        let patch = serde_json::json!({
            "count": event.count, "lastTimestamp": event.last_timestamp, "message": event.message,
        });
        match api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => return,
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => {
                tracing::debug!(error = %e, reason = ?event.reason, "Could not update an event");
                return;
            }
        }
    }
    if let Err(e) = api.create(&PostParams::default(), &event).await {
        tracing::debug!(error = %e, reason = ?event.reason, "Could not record an event");
    }
}

impl Recorder {
    pub fn new(client: kube::Client) -> Recorder {
        let (tx, mut rx) = mpsc::unbounded_channel::<(ObjectReference, &'static str, &'static str, String)>();
        tokio::spawn(async move {
            let mut correlator = EventCorrelator::new();
            while let Some((object, type_, reason, message)) = rx.recv().await {
                let event = correlator.correlate(object, type_, reason, message);
                write(&client, event).await;
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

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone)]
    struct ManualClock(Arc<Mutex<jiff::Timestamp>>);

    impl ManualClock {
        fn advance(&self, d: Duration) {
            let mut t = self.0.lock().expect("clock");
            *t = t.checked_add(jiff::SignedDuration::try_from(d).expect("duration")).expect("time");
        }
    }

    impl Clock for ManualClock {
        fn now(&self) -> jiff::Timestamp {
            *self.0.lock().expect("clock")
        }
    }

    fn correlator() -> (EventCorrelator<ManualClock>, ManualClock) {
        let clock = ManualClock(Arc::new(Mutex::new(jiff::Timestamp::from_second(1_800_000_000).expect("t"))));
        (EventCorrelator::with_clock(clock.clone()), clock)
    }

    fn object(name: &str) -> ObjectReference {
        ObjectReference {
            kind: Some("Pod".into()),
            api_version: Some("v1".into()),
            namespace: Some("default".into()),
            name: Some(name.into()),
            uid: Some(format!("uid-{name}")),
            ..Default::default()
        }
    }

    /// (name, count, message) of what the correlator decides for `message` on pod `web`.
    fn record(c: &mut EventCorrelator<ManualClock>, reason: &str, message: &str) -> (String, i32, String) {
        let e = c.correlate(object("web"), "Warning", reason, message.to_string());
        (e.metadata.name.expect("name"), e.count.expect("count"), e.message.expect("message"))
    }

    #[test]
    fn an_identical_event_is_counted_on_the_first() {
        let (mut c, clock) = correlator();
        let (first, n, _) = record(&mut c, "BackOff", "again");
        assert_eq!(n, 1);
        clock.advance(Duration::from_secs(5));
        let e = c.correlate(object("web"), "Warning", "BackOff", "again".into());
        assert_eq!((e.metadata.name.as_deref(), e.count), (Some(first.as_str()), Some(2)));
        assert!(e.last_timestamp > e.first_timestamp, "the first time stays, the last moves");
        assert_eq!(record(&mut c, "BackOff", "again").1, 3);
    }

    #[test]
    fn similar_events_with_different_messages_are_combined_from_the_tenth() {
        let (mut c, clock) = correlator();
        let mut names = HashSet::new();
        for i in 1..MAX_SIMILAR {
            let (name, n, message) = record(&mut c, "FailedCreate", &format!("attempt {i}"));
            assert_eq!((n, message), (1, format!("attempt {i}")), "written as is");
            names.insert(name);
            clock.advance(Duration::from_secs(30));
        }
        assert_eq!(names.len(), MAX_SIMILAR - 1, "each its own event");
        let (combined, n, message) = record(&mut c, "FailedCreate", "attempt 10");
        assert_eq!((n, message.as_str()), (1, "(combined from similar events): attempt 10"));
        assert!(!names.contains(&combined), "a new event");
        for (i, want) in [(11, 2), (12, 3)] {
            let (name, n, message) = record(&mut c, "FailedCreate", &format!("attempt {i}"));
            assert_eq!((name.as_str(), n), (combined.as_str(), want), "the combined event is counted");
            assert_eq!(message, format!("{COMBINED_PREFIX}attempt {i}"), "with the latest message");
        }
        // Another reason, or another object, is not similar.
        assert_eq!(record(&mut c, "Other", "attempt 13").2, "attempt 13");
        let e = c.correlate(object("db"), "Warning", "FailedCreate", "attempt 14".into());
        assert_eq!(e.message.as_deref(), Some("attempt 14"));
    }

    #[test]
    fn a_quiet_gap_longer_than_the_window_starts_a_new_burst() {
        let (mut c, clock) = correlator();
        for i in 0..MAX_SIMILAR {
            record(&mut c, "FailedCreate", &format!("m{i}"));
        }
        assert!(record(&mut c, "FailedCreate", "more").2.starts_with(COMBINED_PREFIX));
        clock.advance(SIMILAR_WINDOW + Duration::from_secs(1));
        assert_eq!(record(&mut c, "FailedCreate", "after the gap").2, "after the gap");
        // Within the window, the burst goes on: the gap is measured from the latest event.
        let (mut c, clock) = correlator();
        for i in 0..MAX_SIMILAR - 1 {
            record(&mut c, "FailedCreate", &format!("m{i}"));
            clock.advance(SIMILAR_WINDOW - Duration::from_secs(1));
        }
        assert!(record(&mut c, "FailedCreate", "late").2.starts_with(COMBINED_PREFIX));
    }

    #[test]
    fn memory_stays_bounded_and_the_least_recently_seen_are_forgotten() {
        let (mut c, _) = correlator();
        let (kept, _, _) = record(&mut c, "Kept", "hot");
        for i in 0..REMEMBERED + 10 {
            let e = c.correlate(object(&format!("p{i}")), "Normal", "Created", "created".into());
            assert_eq!(e.count, Some(1));
            if i % 100 == 0 {
                assert_eq!(record(&mut c, "Kept", "hot").0, kept, "used recently, so remembered");
            }
        }
        let (groups, written) = c.remembered();
        assert!(groups <= REMEMBERED && written <= REMEMBERED, "{groups} {written}");
        let e = c.correlate(object("p0"), "Normal", "Created", "created".into());
        assert_eq!(e.count, Some(1), "forgotten: written afresh");
    }

    #[test]
    fn the_lru_drops_the_least_recently_used() {
        let mut l = Lru::new(2);
        l.insert("a".into(), 1);
        l.insert("b".into(), 2);
        assert!(l.get_mut("a").is_some());
        l.insert("c".into(), 3);
        assert!(l.get_mut("b").is_none(), "b was the least recently used");
        assert_eq!(l.get_mut("a").copied(), Some(1));
        assert_eq!(l.get_mut("c").copied(), Some(3));
        assert_eq!(l.len(), 2);
    }
}
