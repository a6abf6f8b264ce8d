//! StatefulSet controller tests (being written).
