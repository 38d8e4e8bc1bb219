//! What `lockoutd` and `lockoutctl` share about NATS.
//!
//! - [`NatsArgs`]: the connection flags (server URL, credentials, TLS) with their
//!   `LOCKOUT_*` environment fallbacks, flattened into both binaries' command lines, and
//!   [`NatsArgs::connect`].
//! - [`Delivered`]: a message of a stream with its sequence and stored time, as the engine
//!   reads it ([`lockout_engine::Delivery`]).
//! - [`clock`]: the wall clock, injected (tests pass their own).
//!
//! It must never hold service logic: the fold is `lockout-core`'s, the batch is
//! `lockout-engine`'s.

pub mod clock;

use std::fmt;
use std::path::PathBuf;

use anyhow::Context as _;
use async_nats::jetstream;
use async_nats::HeaderMap;
use lockout_proto::Millis;

/// How to reach NATS: server, credentials and TLS. Every flag also reads `LOCKOUT_<NAME>`.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsArgs {
    /// NATS server URL, or a comma-separated list of a cluster's servers (the client connects
    /// to one and fails over to the others).
    #[arg(long, global = true, env = "LOCKOUT_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// NATS credentials file (JWT + nkey seed).
    #[arg(long, global = true, env = "LOCKOUT_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// NATS user name (with --nats-password).
    #[arg(long, global = true, env = "LOCKOUT_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password (with --nats-user).
    #[arg(long, global = true, env = "LOCKOUT_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// CA certificate (PEM) to verify the server; turns TLS on.
    #[arg(long, global = true, env = "LOCKOUT_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with --tls-key).
    #[arg(long, global = true, env = "LOCKOUT_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS (with --tls-cert).
    #[arg(long, global = true, env = "LOCKOUT_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Subject prefix of this client's reply inboxes (default `_INBOX`). Give every credential
    /// its own (e.g. `_INBOX_lockoutd`) and let it subscribe to that prefix only, so that no
    /// one reads another's replies and deliveries (`deploy/nats/lockout.conf`).
    #[arg(long, global = true, env = "LOCKOUT_INBOX_PREFIX")]
    pub inbox_prefix: Option<String>,
}

impl NatsArgs {
    /// No credentials, no TLS.
    pub fn new(nats_url: &str) -> NatsArgs {
        NatsArgs {
            nats_url: nats_url.to_owned(),
            nats_creds: None,
            nats_user: None,
            nats_password: None,
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            inbox_prefix: None,
        }
    }

    /// Checks what clap cannot: a user name and a password go together; every server URL of
    /// the list parses.
    pub fn validate(&self) -> Result<(), String> {
        if self.nats_user.is_some() != self.nats_password.is_some() {
            return Err("--nats-user and --nats-password go together".into());
        }
        if let Some(p) = &self.inbox_prefix {
            let token_ok = |t: &str| !t.is_empty() && t != "*" && t != ">" && !t.contains(char::is_whitespace);
            if !p.split('.').all(token_ok) {
                return Err(format!(
                    "--inbox-prefix {p:?} is not a subject prefix: give dot-separated tokens without wildcards or spaces, e.g. _INBOX_lockoutd"
                ));
            }
        }
        self.servers().map(|_| ())
    }

    /// The servers of `--nats-url`, a comma-separated list.
    pub fn servers(&self) -> Result<Vec<async_nats::ServerAddr>, String> {
        let servers: Vec<async_nats::ServerAddr> = self
            .nats_url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(|u| u.parse().map_err(|e| format!("--nats-url: {u:?} is not a NATS server URL: {e}")))
            .collect::<Result<_, _>>()?;
        if servers.is_empty() {
            return Err(
                "--nats-url is empty: give a server URL such as nats://127.0.0.1:4222, or a comma-separated list"
                    .into(),
            );
        }
        Ok(servers)
    }

    /// Adds credentials and TLS to `opts`.
    pub async fn apply(&self, mut opts: async_nats::ConnectOptions) -> anyhow::Result<async_nats::ConnectOptions> {
        if let Some(creds) = &self.nats_creds {
            opts = opts
                .credentials_file(creds)
                .await
                .with_context(|| format!("reading NATS credentials file {}", creds.display()))?;
        }
        if let (Some(user), Some(password)) = (&self.nats_user, &self.nats_password) {
            opts = opts.user_and_password(user.clone(), password.clone());
        }
        if let Some(ca) = &self.tls_ca {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        if let Some(prefix) = &self.inbox_prefix {
            opts = opts.custom_inbox_prefix(prefix);
        }
        Ok(opts)
    }

    /// Connects with `opts` plus credentials and TLS.
    pub async fn connect(&self, opts: async_nats::ConnectOptions) -> anyhow::Result<async_nats::Client> {
        let servers = self.servers().map_err(anyhow::Error::msg)?;
        self.apply(opts)
            .await?
            .connect(servers.as_slice())
            .await
            .with_context(|| format!("connecting to NATS at {} (set --nats-url or LOCKOUT_NATS_URL)", self.nats_url))
    }
}

/// The flags for a log line, secrets redacted.
impl fmt::Display for NatsArgs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "nats_url={}", self.nats_url)?;
        if let Some(c) = &self.nats_creds {
            write!(f, " nats_creds={}", c.display())?;
        }
        if let Some(u) = &self.nats_user {
            write!(f, " nats_user={u} nats_password=<redacted>")?;
        }
        if self.tls_ca.is_some() {
            write!(f, " tls=on")?;
        }
        if let Some(p) = &self.inbox_prefix {
            write!(f, " inbox_prefix={p}")?;
        }
        Ok(())
    }
}

/// JetStream's stored time of a message, ms since the epoch.
pub fn stored_time(info: &jetstream::message::Info<'_>) -> Millis {
    u64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The server's clock now, as JetStream states it in the info of `stream` (`ts`, sent by
/// nats-server 2.10 and later), ms; `None` when the request fails or the server sends none.
pub async fn server_time_ms(js: &jetstream::Context, stream: &str) -> Option<u64> {
    let info: serde_json::Value = js.request(format!("STREAM.INFO.{stream}"), &()).await.ok()?;
    let ts = info.get("ts")?.as_str()?;
    let t = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// The first value of header `name` in one pass over the map, names matched exactly as
/// `HeaderMap::get` matches them. (`get` builds a `HeaderName`, allocating for a
/// non-standard name, and hashes it with SipHash: more than the rest of an event's header
/// handling together.)
pub fn first_header<'h>(h: Option<&'h HeaderMap>, name: &str) -> Option<&'h str> {
    h.into_iter()
        .flat_map(HeaderMap::iter)
        .find(|(n, _)| AsRef::<str>::as_ref(*n) == name)
        .and_then(|(_, values)| values.first())
        .map(|v| v.as_str())
}

/// Every (name, value) of `h`, in order.
pub fn header_pairs(h: Option<&HeaderMap>) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (name, values) in h.into_iter().flat_map(HeaderMap::iter) {
        for v in values {
            pairs.push((name.to_string(), v.as_str().to_owned()));
        }
    }
    pairs
}

/// A JetStream message with its stream sequence and stored time.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub msg: jetstream::Message,
    pub seq: u64,
    /// The consumer's delivery sequence: one more for every delivery, redeliveries included,
    /// so a jump means deliveries were lost on the way (a reconnect, a consumer leader change).
    pub delivery: u64,
    /// JetStream's stored time, ms.
    pub time: Millis,
}

impl Delivered {
    /// `None` for a message without JetStream metadata (not delivered by a consumer).
    pub fn new(msg: jetstream::Message) -> Option<Delivered> {
        let info = msg.info().ok()?;
        let (seq, delivery, time) = (info.stream_sequence, info.consumer_sequence, stored_time(&info));
        Some(Delivered { msg, seq, delivery, time })
    }

    pub fn subject(&self) -> &str {
        self.msg.subject.as_str()
    }

    pub fn headers(&self) -> Option<&HeaderMap> {
        self.msg.headers.as_ref()
    }
}

impl lockout_engine::Delivery for Delivered {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn subject(&self) -> &str {
        self.msg.subject.as_str()
    }
    fn payload(&self) -> &[u8] {
        &self.msg.payload
    }
    fn stored_time(&self) -> Millis {
        self.time
    }
    fn header(&self, name: &str) -> Option<&str> {
        first_header(self.msg.headers.as_ref(), name)
    }
    fn header_pairs(&self) -> Vec<(String, String)> {
        header_pairs(self.msg.headers.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_over_the_headers_finds_what_get_finds() {
        let map = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(*k, *v);
            }
            h
        };
        let ct = lockout_proto::codec::CONTENT_TYPE;
        let maps = [
            map(&[]),
            map(&[("Nats-Msg-Id", "x")]),
            map(&[(ct, "application/json"), ("Nats-Msg-Id", "x")]),
            // Names match exactly, as `HeaderMap::get` matches them.
            map(&[("content-type", "application/json"), ("Traceparent", "t")]),
            // The first of repeated values, as `get` gives.
            map(&[(ct, "application/json"), (ct, "application/postcard"), ("traceparent", "t")]),
        ];
        for h in &maps {
            for name in [ct, "traceparent", "Nats-Msg-Id"] {
                let want = h.get(name).map(|v| v.as_str());
                assert_eq!(first_header(Some(h), name), want, "{name} in {h:?}");
            }
        }
        assert_eq!(first_header(None, ct), None);
        assert_eq!(header_pairs(Some(&maps[4])).len(), 3);
    }

    #[test]
    fn nats_url_takes_a_list_of_servers() {
        let one = super::NatsArgs::new("nats://127.0.0.1:4222");
        assert_eq!(one.servers().unwrap().len(), 1);
        let three = super::NatsArgs::new("nats://10.0.0.1:4222, nats://10.0.0.2:4222,nats://10.0.0.3:4222");
        let hosts: Vec<String> = three.servers().unwrap().iter().map(|s| s.host().to_owned()).collect();
        assert_eq!(hosts, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
        assert!(super::NatsArgs::new(" , ").validate().unwrap_err().contains("is empty"));
        assert!(super::NatsArgs::new("nats://a:4222,nats://b:notaport")
            .validate()
            .unwrap_err()
            .contains("\"nats://b:notaport\""));
    }

    #[test]
    fn an_inbox_prefix_is_a_subject_prefix() {
        let with = |p: &str| super::NatsArgs { inbox_prefix: Some(p.into()), ..super::NatsArgs::new("nats://h:4222") };
        assert!(with("_INBOX_lockoutd").validate().is_ok());
        assert!(with("_INBOX.acme.admin").validate().is_ok());
        for bad in ["", "_INBOX.>", "a..b", "a.*", "has space", "trailing."] {
            assert!(with(bad).validate().unwrap_err().contains("--inbox-prefix"), "{bad:?} must be refused");
        }
    }
}
