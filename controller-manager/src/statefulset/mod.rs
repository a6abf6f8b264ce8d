//! The StatefulSet controller (being written).
