//! The `server.redis` section and its validation.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Redis that relays live events between the runtime processes that serve
/// the same tenants.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db`. A password in the URL is accepted, but
    /// `password_file` or `password_env` keep it out of the config file.
    pub url: String,
    /// A file whose contents (trailing newline removed) are the password.
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// An environment variable that contains the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// First part of every Redis channel name, so that several deployments
    /// can share one Redis without hearing each other.
    #[serde(default = "default_channel_prefix")]
    pub channel_prefix: String,
}

fn default_channel_prefix() -> String {
    String::from("parley")
}

/// Longest accepted channel prefix.
const MAX_PREFIX_BYTES: usize = 64;

/// Validated Redis settings with the password loaded.
#[derive(Clone, PartialEq, Eq)]
pub struct RelaySettings {
    /// The URL as configured.
    pub url: String,
    /// The password from `password_file` or `password_env`, which replaces
    /// any password in the URL.
    pub password: Option<String>,
    pub channel_prefix: String,
    /// The database number of the URL. Redis pub/sub ignores it, so the
    /// relay puts it in its channel names to keep databases apart.
    pub database: i64,
}

impl std::fmt::Debug for RelaySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySettings")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("channel_prefix", &self.channel_prefix)
            .field("database", &self.database)
            .finish()
    }
}

impl RedisConfig {
    /// Checks the URL and the prefix, and loads the password. Relative
    /// paths resolve against `base`. Errors are the reason only; the caller
    /// names the field.
    pub fn validate(&self, base: &Path) -> Result<RelaySettings, String> {
        if !self.url.starts_with("redis://") {
            return Err(String::from(
                "url must start with redis:// (TLS and Unix sockets are not supported)",
            ));
        }
        let info = redis::IntoConnectionInfo::into_connection_info(self.url.as_str())
            .map_err(|error| format!("url {:?} is invalid: {error}", redact_url(&self.url)))?;
        check_prefix(&self.channel_prefix)?;
        let password = match (&self.password_file, &self.password_env) {
            (Some(_), Some(_)) => {
                return Err(String::from(
                    "set at most one of password_file and password_env",
                ));
            }
            (Some(path), None) => {
                let path = base.join(path);
                let text = std::fs::read_to_string(&path).map_err(|error| {
                    format!("failed to read password_file {}: {error}", path.display())
                })?;
                Some(text.trim_end_matches(['\r', '\n']).to_owned())
            }
            (None, Some(variable)) => Some(std::env::var(variable).map_err(|_| {
                format!("environment variable {variable} named by password_env is not set or not valid UTF-8")
            })?),
            (None, None) => None,
        };
        Ok(RelaySettings {
            url: self.url.clone(),
            password,
            channel_prefix: self.channel_prefix.clone(),
            database: info.redis_settings().db(),
        })
    }
}

impl RelaySettings {
    /// Connection details for the Redis client.
    pub fn connection_info(&self) -> redis::RedisResult<redis::ConnectionInfo> {
        let info = redis::IntoConnectionInfo::into_connection_info(self.url.as_str())?;
        Ok(match &self.password {
            Some(password) => {
                let redis = info.redis_settings().clone().set_password(password);
                info.set_redis_settings(redis)
            }
            None => info,
        })
    }
}

/// Checks a channel prefix. It may not contain `:`, which separates the
/// parts of a channel name, so two prefixes or tenants never give one name.
fn check_prefix(prefix: &str) -> Result<(), String> {
    let valid = !prefix.is_empty()
        && prefix.len() <= MAX_PREFIX_BYTES
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "channel_prefix {prefix:?} must be 1 to {MAX_PREFIX_BYTES} letters, digits, '-', '_' or '.'"
        ))
    }
}

/// Returns the URL with any password replaced, for messages and logs.
pub(super) fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:<redacted>@{host}")
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str) -> RedisConfig {
        RedisConfig {
            url: url.to_owned(),
            password_file: None,
            password_env: None,
            channel_prefix: default_channel_prefix(),
        }
    }

    #[test]
    fn plain_url_is_accepted() {
        let settings = config("redis://127.0.0.1:6379/2")
            .validate(Path::new("."))
            .unwrap();
        assert_eq!(settings.channel_prefix, "parley");
        assert_eq!(settings.password, None);
        assert_eq!(settings.database, 2);
        settings.connection_info().unwrap();
    }

    #[test]
    fn tls_and_garbage_urls_are_rejected() {
        let tls = config("rediss://127.0.0.1:6379").validate(Path::new("."));
        assert!(tls.unwrap_err().contains("redis://"));
        let other_scheme = config("http://127.0.0.1").validate(Path::new("."));
        assert!(other_scheme.unwrap_err().contains("redis://"));
        let bad_port = config("redis://127.0.0.1:notaport").validate(Path::new("."));
        assert!(bad_port.unwrap_err().contains("is invalid"));
    }

    #[test]
    fn prefix_with_separator_is_rejected() {
        let mut bad = config("redis://127.0.0.1");
        bad.channel_prefix = String::from("a:b");
        assert!(bad.validate(Path::new(".")).is_err());
        bad.channel_prefix = String::new();
        assert!(bad.validate(Path::new(".")).is_err());
    }

    #[test]
    fn password_file_replaces_url_password() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("redis-password"), "s3cret\n").unwrap();
        let mut with_file = config("redis://:old@127.0.0.1:6379");
        with_file.password_file = Some(PathBuf::from("redis-password"));
        let settings = with_file.validate(dir.path()).unwrap();
        assert_eq!(settings.password.as_deref(), Some("s3cret"));
        let info = settings.connection_info().unwrap();
        assert_eq!(info.redis_settings().password(), Some("s3cret"));
        assert!(!format!("{settings:?}").contains("s3cret"));
        assert!(!format!("{settings:?}").contains("old"));
    }

    #[test]
    fn missing_password_file_names_the_path() {
        let mut missing = config("redis://127.0.0.1");
        missing.password_file = Some(PathBuf::from("/nonexistent/redis-password"));
        let error = missing.validate(Path::new(".")).unwrap_err();
        assert!(error.contains("/nonexistent/redis-password"), "{error}");
    }
}
