//! Finding the source files: the regular files under the source folder, filtered by the
//! include/exclude globs, with the relative path each one is delivered under.

use std::path::Path;

use super::error::UploadError;
use crate::plan::SourceFile;

/// Regular files under `root` (following no symlinked folders), relative `/`-separated paths,
/// filtered by include/exclude globs.
pub fn walk(
    root: &Path,
    include: &[String],
    exclude: &[String],
) -> Result<Vec<SourceFile>, UploadError> {
    let globs = |patterns: &[String]| -> Result<Option<globset::GlobSet>, UploadError> {
        let patterns: Vec<&String> = patterns.iter().filter(|p| !p.trim().is_empty()).collect();
        if patterns.is_empty() {
            return Ok(None);
        }
        let mut builder = globset::GlobSetBuilder::new();
        for p in patterns {
            builder.add(
                globset::Glob::new(p.trim())
                    .map_err(|e| UploadError::Settings(format!("invalid glob {p:?}: {e}")))?,
            );
        }
        builder
            .build()
            .map(Some)
            .map_err(|e| UploadError::Settings(e.to_string()))
    };
    let include = globs(include)?;
    let exclude = globs(exclude)?;
    let walk_err = |path: &Path, source| UploadError::Walk {
        path: path.display().to_string(),
        source,
    };
    let mut files = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(|e| walk_err(&dir, e))? {
            let entry = entry.map_err(|e| walk_err(&dir, e))?;
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(|e| walk_err(&path, e))?;
            if entry.file_type().map_err(|e| walk_err(&path, e))?.is_dir() {
                stack.push(path);
                continue;
            }
            if !meta.is_file() {
                continue;
            }
            let relative = path
                .strip_prefix(root)
                .expect("walked below the root")
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            if include.as_ref().is_some_and(|g| !g.is_match(&relative))
                || exclude.as_ref().is_some_and(|g| g.is_match(&relative))
            {
                continue;
            }
            files.push(SourceFile {
                relative,
                path,
                size: meta.len(),
            });
        }
    }
    files.sort_by(|a, b| a.relative.cmp(&b.relative));
    Ok(files)
}
