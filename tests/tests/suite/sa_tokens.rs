//! ServiceAccount token Secrets and event aggregation: being built.
