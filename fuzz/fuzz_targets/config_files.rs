//! The configuration directory: the first input byte says which file the rest replaces
//! (`orgsync.toml` or a customer file); the other file is a valid one. Loaded with
//! `orgsync_config::load`, as `config check` and every role do.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

/// The configuration the repository ships (every key documented), as the valid other file.
const SERVICE: &str = include_str!("../../config/orgsync.toml");
const CUSTOMER: &str = include_str!("../../config/customers/demo.toml");

/// One directory per fuzzing process (in memory when /dev/shm exists).
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("orgsync-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("customers")).expect("a scratch directory");
        dir
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&which, file)) = data.split_first() else {
        return;
    };
    let dir = dir();
    let (service, customer) = if which & 1 == 0 {
        (file, CUSTOMER.as_bytes())
    } else {
        (SERVICE.as_bytes(), file)
    };
    std::fs::write(dir.join("orgsync.toml"), service).expect("write orgsync.toml");
    std::fs::write(dir.join("customers/fuzz.toml"), customer).expect("write a customer file");
    if let Err(problems) = orgsync_config::load(dir) {
        let _ = problems.to_string();
    }
});
