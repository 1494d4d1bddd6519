//! The parts of an image's config that decide how its process starts.

use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

/// `Entrypoint`, `Cmd`, `Env`, `WorkingDir` and `User` of an image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDefaults {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    /// `NAME=value` entries, in order.
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

impl ImageDefaults {
    pub fn from_config(config: &ImageConfiguration) -> ImageDefaults {
        let Some(c) = config.config() else { return ImageDefaults::default() };
        ImageDefaults {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|d| !d.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
        }
    }

    /// The process arguments as Kubernetes chooses them: `command` replaces the entrypoint
    /// (and drops the image's `Cmd`), `args` replaces `Cmd`.
    pub fn argv(&self, command: Option<&[String]>, args: Option<&[String]>) -> Vec<String> {
        match (command, args) {
            (Some(command), args) if !command.is_empty() => {
                command.iter().chain(args.unwrap_or_default()).cloned().collect()
            }
            (_, Some(args)) if !args.is_empty() => self.entrypoint.iter().chain(args).cloned().collect(),
            _ => self.entrypoint.iter().chain(&self.cmd).cloned().collect(),
        }
    }

    /// The image's environment as pairs.
    pub fn env_pairs(&self) -> Vec<(String, String)> {
        self.env
            .iter()
            .map(|entry| match entry.split_once('=') {
                Some((name, value)) => (name.to_owned(), value.to_owned()),
                None => (entry.clone(), String::new()),
            })
            .collect()
    }
}

/// A resolved `User`: numeric uid, and gid when the image says or its `/etc/passwd` knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserSpec {
    pub uid: u32,
    pub gid: Option<u32>,
}

/// Resolves `user` (`uid`, `uid:gid`, `name`, `name:group`) against the image's
/// `/etc/passwd` and `/etc/group`, looked up in `layers` (topmost first).
pub fn resolve_user(user: &str, layers: &[PathBuf]) -> Option<UserSpec> {
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let passwd = read_in_layers(layers, "etc/passwd").unwrap_or_default();
    let entry = |key: &str, by_name: bool| {
        passwd.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let matches = if by_name { fields.first() == Some(&key) } else { fields.get(2) == Some(&key) };
            if !matches {
                return None;
            }
            Some((fields.get(2)?.parse::<u32>().ok()?, fields.get(3)?.parse::<u32>().ok()?))
        })
    };
    let (uid, passwd_gid) = match user_part.parse::<u32>() {
        Ok(uid) => (uid, entry(user_part, false).map(|(_, gid)| gid)),
        Err(_) => {
            let (uid, gid) = entry(user_part, true)?;
            (uid, Some(gid))
        }
    };
    let gid = match group_part {
        None => passwd_gid,
        Some(group) => match group.parse::<u32>() {
            Ok(gid) => Some(gid),
            Err(_) => {
                let groups = read_in_layers(layers, "etc/group").unwrap_or_default();
                let found = groups.lines().find_map(|line| {
                    let fields: Vec<&str> = line.split(':').collect();
                    (fields.first() == Some(&group)).then(|| fields.get(2)?.parse::<u32>().ok())?
                });
                Some(found?)
            }
        },
    };
    Some(UserSpec { uid, gid })
}

/// A file's text from the topmost layer that has it (a whiteout above hides it, which for
/// passwd lookups is rare enough to ignore).
fn read_in_layers(layers: &[PathBuf], relative: &str) -> Option<String> {
    layers.iter().find_map(|layer| {
        let path: &Path = layer.as_ref();
        let meta = std::fs::metadata(path.join(relative)).ok()?;
        meta.is_file().then(|| std::fs::read_to_string(path.join(relative)).ok())?
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn command_and_args_override_as_kubernetes_does() {
        let image = ImageDefaults {
            entrypoint: strings(&["/entry"]),
            cmd: strings(&["serve", "--port=80"]),
            ..Default::default()
        };
        assert_eq!(image.argv(None, None), strings(&["/entry", "serve", "--port=80"]));
        assert_eq!(image.argv(None, Some(&strings(&["check"]))), strings(&["/entry", "check"]));
        assert_eq!(image.argv(Some(&strings(&["sh"])), None), strings(&["sh"]));
        assert_eq!(image.argv(Some(&strings(&["sh"])), Some(&strings(&["-c", "x"]))), strings(&["sh", "-c", "x"]));
    }

    #[test]
    fn users_resolve_through_the_image_passwd() {
        let dir = tempfile::tempdir().unwrap();
        let top = dir.path().join("top");
        let base = dir.path().join("base");
        std::fs::create_dir_all(base.join("etc")).unwrap();
        std::fs::create_dir_all(&top).unwrap();
        std::fs::write(base.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/sh\n").unwrap();
        std::fs::write(base.join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        let layers = vec![top, base];
        assert_eq!(resolve_user("www", &layers), Some(UserSpec { uid: 33, gid: Some(34) }));
        assert_eq!(resolve_user("33", &layers), Some(UserSpec { uid: 33, gid: Some(34) }));
        assert_eq!(resolve_user("1000", &layers), Some(UserSpec { uid: 1000, gid: None }));
        assert_eq!(resolve_user("www:staff", &layers), Some(UserSpec { uid: 33, gid: Some(50) }));
        assert_eq!(resolve_user("1000:7", &layers), Some(UserSpec { uid: 1000, gid: Some(7) }));
        assert_eq!(resolve_user("nobody-here", &layers), None);
    }
}
