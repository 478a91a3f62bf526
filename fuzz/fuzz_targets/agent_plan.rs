//! The agent's parsing of its rendered plan: arbitrary fields are a plan or an error naming the
//! variable, never a panic; a plan renders into env that parses back to the same plan.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_inject::contract::{PlanFields, SecretFields};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\n');
    let mut next = || parts.next().filter(|p| !p.is_empty()).map(str::to_owned);
    let unnamed = next().map(|arn| SecretFields {
        arn,
        file: next(),
        region: next(),
        version_stage: next(),
        version_id: next(),
        key: next(),
        format: next(),
        env: next(),
        name: None,
    });
    let fields = PlanFields {
        unnamed,
        output_dir: next(),
        file_mode: next(),
        failover_region: next(),
        refresh_interval: next(),
        reload_signal: next(),
        reload_process: next(),
        reload_url: next(),
        restart_on_change: next(),
        // The rest: the named secrets' JSON.
        secrets: next().map(|first| {
            std::iter::once(first)
                .chain(std::iter::from_fn(&mut next))
                .collect::<Vec<_>>()
                .join("\n")
        }),
    };
    let plan = match fields.parse() {
        Ok(plan) => plan,
        Err(error) => {
            assert!(error.to_string().starts_with(&error.variable));
            return;
        }
    };
    let rendered = plan.env();
    let again = PlanFields::from_env(&rendered)
        .parse()
        .expect("a rendered plan parses");
    assert_eq!(again, plan);
});
