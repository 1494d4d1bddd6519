//! Berth's node agent: Kubernetes' kubelet and a container runtime in one.
//!
//! - [`runtime::Runtime`] runs pods: a sandbox per pod ([`sandbox`], [`namespaces`], [`network`], [`ipam`]),
//!   one runc container per Kubernetes container ([`oci`], [`rootfs`], [`spec`], [`volumes`]),
//!   each watched by a shim process that outlives Berth ([`shim`]), writes CRI logs
//!   ([`crilog`]) and serves `kubectl attach` ([`attach`]).
//! - [`agent::run`] registers the `Node`, binds and admits pods, runs them through the runtime
//!   and reports their status.
//!
//! See docs/node.md for the design.

pub mod agent;
pub mod attach;
pub mod cgroups;
pub mod command;
pub mod config;
pub mod crilog;
pub mod exec;
pub mod images;
pub mod ipam;
pub mod layout;
pub mod metrics;
pub mod namespaces;
pub mod network;
pub mod oci;
pub mod oci_runtime;
pub mod preflight;
pub mod resources;
pub mod rootfs;
pub mod runtime;
pub mod sandbox;
pub mod shim;
pub mod shim_spawn;
pub mod spec;
pub mod volumes;

pub use agent::{AgentError, run, run_until};
pub use config::{CapacityOverrides, DrainHook, Ipv4Cidr, NetworkConfig, NodeConfig, TrafficDrain};
pub use crilog::{LogFollower, LogOptions, Rotation, log_files, log_path, read_log};
pub use runtime::{ContainerHandle, Runtime, RuntimeError};
pub use spec::PodInputs;
