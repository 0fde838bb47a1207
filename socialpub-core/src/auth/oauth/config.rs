//! OAuth configuration: the [`OAuthApp`] an application registers with a platform (what every
//! adapter's configuration embeds, with the same builder methods), and the [`OAuthConfig`] of
//! one platform's protocol quirks.

use std::fmt;
use std::sync::Arc;

use secrecy::SecretString;
use url::Url;

use super::pending::{MemoryPendingStore, PendingStore};
use crate::error::{Error, Result};
use crate::platform::Platform;

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientAuth {
    /// HTTP Basic with the client id and secret (confidential clients; X, Pinterest).
    BasicHeader,
    /// The client id (and secret, if any) in the request body (public clients; Google, TikTok).
    RequestBody,
}

/// How the code exchange and refresh are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ExchangeMethod {
    /// `POST` with a form body (the standard).
    PostForm,
    /// `GET` with query parameters (Meta's Graph API).
    Get,
}

/// One platform's OAuth settings. Start from [`OAuthConfig::new`], then adjust.
#[derive(Clone)]
#[non_exhaustive]
pub struct OAuthConfig {
    /// The platform.
    pub platform: Platform,
    /// The app's client id (TikTok: client key).
    pub client_id: String,
    /// The app's client secret, for confidential clients.
    pub client_secret: Option<SecretString>,
    /// The authorization endpoint.
    pub authorize_url: Url,
    /// The token endpoint.
    pub token_url: Url,
    /// The revocation endpoint, if the platform has one.
    pub revoke_url: Option<Url>,
    /// Where the platform sends the user back.
    pub redirect_uri: Url,
    /// Scopes to request.
    pub scopes: Vec<String>,
    /// How scopes are joined (`" "` by the standard; `","` for some platforms).
    pub scope_separator: String,
    /// How the client authenticates at the token endpoint.
    pub client_auth: ClientAuth,
    /// The name of the client id parameter (`client_id`; TikTok: `client_key`).
    pub client_id_param: String,
    /// How the exchange and refresh are sent.
    pub exchange_method: ExchangeMethod,
    /// Whether to use PKCE (S256).
    pub pkce: bool,
    /// Extra parameters on the authorization URL (`access_type=offline`, `prompt=consent`).
    pub extra_authorize_params: Vec<(String, String)>,
    /// How long a started authorization stays valid.
    pub state_ttl: chrono::Duration,
    /// Whether revocation authenticates the client as the token endpoint does (RFC 7009);
    /// some platforms (Google) take the token alone.
    pub revoke_with_client_auth: bool,
}

impl fmt::Debug for OAuthConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthConfig")
            .field("platform", &self.platform)
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("authorize_url", &self.authorize_url.as_str())
            .field("token_url", &self.token_url.as_str())
            .field("revoke_url", &self.revoke_url.as_ref().map(Url::as_str))
            .field("redirect_uri", &self.redirect_uri.as_str())
            .field("scopes", &self.scopes)
            .field("client_auth", &self.client_auth)
            .field("exchange_method", &self.exchange_method)
            .field("pkce", &self.pkce)
            .finish_non_exhaustive()
    }
}

impl OAuthConfig {
    /// Standard settings: PKCE, space-separated scopes, `client_id` in the body, POST exchange,
    /// states valid for 10 minutes.
    pub fn new(
        platform: Platform,
        client_id: impl Into<String>,
        authorize_url: Url,
        token_url: Url,
        redirect_uri: Url,
    ) -> Self {
        OAuthConfig {
            platform,
            client_id: client_id.into(),
            client_secret: None,
            authorize_url,
            token_url,
            revoke_url: None,
            redirect_uri,
            scopes: Vec::new(),
            scope_separator: " ".to_owned(),
            client_auth: ClientAuth::RequestBody,
            client_id_param: "client_id".to_owned(),
            exchange_method: ExchangeMethod::PostForm,
            pkce: true,
            extra_authorize_params: Vec::new(),
            state_ttl: chrono::Duration::minutes(10),
            revoke_with_client_auth: true,
        }
    }

    /// Standard settings for `app` (see [`OAuthConfig::new`]): its client, redirect URI,
    /// scopes and endpoints. Connecting needs a client id and a redirect URI: without one this
    /// is a [`ErrorKind::Configuration`] error naming what is missing.
    ///
    /// [`ErrorKind::Configuration`]: crate::ErrorKind::Configuration
    pub fn from_app(platform: Platform, app: &OAuthApp) -> Result<Self> {
        let client_id = app.client_id.clone().ok_or_else(|| {
            Error::configuration(format!("connecting {platform} accounts needs a client id"))
                .with_platform(platform)
        })?;
        let redirect = app.redirect_uri.clone().ok_or_else(|| {
            Error::configuration(format!(
                "connecting {platform} accounts needs a redirect URI"
            ))
            .with_platform(platform)
        })?;
        let mut config = OAuthConfig::new(
            platform,
            client_id,
            app.authorize_url.clone(),
            app.token_url.clone(),
            redirect,
        )
        .with_scopes(app.scopes.iter().cloned());
        config.client_secret = app.client_secret.clone();
        config.revoke_url = app.revoke_url.clone();
        Ok(config)
    }

    /// Sets the client secret.
    pub fn with_client_secret(mut self, secret: SecretString) -> Self {
        self.client_secret = Some(secret);
        self
    }

    /// Sets the scopes.
    pub fn with_scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.scopes = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the revocation endpoint.
    pub fn with_revoke_url(mut self, url: Url) -> Self {
        self.revoke_url = Some(url);
        self
    }

    /// Sets how the client authenticates.
    pub fn with_client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }

    /// Adds a parameter to the authorization URL.
    pub fn with_authorize_param(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.extra_authorize_params.push((k.into(), v.into()));
        self
    }
}

/// The OAuth client an application registered with a platform: its id and secret, where users
/// come back, the scopes it asks for, and the platform's endpoints. Every adapter's
/// configuration embeds one, built through the same builder methods
/// ([`oauth_app_setters!`](crate::oauth_app_setters)), so connecting reads alike on every
/// platform. `Debug` hides the secret.
#[derive(Clone)]
pub struct OAuthApp {
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    redirect_uri: Option<Url>,
    scopes: Vec<String>,
    authorize_url: Url,
    token_url: Url,
    revoke_url: Option<Url>,
    pending: Arc<dyn PendingStore>,
}

impl fmt::Debug for OAuthApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthApp")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("redirect_uri", &self.redirect_uri.as_ref().map(Url::as_str))
            .field("scopes", &self.scopes)
            .field("authorize_url", &self.authorize_url.as_str())
            .field("token_url", &self.token_url.as_str())
            .field("revoke_url", &self.revoke_url.as_ref().map(Url::as_str))
            .finish_non_exhaustive()
    }
}

impl OAuthApp {
    /// The client id, if set.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The client secret, if set.
    pub fn client_secret(&self) -> Option<&SecretString> {
        self.client_secret.as_ref()
    }

    /// Where the platform sends users back, if set.
    pub fn redirect_uri(&self) -> Option<&Url> {
        self.redirect_uri.as_ref()
    }

    /// The scopes requested.
    pub fn scopes(&self) -> &[String] {
        &self.scopes
    }

    /// The authorization page.
    pub fn authorize_url(&self) -> &Url {
        &self.authorize_url
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &Url {
        &self.token_url
    }

    /// The revocation endpoint, if the platform has one.
    pub fn revoke_url(&self) -> Option<&Url> {
        self.revoke_url.as_ref()
    }

    /// Where started authorizations are kept (in process memory unless set).
    pub fn pending_store(&self) -> Arc<dyn PendingStore> {
        self.pending.clone()
    }
}

/// A platform's OAuth endpoints and default scopes: what an [`OAuthAppBuilder`] falls back to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OAuthDefaults {
    /// The authorization page.
    pub authorize_url: String,
    /// The token endpoint.
    pub token_url: String,
    /// The revocation endpoint, if the platform has one.
    pub revoke_url: Option<String>,
    /// The scopes an adapter needs to publish.
    pub scopes: Vec<String>,
}

impl OAuthDefaults {
    /// Endpoints and scopes.
    pub fn new(
        authorize_url: impl Into<String>,
        token_url: impl Into<String>,
        revoke_url: Option<String>,
        scopes: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        OAuthDefaults {
            authorize_url: authorize_url.into(),
            token_url: token_url.into(),
            revoke_url,
            scopes: scopes.into_iter().map(Into::into).collect(),
        }
    }
}

/// Builds an [`OAuthApp`]. Adapter configuration builders embed one and expose its setters
/// through [`oauth_app_setters!`](crate::oauth_app_setters).
#[derive(Clone, Default)]
pub struct OAuthAppBuilder {
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    redirect_uri: Option<String>,
    scopes: Option<Vec<String>>,
    authorize_url: Option<String>,
    token_url: Option<String>,
    revoke_url: Option<String>,
    pending: Option<Arc<dyn PendingStore>>,
}

impl fmt::Debug for OAuthAppBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthAppBuilder")
            .field("client_id", &self.client_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[REDACTED]"),
            )
            .field("redirect_uri", &self.redirect_uri)
            .finish_non_exhaustive()
    }
}

impl OAuthAppBuilder {
    /// An empty builder: everything from the platform's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The app's client id (TikTok calls it the client key).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// The app's client secret (a `String`, `&str` or `SecretString`).
    pub fn client_secret(mut self, secret: impl Into<SecretString>) -> Self {
        self.client_secret = Some(secret.into());
        self
    }

    /// The callback URL registered for the app (must match exactly).
    pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
        self.redirect_uri = Some(uri.into());
        self
    }

    /// Replaces the scopes requested.
    pub fn scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// The authorization page.
    pub fn authorize_url(mut self, url: impl Into<String>) -> Self {
        self.authorize_url = Some(url.into());
        self
    }

    /// The token endpoint.
    pub fn token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
        self
    }

    /// The revocation endpoint.
    pub fn revoke_url(mut self, url: impl Into<String>) -> Self {
        self.revoke_url = Some(url.into());
        self
    }

    /// Keeps started authorizations in `store` (share one between the processes of a cluster,
    /// so a callback can land on any of them).
    pub fn pending_store(mut self, store: Arc<dyn PendingStore>) -> Self {
        self.pending = Some(store);
        self
    }

    /// The app, with `defaults` for what was not set; a URL that does not parse is a
    /// configuration error naming the setting and `platform`.
    pub fn build(self, platform: Platform, defaults: OAuthDefaults) -> Result<OAuthApp> {
        let url = |what: &str, s: &str| {
            Url::parse(s).map_err(|e| {
                Error::configuration(format!(
                    "the {platform} {what} `{s}` is not a valid URL: {e}"
                ))
                .with_platform(platform)
            })
        };
        if self
            .client_id
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(
                Error::configuration(format!("the {platform} client id is empty"))
                    .with_platform(platform),
            );
        }
        Ok(OAuthApp {
            client_id: self.client_id,
            client_secret: self.client_secret,
            redirect_uri: self
                .redirect_uri
                .map(|r| url("redirect URI", &r))
                .transpose()?,
            scopes: self.scopes.unwrap_or(defaults.scopes),
            authorize_url: url(
                "authorize URL",
                &self.authorize_url.unwrap_or(defaults.authorize_url),
            )?,
            token_url: url("token URL", &self.token_url.unwrap_or(defaults.token_url))?,
            revoke_url: self
                .revoke_url
                .or(defaults.revoke_url)
                .map(|r| url("revoke URL", &r))
                .transpose()?,
            pending: self
                .pending
                .unwrap_or_else(|| Arc::new(MemoryPendingStore::new())),
        })
    }
}

/// Adds the [`OAuthAppBuilder`] setters to an adapter's configuration builder, so every
/// adapter is configured the same way: `client_id`, `client_secret`, `redirect_uri`, `scopes`,
/// `authorize_url`, `token_url`, `revoke_url` and `pending_store`. Pass the builder's
/// [`OAuthAppBuilder`] field.
///
/// ```
/// use socialpub_core::auth::oauth::OAuthAppBuilder;
///
/// /// Builds a configuration.
/// pub struct MyConfigBuilder {
///     app: OAuthAppBuilder,
/// }
///
/// impl MyConfigBuilder {
///     socialpub_core::oauth_app_setters!(app);
/// }
///
/// let b = MyConfigBuilder { app: OAuthAppBuilder::new() }.client_id("id").client_secret("s");
/// # let _ = b;
/// ```
#[macro_export]
macro_rules! oauth_app_setters {
    ($field:ident) => {
        /// The app's OAuth client id (TikTok calls it the client key). Needed to connect
        /// accounts.
        pub fn client_id(mut self, id: impl Into<String>) -> Self {
            self.$field = self.$field.client_id(id);
            self
        }

        /// The app's OAuth client secret (a `String`, `&str` or `SecretString`); never shown
        /// by `Debug`.
        pub fn client_secret(mut self, secret: impl Into<$crate::auth::SecretString>) -> Self {
            self.$field = self.$field.client_secret(secret);
            self
        }

        /// The callback URL registered for the app (must match it exactly). Needed to connect
        /// accounts, not to publish.
        pub fn redirect_uri(mut self, uri: impl Into<String>) -> Self {
            self.$field = self.$field.redirect_uri(uri);
            self
        }

        /// Replaces the scopes requested when connecting (default: what publishing needs).
        pub fn scopes(mut self, scopes: impl IntoIterator<Item = impl Into<String>>) -> Self {
            self.$field = self.$field.scopes(scopes);
            self
        }

        /// The OAuth authorization page (default: the platform's).
        pub fn authorize_url(mut self, url: impl Into<String>) -> Self {
            self.$field = self.$field.authorize_url(url);
            self
        }

        /// The OAuth token endpoint (default: the platform's).
        pub fn token_url(mut self, url: impl Into<String>) -> Self {
            self.$field = self.$field.token_url(url);
            self
        }

        /// The OAuth revocation endpoint (default: the platform's).
        pub fn revoke_url(mut self, url: impl Into<String>) -> Self {
            self.$field = self.$field.revoke_url(url);
            self
        }

        /// Keeps started authorizations in `store` (share one between the processes of a
        /// cluster, so a callback can land on any of them).
        pub fn pending_store(
            mut self,
            store: std::sync::Arc<dyn $crate::auth::oauth::PendingStore>,
        ) -> Self {
            self.$field = self.$field.pending_store(store);
            self
        }
    };
}
