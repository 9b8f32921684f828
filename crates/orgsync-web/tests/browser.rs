//! The dashboard in a real headless Chromium (Debian `chromium` + `chromium-driver`, driven
//! with fantoccini) against real Redis and a real pipeline run from the STS simulator: a
//! failed department job under Dead letters, found by customer and by error class; a viewer
//! sees no Replay and a forged POST is refused; Replay as support recovers the run; the
//! release page lists the held users and Release applies them; the overview updates without a
//! reload; the department tree of the `m` municipality shows all its departments, the failed
//! one highlighted. Screenshots of every page go to `target/browser-screenshots/`.
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

/// One browser scenario at a time: two Chromiums and two pipelines at once would starve a
/// two-core machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

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
    let _one = ONE_AT_A_TIME.lock().await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_department_tree_of_the_m_municipality_shows_all_its_departments() {
    use orgsync_sts_sim::generate::{Size, domain_of, expected_read, generate};
    let _one = ONE_AT_A_TIME.lock().await;
    let today = orgsync_model::time::danish_date(&chrono::Utc::now());
    let truth = generate(&common::cvr(), Size::M, 3, today);
    let mut policy = policy();
    policy.domains = vec![orgsync_model::ids::Domain::parse(&domain_of(Size::M)).unwrap()];
    // The department with the most users fails for good (its users' writes get a 401).
    let valid =
        orgsync_model::validate::validate(expected_read(&truth, today), &policy, None).unwrap();
    let planned = orgsync_model::plan::department_tree(&valid, &Default::default(), &policy, today);
    let failing = planned.iter().max_by_key(|d| d.users).unwrap().clone();
    let app = TestApp::start(truth, policy).await;
    app.fail_department(Some(failing.uuid));
    let report = app.sync().await;
    assert_eq!(report.state, RunState::PartlyFailed, "{}", report.to_text());
    assert_eq!(report.failed_departments.len(), 1, "{}", report.to_text());
    let dead_id = report.failed_departments[0].job_id.clone();
    let target = app.state().await;
    let mut target_titles: Vec<String> = target
        .departments
        .iter()
        .filter(|d| d.active)
        .map(|d| d.title.clone())
        .collect();
    target_titles.sort();
    assert!(
        target_titles.len() > 300,
        "an m municipality: {}",
        target_titles.len()
    );

    let mut web = serve(&app).await;
    let base = web.base.clone();
    let driver = Driver::start().await;
    let c = &driver.client;
    login(c, &base, "vera", "vera-pw").await;
    // From the customers page, the way an operator gets there.
    c.goto(&format!("{base}/customers")).await.unwrap();
    find(c, Locator::Css("a.tree")).await.click().await.unwrap();
    find(c, Locator::Id("tree")).await;
    assert_eq!(
        text(c, "#tree-count").await,
        format!("{} departments", target_titles.len())
    );
    // Every department of the target is drawn once, open or closed (textContent: closed
    // <details> hide their children's text from WebDriver's visible text).
    let mut page_titles = Vec::new();
    for e in c.find_all(Locator::Css("#tree .dept-title")).await.unwrap() {
        page_titles.push(e.prop("textContent").await.unwrap().unwrap_or_default());
    }
    page_titles.sort();
    assert_eq!(page_titles, target_titles);
    // Users per department are those the target holds with it as primary department.
    let users = c
        .find(Locator::Css(&format!("#dept-{} .users", failing.uuid)))
        .await
        .unwrap()
        .prop("textContent")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(users, format!("{} users", failing.users));
    // Exactly the failed department is highlighted, linked to its dead letter.
    let failed = c.find_all(Locator::Css("#tree .failed")).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(
        failed[0].attr("id").await.unwrap(),
        Some(format!("dept-{}", failing.uuid))
    );
    let link = c
        .find(Locator::Css(&format!(
            "#dept-{} a.dead-letter",
            failing.uuid
        )))
        .await
        .unwrap();
    assert_eq!(
        link.attr("href").await.unwrap(),
        Some(format!("/jobs/{dead_id}"))
    );
    // The failed department shows without a click: every department above it is open.
    assert!(
        failed[0].is_displayed().await.unwrap(),
        "the way to the failed department is open"
    );
    // Collapsible: the root closes on a click, without JavaScript of ours.
    let root = find(c, Locator::Css("#tree > details")).await;
    assert!(root.attr("open").await.unwrap().is_some());
    shot(c, "department-tree").await;
    find(c, Locator::Css("#tree > details > summary"))
        .await
        .click()
        .await
        .unwrap();
    assert!(root.attr("open").await.unwrap().is_none(), "closed");
    // The JSON gives the same tree.
    let json: serde_json::Value = reqwest::Client::new()
        .get(format!("{base}/api/customers/{}/tree", common::CVR))
        .basic_auth("vera", Some("vera-pw"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json["departments"], target_titles.len());
    assert_eq!(json["run_id"], report.run_id.as_str());
    fn count(nodes: &serde_json::Value) -> usize {
        nodes
            .as_array()
            .map(|a| a.iter().map(|n| 1 + count(&n["children"])).sum())
            .unwrap_or(0)
    }
    assert_eq!(count(&json["roots"]), target_titles.len());
    // The failed department's dead letter page is one click away.
    c.goto(&format!("{base}/customers/{}/tree", common::CVR))
        .await
        .unwrap();
    find(c, Locator::Css("a.dead-letter"))
        .await
        .click()
        .await
        .unwrap();
    assert_eq!(text(c, "#job-state").await, "dead");
    assert!(text(c, "main h1").await.contains(&dead_id));

    let _ = web.stop.take().map(|s| s.send(()));
    drop(driver);
    app.finish().await;
}

/// One parsed sample of the Prometheus text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: std::collections::BTreeMap<String, String>,
    value: f64,
}

/// Parses the text exposition format strictly: every sample belongs to a family announced by
/// `# HELP` and `# TYPE` before it (a histogram's through `_bucket`, `_sum`, `_count`), label
/// values are quoted with `\\`, `\"` and `\n` escapes, and values are numbers. Returns the
/// families' types and the samples.
fn parse_prometheus(text: &str) -> (std::collections::BTreeMap<String, String>, Vec<Sample>) {
    let mut types = std::collections::BTreeMap::new();
    let mut helped = std::collections::BTreeSet::new();
    let mut samples = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            helped.insert(rest.split(' ').next().unwrap().to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(helped.contains(name), "TYPE before HELP: {line}");
            assert!(["gauge", "counter", "histogram"].contains(&kind), "{line}");
            assert!(
                types.insert(name.to_owned(), kind.to_owned()).is_none(),
                "a family twice: {line}"
            );
            continue;
        }
        assert!(!line.starts_with('#'), "unknown comment: {line}");
        let mut chars = line.chars().peekable();
        let mut name = String::new();
        while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':') {
            name.push(c);
        }
        let mut labels = std::collections::BTreeMap::new();
        if chars.next_if_eq(&'{').is_some() {
            loop {
                let mut key = String::new();
                while let Some(c) = chars.next_if(|c| c.is_ascii_alphanumeric() || *c == '_') {
                    key.push(c);
                }
                assert!(!key.is_empty(), "a label without a name: {line}");
                assert_eq!(chars.next(), Some('='), "{line}");
                assert_eq!(chars.next(), Some('"'), "{line}");
                let mut value = String::new();
                loop {
                    match chars
                        .next()
                        .unwrap_or_else(|| panic!("unterminated: {line}"))
                    {
                        '\\' => value.push(match chars.next() {
                            Some('n') => '\n',
                            Some(c @ ('\\' | '"')) => c,
                            other => panic!("bad escape {other:?} in {line}"),
                        }),
                        '"' => break,
                        c => value.push(c),
                    }
                }
                labels.insert(key, value);
                match chars.next() {
                    Some(',') => continue,
                    Some('}') => break,
                    other => panic!("{other:?} after a label in {line}"),
                }
            }
        }
        assert_eq!(chars.next(), Some(' '), "{line}");
        let rest: String = chars.collect();
        let value: f64 = rest
            .parse()
            .unwrap_or_else(|e| panic!("{line}: value: {e}"));
        let family = [
            name.as_str(),
            name.trim_end_matches("_bucket"),
            name.trim_end_matches("_sum"),
            name.trim_end_matches("_count"),
        ]
        .into_iter()
        .find(|f| types.contains_key(*f))
        .unwrap_or_else(|| panic!("a sample before its TYPE: {line}"))
        .to_owned();
        if family != name {
            assert_eq!(types[&family], "histogram", "{line}");
        }
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    (types, samples)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_real_run_parse_as_prometheus_text_with_every_required_series() {
    let app = TestApp::start(fixture(), policy()).await;
    app.fail_department(Some(u(4)));
    let report = app.sync().await;
    assert_eq!(report.state, RunState::PartlyFailed, "{}", report.to_text());
    // The run has ended; wait until its last job (FinishRun) has been acknowledged too, so the
    // scrape and the statistics below see the same attempts.
    for _ in 0..200 {
        let stats = app.queue.stats().await.unwrap();
        if stats
            .job_types
            .iter()
            .all(|t| t.waiting + t.running + t.scheduled == 0)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let web = serve(&app).await;
    let response = reqwest::Client::new()
        .get(format!("{}/metrics", web.base))
        .basic_auth("vera", Some("vera-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let (types, samples) = parse_prometheus(&text);
    let one = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let found: Vec<&Sample> = samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in\n{text}");
        found[0].value
    };
    // Jobs per type and state; worker count; dead letters (per type, class and customer).
    assert_eq!(types["orgsync_queue_jobs"], "gauge");
    assert_eq!(
        one(
            "orgsync_queue_jobs",
            &[("job_type", "sync_department"), ("state", "dead")]
        ),
        1.0
    );
    assert_eq!(
        one("orgsync_queue_workers", &[("job_type", "sync_department")]),
        1.0
    );
    assert_eq!(
        one(
            "orgsync_queue_dead_letters",
            &[("job_type", "sync_department")]
        ),
        1.0
    );
    let class = report.failed_departments[0]
        .error_class
        .map(|c| c.as_str().to_owned())
        .unwrap();
    assert_eq!(
        one(
            "orgsync_queue_dead_letters_by_class",
            &[("error_class", &class)]
        ),
        1.0
    );
    assert_eq!(
        one(
            "orgsync_queue_dead_letters_by_customer",
            &[("cvr", common::CVR)]
        ),
        1.0
    );
    // Attempt durations: a histogram per job type whose buckets rise to the count, which is
    // every attempt made (succeeded jobs and failed attempts).
    assert_eq!(types["orgsync_queue_attempt_duration_seconds"], "histogram");
    let stats = app.queue.stats().await.unwrap();
    for t in &stats.job_types {
        let buckets: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| {
                s.name == "orgsync_queue_attempt_duration_seconds_bucket"
                    && s.labels["job_type"] == t.job_type
            })
            .map(|s| {
                let le = match s.labels["le"].as_str() {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().unwrap(),
                };
                (le, s.value)
            })
            .collect();
        assert!(buckets.len() > 5, "{}: {buckets:?}", t.job_type);
        assert!(
            buckets
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
            "{}: bounds and counts rise: {buckets:?}",
            t.job_type
        );
        let count = one(
            "orgsync_queue_attempt_duration_seconds_count",
            &[("job_type", &t.job_type)],
        );
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, count));
        assert_eq!(
            count,
            (t.succeeded + t.failed_attempts) as f64,
            "{}: every attempt is counted once",
            t.job_type
        );
        let sum = one(
            "orgsync_queue_attempt_duration_seconds_sum",
            &[("job_type", &t.job_type)],
        );
        assert!(
            sum >= 0.0 && (count == 0.0 || sum > 0.0),
            "{}: {sum}",
            t.job_type
        );
    }
    // Runs per customer and outcome, STS calls, target writes.
    assert_eq!(
        one(
            "orgsync_runs",
            &[("cvr", common::CVR), ("state", "partly_failed")]
        ),
        1.0
    );
    assert_eq!(
        one("orgsync_sts_calls", &[("cvr", common::CVR)]),
        report.sts_calls as f64
    );
    assert_eq!(
        one("orgsync_target_writes", &[("cvr", common::CVR)]),
        report.writes.written as f64
    );
    assert!(!text.contains("pw"), "no password in the metrics");
    drop(web);
    app.finish().await;
}
