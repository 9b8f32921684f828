//! From the `[sts]` configuration (and the customer's file) to the STS client's options.

use std::time::Duration;

use orgsync_config::{Config, StsEnvironment};
use orgsync_sts::cli::StsCommand;
use orgsync_sts::options::{ClientOptions, Environment};

/// The client options for a command: the service's `[sts]`, plus the customer's configured
/// Organisation UUID when the CVR is a configured customer.
pub(crate) fn client_options(config: &Config, command: &StsCommand) -> ClientOptions {
    let sts = &config.service.sts;
    let StsCommand::Snapshot(args) = command;
    let organisation_uuid = config
        .customer(args.cvr.as_str())
        .and_then(|c| c.organisation_uuid);
    ClientOptions {
        environment: match sts.environment {
            StsEnvironment::Sim => Environment::Sim,
            StsEnvironment::Exttest => Environment::ExternalTest,
            StsEnvironment::Production => Environment::Production,
        },
        base_url: sts.effective_base_url(),
        organisation_uuid,
        max_in_flight: sts.max_in_flight_per_customer as usize,
        max_calls_per_second: f64::from(sts.max_calls_per_second),
        call_timeout: Duration::from_millis(sts.call_timeout_ms),
        max_response_bytes: usize::try_from(sts.max_response_bytes).unwrap_or(usize::MAX),
        ..ClientOptions::default()
    }
}

/// A client for one customer on the configured `[sts]` (today: the unsigned simulator profile).
pub(crate) fn client_for(
    config: &Config,
    cvr: &orgsync_model::ids::Cvr,
    limits: orgsync_sts::limits::SystemLimits,
) -> anyhow::Result<orgsync_sts::client::StsClient> {
    let sts = &config.service.sts;
    let options = ClientOptions {
        environment: match sts.environment {
            StsEnvironment::Sim => Environment::Sim,
            StsEnvironment::Exttest => Environment::ExternalTest,
            StsEnvironment::Production => Environment::Production,
        },
        base_url: sts.effective_base_url(),
        organisation_uuid: config
            .customer(cvr.as_str())
            .and_then(|c| c.organisation_uuid),
        max_in_flight: sts.max_in_flight_per_customer as usize,
        max_calls_per_second: f64::from(sts.max_calls_per_second),
        call_timeout: Duration::from_millis(sts.call_timeout_ms),
        max_response_bytes: usize::try_from(sts.max_response_bytes).unwrap_or(usize::MAX),
        ..ClientOptions::default()
    };
    Ok(orgsync_sts::client::StsClient::new(
        cvr.clone(),
        &options,
        limits,
    )?)
}
