//! Server-side apply and the field ownership every write records in `metadata.managedFields`.
//!
//! Each manager (a `fieldManager`, or the client's user agent) owns a set of fields. An update
//! gives its manager the fields it changed and takes them from everyone else. An apply merges the
//! applier's configuration into the object, owns exactly the fields of that configuration,
//! answers 409 when it would change a field another manager owns (unless forced), and removes
//! the fields the applier owned before, dropped from its configuration, and nobody else owns.
//! This follows the design of Kubernetes' structured-merge-diff; the list and map semantics come
//! from [`super::schema`].

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value, json};

use super::fieldset::{FieldSet, PathDisplay, Pe};
use super::schema::{self, Shape, Ty};
use crate::error::Cause;

pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
/// Update managers beyond this many are folded into one `ancient-changes` entry, as upstream does.
const MAX_UPDATE_MANAGERS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Operation {
    Apply,
    Update,
}

impl Operation {
    fn as_str(self) -> &'static str {
        match self {
            Operation::Apply => "Apply",
            Operation::Update => "Update",
        }
    }
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    pub time: Option<String>,
    pub subresource: String,
    pub set: FieldSet,
}

impl Entry {
    fn is(&self, who: &Manager<'_>, operation: Operation) -> bool {
        self.manager == who.name && self.operation == operation && self.subresource == who.subresource
    }

    /// How conflict messages name the manager: `"kubectl" using apps/v1`.
    fn label(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if !self.subresource.is_empty() {
            s.push_str(&format!(" with subresource {:?}", self.subresource));
        }
        if self.operation == Operation::Update {
            s.push_str(&format!(" using {}", self.api_version));
        }
        s
    }
}

/// Who is writing, and through which subresource (`""` for the object itself).
#[derive(Debug, Clone, Copy)]
pub struct Manager<'a> {
    pub name: &'a str,
    pub subresource: &'a str,
}

/// Which fields of the object a write through this endpoint can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The object itself: everything but server-owned metadata and, for kinds with a status
    /// subresource, the status.
    Main { has_status: bool },
    /// The status subresource: the status only.
    Status,
}

/// The kind and version an object is tracked with.
#[derive(Debug, Clone)]
pub struct Target {
    pub kind: &'static str,
    pub api_version: String,
    pub scope: Scope,
}

// ---- managedFields in and out ----

/// What `metadata.managedFields` in a client's object asks for.
#[derive(Debug, PartialEq)]
enum Provided {
    /// Absent or empty: keep the stored entries.
    Nothing,
    /// `[{}]`: start over.
    Reset,
    Entries(Vec<Entry>),
    /// Not valid managedFields; they are ignored in favour of the stored ones.
    Invalid,
}

fn provided(obj: &Value) -> Provided {
    match obj.pointer("/metadata/managedFields") {
        None | Some(Value::Null) => Provided::Nothing,
        Some(Value::Array(items)) if items.is_empty() => Provided::Nothing,
        Some(Value::Array(items)) if items.iter().all(|i| i.as_object().is_some_and(Map::is_empty)) => Provided::Reset,
        Some(v) => decode(v).map_or(Provided::Invalid, Provided::Entries),
    }
}

fn decode(v: &Value) -> Result<Vec<Entry>, String> {
    let items = v.as_array().ok_or("managedFields must be a list")?;
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let s = |f: &str| item.get(f).and_then(Value::as_str).unwrap_or_default().to_string();
        let operation = match s("operation").as_str() {
            "Apply" => Operation::Apply,
            "Update" => Operation::Update,
            other => return Err(format!("unknown operation {other:?}")),
        };
        let set = match (item.get("fieldsType").and_then(Value::as_str), item.get("fieldsV1")) {
            (Some("FieldsV1"), Some(f)) => FieldSet::from_fields_v1(f)?,
            (Some("FieldsV1") | None, None) => FieldSet::default(),
            (t, _) => return Err(format!("unsupported fieldsType {t:?}")),
        };
        out.push(Entry {
            manager: s("manager"),
            operation,
            api_version: s("apiVersion"),
            time: item.get("time").and_then(Value::as_str).map(String::from),
            subresource: s("subresource"),
            set,
        });
    }
    Ok(out)
}

/// The entries stored with `obj`; unreadable ones count as none.
pub fn entries_of(obj: &Value) -> Vec<Entry> {
    obj.pointer("/metadata/managedFields").and_then(|v| decode(v).ok()).unwrap_or_default()
}

fn encode(mut entries: Vec<Entry>) -> Value {
    entries.sort_by(|a, b| {
        (a.operation, &a.time, &a.manager, &a.api_version, &a.subresource).cmp(&(
            b.operation,
            &b.time,
            &b.manager,
            &b.api_version,
            &b.subresource,
        ))
    });
    Value::Array(
        entries
            .into_iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("manager".into(), json!(e.manager));
                m.insert("operation".into(), json!(e.operation.as_str()));
                m.insert("apiVersion".into(), json!(e.api_version));
                if let Some(t) = e.time {
                    m.insert("time".into(), json!(t));
                }
                m.insert("fieldsType".into(), json!("FieldsV1"));
                m.insert("fieldsV1".into(), e.set.to_fields_v1());
                if !e.subresource.is_empty() {
                    m.insert("subresource".into(), json!(e.subresource));
                }
                Value::Object(m)
            })
            .collect(),
    )
}

fn store(obj: &mut Value, entries: Vec<Entry>) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), encode(entries));
    }
}

/// Folds the oldest update managers into `ancient-changes` so at most ten remain.
fn cap_update_managers(entries: &mut Vec<Entry>) {
    let updates = entries.iter().filter(|e| e.operation == Operation::Update).count();
    if updates <= MAX_UPDATE_MANAGERS {
        return;
    }
    let mut order: Vec<usize> = (0..entries.len()).filter(|&i| entries[i].operation == Operation::Update).collect();
    order.sort_by(|&a, &b| entries[a].time.cmp(&entries[b].time));
    let fold: HashSet<usize> = order.into_iter().take(updates - MAX_UPDATE_MANAGERS + 1).collect();
    let mut bucket: Option<Entry> = None;
    let mut kept = Vec::with_capacity(entries.len());
    for (i, e) in entries.drain(..).enumerate() {
        if !fold.contains(&i) {
            kept.push(e);
            continue;
        }
        match &mut bucket {
            None => bucket = Some(Entry { manager: "ancient-changes".into(), subresource: String::new(), ..e }),
            Some(b) => {
                b.set.union_with(&e.set);
                b.time = b.time.clone().max(e.time);
            }
        }
    }
    kept.extend(bucket);
    *entries = kept;
}

// ---- walking objects with the schema ----

fn member() -> FieldSet {
    FieldSet { member: true, children: BTreeMap::new() }
}

/// The key element of a list item; `None` when a key field is missing and has no default.
fn item_key(item: &Value, keys: &[&str]) -> Option<Pe> {
    let mut fields = Vec::with_capacity(keys.len());
    let defaults: Vec<Option<Value>> = keys.iter().map(|k| schema::key_default(k)).collect();
    for (k, d) in keys.iter().zip(&defaults) {
        match item.get(*k).filter(|v| !v.is_null()).or(d.as_ref()) {
            Some(v) => fields.push((*k, v)),
            None => return None,
        }
    }
    Some(Pe::key(&fields))
}

fn keyed<'v>(items: &'v [Value], keys: &[&str]) -> Vec<(Pe, &'v Value)> {
    items.iter().enumerate().map(|(i, v)| (item_key(v, keys).unwrap_or(Pe::Index(i)), v)).collect()
}

/// The fields a value sets: every primitive, atomic value, empty map and list item.
pub fn field_set(obj: &Value, kind: &'static str) -> FieldSet {
    obj.as_object().map(|m| set_of_map(m, schema::root(kind))).unwrap_or_default()
}

fn set_of_map(m: &Map<String, Value>, ty: Ty) -> FieldSet {
    let mut out = FieldSet::default();
    for (k, v) in m {
        let child = set_of_field(ty, k, v);
        if !child.is_empty() {
            out.children.insert(Pe::Field(k.clone()), child);
        }
    }
    out
}

fn set_of_field(ty: Ty, name: &str, v: &Value) -> FieldSet {
    match (schema::shape(ty, name, v), v) {
        (Shape::Struct(t), Value::Object(m)) if !m.is_empty() => set_of_map(m, t),
        (Shape::Set, Value::Array(items)) => {
            FieldSet { member: false, children: items.iter().map(|i| (Pe::value(i), member())).collect() }
        }
        (Shape::Assoc { keys, item }, Value::Array(items)) => {
            let mut out = FieldSet::default();
            for (pe, v) in keyed(items, keys) {
                let mut s = match (item, v) {
                    (Ty::AtomicItem, _) => FieldSet::default(),
                    (_, Value::Object(m)) => set_of_map(m, item),
                    _ => FieldSet::default(),
                };
                s.member = true;
                out.child_mut(pe).union_with(&s);
            }
            out
        }
        _ => member(),
    }
}

/// What changed between two versions of an object.
#[derive(Debug, Default)]
pub struct Comparison {
    pub added: FieldSet,
    pub modified: FieldSet,
    pub removed: FieldSet,
}

impl Comparison {
    fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.removed.is_empty()
    }

    fn leaf(&mut self, path: &[Pe], old: Option<&Value>, new: Option<&Value>) {
        match (old, new) {
            (None, Some(_)) => self.added.insert(path),
            (Some(_), None) => self.removed.insert(path),
            (Some(a), Some(b)) if a != b => self.modified.insert(path),
            _ => {}
        }
    }

    fn presence(&mut self, path: &[Pe], old: Option<&Value>, new: Option<&Value>) {
        match (old, new) {
            (None, Some(_)) => self.added.insert(path),
            (Some(_), None) => self.removed.insert(path),
            _ => {}
        }
    }

    fn strip(&mut self, scope: Scope) {
        for s in [&mut self.added, &mut self.modified, &mut self.removed] {
            strip(s, scope);
        }
    }
}

pub fn compare(old: &Value, new: &Value, kind: &'static str) -> Comparison {
    let mut out = Comparison::default();
    cmp_map(old.as_object(), new.as_object(), schema::root(kind), &mut Vec::new(), &mut out);
    out
}

fn cmp_map(
    old: Option<&Map<String, Value>>,
    new: Option<&Map<String, Value>>,
    ty: Ty,
    path: &mut Vec<Pe>,
    out: &mut Comparison,
) {
    let empty = Map::new();
    let (old, new) = (old.unwrap_or(&empty), new.unwrap_or(&empty));
    for (k, o) in old {
        path.push(Pe::Field(k.clone()));
        cmp_field(ty, k, Some(o), new.get(k), path, out);
        path.pop();
    }
    for (k, n) in new.iter().filter(|(k, _)| !old.contains_key(*k)) {
        path.push(Pe::Field(k.clone()));
        cmp_field(ty, k, None, Some(n), path, out);
        path.pop();
    }
}

fn is_empty_container(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        _ => false,
    }
}

fn cmp_field(ty: Ty, name: &str, old: Option<&Value>, new: Option<&Value>, path: &mut Vec<Pe>, out: &mut Comparison) {
    let Some(probe) = new.or(old) else { return };
    let same_kind = match (old, new) {
        (Some(a), Some(b)) => std::mem::discriminant(a) == std::mem::discriminant(b),
        _ => true,
    };
    let shape = schema::shape(ty, name, probe);
    if !same_kind || shape == Shape::Leaf || (is_empty_container(old) && is_empty_container(new)) {
        out.leaf(path, old, new);
        return;
    }
    out.presence(path, old, new);
    match shape {
        Shape::Struct(t) => cmp_map(old.and_then(Value::as_object), new.and_then(Value::as_object), t, path, out),
        Shape::Set => {
            let as_set = |v: Option<&Value>| -> HashSet<Pe> {
                v.and_then(Value::as_array).map(|a| a.iter().map(Pe::value).collect()).unwrap_or_default()
            };
            let (o, n) = (as_set(old), as_set(new));
            for pe in n.difference(&o) {
                path.push(pe.clone());
                out.added.insert(path);
                path.pop();
            }
            for pe in o.difference(&n) {
                path.push(pe.clone());
                out.removed.insert(path);
                path.pop();
            }
        }
        Shape::Assoc { keys, item } => {
            let empty = Vec::new();
            let old_items = old.and_then(Value::as_array).unwrap_or(&empty);
            let new_items = new.and_then(Value::as_array).unwrap_or(&empty);
            let o: HashMap<Pe, &Value> = keyed(old_items, keys).into_iter().collect();
            let n = keyed(new_items, keys);
            let n_keys: HashSet<&Pe> = n.iter().map(|(k, _)| k).collect();
            for (pe, nv) in &n {
                path.push(pe.clone());
                cmp_item(item, o.get(pe).copied(), Some(nv), path, out);
                path.pop();
            }
            for (pe, ov) in o.iter().filter(|(k, _)| !n_keys.contains(k)) {
                path.push(pe.clone());
                cmp_item(item, Some(ov), None, path, out);
                path.pop();
            }
        }
        Shape::Leaf => {}
    }
}

fn cmp_item(item: Ty, old: Option<&Value>, new: Option<&Value>, path: &mut Vec<Pe>, out: &mut Comparison) {
    if item == Ty::AtomicItem {
        out.leaf(path, old, new);
        return;
    }
    out.presence(path, old, new);
    cmp_map(old.and_then(Value::as_object), new.and_then(Value::as_object), item, path, out);
}

/// `config` merged into `live`: maps key by key, sets and keyed lists item by item (items
/// keep the live order; new ones come where the configuration puts them), the rest replaced.
pub fn merge(live: &Value, config: &Value, kind: &'static str) -> Value {
    match (live, config) {
        (Value::Object(l), Value::Object(c)) => Value::Object(merge_map(l, c, schema::root(kind))),
        _ => config.clone(),
    }
}

fn merge_map(live: &Map<String, Value>, config: &Map<String, Value>, ty: Ty) -> Map<String, Value> {
    let mut out = live.clone();
    for (k, c) in config {
        let merged = match live.get(k) {
            Some(l) => merge_field(ty, k, l, c),
            None => c.clone(),
        };
        out.insert(k.clone(), merged);
    }
    out
}

fn merge_field(ty: Ty, name: &str, live: &Value, config: &Value) -> Value {
    match (schema::shape(ty, name, config), live, config) {
        (Shape::Struct(t), Value::Object(l), Value::Object(c)) => Value::Object(merge_map(l, c, t)),
        (Shape::Set, Value::Array(l), Value::Array(c)) => {
            let l: Vec<(Pe, &Value)> = l.iter().map(|v| (Pe::value(v), v)).collect();
            let c: Vec<(Pe, &Value)> = c.iter().map(|v| (Pe::value(v), v)).collect();
            Value::Array(merge_items(&l, &c, |_, c| c.clone()))
        }
        (Shape::Assoc { keys, item }, Value::Array(l), Value::Array(c)) => {
            let (l, c) = (keyed(l, keys), keyed(c, keys));
            Value::Array(merge_items(&l, &c, |l, c| match (item, l, c) {
                (Ty::AtomicItem, _, _) => c.clone(),
                (_, Value::Object(lm), Value::Object(cm)) => Value::Object(merge_map(lm, cm, item)),
                _ => c.clone(),
            }))
        }
        _ => config.clone(),
    }
}

/// Items of both lists, once each: live-only items stay where they were relative to their
/// neighbours, items in the configuration come in its order.
fn merge_items(live: &[(Pe, &Value)], config: &[(Pe, &Value)], both: impl Fn(&Value, &Value) -> Value) -> Vec<Value> {
    let in_config: HashSet<&Pe> = config.iter().map(|(k, _)| k).collect();
    let live_at: HashMap<&Pe, usize> = live.iter().enumerate().map(|(i, (k, _))| (k, i)).collect();
    let mut out = Vec::with_capacity(live.len() + config.len());
    let mut li = 0;
    for (pe, c) in config {
        while li < live.len() && !in_config.contains(&live[li].0) {
            out.push(live[li].1.clone());
            li += 1;
        }
        match live_at.get(pe) {
            Some(&p) => {
                while li < p {
                    if !in_config.contains(&live[li].0) {
                        out.push(live[li].1.clone());
                    }
                    li += 1;
                }
                li = li.max(p + 1);
                out.push(both(live[p].1, c));
            }
            None => out.push((*c).clone()),
        }
    }
    out.extend(live[li..].iter().filter(|(k, _)| !in_config.contains(k)).map(|(_, v)| (*v).clone()));
    out
}

/// Removes from `obj` the members of `remove` that no one in `keep` owns any part of.
fn prune(obj: &mut Value, remove: &FieldSet, keep: &FieldSet, kind: &'static str) {
    if let Value::Object(m) = obj {
        prune_map(m, remove, Some(keep), schema::root(kind));
    }
}

fn kept(keep: Option<&FieldSet>) -> bool {
    keep.is_some_and(|k| !k.is_empty())
}

fn prune_map(m: &mut Map<String, Value>, remove: &FieldSet, keep: Option<&FieldSet>, ty: Ty) {
    for (pe, r) in &remove.children {
        let Pe::Field(name) = pe else { continue };
        let k = keep.and_then(|k| k.child(pe));
        let Some(v) = m.get_mut(name) else { continue };
        if r.member && !kept(k) {
            m.remove(name);
            continue;
        }
        let was_empty = is_empty_container(Some(v));
        match (schema::shape(ty, name, v), &mut *v) {
            (Shape::Struct(t), Value::Object(cm)) => prune_map(cm, r, k, t),
            (Shape::Set, Value::Array(items)) => items.retain(|i| {
                let pe = Pe::value(i);
                !r.child(&pe).is_some_and(|c| c.member) || kept(k.and_then(|k| k.child(&pe)))
            }),
            (Shape::Assoc { keys, item }, Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, mut it) in std::mem::take(items).into_iter().enumerate() {
                    let pe = item_key(&it, keys).unwrap_or(Pe::Index(i));
                    let (Some(rc), kc) = (r.child(&pe), k.and_then(|k| k.child(&pe))) else {
                        out.push(it);
                        continue;
                    };
                    if rc.member && !kept(kc) {
                        continue;
                    }
                    // A kept item keeps its key fields, whoever owned them.
                    if item != Ty::AtomicItem
                        && let Value::Object(im) = &mut it
                    {
                        let mut rc = rc.clone();
                        for k in keys {
                            rc.remove_child(&Pe::field(k));
                        }
                        prune_map(im, &rc, kc, item);
                    }
                    out.push(it);
                }
                *items = out;
            }
            _ => {}
        }
        if !was_empty && is_empty_container(Some(v)) {
            m.remove(name);
        }
    }
}

/// The value at `path` in an object of `kind`, if there is one.
fn value_at_root<'v>(obj: &'v Value, path: &[Pe], kind: &'static str) -> Option<&'v Value> {
    let (Some((Pe::Field(f), rest)), Value::Object(m)) = (path.split_first(), obj) else { return None };
    let child = m.get(f)?;
    let ty = match schema::shape(schema::root(kind), f, child) {
        Shape::Struct(t) => t,
        _ => Ty::Object,
    };
    match rest.split_first() {
        None => Some(child),
        Some(_) => value_at_child(child, rest, ty),
    }
}

/// The value at `path` below `v`, a map of type `ty`.
fn value_at_child<'v>(v: &'v Value, path: &[Pe], ty: Ty) -> Option<&'v Value> {
    let Some((pe, rest)) = path.split_first() else { return Some(v) };
    match (pe, v) {
        (Pe::Field(f), Value::Object(m)) => {
            let child = m.get(f)?;
            match schema::shape(ty, f, child) {
                Shape::Struct(t) => value_at_child(child, rest, t),
                Shape::Assoc { keys, item } if !rest.is_empty() => {
                    let items = child.as_array()?;
                    let (next, after) = rest.split_first()?;
                    let (_, found) = keyed(items, keys).into_iter().find(|(k, _)| k == next)?;
                    value_at_child(found, after, item)
                }
                Shape::Set if !rest.is_empty() => {
                    let next = &rest[0];
                    child.as_array()?.iter().find(|i| Pe::value(i) == *next)
                }
                _ if rest.is_empty() => Some(child),
                _ => None,
            }
        }
        _ => None,
    }
}

// ---- what is ignored ----

/// Server-owned metadata is no one's, and each endpoint owns only its part of the object.
fn strip(set: &mut FieldSet, scope: Scope) {
    set.member = false;
    match scope {
        Scope::Status => set.children.retain(|pe, _| *pe == Pe::field("status")),
        Scope::Main { has_status } => {
            set.remove_child(&Pe::field("apiVersion"));
            set.remove_child(&Pe::field("kind"));
            if has_status {
                set.remove_child(&Pe::field("status"));
            }
            let meta = Pe::field("metadata");
            if let Some(m) = set.children.get_mut(&meta) {
                m.member = false;
                for f in [
                    "name",
                    "namespace",
                    "uid",
                    "creationTimestamp",
                    "selfLink",
                    "generation",
                    "resourceVersion",
                    "managedFields",
                    "deletionTimestamp",
                    "deletionGracePeriodSeconds",
                ] {
                    m.remove_child(&Pe::field(f));
                }
                if m.is_empty() {
                    set.remove_child(&meta);
                }
            }
        }
    }
}

// ---- updates ----

/// Records an update (create, replace, or a patch other than apply) by `who` in `new`'s
/// managedFields. `old` is the stored object, `None` on create.
pub fn track_update(old: Option<&Value>, new: &mut Value, target: &Target, who: Manager<'_>, now: &str) {
    let mut entries = match (target.scope, provided(new)) {
        (Scope::Main { .. }, Provided::Entries(e)) => e,
        (Scope::Main { .. }, Provided::Reset) => Vec::new(),
        _ => old.map(entries_of).unwrap_or_default(),
    };
    // A new object is compared with an empty one of its kind, whose metadata and spec exist.
    let skeleton;
    let old = match old {
        Some(o) => o,
        None => {
            let mut m = Map::new();
            for f in ["metadata", "spec"] {
                if new.get(f).is_some_and(Value::is_object) {
                    m.insert(f.into(), json!({}));
                }
            }
            skeleton = Value::Object(m);
            &skeleton
        }
    };
    let mut cmp = compare(old, new, target.kind);
    cmp.strip(target.scope);
    if !cmp.is_empty() {
        let changed = cmp.added.union(&cmp.modified);
        for e in &mut entries {
            e.set = e.set.difference(&changed).difference(&cmp.removed);
        }
        let at = match entries.iter().position(|e| e.is(&who, Operation::Update) && e.api_version == target.api_version)
        {
            Some(i) => i,
            None => {
                entries.push(Entry {
                    manager: who.name.to_string(),
                    operation: Operation::Update,
                    api_version: target.api_version.clone(),
                    time: None,
                    subresource: who.subresource.to_string(),
                    set: FieldSet::default(),
                });
                entries.len() - 1
            }
        };
        entries[at].set.union_with(&changed);
        entries[at].time = Some(now.to_string());
        entries.retain(|e| !e.set.is_empty());
        cap_update_managers(&mut entries);
    }
    store(new, entries);
}

// ---- apply ----

/// An apply that would change fields other managers own.
#[derive(Debug)]
pub struct Conflicts(pub Vec<(String, Vec<Pe>)>);

impl Conflicts {
    pub fn message(&self) -> String {
        if let [(who, path)] = self.0.as_slice() {
            return format!("Apply failed with 1 conflict: conflict with {who}: {}", PathDisplay(path));
        }
        let mut lines = Vec::new();
        let mut last: Option<&str> = None;
        for (who, path) in &self.0 {
            if last != Some(who.as_str()) {
                lines.push(format!("conflicts with {who}:"));
                last = Some(who);
            }
            lines.push(format!("- {}", PathDisplay(path)));
        }
        format!("Apply failed with {} conflicts: {}", self.0.len(), lines.join("\n"))
    }

    pub fn causes(&self) -> Vec<Cause> {
        self.0
            .iter()
            .map(|(who, path)| Cause {
                reason: "FieldManagerConflict",
                message: format!("conflict with {who}"),
                field: PathDisplay(path).to_string(),
            })
            .collect()
    }
}

/// Checks an apply configuration before it is used: list items need their keys, once each.
pub fn check_config(config: &Value, kind: &'static str) -> Result<(), String> {
    fn walk(m: &Map<String, Value>, ty: Ty, path: &mut Vec<Pe>) -> Result<(), String> {
        for (k, v) in m {
            path.push(Pe::Field(k.clone()));
            match (schema::shape(ty, k, v), v) {
                (Shape::Struct(t), Value::Object(cm)) => walk(cm, t, path)?,
                (Shape::Set, Value::Array(items)) => {
                    let mut seen = HashSet::new();
                    for i in items {
                        if !seen.insert(Pe::value(i)) {
                            return Err(format!("{}: duplicate entries for key [={i}]", PathDisplay(path)));
                        }
                    }
                }
                (Shape::Assoc { keys, item }, Value::Array(items)) => {
                    let mut seen = HashSet::new();
                    for (i, it) in items.iter().enumerate() {
                        let Some(pe) = item_key(it, keys) else {
                            let missing = keys.iter().find(|k| it.get(**k).is_none_or(Value::is_null)).unwrap_or(&"");
                            return Err(format!(
                                "{}: element {i}: associative list with keys has an element that omits key field {missing:?} (and doesn't have default value)",
                                PathDisplay(path)
                            ));
                        };
                        path.push(pe.clone());
                        if !seen.insert(pe) {
                            return Err(format!("{}: duplicate entries for key", PathDisplay(path)));
                        }
                        if let Value::Object(im) = it {
                            walk(im, item, path)?;
                        }
                        path.pop();
                    }
                }
                _ => {}
            }
            path.pop();
        }
        Ok(())
    }
    match config {
        Value::Object(m) => walk(m, schema::root(kind), &mut Vec::new()),
        _ => Err("the configuration must be an object".into()),
    }
}

/// Applies `config` for `who` to `live` (`None`: the object does not exist yet). Returns the
/// new object with its managedFields, or the conflicts when `force` is off.
pub fn apply(
    live: Option<&Value>,
    config: &Value,
    target: &Target,
    who: Manager<'_>,
    force: bool,
    now: &str,
) -> Result<Value, Conflicts> {
    let kind = target.kind;
    let empty = json!({});
    let live_v = live.unwrap_or(&empty);
    let mut entries = live.map(entries_of).unwrap_or_default();
    let mut applied = field_set(config, kind);
    strip(&mut applied, target.scope);

    let mut merged = merge(live_v, config, kind);
    let mut cmp = compare(live_v, &merged, kind);
    cmp.strip(target.scope);
    let changed = cmp.added.union(&cmp.modified);
    let mine = entries.iter().position(|e| e.is(&who, Operation::Apply));
    let mut conflicts = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if Some(i) != mine {
            for path in e.set.intersection(&changed).paths() {
                conflicts.push((e.label(), path));
            }
        }
    }
    conflicts.sort();
    let allowed = force || (who.name == "kubectl" && last_applied_allows(live_v, &conflicts, kind));
    if !conflicts.is_empty() && !allowed {
        return Err(Conflicts(conflicts));
    }

    let previous = mine.map(|i| entries[i].set.clone()).unwrap_or_default();
    for (i, e) in entries.iter_mut().enumerate() {
        if Some(i) != mine {
            e.set = e.set.difference(&changed).difference(&cmp.removed);
        }
    }
    let changed_ownership = mine.is_none() || previous != applied;
    let at = match mine {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: who.name.to_string(),
                operation: Operation::Apply,
                api_version: target.api_version.clone(),
                time: None,
                subresource: who.subresource.to_string(),
                set: FieldSet::default(),
            });
            entries.len() - 1
        }
    };
    entries[at].set = applied;
    entries[at].api_version = target.api_version.clone();
    let me = entries.remove(at);
    entries.retain(|e| !e.set.is_empty());

    // What the applier let go of and nobody else holds goes.
    let mut owned = me.set.clone();
    for e in &entries {
        owned.union_with(&e.set);
    }
    prune(&mut merged, &previous.difference(&owned), &owned, kind);

    // kubectl's client-side apply annotation follows kubectl's server-side applies.
    if who.name == "kubectl"
        && let Some(ann) = merged.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut)
        && ann.contains_key(LAST_APPLIED)
    {
        let mut cfg = config.clone();
        if let Some(a) = cfg.pointer_mut("/metadata/annotations").and_then(Value::as_object_mut) {
            a.remove(LAST_APPLIED);
        }
        ann.insert(LAST_APPLIED.into(), json!(format!("{cfg}\n")));
    }

    let mut me = me;
    let object_changed = without_bookkeeping(&merged) != without_bookkeeping(live_v);
    me.time = if object_changed || changed_ownership || me.time.is_none() { Some(now.to_string()) } else { me.time };
    entries.push(me);
    store(&mut merged, entries);
    Ok(merged)
}

fn without_bookkeeping(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    v
}

/// Upstream lets `kubectl apply --server-side` take over fields that `kubectl apply` (client
/// side) set, without conflicts, while the object still holds what the last-applied
/// annotation says: that is how kubectl users move to server-side apply.
fn last_applied_allows(live: &Value, conflicts: &[(String, Vec<Pe>)], kind: &'static str) -> bool {
    let Some(text) = live.pointer(&format!("/metadata/annotations/{}", LAST_APPLIED.replace('/', "~1"))) else {
        return false;
    };
    let Ok(last) = serde_json::from_str::<Value>(text.as_str().unwrap_or_default()) else {
        return false;
    };
    let set = field_set(&last, kind);
    conflicts.iter().all(|(_, path)| {
        set.contains(path) && {
            let (a, b) = (value_at_root(&last, path, kind), value_at_root(live, path, kind));
            a.is_some() && a == b
        }
    })
}

#[cfg(test)]
mod tests;
