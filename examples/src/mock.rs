//! `socialpub mock`: every platform's mock on loopback, for trying the app end to end
//! (connect, schedule, run) without a real platform app. It prints the configuration that
//! points the app at the mocks, as `export` lines for a shell.

use socialpub_core::{Platform, Result};
use socialpub_x::mock::XMock;
use socialpub_youtube::mock::YouTubeMock;

use crate::config::Config;

/// The running mocks; they stop when this is dropped.
#[derive(Debug)]
pub struct Mocks {
    /// X, accepting the app's callback as its redirect URI.
    pub x: XMock,
    /// YouTube, accepting the app's callback as its redirect URI.
    pub youtube: YouTubeMock,
}

impl Mocks {
    /// Starts every mock on a free loopback port. Each mock's OAuth client is registered
    /// with `config`'s callback, so `socialpub connect` works against it.
    pub async fn start(config: &Config) -> Result<Mocks> {
        let callback = config.redirect_uri()?.to_string();
        let x = XMock::builder()
            .redirect_uri(callback.clone())
            .try_start()
            .await?;
        let youtube = YouTubeMock::builder()
            .redirect_uri(callback)
            .start()
            .await?;
        Ok(Mocks { x, youtube })
    }

    /// The environment that points the app at the mocks, one `NAME=value` pair a platform
    /// setting.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut vars = Vec::new();
        let mut add = |platform: Platform, id: &str, secret: &str, url: String| {
            let upper = platform.as_str().to_ascii_uppercase();
            vars.push((format!("SOCIALPUB_{upper}_CLIENT_ID"), id.to_owned()));
            vars.push((
                format!("SOCIALPUB_{upper}_CLIENT_SECRET"),
                secret.to_owned(),
            ));
            vars.push((format!("SOCIALPUB_{upper}_MOCK_URL"), url));
        };
        add(
            Platform::X,
            socialpub_x::mock::CLIENT_ID,
            socialpub_x::mock::CLIENT_SECRET,
            self.x.base_url().to_string(),
        );
        add(
            Platform::YouTube,
            YouTubeMock::CLIENT_ID,
            YouTubeMock::CLIENT_SECRET,
            self.youtube.base_url().to_string(),
        );
        vars
    }

    /// What `socialpub mock` prints: comments saying how to use it, then `export` lines.
    pub fn instructions(&self) -> Vec<String> {
        let mut lines = vec![
            format!(
                "# socialpub mock: X at {}, YouTube at {}; Ctrl-C stops them.",
                self.x.base_url(),
                self.youtube.base_url()
            ),
            "# In another shell, with these set (and SOCIALPUB_ENCRYPTION_KEY):".to_owned(),
            "#   socialpub connect x --no-browser   (open the URL: the mock approves at once)"
                .to_owned(),
            "#   socialpub schedule --at +1m --text \"Hello\" --to x, then socialpub run"
                .to_owned(),
        ];
        lines.extend(
            self.env()
                .into_iter()
                .map(|(k, v)| format!("export {k}={v}")),
        );
        lines
    }
}
