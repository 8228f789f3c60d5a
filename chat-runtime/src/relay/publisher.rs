//! The task that hands queued publications to Redis.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::sync::{mpsc, watch};

use super::{Backoff, COMMAND_TIMEOUT, CONNECT_TIMEOUT, Publication, Relay};
use crate::api::shutdown_started;

/// Publications sent to Redis in one pipeline. One round trip then carries
/// a burst of messages, and Redis keeps their order.
const MAX_BATCH: usize = 256;

/// Reason the publisher left a connection.
enum Stop {
    Shutdown,
    Failed(redis::RedisError),
}

pub(super) async fn run(
    relay: Arc<Relay>,
    mut queue: mpsc::Receiver<Publication>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = Backoff::new();
    loop {
        let connected = tokio::select! {
            result = connect(&relay) => result,
            () = shutdown_started(&mut shutdown) => return,
        };
        let mut connection = match connected {
            Ok(connection) => connection,
            Err(error) => {
                relay.record_error("failed to connect the publisher to Redis", &error);
                tracing::warn!(error = %error, "Failed to connect the relay publisher to Redis; retrying");
                let wait = backoff.next_wait();
                if drop_queued(&relay, &mut queue, wait, &mut shutdown)
                    .await
                    .is_break()
                {
                    return;
                }
                continue;
            }
        };

        relay.metrics.publisher_connected.set(1);
        tracing::info!("Relay publisher connected to Redis");
        let stop = serve(
            &relay,
            &mut connection,
            &mut queue,
            &mut shutdown,
            &mut backoff,
        )
        .await;
        relay.metrics.publisher_connected.set(0);
        let Stop::Failed(error) = stop else {
            return;
        };
        relay.record_error("publishing to Redis failed", &error);
        tracing::warn!(error = %error, "Publishing to Redis failed; reconnecting");
        // Redis may accept connections and still reject every PUBLISH (an
        // ACL without the right, say), so a failure waits like a failed
        // connect, and only a publish that succeeds resets the wait.
        let wait = backoff.next_wait();
        if drop_queued(&relay, &mut queue, wait, &mut shutdown)
            .await
            .is_break()
        {
            return;
        }
    }
}

async fn connect(relay: &Relay) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(relay.settings.connection_info()?)?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(COMMAND_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Publishes announcements of earlier losses, then the queue, in batches,
/// until a command fails or the process shuts down.
async fn serve(
    relay: &Relay,
    connection: &mut MultiplexedConnection,
    queue: &mut mpsc::Receiver<Publication>,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> Stop {
    loop {
        let announcements = relay.take_lost();
        if !announcements.is_empty() {
            if let Err(error) = publish(relay, connection, announcements).await {
                return Stop::Failed(error);
            }
            backoff.reset();
        }

        let first = tokio::select! {
            publication = queue.recv() => match publication {
                Some(publication) => publication,
                None => return Stop::Shutdown,
            },
            () = shutdown_started(shutdown) => return Stop::Shutdown,
        };
        let mut batch = Vec::with_capacity(MAX_BATCH.min(queue.len() + 1));
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(publication) => batch.push(publication),
                Err(_) => break,
            }
        }
        if let Err(error) = publish(relay, connection, batch).await {
            return Stop::Failed(error);
        }
        backoff.reset();
    }
}

/// Sends `batch` as one pipeline. On failure every publication of the
/// batch counts as lost, because Redis may have published any prefix of it,
/// and a resync repeats nothing that a socket already has.
async fn publish(
    relay: &Relay,
    connection: &mut MultiplexedConnection,
    batch: Vec<Publication>,
) -> redis::RedisResult<()> {
    let mut pipeline = redis::pipe();
    for publication in &batch {
        pipeline
            .cmd("PUBLISH")
            .arg(&*publication.channel)
            .arg(&*publication.payload)
            .ignore();
    }
    match pipeline.query_async::<()>(connection).await {
        Ok(()) => {
            relay.metrics.published.inc_by(batch.len() as u64);
            Ok(())
        }
        Err(error) => {
            for publication in batch {
                relay.record_lost(publication);
            }
            Err(error)
        }
    }
}

/// Drops what is queued, as lost, for `wait`, so that while Redis is
/// unreachable the queue keeps no stale events and senders never find it
/// full. Breaks at shutdown.
async fn drop_queued(
    relay: &Relay,
    queue: &mut mpsc::Receiver<Publication>,
    wait: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> ControlFlow<()> {
    let deadline = tokio::time::sleep(wait);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            publication = queue.recv() => match publication {
                Some(publication) => relay.record_lost(publication),
                None => return ControlFlow::Break(()),
            },
            () = deadline.as_mut() => return ControlFlow::Continue(()),
            () = shutdown_started(shutdown) => return ControlFlow::Break(()),
        }
    }
}
