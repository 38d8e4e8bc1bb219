//! The routes: sign-in and out, the pages, the forms (each checked against its session's
//! CSRF token), the live notices (server-sent events) and the two static files.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use cookie::{Cookie, SameSite};
use futures::StreamExt;
use lockout_client::lockout_proto::command::{IpUnblockRequest, MfaResetRequest, UnlockRequest};
use lockout_client::{Admin, Client};
use lockout_proto::{Notice, Tenant, UserId};
use serde::Deserialize;

use crate::auth::{token, Limiter, Session, Sessions, Staff};
use crate::{data, views};

const SESSION: &str = "lockout_session";
/// Locked users per page, and the service's pages one search reads at most.
const PAGE: u32 = 100;
const SEARCH_PAGES_MAX: usize = 50;
const LOGIN: &str = "lockout_login";

/// How the console is reached and who may sign in.
pub struct Settings {
    pub users: HashMap<String, Staff>,
    /// Cookies marked `Secure` (off only for plain-HTTP development).
    pub secure_cookies: bool,
    /// A header naming the member, trusted only from these proxy addresses.
    pub trusted_header: Option<(String, Vec<IpAddr>)>,
}

pub struct App {
    client: Client,
    admin: Admin,
    settings: Settings,
    sessions: Sessions,
    limiter: Limiter,
}

impl App {
    pub fn new(client: Client, settings: Settings) -> Arc<App> {
        Arc::new(App {
            admin: Admin::new(&client),
            client,
            settings,
            sessions: Sessions::new(Duration::from_secs(8 * 3600)),
            limiter: Limiter::new(5, Duration::from_secs(300)),
        })
    }
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/", get(locked_page))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/user", get(user_page))
        .route("/unlock", post(unlock))
        .route("/mfa_reset", post(mfa_reset))
        .route("/ips", get(ips_page))
        .route("/ip_unblock", post(ip_unblock))
        .route("/live", get(live))
        .route("/app.css", get(|| async { ([(header::CONTENT_TYPE, "text/css")], include_str!("app.css")) }))
        .route("/app.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript")], include_str!("app.js")) }))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    let set = [
        ("content-security-policy", "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ];
    for (k, v) in set {
        h.insert(k, HeaderValue::from_static(v));
    }
    r
}

fn cookie_value(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .find(|c| c.name() == name)
        .map(|c| c.value().to_owned())
}

fn set_cookie(app: &App, name: &str, value: &str, max_age: Option<time::Duration>) -> (header::HeaderName, String) {
    let mut c =
        Cookie::build((name.to_owned(), value.to_owned())).path("/").http_only(true).same_site(SameSite::Strict);
    if app.settings.secure_cookies {
        c = c.secure(true);
    }
    if let Some(age) = max_age {
        c = c.max_age(age);
    }
    (header::SET_COOKIE, c.build().to_string())
}

/// The member signed in: their session, or (behind the trusted proxy) a new one, handed out
/// by a redirect to the same page with its cookie. Refused with the sign-in page otherwise
/// (`401` for the live notices).
struct Signed(Session);

impl FromRequestParts<Arc<App>> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Signed, Response> {
        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip());
        let here = if parts.method == axum::http::Method::GET {
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        } else {
            "/"
        };
        match signed_in(app, peer, &parts.headers) {
            Ok(s) => Ok(Signed(s)),
            Err(_) if parts.uri.path() == "/live" => Err(StatusCode::UNAUTHORIZED.into_response()),
            Err(Refusal::SignIn) => Err(Redirect::to("/login").into_response()),
            Err(Refusal::NotStaff(name)) => Err(forbidden(&format!("{name} is not in the console's users file."))),
            Err(Refusal::NewSession(t)) => {
                Err(([set_cookie(app, SESSION, &t, None)], Redirect::to(here)).into_response())
            }
        }
    }
}

/// Why a request has no session.
enum Refusal {
    SignIn,
    /// The trusted proxy named someone the users file does not have.
    NotStaff(String),
    /// The trusted proxy named a member: this session was started for them.
    NewSession(String),
}

fn signed_in(app: &App, peer: Option<IpAddr>, headers: &HeaderMap) -> Result<Session, Refusal> {
    let proxied = app.settings.trusted_header.as_ref().and_then(|(name, proxies)| {
        let from_proxy = peer.is_some_and(|ip| proxies.contains(&ip));
        from_proxy.then(|| headers.get(name.as_str())?.to_str().ok()).flatten()
    });
    if let Some(s) = cookie_value(headers, SESSION).and_then(|t| app.sessions.get(&t)) {
        if proxied.is_none_or(|p| p == s.staff) {
            return Ok(s);
        }
    }
    match proxied {
        Some(name) => match app.settings.users.get(name) {
            Some(staff) => Err(Refusal::NewSession(app.sessions.start(staff))),
            None => Err(Refusal::NotStaff(name.to_owned())),
        },
        None => Err(Refusal::SignIn),
    }
}

fn forbidden(text: &str) -> Response {
    (StatusCode::FORBIDDEN, Html(views::message(None, "Not allowed", text).into_string())).into_response()
}

fn who(s: &Session) -> views::Who<'_> {
    views::Who { staff: &s.staff, tenant: &s.tenant, csrf: &s.csrf }
}

fn failed(s: &Session, e: impl std::fmt::Display) -> Response {
    let page = views::message(Some(&who(s)), "The service did not do that", &e.to_string());
    (StatusCode::BAD_GATEWAY, Html(page.into_string())).into_response()
}

async fn login_page(State(app): State<Arc<App>>) -> Response {
    let t = token();
    ([set_cookie(&app, LOGIN, &t, Some(time::Duration::minutes(30)))], Html(views::login(&t, None).into_string()))
        .into_response()
}

#[derive(Deserialize)]
struct LoginForm {
    login_token: String,
    name: String,
    password: String,
}

async fn login(
    State(app): State<Arc<App>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let again = |status: StatusCode, error: &str| {
        let t = token();
        let page = views::login(&t, Some(error)).into_string();
        (status, [set_cookie(&app, LOGIN, &t, Some(time::Duration::minutes(30)))], Html(page)).into_response()
    };
    if cookie_value(&headers, LOGIN).is_none_or(|c| c != f.login_token) {
        return again(StatusCode::FORBIDDEN, "The sign-in form expired; please sign in again.");
    }
    if let Some(wait) = app.limiter.wait(peer.ip(), &f.name) {
        let minutes = wait.as_secs().div_ceil(60).max(1);
        return again(StatusCode::TOO_MANY_REQUESTS, &format!("Too many failed sign-ins; try again in {minutes} min."));
    }
    match app.settings.users.get(&f.name).filter(|s| s.verify(&f.password)) {
        Some(staff) => {
            let t = app.sessions.start(staff);
            tracing::info!(staff = %staff.name, from = %peer.ip(), "Signed in.");
            ([set_cookie(&app, SESSION, &t, None)], Redirect::to("/")).into_response()
        }
        None => {
            app.limiter.failed(peer.ip(), &f.name);
            tracing::warn!(name = %f.name, from = %peer.ip(), "A sign-in failed.");
            again(StatusCode::UNAUTHORIZED, "Wrong name or password.")
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(State(app): State<Arc<App>>, headers: HeaderMap, Form(f): Form<CsrfForm>) -> Response {
    if let Some(t) = cookie_value(&headers, SESSION) {
        if app.sessions.get(&t).is_some_and(|s| s.csrf == f.csrf) {
            app.sessions.end(&t);
        }
    }
    ([set_cookie(&app, SESSION, "", Some(time::Duration::ZERO))], Redirect::to("/login")).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    q: String,
    after: Option<String>,
}

async fn locked_page(State(app): State<Arc<App>>, Signed(s): Signed, Query(q): Query<ListQuery>) -> Response {
    // A search reads pages of the service's list until it has a page of matches.
    let needle = q.q.trim().to_lowercase();
    let (mut users, mut after) = (Vec::new(), q.after);
    for _ in 0..SEARCH_PAGES_MAX {
        let page = match app.admin.locked(&s.tenant, Some(PAGE), after).await {
            Ok(p) => p,
            Err(e) => return failed(&s, e),
        };
        users.extend(page.users.into_iter().filter(|u| u.user.to_lowercase().contains(&needle)));
        after = page.next;
        if users.len() >= PAGE as usize || after.is_none() {
            break;
        }
    }
    Html(views::locked(&who(&s), &users, q.q.trim(), after.as_deref()).into_string()).into_response()
}

#[derive(Deserialize)]
struct UserQuery {
    u: String,
    done: Option<String>,
}

async fn user_page(State(app): State<Arc<App>>, Signed(s): Signed, Query(q): Query<UserQuery>) -> Response {
    let (Ok(tenant), Ok(user)) = (Tenant::parse(&s.tenant), UserId::parse(&q.u)) else {
        return failed(&s, "not a user name the service accepts");
    };
    let explain = match app.admin.explain(&s.tenant, &q.u).await {
        Ok(e) => e,
        Err(e) => return failed(&s, e),
    };
    let history = data::history(&app.client, &tenant, &user).await.unwrap_or_else(|e| {
        tracing::warn!(error = %e, "Reading a user's history failed.");
        Vec::new()
    });
    let lock_event = match explain.status.locked_at.filter(|_| explain.status.locked) {
        Some(at) => data::lock_event(&app.client, &tenant, &user, at).await.ok().flatten().map(|u| u.to_string()),
        None => None,
    };
    let page = views::UserPage { explain: &explain, history: &history, lock_event, done: q.done.as_deref() };
    Html(views::user(&who(&s), &page).into_string()).into_response()
}

#[derive(Deserialize)]
struct UserForm {
    csrf: String,
    user: String,
    reason: String,
    lock_event: Option<String>,
}

/// The refusal of a form whose CSRF token is not its session's.
fn csrf_refused(s: &Session, csrf: &str) -> Option<Response> {
    (s.csrf != csrf).then(|| forbidden("This form is not from your session; reload the page and try again."))
}

async fn unlock(State(app): State<Arc<App>>, Signed(s): Signed, Form(f): Form<UserForm>) -> Response {
    if let Some(refused) = csrf_refused(&s, &f.csrf) {
        return refused;
    }
    let lock_event = f.lock_event.as_deref().and_then(|e| uuid::Uuid::parse_str(e).ok());
    let r = UnlockRequest {
        user: f.user.as_str().into(),
        actor: s.staff.as_str().into(),
        reason: Some(f.reason.into()),
        lock_event,
    };
    match app.admin.unlock(&s.tenant, &r).await {
        Ok(_) => Redirect::to(&format!("/user?u={}&done=Unlocked.", views::urlencode(&f.user))).into_response(),
        Err(lockout_client::Error::Service { code: 409, .. }) => Redirect::to(&format!(
            "/user?u={}&done={}",
            views::urlencode(&f.user),
            views::urlencode("Not unlocked: a newer lock started since the page was shown. Check it and try again.")
        ))
        .into_response(),
        Err(e) => failed(&s, e),
    }
}

async fn mfa_reset(State(app): State<Arc<App>>, Signed(s): Signed, Form(f): Form<UserForm>) -> Response {
    if let Some(refused) = csrf_refused(&s, &f.csrf) {
        return refused;
    }
    let r =
        MfaResetRequest { user: f.user.as_str().into(), actor: s.staff.as_str().into(), reason: Some(f.reason.into()) };
    match app.admin.mfa_reset(&s.tenant, &r).await {
        Ok(_) => Redirect::to(&format!("/user?u={}&done=MFA+reset.", views::urlencode(&f.user))).into_response(),
        Err(e) => failed(&s, e),
    }
}

#[derive(Deserialize)]
struct DoneQuery {
    done: Option<String>,
}

async fn ips_page(State(app): State<Arc<App>>, Signed(s): Signed, Query(q): Query<DoneQuery>) -> Response {
    match app.admin.ip_blocks(&s.tenant, Some(1000), None).await {
        Ok(blocks) => Html(views::ips(&who(&s), &blocks, q.done.as_deref()).into_string()).into_response(),
        Err(e) => failed(&s, e),
    }
}

#[derive(Deserialize)]
struct IpForm {
    csrf: String,
    ip: String,
    reason: String,
}

async fn ip_unblock(State(app): State<Arc<App>>, Signed(s): Signed, Form(f): Form<IpForm>) -> Response {
    if let Some(refused) = csrf_refused(&s, &f.csrf) {
        return refused;
    }
    let r =
        IpUnblockRequest { ip: f.ip.as_str().into(), actor: s.staff.as_str().into(), reason: Some(f.reason.into()) };
    match app.admin.ip_unblock(&s.tenant, &r).await {
        Ok(_) => {
            Redirect::to(&format!("/ips?done={}", views::urlencode(&format!("{} unblocked.", f.ip)))).into_response()
        }
        Err(e) => failed(&s, e),
    }
}

/// The tenant's new locks and unlocks as server-sent events (`ready` first, then `locked`
/// and `unlocked`, data: a few of the notice's fields as JSON).
async fn live(State(app): State<Arc<App>>, Signed(s): Signed) -> Response {
    let Ok(tenant) = Tenant::parse(&s.tenant) else { return StatusCode::BAD_REQUEST.into_response() };
    let notices = match data::live(&app.client, &tenant).await {
        Ok(n) => n,
        Err(e) => return failed(&s, e),
    };
    let events = notices.map(|n: Notice| {
        let data = match &n {
            Notice::Locked(l) => {
                serde_json::json!({ "user": l.user, "locked_at": views::when(l.at), "message": l.message })
            }
            Notice::Unlocked(u) => serde_json::json!({ "user": u.user }),
            _ => serde_json::Value::Null,
        };
        Ok::<_, Infallible>(SseEvent::default().event(n.kind()).data(data.to_string()))
    });
    // `ready` once the consumer exists: notices published from then on will come.
    let ready = futures::stream::once(async { Ok(SseEvent::default().event("ready").data("{}")) });
    Sse::new(ready.chain(events)).keep_alive(KeepAlive::default()).into_response()
}
