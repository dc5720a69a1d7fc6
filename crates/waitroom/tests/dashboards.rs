//! The Grafana dashboard and the Prometheus rules under `deploy/` against a running node, so they
//! cannot drift from `/metrics`:
//! - `deploy/grafana/waitroom.json` is a dashboard Grafana can import: every panel but the rows
//!   has the `${datasource}` data source and queries, ids are unique, the grid fits 24 columns,
//!   every `$variable` the queries use is defined, and it shows every family `/metrics` serves.
//! - Every `waitroom_*` series the dashboard, `deploy/prometheus/waitroom-rules.yml` and its unit
//!   tests (`waitroom-rules.test.yml`) name is one the node serves, with the suffix its type takes
//!   (`_total` for counters, `_bucket`/`_sum`/`_count` for histograms, none for gauges), and
//!   selectors use only labels the series carry (`route` and `method` values from the fixed sets).
//!
//! PromQL syntax and the alerts' behaviour are checked by promtool (`deploy/check`, run by
//! scripts/test).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use common::TestServer;
use serde_json::{Value, json};

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];
/// Variables Grafana defines itself.
const GRAFANA_VARIABLES: [&str; 4] = ["__rate_interval", "__interval", "__range", "__interval_ms"];

fn read_deploy(path: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "..", "deploy", path]
        .iter()
        .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// What `/metrics` serves: each family's type, and the label names seen on its samples.
struct Served {
    types: BTreeMap<String, String>,
    labels: BTreeMap<String, BTreeSet<String>>,
}

impl Served {
    fn parse(text: &str) -> Self {
        let mut types = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("# TYPE name type");
                types.insert(name.to_string(), kind.to_string());
            }
        }
        let mut served = Served {
            types,
            labels: BTreeMap::new(),
        };
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            for selector in selectors(line) {
                let Some(family) = served.family(&selector.name) else {
                    continue;
                };
                let family = family.to_string();
                let seen = served.labels.entry(family).or_default();
                seen.extend(selector.matchers.into_iter().map(|m| m.label));
            }
        }
        served
    }

    /// The family a series name belongs to, if the name has the suffix the family's type takes.
    fn family(&self, series: &str) -> Option<&str> {
        let of_type = |family: &str, kind: &str| {
            self.types
                .get_key_value(family)
                .filter(|(_, k)| *k == kind)
                .map(|(name, _)| name.as_str())
        };
        let by_suffix = |suffixes: &[&str], kind: &str| {
            suffixes.iter().find_map(|suffix| {
                series
                    .strip_suffix(suffix)
                    .and_then(|base| of_type(base, kind))
            })
        };
        of_type(series, "gauge")
            .or_else(|| by_suffix(&["_total"], "counter"))
            .or_else(|| by_suffix(&["_bucket", "_sum", "_count"], "histogram"))
    }
}

/// One label matcher of a selector: `label op "value"`.
#[derive(Debug)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// `waitroom_name{matchers}` (the braces optional) found in an expression.
#[derive(Debug)]
struct Selector {
    name: String,
    matchers: Vec<Matcher>,
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Every `waitroom_…` series name in `text`, with its label matchers when braces follow it.
/// Quoted values may hold braces and commas (`route="/api/waiting-room/sessions/{id}"`).
fn selectors(text: &str) -> Vec<Selector> {
    let chars: Vec<char> = text.chars().collect();
    let prefix: Vec<char> = "waitroom_".chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = chars[i..].starts_with(&prefix) && (i == 0 || !is_name_char(chars[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let end = (i..chars.len())
            .find(|&j| !is_name_char(chars[j]))
            .unwrap_or(chars.len());
        let name: String = chars[i..end].iter().collect();
        let mut matchers = Vec::new();
        i = end;
        if chars.get(i) == Some(&'{') {
            let mut body = String::new();
            let mut quoted = false;
            i += 1;
            while i < chars.len() {
                let c = chars[i];
                if c == '\\' && quoted {
                    body.push(c);
                    body.push(chars.get(i + 1).copied().unwrap_or_default());
                    i += 2;
                    continue;
                }
                if c == '"' {
                    quoted = !quoted;
                } else if c == '}' && !quoted {
                    break;
                }
                body.push(c);
                i += 1;
            }
            matchers = parse_matchers(&body);
        }
        out.push(Selector { name, matchers });
    }
    out
}

fn parse_matchers(body: &str) -> Vec<Matcher> {
    let mut parts = Vec::new();
    let (mut current, mut quoted) = (String::new(), false);
    for c in body.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            ',' if !quoted => parts.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    parts.push(current);
    parts
        .iter()
        .map(|part| part.trim())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let at = part
                .find(['=', '!'])
                .unwrap_or_else(|| panic!("matcher without an operator: {part:?}"));
            let label = part[..at].trim().to_string();
            let rest = &part[at..];
            let op_len =
                if rest.starts_with("=~") || rest.starts_with("!=") || rest.starts_with("!~") {
                    2
                } else {
                    1
                };
            let value = rest[op_len..].trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or_else(|| panic!("unquoted value in {part:?}"));
            Matcher {
                label,
                op: rest[..op_len].to_string(),
                value: value.to_string(),
            }
        })
        .collect()
}

/// The PromQL of a rules or rule-test file: the values of `expr:`, `series:` and (expected
/// samples') `labels:` keys, inline or as block scalars. Prose (annotations) is left out.
fn yaml_expressions(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ");
        let indent = line.len() - line.trim_start().len();
        i += 1;
        let Some((key, value)) = trimmed.split_once(':') else {
            continue;
        };
        if !["expr", "series", "labels"].contains(&key) {
            continue;
        }
        let value = value.trim();
        if value.is_empty() {
            // `labels:` of an alert: a mapping of label values, not PromQL.
            continue;
        }
        if ["|", "|-", ">", ">-"].contains(&value) {
            let mut block = String::new();
            while i < lines.len()
                && (lines[i].trim().is_empty()
                    || lines[i].len() - lines[i].trim_start().len() > indent)
            {
                block.push_str(lines[i].trim());
                block.push('\n');
                i += 1;
            }
            out.push(block);
        } else {
            let unquoted = value
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(value);
            out.push(unquoted.to_string());
        }
    }
    out
}

/// Every panel, rows' collapsed panels included.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        out.push(panel);
        if let Some(nested) = panel["panels"].as_array() {
            out.extend(nested);
        }
    }
    out
}

/// The PromQL of the dashboard: panel targets and the query variables.
fn dashboard_expressions(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for panel in all_panels(dashboard) {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            if let Some(expr) = target["expr"].as_str() {
                out.push((format!("panel {title:?}"), expr.to_string()));
            }
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if variable["type"] == "query" {
            let name = variable["name"].as_str().unwrap_or("?");
            let query = variable["query"]["query"]
                .as_str()
                .or_else(|| variable["query"].as_str())
                .expect("a query variable's query");
            out.push((format!("variable ${name}"), query.to_string()));
        }
    }
    out
}

/// Problems with the series and labels `expr` uses.
fn check_expression(
    served: &Served,
    place: &str,
    expr: &str,
    used: &mut BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for selector in selectors(expr) {
        let Some(family) = served.family(&selector.name) else {
            problems.push(format!(
                "{place}: `{}` is not a series /metrics serves",
                selector.name
            ));
            continue;
        };
        used.insert(family.to_string());
        let carried = served.labels.get(family);
        for matcher in &selector.matchers {
            let label = matcher.label.as_str();
            let known = TARGET_LABELS.contains(&label)
                || (label == "le" && selector.name.ends_with("_bucket"))
                || carried.is_some_and(|labels| labels.contains(label));
            if !known {
                problems.push(format!(
                    "{place}: `{}` has no label `{label}` (served: {carried:?})",
                    selector.name
                ));
            }
            let fixed: Option<&[&str]> = match label {
                "route" => Some(&waitroom::metrics::ROUTES),
                "method" => Some(&waitroom::metrics::METHODS),
                _ => None,
            };
            if let Some(fixed) = fixed {
                // An equality's value, or each alternative of a plain `a|b` regex.
                let values: Vec<&str> = if matcher.op.contains('~') {
                    matcher.value.split('|').collect()
                } else {
                    vec![matcher.value.as_str()]
                };
                for value in values {
                    let literal = matcher.op.contains('~')
                        && value.chars().any(|c| "()[]*+?.^$\\".contains(c));
                    if !literal && !fixed.contains(&value) {
                        problems.push(format!(
                            "{place}: {label} {} {value:?} is none of {fixed:?}",
                            matcher.op
                        ));
                    }
                }
            }
        }
    }
    problems
}

async fn metrics_of_a_busy_node() -> String {
    let server = TestServer::start().await;
    // A room with one person inside and one waiting, a poll, a leave and the probes, so that the
    // per-room series and the request latencies carry samples.
    server.put_room("dash", json!({ "capacity": 1 })).await;
    let (status, first) = server.join("dash").await;
    assert_eq!(status, 201, "{first}");
    let (status, second) = server.join("dash").await;
    assert_eq!(status, 201, "{second}");
    let (status, view) = server.session(&common::id(&second)).await;
    assert_eq!(status, 200, "{view}");
    let (status, view) = server.leave(&common::id(&second)).await;
    assert_eq!(status, 200, "{view}");
    for path in ["/readyz", "/healthz", "/metrics"] {
        let response = server
            .client
            .get(server.url(path))
            .send()
            .await
            .expect(path);
        assert_eq!(response.status(), 200, "{path}");
    }
    let response = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let text = response.text().await.expect("metrics body");
    server.stop().await;
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_rules_use_only_served_series() {
    let served = Served::parse(&metrics_of_a_busy_node().await);
    for family in [
        "waitroom_ready",
        "waitroom_room_waiting",
        "waitroom_http_request_duration_seconds",
    ] {
        assert!(
            served.types.contains_key(family),
            "{family} in {:?}",
            served.types
        );
    }
    assert!(
        served.labels["waitroom_http_request_duration_seconds"].contains("route"),
        "{:?}",
        served.labels
    );

    let dashboard: Value = serde_json::from_str(&read_deploy("grafana/waitroom.json"))
        .expect("deploy/grafana/waitroom.json is JSON");
    let mut problems = Vec::new();
    let mut on_dashboard = BTreeSet::new();
    for (place, expr) in dashboard_expressions(&dashboard) {
        problems.extend(check_expression(&served, &place, &expr, &mut on_dashboard));
    }
    for family in served.types.keys() {
        if !on_dashboard.contains(family) {
            problems.push(format!("the dashboard shows no series of `{family}`"));
        }
    }

    let mut in_rules = BTreeSet::new();
    for file in [
        "prometheus/waitroom-rules.yml",
        "prometheus/waitroom-rules.test.yml",
    ] {
        let expressions = yaml_expressions(&read_deploy(file));
        assert!(expressions.len() > 10, "{file}: {expressions:?}");
        for expr in expressions {
            problems.extend(check_expression(&served, file, &expr, &mut in_rules));
        }
    }
    for family in [
        "waitroom_ready",
        "waitroom_applier_lag_milliseconds",
        "waitroom_room_active",
    ] {
        assert!(
            in_rules.contains(family),
            "the rules use {family}: {in_rules:?}"
        );
    }
    assert!(
        problems.is_empty(),
        "deploy/ is out of step with /metrics:\n{}",
        problems.join("\n")
    );
}

#[test]
fn dashboard_is_importable() {
    let text = read_deploy("grafana/waitroom.json");
    let dashboard: Value =
        serde_json::from_str(&text).expect("deploy/grafana/waitroom.json is JSON");
    for key in ["title", "uid"] {
        assert!(
            dashboard[key].as_str().is_some_and(|s| !s.is_empty()),
            "the dashboard has a {key}"
        );
    }
    assert!(dashboard["schemaVersion"].is_u64(), "schemaVersion");
    // The id is Grafana's own (per instance): an exported dashboard leaves it out or null.
    assert!(dashboard["id"].is_null(), "no instance-specific id");

    let variables = dashboard["templating"]["list"]
        .as_array()
        .expect("variables");
    let datasource = variables
        .iter()
        .find(|v| v["type"] == "datasource")
        .expect("a data source variable");
    assert_eq!(datasource["name"], "datasource");
    assert_eq!(datasource["query"], "prometheus");
    let expected_source = json!({ "type": "prometheus", "uid": "${datasource}" });
    let mut defined: BTreeSet<String> = GRAFANA_VARIABLES.iter().map(|v| v.to_string()).collect();
    let mut problems = Vec::new();
    for variable in variables {
        let name = variable["name"].as_str().expect("variable name");
        defined.insert(name.to_string());
        if variable["type"] == "query" && variable["datasource"] != expected_source {
            problems.push(format!("variable ${name} does not query ${{datasource}}"));
        }
    }

    let mut ids = BTreeSet::new();
    let mut queried = 0;
    // Grid cells (x, y) taken so far: panels must not overlap.
    let mut taken: BTreeMap<(u64, u64), String> = BTreeMap::new();
    for panel in all_panels(&dashboard) {
        let title = panel["title"].as_str().unwrap_or_default();
        if title.is_empty() {
            problems.push(format!("a panel without a title: {panel}"));
        }
        let id = panel["id"].as_u64().expect("panel id");
        if !ids.insert(id) {
            problems.push(format!("panel id {id} used twice"));
        }
        let grid = &panel["gridPos"];
        let (x, w, h) = (grid["x"].as_u64(), grid["w"].as_u64(), grid["h"].as_u64());
        match (x, w, h, grid["y"].as_u64()) {
            (Some(x), Some(w), Some(h), Some(y)) if w > 0 && h > 0 && x + w <= 24 => {
                for cell in (x..x + w).flat_map(|cx| (y..y + h).map(move |cy| (cx, cy))) {
                    if let Some(other) = taken.insert(cell, title.to_string()) {
                        problems.push(format!("panels {other:?} and {title:?} overlap"));
                        break;
                    }
                }
            }
            _ => problems.push(format!(
                "panel {title:?}: gridPos {grid} does not fit 24 columns"
            )),
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["datasource"] != expected_source {
            problems.push(format!(
                "panel {title:?}: data source {} is not ${{datasource}}",
                panel["datasource"]
            ));
        }
        let targets = panel["targets"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("panel {title:?} has no query"));
        }
        let mut ref_ids = BTreeSet::new();
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or_default();
            if expr.trim().is_empty() {
                problems.push(format!("panel {title:?}: a target without an expression"));
            }
            if !ref_ids.insert(target["refId"].as_str().unwrap_or_default()) {
                problems.push(format!(
                    "panel {title:?}: refId {} twice or missing",
                    target["refId"]
                ));
            }
            if !target["datasource"].is_null() && target["datasource"] != expected_source {
                problems.push(format!(
                    "panel {title:?}: a target's data source is not ${{datasource}}"
                ));
            }
            queried += 1;
        }
    }
    assert!(queried >= 20, "{queried} queries");

    // Every `$name` (or `${name}`) a query uses is a variable.
    for (place, expr) in dashboard_expressions(&dashboard) {
        for (i, _) in expr.match_indices('$') {
            let name: String = expr[i + 1..]
                .trim_start_matches('{')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !defined.contains(&name) {
                problems.push(format!("{place}: `${name}` is not a variable"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "deploy/grafana/waitroom.json:\n{}",
        problems.join("\n")
    );
}

#[test]
fn selectors_and_yaml_expressions_are_found() {
    let found = selectors(
        r#"sum(rate(waitroom_http_request_duration_seconds_count{route="/api/waiting-room/sessions/{id}", status=~"5.."}[5m])) / waitroom:x + waitroom_ready"#,
    );
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        found[0].name,
        "waitroom_http_request_duration_seconds_count"
    );
    assert_eq!(
        found[0].matchers[0].value,
        "/api/waiting-room/sessions/{id}"
    );
    assert_eq!(found[0].matchers[1].op, "=~");
    assert_eq!(found[1].name, "waitroom_ready");
    assert!(found[1].matchers.is_empty());
    assert!(selectors("waitroom:http_requests:rate5m not_waitroom_ready").is_empty());

    let yaml = "groups:\n  - rules:\n      - alert: A\n        expr: |\n          waitroom_ready\n            == 0\n        labels:\n          severity: warning\n        annotations:\n          summary: waitroom_nothing\n      - series: 'waitroom_room_active{room=\"r\"}'\n";
    assert_eq!(
        yaml_expressions(yaml),
        ["waitroom_ready\n== 0\n", "waitroom_room_active{room=\"r\"}"]
    );

    let served = Served::parse(
        "# TYPE waitroom_ready gauge\nwaitroom_ready 1\n# TYPE waitroom_log_gaps counter\nwaitroom_log_gaps_total 0\n# TYPE waitroom_snapshot_bytes histogram\nwaitroom_snapshot_bytes_bucket{le=\"1024.0\"} 0\n",
    );
    assert_eq!(served.family("waitroom_ready"), Some("waitroom_ready"));
    assert_eq!(
        served.family("waitroom_log_gaps_total"),
        Some("waitroom_log_gaps")
    );
    assert_eq!(
        served.family("waitroom_log_gaps"),
        None,
        "a counter's samples end in _total"
    );
    assert_eq!(
        served.family("waitroom_snapshot_bytes_count"),
        Some("waitroom_snapshot_bytes")
    );
    assert_eq!(served.family("waitroom_snapshot_bytes"), None);
    assert_eq!(served.family("waitroom_ready_total"), None);
    let mut used = BTreeSet::new();
    let problems = check_expression(
        &served,
        "t",
        r#"waitroom_ready{job="w", room="r"} + waitroom_log_gaps + waitroom_snapshot_bytes_bucket{le="1"}"#,
        &mut used,
    );
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0].contains("no label `room`"), "{problems:?}");
    assert!(
        problems[1].contains("`waitroom_log_gaps` is not a series"),
        "{problems:?}"
    );
}
