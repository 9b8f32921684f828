//! The SCIM health check: the service provider answers its configuration, accepts our token,
//! and lists Users.

use reqwest::Method;
use serde_json::Value;

use super::ScimTarget;
use crate::{Health, TargetError};

pub(super) async fn check(target: &ScimTarget) -> Result<Health, TargetError> {
    let features = target.features().await?;
    // /ServiceProviderConfig may be public; a list of Users is not.
    let reply = target
        .client
        .send(
            Method::GET,
            "Users",
            &[("count", "1".to_owned())],
            None,
            None,
            "Users",
        )
        .await
        .map_err(|e| super::client::endpoint_missing(e, "Users"))?;
    let users = reply
        .body
        .as_ref()
        .and_then(|b| b.get("totalResults"))
        .and_then(Value::as_u64);
    let mut announced = Vec::new();
    if features.etags {
        announced.push("etag");
    }
    if features.cursor_paging {
        announced.push("cursor paging");
    }
    if features.bulk {
        announced.push("bulk");
    }
    Ok(Health {
        summary: format!(
            "SCIM {} answers and accepts the token{}",
            target.client.options().base_url,
            if announced.is_empty() {
                String::new()
            } else {
                format!(" ({})", announced.join(", "))
            }
        ),
        users,
    })
}
