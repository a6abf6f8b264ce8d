//! Job and CronJob controllers (being written).
