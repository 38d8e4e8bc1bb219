//! Which live member should own a partition: rendezvous (highest random weight) hashing.
//!
//! Every member scores every partition with a stable hash of (member, partition) and the
//! highest score wins. All members compute the same answer from the same member list, and
//! when a member joins or leaves only the partitions it wins or won move (about 1/N of
//! them). The hash is fixed here (FNV-1a 64 then SplitMix64's finalizer), never std's
//! `DefaultHasher`, whose output may change between Rust releases: processes built by
//! different compilers must agree.

/// The score of `member` for partition `p`.
pub fn score(member: &str, p: u32) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325_u64;
    for &b in member.as_bytes().iter().chain(&[0]).chain(&p.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    }
    // SplitMix64's finalizer spreads FNV's weak low bits over the whole word.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The member that should own partition `p`, if there is any member. Ties (which a 64-bit
/// hash makes vanishingly rare) go to the smaller name, so the answer never depends on order.
pub fn owner<'a, I>(members: I, p: u32) -> Option<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    members.into_iter().max_by(|a, b| score(a, p).cmp(&score(b, p)).then_with(|| b.cmp(a)))
}

/// The partitions out of `n` that `me` should own among `members` (which include `me`).
pub fn assigned(members: &[&str], me: &str, n: u32) -> Vec<u32> {
    (0..n).filter(|&p| owner(members.iter().copied(), p) == Some(me)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn one_member_owns_everything() {
        assert_eq!(assigned(&["a"], "a", 64).len(), 64);
        assert_eq!(owner(std::iter::empty(), 3), None);
    }

    #[test]
    fn scores_are_stable_across_builds() {
        // Pinned (computed by an independent Python copy of the function): a change here
        // moves partitions between processes of mixed versions.
        assert_eq!(score("n1", 0), 0x951b_bfcd_b373_ec7d);
        assert_eq!(score("n1", 1), 0xe42f_e846_a89a_e6a2);
        assert_eq!(score("lockoutd-a", 7), 0xac81_52af_8299_ba29);
    }

    proptest! {
        /// Every partition has exactly one owner, whatever the order members are listed in.
        #[test]
        fn every_partition_has_one_owner(names in proptest::collection::btree_set("[a-z0-9-]{1,12}", 1..8), n in 1u32..256) {
            let members: Vec<&str> = names.iter().map(String::as_str).collect();
            let mut reversed = members.clone();
            reversed.reverse();
            let mut owned = vec![0u32; n as usize];
            for m in &members {
                for p in assigned(&members, m, n) {
                    owned[p as usize] += 1;
                }
            }
            prop_assert!(owned.iter().all(|&c| c == 1));
            for p in 0..n {
                prop_assert_eq!(owner(members.iter().copied(), p), owner(reversed.iter().copied(), p));
            }
        }

        /// A member joining takes partitions only for itself: no other partition moves.
        #[test]
        fn a_join_moves_only_what_the_newcomer_takes(names in proptest::collection::btree_set("[a-z0-9-]{1,12}", 2..8), n in 1u32..256) {
            let all: Vec<&str> = names.iter().map(String::as_str).collect();
            let (newcomer, before) = all.split_last().unwrap();
            for p in 0..n {
                let was = owner(before.iter().copied(), p).unwrap();
                let is = owner(all.iter().copied(), p).unwrap();
                prop_assert!(is == was || is == *newcomer);
            }
        }
    }

    /// Balance: with 3 members and 64 partitions, nobody holds more than twice its share, and
    /// over many member sets the average share is a third.
    #[test]
    fn assignment_is_balanced() {
        let mut worst = 0usize;
        let mut total = 0usize;
        for run in 0..200 {
            let names = [format!("a{run}"), format!("b{run}"), format!("c{run}")];
            let members: Vec<&str> = names.iter().map(String::as_str).collect();
            for m in &members {
                let k = assigned(&members, m, 64).len();
                worst = worst.max(k);
                total += k;
            }
        }
        assert_eq!(total, 200 * 64);
        assert!(worst <= 2 * 64 / 3, "a member held {worst} of 64 partitions");
    }
}
