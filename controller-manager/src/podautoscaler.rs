//! The HorizontalPodAutoscaler controller (being written).
