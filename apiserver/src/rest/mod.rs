//! The REST verbs for every resource, over [`Storage`]: create, get, list, update (incl. `/status`
//! and `/finalize`), patch, delete, deletecollection and watch.
//!
//! One generic path serves all kinds; a kind's [`Strategy`](crate::resources::Strategy) adds its
//! defaults and validation. Writes are optimistic: read, compute, compare-and-swap on the
//! revision read, and on a lost race read again (or answer 409 when the client pinned a
//! resourceVersion). Object lifecycle:
//!
//! ```text
//! create ──> live ──DELETE (no finalizers)──────────────────────────────> gone
//!              └──DELETE (finalizers)──> deletionTimestamp set ──last finalizer removed──> gone
//! ```

pub mod allocator;
pub mod namespaces;
pub mod priority;
pub mod reflector;
pub mod subresources;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tracing::{error, warn};

use crate::codec::{self, Decoded, FieldValidation};
use crate::error::{ApiError, ApiResult, Cause, Details};
use crate::meta;
use crate::patch::apply::{self, Manager};
use crate::resources::{Registry, ResourceInfo};
use crate::selectors::Selectors;
use crate::storage::{KeyValue, Storage, StorageError, WatchEvent};
use crate::validation;

/// Attempts at an update that keeps losing compare-and-swap races before giving up with 409.
const MAX_UPDATE_ATTEMPTS: usize = 16;
/// `generateName` collisions retried before answering 409, as upstream does.
const GENERATE_NAME_ATTEMPTS: usize = 8;

pub struct Store {
    pub storage: Arc<dyn Storage>,
    pub registry: Arc<Registry>,
    /// How often an idle watch with bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Answers "is this namespace active" without a storage read once its watch runs
    /// ([`Store::run_caches`]); without it every check reads storage.
    pub namespaces: Arc<namespaces::NamespaceCache>,
    /// The PriorityClasses pod admission resolves, kept the same way.
    pub priority_classes: Arc<priority::PriorityClassCache>,
    /// Where Service ClusterIPs and NodePorts come from.
    pub ranges: allocator::Ranges,
}

/// Options every write takes.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub field_validation: FieldValidation,
    pub dry_run: bool,
    /// Who makes the change, for managedFields: `fieldManager`, else the client's user agent.
    /// `None` records nothing.
    pub field_manager: Option<String>,
    /// Server-side apply takes fields other managers own.
    pub force: bool,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions { field_validation: FieldValidation::Strict, dry_run: false, field_manager: None, force: false }
    }
}

/// How a write through [`Store::update_with`] is recorded in managedFields.
#[derive(Debug, Clone, Copy)]
pub enum Track<'a> {
    /// Not at all: the server's own bookkeeping (bindings, disruption budget status).
    No,
    /// As an update by this manager through this subresource.
    Update(Manager<'a>),
    /// The change already carries its record (server-side apply computes it).
    Done,
}

/// What an [`Store::update_with`] call does besides computing the new object.
#[derive(Debug, Clone, Copy)]
pub struct How<'a> {
    pub dry_run: bool,
    pub track: Track<'a>,
}

impl<'a> How<'a> {
    /// A write on behalf of a client, through `subresource` (`""`: the object itself).
    pub fn client(opts: &'a WriteOptions, subresource: &'a str) -> Self {
        let track = match &opts.field_manager {
            Some(name) => Track::Update(Manager { name, subresource }),
            None => Track::No,
        };
        How { dry_run: opts.dry_run, track }
    }
}

/// The kind, version and part of the object a write through `subresource` is tracked with.
fn tracked(info: &ResourceInfo, subresource: &str) -> apply::Target {
    let scope =
        if subresource == "status" { apply::Scope::Status } else { apply::Scope::Main { has_status: info.has_status } };
    apply::Target { kind: info.kind, api_version: info.api_version(), scope }
}

/// The outcome of a write.
#[derive(Debug)]
pub struct Written {
    pub object: Value,
    pub created: bool,
    /// `Warning` headers (unknown fields under `fieldValidation=Warn`).
    pub warnings: Vec<String>,
}

/// What DELETE did.
#[derive(Debug)]
pub enum Deleted {
    /// Removed from storage; the object as it last was.
    Gone(Value),
    /// Marked for deletion; waits for finalizers.
    Pending(Value),
}

/// What happens to an object's dependents when it is deleted (`propagationPolicy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// Delete now; the garbage collector removes dependents afterwards.
    #[default]
    Background,
    /// Keep the object (finalizer `foregroundDeletion`) until its blocking dependents are gone.
    Foreground,
    /// Keep the object (finalizer `orphan`) until its dependents no longer name it as owner.
    Orphan,
}

#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    pub precondition_uid: Option<String>,
    pub precondition_resource_version: Option<String>,
    pub dry_run: bool,
    /// Pods: seconds the kubelet gets to stop the containers (default: the pod's own setting).
    pub grace_period_seconds: Option<i64>,
    pub propagation: Propagation,
}

#[derive(Debug, Clone, Default)]
pub struct ListOptions {
    pub selectors: Selectors,
    pub limit: usize,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub resource_version_match: Option<String>,
}

/// One listed object: its stored bytes and revision, parsed only when someone needs the value.
#[derive(Debug, Clone)]
pub struct ListItem {
    pub kv: KeyValue,
}

impl ListItem {
    pub fn value(&self) -> ApiResult<Value> {
        codec::decode_stored(&self.kv.value, self.kv.mod_revision)
    }
    pub fn rendered(&self) -> ApiResult<Vec<u8>> {
        codec::render_stored(&self.kv.value, self.kv.mod_revision)
    }
}

#[derive(Debug)]
pub struct ListResult {
    pub items: Vec<ListItem>,
    pub revision: i64,
    pub continue_token: Option<String>,
    /// Objects after this page, when known (no selectors: a count of keys, as upstream gives).
    pub remaining_item_count: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PatchKind {
    Merge,
    Json,
    Strategic,
    /// Server-side apply (`application/apply-patch+yaml`).
    Apply,
}

/// A PATCH body decoded once, applied to each attempt's current object.
pub enum ParsedPatch {
    Merge(Value),
    Json(json_patch::Patch),
    Strategic(Value),
}

impl ParsedPatch {
    pub fn parse(patch: &Patch<'_>) -> ApiResult<ParsedPatch> {
        let value: Value = serde_json::from_slice(patch.body)
            .map_err(|e| ApiError::BadRequest(format!("error decoding patch: {e}")))?;
        match patch.kind {
            PatchKind::Json => serde_json::from_value(value).map(ParsedPatch::Json).map_err(|e| {
                ApiError::BadRequest(format!("the server rejected our request due to an error in our request: {e}"))
            }),
            PatchKind::Merge | PatchKind::Strategic if !value.is_object() => {
                Err(ApiError::BadRequest("a merge patch must be a JSON object".into()))
            }
            PatchKind::Merge => Ok(ParsedPatch::Merge(value)),
            PatchKind::Strategic => Ok(ParsedPatch::Strategic(value)),
            PatchKind::Apply => {
                Err(ApiError::UnsupportedMediaType("server-side apply is not supported for this subresource".into()))
            }
        }
    }

    /// The patched document; nothing of `doc` changes when the patch does not apply.
    pub fn apply(&self, doc: &Value, ty: crate::patch::schema::Ty) -> ApiResult<Value> {
        let invalid = |e: String| ApiError::Invalid {
            message: format!("the server rejected our request due to an error in our request: {e}"),
            details: Details::default(),
            causes: vec![],
        };
        match self {
            ParsedPatch::Merge(p) => {
                let mut out = doc.clone();
                json_patch::merge(&mut out, p);
                Ok(out)
            }
            ParsedPatch::Json(p) => {
                let mut out = doc.clone();
                json_patch::patch(&mut out, p).map_err(|e| invalid(e.to_string()))?;
                Ok(out)
            }
            ParsedPatch::Strategic(p) => crate::patch::strategic::apply(doc, p, ty)
                .map_err(|e| ApiError::BadRequest(format!("the strategic merge patch does not apply: {e}"))),
        }
    }
}

/// A PATCH body and how to read it.
#[derive(Debug, Clone)]
pub struct Patch<'a> {
    pub kind: PatchKind,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, Default)]
pub struct WatchOptions {
    pub selectors: Selectors,
    pub resource_version: Option<String>,
    pub allow_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
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

#[derive(Debug)]
pub enum WatchItem {
    Event(EventType, Value),
    /// Every change up to this revision has been sent; `initial_events_end` marks the end of
    /// `sendInitialEvents`.
    Bookmark {
        revision: i64,
        initial_events_end: bool,
    },
    Error(ApiError),
}

/// What a watch sends before following changes: the state at `revision` (synthetic ADDED
/// events), then, for `sendInitialEvents`, a bookmark marking the end of it.
struct Initial {
    revision: i64,
    items: Vec<ListItem>,
    end_bookmark: bool,
}

/// Storage failures in API terms. Internal details are logged here and not returned.
pub fn storage_error(info: &ResourceInfo, name: &str, e: StorageError) -> ApiError {
    match e {
        StorageError::NotFound => ApiError::not_found(info, name),
        StorageError::AlreadyExists => ApiError::already_exists(info, name),
        StorageError::Conflict { .. } => ApiError::stale(info, name),
        StorageError::Compacted { requested, compacted } => {
            ApiError::expired(format!("too old resource version: {requested} ({compacted})"))
        }
        StorageError::FutureRevision { requested } => {
            ApiError::Timeout(format!("Too large resource version: {requested}, current: older"))
        }
        StorageError::Unavailable(detail) => {
            warn!(resource = %info.plural, %detail, "Storage unavailable");
            ApiError::ServiceUnavailable(
                "the server is currently unable to handle the request: storage is unavailable".into(),
            )
        }
        StorageError::Timeout => {
            ApiError::Timeout("the storage request timed out; the request may or may not have taken effect".into())
        }
        StorageError::Internal(detail) => {
            error!(resource = %info.plural, %detail, "Storage failed");
            ApiError::Internal("Internal error occurred: storage request failed".into())
        }
    }
}

fn strip_rv(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    v
}

/// `normalized` limited to what `given` holds: objects key by key, lists item by item.
fn only_given(normalized: &Value, given: &Value) -> Value {
    match (normalized, given) {
        (Value::Object(n), Value::Object(g)) => Value::Object(
            n.iter()
                .filter_map(|(k, nv)| match g.get(k) {
                    Some(gv) if !gv.is_null() => Some((k.clone(), only_given(nv, gv))),
                    _ => None,
                })
                .collect(),
        ),
        (Value::Array(n), Value::Array(g)) if n.len() == g.len() => {
            Value::Array(n.iter().zip(g).map(|(nv, gv)| only_given(nv, gv)).collect())
        }
        _ => normalized.clone(),
    }
}

/// Everything but metadata and status: what `generation` tracks.
fn spec_part(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    v
}

fn set_rv(obj: &mut Value, rev: i64) {
    meta::meta_mut(obj).insert("resourceVersion".into(), json!(rev.to_string()));
}

/// Which finalizers hold an object back: `metadata.finalizers`, plus a namespace's own
/// `spec.finalizers`.
fn pending_finalizers(info: &ResourceInfo, obj: &Value) -> bool {
    if !meta::finalizers(obj).is_empty() {
        return true;
    }
    info.group.is_empty()
        && info.plural == "namespaces"
        && obj.pointer("/spec/finalizers").and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

fn is_service(info: &ResourceInfo) -> bool {
    info.group.is_empty() && info.plural == "services"
}

/// Seconds of grace a deleting object was given (`deletionGracePeriodSeconds`).
fn deletion_grace(obj: &Value) -> i64 {
    meta::meta(obj).and_then(|m| m.get("deletionGracePeriodSeconds")).and_then(Value::as_i64).unwrap_or(0)
}

/// How long a pod gets to stop, or 0 when it can go at once: not scheduled, already finished,
/// or forced.
fn pod_grace(pod: &Value, requested: Option<i64>) -> i64 {
    let scheduled = pod.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let finished = matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"));
    if !scheduled || finished {
        return 0;
    }
    requested
        .or_else(|| pod.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
        .unwrap_or(30)
        .max(0)
}

/// The object as DELETE leaves it when it cannot go at once (finalizers, propagation, a pod's
/// grace period), or `None` to delete it now. A deletion in progress keeps its timestamp unless
/// a shorter grace period moves it earlier.
fn mark_for_deletion(info: &ResourceInfo, old: &Value, opts: &DeleteOptions) -> Option<Value> {
    let propagation_finalizer = match opts.propagation {
        Propagation::Background => None,
        Propagation::Foreground => Some("foregroundDeletion"),
        Propagation::Orphan => Some("orphan"),
    };
    let is_pod = info.group.is_empty() && info.plural == "pods";
    let grace = if is_pod { pod_grace(old, opts.grace_period_seconds) } else { 0 };
    let mut marked = old.clone();
    if let Some(f) = propagation_finalizer {
        let m = meta::meta_mut(&mut marked);
        let fins = m.entry("finalizers").or_insert_with(|| json!([]));
        if let Some(list) = fins.as_array_mut()
            && !list.iter().any(|v| v == f)
        {
            list.push(json!(f));
        }
    }
    if !pending_finalizers(info, &marked) && grace == 0 && !meta::is_deleting(old) {
        return None;
    }
    let now = jiff::Timestamp::now();
    let deadline = now + jiff::SignedDuration::from_secs(grace);
    let existing = meta::meta_str(old, "deletionTimestamp");
    let earlier = match meta::parse_time(existing) {
        Some(t) => deadline < t,
        None => true,
    };
    let m = meta::meta_mut(&mut marked);
    if earlier {
        m.insert("deletionTimestamp".into(), json!(meta::format_time(deadline)));
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
    }
    if info.group.is_empty() && info.plural == "namespaces" {
        marked["status"] = json!({"phase": "Terminating"});
    }
    Some(marked)
}

impl Store {
    pub fn new(storage: Arc<dyn Storage>, registry: Arc<Registry>) -> Self {
        Store {
            storage,
            registry,
            bookmark_interval: Duration::from_secs(60),
            namespaces: Arc::new(namespaces::NamespaceCache::default()),
            priority_classes: Arc::new(priority::new_cache()),
            ranges: allocator::Ranges::default(),
        }
    }

    /// Keeps the namespace and PriorityClass caches current until shutdown.
    pub async fn run_caches(&self, shutdown: tokio_util::sync::CancellationToken) {
        let namespaces = async {
            let Some(info) = self.registry.by_plural("", "namespaces").cloned() else { return };
            self.namespaces.run(self.storage.clone(), info, shutdown.clone()).await;
        };
        tokio::join!(namespaces, self.run_priority_class_cache(shutdown.clone()));
    }

    /// Namespaced objects may only be created in a namespace that exists and is not terminating.
    /// `name` is the new object's name, for the message.
    async fn check_namespace(&self, info: &ResourceInfo, ns: &str, name: &str) -> ApiResult<()> {
        if !info.namespaced || self.namespaces.is_active(ns) {
            return Ok(());
        }
        let Some(ns_info) = self.registry.by_plural("", "namespaces") else {
            return Ok(());
        };
        let kv = self.storage.get(&ns_info.key("", ns)).await.map_err(|e| storage_error(ns_info, ns, e))?;
        let Some(kv) = kv else {
            return Err(ApiError::not_found(ns_info, ns));
        };
        let obj = codec::decode_stored(&kv.value, kv.mod_revision)?;
        if meta::is_deleting(&obj) || obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
            return Err(ApiError::Forbidden(format!(
                "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
                info.plural,
            )));
        }
        Ok(())
    }

    /// A request body for a kind that is answered rather than stored, normalized and checked
    /// for unknown fields (always strictly: nothing is kept that could be lost).
    pub fn normalize_request(&self, info: &ResourceInfo, body: Decoded) -> ApiResult<Value> {
        self.decode_object(info, body, FieldValidation::Strict).map(|(v, _)| v)
    }

    /// Body -> typed round trip -> value, with unknown and duplicate fields handled per
    /// `fieldValidation`. Returns the normalized object and the warnings to send.
    fn decode_object(
        &self,
        info: &ResourceInfo,
        body: Decoded,
        fv: FieldValidation,
    ) -> ApiResult<(Value, Vec<String>)> {
        let Decoded { mut value, duplicates } = body;
        let Some(map) = value.as_object_mut() else {
            return Err(ApiError::BadRequest(format!(
                "{} in version \"{}\" cannot be handled as a {}: the body must be a JSON object",
                info.kind, info.version, info.kind
            )));
        };
        let api_version = info.api_version();
        match map.get("apiVersion").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("apiVersion".into(), json!(api_version));
            }
            Some(v) if v == api_version => {}
            Some(v) => {
                return Err(ApiError::BadRequest(format!(
                    "the API version in the data ({v}) does not match the expected API version ({api_version})"
                )));
            }
        }
        match map.get("kind").and_then(Value::as_str) {
            None | Some("") => {
                map.insert("kind".into(), json!(info.kind));
            }
            Some(k) if k == info.kind => {}
            Some(k) => {
                return Err(ApiError::BadRequest(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    info.kind
                )));
            }
        }
        let input = value.clone();
        let normalized = info.normalize(value).map_err(|e| {
            ApiError::BadRequest(format!(
                "{} in version \"{}\" cannot be handled as a {}: {e}",
                info.kind, info.version, info.kind
            ))
        })?;
        let problems = codec::field_problems(&codec::unknown_fields(&input, &normalized), &duplicates);
        let mut warnings = Vec::new();
        if !problems.is_empty() {
            match fv {
                FieldValidation::Strict => {
                    return Err(ApiError::BadRequest(format!("strict decoding error: {}", problems.join(", "))));
                }
                FieldValidation::Warn => warnings = problems,
                FieldValidation::Ignore => {}
            }
        }
        Ok((normalized, warnings))
    }

    // ---- reads ----

    pub async fn get(&self, info: &ResourceInfo, ns: &str, name: &str) -> ApiResult<KeyValue> {
        let kv = self.storage.get(&info.key(ns, name)).await.map_err(|e| storage_error(info, name, e))?;
        kv.map(|kv| served(info, kv)).ok_or_else(|| ApiError::not_found(info, name))
    }

    pub async fn get_value(&self, info: &ResourceInfo, ns: &str, name: &str) -> ApiResult<Value> {
        let kv = self.get(info, ns, name).await?;
        codec::decode_stored(&kv.value, kv.mod_revision)
    }

    pub async fn list(&self, info: &ResourceInfo, ns: &str, opts: &ListOptions) -> ApiResult<ListResult> {
        let prefix = info.list_prefix(ns);
        let parse_rv =
            |s: &str| s.parse::<i64>().map_err(|_| ApiError::BadRequest(format!("invalid resource version \"{s}\"")));
        let rv = opts.resource_version.as_deref().filter(|s| !s.is_empty());
        let (mut after, mut revision, mut not_older_than) = (None::<String>, 0i64, 0i64);
        if let Some(token) = &opts.continue_token {
            if rv.is_some_and(|r| r != "0") {
                return Err(ApiError::BadRequest(
                    "specifying resource version is not allowed when using continue".into(),
                ));
            }
            let (rev, start) = decode_continue(token)?;
            revision = rev.max(0);
            after = Some(format!("{prefix}{start}"));
        } else {
            match (opts.resource_version_match.as_deref().filter(|s| !s.is_empty()), rv) {
                (Some(_), None) => {
                    return Err(ApiError::BadRequest(
                        "resourceVersionMatch is forbidden unless resourceVersion is provided".into(),
                    ));
                }
                (Some("Exact"), Some(r)) => {
                    revision = parse_rv(r)?;
                    if revision == 0 {
                        return Err(ApiError::BadRequest(
                            "resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\"".into(),
                        ));
                    }
                }
                (Some("NotOlderThan"), Some(r)) => not_older_than = parse_rv(r)?,
                (Some(other), Some(_)) => {
                    return Err(ApiError::BadRequest(format!(
                        "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                    )));
                }
                (None, Some(r)) => {
                    let r = parse_rv(r)?;
                    // A limit with a specific resourceVersion means exactly that snapshot.
                    if opts.limit > 0 && r > 0 {
                        revision = r;
                    } else {
                        not_older_than = r;
                    }
                }
                (None, None) => {}
            }
        }
        // A selector pinning metadata.name only needs keys with that name as prefix.
        let prefix = match opts.selectors.fields.exact_name() {
            Some(name) if after.is_none() && (!info.namespaced || !ns.is_empty()) => info.key(ns, name),
            _ => prefix,
        };
        let mut items = Vec::new();
        let mut more = false;
        let mut remaining_item_count = None;
        loop {
            let want = if opts.limit > 0 { opts.limit - items.len() } else { 0 };
            let chunk = if opts.limit > 0 && !opts.selectors.is_empty() { want.max(256) } else { want };
            let page = self
                .storage
                .list(&prefix, after.as_deref(), chunk, revision)
                .await
                .map_err(|e| match e {
                    StorageError::Compacted { .. } if opts.continue_token.is_some() => {
                        let start = after.as_deref().unwrap_or_default();
                        let base = info.list_prefix(ns);
                        ApiError::ExpiredContinue {
                            message: "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.".into(),
                            continue_token: encode_continue(-1, start.strip_prefix(&base).unwrap_or(start)),
                        }
                    }
                    StorageError::Compacted { requested, .. } => {
                        ApiError::expired(format!("too old resource version: {requested}"))
                    }
                    StorageError::FutureRevision { requested } => {
                        ApiError::Timeout(format!("Too large resource version: {requested}"))
                    }
                    other => storage_error(info, "", other),
                })?;
            revision = page.revision;
            let page_len = page.items.len();
            let storage_more = page.more;
            let mut consumed = 0;
            // The last key looked at when it was skipped; when it was kept, it is `items.last()`.
            let mut skipped_last: Option<String> = None;
            for kv in page.items {
                let kv = served(info, kv);
                consumed += 1;
                let keep = opts.selectors.is_empty()
                    || opts.selectors.matches(&codec::decode_stored(&kv.value, kv.mod_revision)?);
                if !keep {
                    skipped_last = Some(kv.key);
                    continue;
                }
                skipped_last = None;
                items.push(ListItem { kv });
                if opts.limit > 0 && items.len() == opts.limit {
                    break;
                }
            }
            // The next read (or page) starts after the last key looked at.
            if consumed > 0 {
                after = skipped_last.or_else(|| items.last().map(|i| i.kv.key.clone()));
            }
            let page_more = storage_more || consumed < page_len;
            if opts.limit > 0 && items.len() == opts.limit {
                more = page_more;
                if more && opts.selectors.is_empty() {
                    remaining_item_count = Some(page.count - consumed as i64);
                }
                break;
            }
            if !storage_more {
                break;
            }
        }
        if not_older_than > revision {
            return Err(ApiError::Timeout(format!(
                "Too large resource version: {not_older_than}, current: {revision}"
            )));
        }
        let continue_token = if more {
            let last = after.unwrap_or_default();
            let base = info.list_prefix(ns);
            Some(encode_continue(revision, last.strip_prefix(&base).unwrap_or(&last)))
        } else {
            None
        };
        Ok(ListResult { items, revision, continue_token, remaining_item_count })
    }

    // ---- create ----

    pub async fn create(
        &self,
        info: &ResourceInfo,
        ns: &str,
        body: Decoded,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let (mut obj, warnings) = self.decode_object(info, body, opts.field_validation)?;
        let body_ns = meta::namespace(&obj).to_string();
        if info.namespaced {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::BadRequest(
                    "the namespace of the provided object does not match the namespace sent on the request".into(),
                ));
            }
            meta::meta_mut(&mut obj).insert("namespace".into(), json!(ns));
        } else {
            meta::meta_mut(&mut obj).remove("namespace");
        }
        self.check_namespace(info, ns, meta::name(&obj)).await?;
        self.admit_create(info, &mut obj).await?;
        let generate = meta::name(&obj).is_empty() && !meta::meta_str(&obj, "generateName").is_empty();
        let attempts = if generate { GENERATE_NAME_ATTEMPTS } else { 1 };
        let mut last_err = None;
        for _ in 0..attempts {
            let mut candidate = obj.clone();
            if generate {
                let name = format!("{}{}", meta::meta_str(&obj, "generateName"), meta::random_suffix());
                meta::meta_mut(&mut candidate).insert("name".into(), json!(name));
            }
            self.prepare_create(info, &mut candidate);
            let name = meta::name(&candidate).to_string();
            if let Some(manager) = &opts.field_manager {
                let who = Manager { name: manager, subresource: "" };
                apply::track_update(None, &mut candidate, &tracked(info, ""), who, &meta::now());
            }
            let mut causes = validation::object_meta(info, &candidate);
            causes.extend(info.strategy.validate(&candidate));
            if !causes.is_empty() {
                return Err(ApiError::invalid(info, &name, causes));
            }
            self.admit_priority_class(info, &candidate, true).await?;
            if opts.dry_run {
                return Ok(Written { object: candidate, created: true, warnings });
            }
            let key = info.key(ns, &name);
            let allocated = if is_service(info) {
                self.allocate_service(info, &mut candidate, None).await?
            } else {
                Default::default()
            };
            match self.storage.create(&key, info.stored_bytes(&candidate)).await {
                Ok(rev) => {
                    set_rv(&mut candidate, rev);
                    return Ok(Written { object: candidate, created: true, warnings });
                }
                Err(StorageError::AlreadyExists) if generate => {
                    self.rollback(allocated).await;
                    last_err = Some(ApiError::already_exists(info, &name));
                }
                Err(e) => {
                    self.rollback(allocated).await;
                    return Err(storage_error(info, &name, e));
                }
            }
        }
        Err(last_err.unwrap_or_else(|| ApiError::Internal("create failed".into())))
    }

    /// Server-owned metadata and the kind's defaults for a new object.
    fn prepare_create(&self, info: &ResourceInfo, obj: &mut Value) {
        let m = meta::meta_mut(obj);
        m.insert("uid".into(), json!(meta::new_uid()));
        m.insert("creationTimestamp".into(), json!(meta::now()));
        for f in ["resourceVersion", "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds"] {
            m.remove(f);
        }
        if info.tracks_generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
        if info.has_status
            && !info.strategy.keeps_status_on_create()
            && let Some(map) = obj.as_object_mut()
        {
            map.remove("status");
        }
        info.strategy.prepare_for_create(obj);
    }

    // ---- update and patch ----

    /// PUT on the object or one of its subresources (`status`, `finalize`).
    pub async fn update(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        subresource: Option<&str>,
        body: Decoded,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let (mut body, warnings) = self.decode_object(info, body, opts.field_validation)?;
        let body_name = meta::name(&body);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let body_ns = meta::namespace(&body);
        if info.namespaced && !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
        // Name and namespace come from the path when the body leaves them out.
        let m = meta::meta_mut(&mut body);
        m.insert("name".into(), json!(name));
        if info.namespaced {
            m.insert("namespace".into(), json!(ns));
        }
        if info.create_on_update
            && subresource.is_none()
            && self.storage.get(&info.key(ns, name)).await.map_err(|e| storage_error(info, name, e))?.is_none()
        {
            let decoded = Decoded { value: body, duplicates: Vec::new() };
            return self
                .create(info, ns, decoded, &WriteOptions { field_validation: FieldValidation::Ignore, ..opts.clone() })
                .await;
        }
        let how = How::client(opts, subresource.unwrap_or(""));
        let mut written = self.update_with(info, ns, name, subresource, how, |_old| Ok(body.clone())).await?;
        written.warnings = warnings;
        Ok(written)
    }

    pub async fn patch(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        subresource: Option<&str>,
        patch: Patch<'_>,
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        if patch.kind == PatchKind::Apply {
            return self.apply(info, ns, name, subresource, patch.body, opts).await;
        }
        let parsed = ParsedPatch::parse(&patch)?;
        let ty = crate::patch::schema::root(info.kind);
        let fv = opts.field_validation;
        let mut warnings = Vec::new();
        let how = How::client(opts, subresource.unwrap_or(""));
        let written = self
            .update_with(info, ns, name, subresource, how, |old| {
                let doc = parsed.apply(old, ty)?;
                let (normalized, w) = self.decode_object(info, Decoded { value: doc, duplicates: Vec::new() }, fv)?;
                warnings = w;
                Ok(normalized)
            })
            .await?;
        Ok(Written { warnings, ..written })
    }

    /// Server-side apply: merges the configuration in `body` into the object (creating it when
    /// there is none) for the manager in `opts`, per [`crate::patch::apply`].
    async fn apply(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        subresource: Option<&str>,
        body: &[u8],
        opts: &WriteOptions,
    ) -> ApiResult<Written> {
        let manager = opts.field_manager.as_deref().unwrap_or_default();
        let format =
            if body.trim_ascii_start().starts_with(b"{") { codec::BodyFormat::Json } else { codec::BodyFormat::Yaml };
        let decoded = codec::decode_body(body, format)?;
        let raw = decoded.value.clone();
        let Some(m) = raw.as_object() else {
            return Err(ApiError::BadRequest("the apply configuration must be an object".into()));
        };
        for f in ["apiVersion", "kind"] {
            if m.get(f).and_then(Value::as_str).is_none_or(str::is_empty) {
                return Err(ApiError::BadRequest(format!("the apply configuration has no {f}")));
            }
        }
        if raw.pointer("/metadata/managedFields").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::BadRequest("metadata.managedFields must be nil".into()));
        }
        let given = meta::name(&raw);
        if !given.is_empty() && given != name {
            return Err(ApiError::BadRequest(format!(
                "the name of the object ({given}) does not match the name on the URL ({name})"
            )));
        }
        let given_ns = meta::namespace(&raw);
        if info.namespaced && !given_ns.is_empty() && given_ns != ns {
            return Err(ApiError::BadRequest(
                "the namespace of the provided object does not match the namespace sent on the request".into(),
            ));
        }
        let (normalized, warnings) = self.decode_object(info, decoded, opts.field_validation)?;
        // The typed round trip fills in required fields the configuration left out; an apply
        // configuration says only what it says.
        let mut config = only_given(&normalized, &raw);
        let m = meta::meta_mut(&mut config);
        m.insert("name".into(), json!(name));
        if info.namespaced {
            m.insert("namespace".into(), json!(ns));
        }
        apply::check_config(&config, info.kind).map_err(ApiError::BadRequest)?;
        let target = tracked(info, subresource.unwrap_or(""));
        let who = Manager { name: manager, subresource: subresource.unwrap_or("") };
        let conflict = |c: apply::Conflicts| ApiError::ApplyConflict { message: c.message(), causes: c.causes() };
        for _ in 0..2 {
            let how = How { dry_run: opts.dry_run, track: Track::Done };
            let updated = self
                .update_with(info, ns, name, subresource, how, |old| {
                    apply::apply(Some(old), &config, &target, who, opts.force, &meta::now()).map_err(conflict)
                })
                .await;
            match updated {
                Err(ApiError::NotFound { .. }) if subresource.is_none() => {}
                other => return other.map(|w| Written { warnings: warnings.clone(), ..w }),
            }
            let obj = apply::apply(None, &config, &target, who, opts.force, &meta::now()).map_err(conflict)?;
            let create_opts =
                WriteOptions { field_validation: FieldValidation::Ignore, field_manager: None, ..opts.clone() };
            match self.create(info, ns, Decoded { value: obj, duplicates: Vec::new() }, &create_opts).await {
                Err(ApiError::AlreadyExists { .. }) => continue,
                other => return other.map(|w| Written { warnings: warnings.clone(), ..w }),
            }
        }
        Err(ApiError::stale(info, name))
    }

    /// The optimistic update loop shared by PUT and PATCH: `make` turns the current object into
    /// the desired one; everything server-owned is then re-applied, validated and written with a
    /// compare-and-swap on the revision that was read.
    async fn update_with(
        &self,
        info: &ResourceInfo,
        ns: &str,
        name: &str,
        subresource: Option<&str>,
        how: How<'_>,
        mut make: impl FnMut(&Value) -> ApiResult<Value>,
    ) -> ApiResult<Written> {
        let dry_run = how.dry_run;
        let key = info.key(ns, name);
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let cur = self.storage.get(&key).await.map_err(|e| storage_error(info, name, e))?;
            let Some(cur) = cur.map(|kv| served(info, kv)) else {
                return Err(ApiError::not_found(info, name));
            };
            let old = codec::decode_stored(&cur.value, cur.mod_revision)?;
            let mut new = make(&old)?;
            let client_rv = meta::meta_str(&new, "resourceVersion").to_string();
            if !client_rv.is_empty() && client_rv != cur.mod_revision.to_string() {
                return Err(ApiError::stale(info, name));
            }
            match subresource {
                None => self.prepare_update(info, &mut new, &old),
                Some("status") => {
                    let status = new.get("status").cloned();
                    let applied = new.pointer("/metadata/managedFields").cloned();
                    new = old.clone();
                    if let (Track::Done, Some(mf)) = (how.track, applied) {
                        meta::meta_mut(&mut new).insert("managedFields".into(), mf);
                    }
                    match status {
                        Some(s) => new["status"] = s,
                        None => {
                            if let Some(m) = new.as_object_mut() {
                                m.remove("status");
                            }
                        }
                    }
                }
                Some("binding") => {}
                Some("finalize") => {
                    let fins = new.pointer("/spec/finalizers").cloned().unwrap_or_else(|| json!([]));
                    new = old.clone();
                    new["spec"]["finalizers"] = fins;
                }
                Some(other) => {
                    return Err(ApiError::NotFound {
                        message: format!("{} \"{name}\" has no subresource {other}", info.plural),
                        details: None,
                    });
                }
            }
            if let Track::Update(who) = how.track {
                apply::track_update(Some(&old), &mut new, &tracked(info, who.subresource), who, &meta::now());
            }
            let mut causes = validation::object_meta(info, &new);
            causes.extend(validation::object_meta_update(&new, &old));
            causes.extend(info.strategy.validate(&new));
            // A binding is the one sanctioned change to an otherwise immutable pod spec.
            if subresource != Some("binding") {
                causes.extend(info.strategy.validate_update(&new, &old));
            }
            if !causes.is_empty() {
                return Err(ApiError::invalid(info, name, causes));
            }
            if subresource.is_none() {
                self.admit_priority_class(info, &new, false).await?;
            }
            if strip_rv(&new) == strip_rv(&old) {
                return Ok(Written { object: old, created: false, warnings: Vec::new() });
            }
            if dry_run {
                set_rv(&mut new, cur.mod_revision);
                return Ok(Written { object: new, created: false, warnings: Vec::new() });
            }
            // The last finalizer of an object being deleted is gone and no grace period runs:
            // finish the deletion (a terminating pod goes when its kubelet deletes it with 0).
            if meta::is_deleting(&new) && !pending_finalizers(info, &new) && deletion_grace(&new) == 0 {
                match self.storage.delete(&key, cur.mod_revision).await {
                    Ok(rev) => {
                        if is_service(info) {
                            self.release_service(&old, None).await;
                        }
                        set_rv(&mut new, rev);
                        return Ok(Written { object: new, created: false, warnings: Vec::new() });
                    }
                    Err(StorageError::Conflict { .. }) => continue,
                    Err(e) => return Err(storage_error(info, name, e)),
                }
            }
            let allocated = if is_service(info) && subresource.is_none() {
                self.allocate_service(info, &mut new, Some(&old)).await?
            } else {
                Default::default()
            };
            match self.storage.update(&key, info.stored_bytes(&new), cur.mod_revision).await {
                Ok(rev) => {
                    if is_service(info) {
                        self.release_service(&old, Some(&new)).await;
                    }
                    set_rv(&mut new, rev);
                    return Ok(Written { object: new, created: false, warnings: Vec::new() });
                }
                Err(StorageError::Conflict { .. }) => {
                    self.rollback(allocated).await;
                    continue;
                }
                Err(e) => {
                    self.rollback(allocated).await;
                    return Err(storage_error(info, name, e));
                }
            }
        }
        Err(ApiError::stale(info, name))
    }

    /// Carries what clients cannot change from `old` into `new` (main resource writes).
    fn prepare_update(&self, info: &ResourceInfo, new: &mut Value, old: &Value) {
        let old_meta = meta::meta(old).cloned().unwrap_or_default();
        let m = meta::meta_mut(new);
        for f in ["uid", "creationTimestamp"] {
            let given = m.get(f).and_then(Value::as_str).is_some_and(|s| !s.is_empty());
            if !given && let Some(v) = old_meta.get(f) {
                m.insert(f.into(), v.clone());
            }
        }
        for f in ["deletionTimestamp", "deletionGracePeriodSeconds"] {
            match old_meta.get(f) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
        m.remove("selfLink");
        if !m.contains_key("managedFields")
            && let Some(mf) = old_meta.get("managedFields")
        {
            m.insert("managedFields".into(), mf.clone());
        }
        if info.has_status
            && let Some(map) = new.as_object_mut()
        {
            match old.get("status") {
                Some(s) => map.insert("status".into(), s.clone()),
                None => map.remove("status"),
            };
        }
        info.strategy.prepare_for_update(new, old);
        let m = meta::meta_mut(new);
        if info.tracks_generation {
            let old_gen = old_meta.get("generation").and_then(Value::as_i64).unwrap_or(1);
            let generation = if spec_part(new) != spec_part(old) { old_gen + 1 } else { old_gen };
            meta::meta_mut(new).insert("generation".into(), json!(generation));
        } else {
            match old_meta.get("generation") {
                Some(g) => m.insert("generation".into(), g.clone()),
                None => m.remove("generation"),
            };
        }
    }

    // ---- delete ----

    pub async fn delete(&self, info: &ResourceInfo, ns: &str, name: &str, opts: &DeleteOptions) -> ApiResult<Deleted> {
        self.admit_delete(info, name)?;
        let key = info.key(ns, name);
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            let cur = self.storage.get(&key).await.map_err(|e| storage_error(info, name, e))?;
            let Some(cur) = cur.map(|kv| served(info, kv)) else {
                return Err(ApiError::not_found(info, name));
            };
            let old = codec::decode_stored(&cur.value, cur.mod_revision)?;
            if let Some(uid) = &opts.precondition_uid
                && uid != meta::uid(&old)
            {
                return Err(ApiError::conflict(
                    info,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&old)
                    ),
                ));
            }
            if let Some(rv) = &opts.precondition_resource_version
                && *rv != cur.mod_revision.to_string()
            {
                return Err(ApiError::conflict(
                    info,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        cur.mod_revision
                    ),
                ));
            }
            if let Some(mut marked) = mark_for_deletion(info, &old, opts) {
                // Forcing (grace 0) a deletion in progress that nothing else holds back ends it
                // now, even when its grace period has already run out (the kubelet's final delete).
                let forced = opts.grace_period_seconds == Some(0) || deletion_grace(&marked) == 0;
                if marked == old && !(forced && meta::is_deleting(&old) && !pending_finalizers(info, &marked)) {
                    return Ok(Deleted::Pending(old));
                }
                if opts.dry_run {
                    return Ok(Deleted::Pending(marked));
                }
                if !pending_finalizers(info, &marked) && forced && meta::is_deleting(&old) {
                    match self.storage.delete(&key, cur.mod_revision).await {
                        Ok(_) => return Ok(Deleted::Gone(old)),
                        Err(StorageError::Conflict { .. }) => continue,
                        Err(e) => return Err(storage_error(info, name, e)),
                    }
                }
                match self.storage.update(&key, info.stored_bytes(&marked), cur.mod_revision).await {
                    Ok(rev) => {
                        set_rv(&mut marked, rev);
                        return Ok(Deleted::Pending(marked));
                    }
                    Err(StorageError::Conflict { .. }) => continue,
                    Err(e) => return Err(storage_error(info, name, e)),
                }
            }
            if opts.dry_run {
                return Ok(Deleted::Gone(old));
            }
            match self.storage.delete(&key, cur.mod_revision).await {
                Ok(_) => {
                    if is_service(info) {
                        self.release_service(&old, None).await;
                    }
                    return Ok(Deleted::Gone(old));
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(storage_error(info, name, e)),
            }
        }
        Err(ApiError::stale(info, name))
    }

    /// Deletes every object the selectors match; answers with what was deleted.
    pub async fn delete_collection(
        &self,
        info: &ResourceInfo,
        ns: &str,
        list: &ListOptions,
        opts: &DeleteOptions,
    ) -> ApiResult<Vec<Value>> {
        let listed = self.list(info, ns, list).await?;
        let mut deleted = Vec::new();
        for item in listed.items {
            let obj = item.value()?;
            // What may not be deleted (the built-in PriorityClasses) stays; the rest goes.
            if self.admit_delete(info, meta::name(&obj)).is_err() {
                continue;
            }
            match self.delete(info, meta::namespace(&obj), meta::name(&obj), opts).await {
                Ok(Deleted::Gone(o) | Deleted::Pending(o)) => deleted.push(o),
                Err(ApiError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    }

    // ---- watch ----

    /// Starts a watch; events arrive on the returned channel until the timeout, a storage error
    /// (sent as [`WatchItem::Error`]) or the receiver is dropped.
    pub async fn watch(
        self: &Arc<Self>,
        info: Arc<ResourceInfo>,
        ns: &str,
        opts: WatchOptions,
    ) -> ApiResult<mpsc::Receiver<WatchItem>> {
        let prefix = info.list_prefix(ns);
        let rv = opts.resource_version.as_deref().filter(|s| !s.is_empty());
        let initial = match (opts.send_initial_events, rv) {
            (Some(true), _) => {
                if !opts.allow_bookmarks {
                    return Err(ApiError::invalid(
                        &info,
                        "",
                        vec![Cause::forbidden(
                            "allowWatchBookmarks",
                            "sendInitialEvents requires setting allowWatchBookmarks to true",
                        )],
                    ));
                }
                true
            }
            (Some(false), _) => false,
            (None, None | Some("0")) => true,
            (None, Some(_)) => false,
        };
        let (tx, rx) = mpsc::channel(64);
        let mut start = match rv {
            Some(r) if r != "0" => {
                r.parse::<i64>().map_err(|_| ApiError::BadRequest(format!("invalid resource version \"{r}\"")))?
            }
            _ => 0,
        };
        let mut initial_items = Vec::new();
        if initial {
            let listed =
                self.list(&info, ns, &ListOptions { selectors: opts.selectors.clone(), ..Default::default() }).await?;
            start = listed.revision;
            initial_items = listed.items;
        } else if start == 0 {
            start = self.storage.current_revision().await.map_err(|e| storage_error(&info, "", e))?;
        }
        let watch = match self.storage.watch(&prefix, start).await {
            Ok(w) => Some(w),
            Err(StorageError::Compacted { requested, compacted }) => {
                let _ = tx.try_send(WatchItem::Error(ApiError::expired(format!(
                    "too old resource version: {requested} ({compacted})"
                ))));
                None
            }
            Err(e) => return Err(storage_error(&info, "", e)),
        };
        let Some(watch) = watch else { return Ok(rx) };
        let store = self.clone();
        tokio::spawn(async move {
            let initial = Initial {
                revision: start,
                items: initial_items,
                end_bookmark: initial && opts.send_initial_events == Some(true),
            };
            let _ = store.run_watch(info, opts, initial, watch, tx).await;
        });
        Ok(rx)
    }

    async fn run_watch(
        &self,
        info: Arc<ResourceInfo>,
        opts: WatchOptions,
        initial: Initial,
        mut watch: crate::storage::Watch,
        tx: mpsc::Sender<WatchItem>,
    ) -> Result<(), ()> {
        let send = |item| {
            let tx = tx.clone();
            async move { tx.send(item).await.map_err(|_| ()) }
        };
        for item in initial.items {
            match item.value() {
                Ok(v) => send(WatchItem::Event(EventType::Added, v)).await?,
                Err(e) => return send(WatchItem::Error(e)).await,
            }
        }
        if initial.end_bookmark && opts.allow_bookmarks {
            send(WatchItem::Bookmark { revision: initial.revision, initial_events_end: true }).await?;
        }
        let deadline = tokio::time::sleep(opts.timeout);
        tokio::pin!(deadline);
        let mut bookmark_timer = tokio::time::interval(self.bookmark_interval);
        bookmark_timer.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return Ok(()),
                _ = bookmark_timer.tick(), if opts.allow_bookmarks => {
                    let _ = watch.progress.try_send(());
                }
                ev = watch.events.next() => {
                    let Some(ev) = ev else {
                        return send(WatchItem::Error(ApiError::Internal("watch ended unexpectedly".into()))).await;
                    };
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e) => return send(WatchItem::Error(storage_error(&info, "", e))).await,
                    };
                    if let Some(item) = self.translate(&info, &opts, ev) {
                        match item {
                            Ok(item) => send(item).await?,
                            Err(e) => return send(WatchItem::Error(e)).await,
                        }
                    }
                }
                _ = tx.closed() => return Ok(()),
            }
        }
    }

    /// A storage event as the API event this watcher should see, if any. Objects moving into or
    /// out of the selection appear as ADDED or DELETED.
    fn translate(&self, info: &ResourceInfo, opts: &WatchOptions, ev: WatchEvent) -> Option<ApiResult<WatchItem>> {
        let decode = |kv: &KeyValue, rev: i64| codec::decode_stored(&kv.value, rev).map(|v| info.served_value(v));
        let sel = &opts.selectors;
        let result = (|| -> ApiResult<Option<WatchItem>> {
            Ok(match ev {
                WatchEvent::Progress { revision } => {
                    opts.allow_bookmarks.then_some(WatchItem::Bookmark { revision, initial_events_end: false })
                }
                WatchEvent::Put { kv, prev } => {
                    let new = decode(&kv, kv.mod_revision)?;
                    let new_match = sel.matches(&new);
                    let old = match &prev {
                        Some(p) if !sel.is_empty() => Some(decode(p, kv.mod_revision)?),
                        _ => None,
                    };
                    let old_match = match (&prev, &old) {
                        (None, _) => false,
                        (Some(_), None) => true,
                        (Some(_), Some(o)) => sel.matches(o),
                    };
                    match (new_match, old_match) {
                        (true, true) => Some(WatchItem::Event(EventType::Modified, new)),
                        (true, false) => Some(WatchItem::Event(EventType::Added, new)),
                        (false, true) => old.map(|o| WatchItem::Event(EventType::Deleted, o)),
                        (false, false) => None,
                    }
                }
                WatchEvent::Delete { revision, prev, .. } => match prev {
                    Some(p) => {
                        let old = decode(&p, revision)?;
                        sel.matches(&old).then_some(WatchItem::Event(EventType::Deleted, old))
                    }
                    None => None,
                },
            })
        })();
        result.transpose()
    }
}

/// A stored object in the form `info` serves (see [`crate::resources::StoredAs`]).
fn served(info: &ResourceInfo, mut kv: KeyValue) -> KeyValue {
    if info.stored_as.is_some()
        && let Ok(v) = serde_json::from_slice::<Value>(&kv.value)
    {
        kv.value = codec::encode_for_storage(&info.served_value(v)).into();
    }
    kv
}

/// Continue tokens: the revision of the first page and the last key returned, relative to the
/// list prefix, so a token can only continue the same list.
fn encode_continue(revision: i64, start: &str) -> String {
    use base64::Engine;
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(token.to_string())
}

fn decode_continue(token: &str) -> ApiResult<(i64, String)> {
    use base64::Engine;
    let bad = || ApiError::BadRequest("continue key is not valid: the token could not be decoded".into());
    let raw =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token.trim_end_matches('=')).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    // -1 marks a token handed out after compaction: continue at the latest revision.
    let rev = v.get("rv").and_then(Value::as_i64).filter(|r| *r > 0 || *r == -1).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    if start.contains("..") || start.starts_with('/') {
        return Err(bad());
    }
    Ok((rev, start.to_string()))
}

/// The opening of a List answer, up to and including `"items":[`.
pub fn list_header(
    info: &ResourceInfo,
    revision: i64,
    continue_token: Option<&str>,
    remaining: Option<i64>,
) -> Vec<u8> {
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = remaining {
        meta["remainingItemCount"] = json!(r);
    }
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(b"{\"kind\":");
    out.extend_from_slice(serde_json::to_string(info.list_kind).unwrap_or_default().as_bytes());
    out.extend_from_slice(b",\"apiVersion\":");
    out.extend_from_slice(serde_json::to_string(&info.api_version()).unwrap_or_default().as_bytes());
    out.extend_from_slice(b",\"metadata\":");
    out.extend_from_slice(meta.to_string().as_bytes());
    out.extend_from_slice(b",\"items\":[");
    out
}

/// Appends the items, comma-separated; `first` says whether nothing precedes them in the array.
pub fn render_items(out: &mut Vec<u8>, items: &[ListItem], first: bool) -> ApiResult<()> {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !first {
            out.push(b',');
        }
        codec::render_stored_into(out, &item.kv.value, item.kv.mod_revision)?;
    }
    Ok(())
}

/// Bytes of a List answer built from already-rendered items, without parsing them again.
pub fn list_json(info: &ResourceInfo, result: &ListResult) -> ApiResult<Vec<u8>> {
    let mut out = list_header(info, result.revision, result.continue_token.as_deref(), result.remaining_item_count);
    out.reserve(result.items.iter().map(|i| i.kv.value.len() + 32).sum::<usize>() + 2);
    render_items(&mut out, &result.items, true)?;
    out.extend_from_slice(b"]}");
    Ok(out)
}

#[cfg(test)]
mod tests;
