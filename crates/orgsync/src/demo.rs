//! `orgsync demo`: the whole pipeline in one process, without municipal credentials: the STS
//! simulator with a synthetic municipality, an SQLite target in a directory it names, Redis (the
//! configured one, or a private `redis-server` when none answers), a worker, and one full run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use orgsync_jobs::report::Trigger;
use orgsync_model::ids::Cvr;
use orgsync_sts_sim::generate::{Size, domain_of, generate};
use orgsync_sts_sim::server::{LatencyModel, SimOptions, Simulator};
use secrecy::ExposeSecret as _;

/// The demo municipality: KOMBIT's test CVR.
const DEMO_CVR: &str = "11111111";

/// `orgsync demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Size of the synthetic municipality (active units: xs 30, s 60, m 320, l 650, xl about 4,200).
    #[arg(long, value_enum, default_value_t = Size::S)]
    pub size: Size,
    /// Seed of the synthetic municipality.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Run once, print the report and exit (otherwise keep the simulator and worker running
    /// for more `orgsync sync` runs until Ctrl-C).
    #[arg(long)]
    pub once: bool,
    /// The directory for the SQLite database and the demo's configuration (default
    /// `orgsync-demo/<size>`, so that sizes do not mix).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Apply a realistic STS latency model (150-400 ms per call, 1-5 s per 500-row page) instead of none.
    #[arg(long)]
    pub latency: bool,
    /// Prefix of the demo's Redis keys (default `orgsync-demo-` and a hash of the directory, so
    /// that neither a real installation nor another demo directory shares its runs).
    #[arg(long)]
    pub key_prefix: Option<String>,
    /// Remove the demo's Redis keys (jobs, run reports, locks) when it exits. Without it they
    /// stay in a shared Redis, so that `runs` still shows the demo's runs afterwards.
    #[arg(long)]
    pub remove_keys: bool,
    /// Port of the demo's dashboard on 127.0.0.1 (default: a free one).
    #[arg(long, default_value_t = 0)]
    pub web_port: u16,
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

/// A private Redis, stopped when dropped.
struct PrivateRedis {
    child: tokio::process::Child,
    url: String,
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// The configured Redis URL, else the default.
fn configured_redis(config_dir: &Path) -> String {
    orgsync_config::load(config_dir)
        .map(|c| c.service.redis.url.expose_secret().to_owned())
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

async fn answers(url: &str) -> bool {
    let mut config = orgsync_queue::QueueConfig::new(url, "orgsync-demo");
    config.connect_timeout = Duration::from_secs(2);
    orgsync_queue::QueueHandle::connect(config).await.is_ok()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
}

async fn start_private_redis() -> anyhow::Result<PrivateRedis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("cannot find a free port for a private Redis")?
        .port();
    let child = tokio::process::Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("cannot start redis-server")?;
    let redis = PrivateRedis {
        child,
        url: format!("redis://127.0.0.1:{port}"),
    };
    for _ in 0..50 {
        if answers(&redis.url).await {
            return Ok(redis);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the private redis-server on port {port} did not answer within 5 s")
}

fn write_config(
    dir: &Path,
    redis_url: &str,
    key_prefix: &str,
    sim: &Simulator,
    size: Size,
) -> anyhow::Result<PathBuf> {
    let config_dir = dir.join("config");
    std::fs::create_dir_all(config_dir.join("customers"))
        .with_context(|| format!("cannot create {}", config_dir.display()))?;
    let database = std::path::absolute(dir.join(format!("{DEMO_CVR}.sqlite")))
        .context("cannot resolve the demo directory")?;
    // A Redis password never goes into the file: such a URL is set in memory by the demo, and
    // the commands it prints need ORGSYNC__REDIS__URL.
    let url_line = if redis_url.contains('@') {
        "# url: the configured Redis (with a password); set ORGSYNC__REDIS__URL to use it\n"
            .to_owned()
    } else {
        format!("url = {}\n", toml_string(redis_url))
    };
    let service = format!(
        "# Written by `orgsync demo`: the demo's own configuration.\n\
         [redis]\n{url_line}key_prefix = {}\n\n\
         [sts]\nenvironment = \"sim\"\nbase_url = {}\n",
        toml_string(key_prefix),
        toml_string(sim.base_url().as_str())
    );
    let customer = format!(
        "# Written by `orgsync demo`: the synthetic municipality of the simulator.\n\
         cvr = \"{DEMO_CVR}\"\nname = \"Demo ({size})\"\ndomains = [\"{}\"]\n\n\
         [target]\nkind = \"sqlite\"\npath = {}\n",
        domain_of(size),
        toml_string(&database.display().to_string())
    );
    std::fs::write(config_dir.join("orgsync.toml"), service)?;
    std::fs::write(config_dir.join("customers").join("demo.toml"), customer)?;
    Ok(config_dir)
}

/// A TOML string (quoted and escaped by the toml crate).
fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// Runs the demo.
pub(crate) async fn run(
    config_dir: &Path,
    args: &DemoArgs,
    out: &mut dyn Write,
) -> anyhow::Result<ExitCode> {
    let dir = std::path::absolute(
        args.dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("orgsync-demo").join(args.size.to_string())),
    )
    .context("cannot resolve the demo directory")?;
    let key_prefix = args.key_prefix.clone().unwrap_or_else(|| {
        use std::hash::{Hash as _, Hasher as _};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        dir.hash(&mut hasher);
        format!("orgsync-demo-{:08x}", hasher.finish() & 0xffff_ffff)
    });

    // Redis.
    let configured = configured_redis(config_dir);
    let mut private = None;
    let redis_url = if answers(&configured).await {
        configured
    } else if on_path("redis-server") {
        writeln!(
            out,
            "no Redis answers at {}; starting a private redis-server",
            orgsync_queue::mask_url(&configured)
        )?;
        let redis = start_private_redis().await?;
        let url = redis.url.clone();
        private = Some(redis);
        url
    } else {
        anyhow::bail!(
            "no Redis answers at {} and redis-server is not installed: install it (Debian: `apt-get install redis-server`) or point ORGSYNC__REDIS__URL at a Redis",
            orgsync_queue::mask_url(&configured)
        );
    };

    // The simulator.
    let cvr = Cvr::parse(DEMO_CVR).context("the demo CVR")?;
    let municipality = generate(
        &cvr,
        args.size,
        args.seed,
        orgsync_model::time::danish_date(&chrono::Utc::now()),
    );
    let (n_units, n_users) = (municipality.units.len(), municipality.users.len());
    let options = SimOptions {
        latency: if args.latency {
            LatencyModel::sizes()
        } else {
            LatencyModel::none()
        },
        seed: args.seed,
        ..SimOptions::default()
    };
    let sim = Simulator::start(vec![municipality], options)
        .await
        .context("cannot start the STS simulator")?;

    // Configuration, pipeline, worker.
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let demo_config = write_config(&dir, &redis_url, &key_prefix, &sim, args.size)?;
    let mut config = orgsync_config::load(&demo_config)
        .map_err(|problems| anyhow::anyhow!("the demo's own configuration: {problems}"))?;
    // The Redis chosen above, whatever ORGSYNC__REDIS__* says.
    config.service.redis.url = secrecy::SecretString::from(redis_url.clone());
    config.service.redis.key_prefix = key_prefix.clone();
    let config = Arc::new(config);
    let pipeline = crate::wiring::pipeline(config.clone()).await?;
    let (signal, stop_worker) = orgsync_queue::manual_signal();
    // One customer run at a time: a run left queued by an earlier `sync` runs first, then the
    // demo's, rather than one refusing the other.
    let settings = orgsync_jobs::worker::WorkerSettings {
        customers: 1,
        ..crate::wiring::worker_settings(&config)
    };
    let mut worker = tokio::spawn(orgsync_jobs::worker::run(
        pipeline.clone(),
        settings,
        signal,
    ));
    // The dashboard, with a login made for this demo.
    let password = format!("{:016x}", rand_suffix());
    let user = orgsync_web::auth::WebUser {
        name: "demo".to_owned(),
        role: orgsync_web::auth::Role::Support,
        password_hash: orgsync_web::auth::hash_password(&password).map_err(anyhow::Error::msg)?,
    };
    let web_state = crate::web::state(&config, pipeline.clone(), vec![user]);
    let listener = crate::web::bind(
        std::net::SocketAddr::from(([127, 0, 0, 1], args.web_port)),
        &web_state,
    )
    .await?;
    let web_addr = listener.local_addr().context("the dashboard's address")?;
    let (stop_web_tx, stop_web_rx) = tokio::sync::oneshot::channel::<()>();
    let web = tokio::spawn(orgsync_web::serve(listener, web_state, async {
        let _ = stop_web_rx.await;
    }));
    writeln!(
        out,
        "Dashboard: http://{web_addr}/ (log in as demo, password {password})"
    )?;
    writeln!(
        out,
        "STS simulator at {} serving {DEMO_CVR} ({} size: {n_units} units, {n_users} users, active and inactive); Redis {} (key prefix {key_prefix}); worker started",
        sim.base_url(),
        args.size,
        orgsync_queue::mask_url(&redis_url)
    )?;

    // One run.
    let run = pipeline
        .enqueue_run(
            DEMO_CVR,
            Trigger::Manual {
                by: "demo".to_owned(),
            },
            Duration::ZERO,
        )
        .await?;
    writeln!(out, "run {} enqueued", run.run_id)?;
    out.flush()?;
    let report = tokio::select! {
        report = crate::runs::wait(&pipeline, &run.run_id) => report?,
        stopped = &mut worker => anyhow::bail!(
            "the demo's worker stopped before the run ended: {}",
            match stopped {
                Ok(Ok(())) => "it exited".to_owned(),
                Ok(Err(e)) => e.to_string(),
                Err(e) => e.to_string(),
            }
        ),
    };
    write!(out, "\n{}", report.to_text())?;
    let database = config
        .customer(DEMO_CVR)
        .map(|c| match &c.target {
            orgsync_config::TargetConfig::Sqlite(s) => s.path.display().to_string(),
            orgsync_config::TargetConfig::Scim(s) => s.base_url.to_string(),
        })
        .unwrap_or_default();
    writeln!(
        out,
        "\nThe target database: {database}\n  sqlite3 {database} 'select user_name, first_name, last_name, active from users limit 10'"
    )?;

    // The binary that runs now, not `cargo run`: that waits silently on cargo's build lock
    // while anything else builds.
    let exe = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "orgsync".to_owned());
    let orgsync = format!("{exe} --config {}", demo_config.display());
    if report.state == orgsync_jobs::report::RunState::Held {
        writeln!(
            out,
            "\nThe run is held. Check the deactivations above, then release them:\n  {orgsync} runs release {}",
            report.run_id
        )?;
    }
    if !args.once {
        writeln!(
            out,
            "\nStill running (Ctrl-C stops; the commands below need it running). From the repository, in another terminal:\n  \
             {orgsync} plan {DEMO_CVR}\n  \
             {orgsync} sync {DEMO_CVR} --wait\n  \
             {orgsync} runs"
        )?;
        out.flush()?;
        let _ = orgsync_queue::shutdown_signal().await;
        writeln!(out, "stopping the demo")?;
    } else if private.is_some() {
        writeln!(
            out,
            "The private Redis stops now; its run reports go with it (the database stays)."
        )?;
    }
    stop_worker();
    let _ = worker.await;
    let _ = stop_web_tx.send(());
    let _ = web.await;
    sim.shutdown().await;
    if private.is_none() {
        if args.remove_keys {
            let removed = pipeline
                .queue()
                .purge_all_keys()
                .await
                .context("cannot remove the demo's Redis keys")?;
            writeln!(
                out,
                "Removed the demo's {removed} Redis keys (prefix {key_prefix})."
            )?;
        } else {
            writeln!(
                out,
                "The demo's jobs and run reports stay in Redis at {} under the key prefix {key_prefix}; \
                 to remove them, run the demo again with --remove-keys (add --once to exit at once).",
                orgsync_queue::mask_url(&redis_url)
            )?;
        }
    }
    drop(private);
    Ok(crate::runs::exit_code(report.state))
}
