//! The CronJob controller (being written).
