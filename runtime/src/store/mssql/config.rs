//! How to reach the server: a `mssql://` URL or an ADO.NET connection string parsed into
//! [`ConnectOptions`], shown without the password ([`ConnectOptions::location`]), turned into a
//! tiberius [`Config`]; and which failures are worth retrying ([`transient`]).
//!
//! Our own parser rather than `Config::from_ado_string`, for two reasons: tiberius's ADO parser
//! turns encryption off when `Encrypt` is absent (we default to on, as current Microsoft drivers
//! do), and one parser serves both forms, so they cannot disagree.

use std::io::ErrorKind;

use tiberius::{AuthMethod, Config, EncryptionLevel};

/// What a connection needs. `password` is shown nowhere.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ConnectOptions {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: String,
    /// `Encrypt`: true (the default) requires TLS for the whole session; false encrypts only the
    /// login packet (TDS's "off"), which is what a server without a certificate allows.
    pub encrypt: bool,
    /// `TrustServerCertificate`: accept any certificate (a development server's self-signed one).
    pub trust_server_certificate: bool,
    /// `TrustServerCertificateCA`: a PEM/DER file of the CA to trust instead of the system's.
    pub trust_ca: Option<String>,
    pub application_name: String,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.location())
    }
}

const DEFAULT_PORT: u16 = 1433;

impl ConnectOptions {
    /// Parses a `mssql://`/`sqlserver://` URL or an ADO.NET connection string. The error is the
    /// reason only; the caller names the (masked) URL.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let lower = text.to_ascii_lowercase();
        let mut o = ConnectOptions {
            host: String::new(),
            port: DEFAULT_PORT,
            database: String::new(),
            user: String::new(),
            password: String::new(),
            encrypt: true,
            trust_server_certificate: false,
            trust_ca: None,
            application_name: "hartonomous".into(),
        };
        let pairs: Vec<(String, String)> = if lower.starts_with("mssql://") || lower.starts_with("sqlserver://") {
            let rest = &text[text.find("://").expect("checked") + 3..];
            let (authority_path, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (authority, path) = authority_path.split_once('/').unwrap_or((authority_path, ""));
            let (userinfo, hostport) = match authority.rfind('@') {
                Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
                None => (None, authority),
            };
            if let Some(userinfo) = userinfo {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                o.user = percent_decode(user)?;
                o.password = percent_decode(password)?;
            }
            o.set_server(hostport, ':')?;
            o.database = percent_decode(path.trim_end_matches('/'))?;
            query
                .split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    Ok((k.to_string(), percent_decode(v)?))
                })
                .collect::<Result<_, String>>()?
        } else {
            ado_pairs(text)?
        };
        for (key, value) in pairs {
            let k: String = key.chars().filter(|c| !matches!(c, ' ' | '_' | '-')).collect::<String>().to_ascii_lowercase();
            match k.as_str() {
                "server" | "datasource" | "address" | "addr" | "networkaddress" => o.set_server(&value, ',')?,
                "database" | "initialcatalog" => o.database = value,
                "userid" | "uid" | "user" | "username" => o.user = value,
                "password" | "pwd" => o.password = value,
                "encrypt" => {
                    o.encrypt = match value.to_ascii_lowercase().as_str() {
                        "true" | "yes" | "mandatory" | "strict" => true,
                        "false" | "no" | "optional" => false,
                        other => return Err(format!("Encrypt={other} is not true or false")),
                    }
                }
                "trustservercertificate" => o.trust_server_certificate = parse_bool(&key, &value)?,
                "trustservercertificateca" => o.trust_ca = Some(value),
                "applicationname" | "app" => o.application_name = value,
                "integratedsecurity" | "trustedconnection" if parse_bool(&key, &value).unwrap_or(true) => {
                    return Err("integrated (Windows/Kerberos) authentication is not supported; give User Id and Password".into())
                }
                // Options that change nothing here, accepted so that a string copied from
                // another tool works.
                "integratedsecurity" | "trustedconnection" | "connecttimeout" | "connectiontimeout"
                | "multipleactiveresultsets" | "persistsecurityinfo" | "pooling" | "packetsize" => {}
                _ => return Err(format!("unknown connection option `{key}`")),
            }
        }
        if o.host.is_empty() {
            return Err("no server given (mssql://user:password@host:port/database, or Server=host,port;...)".into());
        }
        if o.database.is_empty() {
            return Err("no database given (the URL path, or Database=...)".into());
        }
        if o.user.is_empty() {
            return Err("no user given (mssql://user:password@..., or User Id=...)".into());
        }
        Ok(o)
    }

    /// `host[<sep>port]`, with ADO's optional `tcp:` prefix. A named instance (`host\name`) needs
    /// the SQL Browser service, which this build does not query: give the instance's port.
    fn set_server(&mut self, value: &str, sep: char) -> Result<(), String> {
        let value = value.trim();
        let value = value.strip_prefix("tcp:").unwrap_or(value);
        if value.contains('\\') {
            return Err(format!("named instances ({value}) are not supported; give the instance's TCP port instead (host,port)"));
        }
        let (host, port) = match value.rsplit_once(sep) {
            Some((h, p)) if !h.is_empty() => {
                (h, p.trim().parse::<u16>().map_err(|_| format!("port `{p}` is not a number from 1 to 65535"))?)
            }
            _ => (value, DEFAULT_PORT),
        };
        self.host = if host == "." || host.eq_ignore_ascii_case("(local)") { "localhost".into() } else { host.into() };
        self.port = port;
        Ok(())
    }

    /// Where the store is, for messages: no password, ever.
    pub fn location(&self) -> String {
        format!("mssql://{}@{}:{}/{}", self.user, self.host, self.port, self.database)
    }

    pub fn config(&self) -> Config {
        let mut c = Config::new();
        c.host(&self.host);
        c.port(self.port);
        c.database(&self.database);
        c.application_name(&self.application_name);
        c.authentication(AuthMethod::sql_server(&self.user, &self.password));
        c.encryption(if self.encrypt { EncryptionLevel::Required } else { EncryptionLevel::Off });
        if self.trust_server_certificate {
            c.trust_cert();
        } else if let Some(ca) = &self.trust_ca {
            c.trust_cert_ca(ca);
        }
        c
    }
}

fn parse_bool(key: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        other => Err(format!("{key}={other} is not true or false")),
    }
}

/// `key=value` pairs of an ADO.NET string; `{...}` quotes a value (`}}` inside is one `}`).
fn ado_pairs(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let Some(eq) = rest.find('=') else {
            if rest.trim().is_empty() {
                break;
            }
            return Err(format!("`{}` is not a key=value pair", rest.trim()));
        };
        let key = rest[..eq].trim().trim_start_matches(';').trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('{') {
            let mut value = String::new();
            let mut chars = quoted.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '}' {
                    if chars.peek().map(|&(_, c)| c) == Some('}') {
                        chars.next();
                        value.push('}');
                        continue;
                    }
                    end = Some(i + 1);
                    break;
                }
                value.push(c);
            }
            let end = end.ok_or_else(|| format!("the value of `{key}` opens a brace it never closes"))?;
            let tail = quoted[end..].trim_start();
            (value, tail.strip_prefix(';').unwrap_or(tail))
        } else {
            match after.split_once(';') {
                Some((v, tail)) => (v.trim().to_string(), tail),
                None => (after.trim().to_string(), ""),
            }
        };
        if !key.is_empty() {
            pairs.push((key, value));
        }
        rest = next;
    }
    Ok(pairs)
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3).ok_or("a `%` escape in the URL is cut short")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("`%{hex}` in the URL is not a percent escape"))?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a percent escape in the URL is not UTF-8".into())
}

/// Server errors after which the server has rolled the transaction back and the same work can
/// simply run again: deadlock victim, and Azure SQL's "try again" family (service busy,
/// reconfiguring, failover).
const RETRY_AFTER_ROLLBACK: &[u32] = &[1205, 40197, 40501, 40613, 49918, 49919, 49920, 10928, 10929];

/// What a failure says about the work that was in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transience {
    /// The server rolled the work back (deadlock victim, ...): running it again is safe.
    RolledBack,
    /// The connection failed: the work may or may not have been applied; running it again is
    /// safe only for work that is idempotent, or that had not been sent yet.
    ConnectionLost,
    /// Anything else: retrying would fail the same way.
    Permanent,
}

pub(crate) fn transient(e: &tiberius::error::Error) -> Transience {
    match e {
        tiberius::error::Error::Server(t) => server_transience(t.code()),
        tiberius::error::Error::Io {
            kind:
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::ConnectionRefused
                | ErrorKind::BrokenPipe
                | ErrorKind::UnexpectedEof
                | ErrorKind::TimedOut
                | ErrorKind::NotConnected
                | ErrorKind::Interrupted,
            ..
        } => Transience::ConnectionLost,
        _ => Transience::Permanent,
    }
}

/// What a server error number says (tiberius's `TokenError` has no public constructor, so the
/// tests check this).
fn server_transience(code: u32) -> Transience {
    if RETRY_AFTER_ROLLBACK.contains(&code) {
        Transience::RolledBack
    } else {
        Transience::Permanent
    }
}

/// Advice for the failures we recognise, appended to the error.
pub(crate) fn hint(e: &tiberius::error::Error) -> &'static str {
    match e {
        tiberius::error::Error::Server(t) => match t.code() {
            18456 => " (login failed: check the user and password, and that SQL Server authentication is enabled)",
            4060 => " (the database does not exist, or this login may not open it)",
            1205 => " (chosen as a deadlock victim more times than the store retries)",
            208 | 207 => " (a table or column is missing: install the schema, sql/schema/*.sql, as sql/README.md says)",
            _ => "",
        },
        tiberius::error::Error::Tls(_) => {
            " (TLS failed: for a server with a self-signed certificate add TrustServerCertificate=true, or \
             trust_server_certificate=true in a URL)"
        }
        tiberius::error::Error::Io { kind: ErrorKind::ConnectionRefused, .. } => {
            " (nothing accepted the connection: is SQL Server running and listening on TCP at that port?)"
        }
        tiberius::error::Error::Io { kind: ErrorKind::TimedOut, .. } => " (no answer in time: check the host, port and firewall)",
        tiberius::error::Error::Io { message, .. } if message.contains("lookup") || message.contains("resolve") => {
            " (the host name does not resolve)"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_with_escapes_and_options() {
        let o = ConnectOptions::parse("mssql://sa:p%40ss%3Aw@db.example:14330/Hartonomous?trust_server_certificate=true").unwrap();
        assert_eq!((o.host.as_str(), o.port, o.database.as_str()), ("db.example", 14330, "Hartonomous"));
        assert_eq!((o.user.as_str(), o.password.as_str()), ("sa", "p@ss:w"));
        assert!(o.encrypt && o.trust_server_certificate, "encrypted by default; trust as asked");
        let o = ConnectOptions::parse("sqlserver://app:pw@host/h?encrypt=false&TrustServerCertificate=no").unwrap();
        assert_eq!(o.port, 1433);
        assert!(!o.encrypt && !o.trust_server_certificate);
    }

    #[test]
    fn ado_strings_parse_with_braces_and_tcp_prefix() {
        let o = ConnectOptions::parse(
            "Server=tcp:db,1444;Database=h;User Id=sa;Password={a;b}}c};Encrypt=true;TrustServerCertificate=True",
        )
        .unwrap();
        assert_eq!((o.host.as_str(), o.port, o.database.as_str(), o.user.as_str()), ("db", 1444, "h", "sa"));
        assert_eq!(o.password, "a;b}c");
        assert!(o.encrypt && o.trust_server_certificate);
        let o = ConnectOptions::parse("data source=.;initial catalog=h;uid=u;pwd=p").unwrap();
        assert_eq!((o.host.as_str(), o.port), ("localhost", 1433));
        assert!(o.encrypt, "Encrypt defaults to true, unlike tiberius's own ADO parser");
    }

    #[test]
    fn bad_strings_say_what_is_wrong() {
        let err = |s: &str| ConnectOptions::parse(s).unwrap_err();
        assert!(err("mssql://sa:pw@db:port/h").contains("port `port`"));
        assert!(err("mssql://sa:pw@db").contains("no database"));
        assert!(err("Server=db;Database=h").contains("no user"));
        assert!(err("Server=db\\SQLEXPRESS;Database=h;User Id=u").contains("named instances"));
        assert!(err("Server=db;Database=h;Integrated Security=SSPI").contains("integrated"));
        assert!(err("Server=db;Database=h;User Id=u;Colour=blue").contains("Colour"));
        assert!(err("Server=db;Database=h;User Id=u;Password={open").contains("never closes"));
    }

    #[test]
    fn the_location_never_shows_the_password() {
        for s in ["mssql://sa:S3cret!@db:1433/h", "Server=db;Database=h;User Id=sa;Password=S3cret!"] {
            let o = ConnectOptions::parse(s).unwrap();
            assert_eq!(o.location(), "mssql://sa@db:1433/h");
            assert!(!format!("{o:?}").contains("S3cret"));
        }
    }

    #[test]
    fn deadlocks_and_dropped_connections_are_transient() {
        let io = |kind| tiberius::error::Error::Io { kind, message: String::new() };
        assert_eq!(transient(&io(ErrorKind::ConnectionReset)), Transience::ConnectionLost);
        assert_eq!(transient(&io(ErrorKind::UnexpectedEof)), Transience::ConnectionLost);
        assert_eq!(transient(&io(ErrorKind::PermissionDenied)), Transience::Permanent);
        assert_eq!(transient(&tiberius::error::Error::Tls("bad certificate".into())), Transience::Permanent);
        assert_eq!(transient(&tiberius::error::Error::Protocol("x".into())), Transience::Permanent);
        for code in [1205, 40613, 40501] {
            assert_eq!(server_transience(code), Transience::RolledBack, "{code}");
        }
        // Login failed, no database, foreign key, duplicate key, our own THROWs.
        for code in [18456, 4060, 547, 2627, 50011] {
            assert_eq!(server_transience(code), Transience::Permanent, "{code}");
        }
    }
}
