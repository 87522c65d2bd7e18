//! Settings of `magsd serve` (flags and `MAGS_*` environment variables) and
//! their defaults.

use mags_control::workspaces::StorageConfig;
use mags_vm::{Accel, RuntimeConfig};
use mags_workspace::{ObjectConfig, S3Config};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which executor runs jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecutorKind {
    /// A QEMU microVM per job (the real thing).
    Vm,
    /// The test interpreter of [`mags_control::executor::fake`]; runs nothing.
    Fake,
}

/// `--accel`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AccelArg {
    Kvm,
    Tcg,
}

impl From<AccelArg> for Accel {
    fn from(a: AccelArg) -> Accel {
        match a {
            AccelArg::Kvm => Accel::Kvm,
            AccelArg::Tcg => Accel::Tcg,
        }
    }
}

/// Where state lives: shared by every `magsd` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct DataArgs {
    /// State directory (database, images, sandboxes).
    #[arg(long, env = "MAGS_DATA_DIR", default_value_os_t = default_data_dir())]
    pub data_dir: PathBuf,
    /// Database URL (sqlite://PATH or postgres://...); default
    /// sqlite://<data-dir>/mags.db.
    #[arg(long, env = "MAGS_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Guest image cache (default <data-dir>/images); may be shared.
    #[arg(long, env = "MAGS_IMAGES_DIR")]
    pub images_dir: Option<PathBuf>,
}

impl DataArgs {
    /// The database URL to use.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("mags.db").display()))
    }
}

/// Flags of `magsd serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub data: DataArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Address to listen on (port 0 picks a free one; see --server-file).
    #[arg(long, env = "MAGS_LISTEN", default_value = "127.0.0.1:7070")]
    pub listen: String,
    /// The static guest agent binary (default: found by
    /// `mags_vm::locate`, e.g. `mags-agent-static` next to magsd).
    #[arg(long, env = "MAGS_AGENT_BIN")]
    pub agent_bin: Option<PathBuf>,
    /// Force an accelerator instead of probing.
    #[arg(long, env = "MAGS_ACCEL")]
    pub accel: Option<AccelArg>,
    /// Most VMs at once (default: from cores and free memory).
    #[arg(long, env = "MAGS_MAX_VMS")]
    pub max_vms: Option<u32>,
    /// Persistent sandboxes running at once (sleeping ones do not count;
    /// default: --max-vms). When full, the least recently used idle one is
    /// put to sleep to make room.
    #[arg(long, env = "MAGS_MAX_SANDBOXES")]
    pub max_sandboxes: Option<u32>,
    /// Seconds between saves of a running sandbox's synced workspace on
    /// its own (0: only on sync, sleep and stop): what a lost host can
    /// lose of it.
    #[arg(long, env = "MAGS_AUTOSYNC_SECS", default_value_t = 300)]
    pub autosync_secs: u64,
    /// Seconds without activity before a persistent sandbox sleeps (a job
    /// may say otherwise with `idle_timeout_secs`).
    #[arg(long, env = "MAGS_IDLE_TIMEOUT_SECS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// Guest memory per VM, MiB.
    #[arg(long, env = "MAGS_VM_MEMORY_MB", default_value_t = mags_control::executor::vm::DEFAULT_MEMORY_MB)]
    pub vm_memory_mb: u32,
    /// Idle VMs kept restored and ready (the warm pool); 0 turns it off.
    /// Default: one per core, at most 4.
    #[arg(long, env = "MAGS_POOL_SIZE")]
    pub pool_size: Option<usize>,
    /// If this file does not exist, create user `admin` and a token, and
    /// write the token here (mode 0600).
    #[arg(long, env = "MAGS_LOCAL_TOKEN_FILE")]
    pub local_token_file: Option<PathBuf>,
    /// Once listening, write {"url", "pid"} here (atomically).
    #[arg(long, env = "MAGS_SERVER_FILE")]
    pub server_file: Option<PathBuf>,
    #[command(flatten)]
    pub apps: AppsArgs,
    #[command(flatten)]
    pub egress: EgressArgs,
    #[command(flatten)]
    pub quota: QuotaArgs,
    /// Address of the SSH gateway (`ssh`/`scp`/`sftp` into sandboxes with
    /// the key `/access` gives). Default: the host of --listen with a free
    /// port (clients learn it from `/access`); `off` turns it off.
    #[arg(long, env = "MAGS_SSH_LISTEN")]
    pub ssh_listen: Option<String>,
    /// Host name `/access` gives SSH clients (default: the address the
    /// gateway is bound to, or the host the API was reached at when bound
    /// to all interfaces).
    #[arg(long, env = "MAGS_SSH_HOST")]
    pub ssh_host: Option<String>,
    /// The SSH gateway's host key (default <data-dir>/ssh_host_ed25519_key;
    /// made if missing). Give every host of a cluster a copy of one key so
    /// that clients see one fingerprint whichever host answers.
    #[arg(long, env = "MAGS_SSH_HOST_KEY")]
    pub ssh_host_key: Option<PathBuf>,
    /// Audit events older than this many days are deleted (hourly); 0
    /// keeps them by count only.
    #[arg(long, env = "MAGS_AUDIT_RETENTION_DAYS", default_value_t = mags_control::audit::DEFAULT_RETENTION_DAYS)]
    pub audit_retention_days: u32,
    /// At most this many audit events are kept (the newest).
    #[arg(long, env = "MAGS_AUDIT_MAX_EVENTS", default_value_t = mags_control::audit::DEFAULT_MAX_EVENTS, value_parser = clap::value_parser!(i64).range(1..))]
    pub audit_max_events: i64,
    /// Ended jobs (with their output) older than this many days are
    /// deleted (at start and every 5 minutes); 0 keeps them.
    #[arg(long, env = "MAGS_JOB_RETENTION_DAYS", default_value_t = mags_control::retention::DEFAULT_RETENTION_DAYS)]
    pub job_retention_days: u32,
    /// All jobs' stored output together, MiB: past it the output of the
    /// oldest ended jobs is deleted (the jobs stay, marked
    /// `output_pruned`); 0 turns it off.
    #[arg(long, env = "MAGS_JOB_OUTPUT_MAX_MB", default_value_t = mags_control::retention::DEFAULT_OUTPUT_MAX_MB)]
    pub job_output_max_mb: u64,
    /// How each QEMU is confined: `auto` (everything this host allows;
    /// all of it as root), `require` (refuse to start without the full
    /// jail), `off` (QEMU's seccomp filter only). See SECURITY.md.
    #[arg(long, env = "MAGS_JAIL", default_value = "auto", value_parser = ["auto", "require", "off"])]
    pub jail: String,

    /// Which executor runs jobs: `vm`, or `fake` (for tests only: jobs are
    /// interpreted by [`mags_control::executor::fake`], no VM boots). Hidden.
    #[arg(long, env = "MAGS_EXECUTOR", default_value = "vm", hide = true)]
    pub executor: ExecutorKind,
}

/// What one user or request may take (0 turns a limit off).
#[derive(Debug, Clone, clap::Args)]
pub struct QuotaArgs {
    /// VMs one user runs at once: one-shot jobs plus running persistent
    /// sandboxes (sleeping ones do not count). More one-shot jobs wait
    /// `queued`; a new sandbox with none of the user's able to sleep is
    /// refused (429). Default: --max-vms.
    #[arg(long, env = "MAGS_USER_MAX_VMS")]
    pub user_max_vms: Option<u32>,
    /// Jobs one user may have waiting for a VM (`accepted`/`queued`);
    /// more are refused with 429.
    #[arg(long, env = "MAGS_USER_MAX_PENDING", default_value_t = 100)]
    pub user_max_pending: u32,
    /// Disk one user may hold, GiB: the sizes of their workspace disks plus
    /// their uploads of the last 24 hours plus their jobs' stored output
    /// (and a job's own disk while it runs). Past it: 403.
    #[arg(long, env = "MAGS_USER_DISK_GB", default_value_t = 100)]
    pub user_disk_gb: u64,
    /// API requests per second one user may make, sustained (429 with
    /// Retry-After beyond it).
    #[arg(long, env = "MAGS_USER_REQUESTS_PER_SEC", default_value_t = 50.0)]
    pub user_requests_per_sec: f64,
    /// Requests one user may make at once above the sustained rate.
    #[arg(long, env = "MAGS_USER_REQUEST_BURST", default_value_t = 200)]
    pub user_request_burst: u32,
    /// Largest upload (`POST /mags-files`), bytes; larger is a 413 and
    /// nothing is kept.
    #[arg(long, env = "MAGS_UPLOAD_MAX_BYTES", default_value_t = mags_api::limits::MAX_UPLOAD_BYTES)]
    pub upload_max_bytes: u64,
    /// Seconds a one-shot job's script may run unless its request says
    /// (`timeout`); past it the script is killed and the job ends in
    /// `error`. A persistent job's script is limited only by its own
    /// `timeout`.
    #[arg(long, env = "MAGS_JOB_TIMEOUT_SECS", default_value_t = 3600)]
    pub job_timeout_secs: u64,
}

impl ServeArgs {
    /// The bounds on ended jobs' output these flags give.
    pub fn retention(&self) -> mags_control::retention::Retention {
        mags_control::retention::Retention {
            max_age_days: self.job_retention_days,
            max_output_bytes: self.job_output_max_mb.saturating_mul(1 << 20),
        }
    }
}

impl QuotaArgs {
    /// The per-user limits these flags give (`max_vms`: the server's).
    pub fn user_limits(&self, max_vms: u32) -> mags_control::quota::UserLimits {
        mags_control::quota::UserLimits {
            max_running: self.user_max_vms.unwrap_or(max_vms),
            max_pending: self.user_max_pending,
            disk_bytes: self.user_disk_gb.saturating_mul(1 << 30),
            requests_per_sec: self.user_requests_per_sec,
            request_burst: self.user_request_burst,
        }
    }

    /// The job timeout default (None: no limit).
    pub fn job_timeout(&self) -> Option<u64> {
        (self.job_timeout_secs > 0).then_some(self.job_timeout_secs)
    }
}

/// Public URLs (the URL proxy).
#[derive(Debug, Clone, clap::Args)]
pub struct AppsArgs {
    /// URLs are `<subdomain>.<apps domain>`; requests with such a Host are
    /// proxied into sandboxes. `localhost` works in a local browser with
    /// no DNS; elsewhere point a wildcard DNS record here.
    #[arg(long, env = "MAGS_APPS_DOMAIN", default_value = "localhost")]
    pub apps_domain: String,
    /// A separate address for the URL proxy (default: the API's listener
    /// serves both, told apart by Host).
    #[arg(long, env = "MAGS_APPS_LISTEN")]
    pub apps_listen: Option<String>,
    /// Port written in URLs (default: the port the proxy listens on); e.g.
    /// 443 behind a TLS-terminating front, with --apps-scheme https.
    #[arg(long, env = "MAGS_APPS_PUBLIC_PORT")]
    pub apps_public_port: Option<u16>,
    /// Scheme written in URLs (`https` when --apps-tls-cert is given).
    #[arg(long, env = "MAGS_APPS_SCHEME", value_parser = ["http", "https"])]
    pub apps_scheme: Option<String>,
    /// Serve the URL proxy over TLS with this certificate chain (PEM,
    /// leaf first; for `*.<apps domain>`). Needs --apps-listen and
    /// --apps-tls-key; the API listener stays plain HTTP.
    #[arg(long, env = "MAGS_APPS_TLS_CERT", requires_all = ["apps_tls_key", "apps_listen"])]
    pub apps_tls_cert: Option<PathBuf>,
    /// The private key of --apps-tls-cert (PEM).
    #[arg(long, env = "MAGS_APPS_TLS_KEY", requires = "apps_tls_cert")]
    pub apps_tls_key: Option<PathBuf>,
}

impl AppsArgs {
    /// The scheme in URLs: as given, else `https` with TLS, else `http`.
    pub fn scheme(&self) -> String {
        match (&self.apps_scheme, &self.apps_tls_cert) {
            (Some(s), _) => s.clone(),
            (None, Some(_)) => "https".into(),
            (None, None) => "http".into(),
        }
    }
}

/// Guest outbound networking and its policy (see `mags_vm::egress`).
#[derive(Debug, Clone, clap::Args)]
pub struct EgressArgs {
    /// No outbound network for any sandbox.
    #[arg(long, env = "MAGS_NO_EGRESS")]
    pub no_egress: bool,
    /// Destinations sandboxes may reach even if a built-in rule denies them
    /// (CIDRs or hostnames, comma-separated or repeated).
    #[arg(long, env = "MAGS_EGRESS_ALLOW", value_delimiter = ',')]
    pub egress_allow: Vec<mags_vm::egress::Rule>,
    /// Destinations sandboxes may never reach (CIDRs or hostnames).
    #[arg(long, env = "MAGS_EGRESS_DENY", value_delimiter = ',')]
    pub egress_deny: Vec<mags_vm::egress::Rule>,
    /// Only --egress-allow destinations are reachable.
    #[arg(long, env = "MAGS_EGRESS_ALLOW_ONLY")]
    pub egress_allow_only: bool,
    /// PEM file of extra CA certificates guests trust (default: the
    /// host's locally added ones, /usr/local/share/ca-certificates).
    #[arg(long, env = "MAGS_GUEST_CA_CERTS")]
    pub guest_ca_certs: Option<PathBuf>,
}

impl EgressArgs {
    /// The policy these flags give, on top of the built-in denials.
    pub fn policy(&self) -> mags_vm::egress::EgressPolicy {
        mags_vm::egress::EgressPolicy {
            allow: self.egress_allow.clone(),
            deny: self.egress_deny.clone(),
            allow_only: self.egress_allow_only,
            ..mags_vm::egress::EgressPolicy::for_this_host()
        }
    }

    /// The extra CAs guests trust, as PEM.
    pub fn ca_certs(&self) -> std::io::Result<String> {
        match &self.guest_ca_certs {
            Some(p) => std::fs::read_to_string(p),
            None => Ok(mags_vm::net::local_ca_certs()),
        }
    }
}

/// `/var/lib/mags` for root, else `$XDG_DATA_HOME/mags` or
/// `~/.local/share/mags`.
pub fn default_data_dir() -> PathBuf {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/lib/mags");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("mags");
    }
    match std::env::var_os("HOME") {
        Some(h) => Path::new(&h).join(".local/share/mags"),
        None => PathBuf::from("mags-data"),
    }
}

/// The runtime settings for these flags. Without `--agent-bin` the agent
/// is looked for by `mags_vm::locate`; if it is not found, the image build
/// reports that (an already built image does not need it).
pub fn runtime_config(
    data: &DataArgs,
    agent_bin: Option<PathBuf>,
    accel: Option<AccelArg>,
) -> RuntimeConfig {
    let agent_bin = agent_bin.unwrap_or_else(|| {
        mags_vm::locate::find_agent_bin().unwrap_or_else(|e| {
            tracing::debug!("{e}");
            PathBuf::from("mags-agent")
        })
    });
    RuntimeConfig {
        data_dir: data.data_dir.clone(),
        agent_bin,
        accel: accel.map(Into::into),
        images_dir: data.images_dir.clone(),
        egress_socket: None,
        extra_ca_certs: String::new(),
        jail: Default::default(),
    }
}

/// `name` in a directory of `$PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Default VM limit: twice the cores, but no more than one per GiB of
/// available memory, and at least one.
pub fn default_max_vms() -> u32 {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mem_gib = available_memory_gib().unwrap_or(u32::MAX);
    (cores * 2).min(mem_gib).max(1)
}

/// `MemAvailable` from /proc/meminfo, in whole GiB.
fn available_memory_gib() -> Option<u32> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kib: u64 = info
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    u32::try_from(kib / (1024 * 1024)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_sane() {
        assert!(default_max_vms() >= 1);
        let d = DataArgs {
            data_dir: PathBuf::from("/x/y"),
            database_url: None,
            images_dir: None,
        };
        assert_eq!(d.database_url(), "sqlite:///x/y/mags.db");
    }
}

/// This host among others on one database (flags of `magsd serve`). One
/// host with SQLite needs none of them: it is a cluster of one.
#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// This host's name in the cluster (default: the machine's host
    /// name). A host started again under its name takes its own jobs
    /// back; two running at once under one name fence each other.
    #[arg(long, env = "MAGS_HOST_NAME")]
    pub host_name: Option<String>,
    /// A label of this host, KEY=VALUE (repeatable).
    #[arg(long = "host-label", env = "MAGS_HOST_LABELS", value_delimiter = ',', value_parser = parse_label)]
    pub host_labels: Vec<(String, String)>,
    /// Where this host takes requests relayed by other hosts (signed
    /// with the cluster secret; nothing else is answered there), e.g.
    /// `10.0.0.2:7071`. Needs --cluster-secret-file.
    #[arg(long, env = "MAGS_INTERNAL_LISTEN", requires = "cluster_secret_file")]
    pub internal_listen: Option<String>,
    /// The URL other hosts reach the internal listener at (default:
    /// `http://` and its address).
    #[arg(long, env = "MAGS_INTERNAL_URL")]
    pub internal_url: Option<String>,
    /// A file holding the secret every host of the cluster shares (at
    /// least 16 bytes): relayed requests are signed with it.
    #[arg(long, env = "MAGS_CLUSTER_SECRET_FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// Seconds a lease renewal holds (renewed five times as often).
    #[arg(long, env = "MAGS_LEASE_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub lease_secs: u64,
    /// Seconds a host's lease must have run out before the leader
    /// declares it lost and hands its work on.
    #[arg(long, env = "MAGS_LOST_AFTER_SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=86400))]
    pub lost_after_secs: u64,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(format!("{s:?} is not KEY=VALUE")),
    }
}

impl ClusterArgs {
    /// How this host takes part, running `capacity` one-shot jobs at once.
    pub fn config(&self, capacity: u32) -> mags_control::cluster::ClusterConfig {
        let name = self.host_name.clone().unwrap_or_else(machine_host_name);
        let mut cfg = mags_control::cluster::ClusterConfig::new(mags_store::HostInfo {
            name,
            internal_url: self.internal_url.clone(),
            capacity,
            labels: self.host_labels.iter().cloned().collect(),
        });
        cfg.lease = std::time::Duration::from_secs(self.lease_secs);
        cfg.renew_every = (cfg.lease / 5).max(std::time::Duration::from_millis(200));
        cfg.lost_after = std::time::Duration::from_secs(self.lost_after_secs);
        cfg
    }
}

/// The kernel's host name ("localhost" if it cannot be read).
fn machine_host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Where workspace snapshots and uploads are stored (flags of `magsd serve`).
#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// Object storage directory when no S3 bucket is set (default
    /// <data-dir>/objects).
    #[arg(long, env = "MAGS_OBJECTS_DIR")]
    pub objects_dir: Option<PathBuf>,
    /// S3 bucket for workspace snapshots and uploads (instead of a directory).
    #[arg(long, env = "MAGS_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 endpoint URL, e.g. http://127.0.0.1:9000 (default: AWS).
    #[arg(long, env = "MAGS_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    #[arg(long, env = "MAGS_S3_REGION")]
    pub s3_region: Option<String>,
    /// Access key (default: AWS_ACCESS_KEY_ID).
    #[arg(long, env = "MAGS_S3_ACCESS_KEY_ID")]
    pub s3_access_key_id: Option<String>,
    /// Secret key (default: AWS_SECRET_ACCESS_KEY).
    #[arg(long, env = "MAGS_S3_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub s3_secret_access_key: Option<String>,
    /// Seconds an unused workspace disk stays cached on this host; a local
    /// (not synced) workspace is gone after that.
    #[arg(long, env = "MAGS_WORKSPACE_CACHE_SECS", default_value_t = 600)]
    pub workspace_cache_secs: u64,
    /// Stored versions kept per persistent workspace.
    #[arg(long, env = "MAGS_WORKSPACE_VERSIONS", default_value_t = 5)]
    pub workspace_versions: usize,
}

impl StorageArgs {
    /// The storage these flags name.
    pub fn storage_config(&self, data_dir: &Path) -> StorageConfig {
        let objects = match &self.s3_bucket {
            Some(bucket) => ObjectConfig::S3(S3Config {
                endpoint: self.s3_endpoint.clone(),
                bucket: bucket.clone(),
                region: self.s3_region.clone(),
                access_key_id: self.s3_access_key_id.clone(),
                secret_access_key: self.s3_secret_access_key.clone(),
            }),
            None => ObjectConfig::Local(
                self.objects_dir
                    .clone()
                    .unwrap_or_else(|| data_dir.join("objects")),
            ),
        };
        StorageConfig {
            objects,
            cache_window: Duration::from_secs(self.workspace_cache_secs),
            versions: self.workspace_versions,
        }
    }
}
