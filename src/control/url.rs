//! NATS server URLs as `[nats] url` and `fusegate ctl --nats` take them: one server or
//! several of a NATS cluster, comma-separated, with credentials in the URL as every NATS
//! client takes them (`nats://user:password@host:4222`, `nats://token@host:4222`); and
//! their masked form, the only one ever printed.

use async_nats::ServerAddr;

/// The servers of a URL list and the credentials its URLs carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsUrl {
    pub servers: Vec<ServerAddr>,
    pub credentials: Option<UrlCredentials>,
}

/// Credentials found in a URL.
#[derive(Clone, PartialEq, Eq)]
pub enum UrlCredentials {
    UserPassword { user: String, password: String },
    Token(String),
}

impl std::fmt::Debug for UrlCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UrlCredentials::UserPassword { user, .. } => write!(f, "UserPassword({user}, ***)"),
            UrlCredentials::Token(_) => f.write_str("Token(***)"),
        }
    }
}

/// Parses a comma-separated list of server URLs (`nats://` or `tls://`; a bare
/// `host:port` is `nats://`). Credentials may be given in any of the URLs; when
/// several give them they must agree. Errors name the offending entry, masked.
pub fn parse(list: &str) -> Result<NatsUrl, String> {
    let mut servers = Vec::new();
    let mut credentials: Option<UrlCredentials> = None;
    for entry in list.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err(format!("{:?}: an empty server in the list", mask(list)));
        }
        let with_scheme = if entry.contains("://") {
            entry.to_string()
        } else {
            format!("nats://{entry}")
        };
        let addr: ServerAddr = with_scheme
            .parse()
            .map_err(|e| format!("{:?} is not a NATS server URL: {e}", mask(entry)))?;
        if addr.host().is_empty() {
            return Err(format!("{:?} names no host", mask(entry)));
        }
        if addr.is_websocket() {
            return Err(format!(
                "{:?}: NATS over WebSocket is not supported; use nats:// or tls://",
                mask(entry)
            ));
        }
        let found = match (addr.username(), addr.password()) {
            (Some(u), Some(p)) => Some(UrlCredentials::UserPassword {
                user: percent_decode(u),
                password: percent_decode(p),
            }),
            (Some(t), None) => Some(UrlCredentials::Token(percent_decode(t))),
            (None, Some(_)) => return Err(format!("{:?}: a password without a user", mask(entry))),
            (None, None) => None,
        };
        match (&credentials, found) {
            (Some(have), Some(f)) if *have != f => {
                return Err("the servers of the list give different credentials".into())
            }
            (None, Some(f)) => credentials = Some(f),
            _ => {}
        }
        servers.push(addr);
    }
    Ok(NatsUrl {
        servers,
        credentials,
    })
}

/// The list with every URL's credentials masked: `nats://user:***@host:4222`, and
/// `nats://***@host:4222` for a token. Safe to print whatever the input.
pub fn mask(list: &str) -> String {
    list.split(',')
        .map(|entry| {
            let (scheme, rest) = match entry.find("://") {
                Some(i) => entry.split_at(i + 3),
                None => ("", entry),
            };
            // Everything before the last `@` is credentials, whatever it holds (a
            // password may contain `/`, `?` or `#`).
            match rest.rfind('@') {
                Some(at) => {
                    let (creds, host) = rest.split_at(at);
                    let masked = match creds.split_once(':') {
                        Some((user, _)) => format!("{user}:***"),
                        None => "***".to_string(),
                    };
                    format!("{scheme}{masked}{host}")
                }
                None => entry.to_string(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// `%XX` sequences decoded; anything else kept.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_or_several_servers_with_credentials_in_the_url() {
        let u = parse("nats://ops:s%40cret@127.0.0.1:4222").unwrap();
        assert_eq!(u.servers.len(), 1);
        assert_eq!(
            u.credentials,
            Some(UrlCredentials::UserPassword {
                user: "ops".into(),
                password: "s@cret".into()
            })
        );
        let u = parse("nats://tok3n@127.0.0.1:4222, 127.0.0.1:4223 ,tls://127.0.0.1:4224").unwrap();
        assert_eq!(u.servers.len(), 3);
        assert_eq!(u.servers[1].port(), 4223);
        assert!(u.servers[2].tls_required());
        assert_eq!(u.credentials, Some(UrlCredentials::Token("tok3n".into())));
        assert_eq!(parse("nats://127.0.0.1").unwrap().servers[0].port(), 4222);
        assert_eq!(parse("nats://127.0.0.1:4222").unwrap().credentials, None);
    }

    #[test]
    fn bad_lists_are_refused_without_their_secrets() {
        for bad in [
            "",
            "nats://a:4222,,nats://b:4222",
            "nats://127.0.0.1:99999",
            "http://127.0.0.1:4222",
            "ws://127.0.0.1:4222",
            "nats://u:one@a:4222,nats://u:two@b:4222",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(!e.contains("one") && !e.contains("two"), "{e}");
        }
        let e = parse("nats://ops:topsecret@127.0.0.1:notaport").unwrap_err();
        assert!(!e.contains("topsecret") && e.contains("ops:***@"), "{e}");
    }

    #[test]
    fn masking_hides_passwords_and_tokens_only() {
        assert_eq!(
            mask("nats://ops:secret@127.0.0.1:4222"),
            "nats://ops:***@127.0.0.1:4222"
        );
        assert_eq!(mask("nats://tok@h:4222"), "nats://***@h:4222");
        assert_eq!(
            mask("nats://a:4222,tls://u:p@b:4222/x"),
            "nats://a:4222,tls://u:***@b:4222/x"
        );
        assert_eq!(mask("u:p@host:4222"), "u:***@host:4222");
        assert_eq!(mask("nats://u:p/a?b#c@h:4222"), "nats://u:***@h:4222");
        assert_eq!(mask("nats://h:4222"), "nats://h:4222");
    }
}
