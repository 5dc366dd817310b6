//! Typed notifications on plain NATS subjects.
//!
//! For fan-out signals that need no persistence ("config changed, look
//! again", "proxy X connected"): a subscriber that is down misses them, by
//! design. Anything a restarted service must see belongs in a bucket.

use std::{
    marker::PhantomData,
    pin::Pin,
    task::{Context, Poll},
};

use async_nats::{Client, RequestErrorKind, Subscriber, connection::State};
use futures::{Stream, StreamExt};
use serde::{Serialize, de::DeserializeOwned};
use tracing::debug;

use crate::Bus;

/// A notification that does not decode into the topic's message type.
#[derive(Debug, thiserror::Error)]
#[error("message on subject {subject:?} is not a valid {message_type}")]
pub struct InvalidMessage {
    pub subject: String,
    /// The Rust type the message was decoded into.
    pub message_type: &'static str,
    #[source]
    pub source: serde_json::Error,
}

#[derive(Debug, thiserror::Error)]
pub enum TopicError {
    #[error("cannot encode a message for subject {subject:?}")]
    Encode {
        subject: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot publish on subject {subject:?}")]
    Publish {
        subject: String,
        #[source]
        source: async_nats::PublishError,
    },
    #[error("cannot subscribe to subject {subject:?}")]
    Subscribe {
        subject: String,
        #[source]
        source: async_nats::SubscribeError,
    },
}

/// A subject carrying JSON-encoded `T`s.
pub struct Topic<T> {
    client: Client,
    subject: String,
    message_type: PhantomData<fn() -> T>,
}

impl<T> Clone for Topic<T> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            subject: self.subject.clone(),
            message_type: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Topic<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Topic")
            .field("subject", &self.subject)
            .field("message_type", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T> Topic<T>
where
    T: Serialize + DeserializeOwned,
{
    /// `subject` may contain wildcards (`*`, `>`) for subscribing only.
    pub fn new(bus: &Bus, subject: impl Into<String>) -> Self {
        Self {
            client: bus.client().clone(),
            subject: subject.into(),
            message_type: PhantomData,
        }
    }

    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// Sends `message` to current subscribers. Succeeds once the message is
    /// queued in the client; while the bus is disconnected, queued messages go
    /// out after the reconnect, and this waits if the client's queue is full.
    pub async fn publish(&self, message: &T) -> Result<(), TopicError> {
        let payload = serde_json::to_vec(message).map_err(|source| TopicError::Encode {
            subject: self.subject.clone(),
            source,
        })?;
        self.client
            .publish(self.subject.clone(), payload.into())
            .await
            .map_err(|source| TopicError::Publish {
                subject: self.subject.clone(),
                source,
            })
    }

    /// Every message published from now on.
    ///
    /// When connected, returns only once the server has registered the
    /// subscription, so a caller can subscribe and then read state without
    /// missing a notification sent in between. The subscription survives
    /// reconnects; messages sent while disconnected are missed.
    pub async fn subscribe(&self) -> Result<TopicSubscription<T>, TopicError> {
        let subscriber = self
            .client
            .subscribe(self.subject.clone())
            .await
            .map_err(|source| TopicError::Subscribe {
                subject: self.subject.clone(),
                source,
            })?;
        wait_for_server_round_trip(&self.client).await;
        Ok(TopicSubscription {
            subscriber,
            message_type: PhantomData,
        })
    }
}

/// Waits until the server has processed what this client sent so far.
///
/// `Client::flush` only writes to the socket. async-nats has no ping, but a
/// request to a subject nobody listens on is answered by the server itself
/// ("no responders"), and only after the operations sent before it on this
/// connection, which the server handles in order.
async fn wait_for_server_round_trip(client: &Client) {
    if client.connection_state() != State::Connected {
        // Operations sent while disconnected take effect on reconnect.
        return;
    }
    let probe = format!("{}.round-trip", client.new_inbox());
    match client.request(probe, "".into()).await {
        Err(error) if error.kind() == RequestErrorKind::NoResponders => {}
        Ok(_) => {}
        Err(error) => {
            debug!(%error, "no round trip to the bus server; the subscription may start late")
        }
    }
}

/// Messages on a [`Topic`]. A message that does not decode yields an
/// [`InvalidMessage`] and the stream goes on. Unsubscribes when dropped.
pub struct TopicSubscription<T> {
    subscriber: Subscriber,
    message_type: PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for TopicSubscription<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopicSubscription")
            .field("message_type", &std::any::type_name::<T>())
            .finish_non_exhaustive()
    }
}

impl<T: DeserializeOwned> Stream for TopicSubscription<T> {
    type Item = Result<T, InvalidMessage>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.subscriber.poll_next_unpin(cx).map(|message| {
            message.map(|message| {
                serde_json::from_slice(&message.payload).map_err(|source| InvalidMessage {
                    subject: message.subject.to_string(),
                    message_type: std::any::type_name::<T>(),
                    source,
                })
            })
        })
    }
}
