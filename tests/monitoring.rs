//! The chart's alert rules and dashboard, checked offline: `promtool test rules` runs a firing and
//! a quiet case of every alert on synthetic series, and every query parses. (Their queries are
//! run against a real Prometheus scraping the operator in
//! `operator_schedules::gitops_tools_and_prometheus_read_each_state_of_the_real_objects`.)

mod operator_support;

use operator_support::monitoring::*;

#[test]
fn promtool_tests_every_alert_firing_and_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let spec = rendered_rules(&[]);
    std::fs::write(dir.path().join("rules.yaml"), rules_file(&spec)).unwrap();
    let tests = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/monitoring/alerts_test.yaml"),
    )
    .unwrap();
    std::fs::write(dir.path().join("alerts_test.yaml"), &tests).unwrap();
    let checked = promtool(dir.path(), &["check", "rules", "rules.yaml"]);
    let names: Vec<String> = alerts().into_iter().map(|(n, _)| n).collect();
    assert!(
        checked.contains(&format!("SUCCESS: {} rules found", names.len())),
        "{checked}"
    );
    // The six alerts the on-call person needs, and each tested both ways.
    for wanted in [
        "OutboundDeliveryFailed",
        "OutboundDestinationNotReady",
        "OutboundScheduleMissedRun",
        "OutboundDeliveryOverdue",
        "OutboundUploadStalled",
        "OutboundNoLeader",
    ] {
        assert!(names.iter().any(|n| n == wanted), "{wanted} in {names:?}");
    }
    let cases: serde_yaml::Value = serde_yaml::from_str(&tests).unwrap();
    for name in &names {
        let evals: Vec<&serde_yaml::Value> = cases["tests"]
            .as_sequence()
            .unwrap()
            .iter()
            .flat_map(|t| t["alert_rule_test"].as_sequence().unwrap().iter())
            .filter(|a| a["alertname"].as_str() == Some(name))
            .collect();
        let firing = evals
            .iter()
            .any(|a| a["exp_alerts"].as_sequence().is_some_and(|e| !e.is_empty()));
        let quiet = evals
            .iter()
            .any(|a| a["exp_alerts"].as_sequence().is_some_and(|e| e.is_empty()));
        assert!(firing && quiet, "{name}: a firing and a quiet case");
    }
    let out = promtool(dir.path(), &["test", "rules", "alerts_test.yaml"]);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The runbook each alert links to exists in the README.
#[test]
fn every_alert_has_a_runbook_in_the_readme() {
    let readme =
        std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
            .unwrap();
    for (name, _) in alerts() {
        assert!(
            readme.contains(&format!("#### {name}")),
            "README has no runbook heading for {name}"
        );
    }
}

/// Every panel has a query, the five views the issue names are there, and every query (with
/// Grafana's variables as Grafana fills them) parses: promtool checks them as recording rules.
#[test]
fn every_dashboard_query_parses() {
    let queries = dashboard_queries(".*", "1m");
    let titles: Vec<&str> = queries.iter().map(|(t, _)| t.as_str()).collect();
    for wanted in [
        "Deliveries by phase",
        "Bytes per second per destination",
        "Time since the last success per destination",
        "Failed deliveries by reason",
        "Probes by reason",
    ] {
        assert!(
            titles.iter().any(|t| t.starts_with(wanted)),
            "{wanted} in {titles:?}"
        );
    }
    for panel in dashboard()["panels"].as_array().unwrap() {
        assert!(
            panel["targets"].as_array().is_some_and(|t| !t.is_empty()),
            "panel {} has no query",
            panel["title"]
        );
    }
    let rules: Vec<serde_json::Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| serde_json::json!({"record": format!("outbound:panel_{i}"), "expr": expr}))
        .collect();
    let file = serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]});
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("panels.yaml"),
        serde_yaml::to_string(&file).unwrap(),
    )
    .unwrap();
    let out = promtool(dir.path(), &["check", "rules", "panels.yaml"]);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
}

#[test]
fn selectors_are_found_in_a_query() {
    assert_eq!(
        selectors(
            "sum by (a) (rate(outbound_x_total{namespace=~\".*\"}[1m])) or outbound_y unless outbound_x_total{namespace=~\".*\"}"
        ),
        vec!["outbound_x_total{namespace=~\".*\"}", "outbound_y"]
    );
}
