//! A notifier: prints each `locked` notice as the e-mail that would tell the user, the
//! notice's `message` as its body. Each notice goes through the handler once; a notice whose
//! handler did not finish (the process died meanwhile) comes again after `ACK_WAIT_SECS`.
//!
//! ```sh
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p lockout-client --example notifier -- mailer ./data/mailer
//! ```
//!
//! Optional third and fourth arguments: how long sending takes in ms (default 0; tests use it
//! to stop the process mid-send) and the consumer's ack wait in seconds (default 30).

use std::io::Write as _;
use std::time::Duration;

use lockout_client::lockout_proto::Notice;
use lockout_client::{Client, Notices, NoticesConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(durable), Some(dir)) = (args.first(), args.get(1)) else {
        anyhow::bail!("usage: notifier CONSUMER HANDLED_DIR [SEND_MS] [ACK_WAIT_SECS] (NATS_URL names the server)");
    };
    let send = Duration::from_millis(args.get(2).map_or(Ok(0), |s| s.parse())?);
    let ack_wait = Duration::from_secs(args.get(3).map_or(Ok(30), |s| s.parse())?);
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());

    let mut config = NoticesConfig::new(durable, dir).kind("locked");
    config.ack_wait = ack_wait;
    config.from_start = true;
    let notices = Notices::new(&Client::connect(&url).await?, config).await?;
    notices
        .run(|notice| async move {
            let Notice::Locked(n) = notice else { return Ok(()) };
            eprintln!("sending {}", n.id);
            tokio::time::sleep(send).await;
            let mut out = std::io::stdout().lock();
            writeln!(
                out,
                "To: {}\nSubject: Your {} account was locked\nMessage-ID: <{}@lockout>\n",
                n.user, n.tenant, n.id
            )?;
            writeln!(out, "{}\n.", n.message)?;
            out.flush()
        })
        .await?;
    Ok(())
}
