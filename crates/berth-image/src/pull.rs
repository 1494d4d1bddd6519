//! Pulling from OCI registries over the distribution API (oci-client).

use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageConfiguration, MediaType};

use crate::auth::Credentials;
use crate::store::{ImageRecord, ImageStore, Progress, ProgressFn};
use crate::{ImageError, archive, reference};

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    pub credentials: Option<Credentials>,
    /// Registries (`host:port`) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
}

fn registry_error(reference: &Reference) -> impl Fn(oci_client::errors::OciDistributionError) -> ImageError + '_ {
    move |error| ImageError::Registry(format!("failed to pull image \"{}\": {error}", reference.whole()))
}

impl ImageStore {
    /// Pulls `name` into the store; layers already stored are not fetched again.
    pub async fn pull(
        &self,
        name: &str,
        options: &PullOptions,
        progress: Option<ProgressFn<'_>>,
    ) -> Result<ImageRecord, ImageError> {
        // reqwest is built without a default crypto provider; the rest of Berth uses ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let reference = reference::parse(name)?;
        let client = Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(options.insecure_registries.clone()),
            connect_timeout: Some(Duration::from_secs(10)),
            read_timeout: Some(Duration::from_secs(60)),
            ..Default::default()
        });
        let auth = match &options.credentials {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let (manifest, manifest_digest, config_json) =
            client.pull_manifest_and_config(&reference, &auth).await.map_err(registry_error(&reference))?;
        let config = ImageConfiguration::from_reader(config_json.as_bytes())
            .map_err(|e| ImageError::Registry(format!("image config of {}: {e}", reference.whole())))?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers.len() {
            return Err(ImageError::Registry(format!(
                "{}: the config lists {} layers, the manifest {}",
                reference.whole(),
                diff_ids.len(),
                manifest.layers.len()
            )));
        }
        let total = diff_ids.len();
        for (index, (diff_id, layer)) in diff_ids.iter().zip(&manifest.layers).enumerate() {
            archive::check_layer_type(&MediaType::from(layer.media_type.as_str()))?;
            if !self.layer_needed(diff_id, layer.digest.clone(), (index, total), progress)? {
                continue;
            }
            let temp = self.temp_dir("pull")?;
            let blob_path = temp.0.join("blob");
            let file = tokio::fs::File::create(&blob_path).await.map_err(ImageError::io("creating a layer file"))?;
            // oci-client checks the blob against its digest while it downloads.
            client.pull_blob(&reference, layer, file).await.map_err(registry_error(&reference))?;
            if let Some(report) = progress {
                let size = tokio::fs::metadata(&blob_path).await.map(|m| m.len()).unwrap_or(0);
                report(Progress::Bytes(size));
            }
            let store = self.clone();
            let diff_id = diff_id.clone();
            tokio::task::spawn_blocking(move || {
                let file = std::fs::File::open(&blob_path).map_err(ImageError::io("opening a layer file"))?;
                let result = store.add_layer(&diff_id, file);
                drop(temp);
                result
            })
            .await
            .map_err(|e| ImageError::Registry(format!("unpacking a layer: {e}")))??;
        }
        let id = self.put_blob(config_json.as_bytes())?;
        if id != manifest.config.digest {
            return Err(ImageError::DigestMismatch { expected: manifest.config.digest.clone(), actual: id });
        }
        let record = ImageRecord {
            name: reference.whole(),
            id,
            manifest_digest: Some(manifest_digest),
            layers: diff_ids,
            size: 0,
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        };
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.add_image(record))
            .await
            .map_err(|e| ImageError::Registry(format!("recording the image: {e}")))?
    }
}
