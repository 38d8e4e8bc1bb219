//! Several lockoutd processes sharing the user partitions, on what NATS already has
//! (ARCHITECTURE.md, "Several processes").
//!
//! - [`setup`]: the two KV buckets. `<PREFIX>_CLUSTER` keeps what outlives processes (the
//!   partition count and lease length fixed at first set-up, per-partition publish floors);
//!   `<PREFIX>_LEASES` keeps members and partition leases, and its `max_age` *is* the lease:
//!   the server drops a key nobody renewed for that long.
//! - [`rendezvous`]: which live member should own which partition.
//! - [`lease`]: acquiring (KV create), renewing (compare-and-set on the revision) and
//!   releasing a partition, and the [`lease::Fence`] that says whether work may still be
//!   committed or published for it.
//! - [`coordinator`]: the loop that keeps this process's membership and leases in line with
//!   the assignment, and tells the projector what it owns.

pub mod coordinator;
pub mod lease;
pub mod rendezvous;
pub mod setup;

pub use coordinator::{Coordinator, Handle, Owned};
pub use lease::{Claim, Fence, Holder, Leases, Prior};
pub use setup::{Buckets, ClusterConfig, SetupError};
