//! Calls in progress on etcd (see [`crate::calls`]): following everyone's call records and
//! hangup requests, and asking a call's owner to hang it up. A replica writes its own call
//! records through [`Announcement::owned`](super::Announcement::owned).

use super::EtcdStore;
use super::follow::FollowedMap;
use crate::calls::{CallRecord, HangupRequest, calls_prefix, hangup_prefix, is_valid_call_id};
use crate::store::StoreError;
use crate::time::UnixMillis;
use etcd_client::PutOptions;
use std::time::Duration;
use tokio::sync::watch;

/// How long a hangup request stays when its call's owner does not take it.
const HANGUP_TTL: Duration = Duration::from_secs(30);

impl EtcdStore {
    /// Follows the calls of every registrar replica, by call id.
    pub async fn calls(&self) -> Result<watch::Receiver<FollowedMap<CallRecord>>, StoreError> {
        self.follow(calls_prefix(&self.shared.options.prefix)).await
    }

    /// Follows the hangup requests, by call id.
    pub async fn hangups(&self) -> Result<watch::Receiver<FollowedMap<HangupRequest>>, StoreError> {
        self.follow(hangup_prefix(&self.shared.options.prefix))
            .await
    }

    /// Asks the owner of call `id` to hang it up (a request under `hangup/{id}` that expires
    /// after 30 s if nobody takes it).
    pub async fn request_hangup(&self, id: &str, by: &str) -> Result<(), StoreError> {
        let key = self.hangup_key(id)?;
        let request = HangupRequest {
            by: by.to_owned(),
            at: UnixMillis::now(),
        };
        let value = serde_json::to_vec(&request).map_err(|e| StoreError::Rejected {
            what: format!("encoding {key}"),
            detail: e.to_string(),
        })?;
        let lease = self.shared.grant_own_lease(HANGUP_TTL).await?;
        self.shared
            .client
            .kv_client()
            .put(
                key.as_str(),
                value,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await
            .map_err(|e| self.shared.fail(&format!("writing {key}"), &e))?;
        self.shared.health.reachable();
        Ok(())
    }

    /// Removes the hangup request of call `id` (its owner took it).
    pub async fn forget_hangup(&self, id: &str) -> Result<(), StoreError> {
        let key = self.hangup_key(id)?;
        self.shared
            .client
            .kv_client()
            .delete(key.as_str(), None)
            .await
            .map_err(|e| self.shared.fail(&format!("deleting {key}"), &e))?;
        self.shared.health.reachable();
        Ok(())
    }

    fn hangup_key(&self, id: &str) -> Result<String, StoreError> {
        if !is_valid_call_id(id) {
            return Err(StoreError::Rejected {
                what: format!("call id {id:?}"),
                detail: "not a call id (1-128 visible characters, no '/')".to_owned(),
            });
        }
        Ok(format!(
            "{}{id}",
            hangup_prefix(&self.shared.options.prefix)
        ))
    }
}
