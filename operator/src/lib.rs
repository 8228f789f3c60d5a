//! Parley's Kubernetes operator: reconciles each cluster-scoped `ChatTenant`
//! into a tenant namespace with credentials, a chat runtime and an endpoint.
//!
//! - [`crd`]: the resource's Rust types, from which the CRD is generated.

pub mod crd;
pub mod schema;
