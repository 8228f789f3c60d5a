//! Parley's Kubernetes operator: reconciles each cluster-scoped `ChatTenant`
//! into a tenant namespace with credentials, a chat runtime and an endpoint.
//!
//! - [`crd`]: the resource's Rust types, from which the CRD is generated.
//! - [`schema`]: the CRD as the API server receives it.
//! - [`naming`]: names and labels of the objects created for a tenant.
//! - [`settings`]: operator-wide defaults.
//! - [`quantity`]: Kubernetes quantities, checked and scaled exactly.
//! - [`validate`]: checks a ChatTenant and resolves its defaults.
//! - [`build`]: builds every object of a tenant from the checked spec.
//! - [`render`]: the `render` subcommand, which prints those objects.

pub mod build;
pub mod crd;
pub mod naming;
pub mod quantity;
pub mod render;
pub mod schema;
pub mod settings;
pub mod validate;
