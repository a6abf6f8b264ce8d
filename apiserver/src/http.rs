//! HTTP plumbing shared by the handlers: the response body type, query strings, content
//! negotiation and response builders.

use std::convert::Infallible;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, combinators::UnsyncBoxBody};
use serde_json::Value;

use crate::error::ApiError;
use crate::table::IncludeObject;

/// A body error aborts the response (HTTP/2 stream reset, HTTP/1 connection closed), so a
/// stream that fails halfway is never mistaken for a complete answer.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|never: Infallible| match never {}).boxed_unsync()
}

pub const JSON: &str = "application/json";
pub const YAML: &str = "application/yaml";
pub const TABLE_V1: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";
pub const TABLE_V1BETA1: &str = "application/json;as=Table;v=v1beta1;g=meta.k8s.io";

/// Query parameters, percent-decoded, in order.
#[derive(Debug, Default, Clone)]
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let Some(q) = q else { return Query::default() };
        Query(
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    (percent_decode(k, true), percent_decode(v, true))
                })
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
    }

    /// `true`, `1` (and a bare `?watch`) are true; absence is false.
    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key) {
            None => Ok(false),
            Some("" | "true" | "1" | "True") => Ok(true),
            Some("false" | "0" | "False") => Ok(false),
            Some(v) => Err(ApiError::BadRequest(format!("invalid value for {key}: {v:?}; expected true or false"))),
        }
    }

    pub fn optional_flag(&self, key: &str) -> Result<Option<bool>, ApiError> {
        if self.get(key).is_none() { Ok(None) } else { self.flag(key).map(Some) }
    }

    pub fn number(&self, key: &str) -> Result<Option<i64>, ApiError> {
        match self.get(key).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v
                .parse::<i64>()
                .map(Some)
                .map_err(|_| ApiError::BadRequest(format!("invalid value for {key}: {v:?}; expected an integer"))),
        }
    }
}

/// `%xx` decoding; `plus` also turns `+` into a space (query strings).
pub fn percent_decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the client asked to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Json,
    Yaml,
    Table(IncludeObject),
    /// `as=PartialObjectMetadata` / `PartialObjectMetadataList`: objects reduced to metadata.
    PartialMetadata,
}

impl Output {
    pub fn content_type(self) -> &'static str {
        match self {
            Output::Json | Output::PartialMetadata => JSON,
            Output::Yaml => YAML,
            Output::Table(_) => TABLE_V1,
        }
    }
}

/// Picks the first acceptable media range in the client's order. `transforms` says whether
/// Table and partial metadata make sense for this request (reads of a resource).
pub fn negotiate(accept: Option<&str>, transforms: bool, include: IncludeObject) -> Result<Output, ApiError> {
    let accept = accept.unwrap_or("").trim();
    if accept.is_empty() {
        return Ok(Output::Json);
    }
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("").to_ascii_lowercase();
        let mut as_ = None;
        let mut g = None;
        let mut v = None;
        for p in parts {
            if let Some((k, val)) = p.split_once('=') {
                match k.trim() {
                    "as" => as_ = Some(val.trim().to_string()),
                    "g" => g = Some(val.trim().to_string()),
                    "v" => v = Some(val.trim().to_string()),
                    _ => {}
                }
            }
        }
        match (media.as_str(), as_.as_deref()) {
            ("application/json", Some("Table")) => {
                let ok_version = matches!(v.as_deref(), Some("v1" | "v1beta1"));
                if transforms && g.as_deref() == Some("meta.k8s.io") && ok_version {
                    return Ok(Output::Table(include));
                }
            }
            ("application/json", Some("PartialObjectMetadata" | "PartialObjectMetadataList"))
                if transforms && g.as_deref() == Some("meta.k8s.io") =>
            {
                return Ok(Output::PartialMetadata);
            }
            ("application/json", Some(_)) => {}
            ("application/json" | "*/*" | "application/*", None) => return Ok(Output::Json),
            ("application/yaml", None) => return Ok(Output::Yaml),
            _ => {}
        }
    }
    Err(ApiError::NotAcceptable(
        "only the following media types are accepted: application/json, application/yaml, application/json;as=Table;v=v1;g=meta.k8s.io"
            .into(),
    ))
}

pub fn respond(status: u16, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(content_type) {
        headers.insert(header::CONTENT_TYPE, v);
    }
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache, private"));
    resp
}

/// A value in the negotiated format.
pub fn respond_value(status: u16, output: Output, value: &Value) -> Response<Body> {
    match output {
        Output::Yaml => match serde_saphyr::to_string(value) {
            Ok(y) => respond(status, YAML, y),
            Err(_) => respond(status, JSON, serde_json::to_vec(value).unwrap_or_default()),
        },
        other => respond(status, other.content_type(), serde_json::to_vec(value).unwrap_or_default()),
    }
}

pub fn error_response(e: &ApiError) -> Response<Body> {
    let mut resp = respond(e.code(), JSON, serde_json::to_vec(&e.to_status()).unwrap_or_default());
    if matches!(e, ApiError::ServiceUnavailable(_) | ApiError::Timeout(_)) {
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    resp
}

/// Adds `Warning: 299 - "..."` headers, as upstream reports non-fatal problems.
pub fn add_warnings(resp: &mut Response<Body>, warnings: &[String]) {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('"', "\\\""));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectl_table_accept_is_understood() {
        let a = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json";
        assert_eq!(
            negotiate(Some(a), true, IncludeObject::Metadata).expect("ok"),
            Output::Table(IncludeObject::Metadata)
        );
        assert_eq!(negotiate(Some(a), false, IncludeObject::Metadata).expect("ok"), Output::Json);
    }

    #[test]
    fn protobuf_first_falls_back_to_json_and_protobuf_only_is_refused() {
        assert_eq!(
            negotiate(Some("application/vnd.kubernetes.protobuf,application/json"), true, IncludeObject::Metadata)
                .expect("ok"),
            Output::Json
        );
        assert_eq!(negotiate(Some("application/json, */*"), true, IncludeObject::Metadata).expect("ok"), Output::Json);
        assert_eq!(negotiate(Some("application/yaml"), true, IncludeObject::Metadata).expect("ok"), Output::Yaml);
        assert_eq!(negotiate(None, true, IncludeObject::Metadata).expect("ok"), Output::Json);
        let err =
            negotiate(Some("application/vnd.kubernetes.protobuf"), true, IncludeObject::Metadata).expect_err("406");
        assert_eq!(err.code(), 406);
    }

    #[test]
    fn queries_decode_percent_and_plus() {
        let q = Query::parse(Some("labelSelector=app%3Dweb%2Ctier+in+%28a%29&watch&limit=500"));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch").expect("flag"));
        assert_eq!(q.number("limit").expect("num"), Some(500));
        assert!(q.number("nope").expect("absent").is_none());
        assert_eq!(percent_decode("a%2", false), "a%2");
        assert_eq!(percent_decode("%zz", false), "%zz");
    }
}
