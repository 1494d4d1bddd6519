//! Machine-wide network slots for test servers.
//!
//! A slot is held through an exclusive `flock` on `/tmp/berth-test-slots/<n>.lock`, which the
//! kernel releases when the holding process ends, however it ends. While held, slot `n` owns:
//! bridge `bts<n>`, pods `10.180.<n>.0/24`, ClusterIPs `10.181.<n>.0/24`, service interface
//! `bsv<n>` and NodePorts `30000 + 20n ..= 30000 + 20n + 19`. Other test harnesses on this
//! machine stay out of `10.180.0.0/15`.

use std::{fs::File, path::Path, process::Command};

use rustix::fs::{FlockOperation, flock};

/// How many test servers may run pods at once on this machine.
pub const SLOTS: u16 = 128;
const LOCK_DIR: &str = "/tmp/berth-test-slots";

/// The network resources of one test server; released when dropped.
#[derive(Debug)]
pub struct Slot {
    pub index: u16,
    _lock: File,
}

impl Slot {
    /// Takes the first free slot, waiting for one if all are held.
    pub fn acquire() -> Slot {
        std::fs::create_dir_all(LOCK_DIR).expect("creating the test slot directory");
        loop {
            for index in 0..SLOTS {
                let Ok(file) = File::options().create(true).truncate(false).write(true).open(lock_path(index)) else {
                    continue;
                };
                if flock(&file, FlockOperation::NonBlockingLockExclusive).is_ok() {
                    let slot = Slot { index, _lock: file };
                    // A previous holder may have died before cleaning up.
                    slot.clean_up();
                    return slot;
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    pub fn bridge(&self) -> String {
        format!("bts{}", self.index)
    }

    pub fn pod_cidr(&self) -> String {
        format!("10.180.{}.0/24", self.index)
    }

    pub fn service_cidr(&self) -> String {
        format!("10.181.{}.0/24", self.index)
    }

    pub fn service_interface(&self) -> String {
        format!("bsv{}", self.index)
    }

    /// The first and last NodePort of this slot.
    pub fn node_ports(&self) -> (u16, u16) {
        let first = 30000 + 20 * self.index;
        (first, first + 19)
    }

    /// The `berth server` flags that put a server on this slot.
    pub fn server_args(&self) -> Vec<String> {
        let (first, last) = self.node_ports();
        vec![
            "--pod-bridge".into(),
            self.bridge(),
            "--pod-cidr".into(),
            self.pod_cidr(),
            "--service-cidr".into(),
            self.service_cidr(),
            "--service-interface".into(),
            self.service_interface(),
            "--service-node-port-range".into(),
            format!("{first}-{last}"),
        ]
    }

    /// Removes what a server on this slot leaves on the machine: its bridge, its service
    /// interface and the iptables rules that name either or its pod range.
    pub fn clean_up(&self) {
        for link in [self.bridge(), self.service_interface()] {
            if Path::new("/sys/class/net").join(&link).exists() {
                let _ = Command::new("ip").args(["link", "del", &link]).output();
            }
        }
        remove_service_chains(&format!("BRT-{}-", self.service_interface()));
        let marks = [self.bridge(), self.pod_cidr(), self.service_cidr(), self.service_interface()];
        for table in ["filter", "nat"] {
            let Ok(out) = Command::new("iptables").args(["-t", table, "-S"]).output() else { return };
            for rule in String::from_utf8_lossy(&out.stdout).lines() {
                let Some(spec) = rule.strip_prefix("-A ") else { continue };
                if !rule.split_whitespace().any(|word| marks.iter().any(|m| m == word)) {
                    continue;
                }
                let args: Vec<String> = split_rule(spec);
                let _ = Command::new("iptables").args(["-t", table, "-D"]).args(&args).output();
            }
        }
    }
}

/// Deletes the service proxy's chains named `prefix…` (nat, and the filter chain guarding
/// loopback) and the jumps into them.
fn remove_service_chains(prefix: &str) {
    for table in ["nat", "filter"] {
        remove_chains(table, prefix);
    }
}

fn remove_chains(table: &str, prefix: &str) {
    let Ok(out) = Command::new("iptables-save").args(["-t", table]).output() else { return };
    let text = String::from_utf8_lossy(&out.stdout);
    let chains: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix(':'))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| c.starts_with(prefix))
        .collect();
    if chains.is_empty() {
        return;
    }
    for rule in text.lines().filter_map(|l| l.strip_prefix("-A ")) {
        let args = split_rule(rule);
        let jumps_in = args.windows(2).any(|w| w[0] == "-j" && w[1].starts_with(prefix));
        if jumps_in && !args.first().is_some_and(|c| c.starts_with(prefix)) {
            let _ = Command::new("iptables").args(["-w", "-t", table, "-D"]).args(&args).output();
        }
    }
    for chain in &chains {
        let _ = Command::new("iptables").args(["-w", "-t", table, "-F", chain]).output();
    }
    for chain in &chains {
        let _ = Command::new("iptables").args(["-w", "-t", table, "-X", chain]).output();
    }
}

fn lock_path(index: u16) -> std::path::PathBuf {
    Path::new(LOCK_DIR).join(format!("{index}.lock"))
}

/// Splits an `iptables -S` rule into arguments, honouring double quotes (comments).
fn split_rule(spec: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut started = false;
    for c in spec.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                started = true;
            }
            c if c.is_whitespace() && !quoted => {
                if started {
                    args.push(std::mem::take(&mut current));
                    started = false;
                }
            }
            c => {
                current.push(c);
                started = true;
            }
        }
    }
    if started {
        args.push(current);
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_split_with_quoted_comments() {
        let args = split_rule(
            r#"POSTROUTING -s 10.180.3.0/24 ! -d 10.180.3.0/24 -m comment --comment "berth pod network" -j MASQUERADE"#,
        );
        assert_eq!(args[2], "10.180.3.0/24");
        assert!(args.contains(&"berth pod network".to_owned()));
        assert_eq!(args.last().map(String::as_str), Some("MASQUERADE"));
    }
}
