//! A real Kubernetes control plane for integration tests: etcd, kube-apiserver and
//! kube-controller-manager (Deployment, ReplicaSet and garbage-collector controllers),
//! built from the wrapper Go modules in `operator/testenv/` and started once per test
//! binary on loopback ports, the way controller-runtime's envtest does it.
//!
//! Binaries come from `$CANDELA_K8S_BIN` or `operator/testenv/build.sh` (cached under
//! `~/.cache/candela/k8s`). Every process runs under a small shell watchdog that SIGKILLs it
//! when the test process exits, because the test harness never runs static destructors.
//! There is no scheduler and no kubelet: pods stay Pending unless a test writes their
//! status.
//!
//! [`shared_with_hpa`] also starts the HorizontalPodAutoscaler controller (2 s sync period)
//! and gives the apiserver a front-proxy CA and client certificate (the `--requestheader-*`
//! and `--proxy-client-*` flags), so an aggregated API server such as prometheus-adapter
//! can authenticate the requests the apiserver forwards to it.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// Bearer token of the admin user (`system:masters`).
pub const ADMIN_TOKEN: &str = "candela-test-admin-token";
/// Bearer token of the operator's user (no groups: only what RBAC grants it).
pub const OPERATOR_TOKEN: &str = "candela-test-operator-token";
/// User name of [`OPERATOR_TOKEN`].
pub const OPERATOR_USER: &str = "candela-operator";

/// A running control plane.
pub struct TestEnv {
    /// Scratch directory (certs, etcd data, kubeconfigs, logs).
    pub dir: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// Whether the HPA controller and the front proxy run ([`shared_with_hpa`]).
    pub hpa: bool,
    _processes: Vec<Child>,
}

static ENV: OnceLock<TestEnv> = OnceLock::new();

/// The control plane shared by every test of this binary, started on first use.
pub fn shared() -> &'static TestEnv {
    start_shared(false)
}

/// [`shared`] with the HorizontalPodAutoscaler controller and the aggregation layer's
/// front proxy. A test binary uses either this or [`shared`], not both.
pub fn shared_with_hpa() -> &'static TestEnv {
    let env = start_shared(true);
    assert!(
        env.hpa,
        "this test binary started the control plane without the HPA controller"
    );
    env
}

fn start_shared(hpa: bool) -> &'static TestEnv {
    ENV.get_or_init(|| {
        // Start on a plain thread: the caller may be inside a tokio runtime.
        std::thread::spawn(move || TestEnv::start(hpa))
            .join()
            .expect("control plane thread")
    })
}

/// Runs `openssl args…`, panicking when it fails.
fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A front-proxy CA and a client certificate it signs (CN `front-proxy-client`), in `dir`.
fn front_proxy_certs(dir: &Path) {
    std::fs::write(dir.join("client-ext.cnf"), "extendedKeyUsage=clientAuth\n").expect("ext");
    openssl(
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "front-proxy-ca.key",
            "-out",
            "front-proxy-ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=front-proxy-ca",
        ],
        dir,
    );
    openssl(
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "front-proxy-client.key",
            "-out",
            "front-proxy-client.csr",
            "-subj",
            "/CN=front-proxy-client",
        ],
        dir,
    );
    openssl(
        &[
            "x509",
            "-req",
            "-in",
            "front-proxy-client.csr",
            "-CA",
            "front-proxy-ca.crt",
            "-CAkey",
            "front-proxy-ca.key",
            "-CAcreateserial",
            "-out",
            "front-proxy-client.crt",
            "-days",
            "2",
            "-extfile",
            "client-ext.cnf",
        ],
        dir,
    );
}

impl TestEnv {
    fn start(hpa: bool) -> Self {
        let bin = binaries();
        remove_stale_dirs();
        let dir = std::env::temp_dir().join(format!("candela-testenv-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("certs")).expect("scratch dir");
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let server = format!("https://127.0.0.1:{api_port}");

        let key = dir.join("sa.key");
        let status = Command::new("openssl")
            .args(["genrsa", "-out"])
            .arg(&key)
            .arg("2048")
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl genrsa failed");
        std::fs::write(
            dir.join("tokens.csv"),
            format!("{ADMIN_TOKEN},admin,admin-uid,system:masters\n{OPERATOR_TOKEN},{OPERATOR_USER},operator-uid\n"),
        )
        .expect("token file");
        write_kubeconfig(&dir.join("admin.kubeconfig"), &server, ADMIN_TOKEN);
        write_kubeconfig(&dir.join("operator.kubeconfig"), &server, OPERATOR_TOKEN);

        let mut processes = Vec::new();
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        processes.push(spawn_watched(
            &bin.join("etcd"),
            &[
                "--name=default".into(),
                format!("--data-dir={}", dir.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster=default={peer_url}"),
                "--unsafe-no-fsync".into(),
                "--log-level=warn".into(),
            ],
            &dir.join("etcd.log"),
        ));
        let mut front_proxy = Vec::new();
        if hpa {
            front_proxy_certs(&dir);
            let file = |name: &str| dir.join(name).display().to_string();
            front_proxy = vec![
                format!(
                    "--requestheader-client-ca-file={}",
                    file("front-proxy-ca.crt")
                ),
                "--requestheader-allowed-names=front-proxy-client".into(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                "--requestheader-group-headers=X-Remote-Group".into(),
                "--requestheader-username-headers=X-Remote-User".into(),
                format!(
                    "--proxy-client-cert-file={}",
                    file("front-proxy-client.crt")
                ),
                format!("--proxy-client-key-file={}", file("front-proxy-client.key")),
            ];
        }
        processes.push(spawn_watched(
            &bin.join("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                format!("--cert-dir={}", dir.join("certs").display()),
                format!("--secure-port={api_port}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
                "--authorization-mode=RBAC".into(),
                format!("--token-auth-file={}", dir.join("tokens.csv").display()),
                format!("--service-account-key-file={}", key.display()),
                format!("--service-account-signing-key-file={}", key.display()),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                "--disable-admission-plugins=ServiceAccount".into(),
                "--enable-priority-and-fairness=false".into(),
                "--v=0".into(),
            ]
            .into_iter()
            .chain(front_proxy)
            .collect::<Vec<_>>(),
            &dir.join("kube-apiserver.log"),
        ));
        let env = Self {
            dir,
            server,
            hpa,
            _processes: processes,
        };
        env.wait_ready();
        // Install the Candela CRD before the controller manager starts, so its garbage
        // collector knows the owner kind at once instead of after its 30 s discovery resync.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async { super::install_candela_crd(&env.admin().await).await });
        let mut env = env;
        let mut controllers =
            "deployment-controller,replicaset-controller,garbage-collector-controller".to_owned();
        let mut extra = Vec::new();
        if hpa {
            controllers.push_str(",horizontal-pod-autoscaler-controller");
            extra.push("--horizontal-pod-autoscaler-sync-period=2s".to_owned());
        }
        env._processes.push(spawn_watched(
            &bin.join("kube-controller-manager"),
            &[
                format!(
                    "--kubeconfig={}",
                    env.dir.join("admin.kubeconfig").display()
                ),
                format!("--controllers={controllers}"),
                "--leader-elect=false".into(),
                "--secure-port=0".into(),
                "--concurrent-deployment-syncs=10".into(),
                "--concurrent-replicaset-syncs=10".into(),
                "--v=0".into(),
            ]
            .into_iter()
            .chain(extra)
            .collect::<Vec<_>>(),
            &env.dir.join("kube-controller-manager.log"),
        ));
        env
    }

    fn wait_ready(&self) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let client = runtime.block_on(self.client_for("admin.kubeconfig"));
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .expect("request");
            match runtime.block_on(client.request_text(request)) {
                Ok(body) if body.trim() == "ok" => return,
                result if Instant::now() > deadline => {
                    panic!(
                        "kube-apiserver not ready after 90 s: {result:?}; logs in {}",
                        self.dir.display()
                    )
                }
                _ => std::thread::sleep(Duration::from_millis(250)),
            }
        }
    }

    async fn client_for(&self, kubeconfig: &str) -> Client {
        let path = self.dir.join(kubeconfig);
        let kc = Kubeconfig::read_from(&path).expect("kubeconfig parses");
        let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("kubeconfig loads");
        Client::try_from(config).expect("client builds")
    }

    /// A client authenticated as the cluster admin.
    pub async fn admin(&self) -> Client {
        self.client_for("admin.kubeconfig").await
    }

    /// A client authenticated as the operator's user, limited by RBAC.
    pub async fn operator(&self) -> Client {
        self.client_for("operator.kubeconfig").await
    }
}

fn binaries() -> PathBuf {
    if let Some(dir) = std::env::var_os("CANDELA_K8S_BIN") {
        return PathBuf::from(dir);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("testenv/build.sh");
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .expect("testenv/build.sh runs");
    assert!(out.status.success(), "testenv/build.sh failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("build.sh prints the bin dir")
            .trim(),
    )
}

/// Removes scratch directories of earlier test processes that are gone.
fn remove_stale_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("candela-testenv-") else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// A process started by [`spawn_watched`], stopped when dropped: SIGTERM to the watchdog,
/// whose trap kills the process, then a wait (no zombie).
pub struct Watched(pub Child);

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.0.id().to_string())
            .stderr(Stdio::null())
            .status();
        let _ = self.0.wait();
    }
}

/// Spawns `binary args…` under a watchdog shell that kills it once this process is gone.
pub fn spawn_watched(binary: &Path, args: &[String], log: &Path) -> Child {
    spawn_watched_env(binary, args, &[], log)
}

/// [`spawn_watched`] with extra environment variables.
pub fn spawn_watched_env(
    binary: &Path,
    args: &[String],
    envs: &[(&str, &std::ffi::OsStr)],
    log: &Path,
) -> Child {
    const WATCHDOG: &str = r#"parent=$1; shift
"$@" & child=$!
trap 'kill -9 $child 2>/dev/null' EXIT TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done"#;
    let log_file = std::fs::File::create(log).expect("log file");
    Command::new("bash")
        .arg("-c")
        .arg(WATCHDOG)
        .arg("watchdog")
        .arg(std::process::id().to_string())
        .arg(binary)
        .args(args)
        .envs(envs.iter().copied())
        .stdout(log_file.try_clone().expect("log handle"))
        .stderr(log_file)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {}: {e}", binary.display()))
}

fn write_kubeconfig(path: &Path, server: &str, token: &str) {
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    insecure-skip-tls-verify: true\n\
         users:\n- name: user\n  user:\n    token: {token}\ncontexts:\n- name: test\n  context:\n    cluster: test\n    user: user\n\
         current-context: test\n"
    );
    std::fs::write(path, text).expect("kubeconfig");
}
