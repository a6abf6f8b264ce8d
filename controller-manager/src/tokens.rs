//! The ServiceAccount token controller (`serviceaccount-token`): being built.
