//! The pages, server-rendered (maud escapes every value). No script but `/app.js`, which
//! adds new locks to the list as they happen; everything works without it.

use lockout_proto::command::{ExplainReply, IpBlocksReply};
use lockout_proto::Status;
use maud::{html, Markup, DOCTYPE};

use crate::data::Row;

/// A time in ms as UTC, to the second.
pub fn when(ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000);
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.ok().and_then(|t| t.format(&fmt).ok()).unwrap_or_else(|| ms.to_string())
}

/// Who is signed in, for the header and the forms.
pub struct Who<'a> {
    pub staff: &'a str,
    pub tenant: &'a str,
    pub csrf: &'a str,
}

/// The frame of every page: skip link, header with navigation and sign-out, main.
pub fn page(title: &str, who: Option<&Who>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · lockout help desk" }
                link rel="stylesheet" href="/app.css";
                script src="/app.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    p.brand { "Lockout help desk" }
                    @if let Some(w) = who {
                        nav aria-label="Main" {
                            a href="/" { "Locked users" }
                            " "
                            a href="/ips" { "Blocked IPs" }
                        }
                        form.signout method="post" action="/logout" {
                            input type="hidden" name="csrf" value=(w.csrf);
                            span { (w.staff) " · " (w.tenant) " " }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main id="main" { (body) }
            }
        }
    }
}

pub fn login(login_token: &str, error: Option<&str>) -> Markup {
    page(
        "Sign in",
        None,
        html! {
            h1 { "Sign in" }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/login" {
                input type="hidden" name="login_token" value=(login_token);
                label for="name" { "Name" }
                input id="name" name="name" autocomplete="username" required autofocus;
                label for="password" { "Password" }
                input id="password" name="password" type="password" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub fn locked(who: &Who, users: &[Status], q: &str, next: Option<&str>) -> Markup {
    page(
        "Locked users",
        Some(who),
        html! {
            h1 { "Locked users" }
            form.search method="get" action="/" role="search" {
                label for="q" { "Search users" }
                input id="q" name="q" type="search" value=(q);
                button type="submit" { "Search" }
            }
            p.live aria-live="polite" id="live" {}
            table id="locked" {
                caption { "Users of " (who.tenant) " locked now" }
                thead { tr { th scope="col" { "User" } th scope="col" { "Since" } th scope="col" { "Until" } th scope="col" { "Failures" } th scope="col" { "Last source" } } }
                tbody {
                    @for s in users {
                        tr {
                            td { a href={ "/user?u=" (urlencode(&s.user)) } { (s.user) } }
                            td { (s.locked_at.map(when).unwrap_or_default()) }
                            td { (s.locked_until.map_or_else(|| "until unlocked".to_owned(), when)) }
                            td { (s.failures) }
                            td { (s.last_source_ip.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
            @if users.is_empty() { p { "Nobody is locked" @if !q.is_empty() { " matching “" (q) "”" } "." } }
            @if let Some(n) = next { p { a href={ "/?q=" (urlencode(q)) "&after=" (urlencode(n)) } { "Next page" } } }
        },
    )
}

pub struct UserPage<'a> {
    pub explain: &'a ExplainReply,
    pub history: &'a [Row],
    pub lock_event: Option<String>,
    pub done: Option<&'a str>,
}

pub fn user(who: &Who, p: &UserPage) -> Markup {
    let s = &p.explain.status;
    let u = s.user.as_str();
    page(
        u,
        Some(who),
        html! {
            h1 { (u) }
            @if let Some(d) = p.done { p.done role="status" { (d) } }
            h2 { "Status" }
            dl {
                dt { "Locked" } dd { @if s.locked { "yes" } @else { "no" } }
                @if let Some(at) = s.locked_at { dt { "Locked at" } dd { (when(at)) } }
                @if s.locked { dt { "Until" } dd { (s.locked_until.map_or_else(|| "unlocked by an admin".to_owned(), when)) } }
                @if let Some(r) = s.reason { dt { "Reason" } dd { (<&str>::from(r)) } }
                dt { "Failures" } dd { (s.failures) " of " (s.max_failures) }
                @if let Some(ip) = &s.last_source_ip { dt { "Last source" } dd { (ip) } }
                @for l in &s.scope_locks {
                    dt { "Also locked" } dd { (<&str>::from(l.scope)) @if let Some(c) = &l.client { " (" (c) ")" } }
                }
            }
            h2 { "Why" }
            p { (p.explain.reason) }
            @if !p.explain.sources.is_empty() {
                table {
                    caption { "Sources of the counted failures, most first" }
                    thead { tr { th scope="col" { "IP" } th scope="col" { "Client" } th scope="col" { "Failures" } } }
                    tbody { @for src in &p.explain.sources { tr { td { (src.ip) } td { (src.client.as_deref().unwrap_or("—")) } td { (src.failures) } } } }
                }
            }
            @if !p.explain.counted.is_empty() {
                table {
                    caption { "Counted attempts" }
                    thead { tr { th scope="col" { "When" } th scope="col" { "IP" } th scope="col" { "Client" } th scope="col" { "Counter" } } }
                    tbody {
                        @for c in &p.explain.counted {
                            tr { td { (when(c.at)) } td { (c.ip) } td { (c.client.as_deref().unwrap_or("—")) } td { (<&str>::from(c.counter)) } }
                        }
                    }
                }
            }
            @if s.locked {
                h2 { "Unlock" }
                form method="post" action="/unlock" {
                    input type="hidden" name="csrf" value=(who.csrf);
                    input type="hidden" name="user" value=(u);
                    @if let Some(e) = &p.lock_event { input type="hidden" name="lock_event" value=(e); }
                    label for="unlock-reason" { "Reason" }
                    input id="unlock-reason" name="reason" required;
                    button type="submit" { "Unlock" }
                }
            }
            h2 { "Reset MFA" }
            form method="post" action="/mfa_reset" {
                input type="hidden" name="csrf" value=(who.csrf);
                input type="hidden" name="user" value=(u);
                label for="mfa-reason" { "Reason" }
                input id="mfa-reason" name="reason" required;
                button type="submit" { "Reset MFA" }
            }
            h2 { "Recent history" }
            table id="history" {
                caption { "The last events of the past 30 days, newest first" }
                thead { tr { th scope="col" { "When" } th scope="col" { "Event" } th scope="col" { "Source" } th scope="col" { "By" } th scope="col" { "Reason" } } }
                tbody {
                    @for r in p.history {
                        tr {
                            td { (when(r.at)) }
                            td { (r.kind) @if let Some(o) = r.body["outcome"].as_str() { " " (o) } }
                            td { (r.body["source_ip"].as_str().unwrap_or("")) @if let Some(c) = r.body["client"].as_str() { " (" (c) ")" } }
                            td { (r.body["actor"].as_str().unwrap_or("")) }
                            td { (r.body["reason"].as_str().unwrap_or("")) }
                        }
                    }
                }
            }
        },
    )
}

pub fn ips(who: &Who, blocks: &IpBlocksReply, done: Option<&str>) -> Markup {
    page(
        "Blocked IPs",
        Some(who),
        html! {
            h1 { "Blocked IPs" }
            @if let Some(d) = done { p.done role="status" { (d) } }
            @if blocks.ips.is_empty() { p { "No IP is blocked." } }
            @for b in &blocks.ips {
                section.ip {
                    h2 { (b.ip) }
                    p { (b.failures) " failures over " (b.users) " users; until " (b.blocked_until.map_or_else(|| "unblocked".to_owned(), when)) }
                    form method="post" action="/ip_unblock" {
                        input type="hidden" name="csrf" value=(who.csrf);
                        input type="hidden" name="ip" value=(b.ip);
                        label for={ "reason-" (b.ip) } { "Reason" }
                        input id={ "reason-" (b.ip) } name="reason" required;
                        button type="submit" { "Unblock " (b.ip) }
                    }
                }
            }
        },
    )
}

pub fn message(who: Option<&Who>, title: &str, text: &str) -> Markup {
    page(title, who, html! { h1 { (title) } p role="alert" { (text) } p { a href="/" { "Back" } } })
}

/// Percent-encodes a query value.
pub fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
