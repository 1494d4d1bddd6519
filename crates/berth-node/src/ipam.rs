//! Pod IP allocation, persisted as one file per address (named after the address, holding the
//! owner's pod UID) so a restarted Berth never hands out an address a live pod still has.
//! Allocation continues after the last address handed out, so a freed address is not reused
//! at once (a peer may still hold it in a cache).
//!
//! The files are tiny and created with `O_EXCL`; the calls are synchronous on purpose and
//! serialised by a mutex that is never held across an `.await`. Which address a pod holds is
//! also kept in memory (read from the files once, at open): a start looks its pod up without
//! reading one file per running pod. The files stay the truth for which addresses are taken.

use std::collections::HashMap;
use std::io::{ErrorKind, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::Ipv4Cidr;

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("no free address left in pod CIDR {0}")]
    Exhausted(Ipv4Cidr),
    #[error("IP allocation store {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const LAST_RESERVED: &str = "last_reserved";

pub struct Ipam {
    dir: PathBuf,
    cidr: Ipv4Cidr,
    /// Owner (pod UID) -> its address, for the allocations this directory holds.
    owners: Mutex<HashMap<String, Ipv4Addr>>,
}

impl Ipam {
    pub fn open(dir: impl Into<PathBuf>, cidr: Ipv4Cidr) -> Result<Ipam, IpamError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(|source| IpamError::Io { path: dir.clone(), source })?;
        let ipam = Ipam { dir, cidr, owners: Mutex::new(HashMap::new()) };
        let owners = ipam.allocations_on_disk()?.into_iter().map(|(ip, owner)| (owner, ip)).collect();
        *ipam.lock() = owners;
        Ok(ipam)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Ipv4Addr>> {
        self.owners.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn io(path: &Path) -> impl FnOnce(std::io::Error) -> IpamError + '_ {
        move |source| IpamError::Io { path: path.to_owned(), source }
    }

    /// The address `owner` holds, or a newly reserved one.
    pub fn allocate(&self, owner: &str) -> Result<Ipv4Addr, IpamError> {
        let mut owners = self.lock();
        if let Some(ip) = owners.get(owner) {
            return Ok(*ip);
        }
        let (first, last) = self.cidr.pod_range();
        let last_path = self.dir.join(LAST_RESERVED);
        let previous = std::fs::read_to_string(&last_path)
            .ok()
            .and_then(|text| text.trim().parse::<Ipv4Addr>().ok())
            .map(u32::from)
            .filter(|ip| (first..=last).contains(ip));
        let start = previous.map_or(first, |ip| if ip >= last { first } else { ip + 1 });
        let size = last - first + 1;
        for step in 0..size {
            let candidate = first + (start - first + step) % size;
            let ip = Ipv4Addr::from(candidate);
            let path = self.dir.join(ip.to_string());
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut file) => {
                    file.write_all(owner.as_bytes()).map_err(Self::io(&path))?;
                    std::fs::write(&last_path, ip.to_string()).map_err(Self::io(&last_path))?;
                    owners.insert(owner.to_owned(), ip);
                    return Ok(ip);
                }
                Err(error) if error.kind() == ErrorKind::AlreadyExists => continue,
                Err(error) => return Err(Self::io(&path)(error)),
            }
        }
        Err(IpamError::Exhausted(self.cidr))
    }

    /// Frees `ip` if `owner` holds it.
    pub fn release(&self, ip: Ipv4Addr, owner: &str) -> Result<(), IpamError> {
        let mut owners = self.lock();
        if owners.get(owner) == Some(&ip) {
            owners.remove(owner);
        }
        let path = self.dir.join(ip.to_string());
        match std::fs::read_to_string(&path) {
            Ok(holder) if holder.trim() == owner => std::fs::remove_file(&path).map_err(Self::io(&path)),
            Ok(_) => Ok(()),
            Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
            Err(error) => Err(Self::io(&path)(error)),
        }
    }

    /// The address held by `owner`, if any.
    pub fn find(&self, owner: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self.lock().get(owner).copied())
    }

    /// Every reserved address with its owner.
    pub fn allocations(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let _owners = self.lock();
        self.allocations_on_disk()
    }

    fn allocations_on_disk(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let entries = std::fs::read_dir(&self.dir).map_err(Self::io(&self.dir))?;
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(Self::io(&self.dir))?;
            let Some(ip) = entry.file_name().to_str().and_then(|name| name.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            if let Ok(holder) = std::fs::read_to_string(entry.path()) {
                found.push((ip, holder.trim().to_owned()));
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Ipv4Cidr {
        s.parse().unwrap()
    }

    #[test]
    fn allocations_are_unique_idempotent_and_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = Ipam::open(dir.path(), cidr("10.90.0.0/16")).unwrap();
        let a = ipam.allocate("pod-a").unwrap();
        let b = ipam.allocate("pod-b").unwrap();
        assert_eq!(a, Ipv4Addr::new(10, 90, 0, 2));
        assert_ne!(a, b);
        assert_eq!(ipam.allocate("pod-a").unwrap(), a);

        // A new allocator over the same directory (Berth restarted) keeps both.
        let reopened = Ipam::open(dir.path(), cidr("10.90.0.0/16")).unwrap();
        assert_eq!(reopened.find("pod-b").unwrap(), Some(b));
        let c = reopened.allocate("pod-c").unwrap();
        assert!(c != a && c != b);
    }

    #[test]
    fn allocation_wraps_around_and_stays_in_range() {
        let dir = tempfile::tempdir().unwrap();
        // /29: network .0, gateway .1, pods .2 to .6, broadcast .7.
        let ipam = Ipam::open(dir.path(), cidr("10.91.0.0/29")).unwrap();
        let mut held: Vec<_> = (0..5).map(|i| ipam.allocate(&format!("pod-{i}")).unwrap()).collect();
        held.sort();
        assert_eq!(held.first(), Some(&Ipv4Addr::new(10, 91, 0, 2)));
        assert_eq!(held.last(), Some(&Ipv4Addr::new(10, 91, 0, 6)));
        assert!(matches!(ipam.allocate("pod-x"), Err(IpamError::Exhausted(_))));

        ipam.release(Ipv4Addr::new(10, 91, 0, 3), "someone-else").unwrap();
        assert!(matches!(ipam.allocate("pod-x"), Err(IpamError::Exhausted(_))));
        ipam.release(Ipv4Addr::new(10, 91, 0, 3), "pod-1").unwrap();
        ipam.release(Ipv4Addr::new(10, 91, 0, 4), "pod-2").unwrap();
        // The cursor is after .6, so allocation wraps to the lowest free address.
        assert_eq!(ipam.allocate("pod-x").unwrap(), Ipv4Addr::new(10, 91, 0, 3));
        assert_eq!(ipam.allocate("pod-y").unwrap(), Ipv4Addr::new(10, 91, 0, 4));
    }
}
