//! Berth's local image store.
//!
//! Images come in from docker-archive and OCI-layout tarballs ([`ImageStore::import`]) or
//! from OCI registries ([`ImageStore::pull`]). Their layers are unpacked once, keyed by the
//! digest of their uncompressed content (the `diff_id`), and shared by every container
//! through overlayfs lower directories; the node mounts those (this crate never mounts).
//!
//! Layout under the store's root:
//! - `blobs/sha256/<hex>`: image configs and manifests, by digest;
//! - `layers/<hex>/`: an unpacked layer (overlayfs whiteouts already converted), by diff_id;
//! - `images.json`: name -> config digest, manifest digest, layer diff_ids;
//! - `lock`: `flock`ed around every change, so the CLI and a running server can share it;
//! - `tmp/`: unpacking in progress (renamed into place when complete).
//!
//! The name `host` is the node's built-in image and never stored here.

mod archive;
pub mod auth;
mod config;
mod error;
mod layer;
mod pull;
pub mod reference;
mod store;

pub use config::{ImageDefaults, UserSpec};
pub use error::ImageError;
pub use pull::PullOptions;
pub use store::{GcReport, ImageRecord, ImageStore, Progress, ResolvedImage};

/// The built-in image that is the machine's own filesystem.
pub const HOST_IMAGE: &str = "host";
