//! The dashboard in a real headless Chromium (Debian `chromium` + `chromium-driver`, driven
//! with fantoccini) against real Redis and a real pipeline run from the STS simulator: a
//! failed department job under Dead letters, found by customer and by error class; a viewer
//! sees no Replay and a forged POST is refused; Replay as support recovers the run; the
//! release page lists the held users and Release applies them; the overview updates without a
//! reload. Screenshots of every page go to `target/browser-screenshots/`.
#![allow(clippy::unwrap_used, clippy::print_stderr)] // tests: a panic is the failure message

#[path = "../../orgsync-jobs/tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::TestApp;
use fantoccini::{Client, ClientBuilder, Locator};
use orgsync_jobs::report::RunState;
use orgsync_model::testing::{p, policy, small_tree, snapshot, u, unit, user as sts_user};
use orgsync_queue::{DeadLetterFilter, JobState};
use orgsync_web::auth::{Role, WebUser, hash_password};
use orgsync_web::{CustomerInfo, WebState};

fn fixture() -> orgsync_model::snapshot::Snapshot {
    let mut units = small_tree();
    units.push(unit(5, "Arkiv", Some(1)));
    snapshot(
        units,
        vec![
            sts_user(1, "Anne Hansen", "anne@kommune.dk", &[2]),
            sts_user(2, "Bo Jensen", "bo@kommune.dk", &[3]),
            sts_user(3, "Carl Nielsen", "carl@kommune.dk", &[4]),
        ],
    )
}

/// How long a page may take to show an element after a click or navigation: generous, since a
/// loaded two-core CI machine renders slowly, and a wait ends as soon as the element is there.
const WAIT: Duration = Duration::from_secs(30);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn shots_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

struct Driver {
    child: Child,
    _profile: tempfile::TempDir,
    client: Client,
}

impl Driver {
    async fn start() -> Driver {
        // Both ring and aws-lc are linked into the test; fantoccini's rustls needs one chosen.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let port = free_port();
        let profile = tempfile::tempdir().unwrap();
        let driver = ["chromedriver", "/usr/bin/chromedriver"]
            .into_iter()
            .find(|p| Command::new(p).arg("--version").output().is_ok())
            .expect("chromedriver is installed (Debian chromium-driver; .ci/run installs it)");
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({"args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--window-size=1400,1000",
                format!("--user-data-dir={}", profile.path().display()),
            ]}),
        );
        let url = format!("http://127.0.0.1:{port}");
        let mut last = None;
        for _ in 0..100 {
            match ClientBuilder::rustls()
                .unwrap()
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(client) => {
                    return Driver {
                        child,
                        _profile: profile,
                        client,
                    };
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start: {last:?}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Web {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

async fn serve(app: &TestApp) -> Web {
    let users = vec![
        WebUser {
            name: "vera".into(),
            role: Role::Viewer,
            password_hash: hash_password("vera-pw").unwrap(),
        },
        WebUser {
            name: "sam".into(),
            role: Role::Support,
            password_hash: hash_password("sam-pw").unwrap(),
        },
    ];
    let customers = vec![CustomerInfo {
        cvr: common::CVR.into(),
        name: "Test Kommune".into(),
        schedule: "0 2 * * * (Europe/Copenhagen)".into(),
        enabled: true,
        next_fire: std::sync::Arc::new(|| Some(chrono::Utc::now() + chrono::Duration::hours(3))),
    }];
    let state = WebState::new(
        app.queue.clone(),
        app.pipeline.clone(),
        users,
        customers,
        false,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(orgsync_web::serve(listener, state, async {
        let _ = rx.await;
    }));
    Web {
        base,
        stop: Some(tx),
    }
}

async fn shot(c: &Client, name: &str) {
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

async fn login(c: &Client, base: &str, name: &str, password: &str) {
    c.delete_all_cookies().await.unwrap();
    c.goto(&format!("{base}/login")).await.unwrap();
    find(c, Locator::Id("name"))
        .await
        .send_keys(name)
        .await
        .unwrap();
    find(c, Locator::Id("password"))
        .await
        .send_keys(password)
        .await
        .unwrap();
    find(c, Locator::Id("login")).await.click().await.unwrap();
    // The login POST hashes the password (argon2), so the overview may take a moment.
    if let Err(e) = c
        .wait()
        .at_most(WAIT)
        .for_element(Locator::Id("live"))
        .await
    {
        panic!(
            "{name} did not reach the overview after logging in: {e}\n{}",
            c.source().await.unwrap_or_default()
        );
    }
}

/// The element, waiting for it to appear (after a click, the next page may still be loading).
async fn find(c: &Client, locator: Locator<'_>) -> fantoccini::elements::Element {
    match c.wait().at_most(WAIT).for_element(locator).await {
        Ok(e) => e,
        Err(e) => panic!("{locator:?}: {e}\n{}", c.source().await.unwrap_or_default()),
    }
}

/// The element's text; found again when the live overview replaced it meanwhile.
async fn text(c: &Client, css: &str) -> String {
    let mut last = None;
    let deadline = std::time::Instant::now() + WAIT;
    while std::time::Instant::now() < deadline {
        match c.wait().at_most(WAIT).for_element(Locator::Css(css)).await {
            Ok(e) => match e.text().await {
                Ok(t) => return t,
                Err(err) => last = Some(err),
            },
            Err(err) => last = Some(err),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{css}: {last:?}");
}

async fn eventually(c: &Client, url: &str, css: &str, want: &str) -> String {
    for _ in 0..100 {
        c.goto(url).await.unwrap();
        if let Ok(e) = c.find(Locator::Css(css)).await {
            let t = e.text().await.unwrap_or_default();
            if t.contains(want) {
                return t;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "{url}: {css} never contained {want:?}: {}",
        c.source().await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_find_replay_and_release_a_failed_run_in_a_real_browser() {
    // A first run, then Bo leaves and the Kantine department's writes fail for good.
    let app = TestApp::start(fixture(), policy()).await;
    assert_eq!(app.sync().await.state, RunState::Succeeded);
    let mut changed = fixture();
    changed.users.retain(|x| x.uuid != p(2));
    changed
        .users
        .push(sts_user(7, "Gitte Friis", "gitte@kommune.dk", &[4]));
    app.sim.replace(changed);
    app.fail_department(Some(u(4)));
    let report = app.sync().await;
    assert_eq!(report.state, RunState::Held, "{}", report.to_text());
    let dead_id = report.failed_departments[0].job_id.clone();
    let class = app
        .queue
        .job(&orgsync_queue::JobId::new(dead_id.as_str()))
        .await
        .unwrap()
        .unwrap()
        .final_error_class
        .unwrap();

    let mut web = serve(&app).await;
    let base = web.base.clone();
    let driver = Driver::start().await;
    let c = &driver.client;

    // A viewer: the dead letter is listed, without Replay; a forged POST changes nothing.
    login(c, &base, "vera", "vera-pw").await;
    shot(c, "overview").await;
    c.goto(&format!("{base}/dead-letters")).await.unwrap();
    let table = text(c, "#dead-letters").await;
    assert!(table.contains(&dead_id), "{table}");
    assert!(c.find(Locator::Id("replay-selected")).await.is_err());
    c.goto(&format!("{base}/jobs/{dead_id}")).await.unwrap();
    assert!(
        c.find(Locator::Id("replay")).await.is_err(),
        "no Replay for a viewer"
    );
    let cookie = c.get_named_cookie("orgsync_session").await.unwrap();
    let http = reqwest::Client::new();
    let forged = |origin: Option<&str>, csrf: Option<&str>| {
        let mut r = http
            .post(format!("{base}/dead-letters/replay"))
            .header("cookie", format!("orgsync_session={}", cookie.value()))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "id={dead_id}{}",
                csrf.map(|t| format!("&csrf={t}")).unwrap_or_default()
            ));
        if let Some(o) = origin {
            r = r.header("origin", o);
        }
        r
    };
    assert_eq!(
        forged(None, None).send().await.unwrap().status(),
        403,
        "no token"
    );
    assert_eq!(
        forged(Some("http://evil.example"), None)
            .send()
            .await
            .unwrap()
            .status(),
        403,
        "foreign Origin"
    );
    let api = http
        .post(format!("{base}/api/dead-letters/replay"))
        .basic_auth("vera", Some("vera-pw"))
        .json(&serde_json::json!({"ids": [dead_id]}))
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 403, "a viewer may not replay through the API");
    let still = app
        .queue
        .job(&orgsync_queue::JobId::new(dead_id.as_str()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        still.state,
        JobState::Dead,
        "the forged requests changed nothing"
    );

    // Support: filter by customer, then by error class (the classes the queue holds).
    login(c, &base, "sam", "sam-pw").await;
    c.goto(&format!("{base}/dead-letters")).await.unwrap();
    find(c, Locator::Id("filter-cvr"))
        .await
        .select_by_value(common::CVR)
        .await
        .unwrap();
    find(c, Locator::Id("apply-filter"))
        .await
        .click()
        .await
        .unwrap();
    assert!(text(c, "#dead-letters").await.contains(&dead_id));
    assert!(
        c.current_url()
            .await
            .unwrap()
            .as_str()
            .contains("cvr=11111111")
    );
    c.goto(&format!("{base}/dead-letters")).await.unwrap();
    find(c, Locator::Id("filter-error_class"))
        .await
        .select_by_value(&class)
        .await
        .unwrap();
    find(c, Locator::Id("apply-filter"))
        .await
        .click()
        .await
        .unwrap();
    assert!(text(c, "#dead-letters").await.contains(&dead_id));
    assert_eq!(text(c, "#matching").await, "1 dead letters match");
    c.goto(&format!("{base}/dead-letters?error_class=no.such.class"))
        .await
        .unwrap();
    assert!(!text(c, "#dead-letters").await.contains(&dead_id));
    c.goto(&format!("{base}/dead-letters?cvr=11111111"))
        .await
        .unwrap();
    shot(c, "dead-letters").await;
    c.goto(&format!("{base}/jobs/{dead_id}")).await.unwrap();
    shot(c, "dead-letter").await;

    // Replay it, confirming the count.
    app.fail_department(None);
    c.goto(&format!("{base}/dead-letters?cvr=11111111"))
        .await
        .unwrap();
    find(
        c,
        Locator::Css(&format!("input[name=id][value='{dead_id}']")),
    )
    .await
    .click()
    .await
    .unwrap();
    find(c, Locator::Id("replay-selected"))
        .await
        .click()
        .await
        .unwrap();
    assert!(
        text(c, "#confirm-text")
            .await
            .contains("Replay 1 dead letter?")
    );
    shot(c, "confirm-replay").await;
    find(c, Locator::Id("confirm")).await.click().await.unwrap();
    assert!(text(c, "#result").await.contains("Replayed 1"));
    let chain = app
        .queue
        .replay_chain(&orgsync_queue::JobId::new(dead_id.as_str()))
        .await
        .unwrap();
    let new_job = chain.last().unwrap().job_id.clone();
    assert_ne!(new_job.as_str(), dead_id);
    eventually(
        c,
        &format!("{base}/jobs/{new_job}"),
        "#job-state",
        "succeeded",
    )
    .await;
    shot(c, "job").await;
    // The dead letter's page shows its chain; the run report links the current job.
    c.goto(&format!("{base}/jobs/{dead_id}")).await.unwrap();
    assert!(text(c, "#replay-chain").await.contains(new_job.as_str()));
    let failed = eventually(
        c,
        &format!("{base}/runs/{}", report.run_id),
        "#failed-departments",
        "succeeded",
    )
    .await;
    assert!(failed.contains(new_job.as_str()), "{failed}");
    shot(c, "run").await;
    c.goto(&format!("{base}/audit")).await.unwrap();
    let audit = text(c, "#audit").await;
    assert!(audit.contains("sam") && audit.contains("replay") && audit.contains(&dead_id));
    shot(c, "audit").await;

    // The release page lists exactly the held users; Release applies them.
    c.goto(&format!("{base}/runs/{}/release", report.run_id))
        .await
        .unwrap();
    let held: Vec<String> = {
        let mut v = Vec::new();
        for e in c
            .find_all(Locator::Css("tr.held-user td.user-name"))
            .await
            .unwrap()
        {
            v.push(e.text().await.unwrap());
        }
        v
    };
    assert_eq!(held, vec!["bo@kommune.dk".to_owned()]);
    shot(c, "release").await;
    find(c, Locator::Id("confirm-release"))
        .await
        .click()
        .await
        .unwrap();
    find(c, Locator::Id("release")).await.click().await.unwrap();
    assert_eq!(text(c, "#run-state").await, "released");
    let state = app.state().await;
    assert!(
        !common::user(&state, p(2)).unwrap().active,
        "Bo was deactivated"
    );

    // Other pages render.
    for (path, name) in [
        ("/runs", "runs"),
        ("/customers", "customers"),
        ("/jobs?state=retrying", "jobs"),
    ] {
        c.goto(&format!("{base}{path}")).await.unwrap();
        find(c, Locator::Css("main h1")).await;
        shot(c, name).await;
    }

    // The overview changes without a reload when a run happens meanwhile.
    c.goto(&format!("{base}/")).await.unwrap();
    c.execute("window.__same_page = 1;", vec![]).await.unwrap();
    let before = text(c, "#job-stats").await;
    let run = app.sync().await;
    assert_eq!(run.state, RunState::Succeeded, "{}", run.to_text());
    let mut changed = false;
    for _ in 0..50 {
        if text(c, "#job-stats").await != before {
            changed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(changed, "the overview never updated");
    let same = c
        .execute("return window.__same_page;", vec![])
        .await
        .unwrap();
    assert_eq!(same, serde_json::json!(1), "no reload happened");
    shot(c, "overview-live").await;

    let _ = web.stop.take().map(|s| s.send(()));
    drop(driver);
    assert_eq!(
        app.queue
            .count_dead_letters(&DeadLetterFilter::default())
            .await
            .unwrap(),
        0
    );
    app.finish().await;
}
