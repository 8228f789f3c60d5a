//! Leases on a tenant's event log. Each consumer of the log, a webhook
//! endpoint or an extension, runs on one replica at a time: the one whose
//! claim in the store is current. The holder saves its cursor whenever it
//! renews the claim, so the next holder resumes where it stopped.

use std::time::Duration;

use crate::chat::now_millis;
use crate::store::{EventPage, Store, StoreError};

/// How long a claim lasts without renewal. A replica that dies, or a
/// restarted process, takes over its consumers after this time.
pub const LEASE: Duration = Duration::from_secs(10);

/// Pause between claim attempts on a consumer that another replica holds,
/// and between reads of a log with nothing new.
pub const IDLE_WAIT: Duration = Duration::from_millis(500);

/// Returns an id for this process in leases: host name, process id and a
/// random part, so a restarted process does not pass for its predecessor.
pub fn holder_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "runtime".to_owned());
    format!(
        "{host}-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

/// A store operation of a lease that failed.
#[derive(Debug)]
pub struct Failed {
    pub operation: &'static str,
    pub error: StoreError,
}

/// The lease of one consumer of one tenant's log, held or sought by this
/// process.
pub struct Lease<'a> {
    pub store: &'a dyn Store,
    pub tenant: &'a str,
    /// The consumer's name in the store: an endpoint's name, or
    /// `extension:<name>`.
    pub name: &'a str,
    pub holder: &'a str,
}

impl Lease<'_> {
    fn until() -> i64 {
        now_millis() + LEASE.as_millis() as i64
    }

    /// Claims the lease and returns the cursor to resume from, or `None`
    /// when another process holds it. A consumer that never saved a cursor
    /// starts at `start`, or at the end of the log without one.
    pub async fn claim(&self, start: Option<&str>) -> Result<Option<String>, Failed> {
        let claim = self
            .store
            .claim_webhook(self.name, self.holder, now_millis(), Self::until())
            .await
            .map_err(|error| failed("claim the lease", error))?;
        let Some(claim) = claim else {
            return Ok(None);
        };
        if let Some(cursor) = claim.cursor.or_else(|| start.map(str::to_owned)) {
            return Ok(Some(cursor));
        }
        let end = self
            .store
            .event_log_end()
            .await
            .map_err(|error| failed("find the end of the event log", error))?;
        Ok(Some(end))
    }

    /// Takes the claim again without saving a cursor. Returns false when
    /// another process holds it or the store failed.
    pub async fn reclaim(&self) -> bool {
        let claim = self
            .store
            .claim_webhook(self.name, self.holder, now_millis(), Self::until())
            .await;
        match claim {
            Ok(claim) => claim.is_some(),
            Err(error) => {
                tracing::warn!(tenant = %self.tenant, consumer = %self.name, error = %crate::server::error_chain(&error), "Failed to renew an event log lease");
                false
            }
        }
    }

    /// Saves `cursor` and renews the claim. Returns false, saving nothing,
    /// when another process took the lease.
    pub async fn save(&self, cursor: &str) -> Result<bool, Failed> {
        self.store
            .save_webhook_cursor(self.name, self.holder, cursor, Self::until())
            .await
            .map_err(|error| failed("save the cursor", error))
    }

    /// Reads up to `limit` events after `cursor`. A cursor behind the log's
    /// retention is set to `None`, so the read starts at the oldest event
    /// kept.
    pub async fn next_page(
        &self,
        cursor: &mut Option<String>,
        limit: u32,
    ) -> Result<EventPage, Failed> {
        match self.store.events(cursor.as_deref(), limit).await {
            Err(StoreError::CursorExpired) => {
                tracing::warn!(tenant = %self.tenant, consumer = %self.name, "Event log consumer fell behind the log's retention; resuming at the oldest event kept");
                *cursor = None;
                self.store
                    .events(None, limit)
                    .await
                    .map_err(|error| failed("read the event log", error))
            }
            result => result.map_err(|error| failed("read the event log", error)),
        }
    }
}

fn failed(operation: &'static str, error: StoreError) -> Failed {
    Failed { operation, error }
}
