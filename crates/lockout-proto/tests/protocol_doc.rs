//! `docs/protocol.md` and the code never drift: every event type, notice kind, service op,
//! policy field and dead-letter reason that `lockout-proto` defines is listed in the
//! document's table of that name, and every name those tables list exists in the code.

use std::collections::BTreeSet;
use std::path::Path;

use lockout_proto::error::RejectReason;
use lockout_proto::event::EventKind;
use lockout_proto::{command, notice, Policy};

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/protocol.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The backticked names in the first column of the first table under `### <heading>`.
fn table(doc: &str, heading: &str) -> BTreeSet<String> {
    let start = doc
        .lines()
        .position(|l| l.trim() == format!("### {heading}"))
        .unwrap_or_else(|| panic!("docs/protocol.md has no heading \"### {heading}\""));
    let mut names = BTreeSet::new();
    let rows = doc
        .lines()
        .skip(start + 1)
        .take_while(|l| !l.starts_with('#'))
        .skip_while(|l| !l.trim_start().starts_with('|'))
        .take_while(|l| l.trim_start().starts_with('|'));
    for line in rows {
        let Some(row) = line.trim().strip_prefix('|') else { continue };
        let first = row.split('|').next().unwrap_or("").trim();
        if let Some(name) = first.strip_prefix('`').and_then(|n| n.strip_suffix('`')) {
            assert!(!names.contains(name), "{heading}: `{name}` is listed twice");
            names.insert(name.to_owned());
        }
    }
    assert!(!names.is_empty(), "the table under \"### {heading}\" lists no `name`");
    names
}

fn set<I: IntoIterator<Item = S>, S: Into<String>>(items: I) -> BTreeSet<String> {
    items.into_iter().map(Into::into).collect()
}

#[test]
fn the_protocol_document_lists_exactly_what_the_code_defines() {
    let doc = doc();
    let policy_fields = match serde_json::to_value(Policy::default()).unwrap() {
        serde_json::Value::Object(m) => set(m.keys().cloned()),
        other => panic!("a policy is an object, not {other}"),
    };
    let cases = [
        ("Event types", set(EventKind::all().map(EventKind::as_str))),
        ("Notice kinds", set(notice::KINDS)),
        ("Service operations", set(command::OPS)),
        ("Policy fields", policy_fields),
        ("Dead-letter reasons", set(RejectReason::all().map(RejectReason::as_str))),
    ];
    for (heading, code) in cases {
        let documented = table(&doc, heading);
        let missing: Vec<_> = code.difference(&documented).collect();
        let unknown: Vec<_> = documented.difference(&code).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "{heading}: defined in the code but not in docs/protocol.md: {missing:?}; \
             in docs/protocol.md but not in the code: {unknown:?}"
        );
    }
}

#[test]
fn the_table_reader_sees_a_drift() {
    let doc = "### Notice kinds\n\nText.\n\n| kind | fields |\n|---|---|\n| `locked` | … |\n| `unlocked` | … |\n\n\
               | `other_table` | |\n## Next\n| `x` | |";
    assert_eq!(table(doc, "Notice kinds"), set(["locked", "unlocked"]));
    assert_ne!(table(doc, "Notice kinds"), set(notice::KINDS), "mfa_reset is missing, and it shows");
}
