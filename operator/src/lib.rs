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
//! - [`keyspace`]: tenant keyspaces and CQL roles in ScyllaDB.
//! - [`render`]: the `render` subcommand, which prints those objects.
//! - [`controller`]: the reconcile loop against a cluster.
//! - [`telemetry`]: health, readiness and metrics endpoints.
//! - [`cli`]: the `parley-operator` command line.

pub mod build;
pub mod cli;
pub mod controller;
pub mod crd;
pub mod keyspace;
pub mod naming;
pub mod quantity;
pub mod render;
pub mod schema;
pub mod settings;
pub mod telemetry;
pub mod validate;

/// Makes aws-lc-rs the process-wide crypto provider of rustls. The operator
/// links two providers: ring, which its Kubernetes client enables, and
/// aws-lc-rs, which the ScyllaDB driver's rustls enables. With both present
/// rustls cannot pick one, and the Kubernetes client fails to build its TLS
/// settings unless one was installed first. Calling this again is harmless.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is all this needs.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Joins an error and its causes with ": ", for one log field or message.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}
