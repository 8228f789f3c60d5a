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
    processes: Vec<(&'static str, Child)>,
    pub dir: tempfile::TempDir,
    pub kubeconfig: PathBuf,
    pub client: Client,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, child) in self.processes.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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

fn spawn(name: &'static str, program: &Path, args: &[String], log: &Path) -> (&'static str, Child) {
    let log = std::fs::File::create(log).unwrap();
    let child = Command::new(program)
        .args(args)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|error| panic!("failed to start {name} ({}): {error}", program.display()));
    (name, child)
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + START_TIMEOUT;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} was not ready within {START_TIMEOUT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
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
        let assets = assets();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().to_owned();
        let token = write_credentials(&path);
        let (etcd_port, etcd_peer, apiserver_port, manager_port) =
            (free_port(), free_port(), free_port(), free_port());
        let mut processes = Vec::new();

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
        processes.push(spawn(
            "etcd",
            &assets.join("etcd"),
            &etcd_args,
            &path.join("etcd.log"),
        ));
        wait_until("etcd", || {
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
        processes.push(spawn(
            "kube-apiserver",
            &assets.join("kube-apiserver"),
            &apiserver_args,
            &path.join("apiserver.log"),
        ));
        let ca = path.join("ca.crt");
        wait_until("kube-apiserver", || {
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
        processes.push(spawn(
            "kube-controller-manager",
            &assets.join("kube-controller-manager"),
            &manager_args,
            &path.join("manager.log"),
        ));
        wait_until("kube-controller-manager", || {
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
        let client = Client::try_from(config).unwrap();
        Cluster {
            processes,
            dir,
            kubeconfig,
            client,
        }
    }
}
