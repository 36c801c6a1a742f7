//! IPv4 subnets, and picking one that no host route overlaps.

use std::net::Ipv4Addr;

use crate::CniError;

/// An IPv4 network: address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Net {
    /// The network address.
    pub addr: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
}

impl Ipv4Net {
    /// Parses `a.b.c.d/n`, normalising the address to the network's.
    ///
    /// # Errors
    /// Invalid for anything else.
    pub fn parse(s: &str) -> Result<Ipv4Net, CniError> {
        let bad = || CniError::Invalid(format!("invalid subnet {s:?}: use a.b.c.d/n"));
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(CniError::Invalid(format!(
                "subnet {s:?}: prefix length must be 8 to 30"
            )));
        }
        Ok(Ipv4Net {
            addr: Ipv4Addr::from(u32::from(addr) & mask(prefix)),
            prefix,
        })
    }

    /// The first host address, used as the gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + 1)
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        let m = mask(self.prefix.min(other.prefix));
        u32::from(self.addr) & m == u32::from(other.addr) & m
    }
}

impl std::fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    }
}

/// The host's IPv4 routes (`/proc/net/route`), default route excluded.
pub fn host_routes() -> Vec<Ipv4Net> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let m = u32::from_str_radix(f.get(7)?, 16).ok()?;
            // The file prints the network-order words as native integers.
            let prefix = m.count_ones() as u8;
            (prefix > 0).then(|| Ipv4Net {
                addr: Ipv4Addr::from(dst.to_ne_bytes()),
                prefix,
            })
        })
        .collect()
}

/// The first /16 of 172.18–31 and then 10.89–254 that overlaps neither a
/// host route nor one of `taken`.
///
/// # Errors
/// Invalid when every candidate is used.
pub fn pick_subnet(taken: &[Ipv4Net]) -> Result<Ipv4Net, CniError> {
    let routes = host_routes();
    let candidates = (18..=31u8)
        .map(|b| Ipv4Addr::new(172, b, 0, 0))
        .chain((89..=254u8).map(|b| Ipv4Addr::new(10, b, 0, 0)));
    for addr in candidates {
        let n = Ipv4Net { addr, prefix: 16 };
        if !routes.iter().chain(taken).any(|r| r.overlaps(&n)) {
            return Ok(n);
        }
    }
    Err(CniError::Invalid(
        "no free private subnet for a new network".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_parse_overlap_and_are_picked_around_others() {
        let n = Ipv4Net::parse("172.18.5.9/16").unwrap();
        assert_eq!(n.to_string(), "172.18.0.0/16");
        assert_eq!(n.gateway().to_string(), "172.18.0.1");
        assert!(n.overlaps(&Ipv4Net::parse("172.18.200.0/24").unwrap()));
        assert!(!n.overlaps(&Ipv4Net::parse("172.19.0.0/16").unwrap()));
        assert!(Ipv4Net::parse("10.0.0.0").is_err());
        assert!(Ipv4Net::parse("10.0.0.0/31").is_err());
        let taken = [Ipv4Net::parse("172.18.0.0/15").unwrap()];
        let p = pick_subnet(&taken).unwrap();
        assert!(!p.overlaps(&taken[0]));
        for r in host_routes() {
            assert!(!p.overlaps(&r));
        }
    }
}
