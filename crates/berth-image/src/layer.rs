//! Unpacking one layer tarball into a directory usable as an overlayfs lower layer.
//!
//! OCI layers mark deletions with `.wh.<name>` files and opaque directories with
//! `.wh..wh..opq`; overlayfs wants a 0/0 character device and the `trusted.overlay.opaque`
//! attribute instead. No crate converts between the two, so it is done here.

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::ImageError;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// A reader that hashes what passes through it.
struct Hashing<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Wraps `reader` in the decompressor its first bytes call for (gzip, zstd or none).
pub(crate) fn decompressed<'a>(reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>, ImageError> {
    let mut reader = BufReader::with_capacity(256 * 1024, reader);
    let head = reader.fill_buf().map_err(ImageError::io("reading a layer"))?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(reader)))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder = zstd::stream::read::Decoder::with_buffer(reader).map_err(ImageError::io("starting zstd"))?;
        Ok(Box::new(decoder))
    } else {
        Ok(Box::new(reader))
    }
}

/// Unpacks the layer in `reader` (compressed or not) into `dest`, which must exist and be
/// empty. Returns the layer's diff_id (`sha256:` of the uncompressed tar stream).
pub(crate) fn unpack(reader: impl Read, dest: &Path) -> Result<String, ImageError> {
    let mut hashing = Hashing { inner: decompressed(reader)?, hasher: Sha256::new() };
    {
        let mut archive = tar::Archive::new(&mut hashing);
        archive.set_preserve_permissions(true);
        archive.set_preserve_ownerships(true);
        archive.set_preserve_mtime(true);
        archive.set_unpack_xattrs(true);
        archive.set_overwrite(true);
        let entries = archive.entries().map_err(ImageError::io("reading a layer"))?;
        for entry in entries {
            let mut entry = entry.map_err(ImageError::io("reading a layer entry"))?;
            let path = entry.path().map_err(ImageError::io("reading a layer entry name"))?.into_owned();
            let Some(relative) = clean_relative(&path) else {
                return Err(ImageError::BadArchive(format!("layer entry {} leaves the layer", path.display())));
            };
            let name = relative.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            if name == OPAQUE_MARKER {
                let dir = dest.join(relative.parent().unwrap_or(Path::new("")));
                std::fs::create_dir_all(&dir).map_err(ImageError::io(format!("creating {}", dir.display())))?;
                rustix::fs::setxattr(&dir, "trusted.overlay.opaque", b"y", rustix::fs::XattrFlags::empty())
                    .map_err(|e| ImageError::io(format!("marking {} opaque", dir.display()))(e.into()))?;
            } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                let parent = dest.join(relative.parent().unwrap_or(Path::new("")));
                std::fs::create_dir_all(&parent).map_err(ImageError::io(format!("creating {}", parent.display())))?;
                let target = parent.join(hidden);
                let _ = std::fs::remove_file(&target);
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &target,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| ImageError::io(format!("creating whiteout {}", target.display()))(e.into()))?;
            } else {
                entry.unpack_in(dest).map_err(ImageError::io(format!("unpacking {}", path.display())))?;
            }
        }
    }
    // Whatever follows the end-of-archive blocks still belongs to the diff_id.
    std::io::copy(&mut hashing, &mut std::io::sink()).map_err(ImageError::io("reading a layer"))?;
    Ok(format!("sha256:{}", hex::encode(hashing.hasher.finalize())))
}

/// `path` without `./` and leading `/`; `None` if it climbs out with `..`.
fn clean_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn layer(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_cksum();
            builder.append_data(&mut header, path, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    #[test]
    fn plain_gzip_and_zstd_layers_unpack_with_the_same_diff_id() {
        let plain = layer(&[("etc/motd", b"hello\n"), ("bin/tool", b"#!/bin/sh\n")]);
        let expected = format!("sha256:{}", hex::encode(Sha256::digest(&plain)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(plain.as_slice(), 3).unwrap();
        for bytes in [plain.clone(), gz, zst] {
            let dir = tempfile::tempdir().unwrap();
            assert_eq!(unpack(bytes.as_slice(), dir.path()).unwrap(), expected);
            assert_eq!(std::fs::read(dir.path().join("etc/motd")).unwrap(), b"hello\n");
        }
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipping: creating whiteout devices needs root");
            return;
        }
        let bytes = layer(&[("etc/.wh.motd", b""), ("var/cache/.wh..wh..opq", b""), ("var/cache/new", b"x")]);
        let dir = tempfile::tempdir().unwrap();
        unpack(bytes.as_slice(), dir.path()).unwrap();
        let meta = std::fs::symlink_metadata(dir.path().join("etc/motd")).unwrap();
        assert!(meta.file_type().is_char_device());
        assert!(!dir.path().join("etc/.wh.motd").exists());
        let mut value = [0u8; 4];
        let n = rustix::fs::getxattr(dir.path().join("var/cache"), "trusted.overlay.opaque", &mut value[..]).unwrap();
        assert_eq!(&value[..n], b"y");
        assert!(dir.path().join("var/cache/new").is_file());
    }

    #[test]
    fn entries_cannot_escape_the_layer() {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o644);
        // `append_data` refuses `..`, so write the name into the header directly.
        header.as_old_mut().name[..9].copy_from_slice(b"../escape");
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        let bytes = builder.into_inner().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let inner = dir.path().join("layer");
        std::fs::create_dir(&inner).unwrap();
        assert!(matches!(unpack(bytes.as_slice(), &inner), Err(ImageError::BadArchive(_))));
        assert!(!dir.path().join("escape").exists());
    }
}
