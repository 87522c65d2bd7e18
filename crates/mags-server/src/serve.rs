//! `magsd serve`: the start-up sequence and graceful shutdown.
//!
//! Data dir -> database (migrated) -> this host registered (a new epoch;
//! its job writes fenced by it) -> local token file -> executor (reaps
//! orphans, starts the image build) -> recovery of the jobs this host's
//! previous process left -> the cluster's lease, claim and leader loops
//! -> listen -> server file. SIGINT/SIGTERM end output streams, stop
//! accepting requests, remove the server file and put running persistent
//! sandboxes to sleep (they wake on demand after the next start). A host
//! the database fenced (declared lost, or its name started again
//! elsewhere) exits at once with status 75, its VMs with it: its work is
//! other hosts' now, and its supervisor starts it again under a new epoch.

use crate::config::{default_max_vms, runtime_config, ExecutorKind, ServeArgs};
use crate::ssh::SshGateway;
use crate::{router, AppState};
use mags_control::executor::{fake::FakeExecutor, vm::VmExecutor, Executor};
use mags_control::files::{self, FileError};
use mags_control::{Control, Limits};
use mags_store::{Store, StoreError};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The exit status of a host the database fenced (`EX_TEMPFAIL`: start
/// it again).
pub const FENCED_EXIT: i32 = 75;

/// How long shutdown may spend putting running sandboxes to sleep.
const SHUTDOWN_SLEEP: Duration = Duration::from_secs(60);

/// Why the server could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot create the data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("database: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("workspace storage: {0}")]
    Workspaces(String),
    #[error("{0}")]
    Jail(String),
    #[error("SSH gateway: {0}")]
    Ssh(#[from] crate::ssh::SshError),
    #[error("URL proxy TLS: {0}")]
    Tls(String),
    #[error("cluster: {0}")]
    Cluster(String),
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> Result<(), ServeError> {
    let data_dir = args.data.data_dir.clone();
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&data_dir)
        .map_err(|source| ServeError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
    let store = Store::connect(&args.data.database_url()).await?;
    tracing::info!(backend = ?store.backend(), "database ready");
    let max_vms = args.max_vms.unwrap_or_else(default_max_vms);
    // Bound before registering, so the host's internal URL is where it
    // really listens.
    let internal_listener = bind_optional(args.cluster.internal_listen.as_deref()).await?;
    let mut cluster_cfg = args.cluster.config(max_vms);
    if let (None, Some(l)) = (&cluster_cfg.host.internal_url, &internal_listener) {
        let addr = l.local_addr().map_err(|source| ServeError::Bind {
            addr: args.cluster.internal_listen.clone().unwrap_or_default(),
            source,
        })?;
        cluster_cfg.host.internal_url = Some(format!("http://{addr}"));
    }
    if let Some(url) = &cluster_cfg.host.internal_url {
        tracing::info!(%url, "relayed requests from other hosts come in here");
    }
    let relay = match &args.cluster.cluster_secret_file {
        Some(path) => {
            let secret = std::fs::read(path).map_err(|e| {
                ServeError::Cluster(format!(
                    "cannot read the cluster secret {}: {e}",
                    path.display()
                ))
            })?;
            let secret = secret.trim_ascii().to_vec();
            Some(
                crate::relay::Relay::new(secret, cluster_cfg.host.name.clone())
                    .map_err(ServeError::Cluster)?,
            )
        }
        None => None,
    };
    let host = mags_control::cluster::join(&store, &cluster_cfg).await?;
    // Every job state change this process writes holds only while the
    // job is still this host's, under this epoch.
    let store = store.fenced(host.owner());
    if let Some(path) = &args.local_token_file {
        files::ensure_local_token(&store, path).await?;
    }

    // Guests' only way out; lives as long as the server.
    let egress = if args.egress.no_egress || args.executor == ExecutorKind::Fake {
        None
    } else {
        let layout = mags_vm::Layout::new(&data_dir);
        let sock = layout.egress_socket();
        let proxy = mags_vm::egress::EgressProxy::start(&sock, args.egress.policy(), Some(layout))
            .map_err(|source| ServeError::Bind {
                addr: sock.display().to_string(),
                source,
            })?;
        Some(proxy)
    };
    let mut rt_config = runtime_config(&args.data, args.agent_bin.clone(), args.accel);
    rt_config.egress_socket = egress.as_ref().map(|p| p.socket().to_path_buf());
    rt_config.extra_ca_certs = args
        .egress
        .ca_certs()
        .map_err(|e| ServeError::Workspaces(format!("cannot read --guest-ca-certs: {e}")))?;
    tracing::info!(egress = egress.is_some(), "guest networking");
    rt_config.jail.mode = match args.jail.as_str() {
        "require" => mags_vm::JailMode::Require,
        "off" => mags_vm::JailMode::Off,
        _ => mags_vm::JailMode::Auto,
    };
    if args.executor == ExecutorKind::Vm {
        // Checked now, so `--jail require` on a host that cannot fails at start.
        let jail = mags_vm::jail::Jail::new(rt_config.jail.clone(), &rt_config.data_dir)
            .map_err(|e| ServeError::Jail(e.to_string()))?;
        let st = jail.status();
        let layers = crate::doctor::describe_jail(&st);
        match &st.note {
            None => tracing::info!(%layers, "QEMU confinement"),
            Some(note) => tracing::warn!(%layers, %note, "QEMU confinement is partial"),
        }
    }

    let executor: Arc<dyn Executor> = match args.executor {
        ExecutorKind::Fake => {
            tracing::warn!("using the fake executor: jobs are interpreted, no VM runs");
            Arc::new(FakeExecutor::new())
        }
        ExecutorKind::Vm => Arc::new(VmExecutor::start(
            rt_config,
            args.vm_memory_mb,
            args.pool_size
                .unwrap_or_else(|| mags_vm::PoolConfig::for_this_host().size),
        )),
    };
    let limits = Limits {
        max_vms,
        max_sandboxes: args.max_sandboxes.unwrap_or(max_vms),
        idle_timeout: Duration::from_secs(args.idle_timeout_secs),
        user: args.quota.user_limits(max_vms),
        upload_max_bytes: args.quota.upload_max_bytes,
        job_timeout_secs: args.quota.job_timeout(),
        autosync: (args.autosync_secs > 0).then(|| Duration::from_secs(args.autosync_secs)),
    };
    // The listeners first: the public URLs' port is the URL proxy's.
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: args.listen.clone(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: args.listen.clone(),
        source,
    })?;
    let url = format!("http://{addr}");
    // The URL proxy: on its own listener, or on the API's (told apart by Host).
    let apps_listener = bind_optional(args.apps.apps_listen.as_deref()).await?;
    let proxy_port = match &apps_listener {
        Some(l) => l.local_addr().map(|a| a.port()).unwrap_or(addr.port()),
        None => addr.port(),
    };

    // Also with the fake executor (its VMs have no disks, but uploads,
    // workspace records and their routes are the real ones), so that a
    // `magsd serve --executor fake` answers every route as the in-process
    // tests' harness does.
    let storage = args.storage.storage_config(&data_dir);
    let workspaces =
        mags_control::workspaces::Workspaces::start(store.clone(), &data_dir, &storage)
            .map_err(|e| ServeError::Workspaces(e.to_string()))?;
    // The control layer, complete before anything gets a copy of it.
    let (mut control, shutdown_tx) =
        Control::with_workspaces(store.clone(), executor, limits, workspaces);
    control.data_dir = Some(data_dir.clone());
    control.apps = Arc::new(mags_control::apps::Apps {
        domain: args.apps.apps_domain.trim_matches('.').to_ascii_lowercase(),
        scheme: args.apps.scheme(),
        port: Some(args.apps.apps_public_port.unwrap_or(proxy_port)),
    });
    control.scheduler.recover().await?;
    let waiting = control.scheduler.waiting_for_workspaces().await?;
    control.takeovers.resume(waiting).await?;
    let cluster = mags_control::cluster::start(control.clone(), &host, cluster_cfg);
    // After recovery: a cron run missed while no server ran starts once now.
    mags_control::cron::start(control.clone(), control.shutdown.clone());
    tokio::spawn(control.audit.clone().prune_forever(
        args.audit_retention_days,
        args.audit_max_events,
        control.shutdown.clone(),
    ));
    tokio::spawn(mags_control::retention::prune_forever(
        store.clone(),
        args.retention(),
        control.shutdown.clone(),
    ));
    let sandboxes = control.sandboxes.clone();

    let ssh = match args.ssh_listen.as_deref().map(str::trim) {
        Some("off") => None,
        ssh_listen => Some(
            SshGateway::start(
                &crate::ssh::listen_addr(ssh_listen, &args.listen),
                args.ssh_host.clone(),
                &args
                    .ssh_host_key
                    .clone()
                    .unwrap_or_else(|| data_dir.join("ssh_host_ed25519_key")),
                store.clone(),
                control.sandboxes.clone(),
                control.audit.clone(),
            )
            .await?,
        ),
    };
    let state = AppState {
        control,
        ssh: ssh.as_ref().map(|g| g.endpoint.clone()),
        relay,
    };
    if let Some(l) = internal_listener {
        let internal = crate::internal_router(state.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        let mut stop = state.shutdown.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = stop.wait_for(|s| *s).await;
            };
            if let Err(e) = axum::serve(l, internal)
                .with_graceful_shutdown(stopped)
                .await
            {
                tracing::error!("internal listener failed: {e}");
            }
        });
    }
    tracing::info!(example = %state.apps.url("<subdomain>"), "URL proxy");
    // Sandboxes may open the server's public URLs (through the URL proxy,
    // never a host service): the egress proxy routes them here.
    if let (Some(egress), Some(public_port)) = (&egress, state.apps.port) {
        let mut target = match &apps_listener {
            Some(l) => l.local_addr().unwrap_or(addr),
            None => addr,
        };
        if target.ip().is_unspecified() {
            target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        egress.set_apps_route(mags_vm::egress::AppsRoute {
            domain: state.apps.domain.clone(),
            port: public_port,
            target,
            shared_with_api: apps_listener.is_none(),
        });
    }
    if let Some(path) = &args.server_file {
        files::write_server_file(path, &url)?;
    }
    tracing::info!(%url, max_vms, max_sandboxes = limits.max_sandboxes, "magsd listening");

    if let Some(l) = apps_listener {
        let apps = crate::apps_router(state.clone());
        let mut stop = state.shutdown.clone();
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        match (&args.apps.apps_tls_cert, &args.apps.apps_tls_key) {
            (Some(cert), Some(key)) => {
                let cfg = crate::tls::server_config(cert, key)
                    .map_err(|e| ServeError::Tls(e.to_string()))?;
                let l =
                    crate::tls::TlsListener::new(l, cfg).map_err(|source| ServeError::Bind {
                        addr: args.apps.apps_listen.clone().unwrap_or_default(),
                        source,
                    })?;
                tracing::info!("URL proxy serves TLS");
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(l, apps).with_graceful_shutdown(stopped).await {
                        tracing::error!("URL proxy listener failed: {e}");
                    }
                });
            }
            _ => {
                tokio::spawn(async move {
                    if let Err(e) = axum::serve(l, apps).with_graceful_shutdown(stopped).await {
                        tracing::error!("URL proxy listener failed: {e}");
                    }
                });
            }
        }
    }
    // Peer addresses go into the audit log.
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let mut fenced = cluster.fenced();
    tokio::spawn(async move {
        if fenced.wait_for(|f| *f).await.is_ok() {
            tracing::error!("exiting: this host was fenced (see above); its VMs end with it");
            std::process::exit(FENCED_EXIT);
        }
    });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            tracing::info!("shutting down");
            let _ = shutdown_tx.send(true);
        })
        .await;
    drop(egress);
    if let Some(path) = &args.server_file {
        files::remove_server_file(path);
    }
    if let Some(g) = &ssh {
        g.shutdown();
    }
    // Running sandboxes sleep, so they come back with their processes.
    sandboxes.sleep_all(SHUTDOWN_SLEEP).await;
    // Give the output writers a moment; VMs die with the process and the
    // next start reaps what is left.
    tokio::time::sleep(Duration::from_millis(100)).await;
    store.close().await;
    result.map_err(ServeError::Serve)
}

/// A listener on `addr`, if one is asked for.
async fn bind_optional(addr: Option<&str>) -> Result<Option<tokio::net::TcpListener>, ServeError> {
    match addr {
        Some(a) => tokio::net::TcpListener::bind(a)
            .await
            .map(Some)
            .map_err(|source| ServeError::Bind {
                addr: a.to_string(),
                source,
            }),
        None => Ok(None),
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
