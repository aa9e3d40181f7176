//! Packing App Modules: a manifest and a tree of files and directories, written so that the same
//! inputs always give the same bytes (hence the same SHA-256, the module's identity).
//!
//! [`pack_app`] checks what [`crate::parse`] will check, with errors that name the file, and
//! then parses its own output, so nothing it returns can be refused by a host.

use std::collections::BTreeMap;

use crate::archive::{Limits, MANIFEST_ENTRY, ModuleError};
use crate::cpio::{Writer, check_path};
use crate::manifest::{Kind, Manifest};

/// What a path in an app module is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    /// A directory.
    Dir,
    /// A regular file with these contents.
    File(Vec<u8>),
}

/// One member of an app module: a relative path (`bin/httpd`), its permission bits (at most
/// `0o777`) and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppFile {
    /// Relative, normal, `/`-separated (see [`crate::cpio::check_path`]).
    pub path: String,
    /// Permission bits; `0o755` for programs and directories, `0o644` for data.
    pub perm: u32,
    /// Directory or file.
    pub payload: Payload,
}

impl AppFile {
    /// A regular file.
    pub fn file(path: impl Into<String>, perm: u32, data: impl Into<Vec<u8>>) -> Self {
        Self {
            path: path.into(),
            perm,
            payload: Payload::File(data.into()),
        }
    }

    /// A directory.
    pub fn dir(path: impl Into<String>, perm: u32) -> Self {
        Self {
            path: path.into(),
            perm,
            payload: Payload::Dir,
        }
    }
}

/// Packs an app module: the manifest first, then `files` sorted by path, with every missing
/// parent directory added (`0o755`), owner root and mtime 0. Refuses, naming the file: a path
/// that is not relative and normal (absolute, `..`), the manifest's own name, the same path
/// twice, permission bits beyond `0o777`, a file larger than [`Limits::APP`] allows or a path
/// that is both a file and a parent; and whatever [`crate::parse`] refuses (an entrypoint whose
/// program is missing or not executable, a manifest field that breaks a rule, too many entries,
/// too large an archive).
pub fn pack_app(manifest: &Manifest, files: &[AppFile]) -> Result<Vec<u8>, ModuleError> {
    if !matches!(manifest.kind, Kind::App(_)) {
        return Err(ModuleError::NotApp);
    }
    manifest.validate()?;
    let tree = tree(files)?;
    let encoded = postcard::to_allocvec(manifest)
        .map_err(|e| ModuleError::ManifestDecode(format!("encoding: {e}")))?;
    let mut w = Writer::new();
    w.file(MANIFEST_ENTRY, 0o444, &encoded)?;
    for (path, (perm, payload)) in &tree {
        match payload {
            Some(data) => w.file(path, *perm, data)?,
            None => w.dir(path, *perm)?,
        }
    }
    let bytes = w.finish();
    crate::parse(&bytes, &Limits::APP)?;
    Ok(bytes)
}

/// `files` checked and sorted by path (a parent sorts before its children: it is their prefix),
/// with the missing parents added. `None`: a directory.
type Tree<'a> = BTreeMap<&'a str, (u32, Option<&'a [u8]>)>;

fn tree(files: &[AppFile]) -> Result<Tree<'_>, ModuleError> {
    let bad = |name: &str, reason: String| ModuleError::BadFile {
        name: name.to_owned(),
        reason,
    };
    let mut tree = Tree::new();
    for f in files {
        check_path(&f.path).map_err(|p| bad(&f.path, p.to_string()))?;
        if f.path == MANIFEST_ENTRY {
            return Err(bad(&f.path, "the name of the manifest entry".into()));
        }
        if f.perm & !0o777 != 0 {
            return Err(bad(
                &f.path,
                format!(
                    "mode {:o}: only permission bits 0o777 (no setuid, setgid, sticky)",
                    f.perm
                ),
            ));
        }
        let data = match &f.payload {
            Payload::Dir => None,
            Payload::File(data) => {
                if data.len() > Limits::APP.max_file_size as usize {
                    return Err(bad(
                        &f.path,
                        format!(
                            "{} bytes, more than the limit of {} for one file",
                            data.len(),
                            Limits::APP.max_file_size
                        ),
                    ));
                }
                Some(data.as_slice())
            }
        };
        if tree.insert(f.path.as_str(), (f.perm, data)).is_some() {
            return Err(bad(&f.path, "given twice".into()));
        }
    }
    let paths: Vec<&str> = tree.keys().copied().collect();
    for path in paths {
        let mut rest = path;
        while let Some((parent, _)) = rest.rsplit_once('/') {
            match tree.get(parent) {
                Some((_, Some(_))) => {
                    return Err(bad(parent, format!("a file, but {path:?} is under it")));
                }
                Some((_, None)) => {}
                None => {
                    tree.insert(parent, (0o755, None));
                }
            }
            rest = parent;
        }
    }
    Ok(tree)
}

#[cfg(test)]
mod tests;
