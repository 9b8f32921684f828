//! A snapshot fixture (`orgsync sim --fixture FILE`, `sts snapshot --out FILE`): parsed, then
//! validated and planned as a run would, twice (the second plan starts from the first's result).
#![no_main]

use orgsync_model::{plan, snapshot::Snapshot, target::TargetState, testing, validate};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Ok(snapshot) = serde_json::from_slice::<Snapshot>(data) else {
        return;
    };
    let policy = testing::policy();
    let Ok(valid) = validate::validate(snapshot, &policy, None) else {
        return;
    };
    let today = testing::today();
    let first = plan::plan(&valid, &TargetState::default(), &policy, today);
    let mut target = TargetState::default();
    target.apply(&first);
    let _ = plan::plan(&valid, &target, &policy, today);
});
