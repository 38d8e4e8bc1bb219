//! The help-desk console in a real browser: headless Chromium (Debian's `chromium`, driven
//! through `chromedriver` with fantoccini) against `lockout-console` and lockoutd on a real
//! nats-server. Screenshots of each page go to `target/console-shots/`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use lockout_client::lockout_proto::codec::{self, Encoding};
use lockout_client::lockout_proto::event::Outcome;
use lockout_client::lockout_proto::{Event, EventKind, Notice};
use serde_json::json;

use crate::support::{lockoutd_binary, Lockout};

/// A child process killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sibling(name: &str) -> PathBuf {
    lockoutd_binary().parent().unwrap().join(name)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Where the screenshots go: `target/console-shots/`.
fn shots_dir() -> PathBuf {
    let dir = lockoutd_binary().parent().unwrap().parent().unwrap().join("console-shots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn shot(b: &Browser, name: &str) {
    let png = b.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
}

/// `lockout-console hash` of `password`.
fn hash(password: &str) -> String {
    let mut c = Command::new(sibling("lockout-console"))
        .arg("hash")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(c.stdin.take().unwrap(), "{password}").unwrap();
    let out = c.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The console on a free port of 127.0.0.1, with the users file `users` (and `extra`
/// flags); its base URL (by the name `localhost`, a secure context for the browser, as HTTPS
/// would be).
fn console_with(nats_url: &str, users: &std::path::Path, extra: &[&str]) -> (Proc, String) {
    let mut child = Command::new(sibling("lockout-console"))
        .args(["--nats-url", nats_url, "--listen", "127.0.0.1:0", "--users"])
        .arg(users)
        .args(extra)
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawning lockout-console (cargo build --workspace --bins)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let port = line.trim().rsplit(':').next().unwrap().to_owned();
    assert!(port.parse::<u16>().is_ok(), "the console said {line:?}");
    (Proc(child), format!("http://localhost:{port}"))
}

fn console(nats_url: &str, users: &std::path::Path) -> (Proc, String) {
    console_with(nats_url, users, &[])
}

/// One raw HTTP/1.1 GET of `path` with `headers` from 127.0.0.1; the response's head.
fn get(base: &str, path: &str, headers: &[(&str, &str)]) -> String {
    use std::io::Read as _;
    let addr = base.trim_start_matches("http://").replace("localhost", "127.0.0.1");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    for (k, v) in headers {
        req += &format!("{k}: {v}\r\n");
    }
    s.write_all(format!("{req}\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").next().unwrap().to_ascii_lowercase()
}

/// Behind an SSO proxy: the trusted header signs a member in only when it comes from a
/// configured proxy address, and only a member of the users file.
#[tokio::test]
async fn the_trusted_header_counts_only_from_the_configured_proxy() {
    let l = Lockout::start().await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, "sam acme -\n").unwrap();
    let trusting = ["--trusted-header", "X-Forwarded-User", "--trusted-proxy", "127.0.0.1"];
    let (_a, from_proxy) = console_with(&l.nats.url(), &users, &trusting);
    let elsewhere = ["--trusted-header", "X-Forwarded-User", "--trusted-proxy", "192.0.2.1"];
    let (_b, not_proxy) = console_with(&l.nats.url(), &users, &elsewhere);

    let signed = get(&from_proxy, "/ips", &[("X-Forwarded-User", "sam")]);
    assert!(signed.starts_with("http/1.1 303"), "{signed}");
    assert!(signed.contains("set-cookie: lockout_session=") && signed.contains("location: /ips"), "{signed}");
    assert!(signed.contains("secure") && signed.contains("httponly") && signed.contains("samesite=strict"), "{signed}");
    assert!(signed.contains("content-security-policy: default-src 'self'"), "{signed}");
    let stranger = get(&from_proxy, "/", &[("X-Forwarded-User", "mallory")]);
    assert!(stranger.starts_with("http/1.1 403"), "{stranger}");
    let ignored = get(&not_proxy, "/", &[("X-Forwarded-User", "sam")]);
    assert!(ignored.starts_with("http/1.1 303") && ignored.contains("location: /login"), "{ignored}");
    assert!(!ignored.contains("set-cookie: lockout_session"), "{ignored}");
}

/// chromedriver on a free port and a headless Chromium session through it.
async fn browser(profile: &std::path::Path) -> (Proc, Browser) {
    let port = free_port();
    let driver = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver is missing: install Debian's chromium and chromium-driver (.ci/run does)");
    let driver = Proc(driver);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1100,900",
    ];
    let mut args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut caps = serde_json::Map::new();
    caps.insert("goog:chromeOptions".into(), json!({ "binary": "/usr/bin/chromium", "args": args }));
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let b =
        ClientBuilder::new(connector).capabilities(caps).connect(&format!("http://127.0.0.1:{port}")).await.unwrap();
    (driver, b)
}

/// Types `text` into the field `css` and presses Enter there (the keyboard only), then waits
/// for the page that says what was done; its text.
async fn submit_by_keyboard(b: &Browser, css: &str, text: &str) -> String {
    let field = b.find(Locator::Css(css)).await.unwrap();
    field.send_keys(text).await.unwrap();
    field.send_keys("\u{E007}").await.unwrap();
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("p.done")).await.unwrap();
    text_of(b, "p.done").await
}

async fn text_of(b: &Browser, css: &str) -> String {
    b.find(Locator::Css(css)).await.unwrap().text().await.unwrap()
}

/// Accessibility basics of the page shown: a language, one `h1`, a label for every visible
/// input, a caption and column headers for every table.
async fn assert_accessible(b: &Browser, page: &str) {
    let check = r#"
        const problems = [];
        if (!document.documentElement.lang) problems.push("no lang");
        if (document.querySelectorAll("h1").length !== 1) problems.push("not one h1");
        for (const i of document.querySelectorAll("input:not([type=hidden])")) {
            if (!i.id || !document.querySelector(`label[for="${i.id}"]`)) problems.push("unlabelled input " + i.name);
        }
        for (const t of document.querySelectorAll("table")) {
            if (!t.querySelector("caption") || !t.querySelector("th[scope=col]")) problems.push("table without caption or headers");
        }
        return problems;
    "#;
    let problems = b.execute(check, vec![]).await.unwrap();
    assert_eq!(problems, json!([]), "accessibility of {page}");
}

/// Signs in, sees a user locked by attempts appear without reloading, opens them, reads the
/// sources, unlocks with a reason using the keyboard, and finds the unlock (actor, reason) in
/// the history and the `unlocked` notice; a form from another session and too many failed
/// sign-ins are refused.
#[tokio::test]
async fn the_console_in_a_browser_from_sign_in_to_unlock() {
    let l = Lockout::start().await;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    std::fs::write(&users, format!("sam acme {}\n", hash("correct horse"))).unwrap();
    let (_console, base) = console(&l.nats.url(), &users);
    let (_driver, b) = browser(&dir.path().join("profile")).await;

    b.goto(&format!("{base}/")).await.unwrap();
    assert!(b.current_url().await.unwrap().path().ends_with("/login"), "signed out: the sign-in page");
    assert_accessible(&b, "sign-in").await;
    shot(&b, "1-sign-in").await;
    b.find(Locator::Id("name")).await.unwrap().send_keys("sam").await.unwrap();
    b.find(Locator::Id("password")).await.unwrap().send_keys("correct horse").await.unwrap();
    b.find(Locator::Css("main button[type=submit]")).await.unwrap().click().await.unwrap();
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("locked")).await.unwrap();
    let cookies = b.get_all_cookies().await.unwrap();
    let session = cookies.iter().find(|c| c.name() == "lockout_session").expect("a session cookie");
    assert_eq!((session.http_only(), session.secure()), (Some(true), Some(true)), "HttpOnly and Secure");
    assert_accessible(&b, "locked users").await;

    // Locked while the page is open: the row appears without a reload.
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#locked[data-live=on]")).await.unwrap();
    for (ip, client) in [("198.51.100.7", Some("erp-sync")), ("198.51.100.7", Some("erp-sync")), ("203.0.113.9", None)]
    {
        l.attempt("acme", "zoe@acme.test", Outcome::Failure, ip, client).await;
    }
    for _ in 0..2 {
        l.attempt("acme", "zoe@acme.test", Outcome::Failure, "198.51.100.7", Some("erp-sync")).await;
    }
    let row =
        b.wait().at_most(Duration::from_secs(15)).for_element(Locator::Css("#locked tbody tr.new a")).await.unwrap();
    assert_eq!(row.text().await.unwrap(), "zoe@acme.test");
    assert!(text_of(&b, "#live").await.contains("zoe@acme.test was just locked"));
    shot(&b, "2-locked-live").await;

    row.click().await.unwrap();
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("unlock-reason")).await.unwrap();
    assert_eq!(text_of(&b, "h1").await, "zoe@acme.test");
    let page = text_of(&b, "main").await;
    for want in ["198.51.100.7", "erp-sync", "203.0.113.9", "Counted attempts"] {
        assert!(page.contains(want), "the user page shows {want}: {page}");
    }
    assert_accessible(&b, "user").await;
    shot(&b, "3-user").await;

    let done = submit_by_keyboard(&b, "#unlock-reason", "called the desk from a known number").await;
    assert_eq!(done, "Unlocked.");
    let history = text_of(&b, "#history").await;
    assert!(history.contains("unlock") && history.contains("sam"), "{history}");
    assert!(history.contains("called the desk from a known number"), "{history}");
    shot(&b, "4-unlocked").await;
    let unlocked: Vec<_> = l
        .notices()
        .await
        .into_iter()
        .filter_map(|(n, _)| match n {
            Notice::Unlocked(u) => Some(u),
            _ => None,
        })
        .collect();
    assert_eq!(unlocked.len(), 1);
    assert_eq!(unlocked[0].actor.as_deref(), Some("sam"), "the member is the actor");
    // The unlock named the lock the page showed: the fifth failure, which started it.
    let mut failures = Vec::new();
    let mut lock_event = None;
    for m in l.stream_messages("LOCKOUT_EVENTS").await {
        let kind = EventKind::parse(m.subject.rsplit('.').next().unwrap()).unwrap();
        let enc = Encoding::from_content_type(m.headers.get(codec::CONTENT_TYPE).map(|v| v.as_str())).unwrap();
        match Event::decode(kind, enc, &m.payload).unwrap() {
            Event::Attempt(a) if a.user == "zoe@acme.test" => failures.push(a.id),
            Event::Unlock(u) => lock_event = Some(u.lock_event),
            _ => {}
        }
    }
    assert_eq!(lock_event, Some(failures.last().copied()), "unlock's lock_event");

    // An IP blocked for spraying, unblocked from its page.
    let policy = json!({ "ip_max_failures": 3, "ip_window_seconds": 600, "ip_block_seconds": 3600 });
    l.call("acme", "policy_set", json!({ "actor": "sec", "policy": policy })).await.unwrap();
    for u in ["p1", "p2", "p3"] {
        l.attempt("acme", u, Outcome::Failure, "192.0.2.66", None).await;
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    while l.call("acme", "ip_status", json!({ "ip": "192.0.2.66" })).await.unwrap()["blocked"] != true {
        assert!(Instant::now() < deadline, "192.0.2.66 not blocked within 15 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.goto(&format!("{base}/ips")).await.unwrap();
    assert_eq!(text_of(&b, "h1").await, "Blocked IPs");
    assert_eq!(text_of(&b, "section.ip h2").await, "192.0.2.66");
    assert_accessible(&b, "blocked IPs").await;
    shot(&b, "5-ips").await;
    let done = submit_by_keyboard(&b, "section.ip input[name=reason]", "a customer's office NAT").await;
    assert_eq!(done, "192.0.2.66 unblocked.");
    assert_eq!(l.call("acme", "ip_status", json!({ "ip": "192.0.2.66" })).await.unwrap()["blocked"], false);
    let unblocked = l.notices().await.into_iter().find_map(|(n, _)| match n {
        Notice::IpUnblocked(u) => Some(u),
        _ => None,
    });
    assert_eq!(unblocked.expect("an ip_unblocked notice").actor.as_deref(), Some("sam"));
    shot(&b, "6-ip-unblocked").await;

    // A form posted with another token is refused (what a cross-site form would send).
    let status = b
        .execute(
            r#"const body = new URLSearchParams({csrf: "forged", user: "zoe@acme.test", reason: "x"});
               return fetch("/unlock", {method: "POST", body}).then(r => r.status);"#,
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(status, json!(403));

    // Sign out with the keyboard: Tab from the top reaches the skip link first.
    b.execute("document.activeElement.blur(); window.scrollTo(0, 0);", vec![]).await.unwrap();
    b.find(Locator::Css("body")).await.unwrap().send_keys("\u{E004}").await.unwrap();
    let focused = b.execute("return document.activeElement.textContent;", vec![]).await.unwrap();
    assert_eq!(focused, json!("Skip to content"));
    b.find(Locator::Css("form.signout button")).await.unwrap().click().await.unwrap();
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("password")).await.unwrap();

    // Five wrong passwords, then the sixth try is refused whatever the password.
    for i in 0..6 {
        b.find(Locator::Id("name")).await.unwrap().send_keys("sam").await.unwrap();
        let pw = if i == 5 { "correct horse" } else { "wrong" };
        b.find(Locator::Id("password")).await.unwrap().send_keys(pw).await.unwrap();
        // Mark this page, so the wait below finds the error of the next one.
        b.execute("document.body.dataset.old = '1';", vec![]).await.unwrap();
        b.find(Locator::Css("main button[type=submit]")).await.unwrap().click().await.unwrap();
        let next = Locator::Css("body:not([data-old]) p.error");
        b.wait().at_most(Duration::from_secs(10)).for_element(next).await.unwrap();
    }
    assert!(text_of(&b, "p.error").await.starts_with("Too many failed sign-ins"));
    b.close().await.unwrap();
}
