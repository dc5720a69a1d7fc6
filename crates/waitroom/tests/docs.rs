//! The documentation in `docs/` against a running node, so the docs cannot drift from the code:
//! - `docs/api.md` has a `### METHOD /path` section for every operation of the OpenAPI document
//!   the node serves, naming each status and parameter the document gives it; a `### Name`
//!   section under "Schemas" for every schema, naming each field and enum value; and it names no
//!   path (under the API's roots) and has no operation section that the node does not serve.
//! - `docs/operations.md` names every metric family `/metrics` serves, and no other `waitroom_*`
//!   series.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use common::TestServer;
use serde_json::{Value, json};

/// Routes the node serves that its OpenAPI document does not describe (the document itself, and
/// the waiting page's assets); each is requested below to check it is served.
const SERVED_BEYOND_THE_DOCUMENT: [(&str, &str, &str); 2] = [
    (
        "GET",
        "/api/waiting-room/openapi.json",
        "/api/waiting-room/openapi.json",
    ),
    ("GET", "/assets/{file}", "/assets/room.js"),
];

const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"];

fn read_doc(name: &str) -> String {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "..", "docs", name]
        .iter()
        .collect();
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One `#`-heading of a Markdown file and the text under it, up to the next heading.
struct Section {
    /// The enclosing `## ` heading.
    chapter: String,
    heading: String,
    level: usize,
    body: String,
}

fn sections(markdown: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut chapter = String::new();
    let mut in_code = false;
    for line in markdown.lines() {
        if line.starts_with("```") {
            in_code = !in_code;
        }
        let level = line.chars().take_while(|&c| c == '#').count();
        if !in_code && level > 0 && line[level..].starts_with(' ') {
            let heading = line[level..].trim().to_string();
            if level == 2 {
                chapter = heading.clone();
            }
            out.push(Section {
                chapter: chapter.clone(),
                heading,
                level,
                body: String::new(),
            });
        } else if let Some(section) = out.last_mut() {
            section.body.push_str(line);
            section.body.push('\n');
        }
    }
    out
}

/// `GET /api/waiting-room/rooms` → `("GET", "/api/waiting-room/rooms")`.
fn operation_heading(heading: &str) -> Option<(String, String)> {
    let (method, path) = heading.split_once(' ')?;
    (METHODS.contains(&method) && path.starts_with('/') && !path.contains(' '))
        .then(|| (method.to_string(), path.to_string()))
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_.{}$:/".contains(c)
}

/// Whether a concrete or templated `path` is one of `template`'s paths: each `{param}` of the
/// template stands for one run of id characters (a concrete id, `{id}`, `$ID`).
fn matches(template: &str, path: &str) -> bool {
    let (mut template, mut path) = (template, path);
    loop {
        let Some(open) = template.find('{') else {
            return template == path;
        };
        let Some(rest) = path.strip_prefix(&template[..open]) else {
            return false;
        };
        let close = open + template[open..].find('}').expect("closed parameter");
        template = &template[close + 1..];
        let taken = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || "-_.{}$".contains(c)))
            .unwrap_or(rest.len());
        if taken == 0 {
            return false;
        }
        path = &rest[taken..];
    }
}

/// Every path-like word of `text` that starts at a `/` (not inside another word or URL).
fn paths_in(text: &str) -> Vec<String> {
    let text = text.replace("http://localhost:8080", " ");
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    for (i, &c) in chars.iter().enumerate() {
        if c != '/' || (i > 0 && is_path_char(chars[i - 1])) {
            continue;
        }
        let word: String = chars[i..]
            .iter()
            .take_while(|&&c| is_path_char(c))
            .collect();
        out.push(word.trim_end_matches(['.', ':']).to_string());
    }
    out
}

async fn get(server: &TestServer, path: &str) -> (u16, String) {
    let response = server
        .client
        .get(server.url(path))
        .send()
        .await
        .expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_md_covers_the_served_openapi_document() {
    let server = TestServer::start().await;
    let (status, text) = get(&server, "/api/waiting-room/openapi.json").await;
    assert_eq!(status, 200, "{text}");
    let document: Value = serde_json::from_str(&text).expect("the document is JSON");
    for (_, _, concrete) in SERVED_BEYOND_THE_DOCUMENT {
        let (status, body) = get(&server, concrete).await;
        assert_eq!(status, 200, "{concrete} is served: {body}");
    }
    server.stop().await;

    let api_md = read_doc("api.md");
    let sections = sections(&api_md);
    let mut problems = Vec::new();

    // Operations: the document's, each with its section, statuses and parameters.
    let mut operations: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            operations.insert((method.to_uppercase(), path.clone()), operation);
        }
    }
    assert!(operations.len() >= 10, "{operations:?}");
    let documented: BTreeMap<(String, String), &Section> = sections
        .iter()
        .filter(|s| s.level == 3)
        .filter_map(|s| operation_heading(&s.heading).map(|op| (op, s)))
        .collect();
    for ((method, path), operation) in &operations {
        let Some(section) = documented.get(&(method.clone(), path.clone())) else {
            problems.push(format!("no section `### {method} {path}`"));
            continue;
        };
        for status in operation["responses"]
            .as_object()
            .expect("responses")
            .keys()
        {
            if !section.body.contains(&format!("`{status}`")) {
                problems.push(format!("{method} {path}: status `{status}` not described"));
            }
        }
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let name = parameter["name"].as_str().expect("parameter name");
            if parameter["in"] != "path" && !section.body.contains(name) {
                problems.push(format!("{method} {path}: parameter {name} not described"));
            }
        }
    }
    let served_beyond: BTreeSet<(String, String)> = SERVED_BEYOND_THE_DOCUMENT
        .iter()
        .map(|(method, path, _)| (method.to_string(), path.to_string()))
        .collect();
    for (method, path) in documented.keys() {
        let key = (method.clone(), path.clone());
        if !operations.contains_key(&key) && !served_beyond.contains(&key) {
            problems.push(format!(
                "`### {method} {path}` is not an operation of the OpenAPI document"
            ));
        }
    }

    // Paths named anywhere: under the API's roots, each must be a route the node serves.
    let templates: Vec<&str> = operations
        .keys()
        .map(|(_, path)| path.as_str())
        .chain(SERVED_BEYOND_THE_DOCUMENT.iter().map(|(_, path, _)| *path))
        .collect();
    let roots: BTreeSet<&str> = templates
        .iter()
        .filter_map(|t| t.split('/').nth(1))
        .collect();
    for path in paths_in(&api_md) {
        let root = path.split('/').nth(1).unwrap_or("");
        if roots.contains(root) && !templates.iter().any(|t| matches(t, &path)) {
            problems.push(format!("names {path}, which the node does not serve"));
        }
    }

    // Schemas: a section each under "Schemas", naming every field and enum value.
    let schemas = document["components"]["schemas"]
        .as_object()
        .expect("schemas");
    assert!(schemas.len() >= 8, "{schemas:?}");
    let schema_sections: BTreeMap<&str, &Section> = sections
        .iter()
        .filter(|s| s.level == 3 && s.chapter == "Schemas")
        .map(|s| (s.heading.as_str(), s))
        .collect();
    for (name, schema) in schemas {
        let Some(section) = schema_sections.get(name.as_str()) else {
            problems.push(format!("no section `### {name}` under `## Schemas`"));
            continue;
        };
        let fields = schema["properties"].as_object().into_iter().flatten();
        let values = schema["enum"].as_array().into_iter().flatten();
        for word in fields
            .map(|(field, _)| field.clone())
            .chain(values.map(|v| v.as_str().expect("string enum").to_string()))
        {
            if !section.body.contains(&format!("`{word}`")) {
                problems.push(format!("schema {name}: `{word}` not described"));
            }
        }
    }
    for heading in schema_sections.keys() {
        if !schemas.contains_key(*heading) {
            problems.push(format!(
                "`### {heading}` under Schemas is not a schema of the document"
            ));
        }
    }
    let schemes = document["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    for scheme in schemes.keys() {
        if !api_md.contains(&format!("`{scheme}`")) {
            problems.push(format!("security scheme `{scheme}` not described"));
        }
    }

    assert!(
        problems.is_empty(),
        "docs/api.md is out of step with the OpenAPI document:\n{}",
        problems.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_md_names_every_metric() {
    let server = TestServer::start().await;
    // A room and a session, so that the per-room series and request latencies are present.
    server.put_room("docs", json!({ "capacity": 1 })).await;
    let (status, view) = server.join("docs").await;
    assert_eq!(status, 201, "{view}");
    let (status, text) = get(&server, "/metrics").await;
    assert_eq!(status, 200, "{text}");
    server.stop().await;

    let families: BTreeSet<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .collect();
    for family in ["waitroom_ready", "waitroom_room_waiting"] {
        assert!(families.contains(family), "{family} in {families:?}");
    }
    let operations_md = read_doc("operations.md");
    let mut problems = Vec::new();
    for family in &families {
        let named = ["`", "_total`", "{"]
            .iter()
            .any(|end| operations_md.contains(&format!("`{family}{end}")));
        if !named {
            problems.push(format!("`{family}` is served but not described"));
        }
    }
    // Every `waitroom_…` series named (a family, or one of its samples) is served.
    for (i, _) in operations_md.match_indices("`waitroom_") {
        let name: String = operations_md[i + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                name.strip_suffix(suffix)
                    .filter(|base| families.contains(base))
            })
            .unwrap_or(&name);
        if !families.contains(family) {
            problems.push(format!("names `{name}`, which /metrics does not serve"));
        }
    }
    assert!(
        problems.is_empty(),
        "docs/operations.md is out of step with /metrics:\n{}",
        problems.join("\n")
    );
}

#[test]
fn path_matching() {
    let heartbeat = "/api/waiting-room/sessions/{id}:heartbeat";
    assert!(matches(
        heartbeat,
        "/api/waiting-room/sessions/wr_KOJrm2SR0KC48f9esWNct4s1uqM:heartbeat"
    ));
    assert!(matches(
        heartbeat,
        "/api/waiting-room/sessions/{sub}:heartbeat"
    ));
    assert!(!matches(heartbeat, "/api/waiting-room/sessions/x:beat"));
    assert!(!matches(heartbeat, "/api/waiting-room/sessions/:heartbeat"));
    assert!(!matches(
        "/api/waiting-room/rooms/{roomId}",
        "/api/waiting-room/rooms/a/b"
    ));
    assert!(matches("/healthz", "/healthz"));
    assert_eq!(
        paths_in("see `GET /healthz`, (http://localhost:8080/room/x.) and ../README.md or a/b"),
        ["/healthz", "/room/x"]
    );
    let parsed = sections("# T\n## A\n### GET /x\nbody `200`\n```\n### not a heading\n```\n");
    assert_eq!(parsed.len(), 3);
    assert_eq!(
        operation_heading(&parsed[2].heading),
        Some(("GET".into(), "/x".into()))
    );
    assert!(parsed[2].body.contains("not a heading"));
}
