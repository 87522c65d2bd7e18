//! `mags`: run scripts in Mags sandboxes and inspect the jobs.
//!
//! Thin: parsing here, one module per group of commands in [`commands`],
//! settings in [`config`], the self-started local server in [`local`].

mod commands;
mod config;
mod local;

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
        /// Name of the job.
        #[arg(short = 'n', long)]
        name: Option<String>,
        /// Workspace to use.
        #[arg(short = 'w', long)]
        workspace: Option<String>,
        /// Environment variable for the script (repeatable).
        #[arg(short = 'e', long = "env", value_name = "KEY=VAL")]
        env: Vec<String>,
        /// Disk size in GB.
        #[arg(long = "disk", value_name = "GB")]
        disk: Option<u32>,
        /// Print the final job status as JSON instead of streaming output.
        #[arg(long)]
        json: bool,
    },
    /// Show a job's status.
    Status {
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
    /// Forget the saved API URL and token.
    Logout,
    /// Show which server and user mags uses.
    Whoami,
    /// Check this machine and the server.
    Doctor,
    /// The guest image of the local server.
    Image {
        #[command(subcommand)]
        action: ImageCmd,
    },
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Build the guest image now (also done on first use); a no-op when it
    /// is already built.
    Build,
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
    use commands::{auth, doctor, jobs, run};
    match cli.command {
        Cmd::Run {
            script,
            name,
            workspace,
            env,
            disk,
            json,
        } => {
            run::run(run::RunArgs {
                script,
                name,
                workspace,
                env,
                disk,
                json,
            })
            .await
        }
        Cmd::Status { job, json } => jobs::status(&job, json).await,
        Cmd::Logs { job, json } => jobs::logs(&job, json).await,
        Cmd::List {
            page,
            page_size,
            json,
        } => jobs::list(page, page_size, json).await,
        Cmd::Login { url, token } => auth::login(url, token).await,
        Cmd::Logout => auth::logout(),
        Cmd::Whoami => auth::whoami().await,
        Cmd::Doctor => doctor::doctor().await,
        Cmd::Image {
            action: ImageCmd::Build,
        } => {
            let local = local::LocalDir::new(&config::mags_home()?);
            local.build_image(&local::find_magsd()?)?;
            Ok(0)
        }
    }
}
