//! Parley's chat runtime: multi-tenant chat over REST and WebSocket.
//!
//! One process serves every tenant its configuration lists. Each tenant has
//! its own API keys, limits, allowed origins and data file; see
//! `docs/api.md` for the REST API and the WebSocket protocol.
//!
//! - [`config`]: the YAML configuration and its validation.
//! - [`server`]: start-up, configuration reload and graceful shutdown.
//! - [`api`]: HTTP routes and authentication; [`ws`]: the WebSocket endpoint.
//! - [`chat`]: operations shared by REST and WebSocket; [`moderation`]:
//!   the tenant's rules that check content before it is stored.
//! - [`hub`]: live delivery to the sockets of this process; [`relay`]:
//!   to the sockets of other processes, through Redis; [`presence`]: who
//!   is online, across processes.
//! - [`store`]: durable storage, one [`store::Store`] per tenant.
//! - [`signature`]: the signature header of requests this runtime sends
//!   to a tenant's servers, such as the moderation hook's.

pub mod api;
pub mod attachments;
pub mod auth;
pub mod chat;
pub mod cli;
pub mod config;
pub mod extensions;
pub mod http;
pub mod hub;
pub mod leases;
pub mod limits;
pub mod metrics;
pub mod moderation;
pub mod presence;
pub mod relay;
pub mod server;
pub mod signature;
pub mod store;
pub mod templates;
pub mod tenant;
pub mod webhooks;
pub mod ws;
