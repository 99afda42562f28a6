//! Finding the source files: the regular files under the source folder, filtered by the
//! include/exclude globs, with the relative path each one is delivered under. Links never lead
//! out of the source folder.

use std::path::{Path, PathBuf};

use super::error::UploadError;
use crate::plan::{PlanProgress, SourceFile};

/// Regular files under `root`, relative `/`-separated paths, filtered by include/exclude globs.
///
/// Links are resolved as `openat2(RESOLVE_BENEATH)` would: both the root and the link are
/// canonicalized, and a link whose target is not below the root is refused
/// ([`UploadError::OutsideVolume`]), whether it names a file or a folder: the source volume is
/// the customer-facing boundary, and a link to `/var/run/secrets/...` or `/etc/passwd` must not
/// turn into an object in someone's bucket. A file link that stays inside is delivered under the
/// link's own name, read from the canonical path (which holds no link at the time of the walk).
/// A folder link that stays inside is not descended: its files are delivered under their real
/// path already, and not following folder links also means no cycles. A file link that the
/// globs leave out is never opened, so it is not judged.
pub fn walk(
    root: &Path,
    include: &[String],
    exclude: &[String],
) -> Result<Vec<SourceFile>, UploadError> {
    walk_counted(root, include, exclude, &PlanProgress::default())
}

/// [`walk`], counting each file found into `progress`.
pub fn walk_counted(
    root: &Path,
    include: &[String],
    exclude: &[String],
    progress: &PlanProgress,
) -> Result<Vec<SourceFile>, UploadError> {
    let include = compile_globs(include)?;
    let exclude = compile_globs(exclude)?;
    let walk_err = |path: &Path, source| UploadError::Walk {
        path: path.display().to_string(),
        source,
    };
    // Links are judged against the real root: the source folder itself may be reached through a
    // link (a mount path), and what counts is where its files really are.
    let real_root = std::fs::canonicalize(root).map_err(|e| walk_err(root, e))?;
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| walk_err(&dir, e))? {
            let entry = entry.map_err(|e| walk_err(&dir, e))?;
            let path = entry.path();
            let relative = path
                .strip_prefix(root)
                .expect("walked below the root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            // The entry itself, links not followed.
            let file_type = entry.file_type().map_err(|e| walk_err(&path, e))?;
            if file_type.is_dir() {
                stack.push(path);
                continue;
            }
            let (path, meta) = if file_type.is_symlink() {
                let Some((target, beneath)) = link_beneath(&real_root, &path, &relative)? else {
                    continue;
                };
                // The canonical path has no link left: stat it without following anything.
                let meta = std::fs::symlink_metadata(&target).map_err(|e| walk_err(&path, e))?;
                if meta.is_dir() {
                    if !beneath {
                        return Err(outside(&relative, &target));
                    }
                    continue;
                }
                if !meta.is_file() {
                    continue;
                }
                if !selected(&include, &exclude, &relative) {
                    continue;
                }
                if !beneath {
                    return Err(outside(&relative, &target));
                }
                (target, meta)
            } else {
                // Read from the real path (folder links are not descended, so it is the real
                // root's): it holds no link, which `open_source` then insists on.
                (
                    real_root.join(path.strip_prefix(root).expect("walked below the root")),
                    entry.metadata().map_err(|e| walk_err(&path, e))?,
                )
            };
            if !meta.is_file() || !selected(&include, &exclude, &relative) {
                continue;
            }
            progress.found(meta.len());
            files.push(SourceFile {
                relative,
                path,
                size: meta.len(),
                version: None,
            });
        }
    }
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(files)
}

/// The files whose inode change time (ctime: set by every write, creation, rename or copy, and
/// which no tool can set back, unlike mtime) is in `[after, before)`: an incremental run takes
/// what changed since the last run's cut, and leaves a file still being written at its own cut
/// to the next run.
pub fn changed_between(
    files: Vec<SourceFile>,
    after: Option<jiff::Timestamp>,
    before: Option<jiff::Timestamp>,
) -> Result<Vec<SourceFile>, UploadError> {
    use std::os::unix::fs::MetadataExt;
    let mut kept = Vec::with_capacity(files.len());
    for file in files {
        let meta = std::fs::metadata(&file.path).map_err(|source| UploadError::Walk {
            path: file.path.display().to_string(),
            source,
        })?;
        let changed = jiff::Timestamp::new(meta.ctime(), meta.ctime_nsec() as i32)
            .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        if after.is_none_or(|a| changed >= a) && before.is_none_or(|b| changed < b) {
            kept.push(file);
        }
    }
    Ok(kept)
}

/// Opens a planned source file (`path`, the real path the walk found, which holds no link) for
/// reading, refusing a link anywhere in it: a folder or file swapped for a link between the walk
/// and the read (pointing at a pod token, say) is [`UploadError::OutsideVolume`], not read.
/// Linux's `openat2(RESOLVE_NO_SYMLINKS)`; where the kernel or a seccomp profile lacks it, a
/// plain open (the walk's check stands).
pub fn open_source(file: &str, path: &Path) -> Result<std::fs::File, UploadError> {
    let read_error = |source| UploadError::Read {
        file: file.to_string(),
        offset: 0,
        source,
    };
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{CWD, Mode, OFlags, ResolveFlags, openat2};
        use rustix::io::Errno;
        match openat2(
            CWD,
            path,
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => return Ok(std::fs::File::from(fd)),
            Err(Errno::LOOP) | Err(Errno::XDEV) => {
                return Err(UploadError::OutsideVolume {
                    file: file.to_string(),
                    target: format!("{} (a link appeared after the walk)", path.display()),
                });
            }
            Err(Errno::NOSYS) | Err(Errno::PERM) => {}
            Err(e) => return Err(read_error(e.into())),
        }
    }
    std::fs::File::open(path).map_err(read_error)
}

/// Compiled globs of relative names; none given selects everything.
pub type Globs = Option<globset::GlobSet>;

/// Compiles [`Globs`] from patterns (blank ones ignored); a bad one is named.
pub fn compile_globs(patterns: &[String]) -> Result<Globs, UploadError> {
    let patterns: Vec<&String> = patterns.iter().filter(|p| !p.trim().is_empty()).collect();
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = globset::GlobSetBuilder::new();
    for p in patterns {
        builder.add(globset::Glob::new(p.trim()).map_err(|e| UploadError::Glob {
            pattern: p.trim().to_string(),
            reason: e.kind().to_string(),
        })?);
    }
    builder.build().map(Some).map_err(|e| UploadError::Glob {
        pattern: e.glob().unwrap_or_default().to_string(),
        reason: e.kind().to_string(),
    })
}

pub fn selected(include: &Globs, exclude: &Globs, relative: &str) -> bool {
    include.as_ref().is_none_or(|g| g.is_match(relative))
        && exclude.as_ref().is_none_or(|g| !g.is_match(relative))
}

fn outside(relative: &str, target: &Path) -> UploadError {
    UploadError::OutsideVolume {
        file: relative.to_string(),
        target: target.display().to_string(),
    }
}

/// Where the link at `path` really leads, and whether that is beneath `real_root`; `None` for a
/// dangling link (nothing to read, nothing to deliver).
fn link_beneath(
    real_root: &Path,
    path: &Path,
    relative: &str,
) -> Result<Option<(PathBuf, bool)>, UploadError> {
    match std::fs::canonicalize(path) {
        // `starts_with` compares whole components: `/data2` is not beneath `/data`.
        Ok(target) => {
            let beneath = target.starts_with(real_root);
            Ok(Some((target, beneath)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(
                file = relative,
                "skipping a dangling link in the source folder"
            );
            Ok(None)
        }
        Err(source) => Err(UploadError::Walk {
            path: path.display().to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn names(files: &[SourceFile]) -> Vec<&str> {
        files.iter().map(|f| f.relative.as_str()).collect()
    }

    /// A source folder `src` with `a.sync` and `sub/b.sync`, beside a folder `outside` that holds
    /// a file standing for a token.
    fn ground() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let out = dir.path().join("outside");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(src.join("a.sync"), b"a\n").unwrap();
        std::fs::write(src.join("sub/b.sync"), b"bb\n").unwrap();
        std::fs::write(out.join("token"), b"secret token\n").unwrap();
        (dir, src, out)
    }

    #[test]
    fn regular_files_in_order_with_globs() {
        let (_dir, src, _) = ground();
        let all = walk(&src, &[], &[]).unwrap();
        assert_eq!(names(&all), ["a.sync", "sub/b.sync"]);
        assert_eq!(all[1].size, 3);
        let some = walk(&src, &[], &["sub/*".into()]).unwrap();
        assert_eq!(names(&some), ["a.sync"]);
        let bad = walk(&src, &["[unclosed".into()], &[]).unwrap_err();
        assert_eq!(bad.reason(), "InvalidGlob");
        assert!(!bad.is_transient());
        assert!(bad.to_string().contains("\"[unclosed\""), "{bad}");
    }

    #[test]
    fn a_file_link_out_is_refused_naming_the_file() {
        let (_dir, src, out) = ground();
        symlink(out.join("token"), src.join("sub/token.sync")).unwrap();
        let err = walk(&src, &[], &[]).unwrap_err();
        match &err {
            UploadError::OutsideVolume { file, target } => {
                assert_eq!(file, "sub/token.sync");
                assert!(target.ends_with("outside/token"), "{target}");
            }
            other => panic!("{other}"),
        }
        assert_eq!(err.reason(), "SourceOutsideVolume");
        // A relative link climbing out is the same link.
        std::fs::remove_file(src.join("sub/token.sync")).unwrap();
        symlink("../../outside/token", src.join("sub/up.sync")).unwrap();
        assert!(matches!(
            walk(&src, &[], &[]),
            Err(UploadError::OutsideVolume { file, .. }) if file == "sub/up.sync"
        ));
        // Left out by the globs, it is never opened and so not in the way.
        let files = walk(&src, &[], &["sub/up.sync".into()]).unwrap();
        assert_eq!(names(&files), ["a.sync", "sub/b.sync"]);
    }

    #[test]
    fn a_folder_link_out_is_refused() {
        let (_dir, src, out) = ground();
        symlink(&out, src.join("secrets")).unwrap();
        let err = walk(&src, &["*.sync".into()], &[]).unwrap_err();
        assert!(
            matches!(&err, UploadError::OutsideVolume { file, .. } if file == "secrets"),
            "{err}"
        );
    }

    #[test]
    fn a_link_inside_is_delivered_under_its_own_name() {
        let (_dir, src, _) = ground();
        symlink("sub/b.sync", src.join("latest.sync")).unwrap();
        // A folder link inside is not descended (its files are there under their real path).
        symlink("sub", src.join("again")).unwrap();
        let files = walk(&src, &[], &[]).unwrap();
        assert_eq!(names(&files), ["a.sync", "latest.sync", "sub/b.sync"]);
        let latest = &files[1];
        assert_eq!(latest.size, 3);
        assert_eq!(
            latest.path,
            std::fs::canonicalize(src.join("sub/b.sync")).unwrap()
        );
    }

    #[test]
    fn a_root_reached_through_a_link_is_its_target() {
        let (dir, src, _) = ground();
        let via = dir.path().join("via");
        symlink(&src, &via).unwrap();
        symlink("a.sync", src.join("same.sync")).unwrap();
        let files = walk(&via, &[], &[]).unwrap();
        assert_eq!(names(&files), ["a.sync", "same.sync", "sub/b.sync"]);
    }

    #[test]
    fn a_dangling_link_is_skipped() {
        let (_dir, src, _) = ground();
        symlink("nowhere", src.join("gone.sync")).unwrap();
        assert_eq!(
            names(&walk(&src, &[], &[]).unwrap()),
            ["a.sync", "sub/b.sync"]
        );
    }

    #[test]
    fn a_folder_swapped_for_a_link_after_the_walk_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("data")).unwrap();
        std::fs::write(src.join("data/a.sync"), "a\n").unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("a.sync"), "token\n").unwrap();
        let files = walk(&src, &[], &[]).unwrap();
        assert_eq!(files.len(), 1);
        let mut text = String::new();
        use std::io::Read;
        open_source("data/a.sync", &files[0].path)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "a\n");
        // Between the walk and the read, data/ becomes a link to a folder outside.
        std::fs::rename(src.join("data"), dir.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, src.join("data")).unwrap();
        match open_source("data/a.sync", &files[0].path) {
            Err(UploadError::OutsideVolume { file, .. }) => assert_eq!(file, "data/a.sync"),
            other => panic!("read through a link: {other:?}"),
        }
    }
}
