//! Workloads shared by `make bench` (the `lockout-bench` binary) and the integration tests.

pub mod invalid;
