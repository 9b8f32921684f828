//! `orgsync web`: the dashboard from `[web]` (users, bind) over the configured queue and
//! pipeline, and `orgsync web hash-password`. The demo serves the same dashboard.

use std::io::{BufRead as _, IsTerminal as _, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use orgsync_config::Config;
use orgsync_jobs::pipeline::Pipeline;
use orgsync_web::auth::{Role, WebUser};
use orgsync_web::{CustomerInfo, WebState};
use secrecy::ExposeSecret as _;

/// `orgsync web`.
#[derive(Debug, Args)]
pub(crate) struct WebArgs {
    /// Listen here instead of `[web] bind`.
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    #[command(subcommand)]
    pub action: Option<WebAction>,
}

/// `orgsync web` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum WebAction {
    /// Read a password from standard input and print its argon2 PHC string for
    /// `[[web.users]] password_hash`.
    HashPassword,
}

/// The users of `[[web.users]]`.
pub(crate) fn users(config: &Config) -> Vec<WebUser> {
    config
        .service
        .web
        .users
        .iter()
        .map(|u| WebUser {
            name: u.name.clone(),
            role: match u.role {
                orgsync_config::WebRole::Viewer => Role::Viewer,
                orgsync_config::WebRole::Support => Role::Support,
            },
            password_hash: u.password_hash.expose_secret().to_owned(),
        })
        .collect()
}

/// The configured customers as the dashboard shows them.
pub(crate) fn customers(config: &Config) -> Vec<CustomerInfo> {
    config
        .customers
        .iter()
        .map(|c| {
            let schedule = c.schedule.clone();
            CustomerInfo {
                cvr: c.cvr.as_str().to_owned(),
                name: c.name.clone(),
                schedule: format!("{} ({})", schedule.expression(), schedule.timezone()),
                enabled: c.enabled,
                next_fire: Arc::new(move || schedule.next_after(chrono::Utc::now())),
            }
        })
        .collect()
}

/// The dashboard's state for `config` and `users`.
pub(crate) fn state(
    config: &Config,
    pipeline: Arc<Pipeline>,
    users: Vec<WebUser>,
) -> Arc<WebState> {
    WebState::new(
        pipeline.queue().clone(),
        pipeline,
        users,
        customers(config),
        config.service.web.secure_cookies,
    )
}

/// Binds `addr` (refusing a non-loopback one without users) and serves until `shutdown`.
pub(crate) async fn bind(
    addr: SocketAddr,
    state: &WebState,
) -> anyhow::Result<tokio::net::TcpListener> {
    orgsync_web::check_bind(addr, &state.users).map_err(anyhow::Error::msg)?;
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))
}

pub(crate) async fn run(config: Arc<Config>, args: &WebArgs) -> anyhow::Result<ExitCode> {
    let pipeline = crate::wiring::pipeline(config.clone()).await?;
    let state = state(&config, pipeline, users(&config));
    let addr = args.bind.unwrap_or(config.service.web.bind);
    let listener = bind(addr, &state).await?;
    let local = listener.local_addr().context("the bound address")?;
    tracing::info!(web.bind = %local, users = state.users.len(), "dashboard listening on http://{local}/");
    orgsync_web::serve(listener, state, async {
        let _ = orgsync_queue::shutdown_signal().await;
    })
    .await
    .context("the dashboard stopped")?;
    Ok(ExitCode::SUCCESS)
}

/// `orgsync web hash-password`.
pub(crate) fn run_hash_password(out: &mut dyn Write) -> anyhow::Result<ExitCode> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let mut err = std::io::stderr();
        let _ = write!(err, "password (echoed; or pipe it in): ");
        let _ = err.flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        anyhow::bail!("the password is empty");
    }
    let hash = orgsync_web::auth::hash_password(password).map_err(anyhow::Error::msg)?;
    writeln!(out, "{hash}")?;
    Ok(ExitCode::SUCCESS)
}
