//! Service cluster IP and NodePort allocation, as upstream's `ipallocator` and
//! `portallocator` behave: a user-chosen value must lie in the range and be free, anything
//! else is allocated; what a Service holds is released with it (the used set is computed from
//! the stored Services on every allocation, so there is no separate bitmap to keep in sync).

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::ops::RangeInclusive;

use berth_core::FieldError;
use rand::Rng;
use serde_json::{Value, json};

/// The ranges Services get their addresses from (`--service-cidr`,
/// `--service-node-port-range`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRanges {
    network: Ipv4Addr,
    prefix: u8,
    node_ports: RangeInclusive<u16>,
}

impl Default for ServiceRanges {
    /// Upstream's defaults: `10.96.0.0/12` and `30000-32767`.
    fn default() -> Self {
        ServiceRanges { network: Ipv4Addr::new(10, 96, 0, 0), prefix: 12, node_ports: 30000..=32767 }
    }
}

impl ServiceRanges {
    /// Parses `a.b.c.d/n` (n at most 30, so there are usable addresses) and `first-last`.
    pub fn parse(cidr: &str, node_ports: &str) -> Result<Self, String> {
        let (addr, prefix) = cidr.split_once('/').ok_or_else(|| format!("{cidr:?} is not a CIDR"))?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| format!("{cidr:?}: not an IPv4 address"))?;
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| (8..=30).contains(p))
            .ok_or_else(|| format!("{cidr:?}: the prefix length must be between 8 and 30"))?;
        let mask = u32::MAX << (32 - prefix);
        let network = Ipv4Addr::from(u32::from(addr) & mask);
        let (first, last) = node_ports.split_once('-').ok_or_else(|| format!("{node_ports:?} is not FIRST-LAST"))?;
        let first: u16 = first.trim().parse().map_err(|_| format!("{node_ports:?}: bad first port"))?;
        let last: u16 = last.trim().parse().map_err(|_| format!("{node_ports:?}: bad last port"))?;
        if first == 0 || first > last {
            return Err(format!("{node_ports:?}: the range is empty"));
        }
        Ok(ServiceRanges { network, prefix, node_ports: first..=last })
    }

    fn size(&self) -> u32 {
        1u32 << (32 - self.prefix)
    }

    fn at(&self, offset: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + offset)
    }

    /// The CIDR as upstream prints it in errors.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.network, self.prefix)
    }

    /// The `kubernetes` Service's address: the first of the range.
    pub fn kubernetes_ip(&self) -> Ipv4Addr {
        self.at(1)
    }

    /// The cluster DNS Service's address: the tenth, by the common convention.
    pub fn dns_ip(&self) -> Ipv4Addr {
        self.at(10)
    }

    /// The NodePort range.
    pub fn node_ports(&self) -> RangeInclusive<u16> {
        self.node_ports.clone()
    }

    /// Whether `ip` may be a cluster IP: inside the range, neither its network nor its
    /// broadcast address.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let offset = u32::from(ip).wrapping_sub(u32::from(self.network));
        offset >= 1 && offset < self.size() - 1
    }

    /// A free address. Dynamic allocation starts above the low band that upstream keeps for
    /// chosen addresses (`kubernetes`, the DNS Service), falling back to it when the rest is full.
    pub fn allocate_ip(&self, used: &HashSet<String>) -> Option<Ipv4Addr> {
        let size = self.size();
        let low_band = (size / 16).clamp(16, 256).min(size - 2);
        let mut rng = rand::rng();
        if low_band + 1 < size - 1 {
            for _ in 0..200 {
                let ip = self.at(rng.random_range(low_band + 1..size - 1));
                if !used.contains(&ip.to_string()) {
                    return Some(ip);
                }
            }
        }
        (1..size - 1).rev().map(|o| self.at(o)).find(|ip| !used.contains(&ip.to_string()))
    }

    /// Checks a chosen cluster IP; `Err` is the field error upstream reports.
    pub fn check_chosen_ip(&self, want: &str, used: &HashSet<String>) -> Result<(), FieldError> {
        let value = json!([want]);
        let Ok(ip) = want.parse::<Ipv4Addr>() else {
            return Err(FieldError::invalid(
                "spec.clusterIPs",
                &value,
                &format!("failed to allocate IP {want}: not a valid IPv4 address"),
            ));
        };
        if !self.contains(ip) {
            return Err(FieldError::invalid(
                "spec.clusterIPs",
                &value,
                &format!(
                    "failed to allocate IP {want}: the provided IP ({want}) is not in the valid range. The range of valid IPs is {}",
                    self.cidr()
                ),
            ));
        }
        if used.contains(want) {
            return Err(FieldError::invalid(
                "spec.clusterIPs",
                &value,
                &format!("failed to allocate IP {want}: provided IP is already allocated"),
            ));
        }
        Ok(())
    }

    /// Checks a chosen NodePort of `spec.ports[index]`.
    pub fn check_chosen_port(&self, index: usize, port: i64, used: &HashSet<i64>) -> Result<(), FieldError> {
        let field = format!("spec.ports[{index}].nodePort");
        let in_range = u16::try_from(port).is_ok_and(|p| self.node_ports.contains(&p));
        if !in_range {
            return Err(FieldError::invalid(
                field,
                &Value::from(port),
                &format!(
                    "provided port is not in the valid range. The range of valid ports is {}-{}",
                    self.node_ports.start(),
                    self.node_ports.end()
                ),
            ));
        }
        if used.contains(&port) {
            return Err(FieldError::invalid(field, &Value::from(port), "provided port is already allocated"));
        }
        Ok(())
    }

    /// A free NodePort, chosen at random as upstream does (so that ports freed and taken again
    /// are not reused at once).
    pub fn allocate_port(&self, used: &HashSet<i64>) -> Option<i64> {
        let (first, last) = (i64::from(*self.node_ports.start()), i64::from(*self.node_ports.end()));
        let mut rng = rand::rng();
        for _ in 0..100 {
            let port = rng.random_range(first..=last);
            if !used.contains(&port) {
                return Some(port);
            }
        }
        (first..=last).find(|p| !used.contains(p))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_bounds_the_range() {
        let r = ServiceRanges::parse("10.181.3.7/24", "30060-30079").unwrap();
        assert_eq!(r.cidr(), "10.181.3.0/24");
        assert_eq!(r.kubernetes_ip(), Ipv4Addr::new(10, 181, 3, 1));
        assert_eq!(r.dns_ip(), Ipv4Addr::new(10, 181, 3, 10));
        assert!(r.contains(Ipv4Addr::new(10, 181, 3, 254)));
        assert!(!r.contains(Ipv4Addr::new(10, 181, 3, 255)));
        assert!(!r.contains(Ipv4Addr::new(10, 181, 3, 0)));
        assert!(!r.contains(Ipv4Addr::new(10, 181, 4, 1)));
        assert!(ServiceRanges::parse("10.0.0.0/31", "1-2").is_err());
        assert!(ServiceRanges::parse("10.0.0.0/24", "5-4").is_err());
    }

    #[test]
    fn allocation_avoids_used_and_reserved() {
        let r = ServiceRanges::parse("10.0.0.0/28", "30000-30001").unwrap();
        let mut used: HashSet<String> = HashSet::new();
        for _ in 0..14 {
            let ip = r.allocate_ip(&used).unwrap();
            assert!(r.contains(ip));
            assert!(used.insert(ip.to_string()));
        }
        assert_eq!(r.allocate_ip(&used), None);
        let mut ports = HashSet::new();
        ports.insert(r.allocate_port(&ports).unwrap());
        ports.insert(r.allocate_port(&ports).unwrap());
        assert_eq!(r.allocate_port(&ports), None);
    }

    #[test]
    fn chosen_values_are_checked() {
        let r = ServiceRanges::default();
        let used: HashSet<String> = ["10.96.0.5".to_owned()].into();
        assert!(r.check_chosen_ip("10.96.0.6", &used).is_ok());
        let taken = r.check_chosen_ip("10.96.0.5", &used).unwrap_err();
        assert!(taken.message.contains("already allocated"), "{taken:?}");
        let outside = r.check_chosen_ip("192.168.0.1", &used).unwrap_err();
        assert!(outside.message.contains("not in the valid range"), "{outside:?}");
        let ports: HashSet<i64> = [30080].into();
        assert!(r.check_chosen_port(0, 30081, &ports).is_ok());
        assert!(r.check_chosen_port(1, 30080, &ports).unwrap_err().message.contains("already allocated"));
        assert!(r.check_chosen_port(0, 80, &ports).unwrap_err().message.contains("30000-32767"));
    }
}
