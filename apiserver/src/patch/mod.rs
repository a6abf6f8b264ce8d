//! Patch formats beyond RFC 7386 merge and RFC 6902 JSON patch (which `json-patch` implements):
//! strategic merge patch, and the list semantics of the served types it needs.

pub mod schema;
pub mod strategic;
