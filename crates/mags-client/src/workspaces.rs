//! Workspaces and uploads: `POST /mags-files` (streamed from disk),
//! `GET /mags-workspaces`, `DELETE /mags-workspaces/{id}`, resize.

use crate::{seg, Client, ClientError};
use mags_api::{ResizeRequest, UploadResponse, WorkspaceActionResponse, WorkspaceList};
use reqwest::Method;
use std::path::Path;
use std::time::Duration;

impl Client {
    /// Uploads the file at `path` (streamed, never whole in memory).
    pub async fn upload_file(&self, path: &Path) -> Result<UploadResponse, ClientError> {
        let form = reqwest::multipart::Form::new()
            .file("file", path)
            .await
            .map_err(|e| ClientError::Decode(format!("cannot read {}: {e}", path.display())))?;
        let req = self
            .request(Method::POST, "/mags-files")
            .multipart(form)
            .timeout(Duration::from_secs(3600));
        self.json(req).await
    }

    /// `GET /mags-workspaces`.
    pub async fn list_workspaces(&self) -> Result<WorkspaceList, ClientError> {
        self.json(self.request(Method::GET, "/mags-workspaces"))
            .await
    }

    /// `DELETE /mags-workspaces/{id}`.
    pub async fn delete_workspace(&self, id: &str) -> Result<WorkspaceActionResponse, ClientError> {
        let path = format!("/mags-workspaces/{}", seg(id));
        self.json(self.request(Method::DELETE, &path)).await
    }

    /// `POST /mags-workspaces/{id}/resize`: grows its disk to `disk_gb`.
    pub async fn resize_workspace(
        &self,
        id: &str,
        disk_gb: u32,
    ) -> Result<WorkspaceActionResponse, ClientError> {
        let path = format!("/mags-workspaces/{}/resize", seg(id));
        let req = self
            .request(Method::POST, &path)
            .json(&ResizeRequest { disk_gb })
            .timeout(Duration::from_secs(600));
        self.json(req).await
    }
}
