//! Registry credentials from `kubernetes.io/dockerconfigjson` (and legacy `dockercfg`)
//! secrets, matched to a registry host as kubelet does.

use base64::Engine;
use serde_json::Value;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("username", &self.username).finish_non_exhaustive()
    }
}

/// `https://host:5000/v1/` -> `host:5000`; Docker Hub's aliases -> `docker.io`.
fn registry_host(key: &str) -> String {
    let without_scheme = key.split_once("://").map_or(key, |(_, rest)| rest);
    let host = without_scheme.split('/').next().unwrap_or(without_scheme).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => "docker.io".to_owned(),
        _ => host,
    }
}

fn entry_credentials(entry: &Value) -> Option<Credentials> {
    let text = |key: &str| entry.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    if let (Some(username), Some(password)) = (text("username"), text("password")) {
        return Some(Credentials { username: username.to_owned(), password: password.to_owned() });
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(text("auth")?).ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (username, password) = decoded.split_once(':')?;
    Some(Credentials { username: username.to_owned(), password: password.to_owned() })
}

/// The credentials for `registry` in a docker config file's JSON (`{"auths": {...}}`, or the
/// bare map of the legacy `.dockercfg`), if any.
pub fn credentials_for(config_json: &[u8], registry: &str) -> Option<Credentials> {
    let value: Value = serde_json::from_slice(config_json).ok()?;
    let auths = value.get("auths").unwrap_or(&value).as_object()?;
    let wanted = registry_host(registry);
    auths.iter().find(|(key, _)| registry_host(key) == wanted).and_then(|(_, entry)| entry_credentials(entry))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn credentials_match_the_registry_host() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret");
        let config = format!(
            r#"{{"auths":{{"http://127.0.0.1:5000/v2/":{{"auth":"{auth}"}},"other:1":{{"username":"bob","password":"pw"}}}}}}"#
        );
        let found = credentials_for(config.as_bytes(), "127.0.0.1:5000").unwrap();
        assert_eq!((found.username.as_str(), found.password.as_str()), ("alice", "s3cret"));
        assert_eq!(credentials_for(config.as_bytes(), "other:1").unwrap().username, "bob");
        assert!(credentials_for(config.as_bytes(), "docker.io").is_none());
        let hub = r#"{"https://index.docker.io/v1/":{"username":"u","password":"p"}}"#;
        assert_eq!(credentials_for(hub.as_bytes(), "docker.io").unwrap().username, "u");
        assert!(!format!("{found:?}").contains("s3cret"));
    }
}
