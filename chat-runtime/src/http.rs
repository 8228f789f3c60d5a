//! The HTTP client for calls to tenants' own servers: pre-send hooks and
//! webhooks.

use std::sync::{Arc, OnceLock};

/// Returns the process's HTTP client, built on first use, so all tenants
/// share one connection pool. The error is the reason it could not be built.
pub fn client() -> Result<&'static reqwest::Client, String> {
    static CLIENT: OnceLock<Result<reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(build_client)
        .as_ref()
        .map_err(String::clone)
}

fn build_client() -> Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    let loaded = rustls_native_certs::load_native_certs();
    for certificate in loaded.certs {
        // Skipping a certificate that rustls cannot parse keeps the rest of
        // the system store usable.
        let _ = roots.add(certificate);
    }
    if roots.is_empty() {
        tracing::warn!(
            errors = loaded.errors.len(),
            "No trusted root certificate found in the system store; calls to https hooks and webhooks will fail"
        );
    }
    // Named rather than taken from a process-wide default, because the
    // process links more than one rustls crypto provider.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        // A redirect would carry the signed message to another address
        // than the one configured, so it counts as a failed call.
        .redirect(reqwest::redirect::Policy::none())
        // Messages go to the tenant's own service directly, so a proxy
        // named in the environment never sees them.
        .no_proxy()
        .user_agent(concat!("parley-runtime/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|error| error.to_string())
}
