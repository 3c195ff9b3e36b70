//! The client's address: the peer, or the client a trusted proxy names in `X-Forwarded-For`.
//! The one place that decides it, for limits, logs and the `X-Forwarded-For` sent upstream.

use std::net::IpAddr;

use http::HeaderMap;

/// Whether `ip` is in one of the trusted networks.
pub fn is_trusted(ip: IpAddr, networks: &[(IpAddr, u8)]) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    networks.iter().any(|(net, prefix)| match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(*n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(*n) & mask
        }
        _ => false,
    })
}

/// The client's address: the peer itself, or — when the peer is a trusted proxy — the
/// rightmost `X-Forwarded-For` entry that is not a trusted proxy (entries to its left could
/// have been written by the client).
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[(IpAddr, u8)]) -> IpAddr {
    if !is_trusted(peer, trusted) {
        return peer;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .find(|ip| !is_trusted(*ip, trusted))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn trusted_networks_match_by_prefix() {
        let nets = [
            ("10.0.0.0".parse().unwrap(), 8),
            ("::1".parse().unwrap(), 128),
            ("192.168.1.7".parse().unwrap(), 32),
        ];
        for ip in ["10.1.2.3", "::1", "192.168.1.7", "::ffff:10.9.9.9"] {
            assert!(is_trusted(ip.parse().unwrap(), &nets), "{ip}");
        }
        for ip in ["11.0.0.1", "192.168.1.8", "::2", "127.0.0.1"] {
            assert!(!is_trusted(ip.parse().unwrap(), &nets), "{ip}");
        }
        assert!(is_trusted(
            "8.8.8.8".parse().unwrap(),
            &[("0.0.0.0".parse().unwrap(), 0)]
        ));
    }

    #[test]
    fn the_client_address_comes_from_trusted_proxies_only() {
        let nets = [("10.0.0.0".parse().unwrap(), 8)];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("1.1.1.1, 2.2.2.2, 10.0.0.5"),
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            client_ip(ip("10.0.0.9"), &h, &nets),
            ip("2.2.2.2"),
            "rightmost untrusted entry"
        );
        assert_eq!(
            client_ip(ip("8.8.8.8"), &h, &nets),
            ip("8.8.8.8"),
            "an untrusted peer's header is ignored"
        );
        assert_eq!(
            client_ip(ip("10.0.0.9"), &HeaderMap::new(), &nets),
            ip("10.0.0.9")
        );
    }
}
