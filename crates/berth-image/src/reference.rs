//! Image names as Kubernetes writes them (`busybox`, `registry:5000/app:v1`, `app@sha256:..`),
//! normalised the way container runtimes do (`docker.io/library/busybox:latest`).

use std::str::FromStr;

use oci_client::Reference;

use crate::ImageError;

/// Parses `name` into a registry reference.
pub fn parse(name: &str) -> Result<Reference, ImageError> {
    Reference::from_str(name.trim())
        .map_err(|error| ImageError::BadReference { name: name.to_owned(), message: error.to_string() })
}

/// The full name an image is stored under.
pub fn normalize(name: &str) -> Result<String, ImageError> {
    Ok(parse(name)?.whole())
}

/// Whether `name` has no tag or the `latest` tag (and no digest): Kubernetes then defaults
/// `imagePullPolicy` to `Always`.
pub fn is_latest(name: &str) -> bool {
    match parse(name) {
        Ok(reference) => reference.digest().is_none() && reference.tag().is_none_or(|tag| tag == "latest"),
        Err(_) => false,
    }
}

/// The shortest form for display: `docker.io/library/` dropped, as `docker images` does.
pub fn short(name: &str) -> &str {
    name.strip_prefix("docker.io/library/").or_else(|| name.strip_prefix("docker.io/")).unwrap_or(name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_normalise_as_runtimes_do() {
        assert_eq!(normalize("busybox").unwrap(), "docker.io/library/busybox:latest");
        assert_eq!(normalize("localhost:5000/app:v1").unwrap(), "localhost:5000/app:v1");
        assert_eq!(normalize("berth.test/tools/busybox:1").unwrap(), "berth.test/tools/busybox:1");
        assert!(normalize("not a name").is_err());
        assert!(is_latest("busybox"));
        assert!(is_latest("busybox:latest"));
        assert!(!is_latest("busybox:1.36"));
        assert_eq!(short("docker.io/library/busybox:latest"), "busybox:latest");
    }
}
