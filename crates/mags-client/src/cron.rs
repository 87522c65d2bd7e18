//! Scheduled jobs: `/mags-cron`.

use crate::{seg, Client, ClientError};
use mags_api::{CronCreateRequest, CronJob, CronList, CronUpdateRequest};
use reqwest::Method;

impl Client {
    /// `POST /mags-cron`.
    pub async fn create_cron(&self, req: &CronCreateRequest) -> Result<CronJob, ClientError> {
        self.json(self.request(Method::POST, "/mags-cron").json(req))
            .await
    }

    /// `GET /mags-cron`.
    pub async fn list_crons(&self) -> Result<CronList, ClientError> {
        self.json(self.request(Method::GET, "/mags-cron")).await
    }

    /// `PATCH /mags-cron/{id}` (id or name).
    pub async fn update_cron(
        &self,
        id: &str,
        req: &CronUpdateRequest,
    ) -> Result<CronJob, ClientError> {
        let path = format!("/mags-cron/{}", seg(id));
        self.json(self.request(Method::PATCH, &path).json(req))
            .await
    }

    /// `DELETE /mags-cron/{id}` (id or name).
    pub async fn delete_cron(&self, id: &str) -> Result<serde_json::Value, ClientError> {
        let path = format!("/mags-cron/{}", seg(id));
        self.json(self.request(Method::DELETE, &path)).await
    }
}
