use std::sync::Mutex;

use providers::ProviderKind;

use super::*;
use crate::table::{ProviderEntry, Route};

fn table(fallbacks: Fallbacks) -> RoutingTable {
    let p = |n: &str| ProviderEntry {
        name: n.into(),
        kind: ProviderKind::OpenAi,
        models: vec![],
        priority: 0,
    };
    let t = |p: &str, m: &str| Target {
        provider: p.into(),
        model: m.into(),
        weight: 1,
    };
    RoutingTable::new(
        vec![p("a"), p("b"), p("c")],
        vec![
            Route {
                name: "smart".into(),
                targets: vec![t("a", "m1")],
                fallbacks,
            },
            Route {
                name: "backup".into(),
                targets: vec![t("b", "m2")],
                fallbacks: Fallbacks::default(),
            },
            Route {
                name: "big".into(),
                targets: vec![t("c", "m3")],
                fallbacks: Fallbacks::default(),
            },
        ],
    )
}

/// Fails providers listed in `fail` with the given class; records the order of calls.
async fn run(
    t: &RoutingTable,
    fail: &[(&str, ErrorClass)],
) -> (Result<String, String>, Vec<String>) {
    let calls = Mutex::new(Vec::new());
    let r = execute(t, "smart", |target: Target| {
        if let Ok(mut c) = calls.lock() {
            c.push(target.provider.clone());
        }
        let class = fail
            .iter()
            .find(|(p, _)| *p == target.provider)
            .map(|(_, c)| *c);
        async move {
            match class {
                Some(c) => Err(ProviderError::new(&target.provider, c, "boom")),
                None => Ok(target.provider.clone()),
            }
        }
    })
    .await;
    let calls = calls.into_inner().unwrap_or_default();
    (r.map(|o| o.value).map_err(|e| e.to_string()), calls)
}

#[tokio::test]
async fn a_rate_limit_walks_the_any_chain() {
    let t = table(Fallbacks {
        any: vec!["backup".into()],
        ..Default::default()
    });
    let (r, calls) = run(&t, &[("a", ErrorClass::RateLimited)]).await;
    assert_eq!(r, Ok("b".to_string()));
    assert_eq!(calls, vec!["a", "b"]);
}

#[tokio::test]
async fn context_length_uses_its_own_chain_and_skips_any() {
    let t = table(Fallbacks {
        any: vec!["backup".into()],
        context_length: vec!["big".into()],
        ..Default::default()
    });
    let (r, calls) = run(&t, &[("a", ErrorClass::ContextLength)]).await;
    assert_eq!(r, Ok("c".to_string()));
    assert_eq!(calls, vec!["a", "c"]);
}

#[tokio::test]
async fn a_bad_request_never_falls_back() {
    let t = table(Fallbacks {
        any: vec!["backup".into()],
        ..Default::default()
    });
    let (r, calls) = run(&t, &[("a", ErrorClass::BadRequest)]).await;
    assert!(r.is_err());
    assert_eq!(calls, vec!["a"]);
}

#[tokio::test]
async fn the_last_error_is_returned_when_every_target_fails() {
    let t = table(Fallbacks {
        any: vec!["backup".into(), "big".into()],
        ..Default::default()
    });
    let (r, calls) = run(
        &t,
        &[
            ("a", ErrorClass::Server),
            ("b", ErrorClass::Server),
            ("c", ErrorClass::Timeout),
        ],
    )
    .await;
    assert_eq!(calls, vec!["a", "b", "c"]);
    assert!(r.err().is_some_and(|e| e.contains("c")));
}
