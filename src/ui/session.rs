//! Sessions of the admin UI: an API key exchanged for a random session id in a cookie, the
//! cross-site request forgery check, and the limiter against guessing keys.

use std::collections::HashMap;
use std::io::Read;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{header, HeaderMap};

/// The session cookie's name.
pub const COOKIE: &str = "addonfs_session";
/// How long a session lives after sign-in (no sliding renewal: a stolen cookie dies anyway).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a wrong key's answer is held back.
pub const FAILURE_DELAY: Duration = Duration::from_secs(1);
/// Wrong keys allowed from one client within [`FAILURE_WINDOW`] before it is refused outright.
pub const MAX_FAILURES: u32 = 10;
/// The window of [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Most sessions kept at once; the oldest goes first (a flood of sign-ins cannot grow memory).
const MAX_SESSIONS: usize = 10_000;

/// A message shown once on the next page (the result of a status change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flash {
    /// Whether it reports an error.
    pub error: bool,
    /// The text.
    pub text: String,
}

struct Session {
    expires: Instant,
    flash: Option<Flash>,
}

/// The live sessions, in memory: a restart signs everyone out.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<Option<IpAddr>, (Instant, u32)>>,
}

impl Sessions {
    /// Opens a session; returns its id (32 bytes from `/dev/urandom`, hex).
    pub fn open(&self) -> std::io::Result<String> {
        let mut raw = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut raw)?;
        let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(id.clone(), Session { expires: now + SESSION_TTL, flash: None });
        Ok(id)
    }

    /// The session id of the request's cookie, if it names a live session.
    pub fn current(&self, headers: &HeaderMap) -> Option<String> {
        let id = cookie(headers, COOKIE)?;
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(id) {
            Some(s) if s.expires > Instant::now() => Some(id.to_string()),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn close(&self, id: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Leaves a message for the session's next page.
    pub fn set_flash(&self, id: &str, flash: Flash) {
        if let Some(s) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id) {
            s.flash = Some(flash);
        }
    }

    /// Takes the session's message.
    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).get_mut(id).and_then(|s| s.flash.take())
    }

    /// Whether `client` has used up its wrong keys; if so, for how much longer.
    pub fn blocked(&self, client: Option<IpAddr>) -> Option<Duration> {
        let map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let (since, count) = map.get(&client)?;
        let left = FAILURE_WINDOW.checked_sub(since.elapsed())?;
        (*count >= MAX_FAILURES).then_some(left)
    }

    /// Counts a wrong key from `client`.
    pub fn failed(&self, client: Option<IpAddr>) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, (since, _)| now.duration_since(*since) < FAILURE_WINDOW);
        let entry = map.entry(client).or_insert((now, 0));
        entry.1 += 1;
    }
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The `Set-Cookie` value that stores session `id` (`Secure` when `secure`).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// The cross-site request forgery check of a state-changing request: its `Origin` (else its
/// `Referer`) must name the host it was sent to. A request with neither is refused: browsers
/// send `Origin` with every `POST`, so only a non-browser client lacks both, and it has the
/// JSON API with its key.
pub fn same_origin(headers: &HeaderMap) -> Result<(), String> {
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .ok_or("the request has no Host header")?;
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .ok_or("the request has neither an Origin nor a Referer header")?;
    let authority = source
        .strip_prefix("http://")
        .or_else(|| source.strip_prefix("https://"))
        .map(|rest| rest.split('/').next().unwrap_or(""));
    match authority {
        Some(a) if a.eq_ignore_ascii_case(host) => Ok(()),
        _ => Err(format!("the request comes from {source:?}, not from this site ({host})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k.clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn origin_must_match_the_host() {
        let host = (header::HOST, "127.0.0.1:7474");
        assert!(same_origin(&headers(&[host.clone(), (header::ORIGIN, "http://127.0.0.1:7474")]))
            .is_ok());
        assert!(same_origin(&headers(&[
            host.clone(),
            (header::REFERER, "http://127.0.0.1:7474/ui/?q=a")
        ]))
        .is_ok());
        let err = same_origin(&headers(&[host.clone(), (header::ORIGIN, "http://evil.example")]))
            .unwrap_err();
        assert!(err.contains("evil.example"), "{err}");
        // A look-alike host that merely starts with ours.
        assert!(same_origin(&headers(&[
            host.clone(),
            (header::ORIGIN, "http://127.0.0.1:7474.evil.example")
        ]))
        .is_err());
        assert!(same_origin(&headers(&[host.clone(), (header::ORIGIN, "null")])).is_err());
        assert!(same_origin(&headers(&[host])).is_err());
    }

    #[test]
    fn sessions_open_close_and_expire() {
        let s = Sessions::default();
        let id = s.open().unwrap();
        assert_eq!(id.len(), 64);
        let h = headers(&[(header::COOKIE, &format!("a=b; {COOKIE}={id}"))]);
        assert_eq!(s.current(&h).as_deref(), Some(id.as_str()));
        s.set_flash(&id, Flash { error: false, text: "x".into() });
        assert_eq!(s.take_flash(&id).map(|f| f.text).as_deref(), Some("x"));
        assert_eq!(s.take_flash(&id), None);
        s.close(&id);
        assert_eq!(s.current(&h), None);
        let forged = headers(&[(header::COOKIE, &format!("{COOKIE}={}", "0".repeat(64)))]);
        assert_eq!(s.current(&forged), None);
        // Expired: put it in the past.
        let id = s.open().unwrap();
        s.map.lock().unwrap().get_mut(&id).unwrap().expires = Instant::now();
        let h = headers(&[(header::COOKIE, &format!("{COOKIE}={id}"))]);
        assert_eq!(s.current(&h), None);
    }

    #[test]
    fn wrong_keys_are_limited_per_client() {
        let s = Sessions::default();
        let a = Some(IpAddr::from([10, 0, 0, 1]));
        for _ in 0..MAX_FAILURES - 1 {
            s.failed(a);
        }
        assert_eq!(s.blocked(a), None);
        s.failed(a);
        assert!(s.blocked(a).is_some());
        assert_eq!(s.blocked(Some(IpAddr::from([10, 0, 0, 2]))), None);
    }

    #[test]
    fn cookie_attributes() {
        let c = set_cookie("abc", false);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.contains("Path=/"));
        assert!(!c.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        assert!(clear_cookie(false).contains("Max-Age=0"));
    }
}
