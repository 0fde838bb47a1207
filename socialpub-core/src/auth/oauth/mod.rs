//! OAuth 2.0 connect helpers: authorization URLs with PKCE (S256) and a single-use CSRF state,
//! the code exchange, refresh and revocation, with per-platform quirks as configuration.
//!
//! Platforms differ in small ways that break generic clients: TikTok names the client
//! `client_key`, Meta exchanges codes with GET, some separate scopes with commas, some omit
//! `token_type` or send `expires_in` as a string, some answer errors with a 200. [`OAuthConfig`]
//! holds those differences; [`OAuthClient`] does the rest. [`OAuthApp`] is what an application
//! registers with a platform, embedded in every adapter's configuration.

mod client;
mod config;
mod pending;
mod token;

pub use client::{AuthorizationRequest, Authorized, OAuthClient};
pub use config::{
    ClientAuth, ExchangeMethod, OAuthApp, OAuthAppBuilder, OAuthConfig, OAuthDefaults,
};
pub use pending::{MemoryPendingStore, PendingAuthorization, PendingStore};
pub use token::parse_token;
