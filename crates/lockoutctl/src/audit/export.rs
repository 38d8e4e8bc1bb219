//! `lockoutctl export`: every event (and every refusal) of the history, one line each, for SIEM
//! import or a person.

use std::io::Write;

use serde_json::{json, Value};

use crate::cli::ExportArgs;
use crate::ctx::{self, Ctx};
use crate::events::{self, Range};
use crate::fmt;

pub async fn export(ctx: &Ctx, a: ExportArgs, out: &mut dyn Write) -> anyhow::Result<()> {
    let since = fmt::parse_opt_time(a.since.as_deref(), "--since")?;
    let until = fmt::parse_opt_time(a.until.as_deref(), "--until")?;
    let filter = match &a.tenant {
        Some(t) => format!("{}.events.{}.>", ctx.subjects.prefix(), ctx::tenant(t)?),
        None => ctx.subjects.events_all(),
    };
    let jsonl = a.jsonl || ctx.json;
    let subjects = ctx.subjects.clone();
    let range = Range { from_time: since, ..Range::default() };
    let mut n = 0u64;
    let mut result: anyhow::Result<()> = Ok(());
    events::read(ctx, &ctx.subjects.events_stream(), vec![filter], range, Some("export"), async |raw| {
        if until.is_some_and(|u| raw.time > u) {
            return Ok(false);
        }
        n += 1;
        let decoded = events::accept(&subjects, &raw);
        let line = if jsonl {
            let mut v = json!({
                "seq": raw.seq,
                "subject": raw.subject(),
                "time": raw.time,
                "time_utc": fmt::time(raw.time),
                "type": events::subject_type(raw.subject()),
            });
            let o = v.as_object_mut().expect("object");
            match &decoded {
                Ok(e) => {
                    o.insert("tenant".into(), json!(e.tenant()));
                    o.insert("user".into(), json!(e.user()));
                    o.insert("body".into(), e.body_json());
                }
                Err(r) => {
                    o.insert("body".into(), Value::Null);
                    o.insert("error".into(), json!(format!("{}: {}", r.reason, r.message)));
                }
            }
            v.to_string()
        } else {
            match &decoded {
                Ok(e) => format!(
                    "#{:<6} {}  {:<9} {} {}  {}",
                    raw.seq,
                    fmt::time(raw.time),
                    events::subject_type(raw.subject()),
                    e.tenant(),
                    e.user().unwrap_or("(tenant)"),
                    e.body_json()
                ),
                Err(r) => format!("#{:<6} {}  {}  refused: {}", raw.seq, fmt::time(raw.time), raw.subject(), r.message),
            }
        };
        if let Err(e) = writeln!(out, "{line}") {
            result = Err(e.into());
            return Ok(false);
        }
        Ok(true)
    })
    .await?;
    result?;
    if !jsonl {
        writeln!(out, "{n} event(s)")?;
    }
    Ok(())
}
