//! Store URLs: which implementation a `--db` value names, and how it is shown without secrets.
//!
//! Accepted forms:
//! - a path, or `sqlite:PATH` (also `sqlite://PATH`): the embedded SQLite store;
//! - `mssql://user:password@host[:port]/database?...`, `sqlserver://...`, or an ADO.NET
//!   connection string (`Server=host;Database=...;User Id=...;Password=...`): SQL Server
//!   ([`super::mssql`], which parses the options).

use std::path::PathBuf;

use super::mssql::MssqlStore;
use super::sqlite::SqliteStore;
use super::{Store, StoreError};

/// A parsed `--db` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    Sqlite(PathBuf),
    /// A SQL Server URL or ADO string, kept verbatim (it may hold a password: show it only
    /// through [`mask_secrets`]).
    SqlServer(String),
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let trimmed = url.trim();
        if trimmed.is_empty() {
            return Err(StoreError::Unsupported {
                url: String::new(),
                reason: "the store URL is empty; give a SQLite path or a SQL Server URL".into(),
            });
        }
        let lower = trimmed.to_ascii_lowercase();
        if let Some(rest) = strip_prefix_ci(trimmed, "sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            if path.is_empty() {
                return Err(StoreError::Unsupported {
                    url: mask_secrets(url),
                    reason: "a sqlite: URL needs a file path after the colon".into(),
                });
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if lower.starts_with("mssql://") || lower.starts_with("sqlserver://") || is_ado_string(&lower) {
            return Ok(StoreUrl::SqlServer(trimmed.to_string()));
        }
        if let Some((scheme, _)) = trimmed.split_once("://") {
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || c == '+') {
                return Err(StoreError::Unsupported {
                    url: mask_secrets(url),
                    reason: format!("unknown store scheme `{scheme}`; use a SQLite path, sqlite:PATH, or mssql://"),
                });
            }
        }
        Ok(StoreUrl::Sqlite(PathBuf::from(trimmed)))
    }
}

fn strip_prefix_ci<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// An ADO.NET-style connection string names its server with one of these keys.
fn is_ado_string(lower: &str) -> bool {
    lower.contains(';')
        && lower.split(';').any(|part| {
            let key = part.split('=').next().unwrap_or("").trim();
            matches!(key, "server" | "data source" | "address" | "addr" | "network address")
        })
}

/// The URL with passwords replaced by `***`: the `user:password@` part of a URL, and the
/// `Password=`/`Pwd=` values of an ADO string (braced values included).
pub fn mask_secrets(url: &str) -> String {
    if let Some(scheme_end) = url.find("://") {
        let (head, rest) = url.split_at(scheme_end + 3);
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some(at) = authority.rfind('@') {
            let userinfo = &authority[..at];
            if let Some(colon) = userinfo.find(':') {
                return format!("{head}{}:***{}{tail}", &userinfo[..colon], &authority[at..]);
            }
        }
        // Query parameters may carry a password too (`?password=...`).
        return mask_ado_pairs(url, '&');
    }
    mask_ado_pairs(url, ';')
}

/// Masks `password=`/`pwd=` values in `key=value` pairs separated by `sep`.
fn mask_ado_pairs(text: &str, sep: char) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let (part, next, had_sep) = split_pair(rest, sep);
        let key = part.split('=').next().unwrap_or("");
        let bare_key = key.trim().trim_start_matches('?').to_ascii_lowercase();
        let bare_key = bare_key.rsplit('?').next().unwrap_or(&bare_key);
        if part.contains('=') && matches!(bare_key, "password" | "pwd") {
            out.push_str(key);
            out.push_str("=***");
        } else {
            out.push_str(part);
        }
        if had_sep {
            out.push(sep);
        }
        rest = next;
    }
    out
}

/// Splits off one pair, honouring ADO's `{...}` quoting (a braced value may contain `;`).
fn split_pair(text: &str, sep: char) -> (&str, &str, bool) {
    let mut in_braces = false;
    for (i, c) in text.char_indices() {
        match c {
            '{' => in_braces = true,
            '}' => in_braces = false,
            c if c == sep && !in_braces => return (&text[..i], &text[i + 1..], true),
            _ => {}
        }
    }
    (text, "", false)
}

/// Opens (creating if needed) the store `url` names.
pub async fn open(url: &str) -> Result<Box<dyn Store>, StoreError> {
    open_with(url, true).await
}

/// Opens the store `url` names only if it exists: for commands that read, so that a mistyped
/// path is an error rather than a new empty store.
pub async fn open_existing(url: &str) -> Result<Box<dyn Store>, StoreError> {
    open_with(url, false).await
}

async fn open_with(url: &str, create: bool) -> Result<Box<dyn Store>, StoreError> {
    match StoreUrl::parse(url)? {
        StoreUrl::Sqlite(path) => Ok(Box::new(SqliteStore::open(path, create).await?)),
        // A server's database always exists (an operator created it and its schema), so
        // `create` changes nothing here.
        StoreUrl::SqlServer(url) => Ok(Box::new(MssqlStore::open(&url).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_sqlite_urls_are_sqlite() {
        assert_eq!(StoreUrl::parse("/tmp/h.db").unwrap(), StoreUrl::Sqlite("/tmp/h.db".into()));
        assert_eq!(StoreUrl::parse("sqlite:h.db").unwrap(), StoreUrl::Sqlite("h.db".into()));
        assert_eq!(StoreUrl::parse("SQLite:///tmp/h.db").unwrap(), StoreUrl::Sqlite("/tmp/h.db".into()));
        assert_eq!(StoreUrl::parse("C:\\data\\h.db").unwrap(), StoreUrl::Sqlite("C:\\data\\h.db".into()));
        assert!(StoreUrl::parse("sqlite:").is_err());
        assert!(StoreUrl::parse("postgres://u:secret@h/db").unwrap_err().to_string().contains("u:***@h"));
    }

    #[test]
    fn sql_server_urls_and_ado_strings_are_recognised() {
        for url in [
            "mssql://sa:pw@localhost:1433/hartonomous",
            "sqlserver://db.example",
            "Server=tcp:db,1433;Database=h;User Id=sa;Password=pw;",
            "Data Source=db;Initial Catalog=h;Integrated Security=true",
        ] {
            assert!(matches!(StoreUrl::parse(url).unwrap(), StoreUrl::SqlServer(_)), "{url}");
        }
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(mask_secrets("mssql://sa:S3cret!@db:1433/h"), "mssql://sa:***@db:1433/h");
        assert_eq!(mask_secrets("mssql://db/h?user=sa&password=S3cret"), "mssql://db/h?user=sa&password=***");
        assert_eq!(
            mask_secrets("Server=db;User Id=sa;Password={a;b}c;Database=h"),
            "Server=db;User Id=sa;Password=***;Database=h"
        );
        assert_eq!(mask_secrets("Server=db;PWD=S3cret"), "Server=db;PWD=***");
        assert_eq!(mask_secrets("/tmp/h.db"), "/tmp/h.db");
    }

    #[tokio::test]
    async fn a_bad_sql_server_string_is_refused_with_the_password_masked() {
        let err = open("Server=db;User Id=sa;Password=S3cret;Colour=blue").await.err().expect("refused");
        let text = err.to_string();
        assert!(text.contains("Colour") && text.contains("Password=***"), "{text}");
        assert!(!text.contains("S3cret"), "{text}");
    }

    /// Nothing listens on port 1: the error names the server and the cause, not the password,
    /// after the retries a refused connection gets (about 4 s of backoff).
    #[tokio::test]
    async fn an_unreachable_server_is_named_without_the_password() {
        let err = open("mssql://sa:S3cret@127.0.0.1:1/h").await.err().expect("nothing listens on port 1");
        let text = err.to_string();
        assert!(text.contains("mssql://sa@127.0.0.1:1/h") && text.contains("connect"), "{text}");
        assert!(text.contains("is SQL Server running"), "{text}");
        assert!(!text.contains("S3cret"), "{text}");
    }
}
