//! Cross-crate tests live in `tests/`. This library contains what they share
//! with the benchmarks: [`cluster`], a real Kubernetes control plane.

pub mod cluster;
