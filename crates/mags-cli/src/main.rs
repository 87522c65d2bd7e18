//! `mags`: run scripts in Mags sandboxes and inspect the jobs.
//!
//! Thin: parsing here, one module per group of commands in [`commands`],
//! settings in [`config`], the self-started local server in [`local`].

mod commands;
mod config;
mod local;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "mags", version, about = "Run scripts in Mags sandboxes")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a script in a new sandbox, streaming its output; exits with the
    /// script's exit code.
    Run {
        /// The script (bash).
        script: String,
        /// Name the job and its workspace (`-n`/`--name` are aliases). The
        /// workspace stays on this host for a while after the job; add -p to
        /// keep it in storage. A live sandbox of that workspace is taken
        /// over: its files are saved, it is stopped, then this job starts
        /// on them (use `mags exec` to run inside it instead).
        #[arg(
            short = 'w',
            long,
            value_name = "NAME",
            visible_short_alias = 'n',
            visible_alias = "name"
        )]
        workspace: Option<String>,
        /// No workspace, no sync (the default, said explicitly); cannot be
        /// combined with -w/-n, -p or --base.
        #[arg(short = 'e', long, conflicts_with_all = ["workspace", "persistent", "base"])]
        ephemeral: bool,
        /// Environment variable for the script (repeatable).
        #[arg(long = "env", value_name = "KEY=VAL")]
        env: Vec<String>,
        /// Disk size in GB (default 2).
        #[arg(long = "disk", value_name = "GB")]
        disk: Option<u32>,
        /// Keep the sandbox after the script (it sleeps when idle) and keep
        /// the workspace in storage.
        #[arg(short = 'p', long)]
        persistent: bool,
        /// With -p: never sleep.
        #[arg(long, requires = "persistent")]
        no_sleep: bool,
        /// Run this when the sandbox wakes from sleep (only a -p sandbox
        /// sleeps).
        #[arg(long, value_name = "CMD")]
        startup_command: Option<String>,
        /// Print the final job status as JSON instead of streaming output.
        #[arg(long)]
        json: bool,
        /// Base workspace, mounted read-only (changes discarded); with -w,
        /// the new workspace starts as a fork of it.
        #[arg(long, value_name = "WORKSPACE")]
        base: Option<String>,
        /// Upload FILE and place it at /root/<name> (and /uploads/<name>)
        /// before the script runs (repeatable).
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        files: Vec<std::path::PathBuf>,
        #[command(flatten)]
        egress: commands::EgressFlags,
        /// With -p: give a port of the sandbox a public URL (printed).
        #[arg(long, requires = "persistent")]
        url: bool,
        /// The port --url exposes.
        #[arg(long, value_name = "PORT", default_value_t = commands::url::DEFAULT_PORT)]
        port: u16,
        /// Kill the script after SECS seconds (the job ends in error);
        /// default: the server's job timeout.
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// The guest image: standard (default), browser (Chromium), claude
        /// (Claude Code), pi (the pi coding agent); a variant is built on
        /// its first use (`mags image build --variant` shows the progress).
        #[arg(long, value_name = "TYPE")]
        rootfs: Option<String>,
    },
    /// Create an idle sandbox that stays up (sleeping when idle) and wait
    /// until it runs; use it with exec, stop. A live sandbox of that name
    /// is taken over (its files kept).
    New {
        /// Its name (also its workspace).
        name: String,
        /// Keep the workspace in storage (sync); default: local disk only.
        #[arg(short = 'p', long = "persistent")]
        persist: bool,
        /// Base workspace, mounted read-only.
        #[arg(long, value_name = "WORKSPACE")]
        base: Option<String>,
        /// Disk size in GB.
        #[arg(long = "disk", value_name = "GB")]
        disk: Option<u32>,
        /// Never sleep.
        #[arg(long)]
        no_sleep: bool,
        #[command(flatten)]
        egress: commands::EgressFlags,
        /// How long to wait for it to run, in seconds.
        #[arg(long, default_value_t = 300, value_name = "SECS")]
        wait: u64,
        /// Give a port of the sandbox a public URL (printed).
        #[arg(long)]
        url: bool,
        /// The port --url exposes.
        #[arg(long, value_name = "PORT", default_value_t = commands::url::DEFAULT_PORT)]
        port: u16,
    },
    /// Start a headless Chromium sandbox (or find the live one of this
    /// name) and print its CDP endpoints; `mags stop NAME` ends it.
    Browser {
        /// Session name (a live browser session of this name is reused).
        name: Option<String>,
        /// Print the whole answer as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Public URL of a port in a sandbox (default 8080), or URL aliases.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Url {
        #[command(subcommand)]
        alias: Option<UrlCmd>,
        /// Sandbox name, workspace or job id.
        #[arg(required = true)]
        name: Option<String>,
        /// The port in the sandbox.
        port: Option<u16>,
    },
    /// Run a command in a sandbox (woken if it sleeps), streaming its
    /// output; exits with the command's exit code.
    Exec {
        /// Sandbox name, workspace or job id.
        job: String,
        /// The command (bash), run in /root; with -it, default a login shell.
        #[arg(
            required_unless_present_any = ["interactive", "tty"],
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<String>,
        /// Kill the command after this many seconds (default: no limit;
        /// not with -it).
        #[arg(long, value_name = "SECS", conflicts_with_all = ["interactive", "tty"])]
        timeout: Option<f64>,
        /// Interactive: keystrokes go to the command (use with -t).
        #[arg(short = 'i', long)]
        interactive: bool,
        /// On a terminal (raw mode here, a PTY there; resizes follow).
        #[arg(short = 't', long)]
        tty: bool,
    },
    /// A shell in a sandbox over SSH (started if none is live), or a
    /// command with its exit code; needs the OpenSSH client.
    Ssh {
        /// Sandbox name or job id.
        name: String,
        /// Command to run instead of a shell.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Stop a sandbox (or a running job): final status `completed`.
    Stop {
        /// Sandbox name, workspace or job id.
        job: String,
    },
    /// Save a sandbox's files now: flushed to its disk and, for a persistent
    /// workspace, a new snapshot in object storage.
    Sync {
        /// Sandbox name, workspace or job id.
        job: String,
    },
    /// Change a sandbox's settings while it lives.
    Set {
        /// Sandbox name, workspace or job id.
        job: String,
        /// Never sleep.
        #[arg(long, conflicts_with = "sleep")]
        no_sleep: bool,
        /// Sleep when idle (the default).
        #[arg(long)]
        sleep: bool,
        /// Run this after every wake ("" removes it).
        #[arg(long, value_name = "CMD")]
        startup_command: Option<String>,
        /// Idle seconds before sleeping (0: the server's default).
        #[arg(long, value_name = "SECS")]
        idle_timeout: Option<u64>,
    },
    /// Show a job's status.
    Status {
        /// Job name, workspace or id.
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete an ended job and its stored output (a live one: stop it
    /// first). Frees what its output took of your disk quota.
    Rm {
        /// Job name, workspace or id.
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// Show a job's output lines.
    Logs {
        /// Job name, workspace or id.
        job: String,
        #[arg(long)]
        json: bool,
    },
    /// List recent jobs, newest first.
    List {
        #[arg(long, default_value_t = 1)]
        page: u32,
        #[arg(long, default_value_t = 20)]
        page_size: u32,
        #[arg(long)]
        json: bool,
    },
    /// Save the API URL and token to ~/.mags/config.json.
    Login {
        /// API URL (prompted for if missing).
        #[arg(long)]
        url: Option<String>,
        /// API token (prompted for if missing).
        #[arg(long)]
        token: Option<String>,
    },
    /// Grow a workspace's disk (online if its sandbox runs); never shrinks.
    Resize {
        /// The workspace.
        name: String,
        /// New size in GB.
        #[arg(long = "disk", value_name = "GB")]
        disk: u32,
    },
    /// Workspaces: list, delete.
    Workspace {
        #[command(subcommand)]
        action: WorkspaceCmd,
    },
    /// Your API tokens: list, create, revoke.
    Token {
        #[command(subcommand)]
        action: TokenCmd,
    },
    /// Scheduled jobs: add, list, remove, enable, disable.
    Cron {
        #[command(subcommand)]
        action: CronCmd,
    },
    /// Forget the saved API URL and token.
    Logout,
    /// Show which server and user mags uses.
    Whoami,
    /// Check this machine and the server.
    Doctor,
    /// Serve the Model Context Protocol on stdin/stdout (tools to run
    /// scripts and use sandboxes), for any MCP-capable agent.
    Mcp,
    /// Install a Claude Code skill that teaches it to use mags.
    SetupClaude,
    /// The guest image of the local server.
    Image {
        #[command(subcommand)]
        action: ImageCmd,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
    /// List your tokens (never their secrets).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Make a new token for you; it is printed once.
    Create {
        #[arg(long)]
        json: bool,
    },
    /// Revoke one of your tokens (it stops working at its next request).
    Revoke {
        /// The token's id or display prefix (`mags_AbCdEfG`).
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum WorkspaceCmd {
    /// List your workspaces.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a workspace and all its stored data (refused while a job runs on it).
    Delete {
        /// The workspace.
        id: String,
    },
}

#[derive(Subcommand)]
enum CronCmd {
    /// Schedule a script; each run is an ordinary job (see `mags list`).
    Add {
        /// A name for it (unique among your cron jobs).
        #[arg(short = 'n', long)]
        name: String,
        /// When, in UTC: 5 fields (`min hour day-of-month month
        /// day-of-week`, e.g. "0 */2 * * *") or @hourly/@daily/@weekly/@monthly/@yearly.
        #[arg(short = 's', long, value_name = "EXPR")]
        schedule: String,
        /// Workspace every run uses (a run takes a live sandbox of it over).
        #[arg(short = 'w', long)]
        workspace: Option<String>,
        /// Keep each run's VM alive after its script, its workspace in
        /// storage; without -w the workspace is named after the cron job.
        #[arg(short = 'p', long)]
        persistent: bool,
        /// Environment variable for the script (repeatable).
        #[arg(long = "env", value_name = "KEY=VAL")]
        env: Vec<String>,
        #[arg(long)]
        json: bool,
        /// The script (bash).
        script: String,
    },
    /// List your cron jobs with their next and last runs.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a cron job (its past runs stay in `mags list`).
    Remove {
        /// Id or name.
        id: String,
    },
    /// Resume a disabled cron job.
    Enable {
        /// Id or name.
        id: String,
    },
    /// Stop scheduling runs (a run in progress finishes).
    Disable {
        /// Id or name.
        id: String,
    },
}

#[derive(Subcommand)]
enum UrlCmd {
    /// URL aliases: stable subdomains that follow a workspace's live sandbox.
    Alias {
        #[command(subcommand)]
        action: Option<AliasCmd>,
        /// The subdomain (to create an alias).
        subdomain: Option<String>,
        /// The sandbox name or workspace it follows.
        name: Option<String>,
    },
}

#[derive(Subcommand)]
enum AliasCmd {
    /// List your aliases.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an alias.
    Remove {
        /// The subdomain.
        subdomain: String,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Build the guest image now (also done on first use); a no-op when it
    /// is already built.
    Build {
        /// standard, browser, claude, pi, or all.
        #[arg(long, default_value = "standard")]
        variant: String,
    },
}

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`mags list | head`), like other tools.
    // SAFETY: setting a signal disposition to the default has no
    // preconditions; no handler runs.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mags: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("mags: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<u8> {
    use commands::{auth, cron, doctor, jobs, run, sandbox, shell, tokens, url, workspace};
    match cli.command {
        Cmd::Run {
            script,
            workspace,
            ephemeral: _,
            env,
            disk,
            persistent,
            no_sleep,
            startup_command,
            json,
            base,
            files,
            egress,
            url,
            port,
            timeout,
            rootfs,
        } => {
            run::run(run::RunArgs {
                script,
                workspace,
                env,
                disk,
                persistent,
                no_sleep,
                startup_command,
                json,
                base,
                files,
                egress,
                url: url.then_some(port),
                timeout,
                rootfs,
            })
            .await
        }
        Cmd::Url {
            alias:
                Some(UrlCmd::Alias {
                    action,
                    subdomain,
                    name,
                }),
            ..
        } => match (action, subdomain, name) {
            (Some(AliasCmd::List { json }), _, _) => url::alias_list(json).await,
            (Some(AliasCmd::Remove { subdomain }), _, _) => url::alias_remove(&subdomain).await,
            (None, Some(sub), Some(name)) => url::alias_create(&sub, &name).await,
            (None, _, _) => {
                anyhow::bail!(
                    "usage: mags url alias <subdomain> <name> | list | remove <subdomain>"
                )
            }
        },
        Cmd::Url {
            alias: None,
            name,
            port,
        } => {
            let name = name.context("usage: mags url <name|id> [port]")?;
            url::url(&name, port).await
        }
        Cmd::Browser { name, json } => commands::browser::start(name.as_deref(), json).await,
        Cmd::Resize { name, disk } => workspace::resize(&name, disk).await,
        Cmd::Cron { action } => match action {
            CronCmd::Add {
                name,
                schedule,
                workspace,
                persistent,
                env,
                json,
                script,
            } => {
                cron::add(cron::AddArgs {
                    name,
                    schedule,
                    script,
                    workspace,
                    persistent,
                    env,
                    json,
                })
                .await
            }
            CronCmd::List { json } => cron::list(json).await,
            CronCmd::Remove { id } => cron::remove(&id).await,
            CronCmd::Enable { id } => cron::set_enabled(&id, true).await,
            CronCmd::Disable { id } => cron::set_enabled(&id, false).await,
        },
        Cmd::Token { action } => match action {
            TokenCmd::List { json } => tokens::list(json).await,
            TokenCmd::Create { json } => tokens::create(json).await,
            TokenCmd::Revoke { id, json } => tokens::revoke(&id, json).await,
        },
        Cmd::Workspace {
            action: WorkspaceCmd::List { json },
        } => workspace::list(json).await,
        Cmd::Workspace {
            action: WorkspaceCmd::Delete { id },
        } => workspace::delete(&id).await,
        Cmd::New {
            name,
            persist,
            base,
            disk,
            no_sleep,
            egress,
            wait,
            url,
            port,
        } => {
            sandbox::new(sandbox::NewArgs {
                name,
                persist,
                base,
                disk,
                no_sleep,
                egress,
                wait_secs: wait,
                url: url.then_some(port),
            })
            .await
        }
        Cmd::Exec {
            job,
            command,
            timeout,
            interactive,
            tty,
        } => {
            if interactive || tty {
                return shell::exec_tty(&job, &command.join(" ")).await;
            }
            sandbox::exec(&job, &command.join(" "), timeout).await
        }
        Cmd::Ssh { name, command } => shell::ssh(&name, &command).await,
        Cmd::Stop { job } => sandbox::stop(&job).await,
        Cmd::Sync { job } => sandbox::sync(&job).await,
        Cmd::Set {
            job,
            no_sleep,
            sleep,
            startup_command,
            idle_timeout,
        } => {
            let req = mags_api::UpdateJobRequest {
                startup_command,
                no_sleep: (no_sleep || sleep).then_some(no_sleep),
                idle_timeout_secs: idle_timeout,
            };
            sandbox::set(&job, req).await
        }
        Cmd::Status { job, json } => jobs::status(&job, json).await,
        Cmd::Logs { job, json } => jobs::logs(&job, json).await,
        Cmd::Rm { job, json } => jobs::rm(&job, json).await,
        Cmd::List {
            page,
            page_size,
            json,
        } => jobs::list(page, page_size, json).await,
        Cmd::Login { url, token } => auth::login(url, token).await,
        Cmd::Logout => auth::logout(),
        Cmd::Whoami => auth::whoami().await,
        Cmd::Doctor => doctor::doctor().await,
        Cmd::Mcp => commands::mcp::serve().await,
        Cmd::SetupClaude => commands::claude::setup(),
        Cmd::Image {
            action: ImageCmd::Build { variant },
        } => {
            let local = local::LocalDir::new(&config::mags_home()?);
            local.build_variant(&local::find_magsd()?, &variant)?;
            Ok(0)
        }
    }
}
