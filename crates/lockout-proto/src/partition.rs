//! User partitions: which of `N` partitions a user's events belong to when several lockoutd
//! processes share the work (schemas/README.md, "Partitions").
//!
//! The function is the one nats-server's subject mapping `{{partition(N,1,3)}}` computes over
//! tokens 1 and 3 of `<tenant>.u.<utok>.<type>`: 32-bit FNV-1a of the two tokens' bytes,
//! concatenated without a separator, modulo `N`. The integration suite checks it against a
//! real server's mapping.

use crate::ids::{Tenant, UserId};

/// Partitions when `--partitions` is not given.
pub const DEFAULT: u32 = 64;
/// Most partitions a deployment may have.
pub const MAX: u32 = 1024;

/// The partition of the user whose subject tokens are `tenant` and `utok`, out of `n` (≥ 1).
pub fn of_tokens(tenant: &str, utok: &str, n: u32) -> u32 {
    assert!(n >= 1, "at least one partition");
    fnv1a32(tenant.as_bytes().iter().chain(utok.as_bytes())) % n
}

/// The partition of `user` of `tenant`, out of `n` (≥ 1).
pub fn of(tenant: &Tenant, user: &UserId, n: u32) -> u32 {
    of_tokens(tenant.as_str(), &user.token(), n)
}

/// The partition of the user id `user` (its text, as stored) of `tenant`, out of `n` (≥ 1).
pub fn of_user(tenant: &str, user: &str, n: u32) -> u32 {
    use base64::Engine as _;
    of_tokens(tenant, &base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user.as_bytes()), n)
}

/// The partition of an IP's count (contract v2, "IP blocks") of `tenant`, out of `n` (≥ 1):
/// FNV-1a of the tenant's bytes then the canonical IP's, as for users. The process that owns
/// it counts the IP's failures and publishes its `ip_blocked`/`ip_unblocked` notices.
pub fn of_ip(tenant: &str, canonical_ip: &str, n: u32) -> u32 {
    assert!(n >= 1, "at least one partition");
    fnv1a32(tenant.as_bytes().iter().chain(canonical_ip.as_bytes())) % n
}

/// A set of partitions out of `n`: those a process folds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Set {
    n: u32,
    bits: Vec<u64>,
}

impl Set {
    /// No partition of `n`.
    pub fn none(n: u32) -> Set {
        assert!((1..=MAX).contains(&n), "1 to {MAX} partitions");
        Set { n, bits: vec![0; n.div_ceil(64) as usize] }
    }

    /// Every partition of `n`: what one process alone folds.
    pub fn all(n: u32) -> Set {
        let mut s = Set::none(n);
        for p in 0..n {
            s.insert(p);
        }
        s
    }

    /// The partitions `ps` of `n` (each below `n`).
    pub fn of(n: u32, ps: impl IntoIterator<Item = u32>) -> Set {
        let mut s = Set::none(n);
        for p in ps {
            s.insert(p);
        }
        s
    }

    /// How many partitions there are in all (not in the set).
    pub fn count(&self) -> u32 {
        self.n
    }

    pub fn insert(&mut self, p: u32) {
        assert!(p < self.n, "partition {p} of {}", self.n);
        self.bits[(p / 64) as usize] |= 1 << (p % 64);
    }

    pub fn remove(&mut self, p: u32) {
        if p < self.n {
            self.bits[(p / 64) as usize] &= !(1 << (p % 64));
        }
    }

    pub fn contains(&self, p: u32) -> bool {
        p < self.n && self.bits[(p / 64) as usize] & (1 << (p % 64)) != 0
    }

    pub fn is_all(&self) -> bool {
        self.len() == self.n
    }

    pub fn is_empty(&self) -> bool {
        self.bits.iter().all(|w| *w == 0)
    }

    pub fn len(&self) -> u32 {
        self.bits.iter().map(|w| w.count_ones()).sum()
    }

    /// The partitions in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.n).filter(|p| self.contains(*p))
    }

    /// Whether the user with subject tokens `tenant` and `utok` is in the set.
    pub fn has_user_tokens(&self, tenant: &str, utok: &str) -> bool {
        self.is_all() || self.contains(of_tokens(tenant, utok, self.n))
    }

    /// Whether the count of `canonical_ip` of `tenant` is in the set.
    pub fn has_ip(&self, tenant: &str, canonical_ip: &str) -> bool {
        self.is_all() || self.contains(of_ip(tenant, canonical_ip, self.n))
    }

    /// The set as bytes: `n` (u16 BE) then one bit per partition, lowest first.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = u16::try_from(self.n).expect("at most 1024").to_be_bytes().to_vec();
        b.extend((0..self.n.div_ceil(8)).map(|i| (self.bits[(i / 8) as usize] >> ((i % 8) * 8)) as u8));
        b
    }

    /// Reads [`Set::to_bytes`].
    pub fn from_bytes(b: &[u8]) -> Option<Set> {
        let n = u32::from(u16::from_be_bytes(b.get(..2)?.try_into().ok()?));
        let body = b.get(2..)?;
        if !(1..=MAX).contains(&n) || body.len() != n.div_ceil(8) as usize {
            return None;
        }
        let mut s = Set::none(n);
        for p in 0..n {
            if body[(p / 8) as usize] & (1 << (p % 8)) != 0 {
                s.insert(p);
            }
        }
        Some(s)
    }
}

impl std::fmt::Display for Set {
    /// `all`, `none`, or the partitions as ranges: `0-3,7,9-10`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_all() {
            return f.write_str("all");
        }
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        let mut ps = self.iter().peekable();
        while let Some(start) = ps.next() {
            let mut end = start;
            while ps.peek() == Some(&(end + 1)) {
                end = ps.next().expect("peeked");
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if start == end {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
        }
        Ok(())
    }
}

/// Checks a partition count given by an operator.
pub fn check_count(n: u32) -> Result<u32, String> {
    if (1..=MAX).contains(&n) {
        Ok(n)
    } else {
        Err(format!("--partitions {n} is out of range: use 1 to {MAX} (the default is {DEFAULT})"))
    }
}

/// 32-bit FNV-1a of `bytes` (also what IP counts hash users with).
pub fn fnv1a32<'a>(bytes: impl Iterator<Item = &'a u8>) -> u32 {
    bytes.fold(0x811c_9dc5_u32, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a32_reference_vectors() {
        // The published FNV-1a test vectors.
        assert_eq!(fnv1a32(b"".iter()), 0x811c_9dc5);
        assert_eq!(fnv1a32(b"a".iter()), 0xe40c_292c);
        assert_eq!(fnv1a32(b"foobar".iter()), 0xbf9c_f968);
    }

    #[test]
    fn the_documented_example() {
        // schemas/README.md: tenant acme, user alice (YWxpY2U), 64 partitions → 47.
        let tenant = Tenant::parse("acme").unwrap();
        let user = UserId::parse("alice").unwrap();
        assert_eq!(user.token(), "YWxpY2U");
        assert_eq!(of(&tenant, &user, 64), 47);
        assert_eq!(of_user("acme", "alice", 64), 47);
        assert_eq!(of(&tenant, &user, 1), 0);
    }

    #[test]
    fn sets_hold_what_was_put_and_round_trip() {
        let mut s = Set::of(70, [0, 3, 64, 69]);
        assert_eq!((s.len(), s.contains(3), s.contains(4), s.contains(70)), (4, true, false, false));
        assert_eq!(s.to_string(), "0,3,64,69");
        assert_eq!(Set::from_bytes(&s.to_bytes()), Some(s.clone()));
        s.remove(3);
        s.insert(1);
        s.insert(2);
        assert_eq!(s.to_string(), "0-2,64,69");
        assert_eq!((Set::all(5).to_string(), Set::none(5).to_string()), ("all".into(), "none".into()));
        assert!(Set::all(1).is_all() && Set::all(1).has_user_tokens("t", "u"));
        assert_eq!(Set::from_bytes(&[0, 9, 0xff]), None, "9 partitions take two bytes");
        assert_eq!(Set::from_bytes(&[0, 0]), None);
        assert_eq!(Set::from_bytes(&Set::all(1024).to_bytes()), Some(Set::all(1024)));
    }

    #[test]
    fn every_user_and_ip_is_in_exactly_one_of_a_split() {
        let (a, b) = (Set::of(8, [0, 2, 4, 6]), Set::of(8, [1, 3, 5, 7]));
        for i in 0..200 {
            let (t, u) = (format!("t{}", i % 3), format!("u{i}"));
            assert!(a.has_user_tokens(&t, &u) != b.has_user_tokens(&t, &u));
            let ip = format!("10.0.0.{i}");
            assert!(a.has_ip(&t, &ip) != b.has_ip(&t, &ip));
        }
    }

    #[test]
    fn counts_are_checked() {
        assert!(check_count(0).is_err());
        assert_eq!(check_count(1), Ok(1));
        assert_eq!(check_count(MAX), Ok(MAX));
        assert!(check_count(MAX + 1).unwrap_err().contains("1 to 1024"));
    }
}
