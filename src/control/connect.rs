//! NATS connection options from the config (`[nats]`) or `fusegate ctl` flags.

use super::url::UrlCredentials;
use crate::config::NatsConfig;
use async_nats::ConnectOptions;
use std::path::PathBuf;
use std::time::Duration;

/// How to log in to NATS; also the auth flags of `fusegate ctl`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct NatsAuth {
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub password: Option<String>,
    #[arg(long)]
    pub token: Option<String>,
    /// NATS credentials file.
    #[arg(long)]
    pub creds: Option<String>,
    #[arg(long)]
    pub tls_ca: Option<String>,
    #[arg(long)]
    pub tls_cert: Option<String>,
    #[arg(long)]
    pub tls_key: Option<String>,
}

impl From<&NatsConfig> for NatsAuth {
    fn from(c: &NatsConfig) -> Self {
        NatsAuth {
            user: c.user.clone(),
            password: c.password.clone(),
            token: c.token.clone(),
            creds: c.creds.clone(),
            tls_ca: c.tls_ca.clone(),
            tls_cert: c.tls_cert.clone(),
            tls_key: c.tls_key.clone(),
        }
    }
}

/// Backoff between reconnect attempts: 100 ms doubling to 5 s.
pub fn reconnect_delay(attempts: usize) -> Duration {
    let exp = attempts.min(6) as u32;
    Duration::from_millis((100u64 << exp).min(5_000))
}

impl NatsAuth {
    /// Connect options with these credentials, or else those of the URL
    /// (`nats://user:password@host`, `nats://token@host`); `name` shows in the server's
    /// monitoring.
    pub async fn options(
        &self,
        name: &str,
        from_url: Option<&UrlCredentials>,
    ) -> Result<ConnectOptions, String> {
        let mut o = ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(reconnect_delay);
        let explicit = self.user.is_some() || self.token.is_some() || self.creds.is_some();
        match from_url.filter(|_| !explicit) {
            Some(UrlCredentials::UserPassword { user, password }) => {
                o = o.user_and_password(user.clone(), password.clone())
            }
            Some(UrlCredentials::Token(t)) => o = o.token(t.clone()),
            None => {}
        }
        if let Some(creds) = &self.creds {
            o = o
                .credentials_file(creds)
                .await
                .map_err(|e| format!("nats creds file {creds}: {e}"))?;
        }
        match (&self.user, &self.password) {
            (Some(u), Some(p)) => o = o.user_and_password(u.clone(), p.clone()),
            (Some(_), None) | (None, Some(_)) => {
                return Err("nats user and password go together".into())
            }
            (None, None) => {}
        }
        if let Some(t) = &self.token {
            o = o.token(t.clone());
        }
        if let Some(ca) = &self.tls_ca {
            o = o.add_root_certificates(PathBuf::from(ca)).require_tls(true);
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(c), Some(k)) => {
                o = o
                    .add_client_certificate(PathBuf::from(c), PathBuf::from(k))
                    .require_tls(true)
            }
            (Some(_), None) | (None, Some(_)) => {
                return Err("nats tls_cert and tls_key go together".into())
            }
            (None, None) => {}
        }
        Ok(o)
    }
}
