//! The DaemonSet controller (being written).
