//! SCIM protocol behaviour the test peer cannot show: 429 with `Retry-After`, RFC 9865 cursor
//! paging, a server's 400 with its `scimType`, 5xx. A small scripted HTTP server on loopback
//! plays the service provider.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orgsync_model::ids::{Cvr, UserId};
use orgsync_model::plan::{Action, UserFields, UserItem};
use orgsync_model::policy::Mappings;
use orgsync_target::batch::write_users;
use orgsync_target::scim::{ScimOptions, ScimTarget};
use orgsync_target::{Target, TargetError};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A response: status, extra headers, JSON body.
type Reply = (u16, Vec<(&'static str, String)>, Value);

/// Serves requests with `script(method, path_and_query, body)`; records the request lines.
async fn stub(
    script: impl Fn(&str, &str, &str) -> Reply + Send + Sync + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(script);
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let script = Arc::clone(&script);
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let (read, mut write) = stream.into_split();
                let mut reader = BufReader::new(read);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).await.unwrap();
                        if header.trim().is_empty() {
                            break;
                        }
                        if let Some(v) = header.to_ascii_lowercase().strip_prefix("content-length:")
                        {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).await.unwrap();
                    let mut parts = request_line.split_whitespace();
                    let (method, target) = (
                        parts.next().unwrap().to_owned(),
                        parts.next().unwrap().to_owned(),
                    );
                    log.lock().unwrap().push(format!("{method} {target}"));
                    let (status, headers, json) =
                        script(&method, &target, &String::from_utf8_lossy(&body));
                    let text = json.to_string();
                    let mut response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/scim+json\r\ncontent-length: {}\r\n",
                        text.len()
                    );
                    for (name, value) in headers {
                        response.push_str(&format!("{name}: {value}\r\n"));
                    }
                    response.push_str("\r\n");
                    response.push_str(&text);
                    write.write_all(response.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (format!("http://{address}/v2/"), seen)
}

fn list(resources: Vec<Value>, total: usize) -> Value {
    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:ListResponse"], "totalResults": total, "Resources": resources})
}

fn target(base: &str) -> ScimTarget {
    let mut options = ScimOptions::new(
        base.parse().unwrap(),
        SecretString::from("t".to_owned()),
        Cvr::parse("11111111").unwrap(),
        Mappings::default(),
    );
    options.max_retry_after = Duration::from_secs(5);
    ScimTarget::new(options).unwrap()
}

fn scim_user(n: u32) -> Value {
    json!({"id": format!("id{n}"), "userName": format!("u{n}@kommune.dk"), "active": true})
}

#[tokio::test]
async fn a_429_is_waited_out_for_its_retry_after() {
    let calls = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&calls);
    let (base, seen) = stub(move |_, path, _| {
        if path.starts_with("/v2/Users") {
            let mut n = counter.lock().unwrap();
            *n += 1;
            if *n == 1 {
                return (
                    429,
                    vec![("retry-after", "1".to_owned())],
                    json!({"status": "429"}),
                );
            }
            return (200, vec![], list(vec![scim_user(1)], 1));
        }
        if path.starts_with("/v2/Groups") {
            return (200, vec![], list(vec![], 0));
        }
        (200, vec![], json!({}))
    })
    .await;
    let started = Instant::now();
    let state = target(&base).read_state().await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited {:?}",
        started.elapsed()
    );
    assert_eq!(state.users.len(), 1);
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .filter(|r| r.contains("/v2/Users"))
            .count(),
        2
    );
}

#[tokio::test]
async fn a_429_asking_for_longer_than_the_limit_is_a_retriable_error() {
    let (base, _) = stub(|_, path, _| {
        if path.starts_with("/v2/Users") {
            return (
                429,
                vec![("retry-after", "3600".to_owned())],
                json!({"status": "429"}),
            );
        }
        (200, vec![], json!({}))
    })
    .await;
    let error = target(&base).read_state().await.unwrap_err();
    assert!(
        matches!(error, TargetError::RateLimited { retry_after: Some(d) } if d == Duration::from_secs(3600)),
        "{error}"
    );
    assert!(error.is_retriable());
}

#[tokio::test]
async fn cursor_paging_is_used_when_the_server_announces_it() {
    let (base, seen) = stub(|_, path, _| {
        if path.starts_with("/v2/ServiceProviderConfig") {
            return (
                200,
                vec![],
                json!({"pagination": {"cursor": true, "index": true}}),
            );
        }
        if path.starts_with("/v2/Users") {
            if path.contains("cursor=c2") {
                return (200, vec![], list(vec![scim_user(2)], 2));
            }
            let mut page = list(vec![scim_user(1)], 2);
            page["nextCursor"] = json!("c2");
            return (200, vec![], page);
        }
        (200, vec![], list(vec![], 0))
    })
    .await;
    let target = target(&base);
    let state = target.read_state().await.unwrap();
    assert_eq!(state.users.len(), 2);
    assert!(target.capabilities().cursor_paging);
    let requests = seen.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("/v2/Users") && r.contains("cursor=c2")),
        "{requests:?}"
    );
    assert!(
        !requests.iter().any(|r| r.contains("startIndex")),
        "{requests:?}"
    );
}

fn create(n: u128, user_name: &str) -> UserItem {
    UserItem {
        action: Action::Create,
        external_id: Some(UserId(uuid::Uuid::from_u128(n))),
        fields: UserFields {
            user_name: user_name.to_owned(),
            email: Some(user_name.to_owned()),
            first_name: Some("A".to_owned()),
            last_name: Some("B".to_owned()),
            memberships: vec![],
            primary_department: None,
            title: None,
            phone: None,
            manager: None,
        },
        defaults: None,
        changes: None,
    }
}

#[tokio::test]
async fn a_servers_400_is_reported_per_object_with_its_scim_type_and_the_batch_goes_on() {
    let (base, _) = stub(|method, path, body| {
        if method == "POST" && path.starts_with("/v2/Users") {
            if body.contains("bad@kommune.dk") {
                return (
                    400,
                    vec![],
                    json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"], "status": "400",
                           "scimType": "invalidValue", "detail": "emails[0].value is not an address this server accepts"}),
                );
            }
            return (201, vec![], json!({"id": "new", "userName": "ok@kommune.dk"}));
        }
        (200, vec![], list(vec![], 0))
    })
    .await;
    let target = target(&base);
    let report = write_users(
        &target,
        &[create(1, "bad@kommune.dk"), create(2, "ok@kommune.dk")],
        1,
    )
    .await
    .unwrap();
    assert_eq!(report.written, 1);
    assert_eq!(report.rejected.len(), 1);
    let rejected = &report.rejected[0];
    assert_eq!(
        (rejected.status, rejected.scim_type.as_deref()),
        (Some(400), Some("invalidValue"))
    );
    assert!(
        rejected
            .message
            .contains("is not an address this server accepts"),
        "{}",
        rejected.message
    );
}

#[tokio::test]
async fn a_5xx_stops_the_batch_as_a_retriable_run_level_error() {
    let (base, _) = stub(|method, _, _| {
        if method == "POST" {
            return (
                503,
                vec![],
                json!({"status": "503", "detail": "maintenance"}),
            );
        }
        (200, vec![], list(vec![], 0))
    })
    .await;
    let error = write_users(&target(&base), &[create(1, "a@kommune.dk")], 1)
        .await
        .unwrap_err();
    assert!(
        matches!(error, TargetError::Server { status: 503, .. }),
        "{error}"
    );
    assert!(error.is_retriable() && !error.is_object_level());
}
