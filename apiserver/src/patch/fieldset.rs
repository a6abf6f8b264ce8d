//! Sets of field paths: what a manager owns, what a change touched. `managedFields` stores them
//! in the FieldsV1 format, a JSON tree whose keys are path elements (`f:name`, `k:{"name":"web"}`,
//! `v:"value"`, `i:0`) and where `"."` marks a node that is itself in the set as well as some of
//! its children.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::{Map, Value};

/// One step of a path. The order (fields, then keyed items, then set values, then indexes)
/// is the order FieldsV1 lists them in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pe {
    /// A field of an object.
    Field(String),
    /// An item of a list keyed by some of its fields: those fields as JSON, names sorted.
    Key(String),
    /// An item of a set of primitives: the value as JSON.
    Value(String),
    /// An item of a list identified only by position.
    Index(usize),
}

impl Pe {
    pub fn field(name: &str) -> Pe {
        Pe::Field(name.to_string())
    }

    /// The key element of a list item from its key fields, in any order.
    pub fn key(fields: &[(&str, &Value)]) -> Pe {
        let mut sorted = fields.to_vec();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let inner: Vec<String> =
            sorted.iter().map(|(k, v)| format!("{}:{}", Value::String((*k).to_string()), v)).collect();
        Pe::Key(format!("{{{}}}", inner.join(",")))
    }

    pub fn value(v: &Value) -> Pe {
        Pe::Value(v.to_string())
    }

    fn encode(&self) -> String {
        match self {
            Pe::Field(f) => format!("f:{f}"),
            Pe::Key(k) => format!("k:{k}"),
            Pe::Value(v) => format!("v:{v}"),
            Pe::Index(i) => format!("i:{i}"),
        }
    }

    fn decode(s: &str) -> Result<Pe, String> {
        let (tag, rest) = s.split_at_checked(2).ok_or_else(|| format!("invalid path element {s:?}"))?;
        match tag {
            "f:" => Ok(Pe::Field(rest.to_string())),
            "k:" => match serde_json::from_str::<Value>(rest) {
                Ok(Value::Object(m)) if !m.is_empty() => {
                    Ok(Pe::key(&m.iter().map(|(k, v)| (k.as_str(), v)).collect::<Vec<_>>()))
                }
                _ => Err(format!("invalid key in path element {s:?}")),
            },
            "v:" => serde_json::from_str::<Value>(rest)
                .map(|v| Pe::value(&v))
                .map_err(|_| format!("invalid value in path element {s:?}")),
            "i:" => rest.parse().map(Pe::Index).map_err(|_| format!("invalid index in path element {s:?}")),
            _ => Err(format!("invalid path element {s:?}")),
        }
    }
}

/// A path as upstream prints it in conflict messages: `.spec.containers[name="web"].image`.
pub struct PathDisplay<'a>(pub &'a [Pe]);

impl fmt::Display for PathDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for pe in self.0 {
            match pe {
                Pe::Field(name) => write!(f, ".{name}")?,
                Pe::Key(k) => {
                    let fields: Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
                    let parts: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    write!(f, "[{}]", parts.join(","))?
                }
                Pe::Value(v) => write!(f, "[={v}]")?,
                Pe::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

/// A set of paths, as a tree. Invariant: no child is empty.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSet {
    /// The path leading here is itself in the set.
    pub member: bool,
    pub children: BTreeMap<Pe, FieldSet>,
}

impl FieldSet {
    pub fn is_empty(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    pub fn child(&self, pe: &Pe) -> Option<&FieldSet> {
        self.children.get(pe)
    }

    pub fn child_mut(&mut self, pe: Pe) -> &mut FieldSet {
        self.children.entry(pe).or_default()
    }

    pub fn insert(&mut self, path: &[Pe]) {
        match path.split_first() {
            None => self.member = true,
            Some((pe, rest)) => self.child_mut(pe.clone()).insert(rest),
        }
    }

    pub fn contains(&self, path: &[Pe]) -> bool {
        match path.split_first() {
            None => self.member,
            Some((pe, rest)) => self.children.get(pe).is_some_and(|c| c.contains(rest)),
        }
    }

    pub fn union(&self, other: &FieldSet) -> FieldSet {
        let mut out = self.clone();
        out.union_with(other);
        out
    }

    pub fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (pe, c) in &other.children {
            self.child_mut(pe.clone()).union_with(c);
        }
    }

    pub fn intersection(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && other.member, children: BTreeMap::new() };
        for (pe, c) in &self.children {
            if let Some(o) = other.children.get(pe) {
                let both = c.intersection(o);
                if !both.is_empty() {
                    out.children.insert(pe.clone(), both);
                }
            }
        }
        out
    }

    /// The members of `self` that are not members of `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet { member: self.member && !other.member, children: BTreeMap::new() };
        for (pe, c) in &self.children {
            let rest = match other.children.get(pe) {
                Some(o) => c.difference(o),
                None => c.clone(),
            };
            if !rest.is_empty() {
                out.children.insert(pe.clone(), rest);
            }
        }
        out
    }

    /// Drops the subtree at `pe` (a direct child).
    pub fn remove_child(&mut self, pe: &Pe) {
        self.children.remove(pe);
    }

    /// Every member path, in order.
    pub fn paths(&self) -> Vec<Vec<Pe>> {
        let mut out = Vec::new();
        self.collect(&mut Vec::new(), &mut out);
        out
    }

    fn collect(&self, prefix: &mut Vec<Pe>, out: &mut Vec<Vec<Pe>>) {
        if self.member {
            out.push(prefix.clone());
        }
        for (pe, c) in &self.children {
            prefix.push(pe.clone());
            c.collect(prefix, out);
            prefix.pop();
        }
    }

    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".into(), Value::Object(Map::new()));
        }
        for (pe, c) in &self.children {
            m.insert(pe.encode(), c.to_fields_v1());
        }
        Value::Object(m)
    }

    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, String> {
        let Value::Object(m) = v else {
            return Err("FieldsV1 must be a JSON object".into());
        };
        Self::from_map(m, 0).map(|mut s| {
            // The root is an object, never a member itself.
            s.member = false;
            s
        })
    }

    fn from_map(m: &Map<String, Value>, depth: usize) -> Result<FieldSet, String> {
        if depth > 100 {
            return Err("FieldsV1 is nested too deeply".into());
        }
        let mut out = FieldSet { member: m.is_empty(), children: BTreeMap::new() };
        for (k, v) in m {
            if k == "." {
                out.member = true;
                continue;
            }
            let Value::Object(cm) = v else {
                return Err(format!("the value of {k:?} must be a JSON object"));
            };
            let child = Self::from_map(cm, depth + 1)?;
            out.child_mut(Pe::decode(k)?).union_with(&child);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set(v: Value) -> FieldSet {
        FieldSet::from_fields_v1(&v).expect("valid FieldsV1")
    }

    #[test]
    fn fields_v1_round_trips_with_dot_for_members_that_have_children() {
        let v = json!({
            "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
            "f:spec": {"f:containers": {"k:{\"name\":\"web\"}": {".": {}, "f:image": {}, "f:name": {}}}},
            "f:finalizers": {"v:\"a/b\"": {}},
        });
        let s = set(v.clone());
        assert!(s.contains(&[Pe::field("metadata"), Pe::field("labels")]));
        assert!(!s.contains(&[Pe::field("metadata")]));
        assert!(s.contains(&[Pe::field("finalizers"), Pe::value(&json!("a/b"))]));
        assert_eq!(s.to_fields_v1(), v);
    }

    #[test]
    fn keys_are_canonical_whatever_order_they_come_in() {
        let a = Pe::key(&[("protocol", &json!("TCP")), ("containerPort", &json!(80))]);
        assert_eq!(a, Pe::Key("{\"containerPort\":80,\"protocol\":\"TCP\"}".into()));
        assert_eq!(Pe::decode("k:{\"protocol\":\"TCP\",\"containerPort\":80}").expect("key"), a);
        let path = [Pe::field("spec"), Pe::field("ports"), a, Pe::field("name")];
        assert_eq!(PathDisplay(&path).to_string(), ".spec.ports[containerPort=80,protocol=\"TCP\"].name");
    }

    #[test]
    fn set_algebra_keeps_the_no_empty_children_invariant() {
        let a = set(json!({"f:data": {"f:a": {}, "f:b": {}}}));
        let b = set(json!({"f:data": {"f:b": {}, "f:c": {}}}));
        assert_eq!(a.intersection(&b), set(json!({"f:data": {"f:b": {}}})));
        assert_eq!(a.difference(&b), set(json!({"f:data": {"f:a": {}}})));
        assert_eq!(a.difference(&a), FieldSet::default());
        assert_eq!(a.union(&b).paths().len(), 3);
    }

    #[test]
    fn malformed_fields_v1_is_refused() {
        for bad in [json!([]), json!({"x:y": {}}), json!({"f:a": 1}), json!({"k:[1]": {}}), json!({"i:z": {}})] {
            assert!(FieldSet::from_fields_v1(&bad).is_err(), "{bad}");
        }
    }
}
