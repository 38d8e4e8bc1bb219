//! A JetStream cluster of nats-server processes on loopback, started from the deploy template
//! `deploy/nats/cluster.conf`: what the scale-out tests kill, pause and restart.
//!
//! Ports (client, route, monitoring) are chosen free before the nodes start, because each
//! node's routes name the others' and a restarted node must come back on its own; if one was
//! taken meanwhile, the whole cluster is started again on new ports. Readiness is the
//! monitoring endpoint's `/healthz` on every node (JetStream current with a meta leader).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::NatsServer;

/// A running cluster; every node is killed and its files removed on drop.
pub struct Cluster {
    nodes: Vec<NatsServer>,
    monitor_ports: Vec<u16>,
}

/// The deploy template the nodes run.
pub fn template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/nats/cluster.conf")
}

impl Cluster {
    /// Starts `n` nodes (n1, n2, …) routed to each other and waits until JetStream has a
    /// meta leader that every node follows.
    pub fn start(n: usize) -> Cluster {
        assert!(n >= 1, "a cluster has at least one node");
        for _ in 0..5 {
            if let Some(c) = Self::try_start(n) {
                c.wait_healthy(Duration::from_secs(60));
                return c;
            }
        }
        panic!("could not start a {n}-node cluster: its ports were taken five times");
    }

    fn try_start(n: usize) -> Option<Cluster> {
        let ports = free_ports(3 * n);
        let (client, rest) = ports.split_at(n);
        let (route, monitor) = rest.split_at(n);
        let routes: Vec<String> = route.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            let mut env = vec![
                ("NODE_NAME".to_string(), format!("n{}", i + 1)),
                ("CLIENT_PORT".to_string(), client[i].to_string()),
                ("CLUSTER_HOST".to_string(), "127.0.0.1".to_string()),
                ("CLUSTER_PORT".to_string(), route[i].to_string()),
            ];
            // The template names three routes: a smaller cluster repeats its last one, a
            // larger one routes to the first three and learns the rest by gossip.
            for k in 0..3 {
                env.push((format!("ROUTE_{}", k + 1), routes[k.min(n - 1)].clone()));
            }
            let args = vec!["-m".to_string(), monitor[i].to_string()];
            nodes.push(NatsServer::try_start_node(&template(), env, client[i], args)?);
        }
        Some(Cluster { nodes, monitor_ports: monitor.to_vec() })
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's `nats://127.0.0.1:<port>`.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// The client URLs joined by commas, as `--nats-url` takes them.
    pub fn url_list(&self) -> String {
        self.urls().join(",")
    }

    /// Node `i` (0-based; its server name is `n{i+1}`), to stop, kill, pause or restart.
    pub fn node(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// The index of the node whose server name is `name` (`n1` → 0).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        let i: usize = name.strip_prefix('n')?.parse().ok()?;
        (1..=self.nodes.len()).contains(&i).then(|| i - 1)
    }

    /// `GET path` on node `i`'s monitoring port: the body when the status is 200.
    pub fn monitor(&self, i: usize, path: &str) -> Option<serde_json::Value> {
        let body = http_get(self.monitor_ports[i], path)?;
        serde_json::from_str(&body).ok()
    }

    /// The index of JetStream's meta leader, as node `i` sees it.
    pub fn meta_leader(&self, i: usize) -> Option<usize> {
        let v = self.monitor(i, "/jsz")?;
        self.index_of(v.get("meta_cluster")?.get("leader")?.as_str()?)
    }

    /// The index of the node that leads `stream` (in the global account), asked of every
    /// running node until one knows.
    pub fn stream_leader(&self, stream: &str) -> Option<usize> {
        (0..self.nodes.len()).filter(|&i| self.nodes[i].pid().is_some()).find_map(|i| {
            let v = self.monitor(i, "/jsz?streams=true")?;
            let accounts = v.get("account_details")?.as_array()?;
            accounts.iter().find_map(|a| {
                a.get("stream_detail")?.as_array()?.iter().find_map(|s| {
                    (s.get("name")?.as_str()? == stream)
                        .then(|| self.index_of(s.get("cluster")?.get("leader")?.as_str()?))
                        .flatten()
                })
            })
        })
    }

    /// Waits until every running node answers `/healthz` with 200 and agrees on a meta leader.
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let running: Vec<usize> = (0..self.nodes.len()).filter(|&i| self.nodes[i].pid().is_some()).collect();
            let healthy = running.iter().all(|&i| http_get(self.monitor_ports[i], "/healthz").is_some());
            let leaders: Vec<Option<usize>> = running.iter().map(|&i| self.meta_leader(i)).collect();
            if healthy && leaders.first().is_some_and(Option::is_some) && leaders.windows(2).all(|w| w[0] == w[1]) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster was not healthy within {timeout:?} (leaders seen: {leaders:?})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `n` distinct loopback ports that were free a moment ago.
pub(crate) fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> =
        (0..n).map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free loopback port")).collect();
    listeners.iter().map(|l| l.local_addr().expect("local address").port()).collect()
}

/// A plain HTTP/1.0 GET on loopback: the body when the status is 200.
pub(crate) fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_owned())
}
