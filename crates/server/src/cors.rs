//! CORS for browser clients: which web pages (origins) may call the API from a browser.
//!
//! By default only pages served from this machine (`http(s)://localhost`, `127.0.0.1`,
//! `[::1]`, any port) are allowed, besides same-origin requests, which need no CORS; other
//! origins must be listed (`ServerConfig::cors_origins`, `ingot api --cors-origin`), or `*`
//! allows any. An allowed origin gets `Access-Control-Allow-Origin` on every answer and a
//! `204` to its `OPTIONS` preflight (before authentication, as browsers send preflights
//! without credentials); a preflight from another origin is a 403.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{ApiError, AppState};

/// Whether a page from `origin` may call the API, under the configured list.
fn allowed(origin: &str, listed: &[String]) -> bool {
    if listed.iter().any(|o| o == "*" || o.eq_ignore_ascii_case(origin)) {
        return true;
    }
    let Some(rest) = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://")) else { return false };
    let host = match rest.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => rest.split(':').next().unwrap_or_default(),
    };
    matches!(host.to_ascii_lowercase().as_str(), "localhost" | "127.0.0.1" | "::1")
}

fn allow(headers: &mut HeaderMap, origin: HeaderValue) {
    headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
}

pub async fn cors(State(s): State<AppState>, req: Request, next: Next) -> Response {
    let Some(origin) = req.headers().get(header::ORIGIN).cloned() else { return next.run(req).await };
    let ok = origin.to_str().is_ok_and(|o| allowed(o, &s.cfg.cors_origins));
    let preflight = req.method() == Method::OPTIONS && req.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        if !ok {
            let who = origin.to_str().unwrap_or("?");
            return ApiError::new(StatusCode::FORBIDDEN, format!("origin `{who}` may not call this API (ingot api --cors-origin)"))
                .into_response();
        }
        let asked = req.headers().get(header::ACCESS_CONTROL_REQUEST_HEADERS).cloned();
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        allow(h, origin);
        h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_static("GET, POST, OPTIONS"));
        let default = HeaderValue::from_static("authorization, content-type, x-api-key");
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.unwrap_or(default));
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        return resp;
    }
    let mut resp = next.run(req).await;
    if ok {
        allow(resp.headers_mut(), origin);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::allowed;

    #[test]
    fn local_pages_and_listed_origins_are_allowed() {
        for o in ["http://localhost", "http://localhost:5173", "https://127.0.0.1:8443", "http://[::1]:3000", "http://LOCALHOST"] {
            assert!(allowed(o, &[]), "{o}");
        }
        for o in ["http://evil.example", "http://localhost.evil.example", "null", "file://", "http://127.0.0.2"] {
            assert!(!allowed(o, &[]), "{o}");
        }
        assert!(allowed("https://app.example", &["https://app.example".into()]));
        assert!(!allowed("https://other.example", &["https://app.example".into()]));
        assert!(allowed("https://any.example", &["*".into()]));
    }
}
