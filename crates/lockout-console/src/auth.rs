//! Who may use the console: staff from a users file (argon2 hashes), or named by a trusted
//! proxy's header; their sessions, the CSRF token of each, and a sign-in rate limit.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;

/// One member of the help desk: the tenant they work for, and their password's hash
/// (`None`: signs in only through the trusted proxy).
#[derive(Debug, Clone)]
pub struct Staff {
    pub name: String,
    pub tenant: String,
    hash: Option<String>,
}

/// The users file: one member per line, `name tenant hash` (`hash`: a PHC string of argon2,
/// `$argon2id$…`, or `-` for proxy sign-in only); `#` starts a comment.
pub fn read_users(path: &Path) -> anyhow::Result<HashMap<String, Staff>> {
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let mut users = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [name, tenant, hash] = fields[..] else {
            anyhow::bail!(
                "{}:{}: expected `name tenant hash` (hash `-` for proxy sign-in only)",
                path.display(),
                n + 1
            );
        };
        lockout_proto::Tenant::parse(tenant)
            .map_err(|r| anyhow::anyhow!("{}:{}: tenant {tenant:?}: {}", path.display(), n + 1, r.message))?;
        let hash = if hash == "-" {
            None
        } else {
            PasswordHash::new(hash)
                .map_err(|e| anyhow::anyhow!("{}:{}: not an argon2 PHC string: {e}", path.display(), n + 1))?;
            Some(hash.to_owned())
        };
        users.insert(name.to_owned(), Staff { name: name.to_owned(), tenant: tenant.to_owned(), hash });
    }
    Ok(users)
}

impl Staff {
    /// Whether `password` is this member's.
    pub fn verify(&self, password: &str) -> bool {
        let Some(hash) = &self.hash else { return false };
        PasswordHash::new(hash).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
    }
}

/// The argon2id hash of `password` with a random salt, as a PHC string (the users file's).
pub fn hash(password: &str) -> anyhow::Result<String> {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Argon2::default().hash_password(password.as_bytes(), &salt).map_err(|e| anyhow::anyhow!("{e}"))?.to_string())
}

/// A random token for a session or a form: 32 bytes from the OS, hex.
pub fn token() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}

/// A signed-in member's session.
#[derive(Debug, Clone)]
pub struct Session {
    pub staff: String,
    pub tenant: String,
    /// The token every form of this session carries.
    pub csrf: String,
    last_seen: Instant,
}

/// Sessions by token; each ends after `idle` without a request.
pub struct Sessions {
    idle: Duration,
    by_token: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(idle: Duration) -> Sessions {
        Sessions { idle, by_token: Mutex::default() }
    }

    /// Starts a session for `staff`; its token.
    pub fn start(&self, staff: &Staff) -> String {
        let t = token();
        let s = Session {
            staff: staff.name.clone(),
            tenant: staff.tenant.clone(),
            csrf: token(),
            last_seen: Instant::now(),
        };
        let mut all = self.by_token.lock().expect("sessions lock");
        all.retain(|_, s| s.last_seen.elapsed() < self.idle);
        all.insert(t.clone(), s);
        t
    }

    /// The live session of `token`, kept alive.
    pub fn get(&self, token: &str) -> Option<Session> {
        let mut all = self.by_token.lock().expect("sessions lock");
        let s = all.get_mut(token)?;
        if s.last_seen.elapsed() >= self.idle {
            all.remove(token);
            return None;
        }
        s.last_seen = Instant::now();
        Some(s.clone())
    }

    pub fn end(&self, token: &str) {
        self.by_token.lock().expect("sessions lock").remove(token);
    }
}

/// Addresses and names the limiter holds before it drops those whose failures all left the
/// window.
const LIMITER_KEYS_MAX: usize = 10_000;

/// Failed sign-ins per client address and per name: at most `max` within `window`.
pub struct Limiter {
    max: usize,
    window: Duration,
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
}

impl Limiter {
    pub fn new(max: usize, window: Duration) -> Limiter {
        Limiter { max, window, failures: Mutex::default() }
    }

    fn keys(ip: IpAddr, name: &str) -> [String; 2] {
        [format!("ip {ip}"), format!("name {name}")]
    }

    /// How long until `ip` or `name` may try again (`None`: now).
    pub fn wait(&self, ip: IpAddr, name: &str) -> Option<Duration> {
        let mut all = self.failures.lock().expect("limiter lock");
        let mut wait = None;
        for k in Self::keys(ip, name) {
            let Some(q) = all.get_mut(&k) else { continue };
            while q.front().is_some_and(|t| t.elapsed() >= self.window) {
                q.pop_front();
            }
            if q.len() >= self.max {
                let left = self.window.saturating_sub(q.front().map_or(Duration::ZERO, |t| t.elapsed()));
                wait = Some(wait.map_or(left, |w: Duration| w.max(left)));
            }
        }
        wait
    }

    pub fn failed(&self, ip: IpAddr, name: &str) {
        let mut all = self.failures.lock().expect("limiter lock");
        if all.len() > LIMITER_KEYS_MAX {
            // Many names or addresses (someone trying them): forget those out of the window.
            all.retain(|_, q| q.back().is_some_and(|t| t.elapsed() < self.window));
        }
        for k in Self::keys(ip, name) {
            all.entry(k).or_default().push_back(Instant::now());
        }
    }
}

#[cfg(test)]
mod tests {
    use argon2::password_hash::{PasswordHasher, SaltString};

    use super::*;

    fn hash(password: &str) -> String {
        let salt = SaltString::encode_b64(b"a-fixed-test-salt").unwrap();
        Argon2::default().hash_password(password.as_bytes(), &salt).unwrap().to_string()
    }

    #[test]
    fn a_users_file_gives_staff_who_sign_in_with_their_password_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users");
        std::fs::write(&file, format!("# help desk\nsam acme {}\nproxied acme -\n", hash("pw1"))).unwrap();
        let users = read_users(&file).unwrap();
        assert!(users["sam"].verify("pw1"));
        assert!(!users["sam"].verify("pw2"));
        assert!(!users["proxied"].verify(""), "no hash: no password sign-in");
        assert_eq!(users["sam"].tenant, "acme");
        std::fs::write(&file, "sam acme not-a-hash\n").unwrap();
        assert!(read_users(&file).unwrap_err().to_string().contains(":1: not an argon2 PHC string"));
        std::fs::write(&file, "sam\n").unwrap();
        assert!(read_users(&file).is_err());
    }

    #[test]
    fn the_limiter_stops_an_address_or_a_name_after_max_failures_in_the_window() {
        let l = Limiter::new(2, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        l.failed(a, "sam");
        assert!(l.wait(a, "sam").is_none());
        l.failed(a, "kim");
        assert!(l.wait(a, "lee").is_some(), "the address is limited");
        assert!(l.wait(b, "lee").is_none());
        l.failed(b, "sam");
        assert!(l.wait(b, "sam").is_some(), "the name is limited from any address");
        let short = Limiter::new(1, Duration::ZERO);
        short.failed(a, "x");
        assert!(short.wait(a, "x").is_none(), "failures leave the window");
    }

    #[test]
    fn sessions_end_when_idle_or_ended() {
        let staff = Staff { name: "sam".into(), tenant: "acme".into(), hash: None };
        let s = Sessions::new(Duration::from_secs(60));
        let t = s.start(&staff);
        assert_eq!(s.get(&t).unwrap().staff, "sam");
        assert_eq!(s.get(&t).unwrap().csrf.len(), 64);
        s.end(&t);
        assert!(s.get(&t).is_none());
        let idle = Sessions::new(Duration::ZERO);
        let t = idle.start(&staff);
        assert!(idle.get(&t).is_none());
        assert_ne!(token(), token());
    }
}
