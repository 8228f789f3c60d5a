//! Where the runtime container finds its files and serves HTTP. The
//! configuration file refers to these paths and the Deployment mounts
//! volumes at them, so both read them from here.

/// Port of the runtime's HTTP and WebSocket listener.
pub const HTTP_PORT: i32 = 8080;
/// Name of the container port and of the Service port.
pub const HTTP_PORT_NAME: &str = "http";

/// Directory of the ConfigMap volume. The whole ConfigMap is mounted,
/// not one file through `subPath`, because the kubelet never updates a
/// `subPath` mount when the ConfigMap changes.
pub const CONFIG_DIR: &str = "/etc/parley/config";
/// ConfigMap key, and so file name, of the runtime's configuration.
pub const CONFIG_FILE: &str = "config.yaml";
/// Directory of the credentials Secret volume. It sits beside the
/// configuration directory, not inside it, so neither mount hides the other.
pub const SECRETS_DIR: &str = "/etc/parley/secrets";
/// Directory of the ScyllaDB Secret volume, for ScyllaDB storage.
pub const SCYLLA_DIR: &str = "/etc/parley/scylla";
/// Directory of the Redis Secret volume, for a Redis with a password.
pub const REDIS_DIR: &str = "/etc/parley/redis";
/// Directory of the signing Secret volume, for a tenant with a pre-send
/// hook or webhooks.
pub const SIGNING_DIR: &str = "/etc/parley/signing";
/// Directory of the data volume, which contains the tenant's SQLite file.
pub const DATA_DIR: &str = "/var/lib/parley";
/// Writable scratch directory, because the root filesystem is read-only.
pub const TMP_DIR: &str = "/tmp";

/// User and group the runtime runs as. 65532 is the `nonroot` user of
/// distroless base images. Any non-root id works, because the runtime
/// writes only to mounted volumes, which `fsGroup` makes writable.
pub const RUNTIME_USER: i64 = 65532;

/// Returns the path of the runtime's configuration file.
pub fn config_path() -> String {
    format!("{CONFIG_DIR}/{CONFIG_FILE}")
}

/// Returns the path of the file the Secret's data key `data_key` is
/// mounted as.
pub fn secret_path(data_key: &str) -> String {
    format!("{SECRETS_DIR}/{data_key}")
}
