use proptest::prelude::*;

use super::*;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// A request with nothing special about it, at a fixed instant.
fn ctx() -> RuleContext<'static> {
    RuleContext {
        est_input_tokens: 1000,
        tools: false,
        json: false,
        plan: None,
        metadata: &NoMetadata,
        now: ts("2025-06-04T12:00:00Z"),
        monthly_spend_pct: None,
    }
}

fn rules(yaml: &str) -> Vec<Rule> {
    let rules: Vec<Rule> = serde_yaml::from_str(yaml).unwrap();
    validate(&rules).unwrap();
    rules
}

/// One rule with this `when` (YAML flow mapping), routing to `cheap`.
fn when(cond: &str) -> Vec<Rule> {
    rules(&format!("- {{when: {cond}, then: {{model: cheap}}}}"))
}

fn hit(rules: &[Rule], ctx: &RuleContext<'_>) -> Option<usize> {
    first_match(rules, ctx).map(|(i, _)| i)
}

fn holds(cond: &str, ctx: &RuleContext<'_>) -> bool {
    hit(&when(cond), ctx).is_some()
}

fn invalid(yaml: &str) -> String {
    let rules: Vec<Rule> = serde_yaml::from_str(yaml).unwrap();
    validate(&rules).unwrap_err().to_string()
}

#[test]
fn empty_or_absent_when_always_matches() {
    assert!(holds("{}", &ctx()));
    let r = rules("- {then: {model: cheap}}");
    assert!(r[0].when.is_empty());
    assert_eq!(hit(&r, &ctx()), Some(0));
}

#[test]
fn input_tokens_bounds() {
    let at = |n| RuleContext {
        est_input_tokens: n,
        ..ctx()
    };
    assert!(holds("{input_tokens: {gte: 100000}}", &at(100_000)));
    assert!(!holds("{input_tokens: {gte: 100000}}", &at(99_999)));
    assert!(holds("{input_tokens: {lt: 500}}", &at(499)));
    assert!(!holds("{input_tokens: {lt: 500}}", &at(500)));
    let band = "{input_tokens: {gte: 10, lt: 20}}";
    assert!(holds(band, &at(10)) && holds(band, &at(19)));
    assert!(!holds(band, &at(9)) && !holds(band, &at(20)));
}

#[test]
fn tools_condition() {
    let with = RuleContext {
        tools: true,
        ..ctx()
    };
    assert!(holds("{tools: true}", &with));
    assert!(!holds("{tools: true}", &ctx()));
    assert!(holds("{tools: false}", &ctx()));
    assert!(!holds("{tools: false}", &with));
}

#[test]
fn json_condition() {
    let with = RuleContext {
        json: true,
        ..ctx()
    };
    assert!(holds("{json: true}", &with));
    assert!(!holds("{json: true}", &ctx()));
    assert!(holds("{json: false}", &ctx()));
    assert!(!holds("{json: false}", &with));
}

#[test]
fn plan_condition_needs_a_listed_plan() {
    let plan = |p| RuleContext {
        plan: Some(p),
        ..ctx()
    };
    assert!(holds("{plan: [free, trial]}", &plan("trial")));
    assert!(!holds("{plan: [free, trial]}", &plan("pro")));
    // Plans are compared exactly.
    assert!(!holds("{plan: [free, trial]}", &plan("Free")));
    // A key without a plan matches no plan condition.
    assert!(!holds("{plan: [free, trial]}", &ctx()));
}

#[test]
fn metadata_condition_reads_the_prefixed_header() {
    let headers = [
        ("x-gateway-meta-tier", "batch"),
        ("x-gateway-meta-team", "ml"),
    ];
    let with = RuleContext {
        metadata: &headers,
        ..ctx()
    };
    assert!(holds("{metadata: {tier: batch}}", &with));
    assert!(holds("{metadata: {tier: batch, team: ml}}", &with));
    assert!(!holds("{metadata: {tier: batch, team: web}}", &with));
    assert!(!holds("{metadata: {tier: Batch}}", &with));
    assert!(!holds("{metadata: {region: eu}}", &with));
    assert!(!holds("{metadata: {tier: batch}}", &ctx()));
}

#[test]
fn monthly_spend_condition_needs_a_figure() {
    let spent = |p| RuleContext {
        monthly_spend_pct: Some(p),
        ..ctx()
    };
    assert!(holds("{monthly_spend_pct: {gte: 80}}", &spent(80.0)));
    assert!(holds("{monthly_spend_pct: {gte: 80}}", &spent(130.5)));
    assert!(!holds("{monthly_spend_pct: {gte: 80}}", &spent(79.99)));
    assert!(holds(
        "{monthly_spend_pct: {gte: 50, lt: 80}}",
        &spent(60.0)
    ));
    // Until budgets exist there may be no figure: the condition does not hold.
    assert!(!holds("{monthly_spend_pct: {gte: 80}}", &ctx()));
    assert!(!holds("{monthly_spend_pct: {lt: 80}}", &ctx()));
}

fn at(now: &str) -> RuleContext<'static> {
    RuleContext {
        now: ts(now),
        ..ctx()
    }
}

#[test]
fn time_window_same_day() {
    let office = r#"{time: {from: "09:00", to: "17:30", tz: UTC}}"#;
    assert!(holds(office, &at("2025-06-04T09:00:00Z")));
    assert!(holds(office, &at("2025-06-04T17:29:59Z")));
    assert!(!holds(office, &at("2025-06-04T17:30:00Z")));
    assert!(!holds(office, &at("2025-06-04T08:59:59Z")));
    // The zone's wall clock counts: 09:00 in New York (EDT) is 13:00 UTC.
    let ny = r#"{time: {from: "09:00", to: "17:00", tz: America/New_York}}"#;
    assert!(holds(ny, &at("2025-06-04T13:00:00Z")));
    assert!(!holds(ny, &at("2025-06-04T12:59:00Z")));
}

#[test]
fn time_window_wrapping_midnight() {
    let night = r#"{time: {from: "22:00", to: "06:00", tz: UTC}}"#;
    assert!(holds(night, &at("2025-06-04T22:00:00Z")));
    assert!(holds(night, &at("2025-06-04T23:59:59Z")));
    assert!(holds(night, &at("2025-06-05T00:00:00Z")));
    assert!(holds(night, &at("2025-06-05T05:59:59Z")));
    assert!(!holds(night, &at("2025-06-05T06:00:00Z")));
    assert!(!holds(night, &at("2025-06-04T21:59:59Z")));
    assert!(!holds(night, &at("2025-06-04T12:00:00Z")));
    // `to: 00:00` runs to midnight.
    let evening = r#"{time: {from: "18:00", to: "00:00", tz: UTC}}"#;
    assert!(holds(evening, &at("2025-06-04T23:59:00Z")));
    assert!(!holds(evening, &at("2025-06-05T00:00:00Z")));
}

#[test]
fn day_filter_uses_the_local_day() {
    // 2025-06-01 is a Sunday; 23:30 UTC is 08:30 on Monday in Tokyo.
    let sunday_night_utc = at("2025-06-01T23:30:00Z");
    let tokyo_monday = r#"{time: {from: "08:00", to: "09:00", tz: Asia/Tokyo, days: [mon]}}"#;
    assert!(holds(tokyo_monday, &sunday_night_utc));
    let tokyo_sunday = r#"{time: {from: "08:00", to: "09:00", tz: Asia/Tokyo, days: [sun]}}"#;
    assert!(!holds(tokyo_sunday, &sunday_night_utc));
    let utc_sunday = r#"{time: {from: "23:00", to: "23:59", tz: UTC, days: [sunday]}}"#;
    assert!(holds(utc_sunday, &sunday_night_utc));
}

#[test]
fn wrapping_window_belongs_to_the_day_it_opens() {
    // Friday night 22:00–06:00 in Berlin (CEST, UTC+2). 2025-06-06 is a Friday.
    let friday_night = r#"{time: {from: "22:00", to: "06:00", tz: Europe/Berlin, days: [fri]}}"#;
    assert!(holds(friday_night, &at("2025-06-06T20:30:00Z"))); // Fri 22:30
    assert!(holds(friday_night, &at("2025-06-07T00:00:00Z"))); // Sat 02:00, still Friday night
    assert!(!holds(friday_night, &at("2025-06-07T20:30:00Z"))); // Sat 22:30
    assert!(!holds(friday_night, &at("2025-06-06T00:00:00Z"))); // Fri 02:00: Thursday night
}

#[test]
fn daylight_saving_uses_the_wall_clock() {
    // 2025-03-30 in Berlin: 02:00 CET jumps to 03:00 CEST (01:00 UTC). 02:30 never happens,
    // so a window inside the skipped hour does not match that day…
    let skipped = r#"{time: {from: "02:00", to: "03:00", tz: Europe/Berlin}}"#;
    assert!(!holds(skipped, &at("2025-03-30T00:59:59Z"))); // 01:59:59 CET
    assert!(!holds(skipped, &at("2025-03-30T01:00:00Z"))); // 03:00:00 CEST
    assert!(!holds(skipped, &at("2025-03-30T01:30:00Z"))); // 03:30 CEST
    // …and one that spans it opens at 03:00 CEST instead of 02:30.
    let spanning = r#"{time: {from: "02:30", to: "04:00", tz: Europe/Berlin}}"#;
    assert!(holds(spanning, &at("2025-03-30T01:00:00Z")));
    assert!(!holds(spanning, &at("2025-03-30T00:59:59Z")));
    // The day before, 02:30 CET is 01:30 UTC.
    assert!(holds(skipped, &at("2025-03-29T01:30:00Z")));
    // 2025-10-26: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice and matches twice.
    assert!(holds(skipped, &at("2025-10-26T00:30:00Z"))); // 02:30 CEST
    assert!(holds(skipped, &at("2025-10-26T01:30:00Z"))); // 02:30 CET
    assert!(!holds(skipped, &at("2025-10-26T02:00:00Z"))); // 03:00 CET
}

#[test]
fn all_conditions_must_hold() {
    let cond = "{tools: true, plan: [free], input_tokens: {gte: 500}}";
    let all = RuleContext {
        tools: true,
        plan: Some("free"),
        ..ctx()
    };
    assert!(holds(cond, &all));
    assert!(!holds(
        cond,
        &RuleContext {
            tools: false,
            ..all
        }
    ));
    assert!(!holds(cond, &RuleContext { plan: None, ..all }));
    assert!(!holds(
        cond,
        &RuleContext {
            est_input_tokens: 10,
            ..all
        }
    ));
}

#[test]
fn first_match_wins() {
    let r = rules(
        "
- {name: tools, when: {tools: true}, then: {model: a}}
- {name: long, when: {input_tokens: {gte: 500}}, then: {model: b}}
- {name: any, then: {model: c}}
",
    );
    let both = RuleContext {
        tools: true,
        ..ctx()
    };
    let (i, rule) = first_match(&r, &both).unwrap();
    assert_eq!((i, rule.name.as_deref()), (0, Some("tools")));
    assert_eq!(rule.then, Action::Model("a".into()));
    assert_eq!(hit(&r, &ctx()), Some(1));
    let short = RuleContext {
        est_input_tokens: 1,
        ..ctx()
    };
    assert_eq!(hit(&r, &short), Some(2));
}

#[test]
fn no_match_is_none() {
    let r = rules(
        "
- {when: {tools: true}, then: {model: a}}
- {when: {plan: [free]}, then: {model: b}}
",
    );
    assert_eq!(hit(&r, &ctx()), None);
    assert_eq!(hit(&[], &ctx()), None);
}

const FULL: &str = r#"
- name: long-prompts
  when:
    input_tokens: {gte: 100000, lt: 1000000}
    tools: true
    json: false
    plan: [free, trial]
    metadata: {tier: batch, team: ml}
    time: {from: "22:00", to: "06:00", tz: Europe/Berlin, days: [mon, tue, wed, thu, fri]}
    monthly_spend_pct: {gte: 80}
  then: {model: cheap}
- when: {time: {from: "09:00", to: "17:00", tz: UTC}}
  then:
    targets:
      - {provider: openai, model: gpt-4o-mini}
      - {provider: claude, model: claude-haiku-4-5, weight: 3}
- then: {model: fallback-model}
"#;

#[test]
fn yaml_round_trip() {
    let parsed = rules(FULL);
    assert_eq!(parsed.len(), 3);
    let w = &parsed[0].when;
    assert_eq!(w.input_tokens.and_then(|b| b.gte), Some(100_000));
    assert_eq!(
        w.plan.as_deref(),
        Some(&["free".to_string(), "trial".into()][..])
    );
    assert_eq!(
        w.metadata.iter().collect::<Vec<_>>(),
        [("team", "ml"), ("tier", "batch")]
    );
    let window = w.time.as_ref().unwrap();
    assert_eq!(
        window.time_zone().and_then(|z| z.iana_name()),
        Some("Europe/Berlin")
    );
    assert_eq!(window.spec().days.as_ref().map(Vec::len), Some(5));
    assert_eq!(w.monthly_spend_pct.and_then(|b| b.gte), Some(80.0));
    let Action::Targets(ts) = &parsed[1].then else {
        panic!("expected targets");
    };
    assert_eq!((ts.len(), ts[0].weight, ts[1].weight), (2, 1, 3));

    let yaml = serde_yaml::to_string(&parsed).unwrap();
    let again: Vec<Rule> = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(again, parsed);
    // Empty parts are left out, defaults too.
    assert!(
        !yaml.contains("null") && !yaml.contains("weight: 1"),
        "{yaml}"
    );
    assert_eq!(yaml.matches("when:").count(), 2, "{yaml}");

    let json = serde_json::to_value(&parsed).unwrap();
    assert_eq!(
        json[2],
        serde_json::json!({"then": {"model": "fallback-model"}})
    );
    assert_eq!(json[0]["when"]["metadata"]["tier"], "batch");
    let from_json: Vec<Rule> = serde_json::from_value(json).unwrap();
    assert_eq!(from_json, parsed);
}

#[test]
fn unknown_or_ambiguous_fields_are_rejected() {
    let parse = |y: &str| serde_yaml::from_str::<Vec<Rule>>(y).map(|_| ());
    assert!(parse("- {when: {tool: true}, then: {model: a}}").is_err());
    assert!(parse("- {when: {}, then: {model: a}, extra: 1}").is_err());
    assert!(parse("- {then: {model: a, targets: []}}").is_err());
    assert!(parse("- {then: {route: a}}").is_err());
    assert!(parse("- {when: {input_tokens: {gt: 5}}, then: {model: a}}").is_err());
    assert!(
        parse(
            r#"- {when: {time: {from: "01:00", to: "02:00", tz: UTC, zone: x}}, then: {model: a}}"#
        )
        .is_err()
    );
    assert!(
        parse(r#"- {when: {time: {from: "01:00", to: "02:00", tz: UTC, days: [funday]}}, then: {model: a}}"#)
            .is_err()
    );
    assert!(parse("- {when: {}}").is_err());
}

#[test]
fn validation_names_the_field() {
    let cases = [
        (
            r#"[{then: {model: a}}, {then: {model: b}}, {when: {time: {from: "22:00", to: "06:00", tz: Europe/Berln}}, then: {model: c}}]"#,
            r#"rules[2].when.time.tz: unknown time zone "Europe/Berln""#,
        ),
        (
            r#"[{when: {time: {from: "24:00", to: "06:00", tz: UTC}}, then: {model: a}}]"#,
            r#"rules[0].when.time.from: invalid time "24:00": expected HH:MM from 00:00 to 23:59"#,
        ),
        (
            r#"[{when: {time: {from: "22:00", to: "6:00", tz: UTC}}, then: {model: a}}]"#,
            r#"rules[0].when.time.to: invalid time "6:00": expected HH:MM from 00:00 to 23:59"#,
        ),
        (
            r#"[{when: {time: {from: "10:60", to: "11:00", tz: UTC}}, then: {model: a}}]"#,
            r#"rules[0].when.time.from: invalid time "10:60": expected HH:MM from 00:00 to 23:59"#,
        ),
        (
            r#"[{when: {time: {from: "10:00", to: "10:00", tz: UTC}}, then: {model: a}}]"#,
            "rules[0].when.time.to: equals `from` (10:00): the window would be empty",
        ),
        (
            r#"[{when: {time: {from: "10:00", to: "11:00", tz: UTC, days: []}}, then: {model: a}}]"#,
            "rules[0].when.time.days: must not be empty (leave it out for every day)",
        ),
        (
            "[{when: {input_tokens: {gte: 100, lt: 100}}, then: {model: a}}]",
            "rules[0].when.input_tokens.lt: must be greater than `gte` (100), or nothing matches",
        ),
        (
            "[{when: {input_tokens: {}}, then: {model: a}}]",
            "rules[0].when.input_tokens: needs `gte`, `lt` or both",
        ),
        (
            "[{when: {monthly_spend_pct: {gte: 90, lt: 80}}, then: {model: a}}]",
            "rules[0].when.monthly_spend_pct.lt: must be greater than `gte` (90), or nothing matches",
        ),
        (
            "[{when: {monthly_spend_pct: {gte: .nan}}, then: {model: a}}]",
            "rules[0].when.monthly_spend_pct: must be a finite number",
        ),
        (
            "[{when: {plan: []}, then: {model: a}}]",
            "rules[0].when.plan: must name at least one plan",
        ),
        (
            r#"[{when: {plan: [free, ""]}, then: {model: a}}]"#,
            "rules[0].when.plan[1]: must not be empty",
        ),
        (
            "[{when: {metadata: {Tier: batch}}, then: {model: a}}]",
            r#"rules[0].when.metadata.Tier: invalid key "Tier": use a lower-case header-name token such as `tier` (the header is x-gateway-meta-<key>)"#,
        ),
        (
            r#"[{when: {metadata: {"my tier": batch}}, then: {model: a}}]"#,
            r#"rules[0].when.metadata.my tier: invalid key "my tier": use a lower-case header-name token such as `tier` (the header is x-gateway-meta-<key>)"#,
        ),
        (
            r#"[{when: {metadata: {tier: " batch"}}, then: {model: a}}]"#,
            r#"rules[0].when.metadata.tier: invalid value " batch": a header value, not empty, without surrounding spaces"#,
        ),
        (
            "[{then: {targets: []}}]",
            "rules[0].then.targets: needs at least one target",
        ),
        (
            r#"[{then: {targets: [{provider: a, model: b}, {provider: "", model: b}]}}]"#,
            "rules[0].then.targets[1].provider: must not be empty",
        ),
        (
            r#"[{then: {targets: [{provider: a, model: " "}]}}]"#,
            "rules[0].then.targets[0].model: must not be empty",
        ),
        (
            "[{then: {targets: [{provider: a, model: b, weight: 0}]}}]",
            "rules[0].then.targets[0].weight: must be at least 1",
        ),
        (
            r#"[{then: {model: ""}}]"#,
            "rules[0].then.model: must not be empty",
        ),
        (
            r#"[{name: "night shift", then: {model: a}}]"#,
            r#"rules[0].name: invalid rule name "night shift": use 1 to 64 letters, digits, `-`, `_` or `.`"#,
        ),
        (
            "[{name: x, then: {model: a}}, {name: x, then: {model: b}}]",
            r#"rules[1].name: rule "x" is defined twice"#,
        ),
    ];
    for (yaml, expected) in cases {
        assert_eq!(invalid(yaml), expected, "for {yaml}");
    }
}

#[test]
fn time_zone_is_parsed_once_when_read() {
    let r = when(r#"{time: {from: "01:00", to: "02:00", tz: europe/berlin}}"#);
    // Names are looked up without regard to case, in the bundled database.
    let tz = r[0].when.time.as_ref().and_then(TimeWindow::time_zone);
    assert_eq!(tz.and_then(|z| z.iana_name()), Some("Europe/Berlin"));
    // A window that did not parse never matches, even if validation was skipped.
    let bad: Vec<Rule> = serde_yaml::from_str(
        r#"[{when: {time: {from: "00:00", to: "23:59", tz: Nowhere/City}}, then: {model: a}}]"#,
    )
    .unwrap();
    assert_eq!(hit(&bad, &ctx()), None);
}

/// Random rules over a few conditions, and random requests.
fn arb_rule() -> impl Strategy<Value = Rule> {
    let bounds = (
        proptest::option::of(0u64..2000),
        proptest::option::of(0u64..2000),
    )
        .prop_map(|(gte, lt)| Bounds { gte, lt });
    let pct = (
        proptest::option::of(0.0f64..150.0),
        proptest::option::of(0.0f64..150.0),
    )
        .prop_map(|(gte, lt)| Bounds { gte, lt });
    let days = proptest::sample::subsequence(
        vec![
            Day::Mon,
            Day::Tue,
            Day::Wed,
            Day::Thu,
            Day::Fri,
            Day::Sat,
            Day::Sun,
        ],
        1..7,
    );
    let zones = proptest::sample::select(vec!["UTC", "Asia/Tokyo", "Europe/Berlin"]);
    let window =
        (0u16..1440, 0u16..1440, zones, proptest::option::of(days)).prop_map(|(f, t, tz, days)| {
            TimeWindow::new(TimeWindowSpec {
                from: format!("{:02}:{:02}", f / 60, f % 60),
                to: format!("{:02}:{:02}", t / 60, t % 60),
                tz: tz.into(),
                days,
            })
        });
    (
        proptest::option::of(bounds),
        proptest::option::of(any::<bool>()),
        proptest::option::of(any::<bool>()),
        proptest::option::of(proptest::sample::subsequence(
            vec!["free", "pro", "team"],
            0..3,
        )),
        proptest::option::of("[a-c]"),
        proptest::option::of(window),
        proptest::option::of(pct),
    )
        .prop_map(|(tokens, tools, json, plan, meta, time, spend)| Rule {
            name: None,
            when: Match {
                input_tokens: tokens,
                tools,
                json,
                plan: plan.map(|p| p.into_iter().map(String::from).collect()),
                metadata: meta
                    .map(|v| BTreeMap::from([("tier".to_string(), v)]))
                    .unwrap_or_default()
                    .into(),
                time,
                monthly_spend_pct: spend,
            },
            then: Action::Model("m".into()),
        })
}

/// The semantics written out plainly, from the specs as written (zones looked up again, times
/// compared as `jiff::civil::Time`), to check the compiled matcher against.
fn oracle(m: &Match, ctx: &RuleContext<'_>) -> bool {
    let within =
        |b: &Bounds<f64>, v: f64| b.gte.is_none_or(|g| v >= g) && b.lt.is_none_or(|l| v < l);
    if let Some(b) = &m.input_tokens
        && !(b.gte.is_none_or(|g| ctx.est_input_tokens >= g)
            && b.lt.is_none_or(|l| ctx.est_input_tokens < l))
    {
        return false;
    }
    if m.tools.is_some_and(|t| t != ctx.tools) || m.json.is_some_and(|j| j != ctx.json) {
        return false;
    }
    if let Some(plans) = &m.plan
        && !plans.iter().any(|p| Some(p.as_str()) == ctx.plan)
    {
        return false;
    }
    for (k, v) in m.metadata.iter() {
        if ctx.metadata.get(&format!("x-gateway-meta-{k}")) != Some(v) {
            return false;
        }
    }
    if let Some(b) = &m.monthly_spend_pct {
        match ctx.monthly_spend_pct {
            Some(p) if within(b, p) => {}
            _ => return false,
        }
    }
    if let Some(w) = &m.time {
        let spec = w.spec();
        let from: jiff::civil::Time = spec.from.parse().unwrap();
        let to: jiff::civil::Time = spec.to.parse().unwrap();
        let local = ctx.now.in_tz(&spec.tz).unwrap();
        let t = local
            .time()
            .with()
            .second(0)
            .subsec_nanosecond(0)
            .build()
            .unwrap();
        let day = if from == to {
            return false;
        } else if from < to {
            if t < from || t >= to {
                return false;
            }
            local.date()
        } else if t >= from {
            local.date()
        } else if t < to {
            local.date().yesterday().unwrap()
        } else {
            return false;
        };
        let name = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
            [day.weekday().to_monday_zero_offset() as usize];
        if let Some(days) = &spec.days
            && !days
                .iter()
                .any(|d| serde_json::to_value(d).unwrap() == name)
        {
            return false;
        }
    }
    true
}

proptest! {
    #[test]
    fn first_match_is_the_lowest_matching_index(
        rules in proptest::collection::vec(arb_rule(), 0..8),
        tokens in 0u64..2500,
        tools: bool,
        json: bool,
        plan in proptest::option::of(proptest::sample::select(vec!["free", "pro", "team", "other"])),
        tier in proptest::option::of(proptest::sample::select(vec!["a", "b", "c", "d"])),
        secs in 0i64..(400 * 86_400),
        spend in proptest::option::of(-10.0f64..200.0),
    ) {
        let lookup: Vec<(&str, &str)> = tier.map(|t| ("x-gateway-meta-tier", t)).into_iter().collect();
        let ctx = RuleContext {
            est_input_tokens: tokens,
            tools,
            json,
            plan,
            metadata: &lookup,
            now: Timestamp::from_second(1_735_689_600 + secs).unwrap(),
            monthly_spend_pct: spend,
        };
        let got = first_match(&rules, &ctx).map(|(i, _)| i);
        let want = rules.iter().position(|r| oracle(&r.when, &ctx));
        prop_assert_eq!(got, want);
    }
}
