use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid image reference {name:?}: {message}")]
    BadReference { name: String, message: String },
    #[error("image {0:?} not found")]
    NotFound(String),
    #[error("{path}: not an image archive (no index.json with oci-layout, nor manifest.json)")]
    UnknownArchive { path: PathBuf },
    #[error("image archive: {0}")]
    BadArchive(String),
    #[error("image {0:?} has no name: pass --name")]
    Unnamed(String),
    #[error("layer {expected}: content digest is {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("unsupported layer media type {0:?}")]
    UnsupportedMediaType(String),
    #[error("image {name:?} is used by containers on this node")]
    InUse { name: String },
    #[error("{0}")]
    Registry(String),
    #[error("invalid JSON in {context}: {source}")]
    Json {
        context: String,
        #[source]
        source: serde_json::Error,
    },
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Io { context, source }
    }

    pub(crate) fn json(context: impl Into<String>) -> impl FnOnce(serde_json::Error) -> ImageError {
        let context = context.into();
        move |source| ImageError::Json { context, source }
    }
}
