//! The Job controller (being written).
