//! The agent's parsing of its rendered plan: arbitrary fields are a plan or an error naming the
//! variable, never a panic; a plan renders into env that the agent's own command-line parser
//! reads back to the same plan.
#![no_main]

use libfuzzer_sys::fuzz_target;
use secret_inject::cli::AgentArgs;
use secret_inject::contract::{Carrier as _, PlanFields, env};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.split('\n');
    let mut next = || parts.next().filter(|p| !p.is_empty()).map(str::to_owned);
    // One line per flat field, in declaration order: the unnamed secret's, then the pod's; the
    // rest is the named secrets' JSON.
    let mut fields = PlanFields::default();
    fields.unnamed.for_each_mut(|field, slot| {
        if field.flat.is_some() {
            *slot = next();
        }
    });
    fields.pod.for_each_mut(|field, slot| {
        if field.flat.is_some_and(|flat| flat.env != env::SECRETS) {
            *slot = next();
        }
    });
    fields.pod.secrets = next().map(|first| {
        std::iter::once(first)
            .chain(std::iter::from_fn(&mut next))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let plan = match fields.parse() {
        Ok(plan) => plan,
        Err(error) => {
            assert!(error.to_string().starts_with(&error.variable));
            return;
        }
    };
    let rendered = plan.env();
    let args = AgentArgs::from_rendered(rendered.iter().map(|(n, v)| (*n, v.as_str())))
        .expect("the agent reads every rendered variable");
    let again = args.plan_fields().parse().expect("a rendered plan parses");
    assert_eq!(again, plan);
});
