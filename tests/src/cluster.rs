//! A real Kubernetes control plane for tests and benchmarks: etcd,
//! kube-apiserver and kube-controller-manager (namespace, garbage-collector
//! and PVC protection controllers only, so nothing overwrites a Deployment
//! status a test sets), all on loopback with a temporary data directory.
//!
//! The binaries come from `KUBEBUILDER_ASSETS` when it is set, otherwise
//! from `scripts/envtest-assets.sh`, which builds them once from Debian's
//! `kubernetes` source package and caches them outside the checkout.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use kube::Client;

use kube::config::{KubeConfigOptions, Kubeconfig};

/// Maximum wait for a component to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(90);

pub struct Cluster {
    // Kept only to be dropped. Declared first, so the processes stop before
    // their data directory is removed.
    _processes: Processes,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub client: Client,
}

/// The control-plane processes started so far. Dropping it kills them in
/// reverse order, also when a later one fails to start and the test panics.
#[derive(Default)]
struct Processes(Vec<Component>);

struct Component {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Drop for Processes {
    fn drop(&mut self) {
        for component in self.0.iter_mut().rev() {
            let _ = component.child.kill();
            let _ = component.child.wait();
        }
    }
}

/// Lines of a component's log quoted when it fails to start.
const LOG_TAIL_LINES: usize = 20;

impl Processes {
    fn start(&mut self, name: &'static str, program: &Path, args: &[String], log: &Path) {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new(program)
            .args(args)
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|error| {
                panic!("failed to start {name} ({}): {error}", program.display())
            });
        self.0.push(Component {
            name,
            child,
            log: log.to_owned(),
        });
    }

    /// Waits until `ready` returns true for the component started last.
    /// Panics with the end of its log when it exits or is not ready within
    /// [`START_TIMEOUT`].
    fn wait_ready(&mut self, mut ready: impl FnMut() -> bool) {
        let Some(component) = self.0.last_mut() else {
            return;
        };
        let deadline = Instant::now() + START_TIMEOUT;
        while !ready() {
            if let Ok(Some(status)) = component.child.try_wait() {
                panic!(
                    "{} exited with {status} before it was ready; its log ends with:\n{}",
                    component.name,
                    log_tail(&component.log)
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "{} was not ready within {START_TIMEOUT:?}; its log ends with:\n{}",
                    component.name,
                    log_tail(&component.log)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// Returns the last [`LOG_TAIL_LINES`] lines of the file at `path`. The
/// temporary directory, logs included, is removed when a failed start
/// unwinds, so a panic message is the only place left to show them.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Directory holding etcd, kube-apiserver and kube-controller-manager.
pub fn assets() -> PathBuf {
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS") {
        return PathBuf::from(dir);
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/envtest-assets.sh");
    let output = Command::new("bash")
        .arg(script)
        .stderr(Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "{script} failed");
    let stdout = String::from_utf8(output.stdout).unwrap();
    PathBuf::from(stdout.lines().last().unwrap().trim())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn openssl(dir: &Path, args: &[&str]) {
    let status = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl is required to create the test certificates");
    assert!(status.success(), "openssl {args:?} failed");
}

fn write_credentials(dir: &Path) -> String {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=parley-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=kube-apiserver",
            "-keyout",
            "apiserver.key",
            "-out",
            "apiserver.csr",
        ],
    );
    std::fs::write(
        dir.join("apiserver.ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "apiserver.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "apiserver.ext",
            "-out",
            "apiserver.crt",
        ],
    );
    openssl(dir, &["genrsa", "-out", "service-account.key", "2048"]);

    let token: String = (0..48)
        .map(|index| char::from(b'a' + ((index * 7 + std::process::id() as usize) % 26) as u8))
        .collect();
    std::fs::write(
        dir.join("tokens.csv"),
        format!("{token},parley-admin,parley-admin,\"system:masters\"\n"),
    )
    .unwrap();
    token
}

fn kubeconfig_yaml(dir: &Path, port: u16, token: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://127.0.0.1:{port}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: admin\ncurrent-context: test\n",
        ca = dir.join("ca.crt").display()
    )
}

fn http_ok(url: &str, insecure: bool, ca: Option<&Path>, token: Option<&str>) -> bool {
    let mut command = Command::new("curl");
    command.args([
        "--silent",
        "--fail",
        "--max-time",
        "2",
        "--output",
        "/dev/null",
    ]);
    if insecure {
        command.arg("--insecure");
    }
    if let Some(ca) = ca {
        command.arg("--cacert").arg(ca);
    }
    if let Some(token) = token {
        command.args(["--header", &format!("Authorization: Bearer {token}")]);
    }
    command
        .arg(url)
        .status()
        .is_ok_and(|status| status.success())
}

async fn client_config(kubeconfig: &str) -> kube::Config {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig).unwrap();
    kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap()
}

impl Cluster {
    /// A client that counts the write requests (every method but GET) it
    /// sends, for tests that assert the operator writes nothing. Writes to
    /// leader election Leases are not counted.
    pub async fn counting_client(&self) -> (Client, Arc<AtomicUsize>) {
        let text = std::fs::read_to_string(&self.kubeconfig).unwrap();
        let writes = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&writes);
        let layer =
            tower::util::MapRequestLayer::new(move |request: http::Request<kube::client::Body>| {
                let lease = request.uri().path().contains("/apis/coordination.k8s.io/");
                if request.method() != http::Method::GET && !lease {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                request
            });
        let builder = kube::client::ClientBuilder::try_from(client_config(&text).await).unwrap();
        (builder.with_layer(&layer).build(), writes)
    }

    /// Starts the control plane and returns an admin client.
    pub async fn start() -> Cluster {
        Cluster::start_with(&assets()).await
    }

    /// Starts the control plane from the binaries in `assets`.
    pub async fn start_with(assets: &Path) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let token = write_credentials(&path);
        let (etcd_port, etcd_peer, apiserver_port, manager_port) =
            (free_port(), free_port(), free_port(), free_port());
        let mut processes = Processes::default();

        let etcd_args: Vec<String> = vec![
            "--data-dir".into(),
            path.join("etcd").display().to_string(),
            "--listen-client-urls".into(),
            format!("http://127.0.0.1:{etcd_port}"),
            "--advertise-client-urls".into(),
            format!("http://127.0.0.1:{etcd_port}"),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{etcd_peer}"),
            "--initial-cluster".into(),
            format!("default=http://127.0.0.1:{etcd_peer}"),
        ];
        processes.start(
            "etcd",
            &assets.join("etcd"),
            &etcd_args,
            &path.join("etcd.log"),
        );
        processes.wait_ready(|| {
            http_ok(
                &format!("http://127.0.0.1:{etcd_port}/health"),
                false,
                None,
                None,
            )
        });

        let apiserver_args: Vec<String> = vec![
            "--etcd-servers".into(),
            format!("http://127.0.0.1:{etcd_port}"),
            "--bind-address".into(),
            "127.0.0.1".into(),
            "--advertise-address".into(),
            "127.0.0.1".into(),
            "--secure-port".into(),
            apiserver_port.to_string(),
            "--tls-cert-file".into(),
            path.join("apiserver.crt").display().to_string(),
            "--tls-private-key-file".into(),
            path.join("apiserver.key").display().to_string(),
            "--client-ca-file".into(),
            path.join("ca.crt").display().to_string(),
            "--token-auth-file".into(),
            path.join("tokens.csv").display().to_string(),
            "--authorization-mode".into(),
            "RBAC".into(),
            // Room for one ClusterIP per tenant when a benchmark creates
            // thousands. Nothing sends traffic to these addresses, because no
            // kube-proxy runs.
            "--service-cluster-ip-range".into(),
            "10.0.0.0/16".into(),
            "--service-account-issuer".into(),
            "https://kubernetes.default.svc".into(),
            "--service-account-key-file".into(),
            path.join("service-account.key").display().to_string(),
            "--service-account-signing-key-file".into(),
            path.join("service-account.key").display().to_string(),
            // Endpoints validation rejects the loopback advertise address, so
            // the reconciler of the `kubernetes` Service's Endpoints would
            // retry a failing write every 10 s. Tests and benchmarks that
            // count writes in a steady state would count those.
            "--endpoint-reconciler-type".into(),
            "none".into(),
        ];
        processes.start(
            "kube-apiserver",
            &assets.join("kube-apiserver"),
            &apiserver_args,
            &path.join("apiserver.log"),
        );
        let ca = path.join("ca.crt");
        processes.wait_ready(|| {
            http_ok(
                &format!("https://127.0.0.1:{apiserver_port}/readyz"),
                false,
                Some(&ca),
                Some(&token),
            )
        });

        let kubeconfig = path.join("kubeconfig");
        let kubeconfig_text = kubeconfig_yaml(&path, apiserver_port, &token);
        std::fs::write(&kubeconfig, &kubeconfig_text).unwrap();
        let manager_args: Vec<String> = vec![
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--authentication-kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--authorization-kubeconfig".into(),
            kubeconfig.display().to_string(),
            // pvc-protection removes the finalizer of deleted claims, without which
            // a tenant namespace with a data claim never finishes deleting.
            "--controllers".into(),
            "namespace,garbagecollector,pvc-protection".into(),
            "--leader-elect=false".into(),
            "--bind-address".into(),
            "127.0.0.1".into(),
            "--secure-port".into(),
            manager_port.to_string(),
            "--port".into(),
            "0".into(),
            "--cert-dir".into(),
            path.join("manager-certs").display().to_string(),
        ];
        processes.start(
            "kube-controller-manager",
            &assets.join("kube-controller-manager"),
            &manager_args,
            &path.join("manager.log"),
        );
        processes.wait_ready(|| {
            http_ok(
                &format!("https://127.0.0.1:{manager_port}/healthz"),
                true,
                None,
                None,
            )
        });

        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::from_yaml(&kubeconfig_text).unwrap(),
            &KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        // The test binaries link two rustls crypto providers (ring for the
        // Kubernetes client, aws-lc-rs for the ScyllaDB driver), so one is
        // installed before the client builds its TLS settings. Err means one
        // is installed already.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let client = Client::try_from(config).unwrap();
        Cluster {
            _processes: processes,
            dir,
            kubeconfig,
            client,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write_executable(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// A stand-in etcd: it writes its pid to `etcd.pid` beside itself and
    /// returns 200 for every GET on the port of `--listen-client-urls`.
    const FAKE_ETCD: &str = r#"#!/usr/bin/env python3
import http.server, os, sys

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "etcd.pid"), "w") as f:
    f.write(str(os.getpid()))
url = sys.argv[sys.argv.index("--listen-client-urls") + 1]
port = int(url.rsplit(":", 1)[1])

class Healthy(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

http.server.HTTPServer(("127.0.0.1", port), Healthy).serve_forever()
"#;

    #[test]
    fn failed_start_stops_earlier_components() {
        let assets = tempfile::tempdir().unwrap();
        write_executable(assets.path(), "etcd", FAKE_ETCD);
        write_executable(
            assets.path(),
            "kube-apiserver",
            "#!/bin/sh\necho 'invalid flag in this test' >&2\nexit 3\n",
        );

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(Cluster::start_with(assets.path()))
        }));

        let message = *outcome.err().unwrap().downcast::<String>().unwrap();
        assert!(
            message.contains("kube-apiserver exited with exit status: 3"),
            "{message}"
        );
        assert!(message.contains("invalid flag in this test"), "{message}");
        let pid = std::fs::read_to_string(assets.path().join("etcd.pid")).unwrap();
        let pid = pid.trim();
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "the stand-in etcd (pid {pid}) is still running"
        );
    }
}
