//! The projects' folders under the workspace root, which no job may leave.

use std::path::{Path, PathBuf};

use crate::job::JobContext;

impl JobContext {
    /// The project's folder under the workspace root, created on first sight. Refuses a path that
    /// leads out of the root through a symlink, before creating anything: the deepest part of the
    /// path that exists is resolved and checked first, so no folder is made beyond a symlink.
    pub(crate) fn project_dir(&self, project_path: &str) -> Result<PathBuf, String> {
        let dir = self.workspace_root.join(project_path);
        let outside = |real: &Path| {
            format!(
                "invalid project_path: {project_path:?} leads to {} outside BATON_WORKSPACE_ROOT",
                real.display()
            )
        };
        let existing = dir
            .ancestors()
            .find(|p| std::fs::symlink_metadata(p).is_ok())
            .unwrap_or(&self.workspace_root);
        let real = existing.canonicalize().map_err(|e| {
            format!(
                "cannot resolve project directory {}: {e}",
                existing.display()
            )
        })?;
        if !real.starts_with(&self.workspace_root) {
            return Err(outside(&real));
        }
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create project directory {}: {e}", dir.display()))?;
        // Checked again once made: a symlink may have appeared in between.
        let real = dir
            .canonicalize()
            .map_err(|e| format!("cannot resolve project directory {}: {e}", dir.display()))?;
        if !real.starts_with(&self.workspace_root) {
            return Err(outside(&real));
        }
        Ok(real)
    }
}
