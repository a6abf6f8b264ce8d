//! Label and field selectors: parsing the query-string syntax and matching objects.
//!
//! Label selectors: `key`, `!key`, `key=v`, `key==v`, `key!=v`, `key in (a,b)`,
//! `key notin (a,b)`, `key>3`, `key<3`, joined by commas (all must hold).
//! Field selectors: `path=v`, `path==v`, `path!=v` joined by commas, with `\,` `\=` `\\` escapes;
//! which paths a kind supports is data in its table entry.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::error::ApiError;
use crate::meta;
use crate::resources::ResourceInfo;
use crate::validation;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelOp {
    Exists,
    DoesNotExist,
    Equals(String),
    NotEquals(String),
    In(BTreeSet<String>),
    NotIn(BTreeSet<String>),
    GreaterThan(i64),
    LessThan(i64),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: LabelOp,
}

impl Requirement {
    fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let value = labels.and_then(|l| l.get(&self.key)).and_then(Value::as_str);
        match (&self.op, value) {
            (LabelOp::Exists, v) => v.is_some(),
            (LabelOp::DoesNotExist, v) => v.is_none(),
            (LabelOp::Equals(want), Some(v)) => v == want,
            (LabelOp::Equals(_), None) => false,
            (LabelOp::NotEquals(want), v) => v != Some(want.as_str()),
            (LabelOp::In(set), Some(v)) => set.contains(v),
            (LabelOp::In(_), None) => false,
            (LabelOp::NotIn(set), v) => v.is_none_or(|v| !set.contains(v)),
            (LabelOp::GreaterThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x > *n),
            (LabelOp::LessThan(n), Some(v)) => v.parse::<i64>().is_ok_and(|x| x < *n),
            (LabelOp::GreaterThan(_) | LabelOp::LessThan(_), None) => false,
        }
    }
}

/// A parsed label selector; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

impl LabelSelector {
    pub fn parse(input: &str) -> Result<LabelSelector, ApiError> {
        let mut p = Lexer { s: input.as_bytes(), i: 0 };
        let mut requirements = Vec::new();
        p.skip_ws();
        if p.eof() {
            return Ok(LabelSelector::default());
        }
        loop {
            requirements
                .push(p.requirement().map_err(|e| ApiError::BadRequest(format!("unable to parse requirement: {e}")))?);
            p.skip_ws();
            if p.eof() {
                break;
            }
            if !p.eat(",") {
                return Err(ApiError::BadRequest(format!(
                    "unable to parse requirement: expected ',' at position {} in label selector \"{input}\"",
                    p.i
                )));
            }
        }
        Ok(LabelSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = meta::labels(obj);
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

impl Lexer<'_> {
    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek_str(&self, t: &str) -> bool {
        self.s[self.i..].starts_with(t.as_bytes())
    }
    fn eat(&mut self, t: &str) -> bool {
        if self.peek_str(t) {
            self.i += t.len();
            true
        } else {
            false
        }
    }
    /// A run of characters that can appear in a label key or value.
    fn word(&mut self) -> String {
        let start = self.i;
        while self.i < self.s.len() {
            let c = self.s[self.i];
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b'/') {
                self.i += 1;
            } else {
                break;
            }
        }
        String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
    }
    /// `in` / `notin` only count as keywords when followed by whitespace or `(`.
    fn keyword(&mut self, kw: &str) -> bool {
        if !self.peek_str(kw) {
            return false;
        }
        let after = self.s.get(self.i + kw.len()).copied();
        if matches!(after, Some(b' ' | b'\t' | b'(')) {
            self.i += kw.len();
            true
        } else {
            false
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        self.skip_ws();
        if self.eat("!") {
            self.skip_ws();
            let key = self.key()?;
            return Ok(Requirement { key, op: LabelOp::DoesNotExist });
        }
        let key = self.key()?;
        self.skip_ws();
        let op = if self.eof() || self.peek_str(",") {
            LabelOp::Exists
        } else if self.eat("==") || self.eat("=") {
            LabelOp::Equals(self.value()?)
        } else if self.eat("!=") {
            LabelOp::NotEquals(self.value()?)
        } else if self.eat(">") {
            LabelOp::GreaterThan(self.integer()?)
        } else if self.eat("<") {
            LabelOp::LessThan(self.integer()?)
        } else if self.keyword("notin") {
            LabelOp::NotIn(self.set()?)
        } else if self.keyword("in") {
            LabelOp::In(self.set()?)
        } else {
            return Err(format!("found '{}', expected: in, notin, =, ==, !=, gt, lt", self.rest_token()));
        };
        Ok(Requirement { key, op })
    }

    fn rest_token(&self) -> String {
        String::from_utf8_lossy(&self.s[self.i..]).split([' ', ',']).next().unwrap_or("").to_string()
    }

    fn key(&mut self) -> Result<String, String> {
        let key = self.word();
        if key.is_empty() {
            return Err(format!("found '{}', expected: identifier", self.rest_token()));
        }
        validation::qualified_name(&key).map_err(|e| format!("key: Invalid value: \"{key}\": {e}"))?;
        Ok(key)
    }

    fn value(&mut self) -> Result<String, String> {
        self.skip_ws();
        let v = self.word();
        validation::label_value(&v).map_err(|e| format!("values[0]: Invalid value: \"{v}\": {e}"))?;
        Ok(v)
    }

    fn integer(&mut self) -> Result<i64, String> {
        self.skip_ws();
        let v = self.word();
        v.parse::<i64>().map_err(|_| format!("for 'Gt', 'Lt' operators, the value must be an integer: \"{v}\""))
    }

    fn set(&mut self) -> Result<BTreeSet<String>, String> {
        self.skip_ws();
        if !self.eat("(") {
            return Err("expected '(' after set operator".into());
        }
        let mut values = BTreeSet::new();
        loop {
            self.skip_ws();
            if self.eat(")") {
                break;
            }
            let v = self.word();
            validation::label_value(&v).map_err(|e| format!("values: Invalid value: \"{v}\": {e}"))?;
            values.insert(v);
            self.skip_ws();
            if self.eat(",") {
                continue;
            }
            if self.eat(")") {
                break;
            }
            return Err("expected ',' or ')' in value set".into());
        }
        if values.is_empty() {
            return Err("for 'in', 'notin' operators, values set can't be empty".into());
        }
        Ok(values)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    /// The JSON path the field label reads.
    pub path: &'static str,
    pub value: String,
    pub negated: bool,
}

/// A parsed field selector, already resolved against a kind's supported labels.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

impl FieldSelector {
    pub fn parse(input: &str, info: &ResourceInfo) -> Result<FieldSelector, ApiError> {
        let mut requirements = Vec::new();
        for term in split_unescaped(input, ',') {
            if term.trim().is_empty() {
                continue;
            }
            let (label, value, negated) = if let Some((l, v)) = split_once_unescaped(&term, "!=") {
                (l, v, true)
            } else if let Some((l, v)) = split_once_unescaped(&term, "==") {
                (l, v, false)
            } else if let Some((l, v)) = split_once_unescaped(&term, "=") {
                (l, v, false)
            } else {
                return Err(ApiError::BadRequest(format!("invalid selector: '{input}'; can't understand '{term}'")));
            };
            let label = label.trim();
            let path = info
                .field_path(label)
                .ok_or_else(|| ApiError::BadRequest(format!("field label not supported: {label}")))?;
            requirements.push(FieldRequirement { path, value: unescape(&value), negated });
        }
        Ok(FieldSelector { requirements })
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.requirements.iter().all(|r| (meta::field_value(obj, r.path) == r.value) != r.negated)
    }

    /// The name this selector pins (`metadata.name=x`), which lets a list read one key.
    pub fn exact_name(&self) -> Option<&str> {
        self.requirements.iter().find(|r| r.path == "metadata.name" && !r.negated).map(|r| r.value.as_str())
    }
}

fn split_unescaped(s: &str, sep: char) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.last_mut().expect("non-empty").push(c);
            if let Some(n) = chars.next() {
                out.last_mut().expect("non-empty").push(n);
            }
        } else if c == sep {
            out.push(String::new());
        } else {
            out.last_mut().expect("non-empty").push(c);
        }
    }
    out
}

fn split_once_unescaped(s: &str, op: &str) -> Option<(String, String)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            i += 2;
            continue;
        }
        // Compare bytes: `i` may sit inside a multi-byte character, where slicing the str
        // would panic. A match starts with an ASCII byte, so it is always a char boundary.
        if bytes[i..].starts_with(op.as_bytes()) {
            return Some((s[..i].to_string(), s[i + op.len()..].to_string()));
        }
        i += 1;
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Both selectors of one request.
#[derive(Debug, Clone, Default)]
pub struct Selectors {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Selectors {
    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.fields.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;
    use serde_json::json;

    fn pod(labels: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "default", "labels": labels}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}})
    }

    fn sel(s: &str) -> LabelSelector {
        LabelSelector::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn every_label_operator_matches_as_upstream() {
        let p = pod(json!({"app": "web", "tier": "front", "rank": "5"}));
        let cases = [
            ("", true),
            ("app", true),
            ("!app", false),
            ("!missing", true),
            ("app=web", true),
            ("app==web", true),
            ("app=db", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (web, db)", true),
            ("app in (db)", false),
            ("app notin (db)", true),
            ("app notin (web)", false),
            ("missing notin (web)", true),
            ("missing in (web)", false),
            ("app=web,tier=front", true),
            ("app=web,tier=back", false),
            ("rank>3", true),
            ("rank<3", false),
            (" app = web , tier in (front) ", true),
        ];
        for (s, want) in cases {
            assert_eq!(sel(s).matches(&p), want, "{s}");
        }
    }

    #[test]
    fn malformed_label_selectors_are_bad_requests() {
        for s in ["app=", "=web", "app in ()", "app in (a", "app ~ x", "app=a b", "-bad=x"] {
            if s == "app=" {
                // An empty value is a valid label value.
                assert!(LabelSelector::parse(s).is_ok());
                continue;
            }
            let err = LabelSelector::parse(s).expect_err(s);
            assert_eq!(err.code(), 400, "{s}");
        }
    }

    #[test]
    fn field_selectors_resolve_per_kind_labels() {
        let reg = Registry::builtin();
        let pods = reg.by_plural("", "pods").expect("pods");
        let p = pod(json!({}));
        let s = FieldSelector::parse("spec.nodeName=n1,status.phase!=Pending", pods).expect("parses");
        assert!(s.matches(&p));
        let s = FieldSelector::parse("metadata.name==q", pods).expect("parses");
        assert!(!s.matches(&p));
        assert_eq!(s.exact_name(), Some("q"));
        let s = FieldSelector::parse("spec.nodeName=", pods).expect("parses");
        assert!(!s.matches(&p));
        assert!(s.matches(&json!({"metadata": {"name": "unscheduled"}})));
        let cms = reg.by_plural("", "configmaps").expect("cms");
        let err = FieldSelector::parse("spec.nodeName=n1", cms).expect_err("unsupported");
        assert_eq!(err.to_string(), "field label not supported: spec.nodeName");
    }

    #[test]
    fn non_ascii_field_selectors_are_matched_not_panicked_on() {
        let reg = Registry::builtin();
        let pods = reg.by_plural("", "pods").expect("pods");
        assert!(FieldSelector::parse("a\u{fffd}V", pods).is_err());
        let s = FieldSelector::parse("spec.nodeName=n\u{e9}\u{fffd}", pods).expect("parses");
        assert_eq!(s.requirements[0].value, "n\u{e9}\u{fffd}");
        assert!(LabelSelector::parse("\u{e9}=x").is_err());
    }

    #[test]
    fn field_selector_values_may_escape_separators() {
        let reg = Registry::builtin();
        let events = reg.by_plural("", "events").expect("events");
        let s = FieldSelector::parse(r"reason=a\,b,type=Normal", events).expect("parses");
        assert_eq!(s.requirements.len(), 2);
        assert_eq!(s.requirements[0].value, "a,b");
        let s = FieldSelector::parse("source=kubelet", events).expect("parses");
        assert!(s.matches(&json!({"source": {"component": "kubelet"}})));
    }
}
