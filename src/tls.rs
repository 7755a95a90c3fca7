//! TLS on both sides of the gateway (SPEC §12).
//!
//! The listener side: [`ListenerTls`] is one OpenSSL acceptor built from `[server.tls]`,
//! with the default certificate and one context per `sni` entry, picked by the name a
//! client asks for. It is built with every route table (start and each reload), so a
//! reload re-reads the files; a connection takes the acceptor in force when it arrives
//! and keeps it.
//!
//! The upstream side: [`UpstreamTlsFiles`] holds a route's `tls_ca`, `tls_cert` and
//! `tls_key` as read from disk; the route's peers carry the parsed CA list and client
//! certificate (pingora verifies the upstream's certificate against them, or against the
//! system's roots).
//!
//! Every loader reports a problem with the config key it belongs to.

use crate::config::{RouteConfig, ServerTlsConfig};
use pingora::tls::nid::Nid;
use pingora::tls::pkey::{PKey, Private};
use pingora::tls::ssl::{
    select_next_proto, AlpnError, NameType, SslAcceptor, SslAcceptorBuilder, SslContext, SslMethod,
    SslMode, SslRef, SslVersion,
};
use pingora::tls::x509::X509;
use std::collections::HashMap;
use std::sync::Arc;

/// A problem with a TLS setting: the config key it belongs to and what is wrong.
pub type Problem = (String, String);

/// ALPN protocols the listener offers, in its order of preference (wire format).
const ALPN_H2_H1: &[u8] = b"\x02h2\x08http/1.1";
const ALPN_H1: &[u8] = b"\x08http/1.1";

/// A certificate chain (leaf first) and its private key.
pub struct CertKey {
    pub chain: Vec<X509>,
    pub key: PKey<Private>,
}

/// Reads a PEM file of one or more certificates.
pub fn read_chain(path: &str) -> Result<Vec<X509>, String> {
    parse_chain(path, &read_file(path)?)
}

/// Reads a PEM private key (PKCS#8, or a traditional RSA or EC key).
pub fn read_key(path: &str) -> Result<PKey<Private>, String> {
    parse_key(path, &read_file(path)?)
}

/// The certificates of `pem`, read from `path`.
fn parse_chain(path: &str, pem: &[u8]) -> Result<Vec<X509>, String> {
    let certs = X509::stack_from_pem(pem)
        .map_err(|e| format!("{path:?} is not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{path:?} holds no PEM certificate"));
    }
    Ok(certs)
}

/// The private key of `pem`, read from `path`.
fn parse_key(path: &str, pem: &[u8]) -> Result<PKey<Private>, String> {
    PKey::private_key_from_pem(pem).map_err(|e| format!("{path:?} is not a PEM private key: {e}"))
}

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    if path.trim().is_empty() {
        return Err("must name a file".into());
    }
    std::fs::read(path).map_err(|e| format!("cannot read {path:?}: {e}"))
}

/// Loads a certificate chain and its key; `keys` are the config keys of the two files.
/// Reports every problem: an unreadable file, a file that is not PEM, a key that does
/// not belong to the certificate.
pub fn load_pair(
    (cert_key, cert): (&str, &str),
    (key_key, key): (&str, &str),
) -> Result<CertKey, Vec<Problem>> {
    pair(
        (cert_key, cert, read_chain(cert)),
        (key_key, key, read_key(key)),
    )
}

/// A chain and a key as read (or not), each with its config key and path: the pair when
/// both were read and the key belongs to the chain's leaf, else every problem.
fn pair(
    (cert_key, cert, chain): (&str, &str, Result<Vec<X509>, String>),
    (key_key, key, pkey): (&str, &str, Result<PKey<Private>, String>),
) -> Result<CertKey, Vec<Problem>> {
    match (chain, pkey) {
        (Ok(chain), Ok(pkey)) => {
            let matches = chain[0]
                .public_key()
                .is_ok_and(|public| public.public_eq(&pkey));
            if matches {
                Ok(CertKey { chain, key: pkey })
            } else {
                Err(vec![(
                    key_key.to_string(),
                    format!("{key:?} is not the private key of the certificate in {cert:?}"),
                )])
            }
        }
        (chain, pkey) => Err(chain
            .err()
            .map(|e| (cert_key.to_string(), e))
            .into_iter()
            .chain(pkey.err().map(|e| (key_key.to_string(), e)))
            .collect()),
    }
}

/// The TLS listeners' acceptor: the default certificate, the `sni` ones picked by name,
/// the minimum version and the ALPN offer.
pub struct ListenerTls {
    acceptor: SslAcceptor,
    /// The names each certificate answers for, in config order (the default first).
    names: Vec<Vec<String>>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls")
            .field("names", &self.names)
            .finish()
    }
}

impl ListenerTls {
    /// Loads every certificate of `[server.tls]` and builds the acceptor.
    pub fn build(cfg: &ServerTlsConfig) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let min_version = match cfg.min_version.as_str() {
            "1.2" => Some(SslVersion::TLS1_2),
            "1.3" => Some(SslVersion::TLS1_3),
            other => {
                problems.push((
                    "server.tls.min_version".to_string(),
                    format!("must be \"1.2\" or \"1.3\", got {other:?}"),
                ));
                None
            }
        };
        let mut pairs = Vec::with_capacity(1 + cfg.sni.len());
        let default = load_pair(("server.tls.cert", &cfg.cert), ("server.tls.key", &cfg.key));
        match default {
            Ok(pair) => pairs.push(pair),
            Err(p) => problems.extend(p),
        }
        for (i, entry) in cfg.sni.iter().enumerate() {
            let (ck, kk) = (
                format!("server.tls.sni.{i}.cert"),
                format!("server.tls.sni.{i}.key"),
            );
            match load_pair((&ck, &entry.cert), (&kk, &entry.key)) {
                Ok(pair) => pairs.push(pair),
                Err(p) => problems.extend(p),
            }
        }
        let Some(min_version) = min_version.filter(|_| problems.is_empty()) else {
            return Err(problems);
        };
        let setup = |e: pingora::tls::error::ErrorStack| {
            vec![("server.tls".to_string(), format!("cannot set up TLS: {e}"))]
        };
        let mut contexts = Vec::with_capacity(pairs.len());
        let mut names = Vec::with_capacity(pairs.len());
        for (i, pair) in pairs.iter().enumerate() {
            names.push(cert_names(&pair.chain[0]));
            if i > 0 {
                let b = context_builder(pair, min_version, cfg.h2).map_err(setup)?;
                contexts.push(b.build().into_context());
            }
        }
        let table = Arc::new(SniTable::new(&names, contexts));
        let mut builder = context_builder(&pairs[0], min_version, cfg.h2).map_err(setup)?;
        builder.set_servername_callback(move |ssl, _alert| {
            table.switch(ssl);
            Ok(())
        });
        Ok(ListenerTls {
            acceptor: builder.build(),
            names,
        })
    }

    pub fn acceptor(&self) -> &SslAcceptor {
        &self.acceptor
    }
}

/// One context's settings: Mozilla's intermediate profile, the minimum version, the
/// certificate and key, the ALPN offer.
fn context_builder(
    pair: &CertKey,
    min_version: SslVersion,
    h2: bool,
) -> Result<SslAcceptorBuilder, pingora::tls::error::ErrorStack> {
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls())?;
    b.set_min_proto_version(Some(min_version))?;
    b.set_certificate(&pair.chain[0])?;
    for extra in &pair.chain[1..] {
        b.add_extra_chain_cert(extra.clone())?;
    }
    b.set_private_key(&pair.key)?;
    b.check_private_key()?;
    // An idle connection gives its record buffers back (as nginx does).
    b.set_mode(SslMode::RELEASE_BUFFERS);
    let offer = if h2 { ALPN_H2_H1 } else { ALPN_H1 };
    // No protocol in common: go on without ALPN (the client then speaks HTTP/1.1).
    b.set_alpn_select_callback(move |_, client| {
        select_next_proto(offer, client).ok_or(AlpnError::NOACK)
    });
    Ok(b)
}

/// The DNS names a certificate is for (its subject alternative names, or its common
/// name when it has none), lower-cased.
fn cert_names(cert: &X509) -> Vec<String> {
    let sans: Vec<String> = cert
        .subject_alt_names()
        .map(|list| {
            list.iter()
                .filter_map(|n| n.dnsname().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default();
    if !sans.is_empty() {
        return sans;
    }
    cert.subject_name()
        .entries_by_nid(Nid::COMMONNAME)
        .filter_map(|e| e.data().to_string().ok().map(|s| s.to_ascii_lowercase()))
        .collect()
}

/// Which context answers a server name: exact names first, then `*.` wildcards (one
/// label), the first certificate in config order winning. Index 0 is the default.
struct SniTable {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    /// The `sni` entries' contexts (index - 1).
    contexts: Vec<SslContext>,
}

impl SniTable {
    fn new(names: &[Vec<String>], contexts: Vec<SslContext>) -> Self {
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, list) in names.iter().enumerate() {
            for name in list {
                match name.strip_prefix("*.") {
                    Some(suffix) => wildcard.entry(suffix.to_string()).or_insert(i),
                    None => exact.entry(name.clone()).or_insert(i),
                };
            }
        }
        SniTable {
            exact,
            wildcard,
            contexts,
        }
    }

    /// The index of the certificate for `name` (case-insensitive, a trailing dot ignored).
    fn pick(&self, name: &str) -> Option<usize> {
        let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        self.exact.get(&name).copied().or_else(|| {
            let (_, parent) = name.split_once('.')?;
            self.wildcard.get(parent).copied()
        })
    }

    /// Puts the context for the client's server name on `ssl`; the default stays for an
    /// unknown name or none.
    fn switch(&self, ssl: &mut SslRef) {
        let Some(i) = ssl
            .servername(NameType::HOST_NAME)
            .and_then(|n| self.pick(n))
        else {
            return;
        };
        if let Some(ctx) = i.checked_sub(1).and_then(|j| self.contexts.get(j)) {
            if let Err(e) = ssl.set_ssl_context(ctx) {
                log::debug!("TLS: cannot switch to the certificate for the client's name: {e}");
            }
        }
    }
}

/// A route's upstream TLS files as read from disk: what its peers are built from, and
/// what tells a reload whether they changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamTlsFiles {
    ca: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

/// What a route's peers carry for TLS.
pub struct UpstreamTls {
    pub ca: Option<Arc<Box<[X509]>>>,
    pub client: Option<Arc<pingora::utils::tls::CertKey>>,
}

impl UpstreamTlsFiles {
    /// Reads and checks `routes.<name>.tls_ca`, `tls_cert` and `tls_key`, each file once.
    pub fn read(base: &str, r: &RouteConfig) -> Result<Self, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut files = UpstreamTlsFiles::default();
        if !r.tls_ca.is_empty() {
            let read =
                read_file(&r.tls_ca).and_then(|pem| parse_chain(&r.tls_ca, &pem).map(|_| pem));
            match read {
                Ok(pem) => files.ca = Some(pem),
                Err(e) => problems.push((format!("{base}.tls_ca"), e)),
            }
        }
        match (r.tls_cert.is_empty(), r.tls_key.is_empty()) {
            (true, true) => {}
            (false, true) => problems.push((
                format!("{base}.tls_key"),
                "must be set with tls_cert".into(),
            )),
            (true, false) => problems.push((
                format!("{base}.tls_cert"),
                "must be set with tls_key".into(),
            )),
            (false, false) => {
                let (ck, kk) = (format!("{base}.tls_cert"), format!("{base}.tls_key"));
                let (cert_pem, key_pem) = (read_file(&r.tls_cert), read_file(&r.tls_key));
                let chain = cert_pem
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|pem| parse_chain(&r.tls_cert, pem));
                let pkey = key_pem
                    .as_ref()
                    .map_err(Clone::clone)
                    .and_then(|pem| parse_key(&r.tls_key, pem));
                match pair((&ck, &r.tls_cert, chain), (&kk, &r.tls_key, pkey)) {
                    Ok(_) => {
                        files.cert = cert_pem.ok();
                        files.key = key_pem.ok();
                    }
                    Err(p) => problems.extend(p),
                }
            }
        }
        if problems.is_empty() {
            Ok(files)
        } else {
            Err(problems)
        }
    }

    /// The parsed CA list and client certificate.
    pub fn parse(&self) -> Result<UpstreamTls, String> {
        let ca = match &self.ca {
            Some(pem) => {
                let certs = X509::stack_from_pem(pem).map_err(|e| format!("tls_ca: {e}"))?;
                Some(Arc::new(certs.into_boxed_slice()))
            }
            None => None,
        };
        let client = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => {
                let chain = X509::stack_from_pem(cert).map_err(|e| format!("tls_cert: {e}"))?;
                let key = PKey::private_key_from_pem(key).map_err(|e| format!("tls_key: {e}"))?;
                if chain.is_empty() {
                    return Err("tls_cert: no certificate".into());
                }
                Some(Arc::new(pingora::utils::tls::CertKey::new(chain, key)))
            }
            _ => None,
        };
        Ok(UpstreamTls { ca, client })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sni_picks_exact_then_wildcard_case_insensitively() {
        let names = vec![
            vec!["gw.example".to_string()],
            vec!["a.example".to_string(), "*.b.example".to_string()],
            vec!["a.example".to_string(), "c.example".to_string()],
        ];
        let t = SniTable::new(&names, Vec::new());
        assert_eq!(t.pick("GW.example"), Some(0));
        assert_eq!(t.pick("a.example"), Some(1), "the first certificate wins");
        assert_eq!(t.pick("c.example."), Some(2));
        assert_eq!(t.pick("x.b.example"), Some(1));
        assert_eq!(t.pick("y.x.b.example"), None, "a wildcard covers one label");
        assert_eq!(t.pick("b.example"), None);
        assert_eq!(t.pick("other"), None);
    }
}
