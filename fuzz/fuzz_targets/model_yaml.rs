//! An operator's model definition in YAML (routing rules, time zones, policies): read,
//! validated and, when valid, its rules evaluated — never a panic.
#![no_main]

use std::collections::HashSet;

use admin::catalog::ModelDef;
use libfuzzer_sys::fuzz_target;
use router::rules::{NoMetadata, RuleContext, first_match};

fuzz_target!(|text: &str| {
    let Ok(def) = serde_yaml::from_str::<ModelDef>(text) else {
        return;
    };
    let providers: HashSet<String> = def.targets.iter().map(|t| t.provider.clone()).collect();
    if def.check("model", &providers).is_err() {
        return;
    }
    let route = def.route();
    for secs in [0i64, 1_700_000_000, 1_800_000_000] {
        let ctx = RuleContext {
            est_input_tokens: secs as u64 % 200_000,
            tools: secs % 2 == 0,
            json: false,
            plan: Some("free"),
            metadata: &NoMetadata,
            now: jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH),
            monthly_spend_pct: Some(50.0),
        };
        let _ = first_match(&route.rules, &ctx);
    }
});
