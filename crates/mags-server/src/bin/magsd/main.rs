//! `magsd`: the Mags server. `serve` runs the API; `user`, `token` and
//! `audit` manage users, API tokens and read the audit log; `host` lists
//! and drains the hosts sharing the database; `image build`
//! prepares the guest image with a progress bar; `doctor` says what the
//! host lacks.

mod hosts;
mod image;
mod users;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use mags_server::config::{runtime_config, AccelArg, DataArgs, ServeArgs};
use mags_server::doctor;
use std::io::IsTerminal as _;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "magsd",
    version,
    about = "The Mags server: self-hosted sandboxes for AI agents"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server.
    Serve(Box<ServeArgs>),
    /// Manage users.
    User {
        #[command(subcommand)]
        command: users::UserCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: users::TokenCommand,
    },
    /// Read the audit log (security-relevant events).
    Audit(users::AuditArgs),
    /// The hosts sharing this database: list, drain, forget.
    Host {
        #[command(subcommand)]
        command: hosts::HostCommand,
    },
    /// Manage the guest image.
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Check what this host needs to run sandboxes.
    Doctor {
        #[command(flatten)]
        data: DataArgs,
        #[arg(long, env = "MAGS_AGENT_BIN")]
        agent_bin: Option<PathBuf>,
    },
    /// Print the OpenAPI document of the REST API (committed as openapi.json).
    Openapi,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Build the guest image unless it is already built.
    Build {
        #[command(flatten)]
        data: DataArgs,
        #[arg(long, env = "MAGS_AGENT_BIN")]
        agent_bin: Option<PathBuf>,
        #[arg(long, env = "MAGS_ACCEL")]
        accel: Option<AccelArg>,
        /// Which images: `standard`, `browser` (Chromium for `mags
        /// browser`), `claude` (Claude Code), `pi` (the pi coding agent),
        /// or `all`.
        #[arg(long, default_value = "standard")]
        variant: String,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let rt = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => mags_server::serve::serve(*args).await?,
        Command::User { command } => users::user(command).await?,
        Command::Token { command } => users::token(command).await?,
        Command::Audit(args) => users::audit(args).await?,
        Command::Host { command } => hosts::host(command).await?,
        Command::Image {
            command:
                ImageCommand::Build {
                    data,
                    agent_bin,
                    accel,
                    variant,
                },
        } => {
            let variants = match variant.as_str() {
                "all" => mags_vm::ImageVariant::ALL.to_vec(),
                v => vec![v.parse().map_err(anyhow::Error::msg)?],
            };
            image::build(runtime_config(&data, agent_bin, accel), &variants).await?;
        }
        Command::Openapi => print!("{}", mags_server::openapi::document_text()),
        Command::Doctor { data, agent_bin } => {
            let checks = doctor::host_checks(&runtime_config(&data, agent_bin, None));
            for c in &checks {
                println!("{}", c.line());
            }
            if checks.iter().any(|c| !c.ok) {
                std::process::exit(1);
            }
        }
    }
    Ok(())
}
