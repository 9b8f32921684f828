//! Page layout, the vendored stylesheet and script (no build step, works offline), and small
//! rendering helpers shared by the pages.

use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use maud::{DOCTYPE, Markup, html};
use orgsync_queue::HourCount;

use crate::auth::{AuthVia, CurrentUser, Role};

const CSS: &str = r#"
body{font-family:system-ui,sans-serif;margin:0;color:#222;background:#f6f7f9}
nav{background:#1f3a5f;color:#fff;padding:.5em 1em;display:flex;gap:1em;align-items:center}
nav a{color:#fff;text-decoration:none}nav .me{margin-left:auto}
main{padding:1em 1.5em}table{border-collapse:collapse;background:#fff;margin:.5em 0}
td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top;font-size:.9em}
th{background:#eef}.num{text-align:right}.err{color:#a00}.ok{color:#070}
.bar{background:#ddd;width:200px;height:12px;display:inline-block}.bar>span{background:#2a7;height:12px;display:block}
pre{background:#fff;border:1px solid #ddd;padding:.5em;overflow:auto;max-width:100%}
form.inline{display:inline}.filters input,.filters select{margin-right:.5em}
button{cursor:pointer}.danger{background:#c33;color:#fff;border:0;padding:.3em .8em}
.primary{background:#1f3a5f;color:#fff;border:0;padding:.3em .8em}
#tree details,#tree .dept{margin-left:1.2em}#tree>details,#tree>.dept{margin-left:0}
#tree summary{cursor:pointer}#tree .dept.leaf,#tree div.dept{padding-left:1em}
#tree .users{color:#555;font-size:.85em}#tree .below{color:#888;font-size:.85em}
#tree .failed>summary,#tree div.failed{background:#fdd;border-left:4px solid #c33}
.chart rect.s{fill:#2a7}.chart rect.f{fill:#e90}.chart rect.d{fill:#c33}
"#;

const JS: &str = r#"
// Live overview: replace #live with a fresh fragment every 2 s.
(function(){
  var live=document.getElementById('live');
  if(live){setInterval(function(){
    fetch('/overview/live',{credentials:'same-origin'}).then(function(r){return r.ok?r.text():null})
      .then(function(t){if(t!==null){live.innerHTML=t;}});
  },2000);}
  var all=document.getElementById('select-all');
  if(all){all.addEventListener('change',function(){
    document.querySelectorAll('input[name=id]').forEach(function(c){c.checked=all.checked;});
  });}
})();
"#;

/// `GET /static/app.js`.
pub(crate) async fn app_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript")], JS)
}

/// `GET /static/app.css`.
pub(crate) async fn app_css() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css")], CSS)
}

/// A whole page with the navigation.
pub(crate) fn page(title: &str, user: &CurrentUser, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · orgsync" }
                link rel="stylesheet" href="/static/app.css";
            }
            body {
                nav {
                    strong { "orgsync" }
                    a href="/" { "Overview" }
                    a href="/jobs?state=retrying" { "Jobs" }
                    a href="/dead-letters" { "Dead letters" }
                    a href="/runs" { "Runs" }
                    a href="/customers" { "Customers" }
                    a href="/audit" { "Audit" }
                    span.me {
                        (user.name) " (" (user.role.as_str()) ") "
                        @if user.via == AuthVia::Cookie {
                            form.inline method="post" action="/logout" {
                                (csrf(user)) button type="submit" { "Log out" }
                            }
                        }
                    }
                }
                main { h1 { (title) } (body) }
                script src="/static/app.js" {}
            }
        }
    }
}

/// The hidden CSRF field for a form.
pub(crate) fn csrf(user: &CurrentUser) -> Markup {
    html! { input type="hidden" name="csrf" value=(user.csrf); }
}

/// Whether write controls are shown.
pub(crate) fn can_write(user: &CurrentUser) -> bool {
    user.role == Role::Support
}

pub(crate) fn error_page(status: StatusCode, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (status.as_u16()) " · orgsync" } link rel="stylesheet" href="/static/app.css"; }
            body { main { h1 { (status) } p.err id="error" { (message) } p { a href="/" { "Overview" } } } }
        }
    }
}

pub(crate) fn login_page(problem: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { "Log in · orgsync" } link rel="stylesheet" href="/static/app.css"; }
            body { main {
                h1 { "orgsync: log in" }
                @if let Some(p) = problem { p.err id="error" { (p) } }
                form method="post" action="/login" {
                    p { label { "Name " input name="name" id="name" autocomplete="username"; } }
                    p { label { "Password " input name="password" id="password" type="password" autocomplete="current-password"; } }
                    button.primary type="submit" id="login" { "Log in" }
                }
            } }
        }
    }
}

pub(crate) fn time(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

pub(crate) fn ago(t: Option<DateTime<Utc>>) -> String {
    match t {
        Some(t) => {
            let s = (Utc::now() - t).num_seconds();
            if s < 0 {
                format!("in {}", duration(s.unsigned_abs()))
            } else {
                format!("{} ago", duration(s.unsigned_abs()))
            }
        }
        None => "-".into(),
    }
}

pub(crate) fn duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86400, secs % 86400 / 3600),
    }
}

pub(crate) fn progress(done: u64, total: u64) -> Markup {
    let pct = (done * 100).checked_div(total).unwrap_or(0);
    html! { span.bar title=(format!("{done}/{total}")) { span style=(format!("width:{pct}%")) {} } " " (done) " / " (total) }
}

/// Succeeded (green), failed attempts (orange) and dead (red) per hour, as inline SVG bars.
pub(crate) fn chart(hours: &[HourCount]) -> Markup {
    let max = hours
        .iter()
        .map(|h| h.succeeded + h.failed + h.dead)
        .max()
        .unwrap_or(0)
        .max(1);
    let height = 80u64;
    let w = 4u64;
    let total_w = w * hours.len() as u64;
    let total = |f: fn(&HourCount) -> u64| hours.iter().map(f).sum::<u64>();
    html! {
        svg.chart width=(total_w) height=(height) viewBox=(format!("0 0 {total_w} {height}")) role="img" {
            @for (i, h) in hours.iter().enumerate() {
                @let x = i as u64 * w;
                @let hs = h.succeeded * height / max;
                @let hf = h.failed * height / max;
                @let hd = h.dead * height / max;
                rect.s x=(x) y=(height - hs) width=(w - 1) height=(hs) { title { (time(Some(h.hour))) ": " (h.succeeded) " succeeded" } }
                rect.f x=(x) y=(height - hs - hf) width=(w - 1) height=(hf) {}
                rect.d x=(x) y=(height - hs - hf - hd) width=(w - 1) height=(hd) {}
            }
        }
        p { "Last " (hours.len() / 24) " days, per hour: "
            span.ok { (total(|h| h.succeeded)) " succeeded" } ", "
            span { (total(|h| h.failed)) " failed attempts" } ", "
            span.err { (total(|h| h.dead)) " dead" } }
    }
}

/// Field names whose values are never shown.
fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "secret",
        "token",
        "key",
        "cpr",
        "assertion",
        "credential",
    ]
    .iter()
    .any(|s| k.contains(s))
}

/// A payload with secret-looking fields replaced by `"[redacted]"`.
pub(crate) fn redact(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.iter()
                .map(|(k, v)| {
                    if is_secret_key(k) {
                        (k.clone(), serde_json::Value::String("[redacted]".into()))
                    } else {
                        (k.clone(), redact(v))
                    }
                })
                .collect(),
        ),
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(redact).collect()),
        other => other.clone(),
    }
}

pub(crate) fn pre_json(value: &serde_json::Value) -> Markup {
    html! { pre { (serde_json::to_string_pretty(value).unwrap_or_default()) } }
}
