//! Upstream addresses as written in a route's `upstreams`: `"127.0.0.1:7001"`,
//! `"http://127.0.0.1:7002"`, `"https://plugins.internal:443"`, `"[::1]:7003"`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamScheme {
    Http,
    Https,
}

/// A parsed upstream address. Resolution to a socket address happens when the route table
/// is built, not here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAddr {
    pub scheme: UpstreamScheme,
    /// Host name or IP literal, without brackets.
    pub host: String,
    pub port: u16,
}

impl UpstreamAddr {
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() {
            return Err("upstream address is empty".into());
        }
        let (scheme, rest, explicit) = if let Some(r) = t.strip_prefix("http://") {
            (UpstreamScheme::Http, r, true)
        } else if let Some(r) = t.strip_prefix("https://") {
            (UpstreamScheme::Https, r, true)
        } else if t.contains("://") {
            return Err(format!(
                "{s:?}: only http:// and https:// upstreams are supported"
            ));
        } else {
            (UpstreamScheme::Http, t, false)
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') || rest.contains('?') || rest.contains('#') {
            return Err(format!("{s:?}: an upstream is host:port, with no path"));
        }
        if rest.contains('@') {
            return Err(format!(
                "{s:?}: credentials in an upstream address are not supported"
            ));
        }
        let default_port = match scheme {
            UpstreamScheme::Http => 80,
            UpstreamScheme::Https => 443,
        };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("{s:?}: unclosed '[' in IPv6 address"))?;
            if h.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{s:?}: {h:?} is not an IPv6 address"));
            }
            let port = match after.strip_prefix(':') {
                Some(p) => parse_port(s, p)?,
                None if after.is_empty() && explicit => default_port,
                None if after.is_empty() => return Err(format!("{s:?}: missing port")),
                None => return Err(format!("{s:?}: unexpected text after ']'")),
            };
            (h.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), parse_port(s, p)?),
                None if explicit => (rest.to_string(), default_port),
                None => return Err(format!("{s:?}: missing port (write host:port or a URL)")),
            }
        };
        if host.is_empty() {
            return Err(format!("{s:?}: missing host"));
        }
        if !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':'))
        {
            return Err(format!("{s:?}: {host:?} is not a valid host name"));
        }
        Ok(UpstreamAddr { scheme, host, port })
    }

    pub fn is_tls(&self) -> bool {
        self.scheme == UpstreamScheme::Https
    }

    /// `host:port`, with brackets around IPv6 literals: what `Host` carries and what a
    /// resolver takes.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn parse_port(orig: &str, p: &str) -> Result<u16, String> {
    match p.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{orig:?}: {p:?} is not a port (1-65535)")),
        Ok(n) => Ok(n),
    }
}

impl fmt::Display for UpstreamAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.scheme {
            UpstreamScheme::Http => "http",
            UpstreamScheme::Https => "https",
        };
        write!(f, "{scheme}://{}", self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_documented_forms() {
        let a = UpstreamAddr::parse("127.0.0.1:7001").unwrap();
        assert_eq!(
            (a.scheme, a.host.as_str(), a.port),
            (UpstreamScheme::Http, "127.0.0.1", 7001)
        );
        let b = UpstreamAddr::parse("http://127.0.0.1:7002").unwrap();
        assert_eq!(b.port, 7002);
        let c = UpstreamAddr::parse("https://plugins.internal:443").unwrap();
        assert!(c.is_tls());
        assert_eq!(c.authority(), "plugins.internal:443");
        let d = UpstreamAddr::parse("https://plugins.internal").unwrap();
        assert_eq!(d.port, 443);
        let e = UpstreamAddr::parse("[::1]:7003").unwrap();
        assert_eq!(e.authority(), "[::1]:7003");
    }

    #[test]
    fn rejects_what_is_not_host_and_port() {
        for bad in [
            "",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            "ftp://x:21",
            "http://x:80/path",
            "http://user@x:80",
            "[::1",
            "bad host:80",
        ] {
            assert!(
                UpstreamAddr::parse(bad).is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}
