//! A toy login endpoint: one login per line on stdin (`<user> <password> <ip>`), one answer per
//! line on stdout (`ok`, `wrong password`, or `refused: <what>`). Passwords come from a fixture
//! file of `user:password` lines. Each login is checked with the lockout service before the
//! password is looked at, and its outcome recorded after.
//!
//! ```sh
//! NATS_URL=nats://127.0.0.1:4222 cargo run -p lockout-client --example gateway -- acme passwords.txt
//! ```

use std::collections::HashMap;

use lockout_client::{Client, Gateway, GatewayConfig, Login};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(tenant), Some(fixture)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: gateway TENANT PASSWORDS_FILE (lines of user:password; NATS_URL names the server)");
    };
    let passwords: HashMap<String, String> = std::fs::read_to_string(&fixture)?
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(u, p)| (u.to_owned(), p.to_owned()))
        .collect();
    let url = std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());

    // The gateway itself: check → verify → record.
    let gateway = Gateway::new(&Client::connect(&url).await?, GatewayConfig::default());
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let [user, password, ip] = line.split_whitespace().collect::<Vec<_>>()[..] else { continue };
        let login = Login::password(&tenant, user, ip).with_client("toy-gateway");
        let decision = gateway.check(&login).await?;
        let answer = if !decision.allowed {
            format!("refused: {}", decision.blocked_by.map_or("the service is unavailable", <&str>::from))
        } else {
            let ok = passwords.get(user).is_some_and(|p| p == password);
            gateway.record(&login, ok)?;
            if ok {
                "ok".to_owned()
            } else {
                "wrong password".to_owned()
            }
        };
        println!("{answer}");
    }
    gateway.flush().await;
    Ok(())
}
