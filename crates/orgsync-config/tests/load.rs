//! Loading the shipped configuration and broken copies of it.
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure message

use std::fs;
use std::path::{Path, PathBuf};

use orgsync_config::{StsEnvironment, TargetConfig, load};
use orgsync_model::policy::CustomIdSource;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

/// A copy of the shipped config in a temporary directory, with `edit` applied to the demo customer.
fn copy_with(customer: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("customers")).unwrap();
    fs::copy(
        shipped().join("orgsync.toml"),
        dir.path().join("orgsync.toml"),
    )
    .unwrap();
    let demo = fs::read_to_string(shipped().join("customers/demo.toml")).unwrap();
    fs::write(dir.path().join("customers/demo.toml"), customer(demo)).unwrap();
    dir
}

fn problems(dir: &Path) -> Vec<String> {
    load(dir)
        .expect_err("the configuration should be refused")
        .0
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn every_file_under_config_loads_and_documents_its_values() {
    let config = load(&shipped()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.service.sts.environment, StsEnvironment::Sim);
    assert_eq!(config.service.sts.max_calls_per_second, 14);
    assert_eq!(config.service.redis.key_prefix, "orgsync");
    assert_eq!(config.customers.len(), 1);
    let demo = &config.customers[0];
    assert_eq!(demo.cvr.as_str(), "11111111");
    assert_eq!(demo.schedule.expression(), "0 0 * * *");
    assert_eq!(demo.schedule.timezone(), chrono_tz::Europe::Copenhagen);
    assert_eq!(demo.policy.custom_id, CustomIdSource::UserKey);
    assert_eq!(demo.policy.guards.max_deactivations, 50);
    assert_eq!(demo.policy.defaults.currency, "DKK");
    assert!(matches!(&demo.target, TargetConfig::Sqlite(s) if s.path.ends_with("11111111.sqlite")));
    // 11111111 fails the modulus-11 check: a warning, not a problem.
    assert_eq!(config.warnings.len(), 1, "{:?}", config.warnings);
    assert!(config.warnings[0].to_string().contains("modulus-11"));
}

#[test]
fn a_minimal_customer_file_gets_the_documented_defaults() {
    let dir = copy_with(|_| {
        "cvr = \"29189846\"\nname = \"Aarhus\"\ndomains = [\"aarhus.dk\"]\n[target]\nkind = \"sqlite\"\npath = \"x.sqlite\"\n".to_owned()
    });
    let config = load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let c = &config.customers[0];
    assert_eq!(c.schedule.expression(), "0 0 * * *");
    assert_eq!(c.schedule.timezone(), chrono_tz::UTC);
    assert!(c.enabled);
    assert_eq!(c.jitter_seconds, 0);
    assert_eq!(c.policy.defaults.language, "da");
    assert_eq!(c.policy.guards.max_deactivation_percent, 10.0);
    assert!(!c.policy.mappings.title);
    assert!(
        config.warnings.is_empty(),
        "29189846 passes modulus 11: {:?}",
        config.warnings
    );
}

#[test]
fn several_problems_are_all_reported_with_file_field_and_position() {
    let dir = copy_with(|demo| {
        demo.replace("cvr = \"11111111\"", "cvr = \"1234\"")
            .replace(
                "domains = [\"demo-kommune.dk\"]",
                "domains = [\"demo-kommune.dk\", \"bad domain\"]",
            )
            .replace("schedule = \"0 0 * * *\"", "schedule = \"0 25 * * *\"")
            .replacen(
                "timezone = \"Europe/Copenhagen\"",
                "timezone = \"Europe/Aarhus\"",
                1,
            )
            .replace(
                "max_deactivation_percent = 10.0",
                "max_deactivation_percent = 150.0",
            )
            .replace(
                "custom_id = \"user_key\"",
                "custom_id = \"user_key\"\ncolour = \"blue\"",
            )
            .replace("title = false", "title = false\ntitel = true")
    });
    let found = problems(dir.path());
    let file = dir.path().join("customers/demo.toml").display().to_string();
    let expect = [
        (":6:7: cvr:", "expected exactly 8 digits, got \"1234\""),
        (": domains[1]:", "\"bad domain\" is not a mail domain"),
        (": timezone:", "\"Europe/Aarhus\" is not a time zone"),
        (
            ": guards.max_deactivation_percent:",
            "150; expected a percentage from 0 to 100",
        ),
        (": colour:", "unknown field"),
        (": mappings.titel:", "unknown field"),
    ];
    for (field, message) in expect {
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(&file) && p.contains(field) && p.contains(message)),
            "no problem {field} {message} in:\n{}",
            found.join("\n")
        );
    }
    // The schedule cannot be checked without a time zone; with one, a bad hour is reported.
    let dir =
        copy_with(|demo| demo.replace("schedule = \"0 0 * * *\"", "schedule = \"0 25 * * *\""));
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains(": schedule:") && p.contains("\"0 25 * * *\"")),
        "{found:?}"
    );
}

#[test]
fn two_customer_files_with_the_same_cvr_are_refused() {
    let dir = copy_with(|demo| demo);
    fs::copy(
        dir.path().join("customers/demo.toml"),
        dir.path().join("customers/zz-copy.toml"),
    )
    .unwrap();
    let found = problems(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("zz-copy.toml")
            && found[0].contains("already configured in")
            && found[0].contains("demo.toml")
    );
}

#[test]
fn a_duplicate_cvr_blames_the_newer_copy_even_when_it_sorts_first() {
    let dir = copy_with(|demo| demo);
    let original = dir.path().join("customers/demo.toml");
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&original)
        .unwrap()
        .set_modified(old)
        .unwrap();
    fs::copy(&original, dir.path().join("customers/aa-copy.toml")).unwrap();
    let found = problems(dir.path());
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].contains("aa-copy.toml:6:7: cvr:")
            && found[0].contains("already configured in")
            && found[0].ends_with("demo.toml; one file per municipality"),
        "{found:?}"
    );
}

#[test]
fn a_cron_value_out_of_range_names_the_field_and_the_range() {
    let dir =
        copy_with(|demo| demo.replace("schedule = \"0 0 * * *\"", "schedule = \"0 25 * * *\""));
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains(": schedule:") && p.contains("hour 25 is out of range 0-23")),
        "{found:?}"
    );
}

#[test]
fn an_unknown_key_suggests_the_nearest_known_one() {
    let dir = copy_with(|demo| {
        demo.replace(
            "name = \"Demo Kommune\"",
            "name = \"Demo Kommune\"\njitter_secs = 5",
        )
        .replace("currency = \"DKK\"", "currency = \"DKK\"\nlanguag = \"da\"")
    });
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains(": jitter_secs: unknown field; did you mean `jitter_seconds`?")),
        "{found:?}"
    );
    assert!(
        found
            .iter()
            .any(|p| p.contains(": defaults.languag: unknown field; did you mean `language`?")),
        "{found:?}"
    );
}

#[test]
fn an_unknown_service_key_suggests_the_nearest_known_one() {
    let dir = copy_with(|demo| demo);
    let service = dir.path().join("orgsync.toml");
    let text = fs::read_to_string(&service).unwrap();
    fs::write(
        &service,
        text.replace("[redis]", "[redis]\nkey_prefx = \"x\""),
    )
    .unwrap();
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains("redis.key_prefx: unknown field; did you mean `key_prefix`?")),
        "{found:?}"
    );
}

#[test]
fn an_integer_cvr_names_the_field() {
    let dir = copy_with(|demo| demo.replace("cvr = \"11111111\"", "cvr = 11111111"));
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains("demo.toml:6:7: cvr: invalid type: integer")),
        "{found:?}"
    );
}

#[test]
fn a_malformed_file_names_its_line() {
    let dir = copy_with(|demo| demo.replace("name = \"Demo Kommune\"", "name = Demo Kommune"));
    let found = problems(dir.path());
    assert!(
        found[0].contains("demo.toml:") && found[0].contains(":8:"),
        "{found:?}"
    );
}

#[test]
fn a_target_of_an_unknown_kind_or_with_unknown_fields_is_refused() {
    let dir = copy_with(|demo| demo.replace("kind = \"sqlite\"", "kind = \"ldap\""));
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains(": target:") && p.contains("ldap")),
        "{found:?}"
    );

    let dir = copy_with(|demo| {
        demo.replace(
            "path = \"data/11111111.sqlite\"",
            "path = \"x\"\npassword = \"x\"",
        )
    });
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains(": target:") && p.contains("password")),
        "{found:?}"
    );

    let scim = "[target]\nkind = \"scim\"\nbase_url = \"https://hr.example.com/scim/v2/\"\ntoken_env = \"secret-token-value\"\n";
    let dir = copy_with(|demo| demo[..demo.find("[target]").unwrap()].to_owned() + scim);
    let found = problems(dir.path());
    assert!(
        found.iter().any(
            |p| p.contains("target.token_env") && p.contains("NAME of an environment variable")
        ),
        "{found:?}"
    );
}

#[test]
fn service_file_problems_are_all_reported() {
    let dir = copy_with(|demo| demo);
    let service = fs::read_to_string(dir.path().join("orgsync.toml")).unwrap();
    let broken = service
        .replace(
            "url = \"redis://127.0.0.1:6379\"",
            "url = \"http://127.0.0.1:6379\"",
        )
        .replace("max_calls_per_second = 14", "max_calls_per_second = 0")
        .replace("level = \"info\"", "level = \"info\"\nlevle = \"debug\"")
        .replace("[web]", "[web]\nport = 80");
    fs::write(dir.path().join("orgsync.toml"), broken).unwrap();
    let found = problems(dir.path());
    let file = dir.path().join("orgsync.toml").display().to_string();
    for needle in [
        "redis.url: scheme \"http\"",
        "sts.max_calls_per_second: 0; expected 1 to 1000",
        "log.levle:",
        "web.port:",
    ] {
        assert!(
            found
                .iter()
                .any(|p| p.starts_with(&file) && p.contains(needle)),
            "no {needle} in:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn a_missing_directory_or_service_file_is_a_clear_problem() {
    let found = problems(Path::new("/nonexistent/orgsync-config"));
    assert!(
        found[0].contains("does not exist") && found[0].contains("--config"),
        "{found:?}"
    );

    let dir = copy_with(|demo| demo);
    fs::remove_file(dir.path().join("orgsync.toml")).unwrap();
    let found = problems(dir.path());
    assert!(found[0].contains("orgsync.toml: not found"), "{found:?}");
}

/// The shipped service file with `environment = "sim"` replaced by `sts` (the rest of `[sts]` kept).
fn with_sts(sts: &str) -> tempfile::TempDir {
    let dir = copy_with(|demo| demo);
    let service = fs::read_to_string(dir.path().join("orgsync.toml")).unwrap();
    fs::write(
        dir.path().join("orgsync.toml"),
        service.replacen("environment = \"sim\"\n", sts, 1),
    )
    .unwrap();
    dir
}

#[test]
fn exttest_and_production_presets_name_kombits_endpoints_and_entity_id() {
    let dir = with_sts("");
    let cert = dir.path().join("system.p12");
    fs::write(&cert, b"not read by the config loader").unwrap();
    for (environment, host) in [
        ("exttest", "eksterntest-stoettesystemerne.dk"),
        ("production", "stoettesystemerne.dk"),
    ] {
        let dir = with_sts(&format!(
            "environment = \"{environment}\"\ncertificate_file = {:?}\n",
            cert.display().to_string()
        ));
        let config = load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let sts = &config.service.sts;
        assert!(sts.is_signed());
        assert_eq!(
            sts.effective_base_url().as_str(),
            format!("https://organisation.{host}/organisation/")
        );
        assert_eq!(
            sts.effective_sts_url().unwrap().as_str(),
            format!(
                "https://n2adgangsstyring.{host}/runtime/services/kombittrust/14/certificatemixed"
            )
        );
        assert_eq!(
            sts.effective_sts_rest_url().unwrap().as_str(),
            format!("https://n2adgangsstyring.{host}/runtime/api/rest/wstrust/v1/issue")
        );
        assert_eq!(
            sts.effective_entity_id(),
            "http://stoettesystemerne.dk/service/organisation/3"
        );
        assert_eq!(
            sts.certificate_password_env,
            "ORGSYNC_STS_CERTIFICATE_PASSWORD"
        );
        assert_eq!(sts.token_expiry_margin_s, 900);
    }
}

#[test]
fn the_legacy_profile_needs_an_sts_url_and_takes_a_configured_entity_id() {
    let dir = with_sts("");
    let cert = dir.path().join("system.p12");
    fs::write(&cert, b"x").unwrap();
    let cert = cert.display().to_string();
    let dir = with_sts(&format!(
        "environment = \"exttest\"\nprofile = \"serviceplatformen\"\ncertificate_file = {cert:?}\n"
    ));
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains("sts.sts_url") && p.contains("serviceplatformen")),
        "{found:?}"
    );
    let dir = with_sts(&format!(
        "environment = \"exttest\"\nprofile = \"serviceplatformen\"\ncertificate_file = {cert:?}\nsts_url = \"https://sts.example.dk/issue\"\nentity_id = \"http://organisation.serviceplatformen.dk/service/organisation/4\"\n"
    ));
    let config = load(dir.path()).unwrap_or_else(|e| panic!("{e}"));
    let sts = &config.service.sts;
    assert_eq!(
        sts.effective_base_url().as_str(),
        "https://exttest.serviceplatformen.dk/service/Organisation/"
    );
    assert_eq!(
        sts.effective_entity_id(),
        "http://organisation.serviceplatformen.dk/service/organisation/4"
    );
    let dir = with_sts("environment = \"production\"\nprofile = \"serviceplatformen\"\n");
    assert!(
        problems(dir.path())
            .iter()
            .any(|p| p.contains("sts.certificate_file"))
    );
}

#[test]
fn signed_settings_are_checked_all_at_once() {
    let dir = with_sts(
        "environment = \"production\"\nsigned = true\ncertificate_file = \"/nonexistent/system.p12\"\nsts_url = \"http://sts.example.dk/\"\ntls_ca_file = \"/nonexistent/ca.pem\"\n",
    );
    let service = fs::read_to_string(dir.path().join("orgsync.toml")).unwrap();
    fs::write(
        dir.path().join("orgsync.toml"),
        service
            .replacen(
                "certificate_password_env = \"ORGSYNC_STS_CERTIFICATE_PASSWORD\"",
                "certificate_password_env = \"MY PASSWORD\"",
                1,
            )
            .replacen(
                "token_expiry_margin_s = 900",
                "token_expiry_margin_s = 30000",
                1,
            )
            .replacen(
                "sts_certificate_files = []",
                "sts_certificate_files = [\"/nonexistent/sts.pem\"]",
                1,
            ),
    )
    .unwrap();
    let found = problems(dir.path());
    for needle in [
        "sts.signed: only for environment sim",
        "sts.certificate_file: /nonexistent/system.p12 does not exist",
        "sts.certificate_password_env: \"MY PASSWORD\"",
        "sts.sts_url: http://sts.example.dk/: the STS is only reached over https",
        "sts.tls_ca_file: /nonexistent/ca.pem does not exist",
        "sts.sts_certificate_files: /nonexistent/sts.pem does not exist",
        "sts.token_expiry_margin_s: 30000",
    ] {
        assert!(
            found.iter().any(|p| p.contains(needle)),
            "no {needle} in:\n{}",
            found.join("\n")
        );
    }
    // A signed simulator defaults to https on the simulator's port, its STS on the same host.
    let dir = with_sts("environment = \"sim\"\nsigned = true\n");
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains("sts.certificate_file: missing")),
        "{found:?}"
    );
}

#[test]
fn web_users_load_with_their_roles_and_bad_hashes_or_an_open_bind_are_refused() {
    let dir = copy_with(|demo| demo);
    let path = dir.path().join("orgsync.toml");
    let service = fs::read_to_string(&path).unwrap();
    let with_users = service
        .replace("bind = \"127.0.0.1:8080\"", "bind = \"0.0.0.0:8080\"")
        .replace(
            "secure_cookies = false",
            "secure_cookies = false\n[[web.users]]\nname = \"anna\"\nrole = \"support\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\"\n[[web.users]]\nname = \"vera\"\nrole = \"viewer\"\npassword_hash = \"$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo\"",
        );
    fs::write(&path, &with_users).unwrap();
    let config = load(dir.path()).unwrap();
    let roles: Vec<_> = config
        .service
        .web
        .users
        .iter()
        .map(|u| (u.name.as_str(), u.role))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("anna", orgsync_config::WebRole::Support),
            ("vera", orgsync_config::WebRole::Viewer)
        ]
    );
    assert!(
        !format!("{config:?}").contains("argon2id"),
        "Debug hides the hashes"
    );

    fs::write(&path, with_users.replace("$argon2id$v=19", "plaintext")).unwrap();
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains("web.users") && p.contains("hash-password")),
        "{}",
        found.join("\n")
    );

    fs::write(
        &path,
        service.replace("bind = \"127.0.0.1:8080\"", "bind = \"0.0.0.0:8080\""),
    )
    .unwrap();
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains("web.bind") && p.contains("loopback")),
        "{}",
        found.join("\n")
    );
}

#[test]
fn sentinel_and_cluster_settings_are_checked_field_by_field() {
    let with_redis = |lines: &str| {
        let dir = copy_with(|demo| demo);
        let service = fs::read_to_string(dir.path().join("orgsync.toml")).unwrap();
        let changed = service.replace(
            "url = \"redis://127.0.0.1:6379\"",
            &format!("url = \"redis://127.0.0.1:6379\"\n{lines}"),
        );
        fs::write(dir.path().join("orgsync.toml"), changed).unwrap();
        dir
    };
    let dir = with_redis("sentinels = [\"127.0.0.1:26379\", \"sentinel-2\"]\ncluster = true");
    let found = problems(dir.path());
    for needle in [
        "redis.master_name: is missing",
        "redis.sentinels: \"sentinel-2\" is not host:port",
        "redis.cluster: and redis.sentinels are both set",
    ] {
        assert!(
            found.iter().any(|p| p.contains(needle)),
            "no {needle} in:\n{}",
            found.join("\n")
        );
    }
    let dir = with_redis("master_name = \"orgsync\"");
    let found = problems(dir.path());
    assert!(
        found
            .iter()
            .any(|p| p.contains("redis.sentinels: is empty, but redis.master_name is set")),
        "{found:?}"
    );
    let dir =
        with_redis("sentinels = [\"10.0.0.1:26379\", \"[::1]:26380\"]\nmaster_name = \"orgsync\"");
    let config = orgsync_config::load(dir.path()).expect("a valid Sentinel configuration");
    assert_eq!(config.service.redis.sentinels.len(), 2);
    assert_eq!(config.service.redis.master_name.as_deref(), Some("orgsync"));
    let dir = with_redis("cluster = true");
    let config = orgsync_config::load(dir.path()).expect("a valid cluster configuration");
    assert!(config.service.redis.cluster);
}

#[test]
fn a_broken_customer_file_leaves_out_that_customer_only_and_changes_the_fingerprint() {
    let dir = copy_with(|demo| demo);
    let before = orgsync_config::fingerprint(dir.path());
    let demo = fs::read_to_string(dir.path().join("customers/demo.toml")).unwrap();
    let broken = format!(
        "nmae = \"typo\"\n{}",
        demo.replacen("cvr = \"11111111\"", "cvr = \"29189846\"", 1)
    );
    fs::write(dir.path().join("customers/broken.toml"), broken).unwrap();
    assert_ne!(orgsync_config::fingerprint(dir.path()), before);

    // A process that keeps running uses the good customer and names the broken file.
    let files = orgsync_config::load_customers(dir.path());
    assert_eq!(files.customers.len(), 1, "{:?}", files.broken);
    assert_eq!(files.customers[0].cvr.as_str(), "11111111");
    assert_eq!(files.broken.len(), 1);
    let bad = &files.broken[0];
    assert!(bad.file.ends_with("customers/broken.toml"), "{bad:?}");
    assert_eq!(bad.cvr.as_ref().map(|c| c.as_str()), Some("29189846"));
    assert!(
        bad.problems.iter().any(|p| p.to_string().contains("nmae")),
        "{bad:?}"
    );
    // `load` (config check, the short-lived commands) still refuses the whole directory.
    assert!(problems(dir.path()).iter().any(|p| p.contains("nmae")));
}
