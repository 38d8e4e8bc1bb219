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
        assert_eq!(of(&tenant, &user, 1), 0);
    }

    #[test]
    fn counts_are_checked() {
        assert!(check_count(0).is_err());
        assert_eq!(check_count(1), Ok(1));
        assert_eq!(check_count(MAX), Ok(MAX));
        assert!(check_count(MAX + 1).unwrap_err().contains("1 to 1024"));
    }
}
