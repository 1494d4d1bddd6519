//! `berth image ...`: the node's image store, worked on directly in the data dir (a running
//! server sees the changes at once; the store is locked around every change).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use berth_image::{ImageStore, Progress, PullOptions, auth::Credentials, reference};
use indicatif::{ProgressBar, ProgressStyle};

use crate::default_data_dir;

#[derive(clap::Args)]
pub struct ImageArgs {
    /// Where Berth keeps its state [default: $XDG_DATA_HOME/berth or ~/.local/share/berth]
    #[arg(long, env = "BERTH_DATA_DIR", global = true)]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: ImageCommand,
}

#[derive(clap::Subcommand)]
enum ImageCommand {
    /// Import the images of a docker-archive or OCI-layout tarball (plain, gzip or zstd).
    Import {
        file: PathBuf,
        /// Store the image under this name instead of the one in the archive.
        #[arg(long)]
        name: Option<String>,
    },
    /// Pull an image from an OCI registry.
    Pull {
        name: String,
        /// Speak plain HTTP to this registry (`host:port`); may be repeated.
        #[arg(long = "insecure-registry")]
        insecure_registries: Vec<String>,
        #[arg(long, requires = "password")]
        username: Option<String>,
        #[arg(long, env = "BERTH_REGISTRY_PASSWORD", hide_env_values = true, requires = "username")]
        password: Option<String>,
    },
    /// List stored images.
    #[command(alias = "list")]
    Ls,
    /// Remove images (their layers go once no other image uses them).
    #[command(alias = "rmi")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
    },
    /// Remove every image no container on this node uses, and unused layers.
    Prune,
}

fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::new_spinner();
    bar.set_style(ProgressStyle::with_template("{spinner} {msg}").unwrap_or_else(|_| ProgressStyle::default_spinner()));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn report(bar: &ProgressBar) -> impl Fn(Progress) + Send + Sync + '_ {
    move |progress| match progress {
        Progress::Layer { index, total, digest } => {
            bar.set_message(format!("layer {}/{total} {}", index + 1, short_digest(&digest)));
        }
        Progress::LayerPresent { index, total, digest } => {
            bar.println(format!("layer {}/{total} {} already present", index + 1, short_digest(&digest)));
        }
        Progress::Bytes(bytes) => bar.println(format!("  fetched {}", human_size(bytes))),
    }
}

fn short_digest(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes}B") } else { format!("{value:.1}{}", UNITS[unit]) }
}

pub fn run(args: ImageArgs) -> anyhow::Result<()> {
    let data_dir = args.data_dir.unwrap_or_else(default_data_dir);
    let store_dir = berth_node::images::store_dir(&data_dir.join("node"));
    let store = ImageStore::open(&store_dir).with_context(|| format!("opening {}", store_dir.display()))?;
    match args.command {
        ImageCommand::Import { file, name } => {
            let bar = progress_bar();
            bar.set_message(format!("importing {}", file.display()));
            let on_progress = report(&bar);
            let records = store.import(&file, name.as_deref(), Some(&on_progress));
            bar.finish_and_clear();
            for record in records? {
                println!("Imported {} ({})", reference::short(&record.name), short_digest(&record.id));
            }
        }
        ImageCommand::Pull { name, insecure_registries, username, password } => {
            let credentials = username.zip(password).map(|(username, password)| Credentials { username, password });
            let options = PullOptions { credentials, insecure_registries };
            let bar = progress_bar();
            bar.set_message(format!("pulling {name}"));
            let on_progress = report(&bar);
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let record = runtime.block_on(store.pull(&name, &options, Some(&on_progress)));
            bar.finish_and_clear();
            let record = record?;
            println!("Pulled {} ({})", reference::short(&record.name), short_digest(&record.id));
        }
        ImageCommand::Ls => {
            let images = store.list()?;
            let width = images.iter().map(|i| reference::short(&i.name).len()).max().unwrap_or(0).max(5);
            println!("{:<width$}  {:<12}  {:>9}  CREATED", "IMAGE", "IMAGE ID", "SIZE");
            println!("{:<width$}  {:<12}  {:>9}  builtin", "host", "-", "-");
            for image in images {
                println!(
                    "{:<width$}  {:<12}  {:>9}  {}",
                    reference::short(&image.name),
                    short_digest(&image.id),
                    human_size(image.size),
                    image.created
                );
            }
        }
        ImageCommand::Rm { names } => {
            let in_use = berth_node::images::images_in_use(&data_dir.join("node"));
            let mut failed = false;
            for name in names {
                if name == berth_image::HOST_IMAGE {
                    eprintln!("Error: \"host\" is built in and cannot be removed");
                    failed = true;
                    continue;
                }
                let result = match store.get(&name)? {
                    Some(record) if in_use.contains(&record.name) => {
                        Err(berth_image::ImageError::InUse { name: record.name })
                    }
                    _ => store.remove(&name),
                };
                match result {
                    Ok(record) => println!("Deleted: {}", reference::short(&record.name)),
                    Err(error) => {
                        eprintln!("Error: {error}");
                        failed = true;
                    }
                }
            }
            if failed {
                anyhow::bail!("some images were not removed");
            }
        }
        ImageCommand::Prune => {
            let in_use = berth_node::images::images_in_use(&data_dir.join("node"));
            let report = store.gc(Some(&in_use))?;
            for name in &report.images {
                println!("Deleted: {}", reference::short(name));
            }
            println!(
                "Removed {} images, {} layers, {} blobs; reclaimed {}",
                report.images.len(),
                report.layers,
                report.blobs,
                human_size(report.bytes)
            );
        }
    }
    Ok(())
}
