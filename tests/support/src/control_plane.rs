//! A real kube-apiserver + etcd, started like controller-runtime's envtest.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Config};

use crate::error::{Error, Result, io_at};
use crate::pki::{CertAndKey, Pki};
use crate::process::{ManagedProcess, StateFile, log_tail, reap_dead_owners};

/// The service CIDR handed to the apiserver. Inside 198.18.0.0/15 (RFC 2544 benchmarking space), so
/// a ClusterIP can never name a real host; the netns cluster uses the same /24 for its DNAT VIPs.
pub const SERVICE_CIDR: &str = "198.19.255.0/24";

/// The first address of [`SERVICE_CIDR`], as the `kubernetes` Service would have it: always a SAN of
/// the serving certificate, and where [`crate::NetCluster::expose_apiserver`] relays from.
pub const APISERVER_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 255, 1);

/// How long the apiserver gets to answer /readyz. A cold start on 2 cores takes a few seconds.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// Knobs for [`ControlPlane::start_with`]. `Default` is what [`ControlPlane::start`] uses.
#[derive(Clone, Debug)]
pub struct ControlPlaneOptions {
    /// Address the apiserver binds to and advertises. Loopback by default.
    pub bind_address: IpAddr,
    /// Extra IP SANs for the serving certificate (e.g. an address a netns relay exposes).
    pub extra_serving_ips: Vec<IpAddr>,
    /// Extra `--flag=value` arguments appended to kube-apiserver's command line.
    pub extra_apiserver_args: Vec<String>,
}

impl Default for ControlPlaneOptions {
    fn default() -> Self {
        ControlPlaneOptions {
            bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
            extra_serving_ips: Vec::new(),
            extra_apiserver_args: Vec::new(),
        }
    }
}

/// The directory holding `kube-apiserver`, `etcd` (and `helm`), from `KUBEBUILDER_ASSETS`.
pub fn assets_dir() -> Result<PathBuf> {
    let dir = std::env::var_os("KUBEBUILDER_ASSETS")
        .map(PathBuf::from)
        .ok_or_else(|| Error::AssetsMissing { missing: "anything (the variable is unset)".into() })?;
    for binary in ["kube-apiserver", "etcd"] {
        if !dir.join(binary).is_file() {
            return Err(Error::AssetsMissing { missing: format!("{binary} (looked in {})", dir.display()) });
        }
    }
    Ok(dir)
}

/// A running etcd + kube-apiserver with RBAC on, its PKI and its temp directory.
///
/// Dropping it kills both processes and deletes the directory. See the crate docs for what is
/// missing without controller-manager, scheduler and kubelet.
pub struct ControlPlane {
    // Field order is drop order: processes die before their directory is removed.
    apiserver: ManagedProcess,
    etcd: ManagedProcess,
    pki: Pki,
    url: String,
    kubeconfig_yaml: String,
    kubeconfig_path: PathBuf,
    state: StateFile,
    /// How each process was started, so a test can stop and start it again (an outage).
    etcd_launch: Launch,
    apiserver_launch: Launch,
    dir: tempfile::TempDir,
}

/// A process's program and arguments, and where it logs.
struct Launch {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    log: PathBuf,
}

impl Launch {
    fn spawn(&self, state: &StateFile) -> Result<ManagedProcess> {
        let mut command = Command::new(&self.program);
        command.args(&self.args);
        // Never route the processes' own outbound calls (webhooks, etcd) through a proxy.
        for variable in ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"] {
            command.env_remove(variable);
        }
        let process = ManagedProcess::spawn(self.name, command, &self.log)?;
        state.record_group(process.pid(), &process.comm())?;
        Ok(process)
    }
}

/// Which control-plane process an outage stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PlaneProcess {
    Etcd,
    ApiServer,
}

static SHARED: tokio::sync::OnceCell<ControlPlane> = tokio::sync::OnceCell::const_new();
static NAME_SEQ: AtomicU64 = AtomicU64::new(0);

impl ControlPlane {
    /// Starts a private control plane with default options.
    pub async fn start() -> Result<Self> {
        Self::start_with(ControlPlaneOptions::default()).await
    }

    /// Starts a private control plane. Ports are picked free on the bind address; a lost race for a
    /// port is retried.
    ///
    pub async fn start_with(options: ControlPlaneOptions) -> Result<Self> {
        let assets = assets_dir()?;
        reap_dead_owners();
        let mut last_error = None;
        for _attempt in 0..3 {
            match Self::start_once(&assets, &options).await {
                Ok(plane) => return Ok(plane),
                Err(error) if error.to_string().contains("address already in use") => last_error = Some(error),
                Err(error) => return Err(error),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Invalid("control plane start failed".into())))
    }

    /// One control plane per test binary, started on first use and shared by every test in it.
    ///
    /// It is started on a dedicated thread and runtime (so a test whose runtime ends mid-start does
    /// not cancel it for the others), needs no runtime afterwards, and is torn down at process exit
    /// (atexit handler; PDEATHSIG if the process is killed). Tests sharing it must not assume an empty cluster: use
    /// [`ControlPlane::unique_namespace`] and unique cluster-scoped names.
    pub async fn shared() -> Result<&'static ControlPlane> {
        SHARED
            .get_or_try_init(|| async {
                let (sender, receiver) = tokio::sync::oneshot::channel();
                std::thread::Builder::new()
                    .name("palisade-shared-control-plane".into())
                    .spawn(move || {
                        let started = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()
                            .map_err(io_at("tokio runtime"))
                            .and_then(|runtime| runtime.block_on(ControlPlane::start()));
                        let _ = sender.send(started);
                    })
                    .map_err(io_at("thread spawn"))?;
                let plane = receiver.await.map_err(|_| Error::Invalid("shared control plane thread died".into()))??;
                // SAFETY: registering a plain extern "C" fn with atexit has no preconditions.
                unsafe { libc::atexit(teardown_shared) };
                Ok(plane)
            })
            .await
    }

    async fn start_once(assets: &Path, options: &ControlPlaneOptions) -> Result<Self> {
        let started = Instant::now();
        let dir = tempfile::Builder::new().prefix("palisade-cp-").tempdir().map_err(io_at(std::env::temp_dir()))?;
        let state = StateFile::create("control-plane")?;
        state.record_dir(dir.path())?;
        let path = |name: &str| dir.path().join(name);

        let mut serving_ips = vec![options.bind_address];
        serving_ips.extend(options.extra_serving_ips.iter().copied());
        serving_ips.push(IpAddr::V4(APISERVER_SERVICE_IP));
        let pki = Pki::generate(&serving_ips)?;
        for (name, content) in [
            ("ca.crt", &pki.ca_pem),
            ("apiserver.crt", &pki.serving.cert_pem),
            ("apiserver.key", &pki.serving.key_pem),
            ("sa.key", &pki.sa_private_pem),
            ("sa.pub", &pki.sa_public_pem),
        ] {
            std::fs::write(path(name), content).map_err(io_at(path(name)))?;
        }

        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let (etcd_client, etcd_peer) = (free_port(loopback)?, free_port(loopback)?);
        let secure_port = free_port(options.bind_address)?;

        let client_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd_args = vec![
            "--name=palisade".to_string(),
            format!("--data-dir={}", path("etcd").display()),
            format!("--listen-client-urls={client_url}"),
            format!("--advertise-client-urls={client_url}"),
            format!("--listen-peer-urls={peer_url}"),
            format!("--initial-advertise-peer-urls={peer_url}"),
            format!("--initial-cluster=palisade={peer_url}"),
            "--unsafe-no-fsync=true".to_string(),
            "--log-level=warn".to_string(),
        ];
        let etcd_launch = Launch { name: "etcd", program: assets.join("etcd"), args: etcd_args, log: path("etcd.log") };
        let etcd = etcd_launch.spawn(&state)?;

        let host = url_host(options.bind_address);
        let url = format!("https://{host}:{secure_port}");
        let file = |name: &str| path(name).display().to_string();
        let mut apiserver_args = vec![
            format!("--etcd-servers={client_url}"),
            format!("--bind-address={}", options.bind_address),
            format!("--secure-port={secure_port}"),
            format!("--advertise-address={}", options.bind_address),
            // No lease/endpoint reconciler: it rejects loopback advertise addresses and we have no nodes.
            "--endpoint-reconciler-type=none".to_string(),
            format!("--cert-dir={}", file("certs")),
            format!("--tls-cert-file={}", file("apiserver.crt")),
            format!("--tls-private-key-file={}", file("apiserver.key")),
            format!("--client-ca-file={}", file("ca.crt")),
            "--authorization-mode=RBAC".to_string(),
            "--service-account-issuer=https://kubernetes.default.svc".to_string(),
            format!("--service-account-key-file={}", file("sa.pub")),
            format!("--service-account-signing-key-file={}", file("sa.key")),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--allow-privileged=true".to_string(),
            // No serviceaccount controller, so no `default` SA: the admission plugin would reject pods.
            "--disable-admission-plugins=ServiceAccount".to_string(),
            "--profiling=false".to_string(),
        ];
        apiserver_args.extend(options.extra_apiserver_args.iter().cloned());
        let apiserver_launch = Launch {
            name: "kube-apiserver",
            program: assets.join("kube-apiserver"),
            args: apiserver_args,
            log: path("apiserver.log"),
        };
        let apiserver = apiserver_launch.spawn(&state)?;

        let kubeconfig_yaml = kubeconfig(&url, &pki.ca_pem, &pki.admin, "palisade-admin");
        let kubeconfig_path = path("admin.kubeconfig");
        std::fs::write(&kubeconfig_path, &kubeconfig_yaml).map_err(io_at(&kubeconfig_path))?;

        let mut plane = ControlPlane {
            apiserver,
            etcd,
            pki,
            url,
            kubeconfig_yaml,
            kubeconfig_path,
            state,
            etcd_launch,
            apiserver_launch,
            dir,
        };
        plane.wait_ready(started).await?;
        Ok(plane)
    }

    /// Stops one process (SIGTERM, then SIGKILL after 5 s): the start of an outage.
    pub fn stop(&mut self, process: PlaneProcess) {
        match process {
            PlaneProcess::Etcd => self.etcd.terminate(Duration::from_secs(5)),
            PlaneProcess::ApiServer => self.apiserver.terminate(Duration::from_secs(5)),
        }
    }

    /// Starts a stopped process again, on the same ports and data, and waits until the API
    /// server is ready. Its log continues in `<name>.restarted.log`.
    pub async fn start_again(&mut self, process: PlaneProcess) -> Result<()> {
        let started = Instant::now();
        let launch = match process {
            PlaneProcess::Etcd => &mut self.etcd_launch,
            PlaneProcess::ApiServer => &mut self.apiserver_launch,
        };
        launch.log = launch.log.with_extension("restarted.log");
        let spawned = launch.spawn(&self.state)?;
        match process {
            PlaneProcess::Etcd => self.etcd = spawned,
            PlaneProcess::ApiServer => self.apiserver = spawned,
        }
        self.wait_ready(started).await
    }

    async fn wait_ready(&mut self, started: Instant) -> Result<()> {
        let client = self.admin_client()?;
        loop {
            if let Some(status) = self.etcd.exited() {
                return Err(self.etcd.exited_early_error(status));
            }
            if let Some(status) = self.apiserver.exited() {
                return Err(self.apiserver.exited_early_error(status));
            }
            let request = http::Request::get("/readyz").body(Vec::new()).map_err(|e| Error::Invalid(e.to_string()))?;
            if let Ok(body) = client.request_text(request).await
                && body.trim() == "ok"
            {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(Error::NotReady {
                    what: "kube-apiserver /readyz".into(),
                    seconds: READY_TIMEOUT.as_secs(),
                    log: self.apiserver.log_path().to_path_buf(),
                    tail: log_tail(self.apiserver.log_path(), 30),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `https://127.0.0.1:<port>`.
    pub fn apiserver_url(&self) -> &str {
        &self.url
    }

    /// The CA that signed the serving certificate and that the apiserver trusts for client certs.
    pub fn ca_pem(&self) -> &str {
        &self.pki.ca_pem
    }

    /// An admin (system:masters) kubeconfig with embedded credentials, for kubectl/helm/agents.
    pub fn kubeconfig_yaml(&self) -> &str {
        &self.kubeconfig_yaml
    }

    /// The admin kubeconfig, already written inside the control plane's temp dir.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Writes the admin kubeconfig to `path` (mode 0600).
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<()> {
        write_private(path.as_ref(), &self.kubeconfig_yaml)
    }

    /// A kubeconfig that authenticates with `token` (e.g. from [`ControlPlane::service_account_token`]).
    pub fn kubeconfig_for_token(&self, token: &str) -> String {
        kubeconfig_with_user(&self.url, &self.pki.ca_pem, &format!("token: {token}"))
    }

    /// A kubeconfig for `server` (e.g. the URL from [`crate::NetCluster::expose_apiserver`]), with
    /// `token` if given, else the admin client certificate.
    pub fn kubeconfig_for(&self, server: &str, token: Option<&str>) -> String {
        match token {
            Some(token) => kubeconfig_with_user(server, &self.pki.ca_pem, &format!("token: {token}")),
            None => kubeconfig(server, &self.pki.ca_pem, &self.pki.admin, "palisade-admin"),
        }
    }

    /// Temp dir with logs (`etcd.log`, `apiserver.log`), certs and kubeconfig.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// An admin client. A new one per call, because a kube `Client` is bound to the tokio runtime it
    /// was created on; call it inside the runtime that will use it.
    pub fn admin_client(&self) -> Result<Client> {
        self.client_with_auth(serde_json::json!({
            "client-certificate-data": b64(&self.pki.admin.cert_pem),
            "client-key-data": b64(&self.pki.admin.key_pem),
        }))
    }

    /// A client authenticating with a bearer token (subject to RBAC).
    pub fn client_for_token(&self, token: &str) -> Result<Client> {
        self.client_with_auth(serde_json::json!({ "token": token }))
    }

    /// A client with a fresh client certificate for `user` in `group` (subject to RBAC).
    pub fn client_for_user(&self, user: &str, group: Option<&str>) -> Result<Client> {
        let identity = self.pki.client_cert(user, group)?;
        self.client_with_auth(serde_json::json!({
            "client-certificate-data": b64(&identity.cert_pem),
            "client-key-data": b64(&identity.key_pem),
        }))
    }

    fn client_with_auth(&self, auth: serde_json::Value) -> Result<Client> {
        let uri = self.url.parse::<http::Uri>().map_err(|e| Error::Invalid(format!("apiserver url: {e}")))?;
        let mut config = Config::new(uri);
        config.root_cert = Some(pem_blocks_der(&self.pki.ca_pem)?);
        config.auth_info = serde_json::from_value(auth).map_err(|e| Error::Invalid(format!("auth info: {e}")))?;
        config.connect_timeout = Some(Duration::from_secs(5));
        Ok(Client::try_from(config)?)
    }

    /// A token for ServiceAccount `namespace/name` via the TokenRequest API, creating the SA if it is
    /// missing (there is no serviceaccount controller). The namespace must exist. Empty `audiences`
    /// means the apiserver's own audience.
    pub async fn service_account_token(&self, namespace: &str, name: &str, audiences: &[&str]) -> Result<String> {
        let client = self.admin_client()?;
        let accounts: Api<ServiceAccount> = Api::namespaced(client, namespace);
        let account = ServiceAccount {
            metadata: ObjectMeta { name: Some(name.to_string()), ..Default::default() },
            ..Default::default()
        };
        match accounts.create(&PostParams::default(), &account).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(error) => return Err(error.into()),
        }
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let issued: TokenRequest = accounts.create_subresource("token", name, &PostParams::default(), &request).await?;
        issued.status.map(|status| status.token).ok_or_else(|| Error::Invalid("TokenRequest returned no status".into()))
    }

    /// Applies CustomResourceDefinitions (each string may hold several `---` documents) and waits
    /// until every one is Established. Returns their names.
    pub async fn install_crds(&self, yaml_docs: &[&str]) -> Result<Vec<String>> {
        let client = self.admin_client()?;
        let crds: Api<CustomResourceDefinition> = Api::all(client);
        let mut names = Vec::new();
        for text in yaml_docs {
            let docs: Vec<Option<CustomResourceDefinition>> =
                serde_saphyr::from_multiple(text).map_err(|e| Error::Yaml(e.to_string()))?;
            for crd in docs.into_iter().flatten() {
                let name = crd.metadata.name.clone().ok_or_else(|| Error::Invalid("CRD without a name".into()))?;
                crds.patch(&name, &PatchParams::apply("palisade-testkit").force(), &Patch::Apply(&crd)).await?;
                names.push(name);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for name in &names {
            loop {
                let crd = crds.get(name).await?;
                let established = crd
                    .status
                    .and_then(|s| s.conditions)
                    .unwrap_or_default()
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True");
                if established {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(Error::Timeout { what: format!("CRD {name} to become Established"), seconds: 30 });
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(names)
    }

    /// Creates namespace `name` with `labels`. Namespaces never finish deleting here (no namespace
    /// controller), so a name can be used once per control plane.
    pub async fn create_namespace(&self, name: &str, labels: &BTreeMap<String, String>) -> Result<Namespace> {
        let client = self.admin_client()?;
        let namespace = Namespace {
            metadata: ObjectMeta { name: Some(name.to_string()), labels: Some(labels.clone()), ..Default::default() },
            ..Default::default()
        };
        Ok(Api::<Namespace>::all(client).create(&PostParams::default(), &namespace).await?)
    }

    /// Creates a namespace named `<prefix>-<n>` that no other test in this process uses, and returns
    /// the name.
    pub async fn unique_namespace(&self, prefix: &str) -> Result<String> {
        let name = unique_name(prefix);
        self.create_namespace(&name, &BTreeMap::new()).await?;
        Ok(name)
    }

    /// Kills both processes without `&mut` (for the shared instance at exit).
    fn kill_processes(&self) {
        crate::process::kill_group(self.apiserver.pid());
        crate::process::kill_group(self.etcd.pid());
    }
}

extern "C" fn teardown_shared() {
    if let Some(plane) = SHARED.get() {
        plane.kill_processes();
        let _ = std::fs::remove_dir_all(plane.dir.path());
        plane.state.remove();
    }
}

/// `<prefix>-<seq>`, unique in this process, lowercased and cut to a valid DNS label.
pub(crate) fn unique_name(prefix: &str) -> String {
    let seq = NAME_SEQ.fetch_add(1, Ordering::Relaxed);
    let prefix: String =
        prefix.to_lowercase().chars().filter(|c| c.is_ascii_alphanumeric() || *c == '-').take(50).collect();
    format!("{}-{seq}", prefix.trim_end_matches('-'))
}

fn free_port(address: IpAddr) -> Result<u16> {
    let listener = TcpListener::bind((address, 0)).map_err(io_at(format!("bind {address}:0")))?;
    Ok(listener.local_addr().map_err(io_at("local_addr"))?.port())
}

fn url_host(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text.as_bytes())
}

/// DER bodies of the PEM blocks in `pem` (kube's `root_cert` wants DER).
fn pem_blocks_der(pem: &str) -> Result<Vec<Vec<u8>>> {
    let mut blocks = Vec::new();
    let mut body = String::new();
    let mut inside = false;
    for line in pem.lines() {
        if line.starts_with("-----BEGIN") {
            inside = true;
            body.clear();
        } else if line.starts_with("-----END") {
            inside = false;
            let der = base64::engine::general_purpose::STANDARD
                .decode(body.as_bytes())
                .map_err(|e| Error::Invalid(format!("CA PEM: {e}")))?;
            blocks.push(der);
        } else if inside {
            body.push_str(line.trim());
        }
    }
    Ok(blocks)
}

fn kubeconfig(url: &str, ca_pem: &str, identity: &CertAndKey, _user: &str) -> String {
    kubeconfig_with_user(
        url,
        ca_pem,
        &format!(
            "client-certificate-data: {}\n    client-key-data: {}",
            b64(&identity.cert_pem),
            b64(&identity.key_pem)
        ),
    )
}

fn kubeconfig_with_user(url: &str, ca_pem: &str, user_fields: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: palisade
  cluster:
    server: {url}
    certificate-authority-data: {ca}
users:
- name: palisade
  user:
    {user_fields}
contexts:
- name: palisade
  context:
    cluster: palisade
    user: palisade
current-context: palisade
",
        ca = b64(ca_pem)
    )
}

/// Writes a file only its owner can read (keys, tokens, kubeconfigs).
pub fn write_private(path: &Path, content: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_at(path))?;
    file.write_all(content.as_bytes()).map_err(io_at(path))
}
