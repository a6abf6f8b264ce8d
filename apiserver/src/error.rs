//! The apiserver's one error type and its rendering as a Kubernetes `Status`.
//!
//! Every failure a client can see goes through [`ApiError`], so the HTTP code, the `reason` and
//! the message template stay consistent with upstream (kubectl prints
//! `Error from server (<reason>): <message>` and scripts match on both). Internal details are
//! logged, never returned: a 500 says only that something failed.

use serde_json::{Value, json};

use crate::resources::ResourceInfo;

/// One field-level problem inside an `Invalid` (422) answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported`, ...
    pub reason: &'static str,
    pub message: String,
    /// Dotted path such as `metadata.name` or `spec.containers[0].image`.
    pub field: String,
}

impl Cause {
    pub fn required(field: impl Into<String>) -> Self {
        Cause { reason: "FieldValueRequired", message: "Required value".into(), field: field.into() }
    }

    pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, detail: impl std::fmt::Display) -> Self {
        let value = value.to_string();
        Cause {
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {}: {detail}", quote_value(&value)),
            field: field.into(),
        }
    }

    pub fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Cause { reason: "FieldValueForbidden", message: format!("Forbidden: {}", detail.into()), field: field.into() }
    }

    pub fn immutable(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        Cause::invalid(field, value, "field is immutable")
    }

    pub fn not_supported(field: impl Into<String>, value: impl std::fmt::Display, supported: &[&str]) -> Self {
        let list = supported.iter().map(|s| format!("\"{s}\"")).collect::<Vec<_>>().join(", ");
        Cause {
            reason: "FieldValueNotSupported",
            message: format!("Unsupported value: \"{value}\": supported values: {list}"),
            field: field.into(),
        }
    }

    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Self {
        Cause { reason: "FieldValueDuplicate", message: format!("Duplicate value: \"{value}\""), field: field.into() }
    }

    /// `field: message`, as upstream joins causes into the top-level message.
    pub fn summary(&self) -> String {
        if self.field.is_empty() { self.message.clone() } else { format!("{}: {}", self.field, self.message) }
    }
}

fn quote_value(v: &str) -> String {
    if v.parse::<f64>().is_ok() || v == "true" || v == "false" || v == "null" {
        v.to_string()
    } else {
        format!("\"{v}\"")
    }
}

/// What identifies the object an error is about, for `Status.details`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Details {
    pub name: String,
    pub group: String,
    /// The resource (plural), as upstream puts it in `details.kind`.
    pub kind: String,
    pub uid: Option<String>,
    pub retry_after_seconds: Option<u32>,
}

impl Details {
    pub fn for_resource(info: &ResourceInfo, name: &str) -> Self {
        Details {
            name: name.to_string(),
            group: info.group.to_string(),
            kind: info.plural.to_string(),
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("{message}")]
    NotFound { message: String, details: Option<Details> },
    #[error("{message}")]
    AlreadyExists { message: String, details: Details },
    #[error("{message}")]
    Conflict { message: String, details: Option<Details> },
    #[error("{message}")]
    Invalid { message: String, details: Details, causes: Vec<Cause> },
    /// A server-side apply that would change fields other managers own.
    #[error("{message}")]
    ApplyConflict { message: String, causes: Vec<Cause> },
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    RequestEntityTooLarge(String),
    #[error("{0}")]
    Gone(String),
    /// A continue token outlived its snapshot; `continue_token` resumes from the same key at
    /// the latest revision, for clients that accept an inconsistent list.
    #[error("{message}")]
    ExpiredContinue { message: String, continue_token: String },
    #[error("{0}")]
    Timeout(String),
    /// Refused for now (an eviction that a disruption budget does not allow).
    #[error("{message}")]
    TooManyRequests { message: String, causes: Vec<Cause> },
    #[error("{0}")]
    ServiceUnavailable(String),
    /// The message is safe to return; the cause was logged where it happened.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        ApiError::NotFound {
            message: format!("{} \"{name}\" not found", info.qualified_resource()),
            details: Some(Details::for_resource(info, name)),
        }
    }

    pub fn already_exists(info: &ResourceInfo, name: &str) -> Self {
        ApiError::AlreadyExists {
            message: format!("{} \"{name}\" already exists", info.qualified_resource()),
            details: Details::for_resource(info, name),
        }
    }

    pub fn conflict(info: &ResourceInfo, name: &str, why: &str) -> Self {
        ApiError::Conflict {
            message: format!("Operation cannot be fulfilled on {} \"{name}\": {why}", info.qualified_resource()),
            details: Some(Details::for_resource(info, name)),
        }
    }

    /// The optimistic-concurrency failure every client knows to retry on.
    pub fn stale(info: &ResourceInfo, name: &str) -> Self {
        Self::conflict(
            info,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    pub fn invalid(info: &ResourceInfo, name: &str, causes: Vec<Cause>) -> Self {
        let summary = match causes.as_slice() {
            [one] => one.summary(),
            many => format!("[{}]", many.iter().map(Cause::summary).collect::<Vec<_>>().join(", ")),
        };
        ApiError::Invalid {
            message: format!("{} \"{name}\" is invalid: {summary}", info.kind),
            details: Details {
                name: name.into(),
                group: info.group.into(),
                kind: info.kind.into(),
                ..Default::default()
            },
            causes,
        }
    }

    pub fn path_not_found() -> Self {
        ApiError::NotFound { message: "the server could not find the requested resource".into(), details: None }
    }

    pub fn expired(message: impl Into<String>) -> Self {
        ApiError::Gone(message.into())
    }

    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => 409,
            ApiError::Invalid { .. } => 422,
            ApiError::BadRequest(_) => 400,
            ApiError::Unauthorized(_) => 401,
            ApiError::Forbidden(_) => 403,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::NotAcceptable(_) => 406,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::RequestEntityTooLarge(_) => 413,
            ApiError::Gone(_) | ApiError::ExpiredContinue { .. } => 410,
            ApiError::Timeout(_) => 504,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::ServiceUnavailable(_) => 503,
            ApiError::Internal(_) => 500,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } | ApiError::ApplyConflict { .. } => "Conflict",
            ApiError::Invalid { .. } => "Invalid",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Unauthorized(_) => "Unauthorized",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::RequestEntityTooLarge(_) => "RequestEntityTooLarge",
            ApiError::Gone(_) | ApiError::ExpiredContinue { .. } => "Expired",
            ApiError::Timeout(_) => "Timeout",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::ServiceUnavailable(_) => "ServiceUnavailable",
            ApiError::Internal(_) => "InternalError",
        }
    }

    /// The `Status` object upstream would send for this error.
    pub fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.to_string(),
            "reason": self.reason(),
            "code": self.code(),
        });
        let details = match self {
            ApiError::NotFound { details, .. } | ApiError::Conflict { details, .. } => {
                details.as_ref().map(details_json)
            }
            ApiError::AlreadyExists { details, .. } => Some(details_json(details)),
            ApiError::Invalid { details, causes, .. } => {
                let mut d = details_json(details);
                d["causes"] = causes
                    .iter()
                    .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                    .collect();
                Some(d)
            }
            ApiError::ApplyConflict { causes, .. } => Some(json!({
                "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
            })),
            ApiError::ServiceUnavailable(_) | ApiError::Timeout(_) => Some(json!({"retryAfterSeconds": 1})),
            ApiError::TooManyRequests { causes, .. } => Some(json!({
                "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message})).collect::<Vec<_>>(),
            })),
            _ => None,
        };
        if let Some(d) = details {
            status["details"] = d;
        }
        if let ApiError::ExpiredContinue { continue_token, .. } = self {
            status["metadata"] = json!({"continue": continue_token});
        }
        status
    }
}

fn details_json(d: &Details) -> Value {
    let mut v = json!({});
    if !d.name.is_empty() {
        v["name"] = d.name.clone().into();
    }
    if !d.group.is_empty() {
        v["group"] = d.group.clone().into();
    }
    if !d.kind.is_empty() {
        v["kind"] = d.kind.clone().into();
    }
    if let Some(uid) = &d.uid {
        v["uid"] = uid.clone().into();
    }
    if let Some(s) = d.retry_after_seconds {
        v["retryAfterSeconds"] = s.into();
    }
    v
}

/// A successful `Status`, as DELETE answers for most resources.
pub fn success_status(details: &Details) -> Value {
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details_json(details),
    })
}

pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::Registry;

    #[test]
    fn not_found_names_the_group_qualified_resource() {
        let reg = Registry::builtin();
        let deploy = reg.by_plural("apps", "deployments").expect("deployments");
        let st = ApiError::not_found(deploy, "web").to_status();
        assert_eq!(st["message"], "deployments.apps \"web\" not found");
        assert_eq!(st["reason"], "NotFound");
        assert_eq!(st["code"], 404);
        assert_eq!(st["details"]["group"], "apps");
        let pods = reg.by_plural("", "pods").expect("pods");
        assert_eq!(ApiError::not_found(pods, "solo").to_string(), "pods \"solo\" not found");
    }

    #[test]
    fn invalid_lists_every_cause_and_joins_them_in_the_message() {
        let reg = Registry::builtin();
        let cm = reg.by_plural("", "configmaps").expect("configmaps");
        let err = ApiError::invalid(
            cm,
            "Bad_Name",
            vec![
                Cause::invalid("metadata.name", "Bad_Name", "a lowercase RFC 1123 subdomain"),
                Cause::required("data"),
            ],
        );
        let st = err.to_status();
        assert_eq!(st["code"], 422);
        assert_eq!(st["details"]["causes"].as_array().map(Vec::len), Some(2));
        assert_eq!(st["details"]["kind"], "ConfigMap");
        let msg = st["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with("ConfigMap \"Bad_Name\" is invalid: [metadata.name: Invalid value: \"Bad_Name\""),
            "{msg}"
        );
    }

    #[test]
    fn gone_is_reported_as_expired() {
        let st = ApiError::expired("too old resource version: 1 (5)").to_status();
        assert_eq!(st["reason"], "Expired");
        assert_eq!(st["code"], 410);
    }
}
