//! `orgsync sim`: clap arguments and the run function, for the binary to plug in.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::Utc;
use clap::{Args, ValueEnum};
use orgsync_model::ids::Cvr;

use std::sync::Arc;

use crate::generate::{Size, generate};
use crate::pki::SimPki;
use crate::security::SimSecurity;
use crate::server::{FaultOptions, LatencyModel, SimOptions, Simulator};
use crate::wire::Dialect;
use crate::{SimError, load_fixture};

/// Which contract `orgsync sim` serves (the names of `[sts] profile`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum SimProfile {
    /// Organisation 6 (SOAP 1.2, `/organisation/<svc>/6/`).
    #[default]
    Stoettesystemerne,
    /// The legacy Serviceplatformen contract v5 (SOAP 1.1, `/organisation/<Svc>/5`).
    Serviceplatformen,
}

impl SimProfile {
    /// The contract served.
    pub fn dialect(self) -> Dialect {
        match self {
            SimProfile::Stoettesystemerne => Dialect::Organisation6,
            SimProfile::Serviceplatformen => Dialect::Serviceplatformen5,
        }
    }

    /// The entity ID the services accept as token audience unless `--entity-id` says otherwise.
    pub fn entity_id(self) -> &'static str {
        match self {
            SimProfile::Stoettesystemerne => "http://stoettesystemerne.dk/service/organisation/3",
            SimProfile::Serviceplatformen => {
                "http://organisation.serviceplatformen.dk/service/organisation/5"
            }
        }
    }
}

/// Run the STS Organisation simulator.
#[derive(Debug, Clone, Args)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8089")]
    pub bind: SocketAddr,
    /// Size of the synthetic municipality (ignored for municipalities given by --fixture).
    #[arg(long, value_enum, default_value_t = Size::S)]
    pub size: Size,
    /// Seed of the synthetic data and of the latency/fault dice.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// CVR numbers of synthetic municipalities (repeatable; default 11111111, KOMBIT's Korsbæk).
    #[arg(long = "cvr", value_parser = parse_cvr)]
    pub cvrs: Vec<Cvr>,
    /// Snapshot JSON fixtures to serve (repeatable); each brings its own CVR.
    #[arg(long = "fixture")]
    pub fixtures: Vec<PathBuf>,
    /// Fixed latency per call in ms; without it the docs/sizes.md §5 model applies (150-400 ms, 1-5 s per 500-row page).
    #[arg(long)]
    pub latency_ms: Option<u64>,
    /// Probability (0-1) that a call fails with HTTP 503 or a SOAP fault.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Refuse calls above this many per second with HTTP 429.
    #[arg(long)]
    pub rate_limit: Option<f64>,
    /// Serve HTTPS with mutual TLS and the STS endpoints, and refuse Organisation calls without
    /// a valid WS-Security header (token signature, audience, timestamp, holder-of-key
    /// signature); data is scoped to the token's CVR. Writes its PKI to --pki-dir.
    #[arg(long)]
    pub require_signatures: bool,
    /// Where --require-signatures writes ca.pem, sts.pem, client.pem and client-key.pem for
    /// `[sts]` (tls_ca_file, sts_certificate_files, certificate_file, private_key_file).
    #[arg(long, default_value = "sim-pki")]
    pub pki_dir: PathBuf,
    /// The contract to serve: `stoettesystemerne` (Organisation 6, SOAP 1.2) or
    /// `serviceplatformen` (the legacy v5 contract, SOAP 1.1).
    #[arg(long, value_enum, default_value_t = SimProfile::Stoettesystemerne)]
    pub profile: SimProfile,
    /// The entity ID the services accept as token audience (default: the profile's,
    /// `http://stoettesystemerne.dk/service/organisation/3` or
    /// `http://organisation.serviceplatformen.dk/service/organisation/5`).
    #[arg(long)]
    pub entity_id: Option<String>,
}

fn parse_cvr(text: &str) -> Result<Cvr, String> {
    Cvr::parse(text).map_err(|e| e.to_string())
}

/// The simulator's options from the arguments.
pub fn options(args: &SimArgs) -> Result<SimOptions, SimError> {
    if !(0.0..=1.0).contains(&args.fault_rate) {
        return Err(SimError::Usage(format!(
            "--fault-rate must be between 0 and 1, got {}",
            args.fault_rate
        )));
    }
    Ok(SimOptions {
        latency: args
            .latency_ms
            .map_or_else(LatencyModel::sizes, LatencyModel::fixed),
        faults: FaultOptions {
            fault_rate: args.fault_rate,
            status_error_rate: 0.0,
            rate_limit_per_second: args.rate_limit,
        },
        seed: args.seed,
        security: None,
        dialects: vec![args.profile.dialect()],
        ..SimOptions::default()
    })
}

/// Starts the simulator, then serves until `shutdown` completes.
pub async fn run(args: SimArgs, shutdown: impl Future<Output = ()>) -> Result<(), SimError> {
    let mut options = options(&args)?;
    if args.require_signatures {
        let pki = Arc::new(SimPki::generate()?);
        pki.write_to(&args.pki_dir)?;
        let mut security = SimSecurity::new(pki, true);
        security.entity_id = args
            .entity_id
            .clone()
            .unwrap_or_else(|| args.profile.entity_id().to_owned());
        options.security = Some(security);
        tracing::info!(pki_dir = %args.pki_dir.display(), "wrote the simulator's CA, STS and client certificates");
    }
    let today = orgsync_model::time::danish_date(&Utc::now());
    let mut municipalities = Vec::new();
    for path in &args.fixtures {
        municipalities.push(load_fixture(path)?);
    }
    let mut cvrs = args.cvrs.clone();
    if cvrs.is_empty() && municipalities.is_empty() {
        cvrs.push(Cvr::parse("11111111").map_err(|e| SimError::Usage(e.to_string()))?);
    }
    for (i, cvr) in cvrs.iter().enumerate() {
        municipalities.push(generate(
            cvr,
            args.size,
            args.seed.wrapping_add(i as u64),
            today,
        ));
    }
    let summary: Vec<String> = municipalities
        .iter()
        .map(|m| {
            format!(
                "{} ({} units, {} users)",
                m.cvr,
                m.units.len(),
                m.users.len()
            )
        })
        .collect();
    let simulator = Simulator::start_on(args.bind, municipalities, options).await?;
    tracing::info!(
        address = %simulator.address(),
        base_url = %simulator.base_url(),
        profile = ?args.profile,
        sts_url = %simulator.sts_url(),
        municipalities = %summary.join(", "),
        "STS simulator listening"
    );
    shutdown.await;
    simulator.shutdown().await;
    Ok(())
}
