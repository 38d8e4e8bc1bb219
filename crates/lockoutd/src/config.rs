//! Flags with environment fallbacks, parsed raw ([`Args`]) then validated into [`Config`].

use std::fmt;
use std::path::PathBuf;

use lockout_proto::{Encoding, Subjects};

/// Default share of untraced events that get a span of their own: enough to see the fold's
/// shape in a busy deployment at a small cost (`make bench` measures it).
pub const DEFAULT_TRACE_EVENTS_RATIO: f64 = 0.01;

/// Default `--dead-max-messages`.
pub const DEFAULT_DEAD_MAX_MESSAGES: u64 = 1_000_000;

/// Default `--commit-linger-ms`.
pub const DEFAULT_COMMIT_LINGER_MS: u64 = 5;

/// `lockoutd` flags as typed; every flag also reads `LOCKOUT_<NAME>`.
#[derive(Debug, clap::Parser)]
#[command(name = "lockoutd", version, about = "Folds login attempts from NATS JetStream into account lockout state.")]
pub struct Args {
    #[command(flatten)]
    pub nats: lockout_nats::NatsArgs,
    /// Directory of the sled store (created if missing).
    #[arg(long, env = "LOCKOUT_DATA_DIR")]
    pub data_dir: PathBuf,
    /// Root prefix of every subject; streams are <PREFIX>_EVENTS, _NOTICES, _DEAD.
    #[arg(long, env = "LOCKOUT_PREFIX", default_value = "lockout")]
    pub prefix: String,
    /// Encoding of notices and of the events the service writes.
    #[arg(long, env = "LOCKOUT_NOTICE_ENCODING", value_enum, default_value_t = NoticeEncoding::Postcard)]
    pub notice_encoding: NoticeEncoding,
    /// Postcard layout of notices and of the events the service writes (contract,
    /// "Compatibility"): 2 (the default) adds contract v2's fields; 1 leaves them out, for
    /// postcard notifiers that do not read v2 yet. JSON carries every field either way.
    #[arg(long, env = "LOCKOUT_WIRE_VERSION", default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub wire_version: u8,
    /// Refuse writes whose caller the server does not vouch for (no `Nats-Request-Info`: the
    /// service must be imported from another account with `share: true`), and refuse to start
    /// against a nats-server that lets clients forge that header (before 2.11.15 / 2.12.6).
    #[arg(long, env = "LOCKOUT_REQUIRE_CALLER")]
    pub require_caller: bool,
    /// Stream replicas (1 for a single server, 3 for a cluster).
    #[arg(long, env = "LOCKOUT_REPLICAS", default_value_t = 1)]
    pub replicas: usize,
    /// User partitions of the deployment, 1 to 1024: fixed when first set up (in the KV bucket
    /// <PREFIX>_CLUSTER); a process started later with another value is refused.
    #[arg(long, env = "LOCKOUT_PARTITIONS", default_value_t = 64)]
    pub partitions: u32,
    /// Partition lease length in seconds, 3 to 300: fixed like --partitions.
    #[arg(long, env = "LOCKOUT_LEASE_SECONDS", default_value_t = 10)]
    pub lease_seconds: u64,
    /// This process's name, in `health` and in every `$SRV.PING|INFO|STATS` reply's metadata
    /// (`instance`): 1 to 64 of A-Z, a-z, 0-9, `_` and `-`. Default: the host name and the
    /// process id (other characters become `-`).
    #[arg(long, env = "LOCKOUT_INSTANCE")]
    pub instance: Option<String>,
    /// Cache memory in MiB, half sled's page cache and half the projector's cache of recent
    /// user states: bounds lockoutd's memory with many users.
    #[arg(long, env = "LOCKOUT_CACHE_MB", default_value_t = 256)]
    pub cache_mb: u64,
    /// Most events folded into one sled commit.
    #[arg(long, env = "LOCKOUT_BATCH", default_value_t = 1000)]
    pub batch: usize,
    /// Longest a folded batch that nobody waits for (no notice, no service request) waits to
    /// be committed together with the next ones, in ms; 0 commits every fetch on its own.
    #[arg(long, env = "LOCKOUT_COMMIT_LINGER_MS", default_value_t = DEFAULT_COMMIT_LINGER_MS)]
    pub commit_linger_ms: u64,
    /// Most dead letters kept in <PREFIX>_DEAD; beyond it the oldest are dropped (0: no bound).
    #[arg(long, env = "LOCKOUT_DEAD_MAX_MESSAGES", default_value_t = DEFAULT_DEAD_MAX_MESSAGES)]
    pub dead_max_messages: u64,
    /// Opt-in: <PREFIX>_EVENTS drops events older than this many days (0, the default: the
    /// history is kept forever). Audits and rebuilds then see only what is left (README,
    /// "Retention").
    #[arg(long, env = "LOCKOUT_EVENTS_MAX_AGE_DAYS", default_value_t = 0)]
    pub events_max_age_days: u64,
    /// Opt-in: <PREFIX>_EVENTS keeps at most this many bytes, the oldest events dropped (0, the
    /// default: no bound). Same losses as --events-max-age-days.
    #[arg(long, env = "LOCKOUT_EVENTS_MAX_BYTES", default_value_t = 0)]
    pub events_max_bytes: u64,
    /// Opt-in: an unlocked user whose state recorded nothing (no counted failure, lock,
    /// unlock or MFA reset) for this many days is dropped by a `forget` event, so that replay
    /// agrees; locked users never are (0, the default: states are kept forever). Bounds the
    /// store under a flood of distinct users; what is lost: README, "Retention".
    #[arg(long, env = "LOCKOUT_STATE_TTL_DAYS", default_value_t = 0)]
    pub state_ttl_days: u64,
    /// Log format.
    #[arg(long, env = "LOCKOUT_LOG_FORMAT", value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// Share of folded events without a `traceparent` header that get their own
    /// `lockout.fold_event` span (0 to 1; sampled deterministically by stream sequence). Events
    /// with one always do. Only matters while traces are exported.
    #[arg(long, env = "LOCKOUT_TRACE_EVENTS_RATIO", default_value_t = DEFAULT_TRACE_EVENTS_RATIO)]
    pub trace_events_ratio: f64,
}

/// `--notice-encoding`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NoticeEncoding {
    Json,
    Postcard,
}

impl From<NoticeEncoding> for Encoding {
    fn from(e: NoticeEncoding) -> Encoding {
        match e {
            NoticeEncoding::Json => Encoding::Json,
            NoticeEncoding::Postcard => Encoding::Postcard,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// NATS server, credentials and TLS.
    pub nats: lockout_nats::NatsArgs,
    pub data_dir: PathBuf,
    pub subjects: Subjects,
    /// Encoding of notices and service-written events, layout included (`--wire-version`).
    pub notice_encoding: Encoding,
    /// `--require-caller`.
    pub require_caller: bool,
    pub replicas: usize,
    /// `--instance`.
    pub instance: String,
    /// `--partitions`.
    pub partitions: u32,
    /// `--lease-seconds`.
    pub lease_seconds: u64,
    pub cache_bytes: u64,
    pub batch: usize,
    /// How long a batch nobody waits for may wait to be committed with the next ones.
    pub commit_linger: std::time::Duration,
    pub log_format: LogFormat,
    /// Share of folded events traced with their own span (0 to 1).
    pub trace_events_ratio: f64,
    /// The stream limits: dead letters kept, and the opt-in ones of the events stream.
    pub limits: StreamLimits,
    /// `--state-ttl-days` (`ZERO`: off); a `Duration` so tests can use seconds.
    pub state_ttl: std::time::Duration,
    /// How often idle states are looked for (an hour; tests use less).
    pub state_sweep_every: std::time::Duration,
}

/// Default of [`Config::state_sweep_every`].
pub const STATE_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(3600);

/// Longest `--state-ttl-days` (100 years).
pub const STATE_TTL_DAYS_MAX: u64 = 36_500;

/// What the streams keep (0: no bound).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamLimits {
    /// Most messages of `<PREFIX>_DEAD`, the oldest dropped beyond it.
    pub dead_max_messages: u64,
    /// Oldest event `<PREFIX>_EVENTS` keeps (`ZERO`: forever).
    pub events_max_age: std::time::Duration,
    /// Most bytes of `<PREFIX>_EVENTS`, the oldest dropped beyond it.
    pub events_max_bytes: u64,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            dead_max_messages: DEFAULT_DEAD_MAX_MESSAGES,
            events_max_age: std::time::Duration::ZERO,
            events_max_bytes: 0,
        }
    }
}

impl Config {
    /// A configuration with defaults for `nats_url` and `data_dir` (tests and tools).
    pub fn new(nats_url: &str, data_dir: PathBuf) -> Config {
        Config {
            nats: lockout_nats::NatsArgs::new(nats_url),
            data_dir,
            subjects: Subjects::default(),
            notice_encoding: Encoding::PostcardV2,
            require_caller: false,
            replicas: 1,
            instance: default_instance(),
            partitions: 64,
            lease_seconds: 10,
            cache_bytes: 64 << 20,
            batch: 1000,
            commit_linger: std::time::Duration::from_millis(DEFAULT_COMMIT_LINGER_MS),
            log_format: LogFormat::Human,
            trace_events_ratio: DEFAULT_TRACE_EVENTS_RATIO,
            limits: StreamLimits::default(),
            state_ttl: std::time::Duration::ZERO,
            state_sweep_every: STATE_SWEEP_EVERY,
        }
    }
}

/// `<host name>-<pid>`, with every character outside A-Z, a-z, 0-9, `_` and `-` as `-`.
pub fn default_instance() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "lockoutd".to_owned());
    let host: String = host
        .chars()
        .take(48)
        .map(|c| if c.is_ascii_alphanumeric() || c == '_' || c == '-' { c } else { '-' })
        .collect();
    format!("{host}-{}", std::process::id())
}

impl Config {
    /// sled's page cache: half of `--cache-mb`.
    pub fn sled_cache_bytes(&self) -> u64 {
        self.cache_bytes / 2
    }

    /// The projector's cache of recent user states: the other half.
    pub fn state_cache_bytes(&self) -> usize {
        usize::try_from(self.cache_bytes / 2).unwrap_or(usize::MAX)
    }
}

impl TryFrom<Args> for Config {
    type Error = anyhow::Error;

    fn try_from(a: Args) -> anyhow::Result<Config> {
        let subjects = Subjects::new(&a.prefix).map_err(|e| anyhow::anyhow!("--prefix: {e}"))?;
        anyhow::ensure!((1..=5).contains(&a.replicas), "--replicas must be 1 to 5 (got {})", a.replicas);
        anyhow::ensure!(a.cache_mb >= 1, "--cache-mb must be at least 1");
        anyhow::ensure!((1..=10_000).contains(&a.batch), "--batch must be 1 to 10000 (got {})", a.batch);
        anyhow::ensure!(
            a.commit_linger_ms <= 1_000,
            "--commit-linger-ms must be 0 to 1000 (got {})",
            a.commit_linger_ms
        );
        a.nats.validate().map_err(anyhow::Error::msg)?;
        anyhow::ensure!((1..=1024).contains(&a.partitions), "--partitions must be 1 to 1024 (got {})", a.partitions);
        anyhow::ensure!(
            (3..=300).contains(&a.lease_seconds),
            "--lease-seconds must be 3 to 300 (got {})",
            a.lease_seconds
        );
        let instance = a.instance.unwrap_or_else(default_instance);
        anyhow::ensure!(
            (1..=64).contains(&instance.len())
                && instance.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
            "--instance {instance:?}: use 1 to 64 of A-Z, a-z, 0-9, '_' and '-'"
        );
        anyhow::ensure!(
            a.state_ttl_days <= STATE_TTL_DAYS_MAX,
            "--state-ttl-days must be 0 (off) to {STATE_TTL_DAYS_MAX} (got {})",
            a.state_ttl_days
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&a.trace_events_ratio),
            "--trace-events-ratio must be 0 to 1 (got {})",
            a.trace_events_ratio
        );
        Ok(Config {
            nats: a.nats,
            data_dir: a.data_dir,
            subjects,
            notice_encoding: Encoding::from(a.notice_encoding).with_layout(match a.wire_version {
                1 => lockout_proto::layout::Layout::V1,
                _ => lockout_proto::layout::Layout::V2,
            }),
            require_caller: a.require_caller,
            replicas: a.replicas,
            instance,
            partitions: a.partitions,
            lease_seconds: a.lease_seconds,
            cache_bytes: a.cache_mb << 20,
            batch: a.batch,
            commit_linger: std::time::Duration::from_millis(a.commit_linger_ms),
            log_format: a.log_format,
            trace_events_ratio: a.trace_events_ratio,
            limits: StreamLimits {
                dead_max_messages: a.dead_max_messages,
                events_max_age: std::time::Duration::from_secs(a.events_max_age_days.saturating_mul(86_400)),
                events_max_bytes: a.events_max_bytes,
            },
            state_ttl: std::time::Duration::from_secs(a.state_ttl_days * 86_400),
            state_sweep_every: STATE_SWEEP_EVERY,
        })
    }
}

/// The configuration for the ready line, secrets redacted.
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} instance={} partitions={} lease_seconds={} data_dir={} prefix={} notice_encoding={} require_caller={} replicas={} cache_mb={} batch={} commit_linger_ms={} trace_events_ratio={} dead_max_messages={} events_max_age_days={} events_max_bytes={} state_ttl_days={}",
            self.nats,
            self.instance,
            self.partitions,
            self.lease_seconds,
            self.data_dir.display(),
            self.subjects.prefix(),
            self.notice_encoding.name(),
            self.require_caller,
            self.replicas,
            self.cache_bytes >> 20,
            self.batch,
            self.commit_linger.as_millis(),
            self.trace_events_ratio,
            self.limits.dead_max_messages,
            self.limits.events_max_age.as_secs() / 86_400,
            self.limits.events_max_bytes,
            self.state_ttl.as_secs() / 86_400
        )
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{default_instance, Args, Config, DEFAULT_COMMIT_LINGER_MS};

    fn parse(extra: &[&str]) -> anyhow::Result<Config> {
        let args = ["lockoutd", "--data-dir", "d"].iter().chain(extra).copied();
        Config::try_from(Args::try_parse_from(args)?)
    }

    #[test]
    fn defaults() {
        let c = parse(&[]).unwrap();
        assert_eq!(c.commit_linger, std::time::Duration::from_millis(DEFAULT_COMMIT_LINGER_MS));
        assert_eq!((c.batch, c.replicas, c.cache_bytes), (1000, 1, 256 << 20));
        assert_eq!(c.subjects.prefix(), "lockout");
        assert!(c.to_string().contains(" commit_linger_ms=5 "), "{c}");
        assert_eq!(c.limits, super::StreamLimits::default());
        assert!(
            c.to_string()
                .ends_with(" dead_max_messages=1000000 events_max_age_days=0 events_max_bytes=0 state_ttl_days=0"),
            "{c}"
        );
        assert_eq!(c.state_ttl, std::time::Duration::ZERO);
        assert_eq!(parse(&["--state-ttl-days", "400"]).unwrap().state_ttl.as_secs(), 400 * 86_400);
        let l =
            parse(&["--events-max-age-days", "400", "--events-max-bytes", "1000000000", "--dead-max-messages", "0"])
                .unwrap()
                .limits;
        assert_eq!(
            (l.events_max_age.as_secs(), l.events_max_bytes, l.dead_max_messages),
            (400 * 86_400, 1_000_000_000, 0)
        );
    }

    #[test]
    fn out_of_range_values_are_refused_with_the_flag_and_its_range() {
        let cases: &[(&[&str], &str)] = &[
            (&["--commit-linger-ms", "1001"], "--commit-linger-ms must be 0 to 1000 (got 1001)"),
            (&["--batch", "0"], "--batch must be 1 to 10000 (got 0)"),
            (&["--replicas", "6"], "--replicas must be 1 to 5 (got 6)"),
            (&["--cache-mb", "0"], "--cache-mb must be at least 1"),
            (&["--trace-events-ratio", "1.5"], "--trace-events-ratio must be 0 to 1 (got 1.5)"),
            (&["--nats-user", "u"], "--nats-user and --nats-password go together"),
            (&["--state-ttl-days", "36501"], "--state-ttl-days must be 0 (off) to 36500 (got 36501)"),
        ];
        for (flags, want) in cases {
            let e = parse(flags).expect_err(want);
            assert_eq!(e.to_string(), *want, "{flags:?}");
        }
    }

    #[test]
    fn unknown_enum_values_are_refused_with_the_possible_ones() {
        for (flags, want) in [
            (["--log-format", "xml"], "[possible values: human, json]"),
            (["--notice-encoding", "cbor"], "[possible values: json, postcard]"),
        ] {
            let e = parse(&flags).expect_err(want);
            assert!(e.to_string().contains(want), "{flags:?}: {e}");
        }
    }

    #[test]
    fn the_edges_of_the_ranges_are_taken() {
        assert_eq!(parse(&["--commit-linger-ms", "0"]).unwrap().commit_linger, std::time::Duration::ZERO);
        assert_eq!(parse(&["--commit-linger-ms", "1000"]).unwrap().commit_linger.as_millis(), 1000);
        assert_eq!(parse(&["--batch", "10000"]).unwrap().batch, 10_000);
    }

    #[test]
    fn wire_version_picks_the_postcard_layout_of_what_lockoutd_writes() {
        use lockout_proto::Encoding;
        assert_eq!(parse(&[]).unwrap().notice_encoding, Encoding::PostcardV2);
        assert_eq!(parse(&["--wire-version", "1"]).unwrap().notice_encoding, Encoding::Postcard);
        assert_eq!(
            parse(&["--notice-encoding", "json", "--wire-version", "1"]).unwrap().notice_encoding,
            Encoding::Json
        );
        let e = parse(&["--wire-version", "3"]).unwrap_err();
        assert!(e.to_string().contains("3 is not in 1..=2"), "{e}");
        assert!(!parse(&[]).unwrap().require_caller);
        assert_eq!(parse(&["--instance", "eu-1_a"]).unwrap().instance, "eu-1_a");
        assert_eq!(parse(&[]).unwrap().instance, default_instance());
        let c = parse(&[]).unwrap();
        assert_eq!((c.partitions, c.lease_seconds), (64, 10));
        assert!(parse(&["--partitions", "0"]).is_err() && parse(&["--partitions", "1025"]).is_err());
        assert!(parse(&["--lease-seconds", "2"]).is_err());
        for bad in ["", "a.b", "a b", &"x".repeat(65)] {
            let e = parse(&["--instance", bad]).unwrap_err().to_string();
            assert!(e.contains("--instance"), "{bad:?}: {e}");
        }
        assert!(parse(&["--require-caller"]).unwrap().require_caller);
    }
}
