//! DaemonSet controller tests (being written).
