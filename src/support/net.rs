//! Client address groups: what one "sender" is for every budget keyed on an address (failed-login limits,
//! the share of password checks, connection slots).
//!
//! An IPv4 address is one sender. An IPv6 address is not: a home or cloud customer is routinely given a
//! whole /64 and can pick any of its 2^64 addresses per request, so an IPv6 sender is its /64. An
//! IPv4-mapped IPv6 address (a dual-stack listener) is the IPv4 address it carries.

use std::net::{IpAddr, Ipv6Addr};

/// The sender an address belongs to: the IPv4 address itself, or an IPv6 address's /64 (its low 64 bits
/// zeroed).
pub fn sender(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv6_addresses_of_one_slash_64_are_one_sender_and_ipv4_stays_whole() {
        let a = sender(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd"));
        assert_eq!(a, ip("2001:db8:1:2::"));
        assert_eq!(sender(ip("2001:db8:1:2::1")), a, "another address of the same /64");
        assert_ne!(sender(ip("2001:db8:1:3::1")), a, "the next /64 is another sender");
        assert_ne!(sender(ip("2001:db9:1:2::1")), a);
        assert_eq!(sender(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_ne!(sender(ip("192.0.2.7")), sender(ip("192.0.2.8")), "IPv4 addresses are never grouped");
        assert_eq!(sender(ip("::ffff:192.0.2.7")), ip("192.0.2.7"), "a mapped IPv4 address is that address");
    }
}
