//! Patch formats beyond RFC 7386 merge and RFC 6902 JSON patch (which `json-patch` implements):
//! strategic merge patch, server-side apply with the field ownership it tracks, and the list
//! semantics of the served types both need.

pub mod apply;
pub mod fieldset;
pub mod schema;
pub mod strategic;
