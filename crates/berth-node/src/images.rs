//! Running containers from stored images (see the `berth-image` crate): the image's config
//! applied as Kubernetes does, and its layers mounted as the container's root.
//!
//! The root of a container from an image is an overlay mounted on `<bundle>/rootfs`: the
//! image's unpacked layers as read-only lower directories, shared by every container of the
//! image, and a per-container `upper`/`work` pair next to it that takes the writes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use berth_image::{ImageDefaults, ResolvedImage};
use k8s_openapi::api::core::v1::{Container, SecurityContext};

use crate::rootfs::RootfsError;
use crate::spec::ProcessSpec;

/// Where the node keeps its images, below its data dir.
pub fn store_dir(node_dir: &Path) -> std::path::PathBuf {
    node_dir.join("images")
}

/// `$` doubled, so that `$(VAR)` expansion (which applies to the pod's command and args,
/// never to the image's) leaves the image's words as they are.
fn literal(words: &[String]) -> Vec<String> {
    words.iter().map(|w| w.replace('$', "$$")).collect()
}

/// `container` with what its image supplies filled in: command and args (Kubernetes' rules:
/// `command` replaces the entrypoint and drops `Cmd`, `args` replaces `Cmd`), working
/// directory, and the image's `User` unless a security context sets one.
pub fn with_image_defaults(container: &Container, image: &ResolvedImage) -> Container {
    let mut out = container.clone();
    let defaults: &ImageDefaults = &image.defaults;
    let command = container.command.as_deref().filter(|c| !c.is_empty());
    if command.is_none() {
        let args = container.args.as_deref().filter(|a| !a.is_empty());
        let mut argv = literal(&defaults.entrypoint);
        match args {
            Some(args) => argv.extend(args.iter().cloned()),
            None => argv.extend(literal(&defaults.cmd)),
        }
        out.command = Some(argv);
        out.args = None;
    }
    if container.working_dir.as_deref().is_none_or(str::is_empty) {
        out.working_dir = defaults.working_dir.clone();
    }
    let user_set = container.security_context.as_ref().is_some_and(|s| s.run_as_user.is_some());
    if !user_set && let Some(user) = image.user() {
        let security = out.security_context.get_or_insert_with(SecurityContext::default);
        security.run_as_user = Some(i64::from(user.uid));
        if security.run_as_group.is_none() {
            security.run_as_group = Some(i64::from(user.gid.unwrap_or(0)));
        }
    }
    out
}

/// Puts the image's `Env` under the container's: the container's variables win, except the
/// `PATH` default Berth adds when the container sets none.
pub fn merge_env(process: &mut ProcessSpec, container: &Container, defaults: &ImageDefaults) {
    let container_sets_path = container.env.iter().flatten().any(|e| e.name == "PATH");
    let mut env = defaults.env_pairs();
    for (name, value) in std::mem::take(&mut process.env) {
        let image_has = env.iter().position(|(n, _)| *n == name);
        match image_has {
            Some(_) if name == "PATH" && !container_sets_path => {}
            Some(i) => env[i].1 = value,
            None => env.push((name, value)),
        }
    }
    process.env = env;
}

fn rootfs_error(path: &Path) -> impl FnOnce(std::io::Error) -> RootfsError + '_ {
    move |source| RootfsError { path: path.to_owned(), source }
}

/// Mounts read-only `layers` (an image's, top first, or the `host` image's skeleton) on
/// `<state_dir>/rootfs` with a fresh upper directory in `layer_dir` (on disk: what a container
/// writes is not kept in memory).
pub fn mount_rootfs(state_dir: &Path, layer_dir: &Path, layers: &[PathBuf]) -> Result<(), RootfsError> {
    let rootfs = state_dir.join("rootfs");
    let upper = layer_dir.join("upper");
    let work = layer_dir.join("work");
    for dir in [&rootfs, &upper, &work] {
        std::fs::create_dir_all(dir).map_err(rootfs_error(dir))?;
    }
    let mut lower: Vec<String> = layers.iter().map(|d| d.display().to_string()).collect();
    if lower.is_empty() {
        // overlayfs needs at least one lower directory.
        let empty = state_dir.join("empty");
        std::fs::create_dir_all(&empty).map_err(rootfs_error(&empty))?;
        lower.push(empty.display().to_string());
    }
    let options = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    if lower.iter().chain([&upper.display().to_string(), &work.display().to_string()]).any(|p| p.contains([',', ':'])) {
        return Err(RootfsError {
            path: state_dir.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path unusable as an overlay layer"),
        });
    }
    let data = std::ffi::CString::new(options).map_err(|e| rootfs_error(&rootfs)(std::io::Error::other(e)))?;
    rustix::mount::mount("overlay", &rootfs, "overlay", rustix::mount::MountFlags::empty(), Some(data.as_c_str()))
        .map_err(|e| rootfs_error(&rootfs)(e.into()))
}

/// Unmounts the overlay root of a container, if it has one (before its bundle is removed).
pub fn unmount_rootfs(state_dir: &Path) {
    let rootfs = state_dir.join("rootfs");
    if crate::volumes::is_mount_point(&rootfs)
        && let Err(error) = rustix::mount::unmount(&rootfs, rustix::mount::UnmountFlags::DETACH)
    {
        tracing::warn!(path = %rootfs.display(), %error, "cannot unmount container root");
    }
}

/// Unmounts the overlay roots of every container attempt of a pod.
pub fn unmount_pod_rootfs(containers_dir: &Path) {
    for entry in std::fs::read_dir(containers_dir).into_iter().flatten().flatten() {
        unmount_rootfs(&entry.path());
    }
}

/// Names of the images that containers recorded under `node_dir` were started from.
pub fn images_in_use(node_dir: &Path) -> HashSet<String> {
    let mut used = HashSet::new();
    for uid in crate::layout::pod_uids(node_dir) {
        for container in crate::layout::container_state_dirs(node_dir, &uid) {
            let Ok(bytes) = std::fs::read(container.join("container.json")) else { continue };
            let Ok(record) = serde_json::from_slice::<serde_json::Value>(&bytes) else { continue };
            if let Some(image) = record.get("image").and_then(|i| i.as_str())
                && let Ok(name) = berth_image::reference::normalize(image)
            {
                used.insert(name);
            }
        }
    }
    used
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use berth_image::ImageRecord;

    fn image(defaults: ImageDefaults) -> ResolvedImage {
        ResolvedImage {
            record: ImageRecord {
                name: "berth.test/app:1".into(),
                id: "sha256:00".into(),
                manifest_digest: None,
                layers: vec![],
                size: 0,
                created: String::new(),
            },
            defaults,
            layer_dirs: vec![],
        }
    }

    #[test]
    fn image_config_fills_what_the_pod_leaves_out() {
        let resolved = image(ImageDefaults {
            entrypoint: vec!["/bin/app".into()],
            cmd: vec!["--price=$5".into()],
            env: vec!["PATH=/opt/bin:/bin".into(), "MODE=image".into()],
            working_dir: Some("/srv".into()),
            user: Some("1000:1000".into()),
        });
        let container = Container { name: "c".into(), ..Default::default() };
        let filled = with_image_defaults(&container, &resolved);
        assert_eq!(filled.command.unwrap(), vec!["/bin/app", "--price=$$5"]);
        assert_eq!(filled.working_dir.as_deref(), Some("/srv"));
        let security = filled.security_context.unwrap();
        assert_eq!((security.run_as_user, security.run_as_group), (Some(1000), Some(1000)));

        let with_args = Container { name: "c".into(), args: Some(vec!["x".into()]), ..Default::default() };
        assert_eq!(with_image_defaults(&with_args, &resolved).command.unwrap(), vec!["/bin/app", "x"]);

        let mut process = ProcessSpec {
            argv: vec![],
            env: vec![("PATH".into(), "/usr/bin".into()), ("MODE".into(), "pod".into())],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            capabilities: vec![],
            no_new_privileges: false,
            privileged: false,
            read_only_root: false,
            oom_score_adj: 0,
            resources: Default::default(),
        };
        merge_env(&mut process, &container, &resolved.defaults);
        assert_eq!(
            process.env,
            vec![("PATH".to_owned(), "/opt/bin:/bin".to_owned()), ("MODE".to_owned(), "pod".to_owned())]
        );
    }
}
