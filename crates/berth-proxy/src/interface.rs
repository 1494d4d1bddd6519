//! The service interface: a dummy link (an empty bridge where the kernel has no dummy driver)
//! holding every ClusterIP as a /32, so that the host's own connections and pods' connections
//! (routed through the bridge to the host) to a ClusterIP are delivered locally, to the
//! proxy's listener on that address.
//! Everything goes through `ip` (iproute2) in child processes, like the node's pod network.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// Errors managing the service interface.
#[derive(Debug, thiserror::Error)]
pub enum InterfaceError {
    /// `ip` could not be started.
    #[error("cannot run ip: {0}")]
    Spawn(#[source] std::io::Error),
    /// `ip` ran and failed.
    #[error("`ip {command}` failed: {stderr}")]
    Failed {
        /// The arguments.
        command: String,
        /// What `ip` printed.
        stderr: String,
    },
    /// `ip -j` printed something that is not its JSON.
    #[error("cannot read `ip -j addr` output: {0}")]
    Parse(#[from] serde_json::Error),
    /// The name is not a usable interface name.
    #[error("{0:?} is not a valid interface name (1 to 15 characters, no '/', ':' or whitespace)")]
    InvalidName(String),
}

/// Runs `ip args…` with `stdin`, returning stdout.
async fn ip(args: &[&str], stdin: Option<&str>) -> Result<String, InterfaceError> {
    let mut child = Command::new("ip")
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(InterfaceError::Spawn)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A failed write shows up as ip's own failure.
        let _ = pipe.write_all(input.as_bytes()).await;
        drop(pipe);
    }
    let output = child.wait_with_output().await.map_err(InterfaceError::Spawn)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(InterfaceError::Failed {
            command: args.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        })
    }
}

/// The dummy interface holding the ClusterIPs.
#[derive(Debug, Clone)]
pub struct ServiceInterface {
    name: String,
}

impl ServiceInterface {
    /// The interface called `name` (not created yet).
    pub fn new(name: &str) -> Result<Self, InterfaceError> {
        let valid = !name.is_empty()
            && name.len() <= 15
            && !name.chars().any(|c| c == '/' || c == ':' || c.is_whitespace())
            && name != "."
            && name != "..";
        if !valid {
            return Err(InterfaceError::InvalidName(name.to_string()));
        }
        Ok(ServiceInterface { name: name.to_string() })
    }

    /// The interface's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn exists(&self) -> bool {
        Path::new("/sys/class/net").join(&self.name).exists()
    }

    /// Creates the interface if it is missing and brings it up. Idempotent.
    pub async fn ensure(&self) -> Result<(), InterfaceError> {
        if !self.exists() {
            match self.create("dummy").await {
                Err(InterfaceError::Failed { stderr, .. }) if stderr.contains("Unknown device type") => {
                    // A kernel without the dummy driver (some VMs): a bridge with no ports holds
                    // local addresses just as well.
                    tracing::info!(interface = %self.name, "no dummy interfaces in this kernel, using an empty bridge");
                    self.create("bridge").await?;
                }
                other => other?,
            }
        }
        // Local routes for the addresses exist only while the link is up.
        ip(&["link", "set", &self.name, "up"], None).await?;
        Ok(())
    }

    async fn create(&self, kind: &str) -> Result<(), InterfaceError> {
        match ip(&["link", "add", &self.name, "type", kind], None).await {
            Ok(_) => {
                tracing::info!(interface = %self.name, kind, "created the service interface");
                Ok(())
            }
            // Created meanwhile by someone else.
            Err(InterfaceError::Failed { stderr, .. }) if stderr.contains("File exists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The IPv4 addresses on the interface.
    pub async fn addresses(&self) -> Result<BTreeSet<Ipv4Addr>, InterfaceError> {
        let out = ip(&["-j", "-4", "addr", "show", "dev", &self.name], None).await?;
        let links: serde_json::Value = serde_json::from_str(if out.trim().is_empty() { "[]" } else { &out })?;
        Ok(links
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|link| link.get("addr_info").and_then(|a| a.as_array()).into_iter().flatten())
            .filter_map(|a| a.get("local").and_then(|l| l.as_str()).and_then(|l| l.parse().ok()))
            .collect())
    }

    /// Makes the interface hold exactly `want`: one `ip` run to read, at most one to change.
    /// Returns the addresses added and removed.
    pub async fn sync(&self, want: &BTreeSet<Ipv4Addr>) -> Result<(Vec<Ipv4Addr>, Vec<Ipv4Addr>), InterfaceError> {
        self.ensure().await?;
        let have = self.addresses().await?;
        let add: Vec<Ipv4Addr> = want.difference(&have).copied().collect();
        let remove: Vec<Ipv4Addr> = have.difference(want).copied().collect();
        if add.is_empty() && remove.is_empty() {
            return Ok((add, remove));
        }
        let mut batch = String::new();
        for a in &add {
            batch.push_str(&format!("addr add {a}/32 dev {}\n", self.name));
        }
        for a in &remove {
            batch.push_str(&format!("addr del {a}/32 dev {}\n", self.name));
        }
        // -force: one failing line must not keep the others from being applied.
        ip(&["-force", "-batch", "-"], Some(&batch)).await?;
        Ok((add, remove))
    }

    /// Deletes the interface and with it every address on it. Nothing to do if it is gone.
    pub async fn remove(&self) -> Result<(), InterfaceError> {
        if !self.exists() {
            return Ok(());
        }
        match ip(&["link", "del", &self.name], None).await {
            Ok(_) => Ok(()),
            Err(InterfaceError::Failed { stderr, .. }) if stderr.contains("Cannot find device") => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_follow_the_kernel_rules() {
        assert!(ServiceInterface::new("berth-svc").is_ok());
        assert!(ServiceInterface::new("").is_err());
        assert!(ServiceInterface::new("a-name-that-is-too-long").is_err());
        assert!(ServiceInterface::new("bad/name").is_err());
        assert!(ServiceInterface::new("bad name").is_err());
    }
}
