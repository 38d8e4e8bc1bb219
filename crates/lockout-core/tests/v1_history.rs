//! Old history stays valid (contract v2, "Compatibility"): a stream recorded by the v1 fold
//! (`fixtures/v1-stream.json`, written by `fixtures/record_v1.rs.txt` at commit ee3ad52, the
//! last before contract v2's fold) folds with today's code to the very states and notices v1
//! folded, from its JSON bodies and from its v1 postcard bodies alike.

use std::collections::BTreeMap;

use lockout_core::fold::fold_policy;
use lockout_core::{fold, UserState};
use lockout_proto::codec::Encoding;
use lockout_proto::event::{Event, EventKind};
use lockout_proto::Policy;
use serde_json::Value;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
}

#[test]
fn a_recorded_v1_stream_folds_to_the_same_states_and_notices() {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/v1-stream.json")).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    let mut policy = Policy::default();
    let mut states: BTreeMap<String, UserState> = BTreeMap::new();
    let mut live: BTreeMap<String, UserState> = BTreeMap::new();
    let mut notices: Vec<Value> = Vec::new();
    let events = doc["events"].as_array().unwrap();
    assert_eq!(events.len(), 600);
    for (i, e) in events.iter().enumerate() {
        let kind = EventKind::parse(e["kind"].as_str().unwrap()).unwrap();
        let json = serde_json::to_vec(&e["json"]).unwrap();
        let from_json = Event::decode(kind, Encoding::Json, &json).unwrap();
        let from_postcard = Event::decode(kind, Encoding::Postcard, &unhex(e["postcard"].as_str().unwrap())).unwrap();
        assert_eq!(from_json, from_postcard, "event {i}: its JSON and v1 postcard bodies differ");
        let time = e["time"].as_u64().unwrap();
        match &from_json {
            Event::Policy(p) => policy = fold_policy(&policy, p),
            event => {
                let user = event.user().unwrap().to_owned();
                // Fold on with the tripping IPs restored as the live fold would have them.
                let before = live.remove(&user).unwrap_or_default();
                let folded = fold(&policy, before, event, time);
                live.insert(user.clone(), folded.state.clone());
                // The recorded states predate the locks' tripping IPs (which change no decision).
                states.insert(user, folded.state.without_trips());
                for n in folded.notices {
                    notices.push(serde_json::from_slice(&n.encode(Encoding::Json)).unwrap());
                }
            }
        }
    }
    let want: BTreeMap<String, UserState> =
        serde_json::from_value(doc["states"].clone()).expect("recorded states read as today's UserState");
    assert_eq!(states, want);
    assert_eq!(&Value::Array(notices), &doc["notices"]);
    // The stream exercises what it must: locks of both kinds, expiries, unlocks, MFA resets.
    let kinds: Vec<&str> = doc["notices"].as_array().unwrap().iter().filter_map(|n| n["how"].as_str()).collect();
    assert!(kinds.contains(&"expired") && kinds.contains(&"admin"), "{kinds:?}");
}
