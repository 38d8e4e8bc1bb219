//! The JSON Schemas in `schemas/`.
//!
//! Every schema file parses and carries the draft 2020-12 header, `$id`, `title` and
//! `description`; every golden vector has a schema and every schema a golden vector. The
//! `jsonschema` crate (draft 2020-12, formats asserted) checks that every golden JSON is valid
//! against its schema, that the schemas refuse the bad bodies the service refuses, and that the
//! README's `nats` examples send valid bodies; each schema lists exactly the fields the Rust
//! type writes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use lockout_proto::codec::Encoding;
use lockout_proto::event::{Event, EventKind};
use lockout_proto::{Subjects, Tenant, UserId};

const DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

fn schemas_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../schemas")
}

/// Every `schemas/<stem>.schema.json`, parsed, by stem.
fn schemas() -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(schemas_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".schema.json") {
            let text = std::fs::read_to_string(schemas_dir().join(&name)).unwrap();
            let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
            out.insert(stem.to_owned(), value);
        }
    }
    let stems: Vec<&str> = out.keys().map(String::as_str).collect();
    assert_eq!(stems, MESSAGES, "one schema file per message, named as in schemas/README.md");
    out
}

/// Every message of the protocol (`docs/protocol.md`), one schema file each (sorted by name).
const MESSAGES: [&str; 50] = [
    "event.attempt",
    "event.expired",
    "event.forget",
    "event.ip_block",
    "event.ip_expired",
    "event.ip_unblock",
    "event.lock",
    "event.mfa_reset",
    "event.password_reset",
    "event.policy",
    "event.unlock",
    "notice.ip_blocked",
    "notice.ip_unblocked",
    "notice.locked",
    "notice.mfa_reset",
    "notice.unlocked",
    "policy",
    "reply.digest",
    "reply.explain",
    "reply.health",
    "reply.ip_blocks",
    "reply.ip_status",
    "reply.ip_unblock",
    "reply.lock",
    "reply.locked",
    "reply.mfa_reset",
    "reply.password_reset",
    "reply.policy_get",
    "reply.policy_set",
    "reply.status",
    "reply.unlock",
    "reply.unlock_many",
    "request.digest",
    "request.explain",
    "request.health",
    "request.ip_blocks",
    "request.ip_status",
    "request.ip_unblock",
    "request.lock",
    "request.locked",
    "request.mfa_reset",
    "request.password_reset",
    "request.policy_get",
    "request.policy_set",
    "request.status",
    "request.unlock",
    "request.unlock_many",
    "source",
    "status",
    "write_reply",
];

/// Every golden vector's JSON, by name.
fn goldens() -> BTreeMap<String, Value> {
    let dir = schemas_dir().join("golden");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if let Some(stem) = name.strip_suffix(".json") {
            let text = std::fs::read_to_string(dir.join(&name)).unwrap();
            out.insert(stem.to_owned(), serde_json::from_str(&text).unwrap());
        }
    }
    assert!(!out.is_empty(), "no golden vectors in {}", dir.display());
    out
}

/// The schema of a golden vector: the longest dot-separated prefix of its name with a schema.
fn schema_of<'a>(schemas: &'a BTreeMap<String, Value>, golden: &str) -> Option<(&'a str, &'a Value)> {
    let parts: Vec<&str> = golden.split('.').collect();
    (1..=parts.len()).rev().find_map(|n| schemas.get_key_value(&parts[..n].join(".")).map(|(k, v)| (k.as_str(), v)))
}

/// Validates against the schema files, each reachable by its `$id` (their `$ref`s are
/// relative to it).
struct Validator<'a> {
    schemas: &'a BTreeMap<String, Value>,
}

impl Validator<'_> {
    fn errors(&self, schema: &Value, value: &Value) -> Vec<String> {
        let mut options =
            jsonschema::options().with_draft(jsonschema::Draft::Draft202012).should_validate_formats(true);
        for s in self.schemas.values() {
            let id = s["$id"].as_str().expect("every schema has an $id");
            options = options.with_resource(id, jsonschema::Resource::from_contents(s.clone()));
        }
        let validator =
            options.build(schema).unwrap_or_else(|e| panic!("schema {} does not compile: {e}", schema["$id"]));
        validator.iter_errors(value).map(|e| format!("{}: {e}", e.instance_path())).collect()
    }
}

#[test]
fn every_schema_parses_and_is_described() {
    let schemas = schemas();
    for (stem, schema) in &schemas {
        let file = format!("{stem}.schema.json");
        assert_eq!(schema["$schema"], DRAFT, "{file}");
        let id = schema["$id"].as_str().unwrap_or_else(|| panic!("{file} lacks $id"));
        assert!(id.starts_with("https://") && id.ends_with(&format!("/{file}")), "{file}: $id {id}");
        for key in ["title", "description"] {
            assert!(schema[key].as_str().is_some_and(|s| !s.is_empty()), "{file} lacks {key}");
        }
        // Every property says what it is, and every $ref names a schema file.
        if let Some(props) = schema["properties"].as_object() {
            for (name, prop) in props {
                assert!(
                    prop["description"].as_str().is_some_and(|s| !s.is_empty()),
                    "{file}: {name} lacks description"
                );
            }
        }
        let text = serde_json::to_string(schema).unwrap();
        for (i, _) in text.match_indices("\"$ref\":\"") {
            let rest = &text[i + 8..];
            let target = &rest[..rest.find('"').unwrap()];
            assert!(schemas_dir().join(target).is_file(), "{file}: $ref {target} does not exist");
        }
    }
    // $id values are unique.
    let ids: BTreeSet<&str> = schemas.values().map(|s| s["$id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), schemas.len());
}

#[test]
fn every_golden_has_a_schema_and_every_schema_a_golden() {
    let schemas = schemas();
    let mut covered = BTreeSet::new();
    for name in goldens().keys() {
        let (stem, _) = schema_of(&schemas, name).unwrap_or_else(|| panic!("golden {name} has no schema file"));
        covered.insert(stem.to_owned());
    }
    let uncovered: Vec<_> = schemas.keys().filter(|s| !covered.contains(*s)).collect();
    assert!(uncovered.is_empty(), "schemas without a golden vector: {uncovered:?}");
}

#[test]
fn golden_vectors_are_valid() {
    let schemas = schemas();
    let v = Validator { schemas: &schemas };
    for (name, golden) in goldens() {
        let (stem, schema) = schema_of(&schemas, &name).unwrap();
        let errors = v.errors(schema, &golden);
        assert!(errors.is_empty(), "golden {name} is invalid against {stem}.schema.json: {errors:#?}");
    }
}

/// The properties a schema lists at the top level, following `$ref` and `allOf`.
fn property_names(schemas: &BTreeMap<String, Value>, schema: &Value, out: &mut BTreeSet<String>) {
    if let Some(props) = schema["properties"].as_object() {
        out.extend(props.keys().cloned());
    }
    if let Some(r) = schema["$ref"].as_str() {
        property_names(schemas, &schemas[r.strip_suffix(".schema.json").unwrap()], out);
    }
    for sub in schema["allOf"].as_array().into_iter().flatten() {
        property_names(schemas, sub, out);
    }
}

/// The Rust types write every field (`null` for absent options), so each golden object's keys
/// are exactly its schema's properties; requests also list the optional JSON-only `tenant`.
#[test]
fn schemas_list_exactly_the_fields_of_the_types() {
    let schemas = schemas();
    for (name, golden) in goldens() {
        let (stem, schema) = schema_of(&schemas, &name).unwrap();
        let mut props = BTreeSet::new();
        property_names(&schemas, schema, &mut props);
        if stem.starts_with("request.") {
            assert!(props.remove("tenant"), "{stem} must list the optional `tenant`");
        }
        let keys: BTreeSet<String> = golden.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, props, "fields of golden {name} versus properties of {stem}.schema.json");
    }
}

enum Edit {
    Set(&'static str, Value),
    Remove(&'static str),
}

fn apply(mut value: Value, edit: &Edit) -> Value {
    match edit {
        Edit::Set(ptr, v) => {
            let (parent, key) = ptr.rsplit_once('/').unwrap();
            let obj = value.pointer_mut(parent).and_then(Value::as_object_mut).unwrap_or_else(|| panic!("no {parent}"));
            obj.insert(key.to_owned(), v.clone());
        }
        Edit::Remove(ptr) => {
            let (parent, key) = ptr.rsplit_once('/').unwrap();
            let removed = value.pointer_mut(parent).and_then(Value::as_object_mut).and_then(|o| o.remove(key));
            assert!(removed.is_some(), "nothing to remove at {ptr}");
        }
    }
    value
}

/// The subject an event golden travels on, with its kind from the golden's name.
fn event_subject(name: &str, golden: &Value) -> Option<String> {
    let kind = EventKind::parse(name.strip_prefix("event.")?.split('.').next()?)?;
    let s = Subjects::default();
    let tenant = Tenant::parse(golden["tenant"].as_str().unwrap()).unwrap();
    Some(match golden["user"].as_str() {
        Some(user) => s.user_event(&tenant, &UserId::parse(user).unwrap(), kind),
        None => s.tenant_event(&tenant, kind),
    })
}

/// Edits of golden vectors, and whether the schema accepts the result. For events the service
/// must agree (`Event::decode_checked` on the vector's own subject): the schemas neither refuse
/// what the projector accepts nor accept what it dead-letters.
#[test]
fn schemas_refuse_what_the_service_refuses() {
    use Edit::{Remove, Set};
    let long = |n: usize| Value::String("x".repeat(n));
    let cases: Vec<(&str, Edit, bool)> = vec![
        ("event.attempt.full", Set("/client", long(200)), true),
        ("event.attempt.full", Set("/client", long(201)), false),
        ("event.attempt.full", Set("/credential", long(64)), true),
        ("event.attempt.full", Set("/credential", long(65)), false),
        ("event.attempt.full", Set("/outcome", json!("maybe")), false),
        ("event.attempt.full", Set("/factor", json!("sms")), false),
        ("event.attempt.full", Set("/factor", Value::Null), true),
        ("event.attempt.full", Remove("/factor"), true),
        ("event.attempt.full", Set("/account", json!("robot")), false),
        ("event.attempt.full", Set("/account", Value::Null), true),
        ("event.attempt.full", Remove("/account"), true),
        ("event.attempt.full", Set("/source_ip", json!("203.0.113.256")), false),
        ("event.attempt.full", Set("/source_ip", json!("fe80::1")), true),
        ("event.attempt.full", Set("/tenant", json!("ac.me")), false),
        ("event.attempt.full", Set("/user", json!("")), false),
        ("event.attempt.full", Set("/at", json!(-1)), false),
        ("event.attempt.full", Set("/at", json!(1.5)), false),
        ("event.attempt.full", Set("/id", json!("not-a-uuid")), false),
        ("event.attempt.full", Remove("/source_ip"), false),
        ("event.attempt.full", Remove("/id"), false),
        ("event.attempt.full", Set("/added_later", json!(1)), true),
        ("event.attempt.minimal", Remove("/client"), true),
        ("event.lock", Set("/seconds", json!(0)), false),
        ("event.lock", Set("/seconds", json!(1)), true),
        ("event.lock", Set("/seconds", json!(4_294_967_296u64)), false),
        ("event.lock", Set("/seconds", Value::Null), true),
        ("event.lock", Set("/actor", json!("")), false),
        ("event.lock", Set("/actor", long(257)), false),
        ("event.unlock", Set("/reason", long(1024)), true),
        ("event.unlock", Set("/reason", long(1025)), false),
        ("event.mfa_reset", Remove("/actor"), false),
        ("event.expired", Set("/lock_event", json!(7)), false),
        ("event.policy", Set("/policy/lock_multiplier", json!(0)), false),
        ("event.policy", Set("/policy/max_failures", json!(4_294_967_296u64)), false),
        ("event.policy", Set("/policy/max_lock_seconds", json!(4_294_967_296u64)), true),
        ("event.policy", Set("/policy/max_failures", Value::Null), false),
        ("event.policy", Set("/policy/max_fialures", json!(3)), false),
        ("event.policy", Set("/policy", json!({})), true),
        ("event.policy", Set("/actor", json!("")), false),
        ("policy", Set("/reset_on_success", json!("yes")), false),
        ("request.locked", Set("/limit", json!(0)), false),
        ("request.locked", Set("/limit", json!(1001)), false),
        ("request.locked", Set("/limit", json!(1000)), true),
        ("request.status", Set("/tenant", json!("acme")), true),
        ("request.status", Set("/tenant", json!("a b")), false),
        ("request.status", Remove("/user"), false),
        ("request.lock", Set("/seconds", json!(0)), false),
        ("request.policy_set", Set("/policy/unknown", json!(true)), false),
        ("reply.policy_get", Remove("/max_failures"), false),
        ("policy", Remove("/max_failures"), true),
        ("write_reply", Remove("/event_id"), false),
        ("write_reply", Remove("/tenant"), false),
        ("reply.unlock", Set("/locked", json!("no")), false),
        ("reply.locked", Set("/users/0/failures", json!(-1)), false),
        ("reply.locked", Set("/next", Value::Null), true),
        ("notice.locked", Set("/sources/0/failures", json!(-1)), false),
        ("notice.locked", Set("/reason", Value::Null), false),
        ("notice.unlocked", Set("/how", json!("timeout")), false),
        ("notice.unlocked", Set("/actor", Value::Null), true),
    ];
    let schemas = schemas();
    let goldens = goldens();
    let v = Validator { schemas: &schemas };
    let mut wrong = Vec::new();
    for (name, edit, valid) in &cases {
        let golden = goldens.get(*name).unwrap_or_else(|| panic!("no golden {name}"));
        let (stem, schema) = schema_of(&schemas, name).unwrap();
        let edited = apply(golden.clone(), edit);
        let errors = v.errors(schema, &edited);
        if errors.is_empty() != *valid {
            wrong.push(format!("{stem} {}: {edited} -> {errors:?}", if *valid { "refuses" } else { "accepts" }));
        }
        if let Some(subject) = event_subject(name, golden) {
            let parsed = Subjects::default().parse_event(&subject).unwrap();
            let decoded = Event::decode_checked(&parsed, Encoding::Json, &serde_json::to_vec(&edited).unwrap());
            if decoded.is_ok() != *valid {
                wrong.push(format!("service {}: {edited} -> {decoded:?}", if *valid { "refuses" } else { "accepts" }));
            }
        }
    }
    assert!(wrong.is_empty(), "schema or service disagree with the table:\n{}", wrong.join("\n"));
}

/// The README's `nats` CLI examples (its block tagged `nats-examples`) and the sample notice
/// after them: every body is valid against the schema of its subject, an event decodes as the
/// service decodes it, and the notice is a valid `locked` notice.
#[test]
fn readme_nats_examples_send_valid_bodies() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md")).unwrap();
    let block: Vec<&str> = readme
        .lines()
        .skip_while(|l| l.trim() != "```sh nats-examples")
        .skip(1)
        .take_while(|l| l.trim() != "```")
        .filter(|l| l.starts_with("nats "))
        .collect();
    let schemas = schemas();
    let v = Validator { schemas: &schemas };
    let subjects = Subjects::default();
    let mut checked = BTreeSet::new();
    for line in &block {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (verb, subject) = (words[1], words[2].trim_matches('\''));
        let Some(body) = line.rfind(" '").map(|i| &line[i + 2..line.len() - 1]).filter(|b| b.starts_with('{')) else {
            continue;
        };
        let body: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{line}: the body is not JSON: {e}"));
        let stem = match verb {
            "pub" => {
                let parsed = subjects.parse_event(subject).unwrap_or_else(|r| panic!("{line}: {}", r.message));
                let decoded = Event::decode_checked(&parsed, Encoding::Json, &serde_json::to_vec(&body).unwrap());
                assert!(decoded.is_ok(), "{line}: the service refuses it: {decoded:?}");
                format!("event.{}", parsed.kind.as_str())
            }
            "req" => {
                let (_, op) = subjects.parse_svc(subject).unwrap_or_else(|r| panic!("{line}: {}", r.message));
                format!("request.{op}")
            }
            other => panic!("{line}: no body expected for nats {other}"),
        };
        let errors = v.errors(&schemas[&stem], &body);
        assert!(errors.is_empty(), "{line}: invalid against {stem}.schema.json: {errors:#?}");
        checked.insert(stem);
    }
    assert_eq!(checked, BTreeSet::from(["event.attempt".to_owned(), "request.status".to_owned()]));
    assert!(block.iter().any(|l| l.starts_with("nats sub ") || l.starts_with("nats consumer ")), "reading notices");
    let notice: String = readme
        .lines()
        .skip_while(|l| l.trim() != "```sh nats-examples")
        .skip_while(|l| l.trim() != "```json")
        .skip(1)
        .take_while(|l| l.trim() != "```")
        .collect();
    let notice: Value = serde_json::from_str(&notice).expect("a sample notice in a json block after the examples");
    let errors = v.errors(&schemas["notice.locked"], &notice);
    assert!(errors.is_empty(), "the README's sample notice: {errors:#?}");
}
