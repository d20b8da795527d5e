//! Conformance with the Matrix spec's own definitions (v1.19 OpenAPI, in `tests/spec/`).

use std::collections::BTreeSet;

use serde_json::Value;

/// Routes Vouch serves on purpose that the client-server OpenAPI does not define, and why.
const DOCUMENTED_EXTRAS: &[(&str, &str)] = &[
    (
        "/_vouch/",
        "Vouch's own pages: the email link page and the SMS submit_url (docs/EMAIL.md, docs/SMS.md)",
    ),
    (
        "/_synapse/admin/",
        "Synapse-compatible admin API (docs/OPERATIONS.md)",
    ),
    (
        "/_matrix/key/v2/server",
        "server-server API: the key that signs unbind requests (docs/IDENTITY_SERVERS.md)",
    ),
    (
        "/oauth2/",
        "OAuth 2.0 endpoints, found through auth_metadata; their RFCs define them (docs/OAUTH.md)",
    ),
    (
        "/.well-known/openid-configuration",
        "OpenID Connect discovery of the same metadata, which Synapse re-serves (docs/OAUTH.md)",
    ),
    (
        "/fallback/web",
        "UIA fallback pages: specified in prose (client-server API, 'Fallback'), not in the OpenAPI; POST is the page's own form",
    ),
];

/// `{userId}`, `{user_id}` … become `{}`.
fn normalise(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push_str("{}");
            }
            '}' => in_param = false,
            c if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn every_route_vouch_serves_is_in_the_spec_or_documented() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/spec/client-server-api.json"
    ))
    .unwrap();
    let spec: Value = serde_json::from_str(&text).unwrap();
    let mut defined = BTreeSet::new();
    for (path, ops) in spec["paths"].as_object().unwrap() {
        for method in ops.as_object().unwrap().keys() {
            defined.insert((method.to_uppercase(), normalise(path)));
        }
    }
    let mut missing = Vec::new();
    let table = vouch_api::router::route_table();
    assert!(
        table.len() > 60,
        "the route table is complete: {}",
        table.len()
    );
    for (method, path) in &table {
        if DOCUMENTED_EXTRAS.iter().any(|(p, _)| path.contains(p)) {
            continue;
        }
        // r0 paths are the pre-v1.1 names of the v3 ones; unstable paths are ruma's MSC
        // aliases of stable endpoints. Both must have a stable, defined counterpart.
        let stable = path.replace("/client/r0/", "/client/v3/");
        let stable = match stable.find("/unstable/") {
            Some(_) => table
                .iter()
                .filter(|(m, p)| m == method && !p.contains("/unstable/") && !p.contains("/r0/"))
                .map(|(_, p)| p.clone())
                .find(|p| path.rsplit('/').next() == p.rsplit('/').next())
                .unwrap_or(stable),
            None => stable,
        };
        let ours = normalise(&stable);
        let matches = |(m, spec_path): &(String, String)| {
            let (a, b): (Vec<&str>, Vec<&str>) =
                (spec_path.split('/').collect(), ours.split('/').collect());
            // A spec parameter matches any one segment (`/profile/{userId}/{keyName}` covers
            // `/profile/{}/displayname`); a parameter of ours only matches a parameter.
            m == method.as_str()
                && a.len() == b.len()
                && a.iter().zip(&b).all(|(x, y)| x == y || *x == "{}")
        };
        if !defined.iter().any(matches) {
            missing.push(format!("{method} {path}"));
        }
    }
    assert!(
        missing.is_empty(),
        "routes neither in the spec nor documented as Vouch's own: {missing:#?}"
    );
}
