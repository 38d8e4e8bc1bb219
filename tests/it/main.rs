//! Integration tests: lockoutd against a real nats-server and a real sled store.
//! Each test starts its own server on a free loopback port with a temp store.

mod client;
mod cluster;
mod console;
mod ctl;
mod dead;
mod faults;
mod linger;
mod oracle;
mod protection;
mod recovery;
mod scaleout;
mod scenarios;
mod security;
mod service;
mod spraying;
mod support;
